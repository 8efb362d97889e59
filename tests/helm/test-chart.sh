#!/usr/bin/env bash
# Tests of the Helm chart charts/migration-injector, offline (no cluster needed):
#   helm lint --strict; helm template for every TLS mode and the main value combinations, each
#   asserted with tests/helm/check_render.py; RBAC exactly in tls.mode=selfManaged; schema rejections; matchConditions/PDB gating by
#   --kube-version/--api-versions; manifests/install.yaml freshness; render-for-apiserver.sh;
#   values.schema.json strictness; README coverage of every value; the matchConditions CEL
#   evaluated with cel-cpp (skipped if cel-expr-python cannot be installed); the defaults for
#   clusters without matchConditions (priority class and its quota, soft spread, the chart's own
#   objects excluded by objectSelector); yamllint; kubernetes-validate --strict against the
#   schemas of the oldest and newest supported Kubernetes versions (pinned PyPI tools from
#   tests/tools/install-pytools.sh); shellcheck when it is installed.
#
# Usage: tests/helm/test-chart.sh        Env: HELM=/path/to/helm (default: tests/tools/install-helm.sh)
# Exit status: 0 when every check passed, 1 otherwise (failures are listed at the end).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CHART=$ROOT/charts/migration-injector
CHECK=$ROOT/tests/helm/check_render.py
HELM=${HELM:-$("$ROOT/tests/tools/install-helm.sh")} || { echo "cannot install helm" >&2; exit 1; }
NS=mi-test
REL=t
FULL=t-migration-injector
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

PASSED=0
FAILED=()
pass() { PASSED=$((PASSED + 1)); echo "  PASS $1"; }
fail() { FAILED+=("$1"); echo "  FAIL $1"; }
section() { echo; echo "== $*"; }

# render NAME [helm template flags...]: renders to $WORK/NAME.yaml; a helm error is a failure.
render() {
  local name=$1; shift
  if "$HELM" template "$REL" "$CHART" --namespace "$NS" "$@" >"$WORK/$name.yaml" 2>"$WORK/$name.err"; then
    return 0
  fi
  fail "$name: helm template failed: $(head -c 600 "$WORK/$name.err")"
  return 1
}

# check NAME EXPR...: asserts Python expressions on the render NAME (see check_render.py).
check() {
  local name=$1; shift
  if python3 "$CHECK" "$WORK/$name.yaml" "$@"; then pass "$name"; else fail "$name"; fi
}

# case NAME [helm flags...] -- EXPR...: render then check.
case_() {
  local name=$1; shift
  local flags=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do flags+=("$1"); shift; done
  shift
  echo "- $name"
  render "$name" ${flags[@]+"${flags[@]}"} && check "$name" "$@"
}

# reject NAME PATTERN [helm flags...]: helm template must fail with stderr matching PATTERN.
reject() {
  local name=$1 pattern=$2; shift 2
  if "$HELM" template "$REL" "$CHART" --namespace "$NS" "$@" >"$WORK/$name.yaml" 2>"$WORK/$name.err"; then
    fail "$name: helm template succeeded but must fail ($*)"
  elif grep -Eq -- "$pattern" "$WORK/$name.err"; then
    pass "$name (rejected: $(grep -Eo -- "$pattern" "$WORK/$name.err" | head -1))"
  else
    fail "$name: failed without /$pattern/: $(head -c 400 "$WORK/$name.err")"
  fi
}

echo "helm: $HELM ($("$HELM" version --short))"

section "helm lint --strict"
for flags in "" "--set tls.mode=helm" "--set tls.mode=existingSecret --set tls.existingSecret=s --set tls.caBundle=QUJD" \
             "--set tls.mode=url --set webhook.url=https://10.0.0.1:8443/mutate --set deployment.enabled=false" \
             "--set serviceMonitor.enabled=true --set networkPolicy.enabled=true" \
             "--set tls.mode=selfManaged" \
             "--set controller.enabled=true --set config.runMode=once --set metrics.prometheusRule.enabled=true --set metrics.dashboard.enabled=true --set networkPolicy.enabled=true --set serviceMonitor.enabled=true" \
             "--set tls.mode=selfManaged --set webhook.url=https://10.0.0.1:8443/mutate --set deployment.enabled=false"; do
  # shellcheck disable=SC2086 # flags are meant to split
  if "$HELM" lint --strict "$CHART" $flags >"$WORK/lint.out" 2>&1; then
    pass "lint ${flags:-(defaults)}"
  else
    fail "lint ${flags:-(defaults)}: $(cat "$WORK/lint.out")"
  fi
done

# Every supported kind's resource, as the rules name them.
ALL_RES="{'deployments','statefulsets','daemonsets','replicasets','jobs','cronjobs','pods'}"
# The default: ReplicaSets and Pods are off (their controller-made copies are left alone anyway).
DEFAULT_RES="{'deployments','statefulsets','daemonsets','jobs','cronjobs'}"
ALL_ON=(--set webhook.kinds.replicaSets=true --set webhook.kinds.pods=true)
RBAC_ABSENT="not any(has(k) for k in ('Role','RoleBinding','ClusterRole','ClusterRoleBinding'))"
# The objectSelector expression that keeps the chart's own objects away from the webhook.
SELF_EXCLUSION="{'matchExpressions': [{'key': 'migrations.io/injection', 'operator': 'NotIn', 'values': ['disabled']}]}"

section "TLS mode certManager (default)"
case_ default -- \
  "kinds == sorted(['Certificate','Certificate','Deployment','Issuer','Issuer','MutatingWebhookConfiguration','PodDisruptionBudget','ResourceQuota','Service','ServiceAccount'])" \
  "$RBAC_ABSENT" \
  "mwc['metadata']['annotations']['cert-manager.io/inject-ca-from'] == '$NS/$FULL-tls'" \
  "'caBundle' not in wh['clientConfig']" \
  "wh['clientConfig']['service'] == {'name': '$FULL', 'namespace': '$NS', 'path': '/mutate', 'port': 443}" \
  "wh['sideEffects'] == 'None' and wh['admissionReviewVersions'] == ['v1']" \
  "wh['reinvocationPolicy'] == 'IfNeeded' and wh['matchPolicy'] == 'Equivalent'" \
  "wh['failurePolicy'] == 'Fail' and wh['timeoutSeconds'] == 10" \
  "resources == $DEFAULT_RES" \
  "all(r['operations'] == ['CREATE','UPDATE'] and r['scope'] == 'Namespaced' for r in wh['rules'])" \
  "rule('deployments')['apiGroups'] == ['apps'] and rule('deployments')['apiVersions'] == ['v1']" \
  "rule('jobs')['apiGroups'] == ['batch'] and 'pods' not in resources" \
  "rule('cronjobs')['apiGroups'] == ['batch'] and set(rule('cronjobs')['apiVersions']) == {'v1','v1beta1'}" \
  "nsexpr['kubernetes.io/metadata.name'] == ('NotIn', ['$NS', 'kube-system', 'kube-public', 'kube-node-lease', 'cert-manager'])" \
  "nsexpr['migrations.io/injection'] == ('NotIn', ['disabled'])" \
  "wh['objectSelector'] == $SELF_EXCLUSION" \
  "'matchConditions' in wh" \
  "dep['spec']['replicas'] == 2" \
  "one('PodDisruptionBudget')['apiVersion'] == 'policy/v1' and one('PodDisruptionBudget')['spec']['maxUnavailable'] == 1" \
  "pod['affinity']['podAntiAffinity']['preferredDuringSchedulingIgnoredDuringExecution'][0]['podAffinityTerm']['topologyKey'] == 'kubernetes.io/hostname'" \
  "pod['automountServiceAccountToken'] is False and one('ServiceAccount')['automountServiceAccountToken'] is False" \
  "pod['serviceAccountName'] == '$FULL'" \
  "ctr['livenessProbe']['httpGet'] == {'path': '/healthz', 'port': 'admin', 'scheme': 'HTTP'}" \
  "ctr['readinessProbe']['httpGet'] == {'path': '/readyz', 'port': 'admin', 'scheme': 'HTTP'}" \
  "{p['name']: p['containerPort'] for p in ctr['ports']} == {'webhook': 8443, 'admin': 8080}" \
  "ctr['args'] == ['serve']" \
  "ctr['volumeMounts'] == [{'name': 'tls', 'mountPath': '/etc/migration-injector/tls', 'readOnly': True}]" \
  "pod['volumes'][0]['secret']['secretName'] == '$FULL-cert-manager-tls'" \
  "[c for c in all_of('Certificate') if c['metadata']['name'] == '$FULL-tls'][0]['spec']['secretName'] == '$FULL-cert-manager-tls'" \
  "'$FULL.$NS.svc' in [c for c in all_of('Certificate') if c['metadata']['name'] == '$FULL-tls'][0]['spec']['dnsNames']" \
  "ctr['resources']['requests'] and ctr['resources']['limits']" \
  "'nodeSelector' not in pod and 'tolerations' not in pod" \
  "pod['terminationGracePeriodSeconds'] == 35" \
  "{p['name']: p['port'] for p in one('Service')['spec']['ports']} == {'webhook': 443, 'admin': 8080}" \
  "all(d['metadata'].get('namespace') == '$NS' for d in docs if d['kind'] != 'MutatingWebhookConfiguration')"

