# shellcheck shell=bash
# Run-once mode (issue 18, CONTRACT-18): the chart with controller.enabled, a Deployment with
# migrations.io/run: once, and every promise of the issue's "How it is proven", each execution of
# the migration counted from the container runtime (containerd's events, runtime_executions.py:
# containers created in the scenario's namespace running the tool's binary), not from our logs;
# without containerd (kind), from the run Jobs (backoffLimit 0: one pod each). Sourced by
# cluster/scenarios.sh; every input is an argument.

ONCE_DB="once_e2e"

# once_fingerprint NS DEPLOYMENT: the fingerprint label of the Deployment's pod template.
once_fingerprint() {
  kget -n "$1" get "deployment/$2" -o 'jsonpath={.spec.template.metadata.labels.migrations\.io/fingerprint}'
}
# once_run_field NS FP JSONPATH: a field of MigrationRun NS/FP ("" when absent).
once_run_field() { kget -n "$1" get "migrationrun/$2" -o "jsonpath=$3" 2>/dev/null || true; }
# once_wait_phase NS FP PHASE [SECONDS]: waits until MigrationRun NS/FP has status.phase PHASE.
once_wait_phase() {
  local deadline=$((SECONDS + ${4:-$E2E_TIMEOUT})) got=""
  while ((SECONDS < deadline)); do
    got="$(once_run_field "$1" "$2" '{.status.phase}')"
    [[ "$got" == "$3" ]] && { ok "MigrationRun $2: $3"; return 0; }
    sleep 1
  done
  failed "MigrationRun $1/$2: want phase $3, got '$got' after ${4:-$E2E_TIMEOUT}s"
}
# once_manifest TEMPLATE NAME IMAGE REPLICAS ARGS: the app Deployment NAME in once mode with
# migrations.io/args ARGS (JSON; "" keeps the template's); once_apply NS ...: applied in NS.
once_manifest() {
  local args=("$1" --name "$2" --image "$3" --replicas "$4" --annotation migrations.io/run=once)
  [[ -n "${5:-}" ]] && args+=(--annotation "migrations.io/args=$5")
  python3 "$E2E_DIR/render_app.py" "${args[@]}"
}
once_apply() {
  local ns=$1
  shift
  printf '    $ render_app.py %s (run once, replicas %s) | kubectl -n %s apply -f -\n' "$2" "$4" "$ns"
  ((E2E_DRY_RUN)) && return 0
  once_manifest "$@" | kget -n "$ns" apply -f -
}

# The execution counter: EXEC_MODE runtime (containerd's events recorded into EXEC_LOG by the
# process EXEC_PID) or jobs (the run Jobs' pods of the namespace).
EXEC_PID=""
EXEC_LOG=""
EXEC_MODE=""
exec_start() {
  local socket=$1
  if [[ -z "$socket" ]]; then EXEC_MODE="jobs"; return 0; fi
  EXEC_MODE=runtime
  EXEC_LOG="$(mktemp)"
  python3 "$E2E_DIR/cluster/runtime_executions.py" record --out "$EXEC_LOG" -- \
    "${E2E_NET[@]}" ctr --address "$socket" -n k8s.io &
  EXEC_PID=$!
  info "  recording containerd's container creations (pid $EXEC_PID) into $EXEC_LOG"
  sleep 1
}
exec_stop() {
  if [[ -n "$EXEC_PID" ]]; then
    kill "$EXEC_PID" 2>/dev/null || true
    wait "$EXEC_PID" 2>/dev/null || true
    EXEC_PID=""
  fi
  [[ -n "$EXEC_LOG" ]] && rm -f "$EXEC_LOG"
  EXEC_LOG=""
}
# exec_count NS TOOL: executions so far (containers of NS running the tool; Jobs' pods without containerd).
exec_count() {
  if [[ "$EXEC_MODE" == runtime ]]; then
    python3 "$E2E_DIR/cluster/runtime_executions.py" count --in "$EXEC_LOG" --namespace "$1" --arg0 "$2"
  else
    kget -n "$1" get pods -l migrations.io/run -o name | wc -l
  fi
}
# expect_executions DESC WANT NS TOOL BEFORE: WANT new executions since the count BEFORE.
expect_executions() {
  local desc=$1 want=$2 ns=$3 tool=$4 before=$5 now
  sleep 3 # a container just created reaches the record within a second
  now="$(exec_count "$ns" "$tool")"
  if (( now - before == want )); then ok "$desc: $want execution(s) ($EXEC_MODE)"
  else failed "$desc: want $want execution(s), counted $((now - before)) ($EXEC_MODE)"; fi
}

