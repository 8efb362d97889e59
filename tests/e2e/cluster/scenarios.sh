# shellcheck shell=bash
# THE ordered list of the cluster scenarios, run on both clusters:
#   tests/e2e/kind/run.sh  (kind, Docker, public images, Atlas)
#   tests/e2e/node/run.sh  (a real single node built on this machine, local images, dbmate)
# A runner brings its cluster up, sets the run context (cluster/lib.sh: E2E_KUBECTL, E2E_HELM,
# E2E_NET, E2E_TIMEOUT, E2E_DRY_RUN), calls e2e_scenarios with what differs between clusters,
# and takes the cluster down. Sourced, not run.
#
# Where to add a scenario: a function in the file of its topic (cluster/app.sh: the app and its
# database; availability.sh: admissions while the webhook changes; tls.sh: certificates;
# chart.sh: the chart's own objects), taking what it needs as arguments, calling step first and
# checkpoint last; then one line in e2e_scenarios below, at its place in the order.
# shellcheck disable=SC2034 # constants read by the sourcing scripts

# (No external command before the prerequisites are checked: ${BASH_SOURCE%/*}, not dirname.)
_cluster_dir="$(cd "${BASH_SOURCE[0]%/*}" && pwd)"
# shellcheck source=lib.sh
source "$_cluster_dir/lib.sh"
# shellcheck source=app.sh
source "$_cluster_dir/app.sh"
# shellcheck source=availability.sh
source "$_cluster_dir/availability.sh"
# shellcheck source=tls.sh
source "$_cluster_dir/tls.sh"
# shellcheck source=chart.sh
source "$_cluster_dir/chart.sh"
# shellcheck source=faults.sh
source "$_cluster_dir/faults.sh"
# shellcheck source=run_once.sh
source "$_cluster_dir/run_once.sh"

# e2e_scenarios KEY=VALUE... [-- HELM_ARGS...]: every scenario, in order. HELM_ARGS (the image
# values for this cluster) go to every helm upgrade that changes the TLS mode. Keys (the ones
# with a default may be left out):
#   app_ns           namespace of PostgreSQL and the apps (deleted and recreated first)
#   app_labels       its labels, "k=v,k2=v2" [migrations.io/injection=enabled]
#   tool             atlas | dbmate: what is in the migrations image
#   image            the migrations image as pods name it
#   broken_image     the same plus a failing migration ["" skips that scenario]
#   pull_policy      migrations.io/pull-policy on the app ["" : the webhook's default, Always]
#   postgres_image   image for postgres.yaml ["" keeps the file's]
#   app_image        image of app.yaml's app container ["" keeps the file's]
#   db_host          dns (postgres.<ns>.svc) | clusterip (the Service's address: no cluster DNS) [dns]
#   release          the webhook's Helm release, NAMESPACE/NAME
#   chart            the chart ["" or no Chart.yaml: installed by the runner from a manifest;
#                    the chart's scenarios are skipped]
#   webhook_image    the image the chart's Deployment must run
#   webhook_replicas its ready replicas ["" : its spec's]
#   expect_security_context  0: the injected securityContext is not checked [1]
#   skip_rerun       1: skip the restart scenario [0]
#   containerd_socket, registry  the node's containerd and registry: check the migrate container
#                    as containerd ran it ["": skipped]
#   host_network     1: the chart's deployment.hostNetwork (a single node) [0]
#   node_dir         the node's directory (node/cluster.sh): with containerd_socket, the faults
#                    under load (cluster/faults.sh: SIGKILL of a webhook container, every pod
#                    deleted, a rollout restart under load, resource figures, kube-apiserver
#                    restarted) ["": skipped]
#   cert_manager     1: cert-manager runs in the cluster (kind): the switches into and out of
#                    tls.mode=certManager under load (cluster/tls.sh) [0]
e2e_scenarios() {
  local -A a=([app_labels]=migrations.io/injection=enabled [broken_image]="" [pull_policy]=""
    [postgres_image]="" [app_image]="" [db_host]=dns [chart]="" [webhook_replicas]=""
    [expect_security_context]=1 [skip_rerun]=0 [containerd_socket]="" [registry]="" [host_network]=0 [node_dir]="" [cert_manager]=0)
  while (($#)) && [[ "$1" != -- ]]; do
    [[ "$1" == *=* && -v "a[${1%%=*}]" || "${1%%=*}" =~ ^(app_ns|tool|image|release|webhook_image)$ ]] ||
      die "e2e_scenarios: unknown argument $1"
    a[${1%%=*}]=${1#*=}
    shift
  done
  [[ "${1:-}" == -- ]] && shift
  local ns=${a[app_ns]} tool=${a[tool]} image=${a[image]} rel=${a[release]} chart=${a[chart]}
  local with_chart=0 template db_host pod psql
  [[ -n "$chart" && -f "$chart/Chart.yaml" ]] && with_chart=1
  if ((E2E_DRY_RUN)); then template='<app template>'; else template="$(mktemp)"; fi

  if ((with_chart)); then
    install_chart "$rel" "$chart" helm "$@"
    assert_chart_installed "$rel" "${a[webhook_image]}" "${a[webhook_replicas]}"
    e2e_mark "chart installed (tls.mode=helm)"
  fi
  # The guide's flow, with PostgreSQL: the Secret, the annotated app, what its init container did.
  deploy_database "$ns" "${a[app_labels]}" "${a[postgres_image]}"
  postgres_host db_host "$ns" "${a[db_host]}"
  psql_command psql "$ns"
  create_secret "$ns" "$tool" "$db_host"
  render_app_template "$template" "$tool" "${a[pull_policy]}" "${a[app_image]}" "$db_host"
  local load=("$ns" "$template" "$image")
  wait_for_webhook "${load[@]}"
  # E2E_FOCUS=run-once or faults (development aids, never set by the suite): the set-up above,
  # then only that scenario.
  case "${E2E_FOCUS:-}" in
    run-once)
      warn "E2E_FOCUS=run-once: only the run-once scenario runs"
      run_once_scenario "$rel" "$chart" "$ns-once" "$template" "$image" "${a[broken_image]}" "$tool" \
        "$db_host" "$ns" "${a[containerd_socket]}" -- "$@"
      return 0
      ;;
    faults)
      warn "E2E_FOCUS=faults: only the fault scenarios run"
      run_fault_scenarios "$rel" "${a[containerd_socket]}" "${a[webhook_image]}" "${a[webhook_replicas]:-1}" "${a[node_dir]}" "${load[@]}"
      return 0
      ;;
    "") ;;
    *) die "E2E_FOCUS=${E2E_FOCUS}: not a focus (run-once, faults)" ;;
  esac
  deploy_app pod "${load[@]}"
  assert_injection "$ns" "$pod" "$image" "${a[pull_policy]}" "$tool" "${a[expect_security_context]}"
  if [[ -n "${a[containerd_socket]}" ]]; then
    assert_runtime_view "$ns" "$pod" "${a[containerd_socket]}" "${a[registry]}"
  fi
  assert_database "$tool" "${psql[@]}"
  if [[ "${a[skip_rerun]}" == 1 ]]; then
    info "SKIP_RERUN=1: the restart scenario is skipped"
  else
    assert_rerun "$ns" "$pod" "$image" "$tool" "${psql[@]}"
  fi
  if [[ -n "${a[broken_image]}" ]]; then
    assert_failing_migration "$ns" "$template" "${a[broken_image]}" "$tool" "${psql[@]}"
  else
    info "no broken migrations image: the failing-migration scenario is skipped"
  fi
  assert_not_annotated "$ns" "${a[app_image]:-postgres:16-alpine}"
  # Availability while the webhook's pods change (a helm upgrade, a pod deletion).
  if ((with_chart)); then
    assert_available_during_upgrade "$rel" "$chart" "${load[@]}"
  else
    info "no chart in '$chart' (installed from a manifest): the helm upgrade scenarios are skipped"
  fi
  assert_available_during_pod_deletion "$rel" "${load[@]}"
  e2e_mark "scenario (tls.mode=helm)"
  if ((with_chart == 0)); then
    ((E2E_DRY_RUN)) || rm -f "$template"
    return 0
  fi
  local faults=0
  [[ -n "${a[node_dir]}" && -n "${a[containerd_socket]}" ]] && faults=1
  # Faults under load (node only): what fails, for how long; what the webhook costs.
  if ((faults)); then
    run_fault_scenarios "$rel" "${a[containerd_socket]}" "${a[webhook_image]}" "${a[webhook_replicas]:-1}" "${a[node_dir]}" "${load[@]}"
  fi
  # The webhook's own upgrade while it is down, then its TLS modes, each under load.
  assert_own_upgrade_while_down "$rel" "$chart" "${load[@]}"
  e2e_mark "own upgrade with the webhook down"
  run_existing_secret_scenario "$rel" "$chart" "${load[@]}" "$@"
  e2e_mark "helm -> existingSecret under load"
  run_managed_ca_bundle_scenario "$rel" "$chart" "${load[@]}" "$@"
  e2e_mark "tls.manageCaBundle, CA rotation under load"
  run_self_managed_scenario "$rel" "$chart" "${load[@]}" "$@" \
    --set tls.existingSecret= --set tls.caBundle= --set tls.manageCaBundle=false
  e2e_mark "-> selfManaged under load, scenario"
  if ((faults)); then
    fault_apiserver_restart "$rel" "${a[node_dir]}" "${load[@]}"
    e2e_mark "faults: kube-apiserver restarted (selfManaged)"
    # The kills again with self-managed certificates: a restarted or new replica reads the CA
    # Secret and syncs the caBundle through the API server before it is Ready.
    FAULT_MODE=selfManaged fault_sigkill_container "$rel" "${a[containerd_socket]}" "${load[@]}"
    FAULT_MODE=selfManaged fault_delete_all_pods "$rel" "${a[webhook_replicas]:-1}" "${load[@]}"
    e2e_mark "faults: SIGKILL, every pod deleted (selfManaged)"
  fi
  assert_available_during_mode_switch "$rel" "$chart" "${load[@]}" helm "" "$@"
  e2e_mark "selfManaged -> helm under load"
  if [[ "${a[cert_manager]}" == 1 ]]; then
    run_cert_manager_scenario "$rel" "$chart" "${load[@]}" "$@"
    e2e_mark "helm <-> certManager under load"
  fi
  # Run-once mode (issue 18): it adds the controller (put back to off at its end), before the host
  # network step leaves the release at 1 host-network replica.
  run_once_scenario "$rel" "$chart" "$ns-once" "$template" "$image" "${a[broken_image]}" "$tool" \
    "$db_host" "$ns" "${a[containerd_socket]}" -- "$@"
  e2e_mark "run-once mode (controller, MigrationRuns)"
  if [[ "${a[host_network]}" == 1 ]]; then
    assert_host_network "$rel" "$chart" "${load[@]}"
    e2e_mark "deployment.hostNetwork"
  fi
  ((E2E_DRY_RUN)) || rm -f "$template"
}
