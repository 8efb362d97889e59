#!/usr/bin/env bash
# End-to-end test of migration-injector on a real (kind) cluster.
#
# Creates a kind cluster, builds and loads the webhook image, installs it (Helm chart, or
# manifests/install.yaml when there is no chart), deploys PostgreSQL, the `atlas-project` Secret
# and an Atlas migrations image, then a Deployment carrying only the `migrations.io/image`
# annotation, and proves that the webhook injected the `migrate` init container and that the
# migrations really ran against the database.
#
# Usage: tests/e2e/kind/run.sh [--dry-run|--print] [--keep-cluster] [--help]
# Needs docker (with a running daemon), kind, kubectl and helm. See README.md for the env knobs.
set -euo pipefail

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  echo "run.sh needs bash >= 4.4 (this is $BASH_VERSION; on macOS: brew install bash)" >&2
  exit 1
fi

# ---------------------------------------------------------------------------------------------
# Settings (environment knobs; documented in README.md)
# ---------------------------------------------------------------------------------------------
case "${BASH_SOURCE[0]}" in */*) _here="${BASH_SOURCE[0]%/*}" ;; *) _here=. ;; esac
SCRIPT_DIR="$(cd "$_here" && pwd)"
REPO_ROOT="${REPO_ROOT:-$(cd "$SCRIPT_DIR/../../.." && pwd)}"

KIND_CLUSTER="${KIND_CLUSTER:-migration-injector-e2e}"
KIND_CONFIG="${KIND_CONFIG:-$SCRIPT_DIR/kind-config.yaml}"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
SKIP_BUILD="${SKIP_BUILD:-0}"
SKIP_RERUN="${SKIP_RERUN:-0}"
TIMEOUT="${TIMEOUT:-300}"

WEBHOOK_NAMESPACE="${WEBHOOK_NAMESPACE:-migration-injector}"
HELM_RELEASE="${HELM_RELEASE:-migration-injector}"
HELM_EXTRA_ARGS="${HELM_EXTRA_ARGS:-}"
CHART_DIR="${CHART_DIR:-$REPO_ROOT/charts/migration-injector}"
INSTALL_MANIFEST="${INSTALL_MANIFEST:-$REPO_ROOT/manifests/install.yaml}"

APP_NAMESPACE="${APP_NAMESPACE:-migrations-e2e}"
APP_NAMESPACE_LABELS="${APP_NAMESPACE_LABELS-migrations.io/injection=enabled}"
ATLAS_IMAGE="${ATLAS_IMAGE:-arigaio/atlas:latest-alpine}"
EXPECT_SECURITY_CONTEXT="${EXPECT_SECURITY_CONTEXT:-1}"

# Fixed by the test itself (app.yaml and the Helm values refer to them).
WEBHOOK_IMAGE_REPO="migration-injector"
WEBHOOK_IMAGE_TAG="e2e"
WEBHOOK_IMAGE="$WEBHOOK_IMAGE_REPO:$WEBHOOK_IMAGE_TAG"
MIGRATIONS_IMAGE="migrations:e2e"
APP_DEPLOYMENT="migrations-demo"
APP_SELECTOR="app.kubernetes.io/name=migrations-demo"
MIGRATION_VERSIONS="20240101000000,20240102000000"
MIGRATE_ARGS="migrate apply -c file:///etc/atlas/atlas.hcl --env k8s"

MANIFESTS="$SCRIPT_DIR/manifests"
KCTX="kind-$KIND_CLUSTER"
KUBECTL=(kubectl --context "$KCTX")
HELM=(helm --kube-context "$KCTX")
PSQL=("${KUBECTL[@]}" -n "$APP_NAMESPACE" exec deploy/postgres -c postgres --
  psql -U postgres -d app -v ON_ERROR_STOP=1 -tAc)

DRY_RUN=0
CLUSTER_CREATED=0
CLUSTER_USABLE=0
STEP=0
FAILURES=0

usage() {
  cat <<EOF
Usage: ${0##*/} [--dry-run|--print] [--keep-cluster] [--help]

  --dry-run, --print  print every step and command without running anything; exits 0
  --keep-cluster      do not delete the kind cluster at the end (same as KEEP_CLUSTER=1)
  -h, --help          this help

