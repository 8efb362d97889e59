#!/usr/bin/env bash
# A real single-node Kubernetes (v1.20.2, built from Debian's source package) on this machine, with
# Debian's containerd + runc, a local registry (Debian docker-registry) and images built locally
# with buildah. Everything listens inside a network namespace this script creates, on the node
# address NODE_IP (a documentation-range address that exists only there): nothing is sent
# anywhere but that namespace (and the pods' own namespaces bridged into it).
#
#   cluster.sh up DIR                  bring the node up (reusing cached binaries/base images), write
#                                      DIR/env (KUBECONFIG, REGISTRY, RUN, ...); exit 0 once Ready.
#                                      Harmless on a live DIR.
#   cluster.sh image DIR CONTEXT NAME:TAG [buildah bud args...]
#                                      build CONTEXT/Dockerfile, push it to the local registry, print
#                                      the reference pods use ($REGISTRY/NAME:TAG).
#   cluster.sh down DIR                stop every process it started (by pid), remove its mounts,
#                                      cgroups, namespaces and state; restore the sysctls kubelet set.
#   cluster.sh logs DIR [N]            last N lines of every component's log.
#   cluster.sh stop-apiserver DIR [S]  stop kube-apiserver by its pid (TERM, KILL after S s, 15): a fault.
#   cluster.sh start-apiserver DIR     start it again as up does; exit 0 once /readyz answers.
#   cluster.sh stop DIR NAME [S]       the same for NAME: kube-apiserver, kubelet or containerd
#   cluster.sh start DIR NAME          (the pods' containers outlive containerd: their shims run on).
#
# Caches (rebuilt only when missing): ~/.cache/kubernetes-node-1.20.2 (the Kubernetes binaries and
# pause, see build-kubernetes.sh), ~/.cache/migration-injector-node (debootstrap'd Debian base and
# buildah's image storage). Needs root. See README.md beside this file.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}
NODE_CACHE=${MI_NODE_CACHE:-$CACHE_ROOT/migration-injector-node}
NODE_IP=192.0.2.10
NODE_NAME=mi-node
API_PORT=6443
REG_PORT=5000
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
POD_CIDR=10.244.0.0/24
STORAGE=(--root "$NODE_CACHE/containers" --runroot /run/migration-injector-node-buildah --storage-driver overlay)
# Base images in buildah's storage (built from the cache, never pulled).
DEBIAN_BASE=localhost/mi-node/debian:bookworm
STATIC_BASE=localhost/mi-node/static-nonroot:bookworm
PAUSE_IMAGE_NAME=mi-node/pause:3.4-local

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[cluster] FAILED: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 2 ] || usage
CMD=$1
DIR=$(mkdir -p "$2" && cd "$2" && pwd)
shift 2
ID=$(printf '%s' "$DIR" | sha256sum | cut -c1-8)
NS=mi-node-$ID
CGROUP=mi-node-$ID
NSX=(nsenter "--net=/run/netns/$NS")
REGISTRY=$NODE_IP:$REG_PORT

# --- pids ------------------------------------------------------------------------------------
# DIR/pids: "NAME PID" per started process.
pid_of() { { awk -v n="$1" '$1 == n {print $2}' "$DIR/pids" 2>/dev/null || true; } | tail -n 1; }
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
# start NAME CMD...: runs CMD in the node's network namespace (network only: one mount namespace
# for kubelet and containerd), in the node's runtime cgroup, logging to DIR/logs/NAME.log.
start() {
  local name=$1; shift
  if alive "$name"; then return 0; fi
  # The wrapper moves itself into the runtime cgroups, then execs: the pid is the component's.
  # (Not the memory hierarchy: the processes stay in the memory cgroup they were started in.)
  # shellcheck disable=SC2016 # expanded by the inner bash
  nohup "${NSX[@]}" bash -c 'for c in /sys/fs/cgroup/*/; do [ "$c" = /sys/fs/cgroup/memory/ ] && continue; [ -d "${c}'"$CGROUP"'/runtime" ] && echo $$ > "${c}'"$CGROUP"'/runtime/cgroup.procs" 2>/dev/null; done; exec "$@"' \
    "$name" "$@" >>"$DIR/logs/$name.log" 2>&1 &
  echo "$name $!" >>"$DIR/pids"
}
# fail_component NAME WHAT: loud failure naming the component, with its last log lines.
fail_component() {
  printf '\n[cluster] FAILED: %s: %s\n--- last lines of %s ---\n' "$1" "$2" "$DIR/logs/$1.log" >&2
  tail -n 40 "$DIR/logs/$1.log" >&2 2>/dev/null || true
  exit 1
}
# wait_for NAME SECONDS CMD...: until CMD succeeds; fails naming NAME if it dies or times out.
wait_for() {
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    alive "$name" || fail_component "$name" "exited (see its log)"
    [ $SECONDS -lt $deadline ] || fail_component "$name" "not ready after ${secs}s"
    sleep 0.5
  done
}

