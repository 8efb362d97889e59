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

# ---------------------------------------------------------------------------------------------
# tls.mode=certManager (kind: cert-manager installed by the runner, e2e_scenarios cert_manager=1)
# ---------------------------------------------------------------------------------------------

# run_cert_manager_scenario REL CHART LOAD [helm args...]: from tls.mode=helm, into and out of
# tls.mode=certManager under load, with the caBundle kept by the replicas (tls.manageCaBundle) and
# by cert-manager's cainjector (annotation cert-manager.io/inject-ca-from), in this order:
#   1. helm -> certManager, tls.manageCaBundle=true: zero failed admissions (the replicas add
#      cert-manager's CA beside the live one and serve its certificate only once it is there);
#   2. tls.manageCaBundle=false: cainjector takes the caBundle over: zero failed;
#   3. -> helm (from cainjector): zero failed (the chart renders helm's new CA and the live one);
#   4. helm -> certManager with cainjector directly (the chart's default): cainjector replaces the
#      caBundle with cert-manager's CA alone while the old pods still serve helm's certificate, so
#      the chart's README expects a short window of failed admissions: measured, and asserted to be
#      bounded (FAULT_WINDOW_BOUND), never a Deployment admitted without the init container, and
#      admissions succeed again;
#   5. tls.manageCaBundle=true (from cainjector): zero failed;
#   6. -> helm (from tls.manageCaBundle): zero failed.
# After each switch: in certManager the Certificate <fullname>-tls is Ready; the caBundle holds
# the CA of the Secret the pods mount (exactly that CA when cainjector owns it); every replica
# serves a certificate that verifies against that CA alone and against the live caBundle; the
# webhook injects (wait_for_webhook). Ends in tls.mode=helm.
run_cert_manager_scenario() {
  local rel=$1 chart=$2 load=("$3" "$4" "$5")
  shift 5
  local off=(--set tls.manageCaBundle=false) on=(--set tls.manageCaBundle=true)
  assert_available_during_mode_switch "$rel" "$chart" "${load[@]}" certManager \
    "tls.mode=certManager with tls.manageCaBundle=true (from tls.mode=helm)" "$@" "${on[@]}"
  assert_serves_secret_ca "$rel" certManager replicas "${load[@]}"
  assert_available_during_mode_switch "$rel" "$chart" "${load[@]}" certManager \
    "cert-manager's cainjector owning the caBundle (tls.mode=certManager, tls.manageCaBundle=false)" "$@" "${off[@]}"
  assert_serves_secret_ca "$rel" certManager cainjector "${load[@]}"
  assert_available_during_mode_switch "$rel" "$chart" "${load[@]}" helm \
    "tls.mode=helm (from certManager with cainjector)" "$@" "${off[@]}"
  assert_serves_secret_ca "$rel" helm chart "${load[@]}"
  cert_manager_switch_measured "$rel" "$chart" "${load[@]}" "$@" "${off[@]}"
  assert_serves_secret_ca "$rel" certManager cainjector "${load[@]}"
  assert_available_during_mode_switch "$rel" "$chart" "${load[@]}" certManager \
    "tls.manageCaBundle=true (tls.mode=certManager, from cainjector)" "$@" "${on[@]}"
  assert_serves_secret_ca "$rel" certManager replicas "${load[@]}"
  assert_available_during_mode_switch "$rel" "$chart" "${load[@]}" helm \
    "tls.mode=helm (from certManager with tls.manageCaBundle)" "$@" "${off[@]}"
  assert_serves_secret_ca "$rel" helm chart "${load[@]}"
}

# cert_manager_switch_measured REL CHART LOAD [helm args...]: helm upgrade from tls.mode=helm to
# tls.mode=certManager with cainjector under load; the failed admissions and their window (from
# the upgrade's start) go to the availability report; asserted: bounded (assert_fault_bounded).
cert_manager_switch_measured() {
  local rel=$1 chart=$2 load=("$3" "$4" "$5") wns=${1%%/*} release=${1#*/}
  local what="tls.mode=certManager with cainjector (from tls.mode=helm)"
  shift 5
  step "Admissions while helm upgrade switches to $what: the documented window of failures, measured"
  ((E2E_DRY_RUN)) && { show "${E2E_HELM[@]}" upgrade "$release" "$chart" --reuse-values --set tls.mode=certManager "$@" --wait; return 0; }
  local before at
  before="$(webhook_pods "$rel")"
  admission_loop_start switch-cainjector "${load[@]}"
  sleep 3
  at="$(since "$ADMISSION_T0")"
  run "${E2E_HELM[@]}" upgrade "$release" "$chart" --namespace "$wns" --reuse-values \
    --set tls.mode=certManager "$@" --wait --timeout "${E2E_TIMEOUT}s" || failed "helm upgrade to $what"
  kube -n "$wns" rollout status "deployment/$(webhook_deployment "$rel")" --timeout="${E2E_TIMEOUT}s" || failed "rollout"
  # shellcheck disable=SC2086 # one word per pod
  kube -n "$wns" wait --for=delete $before --timeout="${E2E_TIMEOUT}s" || failed "old webhook pods still there"
  sleep 3
  admission_loop_end "helm upgrade to $what"
  fault_report "helm -> $what" "$at"
  assert_fault_bounded "helm -> $what" "$FAULT_WINDOW_BOUND"
  checkpoint "the switch to $what"
}

