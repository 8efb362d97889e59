# shellcheck shell=bash
# shellcheck disable=SC2034 # the context, report and constants are read by the other files
# The app scenarios: PostgreSQL, the Secret, the guide's annotated Deployment and what its
# injected init container did (pod, runtime, database), a restart, a failing migration, an
# unannotated Deployment. Sourced by cluster/scenarios.sh; every input is an argument.
#
# Arguments used throughout:
#   NS        the app's namespace (PostgreSQL, the Secret, the apps)
#   TOOL      atlas | dbmate: what is in the migrations image (Secret key, args, version table)
#   TEMPLATE  the app manifest for this cluster and tool (render_app_template), rendered again per
#             Deployment with its name, migrations image and replicas (app_manifest)
#   PSQL...   a command that runs one SQL statement (its last argument) and prints tuples only

# Constants of the test data (tests/e2e/kind/manifests/app.yaml, kind/migrations, migrations-failing).
APP_DEPLOYMENT="migrations-demo"
APP_SELECTOR="app.kubernetes.io/name=migrations-demo"
MIGRATION_VERSIONS="20240101000000,20240102000000"
BROKEN_MIGRATION_ERROR='no_such_table'
E2E_DIR="$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)"
E2E_REPO="$(cd "$E2E_DIR/../.." && pwd)"
MANIFESTS="$E2E_DIR/kind/manifests"

# tool_setting TOOL KEY: what the migration tool needs. KEY: command, args (the annotations, JSON;
# empty: the webhook's defaults, i.e. Atlas), want_command, want_args (the injected container's,
# as jsonpath prints them), secret_key (the config file in Secret atlas-project).
tool_setting() {
  case "$1/$2" in
    atlas/command | atlas/args | atlas/want_command) ;;
    atlas/want_args) printf '%s' "migrate apply -c file:///etc/atlas/atlas.hcl --env k8s" ;;
    atlas/secret_key) printf atlas.hcl ;;
    # --no-dump-schema: `up` would write db/schema.sql, and the root filesystem is read-only.
    # --wait: the database may still be starting; --migration-lock: replicas racing wait in turn.
    dbmate/command) printf '%s' '["dbmate"]' ;;
    dbmate/args) printf '%s' '["--env-file","/etc/atlas/dbmate.env","--migrations-dir","/db/migrations","--no-dump-schema","--wait","--migration-lock","up"]' ;;
    dbmate/want_command) printf dbmate ;;
    dbmate/want_args) printf '%s' "--env-file /etc/atlas/dbmate.env --migrations-dir /db/migrations --no-dump-schema --wait --migration-lock up" ;;
    dbmate/secret_key) printf dbmate.env ;;
    *) die "unknown tool setting $1/$2 (TOOL is atlas or dbmate)" ;;
  esac
}

# psql_command OUT NS: sets the array named OUT to the psql command of NS's PostgreSQL pod.
psql_command() {
  local -n _out=$1
  _out=("${E2E_KUBECTL[@]}" -n "$2" exec deploy/postgres -c postgres -- psql -U postgres -d app -v ON_ERROR_STOP=1 -tAc)
}
# expect_sql DESC WANT SQL PSQL...: the query's result.
expect_sql() {
  local desc=$1 want=$2 sql=$3
  shift 3
  expect "$desc" "$want" "$@" "$sql"
}

