#!/usr/bin/env bash
# End-to-end test of migration-injector on a real (kind) cluster.
#
# Creates a kind cluster, builds and loads the webhook image and an Atlas migrations image
# (installing the webhook from manifests/install.yaml when there is no chart), sets the run context
# and calls the cluster scenarios (tests/e2e/cluster/scenarios.sh, the same list the node e2e
# runs): the chart installed, PostgreSQL, the `atlas-project` Secret, a Deployment carrying only
# the `migrations.io/image` annotation (the webhook injected the `migrate` init container and the
# migrations really ran), availability and TLS mode switches. Then the cluster is deleted.
#
# Usage: tests/e2e/kind/run.sh [--dry-run|--print] [--keep-cluster] [--help]
# Needs docker (with a running daemon), kind, kubectl and helm. See README.md for the env knobs.
set -euo pipefail

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  echo "run.sh needs bash >= 4.4 (this is $BASH_VERSION; on macOS: brew install bash)" >&2
  exit 1
fi

# ---------------------------------------------------------------------------------------------
# Settings (environment knobs; documented in README.md)
# ---------------------------------------------------------------------------------------------
case "${BASH_SOURCE[0]}" in */*) _here="${BASH_SOURCE[0]%/*}" ;; *) _here=. ;; esac
SCRIPT_DIR="$(cd "$_here" && pwd)"
REPO_ROOT="${REPO_ROOT:-$(cd "$SCRIPT_DIR/../../.." && pwd)}"

KIND_CLUSTER="${KIND_CLUSTER:-migration-injector-e2e}"
KIND_CONFIG="${KIND_CONFIG:-$SCRIPT_DIR/kind-config.yaml}"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
SKIP_BUILD="${SKIP_BUILD:-0}"
SKIP_RERUN="${SKIP_RERUN:-0}"
TIMEOUT="${TIMEOUT:-300}"

WEBHOOK_NAMESPACE="${WEBHOOK_NAMESPACE:-migration-injector}"
HELM_RELEASE="${HELM_RELEASE:-migration-injector}"
HELM_EXTRA_ARGS="${HELM_EXTRA_ARGS:-}"
CHART_DIR="${CHART_DIR:-$REPO_ROOT/charts/migration-injector}"
INSTALL_MANIFEST="${INSTALL_MANIFEST:-$REPO_ROOT/manifests/install.yaml}"

APP_NAMESPACE="${APP_NAMESPACE:-migrations-e2e}"
APP_NAMESPACE_LABELS="${APP_NAMESPACE_LABELS-migrations.io/injection=enabled}"
ATLAS_IMAGE="${ATLAS_IMAGE:-arigaio/atlas:latest-alpine}"
EXPECT_SECURITY_CONTEXT="${EXPECT_SECURITY_CONTEXT:-1}"
# cert-manager for the tls.mode=certManager switches (its release manifest; empty: this default).
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.16.2}"
SKIP_CERT_MANAGER="${SKIP_CERT_MANAGER:-0}"

# Fixed by the test itself (app.yaml and the Helm values refer to them).
WEBHOOK_IMAGE_REPO="migration-injector"
WEBHOOK_IMAGE_TAG="e2e"
WEBHOOK_IMAGE="$WEBHOOK_IMAGE_REPO:$WEBHOOK_IMAGE_TAG"
MIGRATIONS_IMAGE="migrations:e2e"
MIGRATIONS_BROKEN_IMAGE="migrations:broken"

KCTX="kind-$KIND_CLUSTER"
CLUSTER_CREATED=0
CLUSTER_USABLE=0
CERT_MANAGER_INSTALLED=0

# The cluster scenarios and their library (output, checks, the run context: cluster/lib.sh).
# shellcheck source=../cluster/scenarios.sh
source "$SCRIPT_DIR/../cluster/scenarios.sh"
# The run context: this kind cluster, named explicitly (the current kubectl context is never used).
# shellcheck disable=SC2034 # read by cluster/*.sh
E2E_KUBECTL=(kubectl --context "$KCTX")
# shellcheck disable=SC2034
E2E_HELM=(helm --kube-context "$KCTX") E2E_NET=() E2E_TIMEOUT=$TIMEOUT
# The load generator of the availability phases (built by build_images), on this kind cluster.
LOAD_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/examples/admission_load"
# shellcheck disable=SC2034
E2E_LOAD=("$LOAD_BIN" --context "$KCTX")
E2E_DRY_RUN=0


usage() {
  cat <<EOF
Usage: ${0##*/} [--dry-run|--print] [--keep-cluster] [--help]

  --dry-run, --print  print every step and command without running anything; exits 0
  --keep-cluster      do not delete the kind cluster at the end (same as KEEP_CLUSTER=1)
  -h, --help          this help

