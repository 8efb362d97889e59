# shellcheck shell=bash
# The e2e scenario of migration-injector on a real cluster, shared by both clusters:
#   tests/e2e/kind/run.sh  (kind, Docker, public images, Atlas)
#   tests/e2e/node/run.sh  (a real single node built on this machine, local images, dbmate)
# Sourced, not run. The caller brings a cluster up and sets, before calling the steps:
#   KUBECTL, HELM        arrays: the kubectl / helm command lines for that cluster
#   APP_NAMESPACE, WEBHOOK_NAMESPACE, HELM_RELEASE, CHART_DIR, TIMEOUT
#   TOOL                 atlas | dbmate: what is in the migrations image (Secret, args, version table)
#   MIGRATIONS_IMAGE     the migrations image as pods name it
#   MIGRATIONS_BROKEN_IMAGE   the same plus a failing migration ("" skips that scenario)
#   MIGRATIONS_PULL_POLICY    migrations.io/pull-policy on the app ("" : the webhook's default, Always)
#   POSTGRES_IMAGE, APP_IMAGE images for postgres.yaml and app.yaml's app container ("" keeps the file's)
#   DB_HOST_MODE         dns (postgres.<ns>.svc) | clusterip (the Service's address: no cluster DNS)
#   DRY_RUN              1: print the commands only
# Every step prints `==> [n] ...` and each command as `$ ...`; each assertion prints ok or FAIL.
# shellcheck disable=SC2034 # some settings are read by the caller

E2E_DIR="${E2E_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
MANIFESTS="${MANIFESTS:-$E2E_DIR/kind/manifests}"
TOOL="${TOOL:-atlas}"
MIGRATIONS_PULL_POLICY="${MIGRATIONS_PULL_POLICY-}"
MIGRATIONS_BROKEN_IMAGE="${MIGRATIONS_BROKEN_IMAGE-}"
POSTGRES_IMAGE="${POSTGRES_IMAGE-}"
APP_IMAGE="${APP_IMAGE-}"
DB_HOST_MODE="${DB_HOST_MODE:-dns}"
# The app Deployment of manifests/app.yaml and its pods' label.
APP_DEPLOYMENT="migrations-demo"
APP_SELECTOR="app.kubernetes.io/name=migrations-demo"
MIGRATION_VERSIONS="20240101000000,20240102000000"
# Text of the failing migration's error (tests/e2e/migrations-failing/).
BROKEN_MIGRATION_ERROR='no_such_table'
EXPECT_SECURITY_CONTEXT="${EXPECT_SECURITY_CONTEXT:-1}"
DRY_RUN="${DRY_RUN:-0}"
STEP="${STEP:-0}"
FAILURES="${FAILURES:-0}"
DB_HOST=""
POD=""

# --- the migration tool ----------------------------------------------------------------------
# tool_annotations: JSON for migrations.io/command and migrations.io/args (empty: the defaults).
TOOL_COMMAND=""
TOOL_ARGS=""
case "$TOOL" in
  atlas)
    MIGRATE_COMMAND=""
    MIGRATE_ARGS="migrate apply -c file:///etc/atlas/atlas.hcl --env k8s"
    ;;
  dbmate)
    # --no-dump-schema: `up` would write db/schema.sql, and the root filesystem is read-only.
    # --wait: the database may still be starting; --migration-lock: replicas racing wait in turn.
    TOOL_COMMAND='["dbmate"]'
    TOOL_ARGS='["--env-file","/etc/atlas/dbmate.env","--migrations-dir","/db/migrations","--no-dump-schema","--wait","--migration-lock","up"]'
    MIGRATE_COMMAND="dbmate"
    MIGRATE_ARGS="--env-file /etc/atlas/dbmate.env --migrations-dir /db/migrations --no-dump-schema --wait --migration-lock up"
    ;;
  *) printf 'unknown TOOL %s (atlas or dbmate)\n' "$TOOL" >&2; exit 2 ;;
esac

PSQL=("${KUBECTL[@]}" -n "$APP_NAMESPACE" exec deploy/postgres -c postgres --
  psql -U postgres -d app -v ON_ERROR_STOP=1 -tAc)

# ---------------------------------------------------------------------------------------------
# Output and execution helpers
# ---------------------------------------------------------------------------------------------
step() { STEP=$((STEP + 1)); PHASE="[$STEP] $*"; printf '\n==> [%d] %s\n' "$STEP" "$*"; }
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

