#!/usr/bin/env python3
"""Exits 0 when two YAML files hold the same documents (parsed, so formatting does not matter),
1 otherwise. check.sh uses it to show that injecting twice changes nothing."""
import argparse
import sys

import yaml


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    a = p.parse_args()
    docs = [list(yaml.safe_load_all(open(f))) for f in (a.a, a.b)]
    return 0 if docs[0] == docs[1] else 1


if __name__ == "__main__":
    sys.exit(main())