Environment (defaults in brackets):
  KIND_CLUSTER [migration-injector-e2e]   KIND_CONFIG [kind-config.yaml beside this script]
  KIND_NODE_IMAGE [kind's default]        KEEP_CLUSTER [0]      TIMEOUT [300] (seconds per wait)
  SKIP_BUILD [0] (reuse local $WEBHOOK_IMAGE)   SKIP_RERUN [0] (skip the restart/idempotency step)
  WEBHOOK_NAMESPACE [migration-injector]  HELM_RELEASE [migration-injector]  HELM_EXTRA_ARGS []
  CHART_DIR [<repo>/charts/migration-injector]  INSTALL_MANIFEST [<repo>/manifests/install.yaml]
  APP_NAMESPACE [migrations-e2e]  APP_NAMESPACE_LABELS [migrations.io/injection=enabled] ("k=v,k2=v2"; "" for none)
  ATLAS_IMAGE [arigaio/atlas:latest-alpine]     EXPECT_SECURITY_CONTEXT [1]
  MIGRATION_INJECTOR_BIN [] (the CLI certs/dev-certs.sh runs; "" : it builds one with cargo)
  CERT_MANAGER_VERSION [v1.16.2] (cert-manager release installed for the tls.mode=certManager switches)
  SKIP_CERT_MANAGER [0] (1: no cert-manager, no certManager switches)
EOF
}


