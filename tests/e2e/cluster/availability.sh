# shellcheck shell=bash
# Webhook availability scenarios: with failurePolicy Fail, admissions keep succeeding while the
# webhook's pods change (helm upgrade, a pod deletion, a TLS mode switch), and the webhook never
# blocks its own upgrade. Sourced by cluster/scenarios.sh; every input is an argument.
#
# Arguments used throughout:
#   REL       the webhook's Helm release as NAMESPACE/NAME
#   CHART     the chart directory (helm upgrade --reuse-values)
#   LOAD      three words, NS TEMPLATE IMAGE: where the admission loop creates annotated
#             Deployments (the app's namespace, app template and migrations image, cluster/app.sh)

# webhook_selector REL: the label selector of the release's webhook (not its controller's).
webhook_selector() { printf 'app.kubernetes.io/instance=%s,app.kubernetes.io/component=admission-webhook' "${1#*/}"; }

# webhook_pods REL [running]: the webhook's pods as pod/NAME words (only Running ones with "running").
webhook_pods() {
  local sel=(-l "$(webhook_selector "$1")")
  [[ "${2:-}" == running ]] && sel+=(--field-selector=status.phase=Running)
  kget -n "${1%%/*}" get pods "${sel[@]}" -o name | sort | tr '\n' ' '
}

# webhook_restarts REL: the webhook pods' restart counts, one word per pod.
webhook_restarts() {
  kget -n "${1%%/*}" get pods -l "$(webhook_selector "$1")" -o 'jsonpath={.items[*].status.containerStatuses[0].restartCount}'
}

# webhook_deployment REL: the name of the release's webhook Deployment (also its Service's).
webhook_deployment() {
  if ((E2E_DRY_RUN)); then printf '%s' "${1#*/}"; return; fi
  kget -n "${1%%/*}" get deployments -l "$(webhook_selector "$1")" -o jsonpath='{.items[0].metadata.name}'
}

# admission_loop_start TAG NS TEMPLATE IMAGE [RATE]: the load generator (E2E_LOAD, examples/admission_load):
# E2E_LOAD_CLIENTS concurrent clients create annotated Deployments (0 replicas, the generator's own
# shape, not TEMPLATE) with IMAGE in NS and delete them, RATE a second in all (default
# E2E_LOAD_RATE; 0: as fast as the API server answers), until admission_loop_stop (or _end). Each
# admission is recorded (latency, ok / not injected / failed with the API server's message) in
# $ADMISSION_LOG.jsonl; the summary line goes to $ADMISSION_LOG. Runs in the background:
# ADMISSION_LOOP_PID; ADMISSION_T0 is when it started ($EPOCHREALTIME: the generator's times are
# relative to it, within a few tens of milliseconds).
admission_loop_start() {
  local tag=$1 ns=$2 image=$4 rate=${5:-$E2E_LOAD_RATE}
  ADMISSION_LOG="$(mktemp)"
  # shellcheck disable=SC2034 # read by the faults (cluster/faults.sh)
  ADMISSION_T0=$EPOCHREALTIME
  "${E2E_LOAD[@]}" --namespace "$ns" --image "$image" --label "$tag" \
    --clients "$E2E_LOAD_CLIENTS" --rate "$rate" \
    --stop-file "$ADMISSION_LOG.stop" --records "$ADMISSION_LOG.jsonl" >"$ADMISSION_LOG" &
  ADMISSION_LOOP_PID=$!
}

# admission_loop_end DESCRIPTION: stops the load (by its pid; in-flight creates finish and are
# counted) and keeps what it measured, asserting nothing: ADMISSION_SUMMARY (the generator's JSON
# summary: admissions, ok, not_injected, failed, rate_per_s, p50_ms, p99_ms, failure_window,
# failure_messages) and ADMISSION_RECORDS (one JSON line per admission: at_ms, latency_ms,
# outcome, message).
admission_loop_end() {
  touch "$ADMISSION_LOG.stop"
  wait "$ADMISSION_LOOP_PID" || failed "$1: the load generator failed"
  ADMISSION_LOOP_PID=""
  ADMISSION_SUMMARY="$(cat "$ADMISSION_LOG" 2>/dev/null)"
  ADMISSION_RECORDS="$(cat "$ADMISSION_LOG.jsonl" 2>/dev/null)"
  [[ -n "$ADMISSION_SUMMARY" ]] || ADMISSION_SUMMARY='{}'
  rm -f "$ADMISSION_LOG" "$ADMISSION_LOG.stop" "$ADMISSION_LOG.jsonl"
}

# admission_figures: "RATE/s, p50 X ms, p99 Y ms" of ADMISSION_SUMMARY.
admission_figures() {
  jq -r '"\(.rate_per_s)/s, p50 \(.p50_ms // 0 | floor) ms, p99 \(.p99_ms // 0 | floor) ms"' <<<"$ADMISSION_SUMMARY" 2>/dev/null
}