# ---------------------------------------------------------------------------------------------
# Rendering the app
# ---------------------------------------------------------------------------------------------
# render_app_template OUT TOOL PULL_POLICY APP_IMAGE DB_HOST: app.yaml for this cluster and tool
# (the tool's command/args, the pull-policy annotation, "" : the default Always; the app
# container's image, "" keeps app.yaml's; the host its readiness probe checks) into file OUT.
render_app_template() {
  local out=$1 tool=$2 args
  args=("$MANIFESTS/app.yaml" --pull-policy "$3" --command "$(tool_setting "$tool" command)"
    --args "$(tool_setting "$tool" args)" --app-image "$4" --db-host "$5")
  printf '    $ %s > %s\n' "$(cmdline python3 "$E2E_DIR/render_app.py" "${args[@]}")" "$out"
  ((E2E_DRY_RUN)) && return 0
  python3 "$E2E_DIR/render_app.py" "${args[@]}" >"$out"
}
# app_manifest TEMPLATE NAME IMAGE [REPLICAS]: the app Deployment NAME with migrations image IMAGE.
app_manifest() {
  local args=("$1" --name "$2" --image "$3")
  [[ -n "${4:-}" ]] && args+=(--replicas "$4")
  python3 "$E2E_DIR/render_app.py" "${args[@]}"
}
# apply_app NS TEMPLATE NAME IMAGE: render and apply.
apply_app() {
  printf '    $ %s | %s -n %s apply -f -\n' "$(cmdline python3 "$E2E_DIR/render_app.py" "$2" --name "$3" --image "$4")" \
    "$(cmdline "${E2E_KUBECTL[@]}")" "$1"
  ((E2E_DRY_RUN)) && return 0
  app_manifest "$2" "$3" "$4" | kget -n "$1" apply -f -
}

# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------
# deploy_database NS LABELS POSTGRES_IMAGE: a fresh namespace NS (labels "k=v,k2=v2", "" for none),
# so that a reused cluster starts from an empty database, with PostgreSQL (POSTGRES_IMAGE, ""
# keeps postgres.yaml's) answering queries.
deploy_database() {
  local ns=$1 labels=$2 image=$3 psql
  step "Deploy PostgreSQL into namespace $ns"
  kube delete namespace "$ns" --ignore-not-found=true --wait=true --timeout="${E2E_TIMEOUT}s"
  apply_generated "${E2E_KUBECTL[@]}" create namespace "$ns"
  if [[ -n "$labels" ]]; then
    local label_list=()
    IFS=',' read -r -a label_list <<<"$labels"
    kube label namespace "$ns" --overwrite "${label_list[@]}"
  fi
  if [[ -n "$image" ]]; then
    printf '    $ sed s#image: postgres:16-alpine#image: %s# %s | %s -n %s apply -f -\n' "$image" \
      "$MANIFESTS/postgres.yaml" "$(cmdline "${E2E_KUBECTL[@]}")" "$ns"
    ((E2E_DRY_RUN)) || sed "s#image: postgres:16-alpine#image: $image#" "$MANIFESTS/postgres.yaml" |
      kget -n "$ns" apply -f -
  else
    kube -n "$ns" apply -f "$MANIFESTS/postgres.yaml"
  fi
  kube -n "$ns" rollout status deployment/postgres --timeout="${E2E_TIMEOUT}s"
  # pg_isready in the readiness probe; double-check with a real query.
  psql_command psql "$ns"
  expect_sql "postgres answers" "1" "select 1" "${psql[@]}"
  checkpoint "postgres"
}

# postgres_host OUT NS MODE: sets the variable named OUT to how pods reach PostgreSQL: MODE dns
# (postgres.NS.svc) or clusterip (the Service's address: a cluster without DNS).
postgres_host() {
  local -n _host=$1
  if [[ "$3" == clusterip ]]; then
    if ((E2E_DRY_RUN)); then _host='<postgres ClusterIP>'; else
      _host="$(kget -n "$2" get service postgres -o 'jsonpath={.spec.clusterIP}')"
    fi
    info "no cluster DNS here: pods reach PostgreSQL at its Service address $_host"
  else
    _host="postgres.$2.svc"
  fi
}

# db_url HOST [DATABASE]: the URL of PostgreSQL's database (app by default).
db_url() { printf 'postgres://postgres:pass@%s:5432/%s?sslmode=disable' "$1" "${2:-app}"; }