on_exit() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  admission_loop_abort
  if ((rc != 0 && E2E_DRY_RUN == 0 && CLUSTER_USABLE)); then
    local namespaces=("$WEBHOOK_NAMESPACE" "$APP_NAMESPACE")
    ((CERT_MANAGER_INSTALLED)) && namespaces+=(cert-manager)
    diagnostics "${namespaces[@]}"
    if ((CERT_MANAGER_INSTALLED)); then
      kget -n "$WEBHOOK_NAMESPACE" describe certificates,certificaterequests,issuers || true
    fi
  fi
  if ((E2E_DRY_RUN)); then
    step "Clean up (on exit, also on failure)"
    if [[ "$KEEP_CLUSTER" == 1 ]]; then
      info "KEEP_CLUSTER=1: the cluster would be kept"
    else
      show kind delete cluster --name "$KIND_CLUSTER"
    fi
  elif ((CLUSTER_CREATED)); then
    if [[ "$KEEP_CLUSTER" == 1 ]]; then
      printf '\n==> keeping kind cluster %s (KEEP_CLUSTER=1); delete it with: kind delete cluster --name %s\n' \
        "$KIND_CLUSTER" "$KIND_CLUSTER"
    else
      printf '\n==> deleting kind cluster %s\n' "$KIND_CLUSTER"
      kind delete cluster --name "$KIND_CLUSTER" || warn "could not delete kind cluster $KIND_CLUSTER"
    fi
  elif ((CLUSTER_USABLE)); then
    printf '\n==> kind cluster %s existed before this run: left in place\n' "$KIND_CLUSTER"
  fi
  if ((E2E_DRY_RUN)); then
    printf '\n==> dry run: nothing was executed\n'
  elif ((rc == 0)); then
    printf '\n==> PASS: migration-injector e2e on kind\n'
  else
    printf '\n==> FAIL: migration-injector e2e on kind (exit %d)\n' "$rc" >&2
  fi
  exit "$rc"
}

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
preflight() {
  step "Check prerequisites"
  local missing=() tool
  if ((E2E_DRY_RUN)); then
    info "(dry run: tool checks skipped) needs: docker (running daemon), kind, kubectl, helm"
  else
    for tool in docker kind kubectl helm; do
      command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
      die "missing required tool(s): ${missing[*]}
       This e2e test needs docker (with a running daemon), kind, kubectl and helm on PATH:
         docker  https://docs.docker.com/engine/install/
         kind    https://kind.sigs.k8s.io/docs/user/quick-start/#installation
         kubectl https://kubernetes.io/docs/tasks/tools/
         helm    https://helm.sh/docs/intro/install/
       To only see what it would do: $0 --dry-run"
    fi
    docker info >/dev/null 2>&1 || die "docker is installed but its daemon is not reachable ('docker info' failed)"
    # The shared scenario renders app.yaml with tests/e2e/render_app.py.
    python3 -c 'import yaml' 2>/dev/null || die "python3 with PyYAML is required (apt-get install python3-yaml, or pip install pyyaml)"
    # The availability phases' load generator (examples/admission_load) is built from source, and
    # so is the CLI certs/dev-certs.sh runs unless MIGRATION_INJECTOR_BIN names one.
    command -v cargo >/dev/null 2>&1 ||
      die "cargo is required (the admission load generator and certs/dev-certs.sh are built from source)"
    info "docker, kind, kubectl, helm: found; docker daemon: reachable"
  fi
  local f
  for f in "$REPO_ROOT/Dockerfile" "$KIND_CONFIG" "$SCRIPT_DIR/migrations/Dockerfile" \
    "$MANIFESTS/postgres.yaml" "$MANIFESTS/app.yaml"; do
    if [[ ! -f "$f" ]]; then
      if ((E2E_DRY_RUN)); then warn "missing file: $f"; else die "missing file: $f"; fi
    fi
  done
  if [[ ! -f "$CHART_DIR/Chart.yaml" && ! -f "$INSTALL_MANIFEST" ]]; then
    if ((E2E_DRY_RUN)); then
      warn "neither $CHART_DIR/Chart.yaml nor $INSTALL_MANIFEST exists yet"
    else
      die "nothing to install the webhook from: neither $CHART_DIR/Chart.yaml nor $INSTALL_MANIFEST exists"
    fi
  fi
  info "repo root: $REPO_ROOT"
  info "cluster: $KIND_CLUSTER (context $KCTX); webhook namespace: $WEBHOOK_NAMESPACE; app namespace: $APP_NAMESPACE"
}

create_cluster() {
  step "Create kind cluster '$KIND_CLUSTER'"
  local args=(kind create cluster --name "$KIND_CLUSTER" --config "$KIND_CONFIG" --wait 120s)
  [[ -n "$KIND_NODE_IMAGE" ]] && args+=(--image "$KIND_NODE_IMAGE")
  if ((E2E_DRY_RUN == 0)) && kind get clusters 2>/dev/null | grep -x -- "$KIND_CLUSTER" >/dev/null; then
    info "kind cluster $KIND_CLUSTER already exists: reusing it (it will not be deleted)"
  else
    CLUSTER_CREATED=1
    run "${args[@]}"
  fi
  CLUSTER_USABLE=1
  run "${E2E_KUBECTL[@]}" cluster-info
  run "${E2E_KUBECTL[@]}" wait --for=condition=Ready nodes --all --timeout="${TIMEOUT}s"
}

