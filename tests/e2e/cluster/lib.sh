# shellcheck shell=bash
# shellcheck disable=SC2034 # the context, report and constants are read by the other files
# The cluster scenarios' library: the run context, output, assertions, diagnostics and timings.
# Sourced (by cluster/scenarios.sh), not run.
#
# The run context: what says WHICH cluster and HOW to run; set once per run by the runner (kind or
# node), then frozen by e2e_context_freeze. Scenarios read it and never change it; everything that
# varies between scenarios (namespaces, names, images, helm arguments) is a function argument.
#   E2E_KUBECTL   array: the kubectl command line for the cluster (context or kubeconfig)
#   E2E_HELM      array: the helm command line for the cluster
#   E2E_NET       array: a prefix that runs a command where kubectl port-forwards listen (the
#                 node's network namespace; empty on kind)
#   E2E_TIMEOUT   seconds for each wait
#   E2E_DRY_RUN   1: print the steps and commands, run nothing (kind's --dry-run)
#   E2E_LOAD      array: the load generator (examples/admission_load) with what reaches the cluster
#                 (the node's network namespace and KUBECONFIG, or kind's --context)
#   E2E_LOAD_CLIENTS, E2E_LOAD_RATE: its concurrent clients and admissions per second in all
#                 (8 and 25 by default; 0: as fast as the API server answers)
# The report, written only by the functions of this file (and read by the runners' exit traps):
#   STEP, PHASE (the current step), FAILURES (failed checks so far), AVAILABILITY_REPORT (one
#   line per admission loop or fault), E2E_TIMINGS (one line per e2e_mark), ADMISSION_LOOP_PID/_LOG/
#   _T0, and the last loop's ADMISSION_SUMMARY/_RECORDS (cluster/availability.sh).
# Every step prints `==> [n] ...` and each command as `$ ...`; each assertion prints ok or FAIL.

[[ -v E2E_KUBECTL ]] || E2E_KUBECTL=(kubectl)
[[ -v E2E_HELM ]] || E2E_HELM=(helm)
[[ -v E2E_NET ]] || E2E_NET=()
[[ -v E2E_LOAD ]] || E2E_LOAD=()
E2E_LOAD_CLIENTS="${E2E_LOAD_CLIENTS:-8}"
E2E_LOAD_RATE="${E2E_LOAD_RATE:-25}"
E2E_TIMEOUT="${E2E_TIMEOUT:-300}"
E2E_DRY_RUN="${E2E_DRY_RUN:-0}"
E2E_T0="${E2E_T0:-$SECONDS}"
STEP=0
PHASE="start"
FAILURES=0
AVAILABILITY_REPORT=()
E2E_TIMINGS=()
ADMISSION_LOOP_PID=""
ADMISSION_LOG=""
ADMISSION_T0=""
ADMISSION_SUMMARY="{}"
ADMISSION_RECORDS=""

# e2e_context_freeze: the run context is read-only from here on (scenarios cannot swap it);
# E2E_CONTEXT tells the runners' exit traps that the cluster can be asked for diagnostics.
e2e_context_freeze() {
  readonly E2E_KUBECTL E2E_HELM E2E_NET E2E_LOAD E2E_LOAD_CLIENTS E2E_LOAD_RATE E2E_TIMEOUT E2E_DRY_RUN
  readonly E2E_CONTEXT=1
}

