#!/usr/bin/env bash
# Checks of the kind e2e (tests/e2e/kind) that need no Docker engine and no kind:
#   1. shellcheck and `bash -n` on the scripts (installs shellcheck with apt-get when missing, as root)
#   2. static checks: the YAML files parse and say what run.sh expects; atlas.sum is correct
#   3. `run.sh --dry-run` / `--print` exits 0, prints the main steps and executes nothing
#   4. the prerequisite check fails clearly when tools or the Docker daemon are missing
#   (The scenarios themselves run for real on every CI run, on the node of tests/e2e/node: the
#   same list, tests/e2e/cluster/scenarios.sh. Fake docker/kind/kubectl/helm only prove that nothing is called
#   in a dry run and that missing tools are reported.)
# With --full (or CHECK_FULL=1) also, using Debian packages only:
#   6. run.sh's SQL assertions against a real PostgreSQL after applying the migrations
#   7. the manifests (`kubectl apply --dry-run=server`) and run.sh's kubectl assertions against a
#      real Kubernetes v1.20 kube-apiserver (built by tests/e2e/build-kube-apiserver.sh, cached),
#      on the output of a built `migration-injector inject` when there is one (MIGRATION_INJECTOR_BIN
#      or target/{release,debug}/migration-injector; this script builds nothing)
# Usage: tests/e2e/kind/check.sh [--full]        Exit status: 0 when every check passed.
set -euo pipefail