# --- host state this node changes: recorded once, restored by down ----------------------------
# Machine-wide: the state before the first node came up (nodes in other DIRs may run at the same
# time); the last node to go down restores it.
HOST_STATE=/run/migration-injector-node.host-state
TRACKED_PATHS=(/var/log/pods /var/log/containers /var/lib/kubelet /run/containerd /var/lib/cni /run/netns /etc/cni)
SYSCTLS=(vm/overcommit_memory kernel/panic kernel/panic_on_oops)
record_host_state() {
  [ -f "$DIR/host-state" ] && return 0
  if [ ! -f "$HOST_STATE" ]; then
    {
      local p s
      for p in "${TRACKED_PATHS[@]}"; do if [ -e "$p" ]; then echo "path $p existed"; fi; done
      for s in "${SYSCTLS[@]}"; do echo "sysctl $s $(cat "/proc/sys/$s")"; done
    } >"$HOST_STATE.tmp"
    mv "$HOST_STATE.tmp" "$HOST_STATE"
  fi
  cp "$HOST_STATE" "$DIR/host-state"
}

# --- one-time set-up pieces ------------------------------------------------------------------
ensure_tools() {
  local need=() c
  for c in containerd:containerd runc:runc buildah:buildah docker-registry:docker-registry \
    debootstrap:debootstrap etcd:etcd-server iptables:iptables conntrack:conntrack \
    kubectl:kubernetes-client openssl:openssl nsenter:util-linux curl:curl ip:iproute2; do
    command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
  done
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  fi
}

ensure_binaries() {
  KBIN=$("$HERE/build-kubernetes.sh") || die "building the Kubernetes binaries (tests/e2e/node/build-kubernetes.sh)"
}

# Debian base image (debootstrap minbase), cached as a tarball and in buildah's storage.
ensure_base_images() {
  mkdir -p "$NODE_CACHE"
  if ! buildah "${STORAGE[@]}" inspect --type image "$DEBIAN_BASE" >/dev/null 2>&1; then
    local tar=$NODE_CACHE/debian-bookworm-minbase.tar
    if [ ! -s "$tar" ]; then
      log "debootstrap a Debian bookworm base (once, about 1-2 minutes)"
      local root mirror
      root=$(mktemp -d)
      # The Debian mirror apt already uses (none found: deb.debian.org).
      mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -oE '^(URIs:|deb) *https?://[^ ]*debian/?( |$)' | grep -oE 'https?://[^ ]*' | sed -n 1p || true)
      debootstrap --variant=minbase bookworm "$root" "${mirror:-http://deb.debian.org/debian}" >"$NODE_CACHE/debootstrap.log" 2>&1 \
        || { tail -n 20 "$NODE_CACHE/debootstrap.log" >&2; rm -rf "$root"; die "debootstrap"; }
      rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
      tar -C "$root" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
      rm -rf "$root"
    fi
    log "importing the Debian base into buildah's storage"
    local c
    c=$(buildah "${STORAGE[@]}" from scratch)
    buildah "${STORAGE[@]}" add "$c" "$tar" / >/dev/null
    buildah "${STORAGE[@]}" config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
    buildah "${STORAGE[@]}" commit --rm -q "$c" "$DEBIAN_BASE" >/dev/null
  fi
  if ! buildah "${STORAGE[@]}" inspect --type image "$STATIC_BASE" >/dev/null 2>&1; then
    log "building the static non-root runtime base ($STATIC_BASE)"
    buildah "${STORAGE[@]}" bud -q --network host --build-arg "DEBIAN_BASE=$DEBIAN_BASE" \
      -t "$STATIC_BASE" "$HERE/images/static-nonroot" >/dev/null
  fi
  if ! buildah "${STORAGE[@]}" inspect --type image "localhost/$PAUSE_IMAGE_NAME" >/dev/null 2>&1; then
    local c
    c=$(buildah "${STORAGE[@]}" from scratch)
    buildah "${STORAGE[@]}" copy "$c" "$KBIN/pause" /pause >/dev/null
    buildah "${STORAGE[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$c"
    buildah "${STORAGE[@]}" commit --rm -q "$c" "localhost/$PAUSE_IMAGE_NAME" >/dev/null
  fi
}

