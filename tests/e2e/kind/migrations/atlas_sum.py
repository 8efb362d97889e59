#!/usr/bin/env python3
"""Compute or verify the Atlas migration-directory integrity file (atlas.sum).

Same algorithm as Atlas (sql/migrate: NewHashFile / HashFile.Sum / MarshalText):

* the migration files are the directory's top-level ``*.sql`` files, sorted by name;
* one running SHA-256 is fed, per file, its name and then its content; after each file the
  base64 (standard, padded) of the running digest so far is that file's hash
  (a file whose content starts with an ``atlas:sum ignore`` directive contributes its name only
  and gets no line; not used here);
* the first line is ``h1:`` + base64(SHA-256 over every file's name and hash, in order);
* then one line per file: ``<name> h1:<hash>``, each ending in ``\\n``.

Usage:
  atlas_sum.py DIR            print the atlas.sum that DIR should have
  atlas_sum.py --check DIR    exit 1 unless DIR/atlas.sum matches its migrations
  atlas_sum.py --write DIR    (re)write DIR/atlas.sum

With Docker, ``atlas migrate hash --dir file://DIR`` produces the same file; the migrations
image also re-runs it at build time (see Dockerfile).
"""
import base64
import hashlib
import pathlib
import re
import sys

# Atlas: `^([ -~]*)atlas:(\w+)(?: +([ -~]*))*` matched against the whole file content.
_DIRECTIVE = re.compile(r"^([ -~]*)atlas:(\w+)(?: +([ -~]*))*")


def _ignored(content: bytes) -> bool:
    m = _DIRECTIVE.match(content.decode("utf-8", "replace"))
    return bool(m) and m.group(2) == "sum" and m.group(3) == "ignore"


def compute(directory: pathlib.Path) -> str:
    files = sorted((p for p in directory.glob("*.sql") if p.is_file()), key=lambda p: p.name.encode())
    running = hashlib.sha256()
    entries = []
    for path in files:
        content = path.read_bytes()
        running.update(path.name.encode())
        if _ignored(content):
            continue
        running.update(content)
        entries.append((path.name, base64.b64encode(running.copy().digest()).decode()))
    total = hashlib.sha256()
    for name, digest in entries:
        total.update(name.encode())
        total.update(digest.encode())
    lines = ["h1:" + base64.b64encode(total.digest()).decode()]
    lines += [f"{name} h1:{digest}" for name, digest in entries]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    mode = "print"
    if argv and argv[0] in ("--check", "--write"):
        mode = argv.pop(0)[2:]
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    directory = pathlib.Path(argv[0])
    expected = compute(directory)
    sum_file = directory / "atlas.sum"
    if mode == "print":
        sys.stdout.write(expected)
    elif mode == "write":
        sum_file.write_text(expected)
    else:
        actual = sum_file.read_text() if sum_file.exists() else "<missing>\n"
        if actual != expected:
            sys.stderr.write(f"{sum_file} is out of date.\n--- have\n{actual}--- want\n{expected}")
            return 1
        print(f"{sum_file}: ok ({expected.count(chr(10)) - 1} migration files)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
