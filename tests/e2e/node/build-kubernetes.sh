#!/usr/bin/env bash
# Builds the node's Kubernetes binaries (v1.20.2) from Debian's `kubernetes` source package, the
# same source and the same reflect2 fix as tests/e2e/build-kube-apiserver.sh, and caches them:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, plus the sandbox
# ("pause") binary from the tree's build/pause/linux/pause.c, linked statically with musl.
# One `make` builds all missing ones (shared packages compile once): about 10-12 minutes cold on
# 2 cores, instant when cached. kube-apiserver is shared with build-kube-apiserver.sh's cache.
# Usage: build-kubernetes.sh [CACHE_DIR]   -> prints CACHE_DIR (holding the binaries).
set -euo pipefail
CACHE=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/kubernetes-node-1.20.2}
APISERVER_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/kube-apiserver-1.20.2
mkdir -p "$CACHE"
# The apiserver e2e's cached binary, when it is there, is reused as is.
if [ ! -x "$CACHE/kube-apiserver" ] && [ -x "$APISERVER_CACHE/kube-apiserver" ]; then
  cp "$APISERVER_CACHE/kube-apiserver" "$CACHE/kube-apiserver"
fi
want=()
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  { [ -x "$CACHE/$b" ] && "$CACHE/$b" --version >/dev/null 2>&1; } || want+=("cmd/$b")
done
if [ ${#want[@]} -eq 0 ] && [ -x "$CACHE/pause" ]; then echo "$CACHE"; exit 0; fi
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    > /etc/apt/sources.list.d/debsrc.sources
fi
apt-get update -qq >&2
apt-get install -y -qq golang-go rsync jq golang-github-modern-go-reflect2-dev musl-tools >&2
cd "$WORK" && apt-get source --download-only kubernetes >&2
tar xzf kubernetes_*.orig.tar.gz && cd kubernetes-1.20.2
R=vendor/github.com/modern-go/reflect2
rm -f $R/*.go && cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go $R/
if [ ! -x "$CACHE/pause" ]; then
  musl-gcc -static -Os -Wall -DVERSION=v1.20.2-local -o "$CACHE/pause" build/pause/linux/pause.c >&2
fi
if [ ${#want[@]} -gt 0 ]; then
  export GOPATH=$PWD/.go CGO_ENABLED=0 HOME=$WORK/home
  mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
  make WHAT="${want[*]}" >&2
  for w in "${want[@]}"; do cp "_output/bin/${w#cmd/}" "$CACHE/"; done
fi
if [ ! -x "$APISERVER_CACHE/kube-apiserver" ]; then
  mkdir -p "$APISERVER_CACHE" && cp "$CACHE/kube-apiserver" "$APISERVER_CACHE/kube-apiserver"
fi
echo "$CACHE"
