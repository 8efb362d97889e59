#!/usr/bin/env bash
# End-to-end against a real kube-apiserver (v1.20.2, built from Debian's source package and
# cached) with Debian's etcd, on loopback. Starts `migration-injector serve` with a fresh CA,
# registers it with clientConfig.url + caBundle, runs tests/e2e/scenarios.py, tears down.
#
# Fails loudly when the API server cannot be built or started. A developer without root may
# opt out with MIGRATION_INJECTOR_SKIP_E2E=1 (the skip is printed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [ "${MIGRATION_INJECTOR_SKIP_E2E:-}" = "1" ]; then
  echo "!!! SKIPPED: real-apiserver e2e (MIGRATION_INJECTOR_SKIP_E2E=1)"
  exit 0
fi
if [ "$(id -u)" != 0 ] && { [ ! -x "${XDG_CACHE_HOME:-$HOME/.cache}/kube-apiserver-1.20.2/kube-apiserver" ] || ! command -v etcd >/dev/null; }; then
  echo "e2e FAILED: building kube-apiserver and installing etcd need root (apt-get)." >&2
  echo "Run as root, or opt out explicitly with MIGRATION_INJECTOR_SKIP_E2E=1." >&2
  exit 1
fi

echo "==> kube-apiserver (cached under ~/.cache, built only when missing)"
apiserver=$("$here/build-kube-apiserver.sh")
command -v etcd >/dev/null || apt-get install -y -qq etcd-server >/dev/null
command -v kubectl >/dev/null || apt-get install -y -qq kubernetes-client >/dev/null

bin=${MIGRATION_INJECTOR_BIN:-$repo/target/debug/migration-injector}
if [ -z "${MIGRATION_INJECTOR_BIN:-}" ]; then
  echo "==> building migration-injector"
  # --tests: the same feature set as the suite's test build, so after it this links nothing new.
  (cd "$repo" && cargo build --quiet --bin migration-injector --tests)
fi

work=$(mktemp -d /tmp/migration-injector-e2e.XXXXXX)
free_port() { python3 "$here/free_port.py"; }
ETCD_PORT=$(free_port); API_PORT=$(free_port)
export ETCD_PORT API_PORT
cleanup() {
  local rc=$?
  local pid
  cat "$work/pids" "$work/webhook.pid" 2>/dev/null | while read -r pid || [ -n "$pid" ]; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ $rc -ne 0 ]; then
    echo "--- e2e failed; last lines of the logs (kept in $work) ---" >&2
    tail -n 30 "$work/webhook.log" "$work/apiserver.log" 2>/dev/null >&2 || true
  else
    rm -rf "$work"
  fi
  exit $rc
}
trap cleanup EXIT

echo "==> starting etcd and kube-apiserver on 127.0.0.1:$API_PORT"
if ! "$here/start-apiserver.sh" "$apiserver" "$work" >/dev/null; then
  echo "e2e FAILED: kube-apiserver did not start" >&2
  exit 1
fi
export KUBECONFIG=$work/kubeconfig

echo "==> certificates for the webhook (migration-injector certs generate)"
"$bin" certs generate --out "$work/certs" --service migration-injector --namespace migration-injector \
  --ip 127.0.0.1 --dns localhost > "$work/cabundle" 2>/dev/null

export E2E_WORK=$work E2E_BIN=$bin E2E_REPO=$repo
export E2E_WEBHOOK_PORT
E2E_WEBHOOK_PORT=$(free_port)
export E2E_ADMIN_PORT
E2E_ADMIN_PORT=$(free_port)
echo "==> scenarios"
python3 "$here/scenarios.py"