# admission_loop_stop DESCRIPTION: stops the load (admission_loop_end) and asserts every admission
# passed, reporting rate and latency.
admission_loop_stop() {
  local desc=$1 total okc noinit failc figures
  admission_loop_end "$desc"
  read -r total okc noinit failc < <(jq -r '"\(.admissions) \(.ok) \(.not_injected) \(.failed)"' \
    <<<"$ADMISSION_SUMMARY" 2>/dev/null) || true
  figures="$(admission_figures)"
  total=${total:-0} okc=${okc:-0} noinit=${noinit:-0} failc=${failc:-0}
  info "  admissions during $desc: $total (ok $okc, without init container $noinit, failed $failc; $figures)"
  AVAILABILITY_REPORT+=("$desc: $total admissions ($figures), $failc failed, $noinit without the init container")
  if ((total >= 5 && okc == total)); then
    ok "$desc: $total Deployments created, every one with the init container, zero failed admissions"
  else
    failed "$desc: $total admissions, $okc ok, $noinit without init container, $failc failed (need >= 5, all ok)"
    jq -r 'select(.outcome != "ok") | "\(.at_ms|floor) ms: \(.outcome) \(.message)"' \
      <<<"$ADMISSION_RECORDS" 2>/dev/null | sed -n '1,10s/^/      /p' >&2 || true
  fi
}

# admission_loop_abort: stops a loop still running (a runner's exit trap, after a failure), by its pid.
admission_loop_abort() {
  [[ -n "$ADMISSION_LOOP_PID" ]] || return 0
  touch "$ADMISSION_LOG.stop"
  kill "$ADMISSION_LOOP_PID" 2>/dev/null
  wait "$ADMISSION_LOOP_PID" 2>/dev/null
  ADMISSION_LOOP_PID=""
}

# assert_available_during_upgrade REL CHART LOAD: admissions during a helm upgrade that rolls the
# webhook's pods: zero failed, every pod replaced.
assert_available_during_upgrade() {
  local rel=$1 chart=$2 wns=${1%%/*} release=${1#*/}
  shift 2
  step "Webhook availability (failurePolicy Fail): admissions during a helm upgrade that rolls the webhook's pods"
  expect "failurePolicy" "Fail" "${E2E_KUBECTL[@]}" get mutatingwebhookconfigurations \
    -l "app.kubernetes.io/instance=$release" -o 'jsonpath={.items[*].webhooks[*].failurePolicy}'
  ((E2E_DRY_RUN)) && { show "${E2E_HELM[@]}" upgrade "$release" "$chart" --reuse-values --set-string "deployment.podAnnotations.e2e-roll=<n>" --wait; return 0; }
  local before
  before="$(webhook_pods "$rel")"
  admission_loop_start upgrade "$@"
  sleep 3
  run "${E2E_HELM[@]}" upgrade "$release" "$chart" --namespace "$wns" --reuse-values \
    --set-string "deployment.podAnnotations.e2e-roll=$(date +%s)" --wait --timeout "${E2E_TIMEOUT}s" ||
    failed "helm upgrade"
  kube -n "$wns" rollout status "deployment/$(webhook_deployment "$rel")" --timeout="${E2E_TIMEOUT}s" || failed "rollout"
  # The old pods finish terminating (shutdown delay, drain) while admissions continue.
  # shellcheck disable=SC2086 # one word per pod
  kube -n "$wns" wait --for=delete $before --timeout="${E2E_TIMEOUT}s" || failed "old webhook pods still there"
  sleep 2
  admission_loop_stop "helm upgrade (pods rolled)"
  local after
  after="$(webhook_pods "$rel")"
  if [[ -n "$after" && "$(comm -12 <(tr ' ' '\n' <<<"$before" | sort) <(tr ' ' '\n' <<<"$after" | sort) | grep -c . || true)" == 0 ]]; then
    ok "every webhook pod was replaced (before: $before; after: $after)"
  else
    failed "the upgrade did not replace every webhook pod (before: $before; after: $after)"
  fi
  checkpoint "availability during helm upgrade"
}

