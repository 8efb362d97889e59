#!/usr/bin/env python3
"""Prints a free TCP port on 127.0.0.1 (the kernel's choice), for tests/e2e/run.sh's etcd,
kube-apiserver and webhook."""
import argparse
import socket
import sys


def main():
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