# create_secret NS TOOL DB_HOST [DATABASE]: the Secret atlas-project with the tool's config for
# DB_HOST (database app by default).
create_secret() {
  local ns=$1 tool=$2 host=$3 db=${4:-app} key content line
  key="$(tool_setting "$tool" secret_key)"
  case "$tool" in
    atlas)
      content="env \"k8s\" {
  url = \"$(db_url "$host" "$db")\"
  migration {
    dir = \"file:///migrations\"
  }
}"
      ;;
    dbmate) content="DATABASE_URL=$(db_url "$host" "$db")" ;;
  esac
  step "Create Secret atlas-project ($key -> $host)"
  info "$key:"
  while IFS= read -r line; do info "  | $line"; done <<<"$content"
  apply_generated "${E2E_KUBECTL[@]}" -n "$ns" create secret generic atlas-project --from-literal="$key=$content"
}

# wait_for_webhook NS TEMPLATE IMAGE: a server-side dry run of the app comes back with the init
# container (the API server reaches the webhook over TLS with the right caBundle).
wait_for_webhook() {
  local ns=$1 template=$2 image=$3
  step "Wait until the webhook mutates an annotated Deployment (server-side dry run)"
  local probe=("${E2E_KUBECTL[@]}" -n "$ns" apply --dry-run=server -f -
    -o 'jsonpath={.spec.template.spec.initContainers[*].name}')
  printf '    $ <app manifest> | %s\n' "$(cmdline "${probe[@]}")"
  info "  (repeated until it prints 'migrate', at most ${E2E_TIMEOUT}s)"
  ((E2E_DRY_RUN)) && return 0
  local deadline=$((SECONDS + E2E_TIMEOUT)) out
  while :; do
    if out="$(app_manifest "$template" "$APP_DEPLOYMENT" "$image" | "${probe[@]}" 2>&1)" && [[ " $out " == *" migrate "* ]]; then
      ok "the webhook answers and injects"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      die "no injection seen in a server-side dry run after ${E2E_TIMEOUT}s (last output: $out)"
    fi
    sleep 2
  done
}

# newest_pod NS SELECTOR: name of the most recently created pod.
newest_pod() {
  local name
  name="$(kget -n "$1" get pods -l "$2" --sort-by=.metadata.creationTimestamp -o name | tail -n 1)"
  printf '%s' "${name#pod/}"
}

# wait_app_pod OUT NS: sets the variable named OUT to the newest app pod, once it is Ready.
wait_app_pod() {
  local -n _pod=$1
  local ns=$2
  printf '    $ %s | tail -n 1\n' "$(cmdline "${E2E_KUBECTL[@]}" -n "$ns" get pods -l "$APP_SELECTOR" \
    --sort-by=.metadata.creationTimestamp -o name)"
  if ((E2E_DRY_RUN)); then
    _pod='<pod>'
  else
    _pod="$(newest_pod "$ns" "$APP_SELECTOR")"
    [[ -n "$_pod" ]] || die "no pod with label $APP_SELECTOR in $ns"
  fi
  kube -n "$ns" wait --for=condition=Ready "pod/$_pod" --timeout="${E2E_TIMEOUT}s"
}

# deploy_app OUT NS TEMPLATE IMAGE: the guide's Deployment (only the annotations) with migrations
# image IMAGE, rolled out; sets the variable named OUT to its Ready pod.
deploy_app() {
  local out=$1 ns=$2 template=$3 image=$4
  step "Deploy the annotated app Deployment ($MANIFESTS/app.yaml: migrations.io/image and the tool's annotations)"
  apply_app "$ns" "$template" "$APP_DEPLOYMENT" "$image"
  kube -n "$ns" rollout status "deployment/$APP_DEPLOYMENT" --timeout="${E2E_TIMEOUT}s"
  wait_app_pod "$out" "$ns"
}