push() { # push LOCAL_NAME REF
  "${NSX[@]}" buildah "${STORAGE[@]}" push -q --tls-verify=false "$1" "docker://$2" >&2
}

pki() {
  local p=$DIR/pki
  [ -f "$p/done" ] && return 0
  mkdir -p "$p" && cd "$p"
  local cnf=$p/openssl.cnf
  cat >"$cnf" <<EOF
[req]
distinguished_name = dn
[dn]
[apiserver]
subjectAltName = IP:$NODE_IP,IP:127.0.0.1,IP:$SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost
basicConstraints = CA:FALSE
keyUsage = digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
[client]
basicConstraints = CA:FALSE
keyUsage = digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
EOF
  ca() { openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$2" -keyout "$1.key" -out "$1.crt" 2>/dev/null; }
  leaf() { # leaf NAME CA SUBJECT EXT
    openssl req -newkey rsa:2048 -nodes -subj "$3" -keyout "$1.key" -out "$1.csr" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 30 \
      -extfile "$cnf" -extensions "$4" -out "$1.crt" 2>/dev/null
  }
  ca ca mi-node-ca
  ca front-proxy-ca mi-node-front-proxy-ca
  leaf apiserver ca /CN=kube-apiserver apiserver
  leaf apiserver-kubelet-client ca "/O=system:masters/CN=kube-apiserver-kubelet-client" client
  leaf front-proxy-client front-proxy-ca /CN=front-proxy-client client
  openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null

  : >"$p/tokens.csv"
  local key user group tok
  # key user [group]: one token and one kubeconfig per component.
  while read -r key user group; do
    tok=$(openssl rand -hex 16)
    echo "$tok,$user,$key${group:+,$group}" >>"$p/tokens.csv"
    local server=https://$NODE_IP:$API_PORT
    cat >"$DIR/$key.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: mi-node, cluster: {server: "$server", certificate-authority-data: "$(base64 -w0 "$p/ca.crt")"}}]
users: [{name: $key, user: {token: "$tok"}}]
contexts: [{name: mi-node, context: {cluster: mi-node, user: $key, namespace: default}}]
current-context: mi-node
EOF
  done <<EOF
admin admin system:masters
kcm system:kube-controller-manager
sched system:kube-scheduler
proxy system:kube-proxy
node system:node:$NODE_NAME system:nodes
EOF
  cd - >/dev/null
  touch "$p/done"
}

network() {
  if [ ! -e "/run/netns/$NS" ]; then
    ip netns add "$NS"
  fi
  if ! ip -n "$NS" link show mi-node0 >/dev/null 2>&1; then
    # Both ends of the veth inside the namespace (this kernel has no dummy driver).
    ip -n "$NS" link add mi-node0 type veth peer name mi-node1
    ip -n "$NS" addr add "$NODE_IP/24" dev mi-node0
    ip -n "$NS" link set lo up
    ip -n "$NS" link set mi-node0 up
    ip -n "$NS" link set mi-node1 up
  fi
  # Host-network pods (and kube-proxy's DNAT of their traffic) need a route to the Services'
  # ClusterIPs; a real node has a default route, this namespace has nothing else.
  ip -n "$NS" route replace "$SERVICE_CIDR" dev mi-node0
  mkdir -p "$DIR/cni/conf" "$DIR/cni/data"
  # Pods other than hostNetwork ones get an address on a bridge inside the node's namespace.
  cat >"$DIR/cni/conf/10-mi-node.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "mi-node",
  "plugins": [
    {"type": "bridge", "bridge": "mi-br0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$DIR/cni/data", "ranges": [[{"subnet": "$POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "loopback"}
  ]
}
EOF
}

cgroups() {
  local c
  for c in /sys/fs/cgroup/*/; do
    [ -w "$c" ] || continue
    mkdir -p "$c$CGROUP/runtime" 2>/dev/null || continue
    if [ -f "${c}cpuset.cpus" ]; then
      local d
      for d in "$c$CGROUP" "$c$CGROUP/runtime"; do
        cat "${c}cpuset.cpus" >"$d/cpuset.cpus"; cat "${c}cpuset.mems" >"$d/cpuset.mems"
      done
    fi
  done
}

containerd_up() {
  local d=$DIR/containerd
  mkdir -p "$d/certs.d/$REGISTRY" "$d/root" "$d/state" "$d/opt"
  cat >"$d/certs.d/$REGISTRY/hosts.toml" <<EOF
server = "http://$REGISTRY"
[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve", "push"]
EOF
  cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$REGISTRY/$PAUSE_IMAGE_NAME"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$d/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$d/certs.d"
EOF
  start containerd containerd --config "$d/config.toml"
  wait_for containerd 60 ctr --address "$d/containerd.sock" version
}

registry_up() {
  mkdir -p "$DIR/registry"
  cat >"$DIR/registry/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: "$DIR/registry/data"}, delete: {enabled: true}}
http: {addr: "$REGISTRY"}
EOF
  start registry docker-registry serve "$DIR/registry/config.yml"
  wait_for registry 30 "${NSX[@]}" curl -fsS "http://$REGISTRY/v2/"
}

# apiserver_up: kube-apiserver (also what start-apiserver runs again after stop-apiserver), until /readyz.
apiserver_up() {
  local p=$DIR/pki
  start kube-apiserver "$KBIN/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
    --bind-address 0.0.0.0 --advertise-address "$NODE_IP" --secure-port "$API_PORT" --insecure-port 0 \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" --token-auth-file "$p/tokens.csv" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$p/sa.pub" \
    --service-account-signing-key-file "$p/sa.key" --service-cluster-ip-range "$SERVICE_CIDR" \
    --enable-aggregator-routing=true --kubelet-preferred-address-types InternalIP \
    --kubelet-client-certificate "$p/apiserver-kubelet-client.crt" --kubelet-client-key "$p/apiserver-kubelet-client.key" \
    --requestheader-client-ca-file "$p/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-extra-headers-prefix X-Remote-Extra- --requestheader-group-headers X-Remote-Group \
    --requestheader-username-headers X-Remote-User \
    --proxy-client-cert-file "$p/front-proxy-client.crt" --proxy-client-key-file "$p/front-proxy-client.key"
  wait_for kube-apiserver 120 "${NSX[@]}" kubectl --kubeconfig "$DIR/admin.kubeconfig" get --raw /readyz
}

control_plane_up() {
  local p=$DIR/pki
  mkdir -p "$DIR/etcd"
  start etcd etcd --data-dir "$DIR/etcd/data" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
    --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster default=http://127.0.0.1:2380 \
    --listen-metrics-urls http://127.0.0.1:2381
  wait_for etcd 60 "${NSX[@]}" curl -fsS http://127.0.0.1:2379/health
  apiserver_up
  start kube-controller-manager "$KBIN/kube-controller-manager" --kubeconfig "$DIR/kcm.kubeconfig" \
    --authentication-kubeconfig "$DIR/kcm.kubeconfig" --authorization-kubeconfig "$DIR/kcm.kubeconfig" \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
    --use-service-account-credentials=true --cluster-signing-cert-file "$p/ca.crt" \
    --cluster-signing-key-file "$p/ca.key" --leader-elect=false --port 0 \
    --bind-address 127.0.0.1 --service-cluster-ip-range "$SERVICE_CIDR"
  start kube-scheduler "$KBIN/kube-scheduler" --kubeconfig "$DIR/sched.kubeconfig" \
    --authentication-kubeconfig "$DIR/sched.kubeconfig" --authorization-kubeconfig "$DIR/sched.kubeconfig" \
    --leader-elect=false --port 0 --bind-address 127.0.0.1
}

node_up() {
  local k=$DIR/kubelet
  mkdir -p "$k" "$DIR/kubelet-plugins"
  printf 'nameserver 127.0.0.1\noptions ndots:0\n' >"$DIR/resolv.conf"
  cat >"$DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$DIR/pki/ca.crt"}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP
failSwapOn: false
resolvConf: "$DIR/resolv.conf"
hairpinMode: none
serializeImagePulls: false
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
volumePluginDir: "$DIR/kubelet-plugins"
runtimeRequestTimeout: 5m
EOF
  kubelet_up
  start kube-proxy "$KBIN/kube-proxy" --kubeconfig "$DIR/proxy.kubeconfig" --hostname-override "$NODE_NAME" \
    --proxy-mode iptables --cluster-cidr "$POD_CIDR" --masquerade-all \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0s --conntrack-tcp-timeout-close-wait 0s \
    --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256
  local kc=(kubectl --kubeconfig "$DIR/admin.kubeconfig")
  wait_for kubelet 120 "${NSX[@]}" bash -c "[ \"\$(${kc[*]} get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"
  alive kube-controller-manager || fail_component kube-controller-manager "exited"
  alive kube-scheduler || fail_component kube-scheduler "exited"
  alive kube-proxy || fail_component kube-proxy "exited"
  # The default ServiceAccount must exist before pods can be created in a namespace.
  wait_for kube-controller-manager 60 "${NSX[@]}" "${kc[@]}" -n default get serviceaccount default
}

# kubelet_up: kubelet (also what `start DIR kubelet` runs again after `stop`), until its /healthz.
kubelet_up() {
  local k=$DIR/kubelet
  start kubelet "$KBIN/kubelet" --config "$DIR/kubelet.yaml" --kubeconfig "$DIR/node.kubeconfig" \
    --container-runtime=remote --container-runtime-endpoint "unix://$DIR/containerd/containerd.sock" \
    --image-service-endpoint "unix://$DIR/containerd/containerd.sock" \
    --pod-infra-container-image "$REGISTRY/$PAUSE_IMAGE_NAME" \
    --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" --root-dir "$k" --cert-dir "$k/pki" \
    --oom-score-adj=0 --v=1
  wait_for kubelet 60 "${NSX[@]}" curl -fsS http://127.0.0.1:10248/healthz
}

write_env() {
  cat >"$DIR/env" <<EOF
# Written by tests/e2e/node/cluster.sh up; source it.
export KUBECONFIG="$DIR/admin.kubeconfig"
export REGISTRY="$REGISTRY"
export RUN="nsenter --net=/run/netns/$NS"
export NODE_IP="$NODE_IP"
export NODE_NAME="$NODE_NAME"
export NODE_NETNS="$NS"
export NODE_DIR="$DIR"
# Local base images (buildah storage) for Dockerfiles built with 'cluster.sh image':
export DEBIAN_BASE="$DEBIAN_BASE"
export STATIC_BASE="$STATIC_BASE"
EOF
}

cmd_up() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespace, containerd, kubelet)"
  mkdir -p "$DIR/logs"
  record_host_state
  local t0=$SECONDS
  ensure_tools
  ensure_binaries
  ensure_base_images
  pki
  network
  cgroups
  registry_up
  push "localhost/$PAUSE_IMAGE_NAME" "$REGISTRY/$PAUSE_IMAGE_NAME"
  containerd_up
  control_plane_up
  node_up
  write_env
  log "node $NODE_NAME Ready at $NODE_IP ($((SECONDS - t0))s); source $DIR/env"
}

cmd_image() {
  [ $# -ge 2 ] || usage
  local context=$1 name=$2; shift 2
  [ -f "$DIR/env" ] || die "no node in $DIR (run: cluster.sh up $DIR)"
  case " $* " in *" -f "* | *" --file "*) ;; *) [ -f "$context/Dockerfile" ] || die "no Dockerfile in $context" ;; esac
  local local_name=localhost/$name
  log "building $name from $context/Dockerfile"
  buildah "${STORAGE[@]}" bud -q --layers --network host -t "$local_name" "$@" "$context" >"$DIR/logs/build-${name//[:\/]/_}.log" 2>&1 \
    || { tail -n 30 "$DIR/logs/build-${name//[:\/]/_}.log" >&2; die "building $name"; }
  push "$local_name" "$REGISTRY/$name"
  # The storage is a cache that outlives runs: drop the image this tag replaced.
  buildah "${STORAGE[@]}" rmi --prune >/dev/null 2>&1 || true
  echo "$REGISTRY/$name"
}

# --- down ------------------------------------------------------------------------------------
stop_pid() { # stop_pid NAME PID SECONDS: TERM, wait, then KILL
  local name=$1 pid=$2 secs=$3 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "$name ($pid) still running after ${secs}s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

cgroup_pids() {
  local c
  for c in /sys/fs/cgroup/*/"$CGROUP"; do
    if [ -d "$c" ]; then find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done | sort -un
}

cmd_down() {
  [ -d "$DIR" ] || return 0
  local name pid
  # Node first (so nothing restarts containers), then the control plane, then the runtime.
  for name in kube-proxy kubelet kube-scheduler kube-controller-manager; do
    pid=$(pid_of "$name"); [ -n "$pid" ] && stop_pid "$name" "$pid" 10
  done
  for name in kube-apiserver etcd registry; do
    pid=$(pid_of "$name"); [ -n "$pid" ] && stop_pid "$name" "$pid" 15
  done
  # The pods' network namespaces this containerd made (not another node's): from its sandboxes.
  pid=$(pid_of containerd)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    local c ctr=(ctr --address "$DIR/containerd/containerd.sock" -n k8s.io)
    for c in $("${ctr[@]}" containers ls -q 2>/dev/null || true); do
      "${ctr[@]}" containers info "$c" 2>/dev/null | python3 -c '
import json, sys
try:
    for ns in json.load(sys.stdin)["Spec"]["linux"]["namespaces"]:
        if ns.get("type") == "network" and ns.get("path", "").startswith("/var/run/netns/"):
            print(ns["path"])
except Exception:
    pass' >>"$DIR/pod-netns" || true
    done
    stop_pid containerd "$pid" 10
  fi
  # Containers and their shims live in the node's cgroups: kill what is left there, by pid.

  for _ in 1 2 3 4 5 6 7 8 9 10; do
    local pids
    pids=$(cgroup_pids)
    [ -z "$pids" ] && break
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
    sleep 0.3
  done
  # Mounts under DIR (kubelet's Secret tmpfs and root-dir bind, containerd's overlays and shm),
  # deepest first; then the pods' network namespaces containerd made.
  local m
  for _ in 1 2 3; do
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done < <(
      awk -v d="$DIR/" 'index($5, d) == 1 || $5 == substr(d, 1, length(d) - 1) {print $5}' /proc/self/mountinfo | sort -r)
  done
  if [ -f "$DIR/pod-netns" ]; then
    while read -r m; do
      m=/run/netns/${m##*/}
      [ -e "$m" ] || continue
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
      rm -f "$m"
    done < <(sort -u "$DIR/pod-netns")
  fi
  if [ -e "/run/netns/$NS" ]; then ip netns delete "$NS" 2>/dev/null || true; fi
  # Cgroups, deepest first.
  local c
  for c in /sys/fs/cgroup/*/"$CGROUP"; do
    if [ -d "$c" ]; then find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
    if [ -d "$c" ]; then log "cgroup $c could not be removed"; fi
  done
  # Sysctls kubelet changed, and the host paths it created: restored by the last node to go down
  # (another node on this machine still uses them).
  local others
  others=$(find /sys/fs/cgroup/pids -maxdepth 1 -name 'mi-node-*' ! -name "$CGROUP" 2>/dev/null || true)
  if [ -n "$others" ]; then
    log "another node is running here ($others): host paths and sysctls left to it"
  elif [ -f "$HOST_STATE" ] || [ -f "$DIR/host-state" ]; then
    local state=$HOST_STATE
    [ -f "$state" ] || state=$DIR/host-state
    local kind key val
    while read -r kind key val; do
      if [ "$kind" = sysctl ]; then echo "$val" >"/proc/sys/$key" 2>/dev/null || true; fi
    done <"$state"
    local p
    for p in "${TRACKED_PATHS[@]}"; do
      grep -qx "path $p existed" "$state" && continue
      [ -e "$p" ] || continue
      if [ "$p" = /run/netns ]; then
        rmdir /run/netns/* 2>/dev/null || true
        if [ -z "$(ls -A /run/netns)" ]; then
          umount /run/netns 2>/dev/null || true
          umount /run/netns 2>/dev/null || true
          rmdir /run/netns 2>/dev/null || true
        fi
      else
        rm -rf "$p"
      fi
    done
    rm -f "$HOST_STATE"
    # buildah's mounts of its image storage (in the cache): the storage's own bind mount and any
    # container rootfs a build left mounted. The images stay cached.
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done < <(
      awk -v d="$NODE_CACHE/containers/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
    rm -rf /run/migration-injector-node-buildah
  fi
  # State: everything in DIR (the logs go too; run.sh prints them before calling down).
  if mountinfo_left=$(awk -v d="$DIR/" 'index($5, d) == 1' /proc/self/mountinfo) && [ -n "$mountinfo_left" ]; then
    log "mounts left under $DIR: $mountinfo_left"
    return 1
  fi
  rm -rf "${DIR:?}"/* "$DIR"/.[!.]* 2>/dev/null || true
  rmdir "$DIR" 2>/dev/null || true
  log "node in $DIR is down"
}

# stop-apiserver / start-apiserver: a restart of the API server (a fault the e2e measures).
cmd_stop_apiserver() {
  local pid
  pid=$(pid_of kube-apiserver)
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then die "no kube-apiserver running in $DIR"; fi
  stop_pid kube-apiserver "$pid" "${1:-15}"
  log "kube-apiserver ($pid) stopped"
}
cmd_start_apiserver() {
  [ -f "$DIR/env" ] || die "no node in $DIR (run: cluster.sh up $DIR)"
  ensure_binaries
  apiserver_up
  log "kube-apiserver ($(pid_of kube-apiserver)) ready again"
}

# stop NAME / start NAME: kube-apiserver, kubelet or containerd restarted (faults the e2e measures).
cmd_stop() {
  local name=${1:-} pid
  case $name in kube-apiserver | kubelet | containerd) ;; *) usage ;; esac
  pid=$(pid_of "$name")
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then die "no $name running in $DIR"; fi
  stop_pid "$name" "$pid" "${2:-15}"
  log "$name ($pid) stopped"
}
cmd_start() {
  [ -f "$DIR/env" ] || die "no node in $DIR (run: cluster.sh up $DIR)"
  ensure_binaries
  case ${1:-} in
    kube-apiserver) apiserver_up ;;
    kubelet) kubelet_up ;;
    containerd) containerd_up ;;
    *) usage ;;
  esac
  log "${1} ($(pid_of "$1")) running again"
}

cmd_logs() {
  local n=${1:-30} f
  for f in "$DIR"/logs/*.log; do
    [ -f "$f" ] || continue
    printf '\n--- %s (last %s lines) ---\n' "${f##*/}" "$n"
    tail -n "$n" "$f"
  done
}

case $CMD in
  up) cmd_up ;;
  image) cmd_image "$@" ;;
  down) cmd_down ;;
  logs) cmd_logs "$@" ;;
  stop-apiserver) cmd_stop_apiserver "$@" ;;
  start-apiserver) cmd_start_apiserver ;;
  stop) cmd_stop "$@" ;;
  start) cmd_start "$@" ;;
  *) usage ;;
esac