ok() { info "  ok   $*"; }
failed() { printf '    FAIL %s\n' "$*" >&2; FAILURES=$((FAILURES + 1)); }

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
    failed "$desc: command failed"
    return 0
  fi
  got="${got#"${got%%[![:space:]]*}"}"
  got="${got%"${got##*[![:space:]]}"}"
  if [[ "$got" == "$want" ]]; then
    ok "$desc = $(quote "$got")"
  else
    failed "$desc: want $(quote "$want"), got $(quote "$got")"
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
# Diagnostics
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

# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
# app_manifest NAME IMAGE [REPLICAS]: app.yaml for this cluster and tool.
app_manifest() {
  local args=("$MANIFESTS/app.yaml" --name "$1" --image "$2" --pull-policy "$MIGRATIONS_PULL_POLICY"
    --command "$TOOL_COMMAND" --args "$TOOL_ARGS" --app-image "$APP_IMAGE" --db-host "${DB_HOST:-}")
  [[ -n "${3:-}" ]] && args+=(--replicas "$3")
  python3 "$E2E_DIR/render_app.py" "${args[@]}"
}
# apply_app NAME IMAGE: render and apply.
apply_app() {
  printf '    $ %s | %s -n %s apply -f -\n' "$(cmdline python3 "$E2E_DIR/render_app.py" "$MANIFESTS/app.yaml" --name "$1" --image "$2" ...)" \
    "$(cmdline "${KUBECTL[@]}")" "$APP_NAMESPACE"
  ((DRY_RUN)) && return 0
  app_manifest "$1" "$2" | "${KUBECTL[@]}" -n "$APP_NAMESPACE" apply -f -
}

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
# install_chart MODE [helm args...]: helm upgrade --install of the chart in tls.mode=MODE.
install_chart() {
  local mode=$1
  shift
  step "Install the webhook with Helm (chart $CHART_DIR, tls.mode=$mode)"
  run "${HELM[@]}" upgrade --install "$HELM_RELEASE" "$CHART_DIR" \
    --namespace "$WEBHOOK_NAMESPACE" --create-namespace \
    --set "tls.mode=$mode" "$@" \
    --wait --timeout "${TIMEOUT}s"
  run "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" rollout status "deployment/$(webhook_deployment)" --timeout="${TIMEOUT}s"
  run "${KUBECTL[@]}" get mutatingwebhookconfigurations
}

webhook_deployment() {
  if ((DRY_RUN)); then printf '%s' "$HELM_RELEASE"; return; fi
  "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get deployments -l "app.kubernetes.io/instance=$HELM_RELEASE" \
    -o jsonpath='{.items[0].metadata.name}'
}

deploy_database() {
  step "Deploy PostgreSQL into namespace $APP_NAMESPACE"
  # A fresh namespace, so that a reused cluster starts from an empty database.
  run "${KUBECTL[@]}" delete namespace "$APP_NAMESPACE" --ignore-not-found=true --wait=true --timeout="${TIMEOUT}s"
  apply_generated "${KUBECTL[@]}" create namespace "$APP_NAMESPACE"
  if [[ -n "${APP_NAMESPACE_LABELS:-}" ]]; then
    local labels=()
    IFS=',' read -r -a labels <<<"$APP_NAMESPACE_LABELS"
    run "${KUBECTL[@]}" label namespace "$APP_NAMESPACE" --overwrite "${labels[@]}"
  fi
  if [[ -n "$POSTGRES_IMAGE" ]]; then
    printf '    $ sed s#image: postgres:16-alpine#image: %s# %s | %s -n %s apply -f -\n' "$POSTGRES_IMAGE" \
      "$MANIFESTS/postgres.yaml" "$(cmdline "${KUBECTL[@]}")" "$APP_NAMESPACE"
    ((DRY_RUN)) || sed "s#image: postgres:16-alpine#image: $POSTGRES_IMAGE#" "$MANIFESTS/postgres.yaml" |
      "${KUBECTL[@]}" -n "$APP_NAMESPACE" apply -f -
  else
    run "${KUBECTL[@]}" -n "$APP_NAMESPACE" apply -f "$MANIFESTS/postgres.yaml"
  fi
  run "${KUBECTL[@]}" -n "$APP_NAMESPACE" rollout status deployment/postgres --timeout="${TIMEOUT}s"
  # pg_isready in the readiness probe; double-check with a real query.
  expect_sql "postgres answers" "1" "select 1"
  if [[ "$DB_HOST_MODE" == clusterip ]]; then
    if ((DRY_RUN)); then DB_HOST='<postgres ClusterIP>'; else
      DB_HOST="$("${KUBECTL[@]}" -n "$APP_NAMESPACE" get service postgres -o 'jsonpath={.spec.clusterIP}')"
    fi
    info "no cluster DNS here: pods reach PostgreSQL at its Service address $DB_HOST"
  else
    DB_HOST="postgres.$APP_NAMESPACE.svc"
  fi
  checkpoint "postgres"
}

db_url() { printf 'postgres://postgres:pass@%s:5432/app?sslmode=disable' "${DB_HOST:-postgres.$APP_NAMESPACE.svc}"; }

create_secret() {
  [[ -n "$DB_HOST" ]] || DB_HOST="postgres.$APP_NAMESPACE.svc"
  local key content line
  case "$TOOL" in
    atlas)
      key=atlas.hcl
      content="env \"k8s\" {
  url = \"$(db_url)\"
  migration {
    dir = \"file:///migrations\"
  }
}"
      ;;
    dbmate)
      key=dbmate.env
      content="DATABASE_URL=$(db_url)"
      ;;
  esac
  step "Create Secret atlas-project ($key -> $DB_HOST)"
  info "$key:"
  while IFS= read -r line; do info "  | $line"; done <<<"$content"
  apply_generated "${KUBECTL[@]}" -n "$APP_NAMESPACE" create secret generic atlas-project \
    --from-literal="$key=$content"
}

wait_for_webhook() {
  step "Wait until the webhook mutates an annotated Deployment (server-side dry run)"
  local probe=("${KUBECTL[@]}" -n "$APP_NAMESPACE" apply --dry-run=server -f -
    -o 'jsonpath={.spec.template.spec.initContainers[*].name}')
  printf '    $ <app manifest> | %s\n' "$(cmdline "${probe[@]}")"
  info "  (repeated until it prints 'migrate', at most ${TIMEOUT}s)"
  ((DRY_RUN)) && return 0
  local deadline=$((SECONDS + TIMEOUT)) out
  while :; do
    if out="$(app_manifest "$APP_DEPLOYMENT" "$MIGRATIONS_IMAGE" | "${probe[@]}" 2>&1)" && [[ " $out " == *" migrate "* ]]; then
      ok "the webhook answers and injects"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      die "no injection seen in a server-side dry run after ${TIMEOUT}s (last output: $out)"
    fi
    sleep 2
  done
}

# newest_pod [SELECTOR]: name of the most recently created app pod.
newest_pod() {
  local name
  name="$("${KUBECTL[@]}" -n "$APP_NAMESPACE" get pods -l "${1:-$APP_SELECTOR}" \
    --sort-by=.metadata.creationTimestamp -o name | tail -n 1)"
  printf '%s' "${name#pod/}"
}