# migrate_ran_first NS POD: the init container finished (exit 0) before the app container started.
migrate_ran_first() {
  local get=("${E2E_KUBECTL[@]}" -n "$1" get "pod/$2" -o
    'jsonpath={.status.initContainerStatuses[?(@.name=="migrate")].state.terminated.finishedAt} {.status.containerStatuses[?(@.name=="app")].state.running.startedAt}')
  show "${get[@]}"
  ((E2E_DRY_RUN)) && return 0
  local finished started
  read -r finished started < <("${get[@]}") || true
  if [[ -n "$finished" && -n "$started" && ! "$finished" > "$started" ]]; then
    ok "migrate finished at $finished, app started at $started"
  else
    failed "migrate must finish before the app starts: finished '$finished', app started '$started'"
  fi
}

# assert_injection NS POD IMAGE PULL_POLICY TOOL EXPECT_SECURITY_CONTEXT: pod NS/POD got exactly
# the injected init container (IMAGE; PULL_POLICY, "" : Always; the tool's command and args; the
# Secret mounted read-only; the restricted securityContext unless EXPECT_SECURITY_CONTEXT is 0),
# which exited 0 before the app started (and was pulled from the registry when Always).
assert_injection() {
  local ns=$1 pod=$2 image=$3 policy=${4:-Always} tool=$5 want_sc=$6
  step "Assert the webhook injected the migration init container into pod $pod"
  local ic='.spec.initContainers[?(@.name=="migrate")]'
  expect "Deployment template init containers" "migrate" "${E2E_KUBECTL[@]}" -n "$ns" \
    get "deployment/$APP_DEPLOYMENT" -o 'jsonpath={.spec.template.spec.initContainers[*].name}'
  expect_pod "$ns" "$pod" "init containers" "migrate" '{.spec.initContainers[*].name}'
  expect_pod "$ns" "$pod" "migrate image" "$image" "{$ic.image}"
  expect_pod "$ns" "$pod" "migrate imagePullPolicy" "$policy" "{$ic.imagePullPolicy}"
  expect_pod "$ns" "$pod" "migrate command" "$(tool_setting "$tool" want_command)" "{$ic.command[*]}"
  expect_pod "$ns" "$pod" "migrate args" "$(tool_setting "$tool" want_args)" "{$ic.args[*]}"
  expect_pod "$ns" "$pod" "migrate mount of atlas-project" "/etc/atlas" "{$ic.volumeMounts[?(@.name==\"atlas-project\")].mountPath}"
  expect_pod "$ns" "$pod" "migrate mount read-only" "true" "{$ic.volumeMounts[?(@.name==\"atlas-project\")].readOnly}"
  expect_pod "$ns" "$pod" "volume atlas-project from Secret" "atlas-project" '{.spec.volumes[?(@.name=="atlas-project")].secret.secretName}'
  if [[ "$want_sc" == 1 ]]; then
    expect_pod "$ns" "$pod" "securityContext.runAsNonRoot" "true" "{$ic.securityContext.runAsNonRoot}"
    expect_pod "$ns" "$pod" "securityContext.readOnlyRootFilesystem" "true" "{$ic.securityContext.readOnlyRootFilesystem}"
    expect_pod "$ns" "$pod" "securityContext.allowPrivilegeEscalation" "false" "{$ic.securityContext.allowPrivilegeEscalation}"
    expect_pod "$ns" "$pod" "securityContext.capabilities.drop" "ALL" "{$ic.securityContext.capabilities.drop[*]}"
    expect_pod "$ns" "$pod" "securityContext.seccompProfile.type" "RuntimeDefault" "{$ic.securityContext.seccompProfile.type}"
  else
    info "EXPECT_SECURITY_CONTEXT=$want_sc: securityContext not checked"
  fi
  local st='.status.initContainerStatuses[?(@.name=="migrate")].state.terminated'
  expect_pod "$ns" "$pod" "migrate exit code" "0" "{$st.exitCode}"
  expect_pod "$ns" "$pod" "migrate termination reason" "Completed" "{$st.reason}"
  migrate_ran_first "$ns" "$pod"
  if [[ "$policy" == Always ]]; then
    assert_pulled "$ns" "$pod" "$image"
  fi
  kube -n "$ns" logs "pod/$pod" -c migrate || warn "could not read the migrate logs"
  checkpoint "injection into pod $pod"
}