build_images() {
  step "Build the webhook image $WEBHOOK_IMAGE from $REPO_ROOT/Dockerfile"
  if [[ "$SKIP_BUILD" == 1 ]]; then
    info "SKIP_BUILD=1: using the local image $WEBHOOK_IMAGE"
    run docker image inspect --format '{{.Id}}' "$WEBHOOK_IMAGE"
  else
    run docker build -t "$WEBHOOK_IMAGE" "$REPO_ROOT"
  fi

  step "Build the admission load generator (examples/admission_load)"
  run cargo build --quiet --locked --manifest-path "$REPO_ROOT/Cargo.toml" --example admission_load

  step "Build the migrations image $MIGRATIONS_IMAGE (base $ATLAS_IMAGE)"
  run docker build --build-arg "ATLAS_IMAGE=$ATLAS_IMAGE" -t "$MIGRATIONS_IMAGE" "$SCRIPT_DIR/migrations"
  # The image must declare a numeric non-root user: the injected securityContext says runAsNonRoot.
  expect "migrations image USER" "65532:65532" docker image inspect --format '{{.Config.User}}' "$MIGRATIONS_IMAGE"
  checkpoint "migrations image"
  # The same plus the failing migration of tests/e2e/migrations-failing (the failing-migration step).
  local broken_ctx="${TMPDIR:-/tmp}/migration-injector-kind-broken"
  run rm -rf "$broken_ctx"
  run cp -r "$SCRIPT_DIR/migrations" "$broken_ctx"
  run cp "$SCRIPT_DIR/../migrations-failing/20240103000000_create_comments.sql" "$broken_ctx/migrations/"
  run docker build --build-arg "ATLAS_IMAGE=$ATLAS_IMAGE" -t "$MIGRATIONS_BROKEN_IMAGE" "$broken_ctx"

  step "Load images into kind"
  run kind load docker-image "$WEBHOOK_IMAGE" --name "$KIND_CLUSTER"
  run kind load docker-image "$MIGRATIONS_IMAGE" --name "$KIND_CLUSTER"
  run kind load docker-image "$MIGRATIONS_BROKEN_IMAGE" --name "$KIND_CLUSTER"
}

# install_cert_manager: cert-manager CERT_MANAGER_VERSION from its release manifest, ready when its
# three Deployments are Available and its webhook answers (a server-side dry-run create of an
# Issuer succeeds, retried: the API server reaches cert-manager's webhook only once cainjector has
# put its CA into the webhook configurations). The certManager switches (cluster/tls.sh) need it.
install_cert_manager() {
  step "Install cert-manager $CERT_MANAGER_VERSION (for the tls.mode=certManager switches)"
  if [[ "$SKIP_CERT_MANAGER" == 1 ]]; then
    info "SKIP_CERT_MANAGER=1: cert-manager is not installed; the tls.mode=certManager switches are skipped"
    return 0
  fi
  local url="https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
  run "${E2E_KUBECTL[@]}" apply -f "$url"
  CERT_MANAGER_INSTALLED=1
  run "${E2E_KUBECTL[@]}" -n cert-manager wait --for=condition=Available --timeout="${TIMEOUT}s" \
    deployment/cert-manager deployment/cert-manager-cainjector deployment/cert-manager-webhook
  local issuer probe=("${E2E_KUBECTL[@]}" -n default create --dry-run=server -f -)
  issuer='{"apiVersion": "cert-manager.io/v1", "kind": "Issuer",
    "metadata": {"name": "e2e-cert-manager-probe"}, "spec": {"selfSigned": {}}}'
  printf '    $ <Issuer e2e-cert-manager-probe, selfSigned> | %s\n' "$(cmdline "${probe[@]}")"
  info "  (repeated until it succeeds, at most ${TIMEOUT}s: cert-manager's webhook answers)"
  ((E2E_DRY_RUN)) && return 0
  local deadline=$((SECONDS + TIMEOUT)) out
  until out="$("${probe[@]}" <<<"$issuer" 2>&1)"; do
    ((SECONDS < deadline)) || die "cert-manager's webhook does not answer after ${TIMEOUT}s: $out"
    sleep 2
  done
  info "  ok   cert-manager's webhook answers ($out)"
}

