#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit/integration/property tests,
# Helm chart tests, workflow and release-metadata checks, kind-script checks, the e2e
# against a real kube-apiserver, and the node e2e (a real single-node Kubernetes).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --quiet --all-targets -- -D warnings
step "unit, integration and property tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast
else
  cargo test --no-fail-fast
fi
step "shellcheck"
command -v shellcheck >/dev/null || apt-get install -y -qq shellcheck >/dev/null
git ls-files '*.sh' | xargs shellcheck -x --source-path=SCRIPTDIR
step "Helm chart"
tests/helm/test-chart.sh
step "GitHub workflows (actionlint) and release metadata (versions, Kubernetes range, pins)"
pytools=$(tests/tools/install-pytools.sh)
PYTHONPATH=$pytools "$pytools/bin/actionlint" -no-color .github/workflows/*.yml
tests/release/test-check-versions.sh
step "kind e2e (checks that run without Docker)"
tests/e2e/kind/check.sh
step "e2e against a real kube-apiserver"
tests/e2e/run.sh
step "node e2e: a real single-node Kubernetes, the chart installed with helm, PostgreSQL + dbmate"
# Opt out explicitly with MIGRATION_INJECTOR_SKIP_NODE_E2E=1 (printed); see tests/e2e/node/README.md.
tests/e2e/node/run.sh
printf '\nAll tests passed.\n'