# assert_pulled NS POD IMAGE: with imagePullPolicy Always, kubelet pulled IMAGE for this pod.
assert_pulled() {
  local ns=$1 pod=$2 image=$3
  local ev=("${E2E_KUBECTL[@]}" -n "$ns" get events --field-selector "involvedObject.name=$pod,reason=Pulled"
    -o 'jsonpath={range .items[*]}{.message}{"\n"}{end}')
  show "${ev[@]}"
  ((E2E_DRY_RUN)) && return 0
  local msgs
  msgs="$("${ev[@]}" 2>/dev/null || true)"
  if grep -q "Successfully pulled image \"$image\"" <<<"$msgs"; then
    ok "kubelet pulled $image from the registry (event Pulled)"
  else
    failed "no 'Successfully pulled image \"$image\"' event for $pod: $msgs"
  fi
}

# assert_runtime_view NS POD CONTAINERD_SOCKET REGISTRY: the init container ran as the image's
# numeric non-root user on a read-only root filesystem, as containerd created it (the runtime's
# view, not only the pod spec), from REGISTRY's image. Needs the node's containerd (the node e2e).
assert_runtime_view() {
  local ns=$1 pod=$2 socket=$3 registry=$4
  step "The migrate container as containerd ran it: non-root uid, read-only root filesystem, image from the registry"
  ((E2E_DRY_RUN)) && return 0
  local id
  id=$(kget -n "$ns" get "pod/$pod" -o 'jsonpath={.status.initContainerStatuses[?(@.name=="migrate")].containerID}')
  id=${id#containerd://}
  "${E2E_NET[@]}" ctr --address "$socket" -n k8s.io containers info "$id" |
    python3 "$E2E_DIR/cluster/runtime_view.py" - || FAILURES=$((FAILURES + 1))
  expect_prefix "migrate imageID (pulled from the local registry)" "$registry/mi/migrations@sha256:" \
    kget -n "$ns" get "pod/$pod" -o 'jsonpath={.status.initContainerStatuses[?(@.name=="migrate")].imageID}'
  checkpoint "runtime view"
}

# atlas_revisions_table OUT PSQL...: sets the variable named OUT to Atlas's revisions table. Atlas
# keeps it in schema atlas_schema_revisions when the URL names no schema, else in the connected
# schema: look it up rather than assume.
atlas_revisions_table() {
  local -n _table=$1
  shift
  local find_schema="select table_schema from information_schema.tables where table_name = 'atlas_schema_revisions'"
  local schema
  show "$@" "$find_schema"
  if ((E2E_DRY_RUN)); then
    schema='<schema>'
  elif ! schema="$("$@" "$find_schema")" || [[ -z "$schema" || "$schema" == *$'\n'* ]]; then
    failed "atlas_schema_revisions: want exactly one such table, got $(quote "$schema")"
    checkpoint "database"
  else
    info "  atlas_schema_revisions is in schema $schema"
  fi
  _table="\"$schema\".atlas_schema_revisions"
}

# assert_revisions TOOL PSQL...: the tool's version table records exactly the two migrations.
assert_revisions() {
  local tool=$1 table
  shift
  case "$tool" in
    atlas)
      atlas_revisions_table table "$@"
      # Rows whose version starts with '.' are Atlas bookkeeping (.atlas_cloud_identifier), not migrations.
      expect_sql "applied migrations recorded" "2" \
        "select count(*) from $table where version not like '.%'" "$@"
      expect_sql "applied migration versions" "$MIGRATION_VERSIONS" \
        "select string_agg(version, ',' order by version) from $table where version not like '.%'" "$@"
      expect_sql "migrations fully applied, without error" "2" \
        "select count(*) from $table where version not like '.%' and applied = total and coalesce(error, '') = ''" "$@"
      ;;
    dbmate)
      expect_sql "applied migration versions (schema_migrations)" "$MIGRATION_VERSIONS" \
        "select string_agg(version, ',' order by version) from public.schema_migrations" "$@"
      ;;
  esac
}