deploy_app() {
  step "Deploy the annotated app Deployment ($MANIFESTS/app.yaml: migrations.io/image${TOOL_COMMAND:+, command and args for $TOOL})"
  apply_app "$APP_DEPLOYMENT" "$MIGRATIONS_IMAGE"
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

# migrate_ran_first: the init container finished (exit 0) before the app container started.
migrate_ran_first() {
  local get=("${KUBECTL[@]}" -n "$APP_NAMESPACE" get "pod/$POD" -o
    'jsonpath={.status.initContainerStatuses[?(@.name=="migrate")].state.terminated.finishedAt} {.status.containerStatuses[?(@.name=="app")].state.running.startedAt}')
  show "${get[@]}"
  ((DRY_RUN)) && return 0
  local finished started
  read -r finished started < <("${get[@]}") || true
  if [[ -n "$finished" && -n "$started" && ! "$finished" > "$started" ]]; then
    ok "migrate finished at $finished, app started at $started"
  else
    failed "migrate must finish before the app starts: finished '$finished', app started '$started'"
  fi
}

assert_injection() {
  step "Assert the webhook injected the migration init container into pod $POD"
  local ic='.spec.initContainers[?(@.name=="migrate")]'
  expect "Deployment template init containers" "migrate" "${KUBECTL[@]}" -n "$APP_NAMESPACE" \
    get "deployment/$APP_DEPLOYMENT" -o 'jsonpath={.spec.template.spec.initContainers[*].name}'
  expect_pod "init containers" "migrate" '{.spec.initContainers[*].name}'
  expect_pod "migrate image" "$MIGRATIONS_IMAGE" "{$ic.image}"
  expect_pod "migrate imagePullPolicy" "${MIGRATIONS_PULL_POLICY:-Always}" "{$ic.imagePullPolicy}"
  expect_pod "migrate command" "$MIGRATE_COMMAND" "{$ic.command[*]}"
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
  migrate_ran_first
  if [[ "${MIGRATIONS_PULL_POLICY:-Always}" == Always ]]; then
    # imagePullPolicy Always: kubelet pulled it from the registry for this pod.
    local ev=("${KUBECTL[@]}" -n "$APP_NAMESPACE" get events --field-selector "involvedObject.name=$POD,reason=Pulled"
      -o 'jsonpath={range .items[*]}{.message}{"\n"}{end}')
    show "${ev[@]}"
    if ((DRY_RUN == 0)); then
      local msgs
      msgs="$("${ev[@]}" 2>/dev/null || true)"
      if grep -q "Successfully pulled image \"$MIGRATIONS_IMAGE\"" <<<"$msgs"; then
        ok "kubelet pulled $MIGRATIONS_IMAGE from the registry (event Pulled)"
      else
        failed "no 'Successfully pulled image \"$MIGRATIONS_IMAGE\"' event for $POD: $msgs"
      fi
    fi
  fi
  run "${KUBECTL[@]}" -n "$APP_NAMESPACE" logs "pod/$POD" -c migrate || warn "could not read the migrate logs"
  checkpoint "injection into pod $POD"
}

REVISIONS_SCHEMA=""
assert_database() {
  step "Assert the migrations ran: tables users and posts, 2 versions in the $TOOL version table"
  expect_sql "tables in schema public" "posts,users" \
    "select string_agg(table_name::text, ',' order by table_name) from information_schema.tables where table_schema = 'public' and table_name in ('users', 'posts')"
  expect_sql "foreign key posts.user_id -> users" "1" \
    "select count(*) from information_schema.table_constraints where table_schema = 'public' and table_name = 'posts' and constraint_type = 'FOREIGN KEY'"
  if [[ "$TOOL" == atlas ]]; then
    # Atlas keeps its revisions table in schema atlas_schema_revisions when the URL names no schema,
    # else in the connected schema: look it up rather than assume.
    local find_schema="select table_schema from information_schema.tables where table_name = 'atlas_schema_revisions'"
    show "${PSQL[@]}" "$find_schema"
    if ((DRY_RUN)); then
      REVISIONS_SCHEMA='<schema>'
    elif ! REVISIONS_SCHEMA="$(run_sql "$find_schema")" || [[ -z "$REVISIONS_SCHEMA" || "$REVISIONS_SCHEMA" == *$'\n'* ]]; then
      failed "atlas_schema_revisions: want exactly one such table, got $(quote "$REVISIONS_SCHEMA")"
      checkpoint "database"
    else
      info "  atlas_schema_revisions is in schema $REVISIONS_SCHEMA"
    fi
  fi
  assert_revisions
  checkpoint "database"
}

assert_revisions() {
  case "$TOOL" in
    atlas)
      # Rows whose version starts with '.' are Atlas bookkeeping (.atlas_cloud_identifier), not migrations.
      local table="\"$REVISIONS_SCHEMA\".atlas_schema_revisions"
      expect_sql "applied migrations recorded" "2" \
        "select count(*) from $table where version not like '.%'"
      expect_sql "applied migration versions" "$MIGRATION_VERSIONS" \
        "select string_agg(version, ',' order by version) from $table where version not like '.%'"
      expect_sql "migrations fully applied, without error" "2" \
        "select count(*) from $table where version not like '.%' and applied = total and coalesce(error, '') = ''"
      ;;
    dbmate)
      expect_sql "applied migration versions (schema_migrations)" "$MIGRATION_VERSIONS" \
        "select string_agg(version, ',' order by version) from public.schema_migrations"
      ;;
  esac
}

assert_rerun() {
  step "Restart the app: the init container runs again and applies nothing new"
  if [[ "${SKIP_RERUN:-0}" == 1 ]]; then
    info "SKIP_RERUN=1: skipped"
    return 0
  fi
  local before="$POD"
  run "${KUBECTL[@]}" -n "$APP_NAMESPACE" rollout restart "deployment/$APP_DEPLOYMENT"
  run "${KUBECTL[@]}" -n "$APP_NAMESPACE" rollout status "deployment/$APP_DEPLOYMENT" --timeout="${TIMEOUT}s"
  wait_app_pod
  if ((DRY_RUN == 0)) && [[ "$POD" == "$before" ]]; then failed "no new pod after the restart ($POD)"; fi
  local ic='.spec.initContainers[?(@.name=="migrate")]'
  expect_pod "init containers after restart" "migrate" '{.spec.initContainers[*].name}'
  expect_pod "migrate image after restart" "$MIGRATIONS_IMAGE" "{$ic.image}"
  expect_pod "migrate exit code after restart" "0" '{.status.initContainerStatuses[?(@.name=="migrate")].state.terminated.exitCode}'
  migrate_ran_first
  run "${KUBECTL[@]}" -n "$APP_NAMESPACE" logs "pod/$POD" -c migrate || warn "could not read the migrate logs"
  assert_revisions
  checkpoint "re-run"
}