# once_all_ready NS NAME REPLICAS: the Deployment rolled out, REPLICAS pods Ready, none of them
# running the migrations image (the migration never runs in an app pod).
once_all_ready() {
  local ns=$1 name=$2 replicas=$3 image=$4
  kube -n "$ns" rollout status "deployment/$name" --timeout="${E2E_TIMEOUT}s" || failed "rollout of $name"
  expect "$name ready replicas" "$replicas" "${E2E_KUBECTL[@]}" -n "$ns" get "deployment/$name" -o 'jsonpath={.status.readyReplicas}'
  local images
  images="$(kget -n "$ns" get pods -l "app.kubernetes.io/name=$name" -o 'jsonpath={range .items[*]}{.spec.initContainers[*].image} {.spec.containers[*].image}{"\n"}{end}')"
  if grep -qF "$image" <<<"$images"; then failed "an app pod of $name has a container of the migrations image $image"
  else ok "no app pod of $name has a container of $image"; fi
}

# run_once_scenario REL CHART NS TEMPLATE IMAGE BROKEN_IMAGE TOOL DB_HOST PSQL_NS SOCKET [-- HELM_ARGS...]:
# the release REL upgraded with controller.enabled (HELM_ARGS: the image values), a namespace
# NS (created here, deleted at the end) whose migrations use database once_e2e of PostgreSQL in
# PSQL_NS (at DB_HOST); SOCKET: the node's containerd ("" : count the Jobs' pods). The release is
# put back to controller.enabled=false at the end (the other scenarios' selectors expect one
# Deployment and one webhook).
run_once_scenario() {
  local rel=$1 chart=$2 ns=$3 template=$4 image=$5 broken=$6 tool=$7 db_host=$8 pns=$9 socket=${10}
  shift 10
  [[ "${1:-}" == -- ]] && shift
  local wns=${rel%%/*} release=${rel#*/} app=once-app base args1 args2 args3 args4 args5 fp fp1 fp2 psql
  step "Run-once mode: the chart with controller.enabled, namespace $ns, database $ONCE_DB"
  psql_command psql "$pns"
  run "${E2E_HELM[@]}" upgrade "$release" "$chart" --namespace "$wns" --reuse-values \
    --set controller.enabled=true --set controller.maxAttempts=1 "$@" --wait --timeout "${E2E_TIMEOUT}s" ||
    failed "helm upgrade with controller.enabled"
  kube -n "$wns" rollout status "deployment/${release}-controller" --timeout="${E2E_TIMEOUT}s" || failed "controller rollout"
  checkpoint "controller installed"
  ((E2E_DRY_RUN)) && return 0
  kube delete namespace "$ns" --ignore-not-found=true --wait=true --timeout="${E2E_TIMEOUT}s"
  apply_generated "${E2E_KUBECTL[@]}" create namespace "$ns"
  kube label namespace "$ns" --overwrite migrations.io/injection=enabled
  if ! { "${psql[@]}" "drop database if exists $ONCE_DB" && "${psql[@]}" "create database $ONCE_DB"; } >/dev/null; then
    failed "create database $ONCE_DB"
  fi
  create_secret "$ns" "$tool" "$db_host" "$ONCE_DB"
  # The revisions: the tool's args, then the same with one more harmless flag each (a new fingerprint).
  base="$(tool_setting "$tool" args)"
  if [[ "$tool" == dbmate ]]; then
    # (dbmate 2.37 has no --verbose: "flag provided but not defined", which the run reported.)
    args1=$base; args2=${base/--wait\"/--wait\",\"--wait-timeout\",\"30s\"}
    args3=${base/--wait\"/--wait\",\"--wait-timeout\",\"31s\"}
    args4=${base/--wait\"/--wait\",\"--wait-timeout\",\"32s\"}
    args5=${base/--wait\"/--wait\",\"--wait-timeout\",\"33s\"}
  else
    args1='["migrate","apply","-c","file:///etc/atlas/atlas.hcl","--env","k8s"]'
    args2='["migrate","apply","-c","file:///etc/atlas/atlas.hcl","--env","k8s","--lock-timeout","11s"]'
    args3='["migrate","apply","-c","file:///etc/atlas/atlas.hcl","--env","k8s","--lock-timeout","12s"]'
    args4='["migrate","apply","-c","file:///etc/atlas/atlas.hcl","--env","k8s","--lock-timeout","13s"]'
    args5='["migrate","apply","-c","file:///etc/atlas/atlas.hcl","--env","k8s","--lock-timeout","14s"]'
  fi
  exec_start "$socket"
  local n0

  step "once: 4 replicas, the migration executes exactly once, every pod Ready without it"
  n0="$(exec_count "$ns" "$tool")"
  once_apply "$ns" "$template" "$app" "$image" 4 "$args1"
  fp1="$(once_fingerprint "$ns" "$app")"
  if [[ "$fp1" =~ ^[0-9a-f]{40}$ ]]; then ok "template labelled migrations.io/fingerprint=$fp1"; else failed "fingerprint label: '$fp1'"; fi
  once_wait_phase "$ns" "$fp1" Succeeded
  once_all_ready "$ns" "$app" 4 "$image"
  expect_executions "first revision, 4 replicas" 1 "$ns" "$tool" "$n0"
  expect "MigrationRun workloads" "Deployment/$app" "${E2E_KUBECTL[@]}" -n "$ns" get "migrationrun/$fp1" -o 'jsonpath={.spec.workloads[*]}'
  expect "MigrationRun attempts" "1" "${E2E_KUBECTL[@]}" -n "$ns" get "migrationrun/$fp1" -o 'jsonpath={.status.attempts}'
  local psql_once=("${E2E_KUBECTL[@]}" -n "$pns" exec deploy/postgres -c postgres -- psql -U postgres -d "$ONCE_DB" -v ON_ERROR_STOP=1 -tAc)
  expect_sql "tables of the migration in $ONCE_DB" "posts,users" \
    "select string_agg(table_name::text, ',' order by table_name) from information_schema.tables where table_schema = 'public' and table_name in ('users', 'posts')" "${psql_once[@]}"
  checkpoint "run once: first revision"

  step "once: scale 4 -> 8, a pod deleted, a rollout restart: zero executions, new pods without a waiter"
  n0="$(exec_count "$ns" "$tool")"
  kube -n "$ns" scale "deployment/$app" --replicas=8
  once_all_ready "$ns" "$app" 8 "$image"
  kube -n "$ns" delete "pod/$(newest_pod "$ns" "app.kubernetes.io/name=$app")" --wait=false
  once_all_ready "$ns" "$app" 8 "$image"
  kube -n "$ns" rollout restart "deployment/$app"
  once_all_ready "$ns" "$app" 8 "$image"
  expect_executions "scale, pod deletion, rollout restart" 0 "$ns" "$tool" "$n0"
  # A pod of an applied revision loses its waiting init container at creation (/mutate-pods).
  expect_pod "$ns" "$(newest_pod "$ns" "app.kubernetes.io/name=$app")" "init containers of a pod of an applied revision" "" '{.spec.initContainers[*].name}'
  kube -n "$ns" scale "deployment/$app" --replicas=4
  checkpoint "run once: scale and restarts"

  step "once: a new revision (migrations.io/args): exactly one execution, the new pods start after it"
  n0="$(exec_count "$ns" "$tool")"
  once_apply "$ns" "$template" "$app" "$image" 4 "$args2"
  fp2="$(once_fingerprint "$ns" "$app")"
  if [[ "$fp2" != "$fp1" ]]; then ok "new fingerprint $fp2"; else failed "the fingerprint did not change with the args"; fi
  once_wait_phase "$ns" "$fp2" Succeeded
  once_all_ready "$ns" "$app" 4 "$image"
  expect_executions "new revision" 1 "$ns" "$tool" "$n0"
  local finished started
  finished="$(once_run_field "$ns" "$fp2" '{.status.finishedAt}')"
  for started in $(kget -n "$ns" get pods -l "app.kubernetes.io/name=$app,migrations.io/fingerprint=$fp2" -o 'jsonpath={.items[*].status.containerStatuses[?(@.name=="app")].state.running.startedAt}'); do
    if [[ -n "$finished" && ! "$started" < "$finished" ]]; then ok "app started at $started, run finished at $finished"
    else failed "an app container of the new revision started at $started, before the run finished ($finished)"; fi
  done
  checkpoint "run once: new revision"

  step "once: kubectl rollout undo to the applied revision: zero executions"
  n0="$(exec_count "$ns" "$tool")"
  kube -n "$ns" rollout undo "deployment/$app"
  once_all_ready "$ns" "$app" 4 "$image"
  expect "fingerprint after undo" "$fp1" once_fingerprint "$ns" "$app"
  expect_executions "rollout undo" 0 "$ns" "$tool" "$n0"
  checkpoint "run once: rollout undo"

  if [[ -n "$broken" ]]; then
    step "once: a failing migration: new pods wait in Init, old pods serve, the error in the run and an Event; retry"
    n0="$(exec_count "$ns" "$tool")"
    kube -n "$ns" annotate "deployment/$app" --overwrite "migrations.io/image=$broken"
    fp="$(once_fingerprint "$ns" "$app")"
    once_wait_phase "$ns" "$fp" Failed
    expect_executions "failing revision (maxAttempts 1)" 1 "$ns" "$tool" "$n0"
    local msg ready
    msg="$(once_run_field "$ns" "$fp" '{.status.message}')"
    if [[ "$msg" == *"$BROKEN_MIGRATION_ERROR"* ]]; then ok "run message: $msg"; else failed "run message lacks $BROKEN_MIGRATION_ERROR: $msg"; fi
    msg="$(kget -n "$ns" get events --field-selector reason=MigrationFailed -o 'jsonpath={.items[*].message}')"
    if [[ "$msg" == *"$BROKEN_MIGRATION_ERROR"* ]]; then ok "Event MigrationFailed names the error"; else failed "no MigrationFailed Event with $BROKEN_MIGRATION_ERROR: $msg"; fi
    ready="$(kget -n "$ns" get pods -l "app.kubernetes.io/name=$app,migrations.io/fingerprint=$fp1" -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)"
    if ((ready >= 3)); then ok "$ready old pods Ready (serving)"; else failed "old pods Ready: $ready, want >= 3"; fi
    expect_pod "$ns" "$(newest_pod "$ns" "app.kubernetes.io/name=$app,migrations.io/fingerprint=$fp")" \
      "a new pod waits in Init" "PodInitializing" '{.status.containerStatuses[?(@.name=="app")].state.waiting.reason}'
    n0="$(exec_count "$ns" "$tool")"
    kube -n "$ns" annotate "migrationrun/$fp" migrations.io/retry=1 --overwrite
    local deadline=$((SECONDS + E2E_TIMEOUT))
    until [[ "$(once_run_field "$ns" "$fp" '{.status.observedRetry}/{.status.phase}')" == 1/Failed ]] || ((SECONDS > deadline)); do sleep 1; done
    expect "retried run" "1/Failed" once_run_field "$ns" "$fp" '{.status.observedRetry}/{.status.phase}'
    expect_executions "manual retry" 1 "$ns" "$tool" "$n0"
    n0="$(exec_count "$ns" "$tool")"
    kube -n "$ns" rollout undo "deployment/$app"
    once_all_ready "$ns" "$app" 4 "$image"
    expect_executions "undo of the failing revision" 0 "$ns" "$tool" "$n0"
    checkpoint "run once: failing migration"
  fi

  step "once: two Deployments with the same migration share one MigrationRun (one execution)"
  n0="$(exec_count "$ns" "$tool")"
  once_apply "$ns" "$template" twin-a "$image" 1 "$args3"
  once_apply "$ns" "$template" twin-b "$image" 1 "$args3"
  fp="$(once_fingerprint "$ns" twin-a)"
  expect "twin-b's fingerprint" "$fp" once_fingerprint "$ns" twin-b
  once_wait_phase "$ns" "$fp" Succeeded
  once_all_ready "$ns" twin-a 1 "$image"
  once_all_ready "$ns" twin-b 1 "$image"
  expect_executions "two Deployments, one fingerprint" 1 "$ns" "$tool" "$n0"
  expect "the shared run's workloads" "Deployment/twin-a Deployment/twin-b" sh -c \
    "$(cmdline "${E2E_KUBECTL[@]}") -n $ns get migrationrun/$fp -o 'jsonpath={.spec.workloads[*]}' | tr ' ' '\n' | sort | tr '\n' ' '"
  checkpoint "run once: shared run"

  step "once: the controller scaled to 0 during a new rollout: new pods wait (the waiter says why), old pods serve; back to 1: the run, the rollout"
  n0="$(exec_count "$ns" "$tool")"
  kube -n "$wns" scale "deployment/${release}-controller" --replicas=0
  kube -n "$wns" rollout status "deployment/${release}-controller" --timeout="${E2E_TIMEOUT}s"
  # Scaled to 0 is not gone: wait until its pod has exited (it stops acting on SIGTERM).
  local gone_by=$((SECONDS + E2E_TIMEOUT))
  while [[ -n "$(kget -n "$wns" get pods -l "app.kubernetes.io/component=controller,app.kubernetes.io/instance=$release" -o name 2>/dev/null)" ]]; do
    if ((SECONDS > gone_by)); then failed "the controller's pod still there after ${E2E_TIMEOUT}s"; break; fi
    sleep 0.5
  done
  # It handed its Lease back on SIGTERM: a replacement leads at once, not after the duration.
  expect "the Lease's holder after the controller stopped" "" "${E2E_KUBECTL[@]}" -n "$wns" get lease "${release}-controller" -o 'jsonpath={.spec.holderIdentity}'
  once_apply "$ns" "$template" "$app" "$image" 4 "$args4"
  fp="$(once_fingerprint "$ns" "$app")"
  sleep 10
  local waiting
  waiting="$(newest_pod "$ns" "app.kubernetes.io/name=$app,migrations.io/fingerprint=$fp")"
  expect_pod "$ns" "$waiting" "a new pod waits in Init" "PodInitializing" '{.status.containerStatuses[?(@.name=="app")].state.waiting.reason}'
  msg="$(kget -n "$ns" logs "pod/$waiting" -c migrate 2>&1 || true)"
  if [[ "$msg" == *"$fp"* ]]; then ok "the waiter's log says what it waits for: $(head -n 1 <<<"$msg")"; else failed "waiter log lacks the fingerprint $fp: $msg"; fi
  ready="$(kget -n "$ns" get pods -l "app.kubernetes.io/name=$app,migrations.io/fingerprint=$fp1" -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)"
  if ((ready >= 3)); then ok "$ready old pods Ready (serving)"; else failed "old pods Ready: $ready, want >= 3"; fi
  expect_executions "controller down" 0 "$ns" "$tool" "$n0"
  kube -n "$wns" scale "deployment/${release}-controller" --replicas=1
  once_wait_phase "$ns" "$fp" Succeeded
  once_all_ready "$ns" "$app" 4 "$image"
  expect_executions "controller back" 1 "$ns" "$tool" "$n0"
  checkpoint "run once: controller down"

  step "once: a server-side dry run starts no run; kubectl diff after apply is empty; deleting the Deployments deletes their runs"
  fp="$(once_manifest "$template" dry-app "$image" 1 "$args5" | kget -n "$ns" create --dry-run=server -f - -o 'jsonpath={.spec.template.metadata.labels.migrations\.io/fingerprint}')"
  if [[ "$fp" =~ ^[0-9a-f]{40}$ ]]; then ok "dry run injected, fingerprint $fp"; else failed "dry run fingerprint: '$fp'"; fi
  sleep 5
  expect "MigrationRun of the dry run" "" once_run_field "$ns" "$fp" '{.metadata.name}'
  local manifest
  manifest="$(mktemp)"
  once_manifest "$template" "$app" "$image" 4 "$args4" >"$manifest"
  kube -n "$ns" apply -f "$manifest"
  expect "kubectl diff after apply" "" "${E2E_KUBECTL[@]}" -n "$ns" diff -f "$manifest"
  rm -f "$manifest"
  kube -n "$ns" delete deployment "$app" twin-a twin-b --wait=true
  deadline=$((SECONDS + E2E_TIMEOUT))
  until [[ -z "$(kget -n "$ns" get migrationruns -o name 2>/dev/null)" ]] || ((SECONDS > deadline)); do sleep 2; done
  expect "MigrationRuns left after the Deployments are deleted" "" "${E2E_KUBECTL[@]}" -n "$ns" get migrationruns -o name
  checkpoint "run once: dry run, diff, garbage collection"

  exec_stop
  kube delete namespace "$ns" --wait=false
  run "${E2E_HELM[@]}" upgrade "$release" "$chart" --namespace "$wns" --reuse-values \
    --set controller.enabled=false "$@" --wait --timeout "${E2E_TIMEOUT}s" || failed "helm upgrade back to controller.enabled=false"
  checkpoint "run once: controller disabled again"
}