# assert_database TOOL PSQL...: the migrations ran: tables users and posts, and the tool's record.
assert_database() {
  local tool=$1
  shift
  step "Assert the migrations ran: tables users and posts, 2 versions in the $tool version table"
  expect_sql "tables in schema public" "posts,users" \
    "select string_agg(table_name::text, ',' order by table_name) from information_schema.tables where table_schema = 'public' and table_name in ('users', 'posts')" "$@"
  expect_sql "foreign key posts.user_id -> users" "1" \
    "select count(*) from information_schema.table_constraints where table_schema = 'public' and table_name = 'posts' and constraint_type = 'FOREIGN KEY'" "$@"
  assert_revisions "$tool" "$@"
  checkpoint "database"
}

# assert_rerun NS BEFORE_POD IMAGE TOOL PSQL...: a rollout restart runs the init container again
# in a new pod, and it applies nothing new.
assert_rerun() {
  local ns=$1 before=$2 image=$3 tool=$4 pod
  shift 4
  step "Restart the app: the init container runs again and applies nothing new"
  kube -n "$ns" rollout restart "deployment/$APP_DEPLOYMENT"
  kube -n "$ns" rollout status "deployment/$APP_DEPLOYMENT" --timeout="${E2E_TIMEOUT}s"
  wait_app_pod pod "$ns"
  if ((E2E_DRY_RUN == 0)) && [[ "$pod" == "$before" ]]; then failed "no new pod after the restart ($pod)"; fi
  local ic='.spec.initContainers[?(@.name=="migrate")]'
  expect_pod "$ns" "$pod" "init containers after restart" "migrate" '{.spec.initContainers[*].name}'
  expect_pod "$ns" "$pod" "migrate image after restart" "$image" "{$ic.image}"
  expect_pod "$ns" "$pod" "migrate exit code after restart" "0" '{.status.initContainerStatuses[?(@.name=="migrate")].state.terminated.exitCode}'
  migrate_ran_first "$ns" "$pod"
  kube -n "$ns" logs "pod/$pod" -c migrate || warn "could not read the migrate logs"
  assert_revisions "$tool" "$@"
  checkpoint "re-run"
}

# assert_not_annotated NS IMAGE: a Deployment without the annotation is left alone.
assert_not_annotated() {
  step "Assert a Deployment without the annotation is left alone (server-side dry run)"
  expect "init containers of an unannotated Deployment" "" "${E2E_KUBECTL[@]}" -n "$1" \
    create deployment plain-app --image="$2" --dry-run=server \
    -o 'jsonpath={.spec.template.spec.initContainers[*].name}'
  checkpoint "unannotated Deployment"
}