assert_not_annotated() {
  step "Assert a Deployment without the annotation is left alone (server-side dry run)"
  expect "init containers of an unannotated Deployment" "" "${KUBECTL[@]}" -n "$APP_NAMESPACE" \
    create deployment plain-app --image="${APP_IMAGE:-postgres:16-alpine}" --dry-run=server \
    -o 'jsonpath={.spec.template.spec.initContainers[*].name}'
  checkpoint "unannotated Deployment"
}

# A migration that fails (bad SQL): the pod never becomes Ready, the app container never starts,
# and the reason can be read in the pod's status.
assert_failing_migration() {
  local name=migrations-broken
  step "A failing migration: the app never starts, the reason is in the pod status"
  if [[ -z "$MIGRATIONS_BROKEN_IMAGE" ]]; then
    info "MIGRATIONS_BROKEN_IMAGE is empty: skipped"
    return 0
  fi
  apply_app "$name" "$MIGRATIONS_BROKEN_IMAGE"
  local sel="app.kubernetes.io/name=$name" st='.status.initContainerStatuses[?(@.name=="migrate")]'
  info "  waiting until migrate has failed twice (restartCount >= 1, at most ${TIMEOUT}s)"
  ((DRY_RUN)) && return 0
  local deadline=$((SECONDS + TIMEOUT)) pod="" restarts=""
  while :; do
    pod="$(newest_pod "$sel")"
    if [[ -n "$pod" ]]; then
      restarts="$("${KUBECTL[@]}" -n "$APP_NAMESPACE" get "pod/$pod" -o "jsonpath={$st.restartCount}" 2>/dev/null || true)"
      [[ -n "$restarts" && "$restarts" -ge 1 ]] && break
    fi
    ((SECONDS < deadline)) || { failed "migrate of $name did not fail and restart within ${TIMEOUT}s"; checkpoint "failing migration"; }
    sleep 2
  done
  local yaml
  yaml="$("${KUBECTL[@]}" -n "$APP_NAMESPACE" get "pod/$pod" -o yaml)"
  printf '%s\n' "$yaml" | sed -n '/^status:/,$p' | sed 's/^/    | /'
  local saved=$POD
  POD=$pod
  expect_pod "pod Ready condition" "False" '{.status.conditions[?(@.type=="Ready")].status}'
  expect_pod "app container never started (waiting)" "PodInitializing" '{.status.containerStatuses[?(@.name=="app")].state.waiting.reason}'
  expect_pod "app container restarts" "0" '{.status.containerStatuses[?(@.name=="app")].restartCount}'
  expect_pod "app container: no start time" "" '{.status.containerStatuses[?(@.name=="app")].state.running.startedAt}'
  local code
  code="$("${KUBECTL[@]}" -n "$APP_NAMESPACE" get "pod/$pod" -o "jsonpath={$st.lastState.terminated.exitCode}")"
  if [[ "$code" =~ ^[0-9]+$ && "$code" != 0 ]]; then ok "migrate's last run failed: exit code $code"
  else failed "migrate's last run: want a non-zero exit code, got '$code'"; fi
  expect_pod "migrate's last run: reason" "Error" "{$st.lastState.terminated.reason}"
  # With terminationMessagePolicy FallbackToLogsOnError on the injected container, the tool's own
  # error text is in the status too (kubectl get pod -o yaml); checked whenever the webhook sets it.
  local policy
  policy="$("${KUBECTL[@]}" -n "$APP_NAMESPACE" get "pod/$pod" -o 'jsonpath={.spec.initContainers[?(@.name=="migrate")].terminationMessagePolicy}')"
  if [[ "$policy" == FallbackToLogsOnError ]]; then
    local msg
    msg="$("${KUBECTL[@]}" -n "$APP_NAMESPACE" get "pod/$pod" -o "jsonpath={$st.lastState.terminated.message}{$st.state.terminated.message}")"
    if [[ "$msg" == *"$BROKEN_MIGRATION_ERROR"* ]]; then
      ok "the error is in the pod status (terminationMessagePolicy FallbackToLogsOnError): $(head -c 200 <<<"$msg" | tr '\n' ' ')"
    else
      failed "terminationMessagePolicy is FallbackToLogsOnError but the status message lacks '$BROKEN_MIGRATION_ERROR': $msg"
    fi
  else
    info "  terminationMessagePolicy of migrate: ${policy:-File (default)}: the tool's log text is not copied into the status (checked once the webhook sets FallbackToLogsOnError)"
    # The current or the previous attempt (a restart may be under way: retry a little).
    local logs="" i
    for i in 1 2 3 4 5 6 7 8 9 10; do
      logs="$("${KUBECTL[@]}" -n "$APP_NAMESPACE" logs "pod/$pod" -c migrate 2>&1 || true)
$("${KUBECTL[@]}" -n "$APP_NAMESPACE" logs "pod/$pod" -c migrate --previous 2>&1 || true)"
      [[ "$logs" == *"$BROKEN_MIGRATION_ERROR"* ]] && break
      sleep "$i"
    done
    if [[ "$logs" == *"$BROKEN_MIGRATION_ERROR"* ]]; then ok "migrate's log names the error: $(grep -m1 "$BROKEN_MIGRATION_ERROR" <<<"$logs")"
    else failed "migrate's log lacks '$BROKEN_MIGRATION_ERROR': $logs"; fi
  fi
  # Each migration runs in a transaction: nothing of the broken one is left.
  expect_sql "no table from the failing migration" "0" \
    "select count(*) from information_schema.tables where table_schema = 'public' and table_name = 'comments'"
  assert_revisions
  POD=$saved
  run "${KUBECTL[@]}" -n "$APP_NAMESPACE" delete deployment "$name" --wait=true
  checkpoint "failing migration"
}

