#!/usr/bin/env bash
# Renders the chart for a webhook reached by URL, as the e2e harness needs it for the real v1.20
# kube-apiserver: the API server calls the webhook on the host through clientConfig.url (no
# cluster DNS, no Service endpoints on loopback).
#   TLS_MODE=url (default): caBundle from --set tls.caBundle.
#   TLS_MODE=selfManaged: no caBundle in the render (the chart refuses tls.caBundle then); the
#     webhook (`serve --self-managed --namespace $NAMESPACE --service-name <fullname>
#     --webhook-config-name <fullname> --ca-secret-name <fullname>-self-managed-ca --cert-ips 127.0.0.1`, where
#     <fullname> is migration-injector for the default RELEASE) creates the CA Secret and patches
#     the caBundle itself. The render also holds that mode's ServiceAccount <fullname>, Role,
#     RoleBinding, ClusterRole and ClusterRoleBinding (all named <fullname>), even with
#     deployment.enabled=false, so the webhook can run with exactly those permissions.
#
# Usage: tests/helm/render-for-apiserver.sh OUTFILE --set webhook.url=https://127.0.0.1:PORT/mutate \
#          --set tls.caBundle=$(base64 -w0 ca.crt) [more helm flags, e.g. --set deployment.enabled=false]
#        TLS_MODE=selfManaged tests/helm/render-for-apiserver.sh OUTFILE \
#          --set webhook.url=https://127.0.0.1:PORT/mutate --set deployment.enabled=false
# Env:   TLS_MODE (url or selfManaged; default url; a later --set tls.mode=... also wins),
#        NAMESPACE (default migration-injector), RELEASE (default migration-injector),
#        KUBE_VERSION (default 1.20.2), HELM (default: tests/tools/install-helm.sh).
#
# The output starts with the Namespace (labelled kubernetes.io/metadata.name, which v1.20 does not
# set by itself, so the webhook's namespace exclusion works there too) and is valid for
# Kubernetes 1.20 when KUBE_VERSION is 1.20.x: no matchConditions, PodDisruptionBudget
# policy/v1beta1. With deployment.enabled=true (the default) it also holds the Deployment,
# Service, ServiceAccount and PodDisruptionBudget; in url mode their pods would mount the Secret
# <release>-tls (or tls.existingSecret), which the caller creates if it wants them to run.
set -euo pipefail

if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $0 OUTFILE --set webhook.url=https://HOST:PORT/mutate --set tls.caBundle=BASE64 [helm flags]" >&2
  exit 2
fi
OUT=$1
shift

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELM=${HELM:-$("$ROOT/tests/tools/install-helm.sh")}
NAMESPACE=${NAMESPACE:-migration-injector}
RELEASE=${RELEASE:-migration-injector}
KUBE_VERSION=${KUBE_VERSION:-1.20.2}
TLS_MODE=${TLS_MODE:-url}
case $TLS_MODE in
  url | selfManaged) ;;
  *) echo "$0: TLS_MODE must be url or selfManaged, not '$TLS_MODE'" >&2; exit 2 ;;
esac

TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
{
  cat <<NS
---
apiVersion: v1
kind: Namespace
metadata:
  name: $NAMESPACE
  labels:
    kubernetes.io/metadata.name: $NAMESPACE
NS
  "$HELM" template "$RELEASE" "$ROOT/charts/migration-injector" \
    --namespace "$NAMESPACE" \
    --kube-version "$KUBE_VERSION" \
    --set "tls.mode=$TLS_MODE" \
    "$@"
} >"$TMP"
mv "$TMP" "$OUT"
trap - EXIT
echo "$OUT"
