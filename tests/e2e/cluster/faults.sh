# shellcheck shell=bash
# Faults under load (node only): what a failurePolicy Fail webhook costs when something goes wrong,
# measured. Each fault runs under the admission load generator (cluster/availability.sh) and adds
# its line to the availability report: admissions, rate, failed, without the init container, the
# failure window relative to the fault (or the recovery time), p50/p99. What is asserted is what
# must always hold (never a Deployment admitted without the init container; failures only in a
# bounded window; admissions succeed again); the timings are printed, not asserted tightly.
# Sourced by cluster/scenarios.sh; every input is an argument (REL, LOAD as in availability.sh;
# SOCK: the node's containerd socket; NODE_DIR: the node's directory for node/cluster.sh).

FAULT_WINDOW_BOUND=30 # seconds: the longest failure window a single-replica fault may cause
# FAULT_MODE: the TLS mode a fault runs in when not the chart's default, for its report lines
# (set for one call: FAULT_MODE=selfManaged fault_...).
FAULT_MODE=${FAULT_MODE:-}

# since T0: seconds from T0 ($EPOCHREALTIME) to now, one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# container_pid SOCK POD_NS POD: the host pid of the pod's first container (containerd's task).
container_pid() {
  local cid
  cid="$(kget -n "$2" get pod "$3" -o 'jsonpath={.status.containerStatuses[0].containerID}')"
  cid=${cid#containerd://}
  [[ -n "$cid" ]] || return 0
  "${E2E_NET[@]}" ctr --address "$1" -n k8s.io task ls | awk -v id="$cid" '$1 == id { print $2 }'
}

# memory_of PID: "RSS x MiB (peak y MiB)" from /proc/PID/status.
memory_of() {
  awk '$1 == "VmRSS:" { r = $2 } $1 == "VmHWM:" { h = $2 } END { printf "RSS %.1f MiB (peak %.1f MiB)", r / 1024, h / 1024 }' \
    "/proc/$1/status" 2>/dev/null || printf 'RSS ? (no process %s)' "$1"
}

# seconds_between TIME1 TIME2: seconds from one RFC 3339 time to another ("?" when either is missing).
seconds_between() {
  local a b
  a="$(date -d "$1" +%s 2>/dev/null)" && b="$(date -d "$2" +%s 2>/dev/null)" && [[ -n "$1" && -n "$2" ]] &&
    { printf '%s' $((b - a)); return 0; }
  printf '?'
}

# cpu_ns PID: CPU time (ns) used so far by PID's container: its cpuacct cgroup's usage.
cpu_ns() {
  local path
  path="$(awk -F: '$2 ~ /(^|,)cpuacct(,|$)/ { print $3 }' "/proc/$1/cgroup" 2>/dev/null)"
  cat "/sys/fs/cgroup/cpuacct$path/cpuacct.usage" 2>/dev/null || echo 0
}

# webhook_pod_pids REL SOCK: "POD PID" per running webhook pod.
webhook_pod_pids() {
  local pod
  for pod in $(webhook_pods "$1" running); do
    printf '%s %s\n' "${pod#pod/}" "$(container_pid "$2" "${1%%/*}" "${pod#pod/}")"
  done
}

# fault_report DESC AT [EXTRA]: the availability report's line for the last loop (admission_loop_end)
# with its failure window relative to the fault, AT seconds into the load ("" : no window, for a
# load that is expected not to be injected); printed too.
fault_report() {
  local desc=$1${FAULT_MODE:+ (tls.mode=$FAULT_MODE)} at=${2:-null} extra=${3:-} line
  line="$(jq -r --argjson at "$at" '
    def d: (. * 10 | round) / 10;
    "\(.admissions // 0) admissions (\(.rate_per_s // 0)/s, p50 \(.p50_ms // 0 | floor) ms, p99 \(.p99_ms // 0 | floor) ms), "
    + "\(.failed // 0) failed, \(.not_injected // 0) without the init container"
    + (if .failure_window and $at != null then ", failures from +\(.failure_window.first_s - $at | d) s to +\(.failure_window.last_s - $at | d) s after the fault (window \(.failure_window.span_s | d) s)" else "" end)' \
    <<<"$ADMISSION_SUMMARY")"
  AVAILABILITY_REPORT+=("$desc: $line${extra:+; $extra}")
  info "  $desc: $line${extra:+; $extra}"
  jq -r '.failure_messages[]? | "      failure message: " + .[0:300]' <<<"$ADMISSION_SUMMARY"
}

# summary_field NAME: a number of ADMISSION_SUMMARY (0 when absent).
summary_field() { jq -r "$1 // 0" <<<"$ADMISSION_SUMMARY"; }

# assert_fault_bounded DESC BOUND: never without the init container, failures within BOUND seconds,
# and admissions succeed again: the last 2 s of the load were all ok (and there were some).
assert_fault_bounded() {
  local desc=$1 bound=$2 noinit span tail_total tail_ok
  noinit="$(summary_field .not_injected)"
  span="$(jq -r '(.failure_window.span_s // 0) * 10 | round / 10' <<<"$ADMISSION_SUMMARY")"
  if ((noinit == 0)); then ok "$desc: no Deployment admitted without the init container"
  else failed "$desc: $noinit Deployments admitted without the init container"; fi
  if awk -v s="$span" -v b="$bound" 'BEGIN { exit !(s < b) }'; then
    ok "$desc: failures within a ${span} s window (bound ${bound} s)"
  else failed "$desc: failures over ${span} s (bound ${bound} s)"; fi
  read -r tail_total tail_ok < <(jq -rs '(map(.at_ms) | max // 0) as $last
    | map(select(.at_ms > $last - 2000)) | "\(length) \(map(select(.outcome == "ok")) | length)"' <<<"$ADMISSION_RECORDS") || true
  if ((tail_total > 0 && tail_ok == tail_total)); then
    ok "$desc: admissions succeed again (the last 2 s: $tail_ok of $tail_total ok)"
  else failed "$desc: not recovered (the last 2 s: $tail_ok of $tail_total ok)"; fi
}

# wait_ready_again NS POD RESTARTS OUT: until POD's container restarted (restartCount > RESTARTS)
# and the pod is Ready; OUT gets the seconds it took (from the call).
wait_ready_again() {
  local ns=$1 pod=$2 before=$3 t0=$EPOCHREALTIME deadline=$((SECONDS + E2E_TIMEOUT)) got
  local -n _out=$4
  while :; do
    got="$(kget -n "$ns" get pod "$pod" -o 'jsonpath={.status.containerStatuses[0].restartCount} {.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
    if [[ "$got" =~ ^([0-9]+)\ True$ ]] && ((BASH_REMATCH[1] > before)); then break; fi
    if ((SECONDS > deadline)); then failed "pod $pod not Ready again after ${E2E_TIMEOUT}s ($got)"; break; fi
    sleep 0.2
  done
  _out="$(since "$t0")"
}

# wait_new_pods_ready REL OLD_PODS REPLICAS OUT: until REPLICAS pods of the release that are not in
# OLD_PODS (pod/NAME words) are Ready; OUT gets the seconds it took (from the call).
wait_new_pods_ready() {
  local rel=$1 old=" $2 " want=$3 t0=$EPOCHREALTIME deadline=$((SECONDS + E2E_TIMEOUT)) n name is_ready
  local -n _out=$4
  while :; do
    n=0
    while read -r name is_ready; do
      [[ -n "$name" && "$old" != *" pod/$name "* && "$is_ready" == True ]] && n=$((n + 1))
    done < <(kget -n "${rel%%/*}" get pods -l "$(webhook_selector "$rel")" \
      -o 'jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null || true)
    ((n >= want)) && break
    if ((SECONDS > deadline)); then failed "$n of $want new webhook pods Ready after ${E2E_TIMEOUT}s"; break; fi
    sleep 0.2
  done
  _out="$(since "$t0")"
}

# fault_sigkill_container REL SOCK LOAD: one webhook container killed with SIGKILL (its host pid,
# from containerd) under load: kubelet restarts it; failures (if any) only until it is Ready again.
fault_sigkill_container() {
  local rel=$1 sock=$2 wns=${1%%/*}
  shift 2
  step "Fault: SIGKILL of one webhook container (its host pid, found through containerd) under load${FAULT_MODE:+, tls.mode=$FAULT_MODE}"
  ((E2E_DRY_RUN)) && { show kill -KILL '<pid of the container, ctr task ls>'; return 0; }
  local pod pid restarts at ready
  pod="$(webhook_pods "$rel" running)"
  pod="${pod%% *}" pod="${pod#pod/}"
  restarts="$(kget -n "$wns" get pod "$pod" -o 'jsonpath={.status.containerStatuses[0].restartCount}')"
  pid="$(container_pid "$sock" "$wns" "$pod")"
  [[ -n "$pid" ]] || die "no containerd task for pod $pod"
  info "  pod $pod: container pid $pid (restarts so far: $restarts)"
  admission_loop_start sigkill "$@"
  sleep 3
  at="$(since "$ADMISSION_T0")"
  run kill -KILL "$pid"
  wait_ready_again "$wns" "$pod" "$restarts" ready
  sleep 3
  admission_loop_end "SIGKILL of a webhook container"
  fault_report "SIGKILL of one webhook container" "$at" "the pod Ready again ${ready} s after the kill"
  assert_fault_bounded "SIGKILL of one webhook container" "$FAULT_WINDOW_BOUND"
  checkpoint "SIGKILL of one webhook container"
}

# fault_oom_container REL SOCK LOAD: one webhook container killed by the kernel for exceeding its
# memory limit, under load: its memory cgroup's limit is lowered to what it uses now plus 2 MiB,
# then large AdmissionReviews (5 MiB each, within --max-body-bytes and the memory budget) are sent
# straight to its pod: the kernel OOM-kills it, kubelet restarts it (the pod's status says
# OOMKilled), and failures are limited as for SIGKILL.
fault_oom_container() {
  local rel=$1 sock=$2 wns=${1%%/*}
  shift 2
  step "Fault: one webhook container killed for exceeding its memory limit (OOM) under load"
  ((E2E_DRY_RUN)) && { show echo '<usage + 2 MiB>' '>' '<its memory cgroup>/memory.limit_in_bytes'; return 0; }
  local pod pid restarts at ready memcg usage ip port big reason
  pod="$(webhook_pods "$rel" running)"
  pod="${pod%% *}" pod="${pod#pod/}"
  restarts="$(kget -n "$wns" get pod "$pod" -o 'jsonpath={.status.containerStatuses[0].restartCount}')"
  ip="$(kget -n "$wns" get pod "$pod" -o 'jsonpath={.status.podIP}')"
  port="$(kget -n "$wns" get pod "$pod" -o 'jsonpath={.spec.containers[0].ports[?(@.name=="webhook")].containerPort}')"
  pid="$(container_pid "$sock" "$wns" "$pod")"
  [[ -n "$pid" ]] || die "no containerd task for pod $pod"
  memcg="/sys/fs/cgroup/memory$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3 }' "/proc/$pid/cgroup")"
  [[ -f "$memcg/memory.limit_in_bytes" ]] || die "no memory cgroup for pid $pid ($memcg)"
  big="$(mktemp)"
  python3 - "$big" <<'PY'
import json, sys
value = "x" * (5 * 1024 * 1024)
review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "oom", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
    "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
    "namespace": "oom", "operation": "CREATE", "object": {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "big", "annotations": {"big": value}},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c", "image": "c"}]}}}}}}
open(sys.argv[1], "w").write(json.dumps(review))
PY
  admission_loop_start oom "$@"
  sleep 3
  usage="$(cat "$memcg/memory.usage_in_bytes")"
  info "  pod $pod: container pid $pid, $(memory_of "$pid"), cgroup usage $((usage / 1048576)) MiB; limit lowered to usage + 2 MiB"
  at="$(since "$ADMISSION_T0")"
  echo $((usage + 2 * 1048576)) >"$memcg/memory.limit_in_bytes" || die "lowering the memory limit of $memcg"
  local senders=()
  for _ in 1 2 3 4 5 6 7 8; do
    "${E2E_NET[@]}" curl -sk -m 10 -o /dev/null -H 'content-type: application/json' \
      --data-binary "@$big" "https://$ip:$port/mutate" &
    senders+=($!)
  done
  wait_ready_again "$wns" "$pod" "$restarts" ready
  # Only the senders (the load generator runs in the background too).
  wait "${senders[@]}" 2>/dev/null || true
  rm -f "$big"
  sleep 3
  admission_loop_end "OOM kill of a webhook container"
  reason="$(kget -n "$wns" get pod "$pod" -o 'jsonpath={.status.containerStatuses[0].lastState.terminated.reason}')"
  fault_report "OOM kill of one webhook container" "$at" "last state $reason; the pod Ready again ${ready} s after the limit was lowered"
  expect "the container's last state" "OOMKilled" printf '%s' "$reason"
  assert_fault_bounded "OOM kill of one webhook container" "$FAULT_WINDOW_BOUND"
  checkpoint "OOM kill of one webhook container"
}

# fault_delete_all_pods REL REPLICAS LOAD: every webhook pod deleted at once (--wait=false) under
# load: admissions fail until a new pod is Ready; how long, and never without the init container.
fault_delete_all_pods() {
  local rel=$1 replicas=$2 wns=${1%%/*}
  shift 2
  step "Fault: every webhook pod deleted at once under load${FAULT_MODE:+, tls.mode=$FAULT_MODE}"
  ((E2E_DRY_RUN)) && { show "${E2E_KUBECTL[@]}" -n "$wns" delete '<every webhook pod>' --wait=false; return 0; }
  local pods at ready recovery
  pods="$(webhook_pods "$rel")"
  admission_loop_start delete-all "$@"
  sleep 3
  at="$(since "$ADMISSION_T0")"
  # shellcheck disable=SC2086 # one word per pod
  kube -n "$wns" delete $pods --wait=false || failed "deleting $pods"
  wait_new_pods_ready "$rel" "$pods" "$replicas" ready
  # The old pods finish terminating (shutdown delay, drain) while the load goes on.
  # shellcheck disable=SC2086 # one word per pod
  kube -n "$wns" wait --for=delete $pods --timeout="${E2E_TIMEOUT}s" || failed "old webhook pods still there"
  sleep 3
  admission_loop_end "every webhook pod deleted"
  recovery="$(jq -r --argjson at "$at" 'if .failure_window then "admissions succeed again \((.failure_window.last_s - $at) * 10 | round / 10) s after the deletion" else "no admission failed" end' <<<"$ADMISSION_SUMMARY")"
  fault_report "every webhook pod deleted at once" "$at" "$recovery; $replicas new pods Ready ${ready} s after the deletion"
  assert_fault_bounded "every webhook pod deleted at once" $((FAULT_WINDOW_BOUND * 2))
  checkpoint "every webhook pod deleted at once"
}

# fault_rollout_unpaced REL RATE LOAD: a rollout restart of the webhook while the load generator
# sends at RATE a second, or as fast as the API server answers (RATE 0): not one admission fails.
fault_rollout_unpaced() {
  local rel=$1 rate=$2 wns=${1%%/*} dep before what
  shift 2
  what="rollout restart of the webhook under load at ${rate}/s"
  ((rate == 0)) && what="rollout restart of the webhook under unpaced load (as fast as the API server answers)"
  step "$what"
  ((E2E_DRY_RUN)) && { show "${E2E_KUBECTL[@]}" -n "$wns" rollout restart deployment/'<webhook>'; return 0; }
  dep="$(webhook_deployment "$rel")"
  before="$(webhook_pods "$rel")"
  admission_loop_start rollout "$@" "$rate"
  sleep 3
  kube -n "$wns" rollout restart "deployment/$dep" || failed "rollout restart"
  kube -n "$wns" rollout status "deployment/$dep" --timeout="${E2E_TIMEOUT}s" || failed "rollout"
  # shellcheck disable=SC2086 # one word per pod
  kube -n "$wns" wait --for=delete $before --timeout="${E2E_TIMEOUT}s" || failed "old webhook pods still there"
  sleep 2
  admission_loop_stop "$what"
  checkpoint "$what"
  settle_load "$1"
}

# settle_load NS: waits until the generator's Deployments and their ReplicaSets in NS are gone
# (deleted in the background: after an unpaced load thousands wait for the garbage collector,
# which keeps kube-controller-manager, and so the endpoints of the next phases, busy); prints how long.
settle_load() {
  local t0=$EPOCHREALTIME left deadline=$((SECONDS + E2E_TIMEOUT))
  while :; do
    left="$(kget -n "$1" get deployments,replicasets -l load.migrations.io/generated=true -o name 2>/dev/null | grep -c . || true)"
    ((left > 0)) || break
    if ((SECONDS > deadline)); then warn "$left load objects still in $1 after ${E2E_TIMEOUT}s"; break; fi
    sleep 2
  done
  info "  the load's Deployments and ReplicaSets garbage-collected $(since "$t0") s after the load stopped"
}

# fault_apiserver_restart REL NODE_DIR LOAD: kube-apiserver stopped (by its pid) and started again
# (node/cluster.sh stop-apiserver / start-apiserver) under load, in tls.mode=selfManaged: creates
# fail at the API server while it is down (counted apart from webhook failures); once it is back,
# admissions succeed again through the same webhook pods (no restart) and both replicas' /readyz is ok.
fault_apiserver_restart() {
  local rel=$1 node_dir=$2 wns=${1%%/*} cluster="$E2E_DIR/node/cluster.sh"
  shift 2
  step "Fault: kube-apiserver restarted under load (tls.mode=selfManaged)"
  ((E2E_DRY_RUN)) && { show "$cluster" stop-apiserver "$node_dir"; return 0; }
  local before pod ip port ips=() at down_s up_s t0 restarts_before restarts_after
  before="$(webhook_pods "$rel" running)"
  restarts_before="$(webhook_restarts "$rel")"
  port="$(kget -n "$wns" get deployment "$(webhook_deployment "$rel")" -o 'jsonpath={.spec.template.spec.containers[0].ports[?(@.name=="admin")].containerPort}')"
  for pod in $before; do ips+=("$(kget -n "$wns" get "$pod" -o 'jsonpath={.status.podIP}')"); done
  admission_loop_start apiserver "$@"
  sleep 3
  at="$(since "$ADMISSION_T0")"
  t0=$EPOCHREALTIME
  # TERM, then KILL after 5 s (it may take a minute to drain its watches): an outage well below
  # the node controller's 40 s grace period, so the node and its pods stay Ready.
  run "$cluster" stop-apiserver "$node_dir" 5 || failed "stopping kube-apiserver"
  down_s="$(since "$t0")"
  # While it is down: each replica's /readyz (the replicas keep serving, reached at the pod's IP).
  for ip in "${ips[@]}"; do
    info "  while the API server is down: $ip:$port/readyz -> $("${E2E_NET[@]}" curl -sS -m 2 -o /dev/null -w '%{http_code}' "http://$ip:$port/readyz" 2>&1 || true)"
  done
  run "$cluster" start-apiserver "$node_dir" || die "kube-apiserver did not come back"
  up_s="$(since "$t0")"
  # Admissions through the webhook again, then some more seconds of load.
  local deadline=$((SECONDS + E2E_TIMEOUT)) back=""
  until wait_for_webhook_quiet "$@"; do
    if ((SECONDS > deadline)); then failed "no admission through the webhook after the restart"; break; fi
    sleep 0.5
  done
  back="$(since "$t0")"
  sleep 5
  admission_loop_end "kube-apiserver restart"
  local by_api by_webhook
  read -r by_api by_webhook < <(jq -rs 'map(select(.outcome == "failed"))
    | "\(map(select(.message | test("failed calling webhook") | not)) | length) \(map(select(.message | test("failed calling webhook"))) | length)"' <<<"$ADMISSION_RECORDS") || true
  fault_report "kube-apiserver restarted (selfManaged)" "$at" \
    "stopped in ${down_s} s, serving again ${up_s} s after the stop, admissions through the webhook again after ${back} s; failures at the API server (not reached) $by_api, in calling the webhook $by_webhook"
  assert_fault_bounded "kube-apiserver restart" $((FAULT_WINDOW_BOUND * 4))
  local after
  after="$(webhook_pods "$rel" running)"
  restarts_after="$(webhook_restarts "$rel")"
  if [[ "$after" == "$before" && "$restarts_after" == "$restarts_before" ]]; then
    ok "the same webhook pods serve, not restarted ($after; restarts $restarts_after)"
  else failed "webhook pods changed: before $before ($restarts_before restarts), after $after ($restarts_after)"; fi
  for ip in "${ips[@]}"; do
    expect "replica $ip /readyz after the restart" "200" \
      "${E2E_NET[@]}" curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://$ip:$port/readyz"
  done
  checkpoint "kube-apiserver restart"
}

# fault_restart_component REL NODE_DIR NAME LOAD: kubelet or containerd stopped (by its pid) for a
# few seconds and started again (node/cluster.sh stop/start) under load. The webhook's containers
# outlive both (containerd's shims keep them running), so not one admission may fail, and the same
# pods serve afterwards, not restarted.
fault_restart_component() {
  local rel=$1 node_dir=$2 name=$3 wns=${1%%/*} cluster="$E2E_DIR/node/cluster.sh"
  shift 3
  step "Fault: $name restarted under load"
  ((E2E_DRY_RUN)) && { show "$cluster" stop "$node_dir" "$name"; return 0; }
  local before after restarts_before restarts_after t0 down_s up_s
  before="$(webhook_pods "$rel" running)"
  restarts_before="$(webhook_restarts "$rel")"
  admission_loop_start "restart-$name" "$@"
  sleep 3
  t0=$EPOCHREALTIME
  run "$cluster" stop "$node_dir" "$name" 10 || failed "stopping $name"
  down_s="$(since "$t0")"
  sleep 5
  run "$cluster" start "$node_dir" "$name" || die "$name did not come back"
  up_s="$(since "$t0")"
  # kubelet re-reads its pods and probes them again: the node and the webhook pods stay Ready.
  kube wait --for=condition=Ready node --all --timeout="${E2E_TIMEOUT}s" || failed "node not Ready after the $name restart"
  sleep 5
  admission_loop_end "$name restart"
  fault_report "$name restarted" "" "stopped in ${down_s} s, running again ${up_s} s after the stop"
  if (($(summary_field .failed) == 0 && $(summary_field .not_injected) == 0 && $(summary_field .admissions) > 0)); then
    ok "$name restart: not one admission failed, every one injected"
  else failed "$name restart: admissions failed or were not injected"; fi
  after="$(webhook_pods "$rel" running)"
  restarts_after="$(webhook_restarts "$rel")"
  if [[ "$after" == "$before" && "$restarts_after" == "$restarts_before" ]]; then
    ok "$name restart: the same webhook pods serve, not restarted ($after)"
  else failed "$name restart: webhook pods changed: before $before ($restarts_before restarts), after $after ($restarts_after)"; fi
  checkpoint "$name restart"
}

# endpoint_ips REL: the webhook Service's ready endpoint addresses, space-separated.
endpoint_ips() {
  kget -n "${1%%/*}" get endpoints "$(webhook_deployment "$1")" -o 'jsonpath={.subsets[*].addresses[*].ip}' 2>/dev/null || true
}

# await_endpoint REL IP in|out: until IP is in (or out of) the webhook Service's ready endpoints.
await_endpoint() {
  local deadline=$((SECONDS + E2E_TIMEOUT)) present
  while :; do
    present=out
    [[ " $(endpoint_ips "$1") " == *" $2 "* ]] && present=in
    [[ "$present" == "$3" ]] && return 0
    if ((SECONDS > deadline)); then
      if [[ "$3" == in ]]; then failed "$2 not back in the endpoints after ${E2E_TIMEOUT}s"; else failed "$2 still in the endpoints after ${E2E_TIMEOUT}s"; fi
      return 0
    fi
    sleep 0.2
  done
}

# fault_partition_replica REL LOAD: one replica stops answering without dying: every packet the
# node sends to its pod IP (the API server's requests, kubelet's probes) is dropped inside the
# node's network namespace. Measured: the failures, and how long until readiness takes it out of
# the Service's endpoints (then the API server stops sending it requests); then the drop is lifted
# and it serves again.
fault_partition_replica() {
  local rel=$1 wns=${1%%/*}
  shift
  step "Fault: one webhook replica stops answering (its traffic dropped in the node's network namespace) under load"
  local rule=(OUTPUT -d '<pod IP>' -j DROP)
  ((E2E_DRY_RUN)) && { show "${E2E_NET[@]}" iptables -w -I "${rule[@]}"; return 0; }
  local pod ip at t0 out_s="" back_s=""
  pod="$(webhook_pods "$rel" running)"
  pod="${pod%% *}"
  ip="$(kget -n "$wns" get "$pod" -o 'jsonpath={.status.podIP}')"
  [[ -n "$ip" ]] || die "no pod IP for $pod"
  rule=(OUTPUT -d "$ip" -j DROP)
  admission_loop_start partition "$@"
  sleep 3
  at="$(since "$ADMISSION_T0")"
  t0=$EPOCHREALTIME
  run "${E2E_NET[@]}" iptables -w -I "${rule[@]}" || die "dropping the traffic to $ip"
  await_endpoint "$rel" "$ip" out
  out_s="$(since "$t0")"
  # Some more load with the replica out of the endpoints: nothing may fail any more.
  sleep 8
  run "${E2E_NET[@]}" iptables -w -D "${rule[@]}" || failed "lifting the drop of $ip"
  await_endpoint "$rel" "$ip" in
  back_s="$(since "$t0")"
  sleep 3
  admission_loop_end "one replica partitioned"
  fault_report "one replica stops answering (traffic dropped)" "$at" \
    "out of the endpoints ${out_s} s after the drop (readiness probe), back ${back_s} s after it (the drop lifted at +$(awk -v o="$out_s" 'BEGIN { printf "%.1f", o + 8 }') s)"
  assert_fault_bounded "one replica stops answering" "$FAULT_WINDOW_BOUND"
  # Once it is out of the endpoints, requests go to the other replica only.
  local late
  late="$(jq -rs --argjson t "$(awk -v a="$at" -v o="$out_s" 'BEGIN { printf "%.1f", (a + o + 1) * 1000 }')" \
    'map(select(.outcome == "failed" and .at_ms > $t)) | length' <<<"$ADMISSION_RECORDS")"
  if ((late == 0)); then ok "one replica stops answering: no failure once it left the endpoints"
  else failed "one replica stops answering: $late failures after it left the endpoints"; fi
  checkpoint "one replica partitioned"
}

# wait_for_webhook_quiet NS TEMPLATE IMAGE: one server-side dry run comes back injected (quietly).
wait_for_webhook_quiet() {
  local out
  out="$(app_manifest "$2" apiserver-probe "$3" 0 | kget -n "$1" create --dry-run=server -f - \
    -o 'jsonpath={.spec.template.spec.initContainers[*].name}' 2>/dev/null)" && [[ " $out " == *" migrate "* ]]
}

# fault_resource_figures REL SOCK WEBHOOK_IMAGE SECONDS LOAD: what the webhook costs, printed (not
# asserted): each replica's memory idle and after load, CPU per admission, pod start -> Ready, the
# image's size, and the latency it adds: the same load with its MutatingWebhookConfiguration and
# without it (deleted, then re-created from its saved object).
fault_resource_figures() {
  local rel=$1 sock=$2 webhook_image=$3 secs=$4 wns=${1%%/*} release=${1#*/}
  shift 4
  step "What the webhook costs: memory, CPU per admission, start -> Ready, image size, latency with and without it"
  ((E2E_DRY_RUN)) && return 0
  local pod pid pids=() line size started ready cpu0=0 cpu1=0 n
  while read -r pod pid; do
    pids+=("$pid")
    read -r started ready < <(kget -n "$wns" get pod "$pod" -o 'jsonpath={.status.conditions[?(@.type=="PodScheduled")].lastTransitionTime} {.status.conditions[?(@.type=="Ready")].lastTransitionTime}{"\n"}') || true
    line="$pod: idle $(memory_of "$pid"); scheduled -> Ready $(seconds_between "$started" "$ready") s"
    info "  $line"
    AVAILABILITY_REPORT+=("resources, $line")
  done < <(webhook_pod_pids "$rel" "$sock")
  size="$("${E2E_NET[@]}" ctr --address "$sock" -n k8s.io images ls "name==$webhook_image" | awk 'NR == 2 { print $4, $5 }')"
  info "  image $webhook_image: $size (compressed layers, as containerd pulled it)"
  AVAILABILITY_REPORT+=("resources, the webhook image: $size (compressed, as containerd pulled it)")

  for pid in "${pids[@]}"; do cpu0=$((cpu0 + $(cpu_ns "$pid"))); done
  admission_loop_start with-webhook "$@"
  sleep "$secs"
  admission_loop_end "load with the webhook"
  for pid in "${pids[@]}"; do cpu1=$((cpu1 + $(cpu_ns "$pid"))); done
  n="$(summary_field .admissions)"
  fault_report "latency with the webhook (${secs} s at ${E2E_LOAD_RATE}/s)" 0 \
    "CPU of both replicas $(((cpu1 - cpu0) / 1000000)) ms, $(awk -v c=$((cpu1 - cpu0)) -v n="$n" 'BEGIN { printf "%.2f", n ? c / n / 1e6 : 0 }') ms per admission"
  if (($(summary_field .failed) == 0 && $(summary_field .not_injected) == 0 && n > 0)); then
    ok "with the webhook: every admission injected"
  else failed "with the webhook: some admissions failed or were not injected"; fi
  while read -r pod pid; do
    line="$pod: after load $(memory_of "$pid")"
    info "  $line"
    AVAILABILITY_REPORT+=("resources, $line")
  done < <(webhook_pod_pids "$rel" "$sock")

  local mwc saved
  mwc="$(kget get mutatingwebhookconfigurations -l "app.kubernetes.io/instance=$release" -o 'jsonpath={.items[0].metadata.name}')"
  saved="$(mktemp)"
  kget get mutatingwebhookconfiguration "$mwc" -o json |
    jq 'del(.metadata.resourceVersion, .metadata.uid, .metadata.creationTimestamp, .metadata.generation, .metadata.managedFields, .metadata.selfLink)' >"$saved"
  kube delete mutatingwebhookconfiguration "$mwc" || failed "deleting $mwc"
  sleep 2
  admission_loop_start without-webhook "$@"
  sleep "$secs"
  admission_loop_end "load without the webhook"
  kube create -f "$saved" || failed "re-creating $mwc"
  rm -f "$saved"
  fault_report "latency without the webhook (its configuration removed; ${secs} s at ${E2E_LOAD_RATE}/s)" "" \
    "all $(summary_field .not_injected) not injected, as expected"
  if (($(summary_field .failed) == 0)); then ok "without the webhook: no admission failed"
  else failed "without the webhook: admissions failed"; fi
  wait_for_webhook "$@"
  checkpoint "resource figures"
}

# run_fault_scenarios REL SOCK WEBHOOK_IMAGE REPLICAS NODE_DIR LOAD: the faults of tls.mode=helm, in order.
run_fault_scenarios() {
  local rel=$1 sock=$2 webhook_image=$3 replicas=$4 node_dir=$5
  shift 5
  fault_resource_figures "$rel" "$sock" "$webhook_image" 10 "$@"
  e2e_mark "faults: resource figures"
  fault_sigkill_container "$rel" "$sock" "$@"
  e2e_mark "faults: SIGKILL of a webhook container"
  fault_oom_container "$rel" "$sock" "$@"
  e2e_mark "faults: OOM kill of a webhook container"
  fault_delete_all_pods "$rel" "$replicas" "$@"
  e2e_mark "faults: every webhook pod deleted"
  fault_restart_component "$rel" "$node_dir" containerd "$@"
  e2e_mark "faults: containerd restarted"
  fault_restart_component "$rel" "$node_dir" kubelet "$@"
  e2e_mark "faults: kubelet restarted"
  fault_partition_replica "$rel" "$@"
  e2e_mark "faults: one replica partitioned"
  # At the load's highest rate (as fast as the API server answers: rate 0). Before the EOF fix
  # (conn.rs: HTTP/1.1 connections retired with `Connection: close`) it lost 1 admission in 6208.
  fault_rollout_unpaced "$rel" 0 "$@"
  e2e_mark "faults: rollout under load"
}