# ---------------------------------------------------------------------------------------------
# Webhook availability: admissions keep succeeding while the webhook's pods change
# ---------------------------------------------------------------------------------------------
ADMISSION_LOG=""
ADMISSION_LOOP_PID=""
# admission_loop_start TAG: creates and deletes annotated Deployments (0 replicas) in a loop until
# admission_loop_stop; one line per creation in $ADMISSION_LOG: ok|noinit|fail NAME [error].
admission_loop_start() {
  local tag=$1
  ADMISSION_LOG="$(mktemp)"
  local stop="$ADMISSION_LOG.stop"
  (
    set +e
    local i=0 name out
    while [[ ! -e "$stop" ]]; do
      i=$((i + 1))
      name="avail-$tag-$i"
      if out="$(app_manifest "$name" "$MIGRATIONS_IMAGE" 0 | "${KUBECTL[@]}" -n "$APP_NAMESPACE" create -f - \
        -o 'jsonpath={.spec.template.spec.initContainers[*].name}' 2>&1)"; then
        if [[ " $out " == *" migrate "* ]]; then echo "ok $name" >>"$ADMISSION_LOG"; else echo "noinit $name $out" >>"$ADMISSION_LOG"; fi
        "${KUBECTL[@]}" -n "$APP_NAMESPACE" delete deployment "$name" --wait=false >/dev/null 2>&1
      else
        echo "fail $name ${out//$'\n'/ }" >>"$ADMISSION_LOG"
      fi
    done
  ) &
  ADMISSION_LOOP_PID=$!
}
# admission_loop_stop DESCRIPTION: stops the loop (by its pid) and asserts every admission passed.
admission_loop_stop() {
  local desc=$1
  touch "$ADMISSION_LOG.stop"
  wait "$ADMISSION_LOOP_PID" 2>/dev/null || true
  ADMISSION_LOOP_PID=""
  local total okc noinit failc
  total=$(wc -l <"$ADMISSION_LOG")
  okc=$(grep -c '^ok ' "$ADMISSION_LOG" || true)
  noinit=$(grep -c '^noinit ' "$ADMISSION_LOG" || true)
  failc=$(grep -c '^fail ' "$ADMISSION_LOG" || true)
  info "  admissions during $desc: $total (ok $okc, without init container $noinit, failed $failc)"
  AVAILABILITY_REPORT+=("$desc: $total admissions, $failc failed, $noinit without the init container")
  if ((total >= 5 && okc == total)); then
    ok "$desc: $total Deployments created, every one with the init container, zero failed admissions"
  else
    failed "$desc: $total admissions, $okc ok, $noinit without init container, $failc failed (need >= 5, all ok)"
    grep -v '^ok ' "$ADMISSION_LOG" | sed -n '1,10s/^/      /p' >&2 || true
  fi
  rm -f "$ADMISSION_LOG" "$ADMISSION_LOG.stop"
}
AVAILABILITY_REPORT=()

assert_available_during_upgrade() {
  step "Webhook availability (failurePolicy Fail): admissions during a helm upgrade that rolls the webhook's pods"
  if [[ ! -f "$CHART_DIR/Chart.yaml" ]]; then
    info "no chart in $CHART_DIR (installed from a manifest): skipped"
    return 0
  fi
  expect "failurePolicy" "Fail" "${KUBECTL[@]}" get mutatingwebhookconfigurations \
    -l "app.kubernetes.io/instance=$HELM_RELEASE" -o 'jsonpath={.items[*].webhooks[*].failurePolicy}'
  ((DRY_RUN)) && { show "${HELM[@]}" upgrade "$HELM_RELEASE" "$CHART_DIR" --reuse-values --set-string "deployment.podAnnotations.e2e-roll=<n>" --wait; return 0; }
  local before
  before="$("${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get pods -l "app.kubernetes.io/instance=$HELM_RELEASE" -o name | sort | tr '\n' ' ')"
  admission_loop_start upgrade
  sleep 3
  run "${HELM[@]}" upgrade "$HELM_RELEASE" "$CHART_DIR" --namespace "$WEBHOOK_NAMESPACE" --reuse-values \
    --set-string "deployment.podAnnotations.e2e-roll=$(date +%s)" --wait --timeout "${TIMEOUT}s" ||
    failed "helm upgrade"
  run "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" rollout status "deployment/$(webhook_deployment)" --timeout="${TIMEOUT}s" || failed "rollout"
  # The old pods finish terminating (shutdown delay, drain) while admissions continue.
  # shellcheck disable=SC2086 # one word per pod
  run "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" wait --for=delete $before --timeout="${TIMEOUT}s" || failed "old webhook pods still there"
  sleep 2
  admission_loop_stop "helm upgrade (pods rolled)"
  local after
  after="$("${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get pods -l "app.kubernetes.io/instance=$HELM_RELEASE" -o name | sort | tr '\n' ' ')"
  if [[ -n "$after" && "$(comm -12 <(tr ' ' '\n' <<<"$before" | sort) <(tr ' ' '\n' <<<"$after" | sort) | grep -c . || true)" == 0 ]]; then
    ok "every webhook pod was replaced (before: $before; after: $after)"
  else
    failed "the upgrade did not replace every webhook pod (before: $before; after: $after)"
  fi
  checkpoint "availability during helm upgrade"
}