section "restricted securityContext (pod and container)"
check default \
  "pod['securityContext']['runAsNonRoot'] is True and pod['securityContext']['runAsUser'] == 65532" \
  "pod['securityContext']['seccompProfile'] == {'type': 'RuntimeDefault'}" \
  "ctr['securityContext']['allowPrivilegeEscalation'] is False" \
  "ctr['securityContext']['readOnlyRootFilesystem'] is True" \
  "ctr['securityContext']['capabilities'] == {'drop': ['ALL']}" \
  "ctr['securityContext']['runAsNonRoot'] is True and ctr['securityContext']['runAsUser'] == 65532" \
  "ctr['securityContext']['seccompProfile'] == {'type': 'RuntimeDefault'}" \
  "pod['volumes'][0]['secret']['defaultMode'] == 0o440 and pod['securityContext']['fsGroup'] == 65532"

section "env: only the fixed settings by default"
check default \
  "envnames == ['MIGRATION_INJECTOR_LISTEN','MIGRATION_INJECTOR_ADMIN_LISTEN','MIGRATION_INJECTOR_TLS_CERT_FILE','MIGRATION_INJECTOR_TLS_KEY_FILE']" \
  "env['MIGRATION_INJECTOR_LISTEN'] == '0.0.0.0:8443' and env['MIGRATION_INJECTOR_ADMIN_LISTEN'] == '0.0.0.0:8080'" \
  "env['MIGRATION_INJECTOR_TLS_CERT_FILE'] == '/etc/migration-injector/tls/tls.crt'" \
  "env['MIGRATION_INJECTOR_TLS_KEY_FILE'] == '/etc/migration-injector/tls/tls.key'"

section "certManager with tls.manageCaBundle (the replicas keep the caBundle, not cainjector)"
case_ cm-managed --set tls.manageCaBundle=true -- \
  "'cert-manager.io/inject-ca-from' not in (mwc['metadata'].get('annotations') or {})" \
  "'caBundle' not in wh['clientConfig']" \
  "env['MIGRATION_INJECTOR_MANAGE_CA_BUNDLE'] == 'true' and env['MIGRATION_INJECTOR_TLS_CA_FILE'] == '/etc/migration-injector/tls/ca.crt'" \
  "env['MIGRATION_INJECTOR_WEBHOOK_CONFIG_NAME'] == '$FULL' and 'MIGRATION_INJECTOR_POD_NAME' in env" \
  "pod['automountServiceAccountToken'] is True" \
  "not has('Role') and not has('RoleBinding')" \
  "one('ClusterRole')['rules'] == [{'apiGroups': ['admissionregistration.k8s.io'], 'resources': ['mutatingwebhookconfigurations'], 'resourceNames': ['$FULL'], 'verbs': ['get', 'patch']}]" \
  "one('ClusterRoleBinding')['subjects'][0]['name'] == '$FULL'"
case_ existing-managed --set tls.mode=existingSecret --set tls.existingSecret=my-tls --set tls.manageCaBundle=true -- \
  "'caBundle' not in wh['clientConfig']" \
  "env['MIGRATION_INJECTOR_MANAGE_CA_BUNDLE'] == 'true'" \
  "pod['volumes'][0]['secret']['secretName'] == 'my-tls'" \
  "has('ClusterRole') and not has('Role')"
case_ nodeploy-managed --set tls.manageCaBundle=true --set deployment.enabled=false -- \
  "has('ServiceAccount') and one('ClusterRoleBinding')['subjects'][0]['name'] == one('ServiceAccount')['metadata']['name']"
reject managed-helm "tls.manageCaBundle works with tls.mode=certManager or existingSecret" --set tls.mode=helm --set tls.manageCaBundle=true
reject managed-selfmanaged "tls.manageCaBundle works with" --set tls.mode=selfManaged --set tls.manageCaBundle=true

section "certManager with an existing issuer"
case_ cm-issuer --set tls.certManager.issuerRef.name=corp-ca --set tls.certManager.issuerRef.kind=ClusterIssuer -- \
  "not has('Issuer') and one('Certificate')['spec']['issuerRef'] == {'name': 'corp-ca', 'kind': 'ClusterIssuer'}" \
  "mwc['metadata']['annotations']['cert-manager.io/inject-ca-from'] == '$NS/$FULL-tls'"

section "TLS mode helm"
case_ helm --set tls.mode=helm -- \
  "not has('Certificate') and not has('Issuer')" \
  "one('Secret')['type'] == 'kubernetes.io/tls' and one('Secret')['metadata']['name'] == '$FULL-tls'" \
  "set(one('Secret')['data']) == {'tls.crt', 'tls.key', 'ca.crt'}" \
  "wh['clientConfig']['caBundle'] == one('Secret')['data']['ca.crt']" \
  "'cert-manager.io/inject-ca-from' not in (mwc['metadata'].get('annotations') or {})" \
  "cert_ok(one('Secret')['data']['ca.crt'], one('Secret')['data']['tls.crt'], ['$FULL.$NS.svc', '$FULL.$NS.svc.cluster.local'])" \
  "'PRIVATE KEY' in secret_data('$FULL-tls')['tls.key']" \
  "pod['volumes'][0]['secret']['secretName'] == '$FULL-tls'"

section "TLS mode existingSecret"
case_ existing --set tls.mode=existingSecret --set tls.existingSecret=my-tls --set tls.caBundle=Q0FCVU5ETEU= -- \
  "not has('Secret') and not has('Certificate') and not has('Issuer')" \
  "wh['clientConfig']['caBundle'] == 'Q0FCVU5ETEU='" \
  "'service' in wh['clientConfig'] and 'url' not in wh['clientConfig']" \
  "pod['volumes'][0]['secret']['secretName'] == 'my-tls'"
reject existing-no-ca "tls.caBundle .*required" --set tls.mode=existingSecret --set tls.existingSecret=my-tls
reject existing-no-secret "tls.existingSecret is required" --set tls.mode=existingSecret --set tls.caBundle=QUJD
reject existing-helm-secret "the Secret tls.mode=helm generates for this release" --set tls.mode=existingSecret \
  --set "tls.existingSecret=$FULL-tls" --set tls.caBundle=QUJD
reject url-helm-secret "the Secret tls.mode=helm generates for this release" --set tls.mode=url \
  --set webhook.url=https://10.1.2.3:8443/mutate --set "tls.existingSecret=$FULL-tls"

section "TLS mode url (webhook outside the cluster)"
case_ url --set tls.mode=url --set webhook.url=https://10.1.2.3:8443/mutate --set tls.caBundle=QUJD --set deployment.enabled=false -- \
  "kinds == ['MutatingWebhookConfiguration']" \
  "wh['clientConfig'] == {'url': 'https://10.1.2.3:8443/mutate', 'caBundle': 'QUJD'}"
case_ url-with-deployment --set tls.mode=url --set webhook.url=https://mi.example.com/mutate -- \
  "has('Deployment') and has('Service') and not has('Secret') and not has('Certificate')" \
  "'caBundle' not in wh['clientConfig'] and 'service' not in wh['clientConfig']"
reject url-missing "webhook.url is required" --set tls.mode=url
reject url-wrong-mode "webhook.url is only used with tls.mode=url" --set webhook.url=https://10.1.2.3/mutate
reject url-http "webhook.url" --set tls.mode=url --set webhook.url=http://10.1.2.3/mutate