# assert_failing_migration NS TEMPLATE BROKEN_IMAGE TOOL PSQL...: a migration that fails (bad
# SQL, BROKEN_IMAGE): the pod never becomes Ready, the app container never starts, the reason can
# be read in the pod's status, and nothing of the failed migration is left in the database.
assert_failing_migration() {
  local ns=$1 template=$2 image=$3 tool=$4 name=migrations-broken
  shift 4
  step "A failing migration: the app never starts, the reason is in the pod status"
  apply_app "$ns" "$template" "$name" "$image"
  info "  waiting until migrate has failed twice (restartCount >= 1, at most ${E2E_TIMEOUT}s)"
  ((E2E_DRY_RUN)) && return 0
  local pod
  pod="$(wait_restarted "$ns" "app.kubernetes.io/name=$name")" ||
    { failed "migrate of $name did not fail and restart within ${E2E_TIMEOUT}s"; checkpoint "failing migration"; }
  kget -n "$ns" get "pod/$pod" -o yaml | sed -n '/^status:/,$p' | sed 's/^/    | /'
  expect_pod "$ns" "$pod" "pod Ready condition" "False" '{.status.conditions[?(@.type=="Ready")].status}'
  expect_pod "$ns" "$pod" "app container never started (waiting)" "PodInitializing" '{.status.containerStatuses[?(@.name=="app")].state.waiting.reason}'
  expect_pod "$ns" "$pod" "app container restarts" "0" '{.status.containerStatuses[?(@.name=="app")].restartCount}'
  expect_pod "$ns" "$pod" "app container: no start time" "" '{.status.containerStatuses[?(@.name=="app")].state.running.startedAt}'
  assert_migrate_failure "$ns" "$pod"
  # Each migration runs in a transaction: nothing of the broken one is left.
  expect_sql "no table from the failing migration" "0" \
    "select count(*) from information_schema.tables where table_schema = 'public' and table_name = 'comments'" "$@"
  assert_revisions "$tool" "$@"
  kube -n "$ns" delete deployment "$name" --wait=true
  checkpoint "failing migration"
}

# wait_restarted NS SELECTOR: prints the newest pod of SELECTOR once its migrate container has
# failed and restarted (restartCount >= 1); fails after the timeout.
wait_restarted() {
  local deadline=$((SECONDS + E2E_TIMEOUT)) pod restarts
  while ((SECONDS < deadline)); do
    pod="$(newest_pod "$1" "$2")"
    if [[ -n "$pod" ]]; then
      restarts="$(kget -n "$1" get "pod/$pod" -o 'jsonpath={.status.initContainerStatuses[?(@.name=="migrate")].restartCount}' 2>/dev/null || true)"
      [[ -n "$restarts" && "$restarts" -ge 1 ]] && { printf '%s' "$pod"; return 0; }
    fi
    sleep 2
  done
  return 1
}

# assert_migrate_failure NS POD: migrate's last run failed, and why is in the pod's status (the
# tool's own error text too, when the injected container has FallbackToLogsOnError) or its log.
assert_migrate_failure() {
  local ns=$1 pod=$2 st='.status.initContainerStatuses[?(@.name=="migrate")]'
  local code
  code="$(kget -n "$ns" get "pod/$pod" -o "jsonpath={$st.lastState.terminated.exitCode}")"
  if [[ "$code" =~ ^[0-9]+$ && "$code" != 0 ]]; then ok "migrate's last run failed: exit code $code"
  else failed "migrate's last run: want a non-zero exit code, got '$code'"; fi
  expect_pod "$ns" "$pod" "migrate's last run: reason" "Error" "{$st.lastState.terminated.reason}"
  local policy
  policy="$(kget -n "$ns" get "pod/$pod" -o 'jsonpath={.spec.initContainers[?(@.name=="migrate")].terminationMessagePolicy}')"
  if [[ "$policy" == FallbackToLogsOnError ]]; then
    local msg
    msg="$(kget -n "$ns" get "pod/$pod" -o "jsonpath={$st.lastState.terminated.message}{$st.state.terminated.message}")"
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
      logs="$(kget -n "$ns" logs "pod/$pod" -c migrate 2>&1 || true)
$(kget -n "$ns" logs "pod/$pod" -c migrate --previous 2>&1 || true)"
      [[ "$logs" == *"$BROKEN_MIGRATION_ERROR"* ]] && break
      sleep "$i"
    done
    if [[ "$logs" == *"$BROKEN_MIGRATION_ERROR"* ]]; then ok "migrate's log names the error: $(grep -m1 "$BROKEN_MIGRATION_ERROR" <<<"$logs")"
    else failed "migrate's log lacks '$BROKEN_MIGRATION_ERROR': $logs"; fi
  fi
}