# install_from_manifest: without a chart, manifests/install.yaml with its image pointed at the
# locally loaded one (with a chart, the scenario list installs it).
install_from_manifest() {
  step "Install the webhook from $INSTALL_MANIFEST (no $CHART_DIR/Chart.yaml)"
  local sed_args=(sed -E
    -e "s#^([[:space:]]*(- )?image:[[:space:]]*)\"?[^\"[:space:]]*migration-injector[^\"[:space:]]*\"?#\\1$WEBHOOK_IMAGE#"
    -e 's#(imagePullPolicy:[[:space:]]*)"?Always"?#\1IfNotPresent#'
    "$INSTALL_MANIFEST")
  printf '    $ %s | %s apply -f -\n' "$(cmdline "${sed_args[@]}")" "$(cmdline "${E2E_KUBECTL[@]}")"
  if ((E2E_DRY_RUN == 0)); then
    "${sed_args[@]}" | "${E2E_KUBECTL[@]}" apply -f -
  fi
  local get=("${E2E_KUBECTL[@]}" get -f "$INSTALL_MANIFEST"
    -o 'jsonpath={range .items[?(@.kind=="Deployment")]}{.metadata.namespace}{"/"}{.metadata.name}{"\n"}{end}')
  show "${get[@]}"
  info "  then, for each Deployment: ${E2E_KUBECTL[*]} -n <namespace> rollout status deployment/<name> --timeout=${TIMEOUT}s"
  if ((E2E_DRY_RUN == 0)); then
    local deployments ns name found=0
    deployments="$("${get[@]}")"
    while IFS=/ read -r ns name; do
      [[ -n "$name" ]] || continue
      found=1
      run "${E2E_KUBECTL[@]}" -n "${ns:-default}" rollout status "deployment/$name" --timeout="${TIMEOUT}s"
    done <<<"$deployments"
    ((found)) || die "$INSTALL_MANIFEST declares no Deployment"
  fi
  run "${E2E_KUBECTL[@]}" get mutatingwebhookconfigurations
}


parse_args() {
  while (($#)); do
    case "$1" in
      --dry-run | --print | -n) E2E_DRY_RUN=1 ;;
      --keep-cluster) KEEP_CLUSTER=1 ;;
      -h | --help) usage; exit 0 ;;
      *) printf 'unknown argument: %s\n\n' "$1" >&2; usage >&2; exit 2 ;;
    esac
    shift
  done
}

main() {
  parse_args "$@"
  e2e_context_freeze
  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  if ((E2E_DRY_RUN)); then
    printf '==> DRY RUN (--dry-run): printing the steps and commands; nothing is executed\n'
  fi
  preflight
  create_cluster
  build_images
  local extra=() cert_manager=0
  if [[ -f "$CHART_DIR/Chart.yaml" ]]; then
    install_cert_manager
    cert_manager=$CERT_MANAGER_INSTALLED
  else
    install_from_manifest
  fi
  [[ -n "$HELM_EXTRA_ARGS" ]] && read -r -a extra <<<"$HELM_EXTRA_ARGS"
  # What differs from the node: Atlas, images loaded into kind (pull policy Never), cluster DNS.
  e2e_scenarios app_ns="$APP_NAMESPACE" app_labels="$APP_NAMESPACE_LABELS" tool=atlas \
    image="$MIGRATIONS_IMAGE" broken_image="$MIGRATIONS_BROKEN_IMAGE" pull_policy=Never db_host=dns \
    release="$WEBHOOK_NAMESPACE/$HELM_RELEASE" chart="$CHART_DIR" webhook_image="$WEBHOOK_IMAGE" \
    expect_security_context="$EXPECT_SECURITY_CONTEXT" skip_rerun="$SKIP_RERUN" cert_manager="$cert_manager" \
    -- --set "image.repository=$WEBHOOK_IMAGE_REPO" --set "image.tag=$WEBHOOK_IMAGE_TAG" \
    --set image.pullPolicy=Never "${extra[@]}"
  availability_report
}

# RUN_SH_SOURCE_ONLY=1: only define the functions (check.sh tests the assertions this way).
if [[ "${RUN_SH_SOURCE_ONLY:-0}" != 1 ]]; then
  main "$@"
fi