section "TLS mode selfManaged (the binary manages its CA, certificate and caBundle)"
# The exact least-privilege rules; rules_of() sorts each list.
SM_ROLE="[{'apiGroups': [''], 'resources': ['secrets'], 'resourceNames': ['$FULL-self-managed-ca'], 'verbs': ['get']}, {'apiGroups': [''], 'resources': ['secrets'], 'verbs': ['create']}]"
SM_CLUSTERROLE="[{'apiGroups': ['admissionregistration.k8s.io'], 'resources': ['mutatingwebhookconfigurations'], 'resourceNames': ['$FULL'], 'verbs': ['get', 'patch']}]"
SM_SUBJECTS="[{'kind': 'ServiceAccount', 'name': '$FULL', 'namespace': '$NS'}]"
SM_ENV="['MIGRATION_INJECTOR_LISTEN','MIGRATION_INJECTOR_ADMIN_LISTEN','MIGRATION_INJECTOR_SELF_MANAGED','MIGRATION_INJECTOR_NAMESPACE','MIGRATION_INJECTOR_POD_NAME','MIGRATION_INJECTOR_SERVICE_NAME','MIGRATION_INJECTOR_CA_SECRET_NAME','MIGRATION_INJECTOR_WEBHOOK_CONFIG_NAME']"
case_ selfmanaged --set tls.mode=selfManaged -- \
  "kinds == sorted(['ClusterRole','ClusterRoleBinding','Deployment','MutatingWebhookConfiguration','PodDisruptionBudget','ResourceQuota','Role','RoleBinding','Service','ServiceAccount'])" \
  "not has('Secret') and not has('Certificate') and not has('Issuer')" \
  "one('Role')['metadata']['name'] == '$FULL' and one('Role')['metadata']['namespace'] == '$NS'" \
  "rules_of('Role') == $SM_ROLE" \
  "one('RoleBinding')['metadata']['name'] == '$FULL' and one('RoleBinding')['metadata']['namespace'] == '$NS'" \
  "one('RoleBinding')['roleRef'] == {'apiGroup': 'rbac.authorization.k8s.io', 'kind': 'Role', 'name': '$FULL'}" \
  "one('RoleBinding')['subjects'] == $SM_SUBJECTS" \
  "one('ClusterRole')['metadata']['name'] == '$FULL' and 'namespace' not in one('ClusterRole')['metadata']" \
  "rules_of('ClusterRole') == $SM_CLUSTERROLE" \
  "one('ClusterRoleBinding')['metadata']['name'] == '$FULL' and 'namespace' not in one('ClusterRoleBinding')['metadata']" \
  "one('ClusterRoleBinding')['roleRef'] == {'apiGroup': 'rbac.authorization.k8s.io', 'kind': 'ClusterRole', 'name': '$FULL'}" \
  "one('ClusterRoleBinding')['subjects'] == $SM_SUBJECTS" \
  "mwc['metadata']['name'] == '$FULL'" \
  "envnames == $SM_ENV" \
  "env['MIGRATION_INJECTOR_SELF_MANAGED'] == 'true'" \
  "envvar['MIGRATION_INJECTOR_NAMESPACE'] == {'name': 'MIGRATION_INJECTOR_NAMESPACE', 'valueFrom': {'fieldRef': {'apiVersion': 'v1', 'fieldPath': 'metadata.namespace'}}}" \
  "env['MIGRATION_INJECTOR_SERVICE_NAME'] == '$FULL' == one('Service')['metadata']['name']" \
  "env['MIGRATION_INJECTOR_CA_SECRET_NAME'] == '$FULL-self-managed-ca'" \
  "env['MIGRATION_INJECTOR_WEBHOOK_CONFIG_NAME'] == '$FULL'" \
  "not any(n.startswith('MIGRATION_INJECTOR_TLS_') for n in envnames)" \
  "'volumes' not in pod and 'volumeMounts' not in ctr" \
  "pod['automountServiceAccountToken'] is True and pod['serviceAccountName'] == '$FULL'" \
  "one('ServiceAccount')['metadata']['name'] == '$FULL' and one('ServiceAccount')['automountServiceAccountToken'] is False" \
  "'caBundle' not in wh['clientConfig'] and 'url' not in wh['clientConfig']" \
  "wh['clientConfig']['service'] == {'name': '$FULL', 'namespace': '$NS', 'path': '/mutate', 'port': 443}" \
  "not (mwc['metadata'].get('annotations') or {})" \
  "ctr['securityContext']['readOnlyRootFilesystem'] is True"
case_ selfmanaged-opts --set tls.mode=selfManaged --set 'tls.selfManaged.extraIPs={10.0.0.5,fd00::1}' \
  --set tls.selfManaged.certDays=30 --set serviceAccount.create=false --set serviceAccount.name=webhook-sa \
  --set fullnameOverride=mi --set config.logLevel=debug -- \
  "env['MIGRATION_INJECTOR_CERT_IPS'] == '10.0.0.5,fd00::1'" \
  "env['MIGRATION_INJECTOR_SELF_MANAGED_CERT_DAYS'] == '30'" \
  "env['MIGRATION_INJECTOR_LOG_LEVEL'] == 'debug'" \
  "env['MIGRATION_INJECTOR_SERVICE_NAME'] == 'mi' and env['MIGRATION_INJECTOR_CA_SECRET_NAME'] == 'mi-self-managed-ca'" \
  "env['MIGRATION_INJECTOR_WEBHOOK_CONFIG_NAME'] == 'mi' == mwc['metadata']['name']" \
  "not has('ServiceAccount') and pod['serviceAccountName'] == 'webhook-sa'" \
  "one('RoleBinding')['subjects'] == one('ClusterRoleBinding')['subjects'] == [{'kind': 'ServiceAccount', 'name': 'webhook-sa', 'namespace': '$NS'}]" \
  "one('Role')['rules'][0]['resourceNames'] == ['mi-self-managed-ca'] and one('ClusterRole')['rules'][0]['resourceNames'] == ['mi']"
case_ selfmanaged-url --set tls.mode=selfManaged --set webhook.url=https://10.1.2.3:8443/mutate --set deployment.enabled=false -- \
  "kinds == sorted(['ClusterRole','ClusterRoleBinding','MutatingWebhookConfiguration','Role','RoleBinding','ServiceAccount'])" \
  "wh['clientConfig'] == {'url': 'https://10.1.2.3:8443/mutate'}" \
  "rules_of('Role') == $SM_ROLE and rules_of('ClusterRole') == $SM_CLUSTERROLE" \
  "one('RoleBinding')['subjects'] == one('ClusterRoleBinding')['subjects'] == $SM_SUBJECTS"
case_ selfmanaged-url-deployment --set tls.mode=selfManaged --set webhook.url=https://mi.example.com/mutate -- \
  "has('Deployment') and has('Service') and 'volumes' not in pod" \
  "wh['clientConfig'] == {'url': 'https://mi.example.com/mutate'}"
reject selfmanaged-cabundle "tls.caBundle is not used with tls.mode=selfManaged" --set tls.mode=selfManaged --set tls.caBundle=QUJD
reject selfmanaged-existing "tls.existingSecret is not used with tls.mode=selfManaged" --set tls.mode=selfManaged --set tls.existingSecret=s
reject selfmanaged-certfile "config.tlsCertFile and config.tlsKeyFile cannot be used with tls.mode=selfManaged" \
  --set tls.mode=selfManaged --set config.tlsCertFile=/x/tls.crt
reject selfmanaged-http "webhook.url" --set tls.mode=selfManaged --set webhook.url=http://10.1.2.3/mutate
reject selfmanaged-bad-ip "extraIPs" --set tls.mode=selfManaged --set 'tls.selfManaged.extraIPs={my-host}'
reject selfmanaged-days "certDays" --set tls.mode=selfManaged --set tls.selfManaged.certDays=0
reject selfmanaged-days-max "certDays" --set tls.mode=selfManaged --set tls.selfManaged.certDays=826
reject selfmanaged-typo "extraIps" --set tls.mode=selfManaged --set 'tls.selfManaged.extraIps={10.0.0.1}'