assert_available_during_pod_deletion() {
  step "Webhook availability (failurePolicy Fail): admissions while one webhook pod is deleted"
  ((DRY_RUN)) && { show "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" delete pod '<one webhook pod>'; return 0; }
  local victim
  victim="$("${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get pods -l "app.kubernetes.io/instance=$HELM_RELEASE" \
    --field-selector=status.phase=Running -o 'jsonpath={.items[0].metadata.name}')"
  victim="pod/$victim"
  [[ -n "$victim" ]] || die "no running webhook pod"
  admission_loop_start delete
  sleep 3
  # --wait: returns once the pod is gone (its shutdown delay and drain included).
  run "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" delete "$victim" --wait=true --timeout="${TIMEOUT}s" || failed "deleting $victim"
  run "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" rollout status "deployment/$(webhook_deployment)" --timeout="${TIMEOUT}s" || failed "rollout"
  run "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" wait --for=condition=Available "deployment/$(webhook_deployment)" --timeout="${TIMEOUT}s" || failed "available"
  sleep 3
  admission_loop_stop "deletion of $victim"
  checkpoint "availability during pod deletion"
}

# ---------------------------------------------------------------------------------------------
# tls.mode=selfManaged: every replica serves a certificate the API server trusts
# ---------------------------------------------------------------------------------------------
# assert_self_managed_certs [RUN...]: RUN is a prefix for openssl (where port-forwards listen).
assert_self_managed_certs() {
  step "tls.mode=selfManaged: each replica serves a certificate the API server's caBundle verifies, with only the chart's RBAC"
  ((DRY_RUN)) && return 0
  local dep svc sa ca
  dep="$(webhook_deployment)"
  svc="$("${KUBECTL[@]}" get mutatingwebhookconfigurations -l "app.kubernetes.io/instance=$HELM_RELEASE" \
    -o 'jsonpath={.items[0].webhooks[0].clientConfig.service.name}')"
  if [[ -n "$svc" ]]; then ok "the webhook is reached through Service $svc"; else failed "clientConfig.service is not set"; fi
  ca="$(mktemp)"
  "${KUBECTL[@]}" get mutatingwebhookconfigurations -l "app.kubernetes.io/instance=$HELM_RELEASE" \
    -o 'jsonpath={.items[0].webhooks[0].clientConfig.caBundle}' | base64 -d >"$ca"
  if grep -q 'BEGIN CERTIFICATE' "$ca"; then ok "caBundle set by the webhook ($(openssl x509 -in "$ca" -noout -subject 2>/dev/null))"
  else failed "caBundle empty"; fi
  assert_replicas_serve "$svc" "$ca" "the caBundle"
  rm -f "$ca"
  # Only the chart's RBAC: every binding naming the ServiceAccount is the release's own.
  sa="$("${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get "deployment/$dep" -o 'jsonpath={.spec.template.spec.serviceAccountName}')"
  local bindings
  bindings="$("${KUBECTL[@]}" get clusterrolebindings,rolebindings -A -o json | python3 -c '
import json, sys
ns, sa, rel = sys.argv[1:4]
for b in json.load(sys.stdin)["items"]:
    if any(s.get("kind") == "ServiceAccount" and s.get("name") == sa and s.get("namespace", b["metadata"].get("namespace")) == ns
           for s in b.get("subjects") or []):
        mine = (b["metadata"].get("labels") or {}).get("app.kubernetes.io/instance") == rel
        print(("chart" if mine else "OTHER"), b["kind"], b["metadata"]["name"])
' "$WEBHOOK_NAMESPACE" "$sa" "$HELM_RELEASE")"
  info "  bindings of ServiceAccount $sa:"
  while IFS= read -r line; do info "    $line"; done <<<"$bindings"
  if [[ -n "$bindings" && "$bindings" != *OTHER* ]]; then ok "ServiceAccount $sa has only the chart's bindings"
  else failed "ServiceAccount $sa: bindings other than the chart's, or none"; fi
  expect "the ServiceAccount cannot read Secrets cluster-wide" "no" can_i list secrets \
    --all-namespaces --as "system:serviceaccount:$WEBHOOK_NAMESPACE:$sa"
  checkpoint "self-managed certificates"
}

# assert_replicas_serve SERVICE CAFILE WHAT: every running webhook pod serves a certificate for
# SERVICE.<namespace>.svc that verifies against CAFILE (described as WHAT); at least two pods.
assert_replicas_serve() {
  local svc=$1 ca=$2 what=$3 pods pod port pf
  pods="$("${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get pods -l "app.kubernetes.io/instance=$HELM_RELEASE" \
    --field-selector=status.phase=Running -o 'jsonpath={.items[*].metadata.name}')"
  local n=0
  for pod in $pods; do
    n=$((n + 1))
    port=$((20000 + RANDOM % 20000))
    "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" port-forward "pod/$pod" "$port:webhook" >/dev/null 2>&1 &
    pf=$!
    local out="" i
    for i in $(seq 1 20); do
      out="$("${OPENSSL_RUN[@]}" openssl s_client -connect "127.0.0.1:$port" -servername "$svc.$WEBHOOK_NAMESPACE.svc" \
        -verify_hostname "$svc.$WEBHOOK_NAMESPACE.svc" -CAfile "$ca" -verify_return_error </dev/null 2>&1)" && break
      sleep 0.5
    done
    kill "$pf" 2>/dev/null || true
    wait "$pf" 2>/dev/null || true
    if grep -q 'Verify return code: 0 (ok)' <<<"$out"; then
      ok "pod $pod: certificate for $svc.$WEBHOOK_NAMESPACE.svc verifies against $what"
    else
      failed "pod $pod: certificate does not verify: $(grep -E 'verify|error' <<<"$out" | head -n 3 | tr '\n' ' ')"
    fi
  done
  if ((n >= 2)); then ok "$n replicas checked"; else failed "want 2 running replicas, found $n"; fi
}
# OPENSSL_RUN: a prefix running openssl where the port-forwards listen (the caller may set it).
[[ -v OPENSSL_RUN ]] || OPENSSL_RUN=()
# can_i ARGS...: kubectl auth can-i, printing yes/no whatever its exit status.
can_i() { "${KUBECTL[@]}" auth can-i "$@" || true; }

