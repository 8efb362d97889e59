#!/usr/bin/env bash
# Server CPU per request: `migration-injector serve` against the bare HTTPS stack answering a
# constant (and a naive typed handler), each driven by wrk over keep-alive connections on
# loopback with an AdmissionReview captured from kube-apiserver. Reports CPU microseconds per
# request read from /proc (user+system of the server process only) and the ratio to the
# constant server. Usage: bench/load.sh [SECONDS] [FIXTURE]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
fixture=${2:-tests/fixtures/create-deployment.json}
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
cargo build --quiet --release --bin migration-injector --example bench_server
bin=target/release/migration-injector
bench=target/release/examples/bench_server
lua=$(mktemp --suffix .lua)
trap 'rm -f "$lua"; kill $(jobs -p) 2>/dev/null || true' EXIT
python3 - "$fixture" > "$lua" <<'PY'
import json, sys
body = json.dumps(json.load(open(sys.argv[1])), separators=(",", ":"))
print('wrk.method = "POST"')
print('wrk.headers["Content-Type"] = "application/json"')
print("wrk.body = " + json.dumps(body))
PY
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() { # name port cmd...
  local name=$1 port=$2; shift 2
  "$@" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  wrk -t1 -c8 -d2s -s "$lua" "https://127.0.0.1:$port/mutate" >/dev/null  # warm-up
  local before; before=$(cpu_ticks "$pid")
  local out; out=$(wrk -t1 -c8 -d"${secs}s" -s "$lua" "https://127.0.0.1:$port/mutate")
  local after; after=$(cpu_ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local requests; requests=$(echo "$out" | awk '/requests in/ {print $1}')
  local errors; errors=$(echo "$out" | awk '/Non-2xx|Socket errors/' | tr '\n' ' ')
  local us; us=$(python3 -c "print(round(($after-$before)/$hz*1e6/$requests, 1))")
  printf '%-10s %10s requests  %8s us CPU/request  %s\n' "$name" "$requests" "$us" "$errors"
  echo "$us" > "/tmp/bench-$name"
}

echo "fixture: $fixture ($(wc -c < "$fixture") bytes), ${secs}s per server, wrk -t1 -c8, $(nproc) cores"
run constant 18441 "$bench" constant 18441
run injector 18442 "$bin" serve --self-signed --listen 127.0.0.1:18442 --admin-listen 127.0.0.1:18452 --log-level warn
run typed 18443 "$bench" typed 18443
python3 - <<'PY'
c = float(open("/tmp/bench-constant").read()); i = float(open("/tmp/bench-injector").read()); t = float(open("/tmp/bench-typed").read())
print(f"ratio injector/constant = {i/c:.2f}   typed/constant = {t/c:.2f}")
PY
