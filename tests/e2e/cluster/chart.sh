# shellcheck shell=bash
# The chart's own scenarios: installed with helm (and what it made), and deployment.hostNetwork.
# Sourced by cluster/scenarios.sh; every input is an argument (REL, CHART, LOAD as in
# cluster/availability.sh).

# install_chart REL CHART MODE [helm args...]: helm upgrade --install of the chart in tls.mode=MODE,
# rolled out and Available.
install_chart() {
  local rel=$1 chart=$2 mode=$3 wns=${1%%/*}
  shift 3
  step "Install the webhook with Helm (chart $chart, tls.mode=$mode)"
  run "${E2E_HELM[@]}" upgrade --install "${rel#*/}" "$chart" \
    --namespace "$wns" --create-namespace \
    "$@" --set "tls.mode=$mode" \
    --wait --timeout "${E2E_TIMEOUT}s"
  kube -n "$wns" rollout status "deployment/$(webhook_deployment "$rel")" --timeout="${E2E_TIMEOUT}s"
  kube -n "$wns" wait --for=condition=Available deployment --all --timeout="${E2E_TIMEOUT}s"
  kube get mutatingwebhookconfigurations
}

# assert_chart_installed REL IMAGE REPLICAS: the release's Deployment runs IMAGE with REPLICAS
# ready replicas ("" : as many as its spec asks), and its webhook is called through its Service.
assert_chart_installed() {
  local rel=$1 image=$2 replicas=$3 wns=${1%%/*} dep
  step "The chart's webhook: its image, its replicas ready, called through its Service"
  dep="$(webhook_deployment "$rel")"
  if [[ -z "$replicas" ]] && ((E2E_DRY_RUN == 0)); then
    replicas="$(kget -n "$wns" get "deployment/$dep" -o 'jsonpath={.spec.replicas}')"
  fi
  expect "webhook replicas ready" "$replicas" "${E2E_KUBECTL[@]}" -n "$wns" get "deployment/$dep" -o 'jsonpath={.status.readyReplicas}'
  expect "webhook clientConfig.service" "$dep" "${E2E_KUBECTL[@]}" get mutatingwebhookconfigurations \
    -l "app.kubernetes.io/instance=${rel#*/}" -o 'jsonpath={.items[0].webhooks[0].clientConfig.service.name}'
  expect "webhook image" "$image" "${E2E_KUBECTL[@]}" -n "$wns" get "deployment/$dep" -o 'jsonpath={.spec.template.spec.containers[0].image}'
  checkpoint "install"
}

# assert_host_network REL CHART LOAD: the chart's deployment.hostNetwork on a single node: one
# replica in the node's network namespace on port 9443, reached by the API server through the
# Service.
assert_host_network() {
  local rel=$1 chart=$2 wns=${1%%/*}
  shift 2
  step "deployment.hostNetwork=true: the webhook on the node's network (port 9443), reached through its Service"
  local before=""
  ((E2E_DRY_RUN)) || before="$(webhook_pods "$rel")"
  run "${E2E_HELM[@]}" upgrade "${rel#*/}" "$chart" --namespace "$wns" --reuse-values \
    --set deployment.hostNetwork=true --set containerPorts.webhook=9443 --set containerPorts.admin=9080 \
    --set deployment.replicas=1 --set deployment.strategy.rollingUpdate.maxSurge=0 \
    --set deployment.strategy.rollingUpdate.maxUnavailable=1 --wait --timeout "${E2E_TIMEOUT}s"
  ((E2E_DRY_RUN)) && return 0
  kube -n "$wns" rollout status "deployment/$(webhook_deployment "$rel")" --timeout="${E2E_TIMEOUT}s"
  # The old pods may still be terminating (shutdown delay, drain): check the new one only.
  # shellcheck disable=SC2086 # one word per pod
  kube -n "$wns" wait --for=delete $before --timeout="${E2E_TIMEOUT}s" || failed "old webhook pods still there"
  local pod
  pod="$(webhook_pods "$rel" running)"
  pod="${pod%% *}"
  pod="${pod#pod/}"
  expect_pod "$wns" "$pod" "webhook pod hostNetwork" "true" '{.spec.hostNetwork}'
  expect_pod "$wns" "$pod" "webhook pod address = its node's address" "$(kget -n "$wns" get "pod/$pod" -o 'jsonpath={.status.hostIP}')" '{.status.podIP}'
  expect "Service endpoint port" "9443" "${E2E_KUBECTL[@]}" -n "$wns" get endpoints "$(webhook_deployment "$rel")" \
    -o 'jsonpath={.subsets[0].ports[?(@.name=="webhook")].port}'
  checkpoint "host network"
  wait_for_webhook "$@"
}
