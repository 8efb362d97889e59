#!/usr/bin/env bash
# Local development certificates: a CA and a serving certificate for the webhook Service, plus a
# `kubernetes.io/tls` Secret manifest and the caBundle, for a given namespace.
#
# Usage: certs/dev-certs.sh [NAMESPACE] [SERVICE] [OUT_DIR]
#   defaults: migration-injector migration-injector ./.certs
# Writes OUT_DIR/{ca.crt,tls.crt,tls.key,secret.yaml,cabundle}. Never commit OUT_DIR: it holds a
# private key (.gitignore excludes *.key and .certs/).
set -euo pipefail
ns=${1:-migration-injector}
svc=${2:-migration-injector}
out=${3:-.certs}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${MIGRATION_INJECTOR_BIN:-}
if [ -z "$bin" ]; then
  (cd "$repo" && cargo build --quiet --bin migration-injector)
  bin=$repo/target/debug/migration-injector
fi
# 127.0.0.1 too, so the same certificate serves a webhook run on the host (clientConfig.url).
"$bin" certs generate --service "$svc" --namespace "$ns" --out "$out" --ip 127.0.0.1 --dns localhost \
  ${FORCE:+--force} > "$out.cabundle.tmp"
mv "$out.cabundle.tmp" "$out/cabundle"
b64() { base64 -w0 < "$1"; }
cat > "$out/secret.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: ${svc}-serving-tls
  namespace: ${ns}
type: kubernetes.io/tls
data:
  ca.crt: $(b64 "$out/ca.crt")
  tls.crt: $(b64 "$out/tls.crt")
  tls.key: $(b64 "$out/tls.key")
YAML
chmod 600 "$out/secret.yaml"
echo "wrote $out/secret.yaml (Secret ${svc}-serving-tls in ${ns}) and $out/cabundle"
echo "install with: helm install ${svc} charts/migration-injector -n ${ns} --set tls.mode=existingSecret \\"
echo "  --set tls.existingSecret=${svc}-serving-tls --set tls.caBundle=\$(cat $out/cabundle)"