# assert_serves_secret_ca REL MODE OWNER LOAD: after a switch to tls.mode=MODE (certManager | helm)
# whose caBundle is kept by OWNER (cainjector | replicas | chart): in certManager the Certificate
# <fullname>-tls is Ready and the namespaceSelector leaves out the cert-manager namespace; the
# annotation cert-manager.io/inject-ca-from names that Certificate exactly when cainjector owns
# the caBundle; the caBundle holds the CA (ca.crt) of the Secret the pods mount, and is exactly
# that CA with cainjector (waited for, at most E2E_TIMEOUT); every replica serves a certificate
# that verifies against that CA alone and against the live caBundle; the webhook injects.
assert_serves_secret_ca() {
  local rel=$1 mode=$2 owner=$3 wns=${1%%/*} release=${1#*/} full secret annotation="" keeper
  shift 3
  case "$owner" in
    cainjector) keeper="cert-manager's cainjector" ;;
    replicas) keeper="the replicas (tls.manageCaBundle)" ;;
    *) keeper="the chart" ;;
  esac
  full="$(webhook_deployment "$rel")"
  secret="$full-tls"
  [[ "$mode" == certManager ]] && secret="$full-cert-manager-tls"
  [[ "$owner" == cainjector ]] && annotation="$wns/$full-tls"
  step "tls.mode=$mode, caBundle kept by $keeper: each replica serves a certificate of Secret $secret's CA, which the caBundle trusts"
  local mwc=("${E2E_KUBECTL[@]}" get mutatingwebhookconfigurations -l "app.kubernetes.io/instance=$release")
  if [[ "$mode" == certManager ]]; then
    kube -n "$wns" wait --for=condition=Ready "certificate/$full-tls" --timeout="${E2E_TIMEOUT}s" ||
      failed "Certificate $full-tls not Ready"
    local excluded=("${mwc[@]}" -o 'jsonpath={range .items[0].webhooks[0].namespaceSelector.matchExpressions[*].values[*]}{@}{"\n"}{end}')
    show "${excluded[@]}"
    if ((E2E_DRY_RUN)); then info "  expect (the webhook leaves out the cert-manager namespace): cert-manager among them"
    elif "${excluded[@]}" | grep -qx cert-manager; then ok "the webhook leaves out the cert-manager namespace"
    else failed "the namespaceSelector does not leave out the cert-manager namespace"; fi
  fi
  expect "annotation cert-manager.io/inject-ca-from" "$annotation" \
    "${mwc[@]}" -o 'jsonpath={.items[0].metadata.annotations.cert-manager\.io/inject-ca-from}'
  show "${E2E_KUBECTL[@]}" -n "$wns" get "secret/$secret" -o 'jsonpath={.data.ca\.crt}'
  show "${mwc[@]}" -o 'jsonpath={.items[0].webhooks[0].clientConfig.caBundle}'
  if [[ "$owner" == cainjector ]]; then info "  (until the caBundle is that ca.crt alone)"
  else info "  (until the caBundle holds that ca.crt)"; fi
  if ((E2E_DRY_RUN == 0)); then
    local dir want have deadline=$((SECONDS + E2E_TIMEOUT))
    dir="$(mktemp -d)"
    kget -n "$wns" get "secret/$secret" -o 'jsonpath={.data.ca\.crt}' | base64 -d >"$dir/ca.crt"
    want="$(pem_fingerprints "$dir/ca.crt")"
    while :; do
      "${mwc[@]}" -o 'jsonpath={.items[0].webhooks[0].clientConfig.caBundle}' | base64 -d >"$dir/bundle"
      have="$(pem_fingerprints "$dir/bundle")"
      if [[ -n "$want" && ( "$have" == "$want" || ( "$owner" != cainjector && $'\n'"$have"$'\n' == *$'\n'"$want"$'\n'* ) ) ]]; then
        ok "the caBundle ($(grep -c . <<<"$have") CA(s)) holds $secret's CA${annotation:+ alone}"
        break
      fi
      if ((SECONDS > deadline)); then
        failed "the caBundle (${have//$'\n'/ }) does not hold $secret's CA (${want:-none})${annotation:+ alone} after ${E2E_TIMEOUT}s"
        break
      fi
      sleep 1
    done
    assert_replicas_serve "$rel" "$full" "$dir/ca.crt" "$secret's CA alone"
    assert_replicas_serve "$rel" "$full" "$dir/bundle" "the live caBundle"
    rm -rf "$dir"
  fi
  checkpoint "tls.mode=$mode with the caBundle kept by $keeper"
  wait_for_webhook "$@"
}

# pem_fingerprints FILE: the SHA-256 fingerprint of each certificate in the PEM FILE, sorted, one a line.
pem_fingerprints() {
  local pem="" line
  while IFS= read -r line || [[ -n "$line" ]]; do
    pem+="$line"$'\n'
    if [[ "$line" == "-----END CERTIFICATE-----" ]]; then
      openssl x509 -noout -fingerprint -sha256 <<<"$pem" | sed 's/.*=//'
      pem=""
    fi
  done <"$1" | sort
}