# assert_available_during_pod_deletion REL LOAD: admissions while one webhook pod is deleted.
assert_available_during_pod_deletion() {
  local rel=$1 wns=${1%%/*}
  shift
  step "Webhook availability (failurePolicy Fail): admissions while one webhook pod is deleted"
  ((E2E_DRY_RUN)) && { show "${E2E_KUBECTL[@]}" -n "$wns" delete pod '<one webhook pod>'; return 0; }
  local victim
  victim="$(webhook_pods "$rel" running)"
  victim="${victim%% *}"
  [[ -n "$victim" ]] || die "no running webhook pod"
  admission_loop_start delete "$@"
  sleep 3
  # --wait: returns once the pod is gone (its shutdown delay and drain included).
  kube -n "$wns" delete "$victim" --wait=true --timeout="${E2E_TIMEOUT}s" || failed "deleting $victim"
  kube -n "$wns" rollout status "deployment/$(webhook_deployment "$rel")" --timeout="${E2E_TIMEOUT}s" || failed "rollout"
  kube -n "$wns" wait --for=condition=Available "deployment/$(webhook_deployment "$rel")" --timeout="${E2E_TIMEOUT}s" || failed "available"
  sleep 3
  admission_loop_stop "deletion of $victim"
  checkpoint "availability during pod deletion"
}

# assert_available_during_mode_switch REL CHART LOAD MODE WHAT [helm args...]: helm upgrade to
# tls.mode=MODE (described as WHAT; "" : tls.mode=MODE) while admissions run: the old pods' CA
# stays trusted until they are gone, so not one admission fails.
assert_available_during_mode_switch() {
  local rel=$1 chart=$2 load=("$3" "$4" "$5") mode=$6 what=${7:-tls.mode=$6} wns=${1%%/*} release=${1#*/}
  shift 7
  step "Webhook availability (failurePolicy Fail): admissions while helm upgrade switches to $what"
  ((E2E_DRY_RUN)) && { show "${E2E_HELM[@]}" upgrade "$release" "$chart" --reuse-values --set "tls.mode=$mode" "$@" --wait; return 0; }
  local before
  before="$(webhook_pods "$rel")"
  admission_loop_start "switch-${mode,,}" "${load[@]}"
  sleep 3
  run "${E2E_HELM[@]}" upgrade "$release" "$chart" --namespace "$wns" --reuse-values \
    --set "tls.mode=$mode" "$@" --wait --timeout "${E2E_TIMEOUT}s" || failed "helm upgrade to $what"
  kube -n "$wns" rollout status "deployment/$(webhook_deployment "$rel")" --timeout="${E2E_TIMEOUT}s" || failed "rollout"
  # shellcheck disable=SC2086 # one word per pod
  kube -n "$wns" wait --for=delete $before --timeout="${E2E_TIMEOUT}s" || failed "old webhook pods still there"
  sleep 3
  admission_loop_stop "helm upgrade to $what"
  checkpoint "availability during the switch to $what"
}

# assert_own_upgrade_while_down REL CHART LOAD: with every webhook pod gone and failurePolicy
# Fail, an annotated Deployment is refused (the webhook is really on the path), yet `helm upgrade`
# of the release itself succeeds and brings the webhook back: the chart's objects are excluded by
# label, which needs no namespace label (Kubernetes 1.20 sets no kubernetes.io/metadata.name).
assert_own_upgrade_while_down() {
  local rel=$1 chart=$2 ns=$3 template=$4 image=$5 wns=${1%%/*} release=${1#*/}
  step "The webhook never blocks its own upgrade: helm upgrade with every webhook pod down (failurePolicy Fail)"
  local dep replicas="" pods="<pods>"
  dep="$(webhook_deployment "$rel")"
  if ((E2E_DRY_RUN == 0)); then
    replicas="$(kget -n "$wns" get "deployment/$dep" -o 'jsonpath={.spec.replicas}')"
    pods="$(webhook_pods "$rel")"
  fi
  # The scale subresource is not among the webhook's rules, so this works while it is down.
  kube -n "$wns" scale "deployment/$dep" --replicas=0 || failed "scaling $dep to 0"
  # shellcheck disable=SC2086 # one word per pod
  kube -n "$wns" wait --for=delete $pods --timeout="${E2E_TIMEOUT}s" || failed "webhook pods still there"
  ((E2E_DRY_RUN)) || assert_refused_while_down "$ns" "$template" "$image"
  local stamp="<n>"
  ((E2E_DRY_RUN)) || stamp="$(date +%s)"
  run "${E2E_HELM[@]}" upgrade "$release" "$chart" --namespace "$wns" --reuse-values \
    --set-string "deployment.podAnnotations.e2e-down=$stamp" --wait --timeout "${E2E_TIMEOUT}s" ||
    failed "helm upgrade of the webhook's own release while it is down"
  if ((E2E_DRY_RUN == 0)); then
    expect "webhook replicas ready again (helm restored spec.replicas)" "$replicas" \
      "${E2E_KUBECTL[@]}" -n "$wns" get "deployment/$dep" -o 'jsonpath={.status.readyReplicas}'
  fi
  checkpoint "own upgrade while down"
  wait_for_webhook "$ns" "$template" "$image"
}

# assert_refused_while_down NS TEMPLATE IMAGE: an annotated Deployment is refused because the
# webhook cannot be called (failurePolicy Fail in effect), not for another reason.
assert_refused_while_down() {
  local out
  if out="$(app_manifest "$2" own-upgrade-probe "$3" 0 | kget -n "$1" create --dry-run=server -f - 2>&1)"; then
    failed "an annotated Deployment was admitted with the webhook down: failurePolicy Fail is not in effect"
  elif [[ "$out" == *"failed calling webhook"* ]]; then
    ok "an annotated Deployment is refused while the webhook is down (failed calling webhook)"
  else
    failed "unexpected error for an annotated Deployment while the webhook is down: $out"
  fi
}