# ---------------------------------------------------------------------------------------------
# The whole scenario, in order (after the chart is installed in tls.mode=helm)
# ---------------------------------------------------------------------------------------------
# run_scenario: the guide's flow, restart, failing migration, unannotated, availability.
# A caller may define after_injection (cluster-specific checks of pod $POD).
run_scenario() {
  deploy_database
  create_secret
  wait_for_webhook
  deploy_app
  assert_injection
  if declare -F after_injection >/dev/null; then after_injection; fi
  assert_database
  assert_rerun
  assert_failing_migration
  assert_not_annotated
  assert_available_during_upgrade
  assert_available_during_pod_deletion
}

# assert_available_during_mode_switch MODE [helm args...]: helm upgrade to tls.mode=MODE while
# admissions run (failurePolicy Fail): the old pods' CA stays trusted until they are gone, so
# not one admission fails.
assert_available_during_mode_switch() {
  local mode=$1
  shift
  SWITCH_WHAT="${SWITCH_WHAT:-tls.mode=$mode}"
  step "Webhook availability (failurePolicy Fail): admissions while helm upgrade switches to $SWITCH_WHAT"
  ((DRY_RUN)) && { show "${HELM[@]}" upgrade "$HELM_RELEASE" "$CHART_DIR" --reuse-values --set "tls.mode=$mode" "$@" --wait; SWITCH_WHAT=""; return 0; }
  local before
  before="$("${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get pods -l "app.kubernetes.io/instance=$HELM_RELEASE" -o name | sort | tr '\n' ' ')"
  admission_loop_start "switch-${mode,,}"
  sleep 3
  run "${HELM[@]}" upgrade "$HELM_RELEASE" "$CHART_DIR" --namespace "$WEBHOOK_NAMESPACE" --reuse-values \
    --set "tls.mode=$mode" "$@" --wait --timeout "${TIMEOUT}s" || failed "helm upgrade to $SWITCH_WHAT"
  run "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" rollout status "deployment/$(webhook_deployment)" --timeout="${TIMEOUT}s" || failed "rollout"
  # shellcheck disable=SC2086 # one word per pod
  run "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" wait --for=delete $before --timeout="${TIMEOUT}s" || failed "old webhook pods still there"
  sleep 3
  admission_loop_stop "helm upgrade to $SWITCH_WHAT"
  checkpoint "availability during the switch to $SWITCH_WHAT"
  SWITCH_WHAT=""
}
# SWITCH_WHAT: how the next assert_available_during_mode_switch names its change (default: the mode).
SWITCH_WHAT=""

# run_self_managed_scenario [helm args...]: switch to tls.mode=selfManaged under load; both
# replicas serve trusted certificates; admissions survive a pod deletion.
run_self_managed_scenario() {
  assert_available_during_mode_switch selfManaged "$@"
  assert_self_managed_certs
  wait_for_webhook
  assert_available_during_pod_deletion
  assert_self_managed_certs
}

# user_certs: a user's CA and serving certificate for the webhook's Service, made as
# certs/README.md says (certs/dev-certs.sh; MIGRATION_INJECTOR_BIN names the binary, else it
# builds one), in a new directory named by USER_CERTS (with secret.yaml and cabundle).
user_certs() {
  local repo="${REPO_ROOT:-${REPO:-$(cd "$E2E_DIR/../.." && pwd)}}"
  if ((DRY_RUN)); then USER_CERTS="<dir>"; else USER_CERTS="$(mktemp -d)"; fi
  run "$repo/certs/dev-certs.sh" "$WEBHOOK_NAMESPACE" "$(webhook_deployment)" "$USER_CERTS" || failed "certs/dev-certs.sh"
}

# run_existing_secret_scenario [helm args...]: from tls.mode=helm, the user's own certificate
# (user_certs) switched to under load (tls.mode=existingSecret): zero failed admissions, Helm
# deleted the helm-mode Secret, every replica serves the user's certificate.
run_existing_secret_scenario() {
  local svc certs bundle=""
  svc="$(webhook_deployment)"
  step "tls.mode=existingSecret: the user's certificate (certs/dev-certs.sh) in Secret $svc-serving-tls"
  user_certs
  certs=$USER_CERTS
  run "${KUBECTL[@]}" apply -f "$certs/secret.yaml" || failed "creating Secret $svc-serving-tls"
  ((DRY_RUN)) || bundle="$(cat "$certs/cabundle")"
  assert_available_during_mode_switch existingSecret "$@" --set "tls.existingSecret=$svc-serving-tls" \
    --set "tls.caBundle=${bundle:-<caBundle>}"
  ((DRY_RUN)) && return 0
  expect "the helm-mode Secret is gone (Helm deleted it on the switch)" "" \
    "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get secrets --ignore-not-found -o name "$svc-tls"
  assert_replicas_serve "$svc" "$certs/ca.crt" "the user's CA alone"
  checkpoint "existingSecret serves the user's certificate"
  rm -rf "$certs"
}

# run_managed_ca_bundle_scenario [helm args...]: in tls.mode=existingSecret, tls.manageCaBundle
# turned on by a helm upgrade under load, then the Secret replaced by one of a new CA under load
# (what a CA rotation does): each replica adds the new CA to the caBundle before it serves a
# certificate of it, so not one admission fails; then every replica serves the new certificate.
run_managed_ca_bundle_scenario() {
  local svc certs pod pods
  svc="$(webhook_deployment)"
  SWITCH_WHAT="tls.manageCaBundle=true (tls.mode=existingSecret)"
  assert_available_during_mode_switch existingSecret "$@" --set tls.manageCaBundle=true
  step "tls.manageCaBundle: the Secret $svc-serving-tls replaced by a certificate of a new CA, under load"
  user_certs
  certs=$USER_CERTS
  ((DRY_RUN)) || admission_loop_start rotate
  run "${KUBECTL[@]}" apply -f "$certs/secret.yaml" || failed "replacing Secret $svc-serving-tls"
  ((DRY_RUN)) && return 0
  pods="$("${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get pods -l "app.kubernetes.io/instance=$HELM_RELEASE" \
    --field-selector=status.phase=Running -o 'jsonpath={.items[*].metadata.name}')"
  info "  waiting (at most ${TIMEOUT}s) for kubelet to update the Secret volumes and each replica to take the new certificate"
  local deadline=$((SECONDS + TIMEOUT))
  for pod in $pods; do
    until "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" logs "pod/$pod" 2>/dev/null | grep -q 'its CA trusted by the caBundle'; do
      if ((SECONDS > deadline)); then failed "pod $pod did not take the new certificate"; break; fi
      sleep 2
    done
  done
  sleep 3
  admission_loop_stop "the Secret's CA replaced (tls.manageCaBundle)"
  assert_replicas_serve "$svc" "$certs/ca.crt" "the new CA"
  checkpoint "CA rotation with tls.manageCaBundle"
  rm -rf "$certs"
}

