#!/usr/bin/env bash
# Tests of tests/release/check-versions.py: it passes on the repository, and it fails, naming the
# disagreement, on a copy where one version, one end of the supported Kubernetes range or one
# action pin has been changed.
#
# Usage: tests/release/test-check-versions.sh     Env: HELM (default: tests/tools/install-helm.sh)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CHECK=$ROOT/tests/release/check-versions.py
HELM=${HELM:-$("$ROOT/tests/tools/install-helm.sh")} || { echo "cannot install helm" >&2; exit 1; }
export HELM
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PASSED=0
FAILED=()

copy() {
  rm -rf "$WORK/root" && mkdir -p "$WORK/root/.github" "$WORK/root/charts"
  cp "$ROOT/Cargo.toml" "$ROOT/Dockerfile" "$ROOT/README.md" "$ROOT/CHANGELOG.md" "$WORK/root/"
  cp -r "$ROOT/.github/workflows" "$WORK/root/.github/"
  cp -r "$ROOT/charts/migration-injector" "$WORK/root/charts/"
}

# expect_pass NAME [ARGS...]
expect_pass() {
  local name=$1; shift
  if python3 "$CHECK" "$@" >"$WORK/out" 2>&1; then
    PASSED=$((PASSED + 1)); echo "  PASS $name"
  else
    FAILED+=("$name"); echo "  FAIL $name: $(grep FAIL "$WORK/out" | head -5)"
  fi
}

# mutate NAME FILE PYTHON-EXPR PATTERN [ARGS...]: on a fresh copy, FILE's text s becomes
# PYTHON-EXPR (which must change it); the check must then fail with a line matching PATTERN.
mutate() {
  local name=$1 file=$2 expr=$3 pattern=$4; shift 4
  copy
  if ! python3 - "$WORK/root/$file" "$expr" <<'PY'
import sys
path, expr = sys.argv[1], sys.argv[2]
s = open(path).read()
t = eval(expr, {"s": s, "re": __import__("re")})
if t == s:
    sys.exit(f"mutation left {path} unchanged: {expr}")
open(path, "w").write(t)
PY
  then
    FAILED+=("$name (mutation did not apply)"); echo "  FAIL $name: mutation did not apply"; return
  fi
  if python3 "$CHECK" --root "$WORK/root" "$@" >"$WORK/out" 2>&1; then
    FAILED+=("$name"); echo "  FAIL $name: the check passed on the mutated copy"
  elif grep -E "FAIL .*$pattern" "$WORK/out" >/dev/null; then
    PASSED=$((PASSED + 1)); echo "  PASS $name ($(grep -E "FAIL .*$pattern" "$WORK/out" | head -1 | sed 's/^ *FAIL //' | cut -c1-110))"
  else
    FAILED+=("$name"); echo "  FAIL $name: failed without /$pattern/: $(grep FAIL "$WORK/out" | head -3)"
  fi
}

echo "== check-versions.py on the repository"
expect_pass "repository: versions, Kubernetes range and pins agree"
copy
expect_pass "a copy of the files it reads passes too" --root "$WORK/root"

echo "== each disagreement fails"
mutate cargo-version Cargo.toml 's.replace("version = \"0.", "version = \"9.", 1)' "appVersion = Cargo.toml version"
mutate app-version charts/migration-injector/Chart.yaml 're.sub(r"(?m)^appVersion: .*$", "appVersion: \"0.0.9\"", s)' "appVersion = Cargo.toml version"
mutate chart-version charts/migration-injector/Chart.yaml 're.sub(r"(?m)^version: .*$", "version: 0.0.9", s)' "Chart.yaml version"
mutate image-tag charts/migration-injector/values.yaml 's.replace("  tag: \"\"", "  tag: \"0.0.9\"", 1)' "default image is IMAGE:version"
mutate image-repo charts/migration-injector/values.yaml 's.replace("repository: ghcr.io/migration-injector/migration-injector", "repository: ghcr.io/elsewhere/migration-injector", 1)' "release.yml pushes the chart's image repository"
mutate dockerfile-version Dockerfile 're.sub(r"(?m)^ARG VERSION=.*$", "ARG VERSION=0.0.9", s)' "Dockerfile ARG VERSION"
mutate readme-version README.md 's.replace("--version ", "--version 9", 1).replace("migration-injector:0.", "migration-injector:9.")' "README"
mutate changelog-format CHANGELOG.md 's.replace("keepachangelog.com", "example.com")' "Keep a Changelog"
mutate changelog-undated CHANGELOG.md 's + "\n## [0.0.1]\n\nOld.\n"' "has a date"
mutate tag-mismatch CHANGELOG.md 's.replace("## [Unreleased]", "## [Unreleased]\n\n## [0.1.0] - 2026-11-27", 1)' "the tag is v<version>" --tag v0.1.1
mutate tag-changelog-unreleased README.md 's + "\n"' "for the tag" --tag v0.1.0
mutate kube-min charts/migration-injector/Chart.yaml 're.sub(r"(?m)^kubeVersion: .*$", "kubeVersion: \">=1.21.0-0\"", s)' "starts at Chart.yaml's kubeVersion"
mutate kind-newest .github/workflows/e2e-kind.yml 're.sub(r"\n          # Newest supported\.\n.*?(?=\n    env:)", "", s, flags=re.S)' "README.md says"
mutate kind-no-digest .github/workflows/e2e-kind.yml 're.sub(r"(kindest/node:v1\.30\.\d+)@sha256:[0-9a-f]+", r"\1", s)' "pinned by digest"
mutate readme-range README.md 's.replace("Kubernetes 1.20 to 1.37", "Kubernetes 1.21 to 1.37")' "README.md says"
mutate openapi-feature Cargo.toml 's.replace("\"v1_33\"", "\"v1_38\"")' "k8s-openapi feature v1_38"
mutate unpinned-action .github/workflows/ci.yml 're.sub(r"actions/checkout@[0-9a-f]{40} # v[0-9.]+", "actions/checkout@v5", s, count=1)' "pinned by commit SHA"
mutate pin-without-comment .github/workflows/release.yml 're.sub(r"(softprops/action-gh-release@[0-9a-f]{40}) # v[0-9.]+", r"\1", s)' "pinned by commit SHA"

echo
if [ ${#FAILED[@]} -eq 0 ]; then
  echo "release metadata tests: all $PASSED passed"
  exit 0
fi
echo "release metadata tests: ${#FAILED[@]} FAILED, $PASSED passed:"
printf '  - %s\n' "${FAILED[@]}"
exit 1