section "webhook kind toggles"
for kind in deployments:deployments statefulSets:statefulsets daemonSets:daemonsets replicaSets:replicasets \
            jobs:jobs cronJobs:cronjobs pods:pods; do
  key=${kind%%:*} res=${kind#*:}
  case_ "kind-off-$key" "${ALL_ON[@]}" --set "webhook.kinds.$key=false" -- \
    "resources == $ALL_RES - {'$res'}"
done
OFF=()
for k in deployments statefulSets daemonSets replicaSets jobs cronJobs; do OFF+=(--set "webhook.kinds.$k=false"); done
case_ kind-only-pods "${OFF[@]}" --set webhook.kinds.pods=true -- \
  "resources == {'pods'} and rule('pods')['apiVersions'] == ['v1'] and rule('pods')['apiGroups'] == ['']"
reject kinds-none "enable at least one kind" "${OFF[@]}" --set webhook.kinds.pods=false

section "namespace selection"
case_ opt-in --set webhook.namespaceSelectorMode=optIn -- \
  "nsexpr['migrations.io/injection'] == ('In', ['enabled'])" \
  "nsexpr['kubernetes.io/metadata.name'] == ('NotIn', ['$NS', 'kube-system', 'kube-public', 'kube-node-lease', 'cert-manager'])"
case_ exclude-more --set 'webhook.excludeNamespaces={kube-public,kube-system,monitoring}' -- \
  "nsexpr['kubernetes.io/metadata.name'] == ('NotIn', ['$NS', 'kube-system', 'kube-public', 'kube-node-lease', 'cert-manager', 'monitoring'])" \
  "nsexpr['migrations.io/injection'] == ('NotIn', ['disabled'])"
# cert-manager is only excluded in the mode whose certificate depends on it.
case_ exclude-helm-mode --set tls.mode=helm -- \
  "nsexpr['kubernetes.io/metadata.name'] == ('NotIn', ['$NS', 'kube-system', 'kube-public', 'kube-node-lease'])"
case_ object-selector --set webhook.objectSelector.matchLabels.team=a -- \
  "wh['objectSelector'] == {'matchLabels': {'team': 'a'}, **$SELF_EXCLUSION}"
case_ object-selector-exprs --set 'webhook.objectSelector.matchExpressions[0].key=tier' \
  --set 'webhook.objectSelector.matchExpressions[0].operator=Exists' -- \
  "wh['objectSelector'] == {'matchExpressions': [{'key': 'tier', 'operator': 'Exists'}] + ${SELF_EXCLUSION}['matchExpressions']}"
reject ns-mode-typo "namespaceSelectorMode" --set webhook.namespaceSelectorMode=optin

section "failurePolicy and timeoutSeconds"
case_ policy-ignore --set webhook.failurePolicy=Ignore --set webhook.timeoutSeconds=5 --set webhook.reinvocationPolicy=Never -- \
  "wh['failurePolicy'] == 'Ignore' and wh['timeoutSeconds'] == 5 and wh['reinvocationPolicy'] == 'Never'"
reject policy-typo "failurePolicy" --set webhook.failurePolicy=Fial
reject timeout-too-big "timeoutSeconds" --set webhook.timeoutSeconds=31

section "matchConditions only where the API server supports them (>= 1.30)"
case_ mc-1.29 --kube-version 1.29.9 -- "'matchConditions' not in wh"
case_ mc-1.30 --kube-version 1.30.0 -- "wh['matchConditions'][0]['name'] == 'has-migrations-image-annotation'"
case_ mc-vendor --kube-version v1.31.2-eks-1234 -- "'matchConditions' in wh"
case_ mc-1.20 --kube-version 1.20.2 -- "'matchConditions' not in wh"
case_ mc-1.20-vap --kube-version 1.20.2 --api-versions admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy -- \
  "'matchConditions' in wh"
case_ mc-1.29-groupversion --kube-version 1.29.0 --api-versions admissionregistration.k8s.io/v1 -- \
  "'matchConditions' not in wh"
case_ mc-disabled --set webhook.matchConditions=disabled -- "'matchConditions' not in wh"
case_ mc-forced --kube-version 1.28.0 --set webhook.matchConditions=enabled -- "'matchConditions' in wh"
check mc-1.30 \
  "'object != null' in wh['matchConditions'][0]['expression'] and 'oldObject != null' in wh['matchConditions'][0]['expression']" \
  "wh['matchConditions'][0]['expression'].count(\"'migrations.io/image' in\") == 6" \
  "'spec.jobTemplate.spec.template.metadata.annotations' in wh['matchConditions'][0]['expression']"

section "PodDisruptionBudget"
case_ pdb-1.20 --kube-version 1.20.2 -- "one('PodDisruptionBudget')['apiVersion'] == 'policy/v1beta1'"
case_ pdb-1.21 --kube-version 1.21.0 -- "one('PodDisruptionBudget')['apiVersion'] == 'policy/v1'"
case_ pdb-discovered --kube-version 1.20.2 --api-versions policy/v1/PodDisruptionBudget -- \
  "one('PodDisruptionBudget')['apiVersion'] == 'policy/v1'"
case_ pdb-min --set podDisruptionBudget.maxUnavailable=null --set podDisruptionBudget.minAvailable=50% -- \
  "one('PodDisruptionBudget')['spec']['minAvailable'] == '50%' and 'maxUnavailable' not in one('PodDisruptionBudget')['spec']"
case_ pdb-off --set podDisruptionBudget.enabled=false -- "not has('PodDisruptionBudget')"
reject pdb-both "only one of maxUnavailable and minAvailable" --set podDisruptionBudget.minAvailable=1

section "config values become env vars"
mkdir -p "$WORK/values"
cat >"$WORK/values/config.values" <<'VALUES'
config:
  listen: "[::]:9443"
  adminListen: "127.0.0.1:9090"
  certReloadInterval: 30
  maxBodyBytes: 10485760
  requestTimeoutSeconds: 7
  shutdownGraceSeconds: 40
  shutdownDelaySeconds: 3
  logFormat: json
  logLevel: migration_injector=debug,info
  defaultSecret: db-config
  defaultVolumeName: db-config-vol
  defaultEnv: prod
  defaultMountPath: /etc/db
  defaultConfigFile: project.hcl
  defaultArgs: ["migrate", "apply", "--env", "prod"]
  defaultCommand: ["/atlas"]
  defaultPullPolicy: IfNotPresent
  defaultContainerName: db-migrate
  defaultPosition: first
  defaultCpuRequest: 100m
  defaultCpuLimit: 1
  defaultMemoryRequest: 64Mi
  defaultMemoryLimit: 256Mi
  securityContext: {}
  allowedImagePrefixes: ["ghcr.io/acme/", "registry.acme.io/"]
deployment:
  extraEnv:
    - name: RUST_BACKTRACE
      value: "1"
VALUES
case_ config -f "$WORK/values/config.values" -- \
  "env['MIGRATION_INJECTOR_LISTEN'] == '[::]:9443' and env['MIGRATION_INJECTOR_ADMIN_LISTEN'] == '127.0.0.1:9090'" \
  "env['MIGRATION_INJECTOR_CERT_RELOAD_INTERVAL'] == '30'" \
  "env['MIGRATION_INJECTOR_MAX_BODY_BYTES'] == '10485760'" \
  "env['MIGRATION_INJECTOR_REQUEST_TIMEOUT_SECONDS'] == '7'" \
  "env['MIGRATION_INJECTOR_SHUTDOWN_GRACE_SECONDS'] == '40' and env['MIGRATION_INJECTOR_SHUTDOWN_DELAY_SECONDS'] == '3' and pod['terminationGracePeriodSeconds'] == 48" \
  "env['MIGRATION_INJECTOR_LOG_FORMAT'] == 'json' and env['MIGRATION_INJECTOR_LOG_LEVEL'] == 'migration_injector=debug,info'" \
  "env['MIGRATION_INJECTOR_DEFAULT_SECRET'] == 'db-config' and env['MIGRATION_INJECTOR_DEFAULT_VOLUME_NAME'] == 'db-config-vol'" \
  "env['MIGRATION_INJECTOR_DEFAULT_ENV'] == 'prod' and env['MIGRATION_INJECTOR_DEFAULT_MOUNT_PATH'] == '/etc/db'" \
  "env['MIGRATION_INJECTOR_DEFAULT_CONFIG_FILE'] == 'project.hcl'" \
  "env['MIGRATION_INJECTOR_DEFAULT_ARGS'] == '[\"migrate\",\"apply\",\"--env\",\"prod\"]'" \
  "env['MIGRATION_INJECTOR_DEFAULT_COMMAND'] == '[\"/atlas\"]'" \
  "env['MIGRATION_INJECTOR_DEFAULT_PULL_POLICY'] == 'IfNotPresent' and env['MIGRATION_INJECTOR_DEFAULT_POSITION'] == 'first'" \
  "env['MIGRATION_INJECTOR_DEFAULT_CONTAINER_NAME'] == 'db-migrate'" \
  "env['MIGRATION_INJECTOR_DEFAULT_CPU_REQUEST'] == '100m' and env['MIGRATION_INJECTOR_DEFAULT_CPU_LIMIT'] == '1'" \
  "env['MIGRATION_INJECTOR_DEFAULT_MEMORY_REQUEST'] == '64Mi' and env['MIGRATION_INJECTOR_DEFAULT_MEMORY_LIMIT'] == '256Mi'" \
  "env['MIGRATION_INJECTOR_SECURITY_CONTEXT'] == '{}'" \
  "env['MIGRATION_INJECTOR_ALLOWED_IMAGE_PREFIXES'] == 'ghcr.io/acme/,registry.acme.io/'" \
  "envnames[-1] == 'RUST_BACKTRACE' and len(envnames) == len(set(envnames)) == 28" \
  "all(isinstance(v, str) for v in env.values())"
case_ config-set --set config.maxBodyBytes=6291456 --set config.securityContext.runAsNonRoot=true -- \
  "env['MIGRATION_INJECTOR_MAX_BODY_BYTES'] == '6291456'" \
  "env['MIGRATION_INJECTOR_SECURITY_CONTEXT'] == '{\"runAsNonRoot\":true}'"
# The settings that once had no value (issue 16): each one reaches its env var.
case_ config-limits --set config.memoryBudgetBytes=67108864 --set config.maxConnections=512 \
  --set config.idleTimeoutSeconds=150 --set config.maxConcurrentStreams=64 \
  --set config.caBundleCheckInterval=30 --set config.defaultLockTimeout=5m \
  --set config.defaultDir=atlas://app -- \
  "env['MIGRATION_INJECTOR_MEMORY_BUDGET_BYTES'] == '67108864' and env['MIGRATION_INJECTOR_MAX_CONNECTIONS'] == '512'" \
  "env['MIGRATION_INJECTOR_IDLE_TIMEOUT_SECONDS'] == '150' and env['MIGRATION_INJECTOR_MAX_CONCURRENT_STREAMS'] == '64'" \
  "env['MIGRATION_INJECTOR_CA_BUNDLE_CHECK_INTERVAL'] == '30'" \
  "env['MIGRATION_INJECTOR_DEFAULT_LOCK_TIMEOUT'] == '5m' and env['MIGRATION_INJECTOR_DEFAULT_DIR'] == 'atlas://app'" \
  "len(envnames) == len(set(envnames)) == 11"
case_ selfmanaged-interval --set tls.mode=selfManaged --set config.caBundleCheckInterval=15 -- \
  "env['MIGRATION_INJECTOR_SELF_MANAGED'] == 'true' and env['MIGRATION_INJECTOR_CA_BUNDLE_CHECK_INTERVAL'] == '15'"
reject config-bad-streams "maxConcurrentStreams" --set config.maxConcurrentStreams=1001
reject config-bad-dir "defaultDir" --set config.defaultDir=/migrations
reject config-bad-format "logFormat" --set config.logFormat=xml
reject config-bad-position "defaultPosition" --set config.defaultPosition=middle
reject config-bad-int "maxBodyBytes" --set config.maxBodyBytes=lots

section "schema rejects typos and wrong types"
reject typo-top "deploymnet" --set deploymnet.replicas=3
reject typo-config "logFromat" --set config.logFromat=json
reject typo-kinds "deploymentz" --set webhook.kinds.deploymentz=true
reject typo-tls-mode "tls.mode" --set tls.mode=certmanager
reject typo-nested "replcias" --set deployment.replcias=3
reject wrong-type "replicas" --set deployment.replicas=two
reject typo-probe "periodSecond" --set deployment.livenessProbe.periodSecond=3

section "defaults for clusters without matchConditions (< 1.30): priority, spread, self-exclusion"
# The chart's own objects carry migrations.io/injection=disabled, which the webhook's
# objectSelector excludes: no namespace label needed (Kubernetes 1.20 sets none), so the webhook
# never blocks its own upgrade. The label is not a selector label (selectors are immutable).
for name in default helm selfmanaged; do
  check "$name" \
    "all(d['metadata']['labels'].get('migrations.io/injection') == 'disabled' for d in docs)" \
    "dep['spec']['template']['metadata']['labels']['migrations.io/injection'] == 'disabled'" \
    "'migrations.io/injection' not in dep['spec']['selector']['matchLabels']" \
    "wh['objectSelector'] == $SELF_EXCLUSION"
done
case_ self-label-kept --set 'commonLabels.migrations\.io/injection=enabled' --set commonLabels.team=a -- \
  "all(d['metadata']['labels'].get('migrations.io/injection') == 'disabled' for d in docs)" \
  "all(d['metadata']['labels'].get('team') == 'a' for d in docs)"
# Scheduling: system-cluster-critical, and only soft constraints, so that 2 replicas still
# schedule on a single node or in a single zone.
QUOTA_SCOPE="{'matchExpressions': [{'operator': 'In', 'scopeName': 'PriorityClass', 'values': ['system-cluster-critical']}]}"
check default \
  "pod['priorityClassName'] == 'system-cluster-critical'" \
  "one('ResourceQuota')['metadata']['name'] == '$FULL-critical-pods' and one('ResourceQuota')['metadata']['namespace'] == '$NS'" \
  "one('ResourceQuota')['spec'] == {'hard': {'pods': '50'}, 'scopeSelector': $QUOTA_SCOPE}" \
  "pod['topologySpreadConstraints'] == [{'maxSkew': 1, 'topologyKey': 'topology.kubernetes.io/zone', 'whenUnsatisfiable': 'ScheduleAnyway', 'labelSelector': {'matchLabels': dep['spec']['selector']['matchLabels']}}]" \
  "pod['affinity']['podAntiAffinity']['preferredDuringSchedulingIgnoredDuringExecution'][0]['podAffinityTerm']['labelSelector'] == {'matchLabels': dep['spec']['selector']['matchLabels']}" \
  "'requiredDuringSchedulingIgnoredDuringExecution' not in pod['affinity']['podAntiAffinity']" \
  "all(c['whenUnsatisfiable'] == 'ScheduleAnyway' for c in pod['topologySpreadConstraints'])"
# Host networking (cert-manager's webhook has the same): the node's network namespace, DNS that
# still resolves Services, and the ports the API server will call on the node.
check default "'hostNetwork' not in pod and 'dnsPolicy' not in pod"
case_ host-network --set deployment.hostNetwork=true --set containerPorts.webhook=9443 --set containerPorts.admin=9080 \
  --set deployment.podAntiAffinity=hard -- \
  "pod['hostNetwork'] is True and pod['dnsPolicy'] == 'ClusterFirstWithHostNet'" \
  "{p['name']: p['containerPort'] for p in ctr['ports']} == {'webhook': 9443, 'admin': 9080}" \
  "'requiredDuringSchedulingIgnoredDuringExecution' in pod['affinity']['podAntiAffinity']"
reject host-network-string 'hostNetwork' --set-string deployment.hostNetwork=yes
case_ priority-none --set deployment.priorityClassName= -- \
  "'priorityClassName' not in pod and not has('ResourceQuota')"
case_ priority-own --set deployment.priorityClassName=platform-high -- \
  "pod['priorityClassName'] == 'platform-high' and not has('ResourceQuota')"
case_ priority-node --set deployment.priorityClassName=system-node-critical -- \
  "one('ResourceQuota')['spec']['scopeSelector']['matchExpressions'][0]['values'] == ['system-node-critical']"
case_ quota-off --set deployment.resourceQuota=false -- \
  "pod['priorityClassName'] == 'system-cluster-critical' and not has('ResourceQuota')"
case_ zone-spread-none --set deployment.zoneSpread=none -- "'topologySpreadConstraints' not in pod"
case_ zone-spread-own --set 'deployment.topologySpreadConstraints[0].maxSkew=2' \
  --set 'deployment.topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname' \
  --set 'deployment.topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule' -- \
  "[c['topologyKey'] for c in pod['topologySpreadConstraints']] == ['kubernetes.io/hostname']"
reject zone-spread-typo "zoneSpread" --set deployment.zoneSpread=hard

section "optional features"
case_ optional --set deployment.priorityClassName=system-cluster-critical \
  --set deployment.nodeSelector.kubernetes\\.io/os=linux \
  --set 'deployment.tolerations[0].key=dedicated' --set 'deployment.tolerations[0].operator=Exists' \
  --set serviceMonitor.enabled=true --set serviceMonitor.labels.release=prom \
  --set networkPolicy.enabled=true --set deployment.replicas=3 --set deployment.podAntiAffinity=hard -- \
  "pod['priorityClassName'] == 'system-cluster-critical'" \
  "pod['nodeSelector'] == {'kubernetes.io/os': 'linux'}" \
  "pod['tolerations'] == [{'key': 'dedicated', 'operator': 'Exists'}]" \
  "dep['spec']['replicas'] == 3" \
  "'requiredDuringSchedulingIgnoredDuringExecution' in pod['affinity']['podAntiAffinity']" \
  "one('ServiceMonitor')['apiVersion'] == 'monitoring.coreos.com/v1'" \
  "one('ServiceMonitor')['spec']['endpoints'] == [{'port': 'admin', 'path': '/metrics', 'scheme': 'http', 'interval': '30s'}]" \
  "one('ServiceMonitor')['metadata']['labels']['release'] == 'prom'" \
  "one('NetworkPolicy')['spec']['policyTypes'] == ['Ingress']" \
  "[sorted(p['port'] for p in r['ports']) for r in one('NetworkPolicy')['spec']['ingress']] == [[8080, 8443]]" \
  "'from' not in one('NetworkPolicy')['spec']['ingress'][0]"
case_ no-affinity --set deployment.podAntiAffinity=none -- "'affinity' not in pod"
case_ no-sa --set serviceAccount.create=false --set serviceAccount.name=existing -- \
  "not has('ServiceAccount') and pod['serviceAccountName'] == 'existing'"
case_ digest --set image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef -- \
  "ctr['image'].endswith('@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef')"
case_ no-deployment --set deployment.enabled=false --set serviceMonitor.enabled=true --set networkPolicy.enabled=true -- \
  "kinds == sorted(['Certificate','Certificate','Issuer','Issuer','MutatingWebhookConfiguration'])"

section "run-once mode: the controller, its RBAC, the CRD, the pods webhook (controller.enabled)"
CTL=$FULL-controller
# The contract's RBAC (CONTRACT-18): no Secrets, nothing else.
CTL_RULES="[{'apiGroups': [''], 'resources': ['pods'], 'verbs': ['get', 'list', 'patch', 'watch']}, {'apiGroups': ['migrations.io'], 'resources': ['migrationruns'], 'verbs': ['create', 'get', 'list', 'patch', 'update', 'watch']}, {'apiGroups': ['migrations.io'], 'resources': ['migrationruns/status'], 'verbs': ['get', 'patch', 'update']}, {'apiGroups': ['batch'], 'resources': ['jobs'], 'verbs': ['create', 'delete', 'get', 'list', 'watch']}, {'apiGroups': ['apps'], 'resources': ['replicasets'], 'verbs': ['get']}, {'apiGroups': ['events.k8s.io'], 'resources': ['events'], 'verbs': ['create', 'patch']}]"
SORTED="[{k: sorted(v) if isinstance(v, list) else v for k, v in r.items()} for r in"
case_ controller --set controller.enabled=true --set config.runMode=once -- \
  "ctl['metadata']['name'] == '$CTL' and ctl['spec']['replicas'] == 1" \
  "ctlctr['args'] == ['controller'] and ctlctr['image'] == ctr['image'] and ctlctr['imagePullPolicy'] == ctr['imagePullPolicy']" \
  "ctlpod['serviceAccountName'] == '$CTL' and ctlpod['automountServiceAccountToken'] is True" \
  "ctlctr['securityContext'] == ctr['securityContext'] and ctlpod['securityContext'] == pod['securityContext']" \
  "ctl['spec']['template']['metadata']['labels']['migrations.io/injection'] == 'disabled'" \
  "ctl['spec']['selector']['matchLabels'] != dep['spec']['selector']['matchLabels']" \
  "not set(dep['spec']['selector']['matchLabels'].items()) <= set(ctl['spec']['template']['metadata']['labels'].items())" \
  "ctlenv['MIGRATION_INJECTOR_LEASE_NAME'] == '$CTL' and ctlenv['MIGRATION_INJECTOR_ADMIN_LISTEN'] == '0.0.0.0:8081'" \
  "[e['valueFrom']['fieldRef']['fieldPath'] for e in ctlctr['env'] if 'valueFrom' in e] == ['metadata.namespace', 'metadata.name']" \
  "'MIGRATION_INJECTOR_MAX_ATTEMPTS' not in ctlenv and 'MIGRATION_INJECTOR_JOB_DEADLINE_SECONDS' not in ctlenv" \
  "ctlctr['livenessProbe']['httpGet']['path'] == '/healthz' and ctlctr['readinessProbe']['httpGet']['path'] == '/readyz'" \
  "ctlctr['resources'] == {'requests': {'cpu': '20m', 'memory': '32Mi'}, 'limits': {'memory': '128Mi'}}" \
  "env['MIGRATION_INJECTOR_RUN_MODE'] == 'once' and env['MIGRATION_INJECTOR_WAITER_IMAGE'] == ctr['image']" \
  "env['MIGRATION_INJECTOR_RUN_STATUS_CACHE'] == 'true' and pod['automountServiceAccountToken'] is True" \
  "$SORTED named('ClusterRole', '$CTL')['rules']] == $CTL_RULES" \
  "named('ClusterRoleBinding', '$CTL')['subjects'] == [{'kind': 'ServiceAccount', 'name': '$CTL', 'namespace': '$NS'}]" \
  "$SORTED named('Role', '$CTL')['rules']] == [{'apiGroups': ['coordination.k8s.io'], 'resources': ['leases'], 'resourceNames': ['$CTL'], 'verbs': ['get', 'update']}, {'apiGroups': ['coordination.k8s.io'], 'resources': ['leases'], 'verbs': ['create']}]" \
  "named('RoleBinding', '$CTL')['subjects'][0]['name'] == '$CTL'" \
  "named('ClusterRole', '$FULL-runs')['rules'] == [{'apiGroups': ['migrations.io'], 'resources': ['migrationruns'], 'verbs': ['get', 'list', 'watch']}]" \
  "named('ClusterRoleBinding', '$FULL-runs')['subjects'] == [{'kind': 'ServiceAccount', 'name': '$FULL', 'namespace': '$NS'}]" \
  "not any('secrets' in r.get('resources', []) for k in ('Role', 'ClusterRole') for o in all_of(k) for r in o['rules'])" \
  "named('ServiceAccount', '$CTL')['automountServiceAccountToken'] is False" \
  "named('Service', '$CTL')['spec']['selector'] == ctl['spec']['selector']['matchLabels']" \
  "one('Service') if False else named('Service', '$FULL')['spec']['selector'] == dep['spec']['selector']['matchLabels']" \
  "one('CustomResourceDefinition')['metadata']['name'] == 'migrationruns.migrations.io'" \
  "one('CustomResourceDefinition')['metadata']['annotations'] == {'helm.sh/resource-policy': 'keep'}" \
  "one('CustomResourceDefinition')['spec']['names']['shortNames'] == ['mrun']" \
  "len(whs) == 2 and whs[0]['name'] == 'inject.migrations.io' and pwh['name'] == 'pods.inject.migrations.io'" \
  "pwh['clientConfig']['service'] == dict(wh['clientConfig']['service'], path='/mutate-pods')" \
  "pwh['rules'] == [{'operations': ['CREATE'], 'apiGroups': [''], 'apiVersions': ['v1'], 'resources': ['pods'], 'scope': 'Namespaced'}]" \
  "pwh['failurePolicy'] == 'Ignore' and pwh['sideEffects'] == 'None' and pwh['timeoutSeconds'] <= 5" \
  "pwh['namespaceSelector'] == wh['namespaceSelector'] and 'matchConditions' not in pwh" \
  "pwh['objectSelector']['matchExpressions'][0] == {'key': 'migrations.io/fingerprint', 'operator': 'Exists'}" \
  "'caBundle' not in pwh['clientConfig'] and mwc['metadata']['annotations']['cert-manager.io/inject-ca-from'] == '$NS/$FULL-tls'"
case_ controller-helm --set controller.enabled=true --set tls.mode=helm --set controller.replicas=2 \
  --set controller.maxAttempts=3 --set controller.jobDeadlineSeconds=600 --set controller.leaseName=my-lease \
  --set config.logFormat=json --set image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef -- \
  "pwh['clientConfig']['caBundle'] == wh['clientConfig']['caBundle']" \
  "ctl['spec']['replicas'] == 2 and ctlenv['MIGRATION_INJECTOR_MAX_ATTEMPTS'] == '3' and ctlenv['MIGRATION_INJECTOR_JOB_DEADLINE_SECONDS'] == '600'" \
  "ctlenv['MIGRATION_INJECTOR_LEASE_NAME'] == 'my-lease' and named('Role', '$CTL')['rules'][0]['resourceNames'] == ['my-lease']" \
  "ctlenv['MIGRATION_INJECTOR_LOG_FORMAT'] == 'json'" \
  "env['MIGRATION_INJECTOR_WAITER_IMAGE'].endswith('@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef') and ctlctr['image'] == env['MIGRATION_INJECTOR_WAITER_IMAGE']" \
  "'MIGRATION_INJECTOR_RUN_MODE' not in env"
case_ controller-selfmanaged --set controller.enabled=true --set tls.mode=selfManaged -- \
  "len(whs) == 2 and all('caBundle' not in w['clientConfig'] for w in whs)" \
  "named('ClusterRole', '$FULL')['rules'][0]['resources'] == ['mutatingwebhookconfigurations']" \
  "has('Role') and named('ClusterRole', '$FULL-runs')"
case_ controller-url --set controller.enabled=true --set tls.mode=url --set webhook.url=https://10.1.2.3:8443/mutate --set tls.caBundle=QUJD --set deployment.enabled=false -- \
  "pwh['clientConfig'] == {'url': 'https://10.1.2.3:8443/mutate-pods', 'caBundle': 'QUJD'}"
case_ controller-no-crd --set controller.enabled=true --set crds.install=false \
  --set networkPolicy.enabled=true --set serviceMonitor.enabled=true -- \
  "not has('CustomResourceDefinition')" \
  "named('NetworkPolicy', '$CTL')['spec']['podSelector']['matchLabels'] == ctl['spec']['selector']['matchLabels']" \
  "[p['port'] for p in named('NetworkPolicy', '$CTL')['spec']['ingress'][0]['ports']] == [8081]" \
  "named('ServiceMonitor', '$CTL')['spec']['selector']['matchLabels'] == ctl['spec']['selector']['matchLabels']"
case_ runmode-every-pod --set config.runMode=every-pod -- \
  "env['MIGRATION_INJECTOR_RUN_MODE'] == 'every-pod' and 'MIGRATION_INJECTOR_WAITER_IMAGE' not in env" \
  "len(whs) == 1 and ctl is None and not has('CustomResourceDefinition')"
case_ controller-alerts --set controller.enabled=true --set metrics.prometheusRule.enabled=true \
  --set metrics.prometheusRule.podsWaitingMinutes=30 --set metrics.dashboard.enabled=true -- \
  "[r['alert'] for r in one('PrometheusRule')['spec']['groups'][0]['rules']] == ['MigrationRunFailed', 'MigrationPodsWaiting', 'MigrationInjectorDenying', 'MigrationInjectorOverloaded', 'MigrationInjectorWebhookFailing', 'MigrationInjectorCertificateExpiring']" \
  "'migration_injector_runs_failed_total' in one('PrometheusRule')['spec']['groups'][0]['rules'][0]['expr']" \
  "one('PrometheusRule')['spec']['groups'][0]['rules'][1]['for'] == '30m'" \
  "'name=\"inject.migrations.io\"' in one('PrometheusRule')['spec']['groups'][0]['rules'][4]['expr']" \
  "one('ConfigMap')['metadata']['labels']['grafana_dashboard'] == '1'" \
  "len(__import__('json').loads(one('ConfigMap')['data']['migration-injector.json'])['panels']) == 8"
case_ alerts-without-controller --set metrics.prometheusRule.enabled=true -- \
  "[r['alert'] for r in one('PrometheusRule')['spec']['groups'][0]['rules']][0] == 'MigrationInjectorDenying'"
reject controller-once-without "config.runMode=once needs controller.enabled" --set config.runMode=once
reject controller-bad-mode "runMode" --set config.runMode=always
reject controller-bad-url "must end with /mutate" --set controller.enabled=true --set tls.mode=url --set webhook.url=https://10.1.2.3:8443/hook
reject controller-typo "maxAttempt" --set controller.maxAttempt=3
reject controller-bad-attempts "maxAttempts" --set controller.maxAttempts=0

section "RBAC only in selfManaged and tls.manageCaBundle renders"
n_other=0 n_sm=0 n_managed=0 n_ctl=0
for f in "$WORK"/*.yaml; do
  n=$(basename "$f" .yaml)
  [ -s "$f" ] || continue
  case $n in
    selfmanaged*)
      n_sm=$((n_sm + 1))
      python3 "$CHECK" "$f" "all(has(k) for k in ('Role','RoleBinding','ClusterRole','ClusterRoleBinding'))" >/dev/null 2>&1 \
        || fail "RBAC missing in selfManaged render $n" ;;
    controller*)
      # The controller's ClusterRole/Role, the webhook's MigrationRuns read ClusterRole (checked above).
      n_ctl=$((n_ctl + 1))
      python3 "$CHECK" "$f" "named('ClusterRole', '$FULL-controller') and named('ClusterRole', '$FULL-runs')" >/dev/null 2>&1 \
        || fail "controller render $n: want the controller's and the runs ClusterRoles" ;;
    *-managed)
      # Only the ClusterRole for the webhook configuration (checked in the cases above).
      n_managed=$((n_managed + 1))
      python3 "$CHECK" "$f" "has('ClusterRole') and not has('Role')" >/dev/null 2>&1 \
        || fail "tls.manageCaBundle render $n: want the ClusterRole only" ;;
    *)
      n_other=$((n_other + 1))
      python3 "$CHECK" "$f" "$RBAC_ABSENT" >/dev/null 2>&1 || fail "RBAC object in render $n" ;;
  esac
done
pass "no Role/RoleBinding/ClusterRole/ClusterRoleBinding in $n_other renders of other modes, all four in $n_sm selfManaged renders, the ClusterRole alone in $n_managed tls.manageCaBundle renders, the run-once RBAC in $n_ctl controller renders"

section "tests/helm/render-for-apiserver.sh (v1.20 API server)"
if HELM=$HELM "$ROOT/tests/helm/render-for-apiserver.sh" "$WORK/apiserver.yaml" \
    --set webhook.url=https://127.0.0.1:18443/mutate --set tls.caBundle=QUJD >/dev/null 2>"$WORK/apiserver.err"; then
  check apiserver \
    "docs[0]['kind'] == 'Namespace' and docs[0]['metadata']['labels']['kubernetes.io/metadata.name'] == 'migration-injector'" \
    "wh['clientConfig'] == {'url': 'https://127.0.0.1:18443/mutate', 'caBundle': 'QUJD'}" \
    "'matchConditions' not in wh" \
    "one('PodDisruptionBudget')['apiVersion'] == 'policy/v1beta1'" \
    "not has('Certificate') and not has('Issuer') and not has('Secret')"
else
  fail "render-for-apiserver.sh: $(cat "$WORK/apiserver.err")"
fi
if TLS_MODE=selfManaged HELM=$HELM "$ROOT/tests/helm/render-for-apiserver.sh" "$WORK/apiserver-sm.yaml" \
    --set webhook.url=https://127.0.0.1:18443/mutate --set deployment.enabled=false >/dev/null 2>"$WORK/apiserver-sm.err"; then
  check apiserver-sm \
    "docs[0]['kind'] == 'Namespace' and docs[0]['metadata']['labels']['kubernetes.io/metadata.name'] == 'migration-injector'" \
    "wh['clientConfig'] == {'url': 'https://127.0.0.1:18443/mutate'}" \
    "'matchConditions' not in wh" \
    "kinds == sorted(['Namespace','ClusterRole','ClusterRoleBinding','MutatingWebhookConfiguration','Role','RoleBinding','ServiceAccount'])" \
    "one('Role')['metadata']['namespace'] == 'migration-injector' and one('Role')['rules'][0]['resourceNames'] == ['migration-injector-self-managed-ca']" \
    "one('ClusterRole')['rules'][0]['resourceNames'] == ['migration-injector'] == [mwc['metadata']['name']]" \
    "all(d['apiVersion'] == 'rbac.authorization.k8s.io/v1' for d in docs if d['kind'].endswith(('Role', 'RoleBinding')))"
else
  fail "render-for-apiserver.sh TLS_MODE=selfManaged: $(cat "$WORK/apiserver-sm.err")"
fi
if TLS_MODE=bogus HELM=$HELM "$ROOT/tests/helm/render-for-apiserver.sh" "$WORK/apiserver-bogus.out" >/dev/null 2>&1; then
  fail "render-for-apiserver.sh accepted TLS_MODE=bogus"
else
  pass "render-for-apiserver.sh rejects TLS_MODE=bogus"
fi

section "manifests/install.yaml is up to date"
if HELM=$HELM "$ROOT/scripts/render-manifests.sh" "$WORK/install.yaml" 2>"$WORK/install.err"; then
  if diff -u "$ROOT/manifests/install.yaml" "$WORK/install.yaml" >"$WORK/install.diff"; then
    pass "manifests/install.yaml matches scripts/render-manifests.sh"
  else
    fail "manifests/install.yaml is stale; run scripts/render-manifests.sh. Diff:
$(head -40 "$WORK/install.diff")"
  fi
  check install \
    "docs[0]['kind'] == 'Namespace'" \
    "has('Certificate') and 'cert-manager.io/inject-ca-from' in mwc['metadata']['annotations']" \
    "'matchConditions' in wh and one('PodDisruptionBudget')['apiVersion'] == 'policy/v1'"
else
  fail "render-manifests.sh: $(cat "$WORK/install.err")"
fi

section "values.schema.json: additionalProperties false at every level; README documents every value"
if python3 - "$CHART" <<'PY'
import json, re, sys, yaml
chart = sys.argv[1]
schema = json.load(open(f"{chart}/values.schema.json"))
bad = []
def walk(node, path):
    if isinstance(node, dict):
        if "properties" in node and node.get("additionalProperties") is not False:
            bad.append(path or "(root)")
        for k, v in node.get("properties", {}).items():
            walk(v, f"{path}.{k}" if path else k)
        if isinstance(node.get("items"), dict):
            walk(node["items"], path + "[]")
walk(schema, "")
values = yaml.safe_load(open(f"{chart}/values.yaml"))
readme = open(f"{chart}/README.md").read()
documented = set(re.findall(r"^\|\s*`([^`]+)`", readme, re.M))
missing_schema, missing_doc = [], []
def leaves(node, sch, path):
    props = (sch or {}).get("properties")
    if isinstance(node, dict) and node and props is not None:
        for k, v in node.items():
            if k not in props:
                missing_schema.append(f"{path}{k}")
            leaves(v, props.get(k), f"{path}{k}.")
    else:
        key = path[:-1]
        if key not in documented:
            missing_doc.append(key)
leaves(values, schema, "")
for name, lst in (("objects without additionalProperties: false", bad),
                  ("values.yaml keys not in the schema", missing_schema),
                  ("values not documented in README.md (table row `key`)", missing_doc)):
    if lst:
        print(f"    FAIL {name}: {lst}")
sys.exit(1 if bad or missing_schema or missing_doc else 0)
PY
then pass "schema strict, every value in the schema and README"; else fail "schema/README coverage"; fi

section "NOTES.txt"
cp -r "$CHART" "$WORK/notes-chart"
{ echo 'notes: |'; sed 's/^/  /' "$CHART/templates/NOTES.txt"; } >"$WORK/notes-chart/templates/zz-notes.yaml"
if "$HELM" template "$REL" "$WORK/notes-chart" --namespace "$NS" --kube-version 1.20.2 -s templates/zz-notes.yaml >"$WORK/notes.out" 2>&1 \
   && grep -q "migrations.io/image: " "$WORK/notes.out" && grep -q "kubectl annotate deployment" "$WORK/notes.out" \
   && grep -q "kubectl label namespace $NS kubernetes.io/metadata.name=$NS" "$WORK/notes.out"; then
  pass "NOTES.txt renders and shows how to annotate a Deployment"
else
  fail "NOTES.txt: $(head -20 "$WORK/notes.out")"
fi
if "$HELM" template "$REL" "$WORK/notes-chart" --namespace "$NS" --set tls.mode=selfManaged -s templates/zz-notes.yaml >"$WORK/notes-sm.out" 2>&1 \
   && grep -q "TLS mode: selfManaged" "$WORK/notes-sm.out" && grep -q "CA Secret" "$WORK/notes-sm.out" \
   && grep -q "$FULL-self-managed-ca in $NS" "$WORK/notes-sm.out" \
   && grep -q "kubectl get mutatingwebhookconfiguration $FULL " "$WORK/notes-sm.out"; then
  pass "NOTES.txt in selfManaged mode names the CA Secret and the webhook configuration"
else
  fail "NOTES.txt (selfManaged): $(head -30 "$WORK/notes-sm.out")"
fi

section "matchConditions CEL evaluated with cel-cpp"
# cel-expr-python (Google's cel-cpp) is a native wheel, cached per Python version. `pip install
# --target` needs no venv and is not blocked by PEP 668 on Debian's python3.
PYVER=$(python3 -c 'import sys; print("%d%d" % sys.version_info[:2])')
CEL_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/migration-injector-tools/cel-py$PYVER
cel_import() { PYTHONPATH=$CEL_DIR python3 -c 'import cel_expr_python.cel, yaml' 2>/dev/null; }
if ! cel_import; then
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
    --target "$CEL_DIR" cel-expr-python==0.1.3 >"$WORK/cel.log" 2>&1 || true
fi
if cel_import; then
  if PYTHONPATH=$CEL_DIR python3 "$ROOT/tests/helm/check_cel.py" "$WORK/mc-1.30.yaml"; then
    pass "CEL of matchConditions"
  else
    fail "CEL of matchConditions"
  fi
else
  echo "  SKIP cel-expr-python not installable here ($(tail -1 "$WORK/cel.log" 2>/dev/null))"
fi

section "linters; schemas of the oldest and newest supported Kubernetes (kubernetes-validate)"
# Pinned PyPI tools (yamllint, kubernetes-validate), cached by tests/tools/install-pytools.sh.
if PYTOOLS=$("$ROOT/tests/tools/install-pytools.sh"); then
  yl() { PYTHONPATH=$PYTOOLS "$PYTOOLS/bin/yamllint" "$@"; }
  kv() { PYTHONPATH=$PYTOOLS "$PYTOOLS/bin/kubernetes-validate" "$@"; }
else
  fail "tests/tools/install-pytools.sh could not install yamllint and kubernetes-validate"
  yl() { return 1; }
  kv() { return 1; }
fi
# (Not controller-alerts: the Grafana dashboard's JSON holds PromQL lines longer than 120.)
if yl -d '{extends: default, rules: {line-length: {max: 120, allow-non-breakable-inline-mappings: true}, indentation: {indent-sequences: whatever}}}' \
    "$ROOT/manifests/install.yaml" "$WORK/default.yaml" "$WORK/helm.yaml" "$WORK/apiserver.yaml" "$WORK/config.yaml" "$WORK/optional.yaml" \
    "$WORK/selfmanaged.yaml" "$WORK/selfmanaged-opts.yaml" "$WORK/apiserver-sm.yaml" "$WORK/controller.yaml" \
    "$WORK/controller-helm.yaml"; then
  pass yamllint
else
  fail yamllint
fi
# The supported range: from Chart.yaml's kubeVersion (oldest) to the newest node image of the
# kind matrix in .github/workflows/e2e-kind.yml (tests/release/check-versions.py checks that
# README, Chart.yaml and the matrix agree). kubernetes-validate bundles the schemas of 1.25 to
# 1.37 only: below 1.25 (the chart claims 1.20) the oldest it has stands in, and the real v1.20
# API server of tests/e2e/run.sh validates and stores the 1.20 render itself.
if RANGE=$(python3 - "$ROOT" <<'PY'
import re, sys
root = sys.argv[1]
chart = open(f"{root}/charts/migration-injector/Chart.yaml").read()
m = re.search(r'^kubeVersion:\s*"?>=\s*v?(\d+)\.(\d+)', chart, re.M)
matrix = open(f"{root}/.github/workflows/e2e-kind.yml").read()
images = [tuple(map(int, v)) for v in re.findall(r"kindest/node:v(\d+)\.(\d+)\.\d+@sha256:", matrix)]
if not m or not images:
    sys.exit("cannot read the supported range from Chart.yaml kubeVersion and the e2e-kind.yml matrix")
oldest, newest = (int(m.group(1)), int(m.group(2))), max(images)
KV_MIN, KV_MAX = (1, 25), (1, 37)   # what kubernetes-validate 1.37.0 bundles
if newest > KV_MAX:
    sys.exit(f"kubernetes-validate has no schema for {newest}: update its pin in tests/tools/install-pytools.sh")
low = max(oldest, KV_MIN)
print("%d.%d.0 %d.%d.0" % (low + newest))
PY
); then
  for kver in $RANGE; do
    names=()
    for spec in "default:" "helm:--set tls.mode=helm" \
        "existing:--set tls.mode=existingSecret --set tls.existingSecret=s --set tls.caBundle=QUJD" \
        "selfmanaged:--set tls.mode=selfManaged" \
        "url:--set tls.mode=url --set webhook.url=https://10.0.0.1:8443/mutate --set deployment.enabled=false" \
        "optional:--set networkPolicy.enabled=true --set serviceMonitor.enabled=true --set deployment.podAntiAffinity=hard --set webhook.kinds.pods=true --set webhook.kinds.replicaSets=true" \
        "controller:--set controller.enabled=true --set config.runMode=once --set networkPolicy.enabled=true --set metrics.dashboard.enabled=true"; do
      name=kv-$kver-${spec%%:*}
      # shellcheck disable=SC2086 # the flags are meant to split
      render "$name" --kube-version "$kver" ${spec#*:} && names+=("$WORK/$name.yaml")
    done
    # cert-manager and Prometheus Operator kinds have no bundled schema: only warnings.
    if kv --strict -k "$kver" "${names[@]}" >"$WORK/kv-$kver.out" 2>&1 && ! grep -q '^ERROR' "$WORK/kv-$kver.out"; then
      pass "kubernetes-validate --strict -k $kver: ${#names[@]} renders (every TLS mode, optional objects)"
    else
      fail "kubernetes-validate -k $kver: $(grep -v '^INFO\|^WARN' "$WORK/kv-$kver.out" | head -20)"
    fi
  done
  if kv --strict -k "${RANGE##* }" "$ROOT/manifests/install.yaml" "$WORK/config.yaml" "$WORK/selfmanaged-opts.yaml" >"$WORK/kv-install.out" 2>&1 \
     && ! grep -q '^ERROR' "$WORK/kv-install.out"; then
    pass "kubernetes-validate: manifests/install.yaml and the config render (${RANGE##* })"
  else
    fail "kubernetes-validate (install.yaml): $(grep -v '^INFO\|^WARN' "$WORK/kv-install.out" | head -20)"
  fi
else
  fail "supported Kubernetes range: $RANGE"
fi
if command -v shellcheck >/dev/null; then
  if shellcheck "$ROOT/tests/helm/test-chart.sh" "$ROOT/tests/helm/render-for-apiserver.sh" \
      "$ROOT/tests/tools/install-helm.sh" "$ROOT/scripts/render-manifests.sh"; then
    pass shellcheck
  else
    fail shellcheck
  fi
else
  echo "  SKIP shellcheck (apt-get install shellcheck)"
fi

echo
if [ ${#FAILED[@]} -eq 0 ]; then
  echo "chart tests: all $PASSED checks passed"
  exit 0
fi
echo "chart tests: ${#FAILED[@]} FAILED, $PASSED passed:"
printf '  - %s\n' "${FAILED[@]}"
exit 1