# assert_own_upgrade_while_down: with every webhook pod gone and failurePolicy Fail, an annotated
# Deployment is refused (the webhook is really on the path), yet `helm upgrade` of the release
# itself succeeds and brings the webhook back: the chart's objects are excluded by label, which
# needs no namespace label (Kubernetes 1.20 sets no kubernetes.io/metadata.name).
assert_own_upgrade_while_down() {
  step "The webhook never blocks its own upgrade: helm upgrade with every webhook pod down (failurePolicy Fail)"
  local dep replicas="" pods="<pods>"
  dep="$(webhook_deployment)"
  if ((DRY_RUN == 0)); then
    replicas="$("${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get "deployment/$dep" -o 'jsonpath={.spec.replicas}')"
    pods="$("${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get pods -l "app.kubernetes.io/instance=$HELM_RELEASE" -o name | tr '\n' ' ')"
  fi
  # The scale subresource is not among the webhook's rules, so this works while it is down.
  run "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" scale "deployment/$dep" --replicas=0 || failed "scaling $dep to 0"
  # shellcheck disable=SC2086 # one word per pod
  run "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" wait --for=delete $pods --timeout="${TIMEOUT}s" || failed "webhook pods still there"
  if ((DRY_RUN == 0)); then
    local out
    if out="$(app_manifest own-upgrade-probe "$MIGRATIONS_IMAGE" 0 | "${KUBECTL[@]}" -n "$APP_NAMESPACE" create --dry-run=server -f - 2>&1)"; then
      failed "an annotated Deployment was admitted with the webhook down: failurePolicy Fail is not in effect"
    elif [[ "$out" == *"failed calling webhook"* ]]; then
      ok "an annotated Deployment is refused while the webhook is down (failed calling webhook)"
    else
      failed "unexpected error for an annotated Deployment while the webhook is down: $out"
    fi
  fi
  local stamp="<n>"
  ((DRY_RUN)) || stamp="$(date +%s)"
  run "${HELM[@]}" upgrade "$HELM_RELEASE" "$CHART_DIR" --namespace "$WEBHOOK_NAMESPACE" --reuse-values \
    --set-string "deployment.podAnnotations.e2e-down=$stamp" --wait --timeout "${TIMEOUT}s" ||
    failed "helm upgrade of the webhook's own release while it is down"
  if ((DRY_RUN == 0)); then
    expect "webhook replicas ready again (helm restored spec.replicas)" "$replicas" \
      "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get "deployment/$dep" -o 'jsonpath={.status.readyReplicas}'
  fi
  checkpoint "own upgrade while down"
  wait_for_webhook
}

# assert_host_network: the chart's deployment.hostNetwork on a single node: one replica in the
# node's network namespace on port 9443, reached by the API server through the Service.
assert_host_network() {
  step "deployment.hostNetwork=true: the webhook on the node's network (port 9443), reached through its Service"
  local before=""
  ((DRY_RUN)) || before="$("${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get pods -l "app.kubernetes.io/instance=$HELM_RELEASE" -o name | tr '\n' ' ')"
  run "${HELM[@]}" upgrade "$HELM_RELEASE" "$CHART_DIR" --namespace "$WEBHOOK_NAMESPACE" --reuse-values \
    --set deployment.hostNetwork=true --set containerPorts.webhook=9443 --set containerPorts.admin=9080 \
    --set deployment.replicas=1 --set deployment.strategy.rollingUpdate.maxSurge=0 \
    --set deployment.strategy.rollingUpdate.maxUnavailable=1 --wait --timeout "${TIMEOUT}s"
  ((DRY_RUN)) && return 0
  run "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" rollout status "deployment/$(webhook_deployment)" --timeout="${TIMEOUT}s"
  # The old pods may still be terminating (shutdown delay, drain): check the new one only.
  # shellcheck disable=SC2086 # one word per pod
  run "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" wait --for=delete $before --timeout="${TIMEOUT}s" || failed "old webhook pods still there"
  local pod
  pod="$("${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get pods -l "app.kubernetes.io/instance=$HELM_RELEASE" \
    --field-selector=status.phase=Running -o 'jsonpath={.items[0].metadata.name}')"
  local saved_ns=$APP_NAMESPACE saved_pod=$POD
  APP_NAMESPACE=$WEBHOOK_NAMESPACE POD=$pod
  expect_pod "webhook pod hostNetwork" "true" '{.spec.hostNetwork}'
  expect_pod "webhook pod address = its node's address" "$("${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get "pod/$pod" -o 'jsonpath={.status.hostIP}')" '{.status.podIP}'
  APP_NAMESPACE=$saved_ns POD=$saved_pod
  expect "Service endpoint port" "9443" "${KUBECTL[@]}" -n "$WEBHOOK_NAMESPACE" get endpoints "$(webhook_deployment)" \
    -o 'jsonpath={.subsets[0].ports[?(@.name=="webhook")].port}'
  checkpoint "host network"
  wait_for_webhook
}

availability_report() {
  ((${#AVAILABILITY_REPORT[@]})) || return 0
  printf '\n==> admissions while the webhook pods changed\n'
  printf '    %s\n' "${AVAILABILITY_REPORT[@]}"
}