case "${BASH_SOURCE[0]}" in */*) _here="${BASH_SOURCE[0]%/*}" ;; *) _here=. ;; esac
HERE="$(cd "$_here" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
readonly REPO
FAKEBIN="$HERE/testdata/fakebin"
FULL="${CHECK_FULL:-0}"
for arg in "$@"; do
  case "$arg" in
    --full) FULL=1 ;;
    -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf '  ok   %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf '  FAIL %s\n' "$*"; }
section() { printf '\n== %s\n' "$*"; }

TMP="$(mktemp -d)"
PG_DATA=""
PG_BIN=""
APISERVER_DIR=""
cleanup() {
  set +e
  if [[ -n "$PG_DATA" && -f "$PG_DATA/postmaster.pid" ]]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1
  fi
  if [[ -n "$APISERVER_DIR" && -f "$APISERVER_DIR/pids" ]]; then
    local pid
    # kube-apiserver first (second line), then etcd; only the processes this script started.
    for pid in $(tac "$APISERVER_DIR/pids"); do
      kill "$pid" 2>/dev/null
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -9 "$pid" 2>/dev/null
    done
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# contains NAME TEXT NEEDLE...: every NEEDLE occurs in TEXT, in the given order.
contains_in_order() {
  local name=$1 text=$2 rest needle
  shift 2
  rest=$text
  for needle in "$@"; do
    if [[ "$rest" != *"$needle"* ]]; then
      fail "$name: missing (or out of order): $needle"
      return 1
    fi
    rest=${rest#*"$needle"}
  done
  pass "$name"
}
lacks() {
  local name=$1 text=$2 needle=$3
  if [[ "$text" == *"$needle"* ]]; then fail "$name: unexpected: $needle"; else pass "$name"; fi
}

cd "$HERE"

# ---------------------------------------------------------------------------------------------
section "1. shellcheck"
if ! command -v shellcheck >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
  echo "  installing shellcheck (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null 2>&1; } || true
fi
SCRIPTS=(run.sh check.sh ../cluster/scenarios.sh ../cluster/lib.sh ../cluster/app.sh ../cluster/availability.sh
  ../cluster/tls.sh ../cluster/chart.sh ../cluster/faults.sh testdata/fakebin/docker testdata/fakebin/kind testdata/fakebin/kubectl
  testdata/fakebin/helm testdata/fakebin/_log.sh)
for s in "${SCRIPTS[@]}"; do
  if bash -n "$s"; then pass "bash -n $s"; else fail "bash -n $s"; fi
done
if command -v shellcheck >/dev/null 2>&1; then
  # -x with sources relative to each script: testdata/fakebin/* source _log.sh beside them.
  if shellcheck -x -P SCRIPTDIR "${SCRIPTS[@]}"; then pass "shellcheck ($(shellcheck --version | sed -n 's/^version: //p')): ${SCRIPTS[*]}"
  else fail "shellcheck"; fi
else
  fail "shellcheck is not installed (apt-get install shellcheck)"
fi
for s in run.sh check.sh testdata/fakebin/docker testdata/fakebin/kind testdata/fakebin/kubectl testdata/fakebin/helm; do
  if [[ -x "$s" ]]; then pass "$s is executable"; else fail "$s is not executable"; fi
done

# ---------------------------------------------------------------------------------------------
section "2. static checks (YAML, migrations, Dockerfile, atlas.sum)"
if python3 -c 'import yaml' 2>/dev/null; then
  if python3 testdata/check_static.py >"$TMP/static.out" 2>&1; then
    pass "testdata/check_static.py ($(grep -c '^  ok' "$TMP/static.out") checks)"
  else
    grep -v '^  ok' "$TMP/static.out" || true
    fail "testdata/check_static.py"
  fi
else
  fail "python3 with PyYAML is needed for the YAML checks (pip install pyyaml)"
fi
if out="$(python3 migrations/atlas_sum.py --check migrations/migrations 2>&1)"; then
  pass "atlas.sum: $out"
else
  printf '%s\n' "$out"
  fail "migrations/migrations/atlas.sum does not match (regenerate: python3 migrations/atlas_sum.py --write migrations/migrations)"
fi
cp -r migrations/migrations "$TMP/sumcheck"
printf -- '-- edited\n' >>"$TMP/sumcheck/20240102000000_create_posts.sql"
if python3 migrations/atlas_sum.py --check "$TMP/sumcheck" >/dev/null 2>&1; then
  fail "atlas_sum.py --check did not notice an edited migration"
else
  pass "atlas_sum.py --check notices an edited migration"
fi

# ---------------------------------------------------------------------------------------------
section "3. run.sh --dry-run"
# Fake repository roots, so that both install branches are exercised whatever the repo holds today.
mkdir -p "$TMP/root-chart/charts/migration-injector" "$TMP/root-manifest/manifests" "$TMP/root-none"
touch "$TMP/root-chart/Dockerfile" "$TMP/root-chart/charts/migration-injector/Chart.yaml" \
  "$TMP/root-manifest/Dockerfile" "$TMP/root-none/Dockerfile"
cat >"$TMP/root-manifest/manifests/install.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: migration-injector, namespace: migration-injector}
spec:
  selector: {matchLabels: {app: migration-injector}}
  template:
    metadata: {labels: {app: migration-injector}}
    spec:
      containers:
        - name: webhook
          image: ghcr.io/migration-injector/migration-injector:0.1.0
EOF

# Fake tools first on PATH: a dry run must not call any of them.
dry() { PATH="$FAKEBIN:$PATH" FAKE_LOG="$TMP/dry.log" "$@"; }
: >"$TMP/dry.log"
if out="$(dry env REPO_ROOT="$TMP/root-chart" ./run.sh --dry-run 2>&1)"; then
  pass "run.sh --dry-run exits 0"
else
  fail "run.sh --dry-run exited $?"
fi
printf '%s\n' "$out" >"$TMP/dry.out"
contains_in_order "dry run prints the main steps in order" "$out" \
  "==> [1] Check prerequisites" \
  "==> [2] Create kind cluster" "kind create cluster --name migration-injector-e2e --config $HERE/kind-config.yaml" \
  "kubectl --context kind-migration-injector-e2e wait --for=condition=Ready nodes" \
  "docker build -t migration-injector:e2e $TMP/root-chart" \
  "docker build --build-arg ATLAS_IMAGE=arigaio/atlas:latest-alpine -t migrations:e2e $HERE/migrations" \
  "kind load docker-image migration-injector:e2e --name migration-injector-e2e" \
  "kind load docker-image migrations:e2e --name migration-injector-e2e" \
  "==> [7] Install cert-manager v1.16.2" \
  "kubectl --context kind-migration-injector-e2e apply -f https://github.com/cert-manager/cert-manager/releases/download/v1.16.2/cert-manager.yaml" \
  "-n cert-manager wait --for=condition=Available --timeout=300s deployment/cert-manager deployment/cert-manager-cainjector deployment/cert-manager-webhook" \
  "<Issuer e2e-cert-manager-probe, selfSigned> | kubectl --context kind-migration-injector-e2e -n default create --dry-run=server -f -" \
  "helm --kube-context kind-migration-injector-e2e upgrade --install migration-injector $TMP/root-chart/charts/migration-injector" \
  "--set image.repository=migration-injector --set image.tag=e2e --set image.pullPolicy=Never --set tls.mode=helm --wait" \
  "expect (webhook image): migration-injector:e2e" \
  "apply -f $HERE/manifests/postgres.yaml" "rollout status deployment/postgres" \
  "create secret generic atlas-project" "postgres://postgres:pass@postgres.migrations-e2e.svc:5432/app?sslmode=disable" \
  "render_app.py $HERE/manifests/app.yaml --pull-policy Never" \
  "apply --dry-run=server -f -" \
  "--name migrations-demo --image migrations:e2e" "wait --for=condition=Ready" \
  "jsonpath={.spec.initContainers[*].name}" "expect (init containers): migrate" \
  "expect (migrate imagePullPolicy): Never" \
  "psql -U postgres -d app" "expect (tables in schema public): posts,users" \
  "expect (applied migrations recorded): 2" \
  "rollout restart deployment/migrations-demo" \
  "--name migrations-broken --image migrations:broken" \
  "Webhook availability (failurePolicy Fail): admissions during a helm upgrade" \
  "admissions while one webhook pod is deleted" \
  "The webhook never blocks its own upgrade" "scale deployment/migration-injector --replicas=0" \
  "deployment.podAnnotations.e2e-down=" \
  "certs/dev-certs.sh migration-injector migration-injector" "switches to tls.mode=existingSecret" \
  "--set tls.existingSecret=migration-injector-serving-tls" "switches to tls.manageCaBundle=true" "--set tls.manageCaBundle=true" \
  "replaced by a certificate of a new CA" "switches to tls.mode=selfManaged" \
  "admissions while one webhook pod is deleted" "switches to tls.mode=helm" \
  "switches to tls.mode=certManager with tls.manageCaBundle=true (from tls.mode=helm)" \
  "--reuse-values --set tls.mode=certManager --set image.repository=migration-injector" "--set tls.manageCaBundle=true --wait" \
  "caBundle kept by the replicas (tls.manageCaBundle)" \
  "-n migration-injector wait --for=condition=Ready certificate/migration-injector-tls" \
  "expect (the webhook leaves out the cert-manager namespace): cert-manager" \
  "jsonpath={.items[0].metadata.annotations.cert-manager\\.io/inject-ca-from}" "expect (annotation cert-manager.io/inject-ca-from): ''" \
  "get secret/migration-injector-cert-manager-tls" "until the caBundle holds that ca.crt" \
  "Wait until the webhook mutates an annotated Deployment" \
  "switches to cert-manager's cainjector owning the caBundle" "--set tls.mode=certManager" "--set tls.manageCaBundle=false --wait" \
  "caBundle kept by cert-manager's cainjector" "wait --for=condition=Ready certificate/migration-injector-tls" \
  "expect (annotation cert-manager.io/inject-ca-from): migration-injector/migration-injector-tls" \
  "until the caBundle is that ca.crt alone" "Wait until the webhook mutates" \
  "switches to tls.mode=helm (from certManager with cainjector)" "--set tls.mode=helm" "--set tls.manageCaBundle=false --wait" \
  "tls.mode=helm, caBundle kept by the chart" "expect (annotation cert-manager.io/inject-ca-from): ''" \
  "get secret/migration-injector-tls" "Wait until the webhook mutates" \
  "switches to tls.mode=certManager with cainjector (from tls.mode=helm): the documented window of failures, measured" \
  "--set tls.mode=certManager" "--set tls.manageCaBundle=false --wait" \
  "caBundle kept by cert-manager's cainjector" "until the caBundle is that ca.crt alone" "Wait until the webhook mutates" \
  "switches to tls.manageCaBundle=true (tls.mode=certManager, from cainjector)" "--set tls.manageCaBundle=true --wait" \
  "caBundle kept by the replicas (tls.manageCaBundle)" "Wait until the webhook mutates" \
  "switches to tls.mode=helm (from certManager with tls.manageCaBundle)" "--set tls.mode=helm" "--set tls.manageCaBundle=false --wait" \
  "tls.mode=helm, caBundle kept by the chart" "Wait until the webhook mutates" \
  "kind delete cluster --name migration-injector-e2e" "==> dry run: nothing was executed"
if [[ ! -s "$TMP/dry.log" ]]; then pass "dry run executed none of docker/kind/kubectl/helm"
else fail "dry run executed: $(tr '\n' ';' <"$TMP/dry.log")"; fi
if out2="$(dry env REPO_ROOT="$TMP/root-chart" ./run.sh --print 2>&1)" && [[ "$out2" == "$out" ]]; then
  pass "--print is the same as --dry-run"
else
  fail "--print differs from --dry-run"
fi
out="$(dry env REPO_ROOT="$TMP/root-chart" KIND_CLUSTER=other KIND_NODE_IMAGE=kindest/node:v1.30.0 KEEP_CLUSTER=1 \
  ./run.sh --dry-run 2>&1)" || fail "dry run with knobs exited $?"
contains_in_order "dry run honours KIND_CLUSTER, KIND_NODE_IMAGE" "$out" \
  "kind create cluster --name other" "--image kindest/node:v1.30.0" "kubectl --context kind-other"
lacks "dry run honours KEEP_CLUSTER=1" "$out" "kind delete cluster"
out="$(dry env REPO_ROOT="$TMP/root-chart" CERT_MANAGER_VERSION=v1.10.2 ./run.sh --dry-run 2>&1)" || fail "dry run with CERT_MANAGER_VERSION exited $?"
contains_in_order "dry run honours CERT_MANAGER_VERSION" "$out" \
  "Install cert-manager v1.10.2" "releases/download/v1.10.2/cert-manager.yaml" "tls.mode=certManager"
out="$(dry env REPO_ROOT="$TMP/root-chart" CERT_MANAGER_VERSION= ./run.sh --dry-run 2>&1)" || fail "dry run with CERT_MANAGER_VERSION= exited $?"
contains_in_order "dry run: an empty CERT_MANAGER_VERSION is the default" "$out" "releases/download/v1.16.2/cert-manager.yaml"
out="$(dry env REPO_ROOT="$TMP/root-chart" SKIP_CERT_MANAGER=1 ./run.sh --dry-run 2>&1)" || fail "dry run with SKIP_CERT_MANAGER=1 exited $?"
contains_in_order "dry run honours SKIP_CERT_MANAGER=1 (printed)" "$out" \
  "Install cert-manager" "SKIP_CERT_MANAGER=1: cert-manager is not installed" "switches to tls.mode=helm" "kind delete cluster"
lacks "SKIP_CERT_MANAGER=1: no cert-manager manifest" "$out" "cert-manager.yaml"
lacks "SKIP_CERT_MANAGER=1: no certManager switch" "$out" "--set tls.mode=certManager"
out="$(dry env REPO_ROOT="$TMP/root-manifest" ./run.sh --dry-run 2>&1)" || fail "dry run (no chart) exited $?"
contains_in_order "without a chart, dry run falls back to manifests/install.yaml" "$out" \
  "Install the webhook from $TMP/root-manifest/manifests/install.yaml" \
  "$TMP/root-manifest/manifests/install.yaml | kubectl --context kind-migration-injector-e2e apply -f -" \
  "rollout status deployment/<name>"
lacks "without a chart, no helm" "$out" "helm --kube-context"
lacks "without a chart, no cert-manager" "$out" "cert-manager"
if [[ ! -s "$TMP/dry.log" ]]; then pass "none of the dry runs executed docker/kind/kubectl/helm"
else fail "a dry run executed: $(tr '\n' ';' <"$TMP/dry.log")"; fi
if dry ./run.sh --dry-run >/dev/null 2>&1; then pass "run.sh --dry-run on this repository exits 0"
else fail "run.sh --dry-run on this repository"; fi
if ./run.sh --help | grep -q 'KIND_CLUSTER'; then pass "run.sh --help documents the knobs"; else fail "run.sh --help"; fi
help="$(./run.sh --help)"
contains_in_order "run.sh --help documents CERT_MANAGER_VERSION and SKIP_CERT_MANAGER" "$help" \
  "CERT_MANAGER_VERSION [v1.16.2]" "SKIP_CERT_MANAGER [0]"
rc=0; ./run.sh --no-such-flag >/dev/null 2>&1 || rc=$?
if ((rc == 2)); then pass "unknown argument: exit 2"; else fail "unknown argument: exit $rc (want 2)"; fi

# ---------------------------------------------------------------------------------------------
section "4. prerequisites"
rc=0; out="$(env PATH=/nonexistent "$BASH" ./run.sh 2>&1)" || rc=$?
if ((rc != 0)) && [[ "$out" == *"missing required tool(s): docker kind kubectl helm"* ]]; then
  pass "no tools on PATH: exit $rc, names the missing tools"
else
  fail "no tools on PATH: exit $rc, output: $out"
fi
rc=0; out="$(PATH="$FAKEBIN:$PATH" FAKE_LOG="$TMP/down.log" FAKE_DOCKER_DOWN=1 REPO_ROOT="$TMP/root-chart" ./run.sh 2>&1)" || rc=$?
if ((rc != 0)) && [[ "$out" == *"daemon is not reachable"* ]] && ! grep -q '^kind create' "$TMP/down.log"; then
  pass "Docker daemon down: exit $rc before creating anything"
else
  fail "Docker daemon down: exit $rc, output: $out"
fi
rc=0; out="$(PATH="$FAKEBIN:$PATH" FAKE_LOG="$TMP/none.log" REPO_ROOT="$TMP/root-none" ./run.sh 2>&1)" || rc=$?
if ((rc != 0)) && [[ "$out" == *"nothing to install the webhook from"* ]] && ! grep -q '^kind create' "$TMP/none.log"; then
  pass "no chart and no install.yaml: exit $rc before creating anything"
else
  fail "no chart and no install.yaml: exit $rc, output: $out"
fi

# ---------------------------------------------------------------------------------------------
as_pg() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

full_postgres() {
  section "6. run.sh's SQL assertions against a real PostgreSQL (Debian package)"
  PG_BIN="$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
  if [[ -z "$PG_BIN" ]] && [[ $(id -u) == 0 ]]; then
    echo "  installing postgresql (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >"$TMP/apt.log" 2>&1 || true
    PG_BIN="$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
  fi
  if [[ -z "$PG_BIN" ]]; then fail "PostgreSQL server binaries not found (apt-get install postgresql)"; return; fi
  # Everything the server writes lives under $TMP/pg, owned by the user it runs as (postgres when
  # this runs as root: PostgreSQL refuses to run as root). Unix socket only, no TCP port.
  chmod 755 "$TMP"
  local pgdir="$TMP/pg" port="${CHECK_PG_PORT:-25432}"
  PG_DATA="$pgdir/data"
  local sock="$pgdir/sock"
  mkdir -p "$PG_DATA" "$sock"
  if [[ $(id -u) == 0 ]]; then chown -R postgres "$pgdir"; fi
  if ! as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust >"$TMP/initdb.log" 2>&1; then
    fail "initdb ($(tail -1 "$TMP/initdb.log"))"; return
  fi
  if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -w -l "$pgdir/server.log" \
    -o "-c listen_addresses= -k $sock -p $port" start >/dev/null 2>&1; then
    fail "PostgreSQL did not start ($(tail -1 "$pgdir/server.log" 2>&1))"; return
  fi
  local psql=("$PG_BIN/psql" -h "$sock" -p "$port" -U postgres -v ON_ERROR_STOP=1 -q)
  "${psql[@]}" -d postgres -c 'create database app' >/dev/null
  local f ok=1
  for f in migrations/migrations/*.sql; do
    if "${psql[@]}" -d app --single-transaction -f "$f" >/dev/null 2>"$TMP/sql.err"; then :; else
      ok=0; fail "migration $f: $(cat "$TMP/sql.err")"
    fi
  done
  ((ok)) && pass "both migrations apply cleanly to PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
  # What Atlas's migrate apply leaves behind (schema-less URL): its revisions table in schema
  # atlas_schema_revisions, with a '.atlas_cloud_identifier' bookkeeping row besides the migrations.
  "${psql[@]}" -d app >/dev/null <<'SQL'
create schema atlas_schema_revisions;
create table atlas_schema_revisions.atlas_schema_revisions (
  version varchar not null primary key, description varchar not null, type bigint not null default 2,
  applied bigint not null default 0, total bigint not null default 0, executed_at timestamptz not null,
  execution_time bigint not null, error text null, error_stmt text null, hash varchar not null,
  partial_hashes jsonb null, operator_version varchar not null);
insert into atlas_schema_revisions.atlas_schema_revisions values
  ('.atlas_cloud_identifier', 'uuid', 0, 0, 0, now(), 0, null, null, '', null, 'Atlas CLI'),
  ('20240101000000', 'create_users', 2, 2, 2, now(), 1000, null, null, 'h', null, 'Atlas CLI'),
  ('20240102000000', 'create_posts', 2, 2, 2, now(), 1000, '', null, 'h', null, 'Atlas CLI');
SQL
  local sqlcmd=("$PG_BIN/psql" -h "$sock" -p "$port" -U postgres -d app -v ON_ERROR_STOP=1 -tAc)
  if (RUN_SH_SOURCE_ONLY=1 source ./run.sh && assert_database atlas "${sqlcmd[@]}") >"$TMP/sqlassert.out" 2>&1; then
    pass "run.sh assert_database passes on the migrated database ($(grep -c 'ok   ' "$TMP/sqlassert.out") checks)"
  else
    fail "run.sh assert_database on the migrated database"; sed 's/^/    | /' "$TMP/sqlassert.out"
  fi
  "${psql[@]}" -d app -c "update atlas_schema_revisions.atlas_schema_revisions set applied = 1 where version = '20240102000000'" >/dev/null
  if (RUN_SH_SOURCE_ONLY=1 source ./run.sh && assert_database atlas "${sqlcmd[@]}") >"$TMP/sqlassert2.out" 2>&1; then
    fail "run.sh assert_database passed on a partly applied migration"
  else
    pass "run.sh assert_database fails on a partly applied migration"
  fi
  "${psql[@]}" -d app -c "drop table posts" >/dev/null
  if (RUN_SH_SOURCE_ONLY=1 source ./run.sh && assert_database atlas "${sqlcmd[@]}") >/dev/null 2>&1; then
    fail "run.sh assert_database passed without table posts"
  else
    pass "run.sh assert_database fails without table posts"
  fi
}

full_apiserver() {
  section "7. manifests and run.sh's kubectl assertions against a real kube-apiserver v1.20"
  local bin kc ns=kind-e2e-contract
  if ! bin="$(bash "$REPO/tests/e2e/build-kube-apiserver.sh" 2>"$TMP/build-apiserver.log")"; then
    fail "could not build kube-apiserver (tests/e2e/build-kube-apiserver.sh): $(tail -3 "$TMP/build-apiserver.log")"; return
  fi
  APISERVER_DIR="$TMP/apiserver"
  if ! kc="$(ETCD_PORT="${CHECK_ETCD_PORT:-24790}" API_PORT="${CHECK_API_PORT:-27443}" \
    bash "$REPO/tests/e2e/start-apiserver.sh" "$bin" "$APISERVER_DIR" 2>"$TMP/start-apiserver.log")"; then
    fail "kube-apiserver did not start: $(tail -3 "$TMP/start-apiserver.log")"; return
  fi
  local k=(kubectl --kubeconfig "$kc")
  "${k[@]}" create namespace "$ns" >/dev/null
  local f
  for f in postgres.yaml app.yaml secret.yaml; do
    if out="$("${k[@]}" -n "$ns" apply --dry-run=server -f "manifests/$f" 2>&1)"; then
      pass "kubectl apply --dry-run=server -n $ns -f manifests/$f (v1.20)"
    else
      fail "manifests/$f rejected by kube-apiserver v1.20: $out"
    fi
  done
  # What the webhook makes of app.yaml, created directly (there is no webhook, kubelet or controller
  # here): the real mutation when a built binary is at hand (`migration-injector inject`, the
  # webhook's own code), else the spec's shape built by testdata/fixtures.py.
  local injector="${MIGRATION_INJECTOR_BIN:-}" mutated=()
  if [[ -z "$injector" ]]; then
    for injector in "$REPO/target/release/migration-injector" "$REPO/target/debug/migration-injector" ""; do
      [[ -x "$injector" ]] && break
    done
  fi
  if [[ -n "$injector" ]]; then
    if "$injector" inject -f manifests/app.yaml >"$TMP/mutated.yaml" 2>"$TMP/inject.err"; then
      pass "migration-injector inject -f manifests/app.yaml ($injector)"
      mutated=(--mutated "$TMP/mutated.yaml")
      if "$injector" inject -f "$TMP/mutated.yaml" >"$TMP/mutated2.yaml" 2>/dev/null &&
        python3 testdata/same_yaml.py "$TMP/mutated.yaml" "$TMP/mutated2.yaml"; then
        pass "injecting into the injected Deployment changes nothing (what the restart step relies on)"
      else
        fail "injecting into the injected Deployment changes it"
      fi
    else
      fail "migration-injector inject -f manifests/app.yaml: $(cat "$TMP/inject.err")"
    fi
  else
    echo "  (no built migration-injector binary: using the spec's shape from testdata/fixtures.py)"
  fi
  python3 testdata/fixtures.py migrations-demo-good "${mutated[@]}" | "${k[@]}" -n "$ns" apply -f - >/dev/null
  "${k[@]}" -n "$ns" patch pod migrations-demo-good --subresource=status --type=merge -p \
    '{"status":{"initContainerStatuses":[{"name":"migrate","image":"migrations:e2e","imageID":"","ready":true,"restartCount":0,"state":{"terminated":{"exitCode":0,"reason":"Completed","finishedAt":"2024-01-01T00:00:00Z"}}}],"containerStatuses":[{"name":"app","image":"postgres:16-alpine","imageID":"","ready":true,"restartCount":0,"state":{"running":{"startedAt":"2024-01-01T00:00:01Z"}}}]}}' >/dev/null
  local lib=(env RUN_SH_SOURCE_ONLY=1 NS="$ns" KC="$kc")
  # shellcheck disable=SC2016 # the $-expressions here and below are for the inner bash
  local prelude='source ./run.sh; E2E_KUBECTL=(kubectl --kubeconfig "$KC"); POD="$(newest_pod "$NS" "$APP_SELECTOR")"; '
  # shellcheck disable=SC2016
  local inject='assert_injection "$NS" "$POD" migrations:e2e Never atlas 1'
  # shellcheck disable=SC2016
  if "${lib[@]}" bash -c "$prelude"'[[ $POD == migrations-demo-good ]] && '"$inject" >"$TMP/inj.out" 2>&1; then
    pass "run.sh assert_injection passes on an injected pod ($(grep -c 'ok   ' "$TMP/inj.out") checks, real kubectl jsonpath)"
  else
    fail "run.sh assert_injection on an injected pod"; sed 's/^/    | /' "$TMP/inj.out"
  fi
  # shellcheck disable=SC2016
  if "${lib[@]}" bash -c "$prelude"'create_secret "$NS" atlas "postgres.$NS.svc"' >"$TMP/secret.out" 2>&1 &&
    [[ "$("${k[@]}" -n "$ns" get secret atlas-project -o 'jsonpath={.data.atlas\.hcl}' | base64 -d)" == *"postgres://postgres:pass@postgres.$ns.svc:5432/app?sslmode=disable"* ]]; then
    pass "run.sh create_secret creates atlas-project with URL postgres.$ns.svc"
  else
    fail "run.sh create_secret"; sed 's/^/    | /' "$TMP/secret.out"
  fi
  # shellcheck disable=SC2016
  if "${lib[@]}" bash -c "$prelude"'create_secret "$NS" atlas "postgres.$NS.svc"' >/dev/null 2>&1; then pass "run.sh create_secret twice (idempotent)"
  else fail "run.sh create_secret twice"; fi
  # shellcheck disable=SC2016
  if "${lib[@]}" bash -c "$prelude"'assert_not_annotated "$NS" postgres:16-alpine' >"$TMP/plain.out" 2>&1; then
    pass "run.sh assert_not_annotated (server-side dry run of kubectl create deployment)"
  else
    fail "run.sh assert_not_annotated"; sed 's/^/    | /' "$TMP/plain.out"
  fi
  sleep 1.1 # creationTimestamp has one-second resolution; the next pod must be the newest
  python3 testdata/fixtures.py migrations-demo-bad --no-security-context "${mutated[@]}" |
    "${k[@]}" -n "$ns" apply -f - >/dev/null
  # shellcheck disable=SC2016
  if "${lib[@]}" bash -c "$prelude"'[[ $POD == migrations-demo-bad ]] || exit 99; '"$inject" >"$TMP/bad.out" 2>&1; then
    fail "run.sh assert_injection passed on a pod without the restricted securityContext"
  elif [[ $? == 99 ]]; then
    fail "run.sh newest_pod did not pick the newest pod"
  elif grep -q 'FAIL securityContext.runAsNonRoot' "$TMP/bad.out"; then
    pass "run.sh assert_injection fails on a pod without the securityContext (and newest_pod picks the newest pod)"
  else
    fail "run.sh assert_injection failed for another reason"; sed 's/^/    | /' "$TMP/bad.out"
  fi
}

if [[ "$FULL" == 1 ]]; then
  full_postgres
  full_apiserver
else
  section "6-7. skipped (PostgreSQL and kube-apiserver checks: run with --full)"
fi

# ---------------------------------------------------------------------------------------------
printf '\n%d passed, %d failed\n' "$PASSED" "$FAILED"
((FAILED == 0))
