#!/usr/bin/env python3
"""Checks a container as containerd created it (`ctr containers info` JSON): its process runs as
a non-root uid on a read-only root filesystem. Prints one ok/FAIL line per check (the cluster
scenarios' format) and exits 1 if either failed. Used by assert_runtime_view (cluster/app.sh).
"""
import argparse
import json
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("info", help="file with the output of `ctr containers info` ('-': stdin)")
    a = p.parse_args()
    text = sys.stdin.read() if a.info == "-" else open(a.info).read()
    spec = json.loads(text)["Spec"]
    uid, ro = spec["process"]["user"]["uid"], spec["root"].get("readonly", False)
    print(f"      {'ok  ' if uid != 0 else 'FAIL'} process uid {uid} (non-root)")
    print(f"      {'ok  ' if ro else 'FAIL'} root filesystem read-only: {ro}")
    return 0 if uid != 0 and ro else 1


if __name__ == "__main__":
    sys.exit(main())