# ---------------------------------------------------------------------------------------------
# Output and execution
# ---------------------------------------------------------------------------------------------
step() { STEP=$((STEP + 1)); PHASE="[$STEP] $*"; printf '\n==> [%d] %s\n' "$STEP" "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf '\nERROR: %s\n' "$*" >&2; exit 1; }

# quote WORD: shell-quote one word for display (only when needed).
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

# run CMD...: print, then execute unless dry run.
run() {
  show "$@"
  ((E2E_DRY_RUN)) && return 0
  "$@"
}
# kube ARGS...: run kubectl against the cluster (printed).
kube() { run "${E2E_KUBECTL[@]}" "$@"; }
# kget ARGS...: kubectl against the cluster, quietly (values read by the scenario).
kget() { "${E2E_KUBECTL[@]}" "$@"; }

# apply_generated CMD...: `CMD --dry-run=client -o yaml | kubectl apply -f -` (idempotent create).
apply_generated() {
  printf '    $ %s --dry-run=client -o yaml | %s apply -f -\n' "$(cmdline "$@")" "$(cmdline "${E2E_KUBECTL[@]}")"
  ((E2E_DRY_RUN)) && return 0
  "$@" --dry-run=client -o yaml | "${E2E_KUBECTL[@]}" apply -f -
}

# e2e_mark LABEL: record the time since the start of the run (the node prints these at the end).
e2e_mark() { E2E_TIMINGS+=("$(printf '%-44s %4ds' "$1" $((SECONDS - E2E_T0)))"); }

# ---------------------------------------------------------------------------------------------
# Assertions: each prints ok or FAIL; checkpoint stops after a group if any failed
# ---------------------------------------------------------------------------------------------
ok() { info "  ok   $*"; }
failed() { printf '    FAIL %s\n' "$*" >&2; FAILURES=$((FAILURES + 1)); }

# expect DESCRIPTION EXPECTED CMD...: run CMD, compare its trimmed stdout with EXPECTED.
expect() {
  local desc=$1 want=$2 got
  shift 2
  show "$@"
  if ((E2E_DRY_RUN)); then
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

# expect_prefix DESC PREFIX CMD...: CMD's output starts with PREFIX.
expect_prefix() {
  local desc=$1 want=$2 got
  shift 2
  got=$("$@" 2>/dev/null || true)
  if [[ "$got" == "$want"* ]]; then ok "$desc: $got"; else failed "$desc: want $want..., got '$got'"; fi
}

# expect_pod NS POD DESC EXPECTED JSONPATH: a field of pod NS/POD.
expect_pod() {
  local ns=$1 pod=$2
  shift 2
  expect "$1" "$2" "${E2E_KUBECTL[@]}" -n "$ns" get "pod/$pod" -o "jsonpath=$3"
}

# checkpoint WHAT: stop after a group of expectations if any failed (all of the group are reported first).
checkpoint() {
  ((FAILURES == 0)) || die "$FAILURES check(s) failed: $*"
}

# ---------------------------------------------------------------------------------------------
# Diagnostics (on failure): pods, events, descriptions and every container's log
# ---------------------------------------------------------------------------------------------
# diagnostics NAMESPACE...: what the cluster looks like, with the logs of NAMESPACEs' pods.
diagnostics() {
  printf '\n==> diagnostics (failure)\n'
  local ns pod
  kget get nodes -o wide || true
  kget get pods -A -o wide || true
  kget get mutatingwebhookconfigurations -o yaml || true
  for ns in "$@"; do
    printf '\n--- namespace %s: deployments, pods, events\n' "$ns"
    kget -n "$ns" get deployments,replicasets,pods,services,secrets -o wide || true
    kget -n "$ns" get deployments -o yaml || true
    kget -n "$ns" describe pods || true
    kget -n "$ns" get events --sort-by=.lastTimestamp || true
    for pod in $(kget -n "$ns" get pods -o name 2>/dev/null || true); do
      printf '\n--- logs %s/%s (all containers, init containers included)\n' "$ns" "$pod"
      kget -n "$ns" logs "$pod" --all-containers=true --prefix=true --tail=200 || true
    done
  done
}

# availability_report: the admission counts of every loop of the run.
availability_report() {
  ((${#AVAILABILITY_REPORT[@]})) || return 0
  printf '\n==> admissions while the webhook pods changed, and under faults (availability report)\n'
  printf '    %s\n' "${AVAILABILITY_REPORT[@]}"
}
