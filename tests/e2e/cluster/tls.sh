# shellcheck shell=bash
# TLS scenarios of the chart: the user's certificate (tls.mode=existingSecret), a CA rotation with
# tls.manageCaBundle, tls.mode=selfManaged; each under the admission loop, each replica's served
# certificate checked. Sourced by cluster/scenarios.sh; every input is an argument (REL, CHART,
# LOAD as in cluster/availability.sh).

# user_certs OUT REL: a user's CA and serving certificate for the release's Service, made as
# certs/README.md says (certs/dev-certs.sh; MIGRATION_INJECTOR_BIN names the binary, else it
# builds one), in a new directory (with secret.yaml and cabundle) whose path goes in the variable
# named OUT.
user_certs() {
  local -n _dir=$1
  local rel=$2
  if ((E2E_DRY_RUN)); then _dir="<dir>"; else _dir="$(mktemp -d)"; fi
  run "$E2E_REPO/certs/dev-certs.sh" "${rel%%/*}" "$(webhook_deployment "$rel")" "$_dir" || failed "certs/dev-certs.sh"
}

# assert_replicas_serve REL SERVICE CAFILE WHAT: every running webhook pod serves a certificate
# for SERVICE.<namespace>.svc that verifies against CAFILE (described as WHAT); at least two pods.
# Reached through kubectl port-forward (on loopback, where E2E_NET runs openssl); each
# port-forward is stopped by its pid.
assert_replicas_serve() {
  local rel=$1 svc=$2 ca=$3 what=$4 wns=${1%%/*} pod port pf n=0
  local host="$svc.$wns.svc"
  for pod in $(webhook_pods "$rel" running); do
    n=$((n + 1))
    port=$((20000 + RANDOM % 20000))
    kget -n "$wns" port-forward "$pod" "$port:webhook" >/dev/null 2>&1 &
    pf=$!
    local out="" _
    for _ in $(seq 1 20); do
      out="$("${E2E_NET[@]}" openssl s_client -connect "127.0.0.1:$port" -servername "$host" \
        -verify_hostname "$host" -CAfile "$ca" -verify_return_error </dev/null 2>&1)" && break
      sleep 0.5
    done
    kill "$pf" 2>/dev/null || true
    wait "$pf" 2>/dev/null || true
    if grep -q 'Verify return code: 0 (ok)' <<<"$out"; then
      ok "pod ${pod#pod/}: certificate for $svc.$wns.svc verifies against $what"
    else
      failed "pod ${pod#pod/}: certificate does not verify: $(grep -E 'verify|error' <<<"$out" | head -n 3 | tr '\n' ' ')"
    fi
  done
  if ((n >= 2)); then ok "$n replicas checked"; else failed "want 2 running replicas, found $n"; fi
}

# run_existing_secret_scenario REL CHART LOAD [helm args...]: from tls.mode=helm, the user's own
# certificate (user_certs) switched to under load (tls.mode=existingSecret): zero failed
# admissions, Helm deleted the helm-mode Secret, every replica serves the user's certificate.
run_existing_secret_scenario() {
  local rel=$1 chart=$2 load=("$3" "$4" "$5") svc certs bundle=""
  shift 5
  svc="$(webhook_deployment "$rel")"
  step "tls.mode=existingSecret: the user's certificate (certs/dev-certs.sh) in Secret $svc-serving-tls"
  user_certs certs "$rel"
  kube apply -f "$certs/secret.yaml" || failed "creating Secret $svc-serving-tls"
  ((E2E_DRY_RUN)) || bundle="$(cat "$certs/cabundle")"
  assert_available_during_mode_switch "$rel" "$chart" "${load[@]}" existingSecret "" "$@" \
    --set "tls.existingSecret=$svc-serving-tls" --set "tls.caBundle=${bundle:-<caBundle>}"
  ((E2E_DRY_RUN)) && return 0
  expect "the helm-mode Secret is gone (Helm deleted it on the switch)" "" \
    "${E2E_KUBECTL[@]}" -n "${rel%%/*}" get secrets --ignore-not-found -o name "$svc-tls"
  assert_replicas_serve "$rel" "$svc" "$certs/ca.crt" "the user's CA alone"
  checkpoint "existingSecret serves the user's certificate"
  rm -rf "$certs"
}

# run_managed_ca_bundle_scenario REL CHART LOAD [helm args...]: in tls.mode=existingSecret,
# tls.manageCaBundle turned on by a helm upgrade under load, then the Secret replaced by one of a
# new CA under load (what a CA rotation does): each replica adds the new CA to the caBundle before
# it serves a certificate of it, so not one admission fails; then every replica serves it.
run_managed_ca_bundle_scenario() {
  local rel=$1 chart=$2 load=("$3" "$4" "$5") svc certs
  shift 5
  svc="$(webhook_deployment "$rel")"
  assert_available_during_mode_switch "$rel" "$chart" "${load[@]}" existingSecret \
    "tls.manageCaBundle=true (tls.mode=existingSecret)" "$@" --set tls.manageCaBundle=true
  step "tls.manageCaBundle: the Secret $svc-serving-tls replaced by a certificate of a new CA, under load"
  user_certs certs "$rel"
  ((E2E_DRY_RUN)) || admission_loop_start rotate "${load[@]}"
  kube apply -f "$certs/secret.yaml" || failed "replacing Secret $svc-serving-tls"
  ((E2E_DRY_RUN)) && return 0
  wait_new_certificate_taken "$rel"
  sleep 3
  admission_loop_stop "the Secret's CA replaced (tls.manageCaBundle)"
  assert_replicas_serve "$rel" "$svc" "$certs/ca.crt" "the new CA"
  checkpoint "CA rotation with tls.manageCaBundle"
  rm -rf "$certs"
}

# wait_new_certificate_taken REL: each running replica logs that it took the new certificate
# (kubelet updates Secret volumes within a minute or so).
wait_new_certificate_taken() {
  local wns=${1%%/*} pod deadline=$((SECONDS + E2E_TIMEOUT))
  info "  waiting (at most ${E2E_TIMEOUT}s) for kubelet to update the Secret volumes and each replica to take the new certificate"
  for pod in $(webhook_pods "$1" running); do
    until kget -n "$wns" logs "$pod" 2>/dev/null | grep -q 'its CA trusted by the caBundle'; do
      if ((SECONDS > deadline)); then failed "pod ${pod#pod/} did not take the new certificate"; break; fi
      sleep 2
    done
  done
}

# run_self_managed_scenario REL CHART LOAD [helm args...]: switch to tls.mode=selfManaged under
# load; both replicas serve trusted certificates; admissions survive a pod deletion.
run_self_managed_scenario() {
  local rel=$1 chart=$2 load=("$3" "$4" "$5")
  shift 5
  assert_available_during_mode_switch "$rel" "$chart" "${load[@]}" selfManaged "" "$@"
  assert_self_managed_certs "$rel"
  wait_for_webhook "${load[@]}"
  assert_available_during_pod_deletion "$rel" "${load[@]}"
  assert_self_managed_certs "$rel"
}

# assert_self_managed_certs REL: each replica serves a certificate the webhook configuration's
# caBundle verifies, and the webhook's ServiceAccount has only the chart's RBAC.
assert_self_managed_certs() {
  local rel=$1 wns=${1%%/*} release=${1#*/}
  step "tls.mode=selfManaged: each replica serves a certificate the API server's caBundle verifies, with only the chart's RBAC"
  ((E2E_DRY_RUN)) && return 0
  local dep svc sa ca
  dep="$(webhook_deployment "$rel")"
  svc="$(kget get mutatingwebhookconfigurations -l "app.kubernetes.io/instance=$release" \
    -o 'jsonpath={.items[0].webhooks[0].clientConfig.service.name}')"
  if [[ -n "$svc" ]]; then ok "the webhook is reached through Service $svc"; else failed "clientConfig.service is not set"; fi
  ca="$(mktemp)"
  kget get mutatingwebhookconfigurations -l "app.kubernetes.io/instance=$release" \
    -o 'jsonpath={.items[0].webhooks[0].clientConfig.caBundle}' | base64 -d >"$ca"
  if grep -q 'BEGIN CERTIFICATE' "$ca"; then ok "caBundle set by the webhook ($(openssl x509 -in "$ca" -noout -subject 2>/dev/null))"
  else failed "caBundle empty"; fi
  assert_replicas_serve "$rel" "$svc" "$ca" "the caBundle"
  rm -f "$ca"
  sa="$(kget -n "$wns" get "deployment/$dep" -o 'jsonpath={.spec.template.spec.serviceAccountName}')"
  assert_only_chart_rbac "$rel" "$sa"
  checkpoint "self-managed certificates"
}

# assert_only_chart_rbac REL SA: every binding naming ServiceAccount SA is the release's own, and
# SA cannot read Secrets cluster-wide.
assert_only_chart_rbac() {
  local wns=${1%%/*} release=${1#*/} sa=$2 bindings line
  bindings="$(kget get clusterrolebindings,rolebindings -A -o json |
    python3 "$E2E_DIR/cluster/sa_bindings.py" "$wns" "$sa" "$release")"
  info "  bindings of ServiceAccount $sa:"
  while IFS= read -r line; do info "    $line"; done <<<"$bindings"
  if [[ -n "$bindings" && "$bindings" != *OTHER* ]]; then ok "ServiceAccount $sa has only the chart's bindings"
  else failed "ServiceAccount $sa: bindings other than the chart's, or none"; fi
  expect "the ServiceAccount cannot read Secrets cluster-wide" "no" can_i list secrets \
    --all-namespaces --as "system:serviceaccount:$wns:$sa"
}

# can_i ARGS...: kubectl auth can-i, printing yes/no whatever its exit status.
can_i() { kget auth can-i "$@" || true; }