Environment (defaults in brackets):
  KIND_CLUSTER [migration-injector-e2e]   KIND_CONFIG [kind-config.yaml beside this script]
  KIND_NODE_IMAGE [kind's default]        KEEP_CLUSTER [0]      TIMEOUT [300] (seconds per wait)
  SKIP_BUILD [0] (reuse local $WEBHOOK_IMAGE)   SKIP_RERUN [0] (skip the restart/idempotency step)
  WEBHOOK_NAMESPACE [migration-injector]  HELM_RELEASE [migration-injector]  HELM_EXTRA_ARGS []
  CHART_DIR [<repo>/charts/migration-injector]  INSTALL_MANIFEST [<repo>/manifests/install.yaml]
  APP_NAMESPACE [migrations-e2e]  APP_NAMESPACE_LABELS [migrations.io/injection=enabled] ("k=v,k2=v2"; "" for none)
  ATLAS_IMAGE [arigaio/atlas:latest-alpine]     EXPECT_SECURITY_CONTEXT [1]
EOF
}

# ---------------------------------------------------------------------------------------------
# Output and execution helpers
# ---------------------------------------------------------------------------------------------
step() { STEP=$((STEP + 1)); printf '\n==> [%d] %s\n' "$STEP" "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf '\nERROR: %s\n' "$*" >&2; exit 1; }

# Shell-quote one word for display (only when needed).
quote() {
  if [[ -n "$1" && "$1" =~ ^[A-Za-z0-9_./:=@,%+-]+$ ]]; then
    printf '%s' "$1"
  else
    local escaped=${1//\'/\'\\\'\'}
    printf "'%s'" "$escaped"
  fi
}
cmdline() {
  local out="" w
  for w in "$@"; do out+="${out:+ }$(quote "$w")"; done
  printf '%s' "$out"
}
show() { printf '    $ %s\n' "$(cmdline "$@")"; }

# run CMD...: print, then execute unless --dry-run.
run() {
  show "$@"
  ((DRY_RUN)) && return 0
  "$@"
}

# apply_generated CMD...: `CMD --dry-run=client -o yaml | kubectl apply -f -` (idempotent create).
apply_generated() {
  printf '    $ %s --dry-run=client -o yaml | %s apply -f -\n' "$(cmdline "$@")" "$(cmdline "${KUBECTL[@]}")"
  ((DRY_RUN)) && return 0
  "$@" --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f -
}

# expect DESCRIPTION EXPECTED CMD...: run CMD, compare its trimmed stdout with EXPECTED.
expect() {
  local desc=$1 want=$2 got
  shift 2
  show "$@"
  if ((DRY_RUN)); then
    info "  expect ($desc): $(quote "$want")"
    return 0
  fi
  if ! got="$("$@")"; then
    printf '    FAIL %s: command failed\n' "$desc" >&2
    FAILURES=$((FAILURES + 1))
    return 0
  fi
  got="${got#"${got%%[![:space:]]*}"}"
  got="${got%"${got##*[![:space:]]}"}"
  if [[ "$got" == "$want" ]]; then
    info "  ok   $desc = $(quote "$got")"
  else
    printf '    FAIL %s: want %s, got %s\n' "$desc" "$(quote "$want")" "$(quote "$got")" >&2
    FAILURES=$((FAILURES + 1))
  fi
}

# Stop after a group of expectations if any failed (all of the group are reported first).
checkpoint() {
  ((FAILURES == 0)) || die "$FAILURES check(s) failed: $*"
}

# run_sql SQL: run a query in the postgres pod (unaligned tuples only).
run_sql() { "${PSQL[@]}" "$1"; }
expect_sql() { expect "$1" "$2" "${PSQL[@]}" "$3"; }

# ---------------------------------------------------------------------------------------------
# Diagnostics and clean-up
# ---------------------------------------------------------------------------------------------
diagnostics() {
  printf '\n==> diagnostics (failure)\n'
  local ns pod
  "${KUBECTL[@]}" get nodes -o wide || true
  "${KUBECTL[@]}" get pods -A -o wide || true
  "${KUBECTL[@]}" get mutatingwebhookconfigurations -o yaml || true
  for ns in "$WEBHOOK_NAMESPACE" "$APP_NAMESPACE"; do
    printf '\n--- namespace %s: deployments, pods, events\n' "$ns"
    "${KUBECTL[@]}" -n "$ns" get deployments,replicasets,pods,services,secrets -o wide || true
    "${KUBECTL[@]}" -n "$ns" get deployments -o yaml || true
    "${KUBECTL[@]}" -n "$ns" describe pods || true
    "${KUBECTL[@]}" -n "$ns" get events --sort-by=.lastTimestamp || true
    for pod in $("${KUBECTL[@]}" -n "$ns" get pods -o name 2>/dev/null || true); do
      printf '\n--- logs %s/%s (all containers, init containers included)\n' "$ns" "$pod"
      "${KUBECTL[@]}" -n "$ns" logs "$pod" --all-containers=true --prefix=true --tail=200 || true
    done
  done
}

on_exit() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if ((rc != 0 && DRY_RUN == 0 && CLUSTER_USABLE)); then
    diagnostics
  fi
  if ((DRY_RUN)); then
    step "Clean up (on exit, also on failure)"
    if [[ "$KEEP_CLUSTER" == 1 ]]; then
      info "KEEP_CLUSTER=1: the cluster would be kept"
    else
      show kind delete cluster --name "$KIND_CLUSTER"
    fi
  elif ((CLUSTER_CREATED)); then
    if [[ "$KEEP_CLUSTER" == 1 ]]; then
      printf '\n==> keeping kind cluster %s (KEEP_CLUSTER=1); delete it with: kind delete cluster --name %s\n' \
        "$KIND_CLUSTER" "$KIND_CLUSTER"
    else
      printf '\n==> deleting kind cluster %s\n' "$KIND_CLUSTER"
      kind delete cluster --name "$KIND_CLUSTER" || warn "could not delete kind cluster $KIND_CLUSTER"
    fi
  elif ((CLUSTER_USABLE)); then
    printf '\n==> kind cluster %s existed before this run: left in place\n' "$KIND_CLUSTER"
  fi
  if ((DRY_RUN)); then
    printf '\n==> dry run: nothing was executed\n'
  elif ((rc == 0)); then
    printf '\n==> PASS: migration-injector e2e on kind\n'
  else
    printf '\n==> FAIL: migration-injector e2e on kind (exit %d)\n' "$rc" >&2
  fi
  exit "$rc"
}

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
preflight() {
  step "Check prerequisites"
  local missing=() tool
  if ((DRY_RUN)); then
    info "(dry run: tool checks skipped) needs: docker (running daemon), kind, kubectl, helm"
  else
    for tool in docker kind kubectl helm; do
      command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
      die "missing required tool(s): ${missing[*]}
       This e2e test needs docker (with a running daemon), kind, kubectl and helm on PATH:
         docker  https://docs.docker.com/engine/install/
         kind    https://kind.sigs.k8s.io/docs/user/quick-start/#installation
         kubectl https://kubernetes.io/docs/tasks/tools/
         helm    https://helm.sh/docs/intro/install/
       To only see what it would do: $0 --dry-run"
    fi
    docker info >/dev/null 2>&1 || die "docker is installed but its daemon is not reachable ('docker info' failed)"
    info "docker, kind, kubectl, helm: found; docker daemon: reachable"
  fi
  local f
  for f in "$REPO_ROOT/Dockerfile" "$KIND_CONFIG" "$SCRIPT_DIR/migrations/Dockerfile" \
    "$MANIFESTS/postgres.yaml" "$MANIFESTS/app.yaml"; do
    if [[ ! -f "$f" ]]; then
      if ((DRY_RUN)); then warn "missing file: $f"; else die "missing file: $f"; fi
    fi
  done
  if [[ ! -f "$CHART_DIR/Chart.yaml" && ! -f "$INSTALL_MANIFEST" ]]; then
    if ((DRY_RUN)); then
      warn "neither $CHART_DIR/Chart.yaml nor $INSTALL_MANIFEST exists yet"
    else
      die "nothing to install the webhook from: neither $CHART_DIR/Chart.yaml nor $INSTALL_MANIFEST exists"
    fi
  fi
  info "repo root: $REPO_ROOT"
  info "cluster: $KIND_CLUSTER (context $KCTX); webhook namespace: $WEBHOOK_NAMESPACE; app namespace: $APP_NAMESPACE"
}

create_cluster() {
  step "Create kind cluster '$KIND_CLUSTER'"
  local args=(kind create cluster --name "$KIND_CLUSTER" --config "$KIND_CONFIG" --wait 120s)
  [[ -n "$KIND_NODE_IMAGE" ]] && args+=(--image "$KIND_NODE_IMAGE")
  if ((DRY_RUN == 0)) && kind get clusters 2>/dev/null | grep -x -- "$KIND_CLUSTER" >/dev/null; then
    info "kind cluster $KIND_CLUSTER already exists: reusing it (it will not be deleted)"
  else
    CLUSTER_CREATED=1
    run "${args[@]}"
  fi
  CLUSTER_USABLE=1
  run "${KUBECTL[@]}" cluster-info
  run "${KUBECTL[@]}" wait --for=condition=Ready nodes --all --timeout="${TIMEOUT}s"
}

build_images() {
  step "Build the webhook image $WEBHOOK_IMAGE from $REPO_ROOT/Dockerfile"
  if [[ "$SKIP_BUILD" == 1 ]]; then
    info "SKIP_BUILD=1: using the local image $WEBHOOK_IMAGE"
    run docker image inspect --format '{{.Id}}' "$WEBHOOK_IMAGE"
  else
    run docker build -t "$WEBHOOK_IMAGE" "$REPO_ROOT"
  fi

  step "Build the migrations image $MIGRATIONS_IMAGE (base $ATLAS_IMAGE)"
  run docker build --build-arg "ATLAS_IMAGE=$ATLAS_IMAGE" -t "$MIGRATIONS_IMAGE" "$SCRIPT_DIR/migrations"
  # The image must declare a numeric non-root user: the injected securityContext says runAsNonRoot.
  expect "migrations image USER" "65532:65532" docker image inspect --format '{{.Config.User}}' "$MIGRATIONS_IMAGE"
  checkpoint "migrations image"

  step "Load images into kind"
  run kind load docker-image "$WEBHOOK_IMAGE" --name "$KIND_CLUSTER"
  run kind load docker-image "$MIGRATIONS_IMAGE" --name "$KIND_CLUSTER"
}

install_webhook() {
  if [[ -f "$CHART_DIR/Chart.yaml" ]]; then
    step "Install the webhook with Helm (chart $CHART_DIR)"
    local extra=()
    [[ -n "$HELM_EXTRA_ARGS" ]] && read -r -a extra <<<"$HELM_EXTRA_ARGS"
    run "${HELM[@]}" upgrade --install "$HELM_RELEASE" "$CHART_DIR" \
      --namespace "$WEBHOOK_NAMESPACE" --create-namespace \
      --set "image.repository=$WEBHOOK_IMAGE_REPO" \
      --set "image.tag=$WEBHOOK_IMAGE_TAG" \
      --set image.pullPolicy=Never \
      --set tls.mode=helm \
      --wait --timeout "${TIMEOUT}s" "${extra[@]}"
    run "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" wait --for=condition=Available deployment --all --timeout="${TIMEOUT}s"
  else
    step "Install the webhook from $INSTALL_MANIFEST (no $CHART_DIR/Chart.yaml)"
    # Point the manifest's migration-injector image at the locally loaded one.
    local sed_args=(sed -E
      -e "s#^([[:space:]]*(- )?image:[[:space:]]*)\"?[^\"[:space:]]*migration-injector[^\"[:space:]]*\"?#\\1$WEBHOOK_IMAGE#"
      -e 's#(imagePullPolicy:[[:space:]]*)"?Always"?#\1IfNotPresent#'
      "$INSTALL_MANIFEST")
    printf '    $ %s | %s apply -f -\n' "$(cmdline "${sed_args[@]}")" "$(cmdline "${KUBECTL[@]}")"
    if ((DRY_RUN == 0)); then
      "${sed_args[@]}" | "${KUBECTL[@]}" apply -f -
    fi
    local get=("${KUBECTL[@]}" get -f "$INSTALL_MANIFEST"
      -o 'jsonpath={range .items[?(@.kind=="Deployment")]}{.metadata.namespace}{"/"}{.metadata.name}{"\n"}{end}')
    show "${get[@]}"
    info "  then, for each Deployment: ${KUBECTL[*]} -n <namespace> rollout status deployment/<name> --timeout=${TIMEOUT}s"
    if ((DRY_RUN == 0)); then
      local deployments ns name found=0
      deployments="$("${get[@]}")"
      while IFS=/ read -r ns name; do
        [[ -n "$name" ]] || continue
        found=1
        run "${KUBECTL[@]}" -n "${ns:-default}" rollout status "deployment/$name" --timeout="${TIMEOUT}s"
      done <<<"$deployments"
      ((found)) || die "$INSTALL_MANIFEST declares no Deployment"
    fi
  fi
  run "${KUBECTL[@]}" get mutatingwebhookconfigurations
}

deploy_database() {
  step "Deploy PostgreSQL into namespace $APP_NAMESPACE"
  # A fresh namespace, so that a reused cluster starts from an empty database.
  run "${KUBECTL[@]}" delete namespace "$APP_NAMESPACE" --ignore-not-found=true --wait=true --timeout="${TIMEOUT}s"
  apply_generated "${KUBECTL[@]}" create namespace "$APP_NAMESPACE"
  if [[ -n "$APP_NAMESPACE_LABELS" ]]; then
    local labels=()
    IFS=',' read -r -a labels <<<"$APP_NAMESPACE_LABELS"
    run "${KUBECTL[@]}" label namespace "$APP_NAMESPACE" --overwrite "${labels[@]}"
  fi
  run "${KUBECTL[@]}" -n "$APP_NAMESPACE" apply -f "$MANIFESTS/postgres.yaml"
  run "${KUBECTL[@]}" -n "$APP_NAMESPACE" rollout status deployment/postgres --timeout="${TIMEOUT}s"
  # pg_isready in the readiness probe; double-check with a real query.
  expect_sql "postgres answers" "1" "select 1"
  checkpoint "postgres"
}

create_secret() {
  step "Create Secret atlas-project (atlas.hcl, env \"k8s\" -> postgres.$APP_NAMESPACE.svc)"
  local hcl line
  hcl="env \"k8s\" {
  url = \"postgres://postgres:pass@postgres.$APP_NAMESPACE.svc:5432/app?sslmode=disable\"
  migration {
    dir = \"file:///migrations\"
  }
}"
  info "atlas.hcl:"
  while IFS= read -r line; do info "  | $line"; done <<<"$hcl"
  apply_generated "${KUBECTL[@]}" -n "$APP_NAMESPACE" create secret generic atlas-project \
    --from-literal="atlas.hcl=$hcl"
}

wait_for_webhook() {
  step "Wait until the webhook mutates an annotated Deployment (server-side dry run)"
  local probe=("${KUBECTL[@]}" -n "$APP_NAMESPACE" apply --dry-run=server -f "$MANIFESTS/app.yaml"
    -o 'jsonpath={.spec.template.spec.initContainers[*].name}')
  show "${probe[@]}"
  info "  (repeated until it prints 'migrate', at most ${TIMEOUT}s)"
  ((DRY_RUN)) && return 0
  local deadline=$((SECONDS + TIMEOUT)) out
  while :; do
    if out="$("${probe[@]}" 2>&1)" && [[ " $out " == *" migrate "* ]]; then
      info "  ok   the webhook answers and injects"
      return 0
    fi
    if [[ "$out" == *"dry run"* || "$out" == *"dryRun"* ]]; then
      warn "the webhook does not support dry run ($out); continuing without this probe"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      warn "no injection seen in a server-side dry run after ${TIMEOUT}s (last output: $out); continuing"
      return 0
    fi
    sleep 2
  done
}

# newest_pod: name of the most recently created app pod.
newest_pod() {
  local name
  name="$("${KUBECTL[@]}" -n "$APP_NAMESPACE" get pods -l "$APP_SELECTOR" \
    --sort-by=.metadata.creationTimestamp -o name | tail -n 1)"
  printf '%s' "${name#pod/}"
}

POD=""
deploy_app() {
  step "Deploy the annotated app Deployment ($MANIFESTS/app.yaml)"
  run "${KUBECTL[@]}" -n "$APP_NAMESPACE" apply -f "$MANIFESTS/app.yaml"
  run "${KUBECTL[@]}" -n "$APP_NAMESPACE" rollout status "deployment/$APP_DEPLOYMENT" --timeout="${TIMEOUT}s"
  wait_app_pod
}

wait_app_pod() {
  printf '    $ %s | tail -n 1\n' "$(cmdline "${KUBECTL[@]}" -n "$APP_NAMESPACE" get pods -l "$APP_SELECTOR" \
    --sort-by=.metadata.creationTimestamp -o name)"
  if ((DRY_RUN)); then
    POD='<pod>'
  else
    POD="$(newest_pod)"
    [[ -n "$POD" ]] || die "no pod with label $APP_SELECTOR in $APP_NAMESPACE"
  fi
  run "${KUBECTL[@]}" -n "$APP_NAMESPACE" wait --for=condition=Ready "pod/$POD" --timeout="${TIMEOUT}s"
}

expect_pod() { expect "$1" "$2" "${KUBECTL[@]}" -n "$APP_NAMESPACE" get "pod/$POD" -o "jsonpath=$3"; }

assert_injection() {
  step "Assert the webhook injected the migration init container into pod $POD"
  local ic='.spec.initContainers[?(@.name=="migrate")]'
  expect "Deployment template init containers" "migrate" "${KUBECTL[@]}" -n "$APP_NAMESPACE" \
    get "deployment/$APP_DEPLOYMENT" -o 'jsonpath={.spec.template.spec.initContainers[*].name}'
  expect_pod "init containers" "migrate" '{.spec.initContainers[*].name}'
  expect_pod "migrate image" "$MIGRATIONS_IMAGE" "{$ic.image}"
  expect_pod "migrate imagePullPolicy (annotation migrations.io/pull-policy)" "Never" "{$ic.imagePullPolicy}"
  expect_pod "migrate args" "$MIGRATE_ARGS" "{$ic.args[*]}"
  expect_pod "migrate mount of atlas-project" "/etc/atlas" "{$ic.volumeMounts[?(@.name==\"atlas-project\")].mountPath}"
  expect_pod "migrate mount read-only" "true" "{$ic.volumeMounts[?(@.name==\"atlas-project\")].readOnly}"
  expect_pod "volume atlas-project from Secret" "atlas-project" '{.spec.volumes[?(@.name=="atlas-project")].secret.secretName}'
  if [[ "$EXPECT_SECURITY_CONTEXT" == 1 ]]; then
    expect_pod "securityContext.runAsNonRoot" "true" "{$ic.securityContext.runAsNonRoot}"
    expect_pod "securityContext.readOnlyRootFilesystem" "true" "{$ic.securityContext.readOnlyRootFilesystem}"
    expect_pod "securityContext.allowPrivilegeEscalation" "false" "{$ic.securityContext.allowPrivilegeEscalation}"
    expect_pod "securityContext.capabilities.drop" "ALL" "{$ic.securityContext.capabilities.drop[*]}"
    expect_pod "securityContext.seccompProfile.type" "RuntimeDefault" "{$ic.securityContext.seccompProfile.type}"
  else
    info "EXPECT_SECURITY_CONTEXT=$EXPECT_SECURITY_CONTEXT: securityContext not checked"
  fi
  local st='.status.initContainerStatuses[?(@.name=="migrate")].state.terminated'
  expect_pod "migrate exit code" "0" "{$st.exitCode}"
  expect_pod "migrate termination reason" "Completed" "{$st.reason}"
  run "${KUBECTL[@]}" -n "$APP_NAMESPACE" logs "pod/$POD" -c migrate || warn "could not read the migrate logs"
  checkpoint "injection into pod $POD"
}

REVISIONS_SCHEMA=""
assert_database() {
  step "Assert the migrations ran: tables users and posts, 2 revisions in atlas_schema_revisions"
  expect_sql "tables in schema public" "posts,users" \
    "select string_agg(table_name::text, ',' order by table_name) from information_schema.tables where table_schema = 'public' and table_name in ('users', 'posts')"
  expect_sql "foreign key posts.user_id -> users" "1" \
    "select count(*) from information_schema.table_constraints where table_schema = 'public' and table_name = 'posts' and constraint_type = 'FOREIGN KEY'"
  # Atlas keeps its revisions table in schema atlas_schema_revisions when the URL names no schema,
  # else in the connected schema: look it up rather than assume.
  local find_schema="select table_schema from information_schema.tables where table_name = 'atlas_schema_revisions'"
  show "${PSQL[@]}" "$find_schema"
  if ((DRY_RUN)); then
    REVISIONS_SCHEMA='<schema>'
  elif ! REVISIONS_SCHEMA="$(run_sql "$find_schema")" || [[ -z "$REVISIONS_SCHEMA" || "$REVISIONS_SCHEMA" == *$'\n'* ]]; then
    FAILURES=$((FAILURES + 1))
    printf '    FAIL atlas_schema_revisions: want exactly one such table, got %s\n' "$(quote "$REVISIONS_SCHEMA")" >&2
    checkpoint "database"
  else
    info "  atlas_schema_revisions is in schema $REVISIONS_SCHEMA"
  fi
  assert_revisions
  checkpoint "database"
}

assert_revisions() {
  # Rows whose version starts with '.' are Atlas bookkeeping (.atlas_cloud_identifier), not migrations.
  local table="\"$REVISIONS_SCHEMA\".atlas_schema_revisions"
  expect_sql "applied migrations recorded" "2" \
    "select count(*) from $table where version not like '.%'"
  expect_sql "applied migration versions" "$MIGRATION_VERSIONS" \
    "select string_agg(version, ',' order by version) from $table where version not like '.%'"
  expect_sql "migrations fully applied, without error" "2" \
    "select count(*) from $table where version not like '.%' and applied = total and coalesce(error, '') = ''"
}

assert_rerun() {
  step "Restart the app: the init container runs again and applies nothing new"
  if [[ "$SKIP_RERUN" == 1 ]]; then
    info "SKIP_RERUN=1: skipped"
    return 0
  fi
  run "${KUBECTL[@]}" -n "$APP_NAMESPACE" rollout restart "deployment/$APP_DEPLOYMENT"
  run "${KUBECTL[@]}" -n "$APP_NAMESPACE" rollout status "deployment/$APP_DEPLOYMENT" --timeout="${TIMEOUT}s"
  wait_app_pod
  local ic='.spec.initContainers[?(@.name=="migrate")]'
  expect_pod "init containers after restart" "migrate" '{.spec.initContainers[*].name}'
  expect_pod "migrate image after restart" "$MIGRATIONS_IMAGE" "{$ic.image}"
  expect_pod "migrate exit code after restart" "0" '{.status.initContainerStatuses[?(@.name=="migrate")].state.terminated.exitCode}'
  run "${KUBECTL[@]}" -n "$APP_NAMESPACE" logs "pod/$POD" -c migrate || warn "could not read the migrate logs"
  assert_revisions
  checkpoint "re-run"
}

assert_not_annotated() {
  step "Assert a Deployment without the annotation is left alone (server-side dry run)"
  expect "init containers of an unannotated Deployment" "" "${KUBECTL[@]}" -n "$APP_NAMESPACE" \
    create deployment plain-app --image=postgres:16-alpine --dry-run=server \
    -o 'jsonpath={.spec.template.spec.initContainers[*].name}'
  checkpoint "unannotated Deployment"
}

parse_args() {
  while (($#)); do
    case "$1" in
      --dry-run | --print | -n) DRY_RUN=1 ;;
      --keep-cluster) KEEP_CLUSTER=1 ;;
      -h | --help) usage; exit 0 ;;
      *) printf 'unknown argument: %s\n\n' "$1" >&2; usage >&2; exit 2 ;;
    esac
    shift
  done
}

main() {
  parse_args "$@"
  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  if ((DRY_RUN)); then
    printf '==> DRY RUN (--dry-run): printing the steps and commands; nothing is executed\n'
  fi
  preflight
  create_cluster
  build_images
  install_webhook
  deploy_database
  create_secret
  wait_for_webhook
  deploy_app
  assert_injection
  assert_database
  assert_rerun
  assert_not_annotated
}

# RUN_SH_SOURCE_ONLY=1: only define the functions (check.sh tests the assertions this way).
if [[ "${RUN_SH_SOURCE_ONLY:-0}" != 1 ]]; then
  main "$@"
fi
