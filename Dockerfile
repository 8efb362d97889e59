# syntax=docker/dockerfile:1
# migration-injector: a static (musl) binary on distroless, running as 65532:65532.
#   docker build -t migration-injector .
#   docker buildx build --platform linux/amd64,linux/arm64 -t migration-injector .
#   docker run --rm migration-injector --help
# Needs BuildKit (the default builder of current Docker) for the cache mounts.
#
# Packaging a binary built on the host instead (no Rust image needed; what tests/e2e/node does,
# where no registry can be reached):
#   cargo build --release --locked --target x86_64-unknown-linux-musl
#   docker build --build-arg BINARY=prebuilt -t migration-injector .
# (PREBUILT_BINARY names another path inside the context, e.g. the aarch64 build.)
# RUNTIME_BASE swaps the runtime base for an equivalent (static, CA certificates, USER 65532),
# e.g. one built locally when gcr.io is out of reach; the stage below is the same either way.
#
# Base images are pinned by digest (the tag stays for humans); bump both together.
ARG BUILDER_BASE=rust:1-bookworm@sha256:fdb91abf3cb33f1ebc84a76461d2472fd8cf606df69c181050fa7474bade2895
ARG RUNTIME_BASE=gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab
# build: compile in the builder stage; prebuilt: copy PREBUILT_BINARY from the build context.
ARG BINARY=build

FROM ${BUILDER_BASE} AS build
# Set by BuildKit for the platform being built (amd64, arm64).
ARG TARGETARCH
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac >/rust-target \
 && apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY . .
# The registry and target/ live in cache mounts (kept between builds, not in the layer), so the
# binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,id=migration-injector-target-${TARGETARCH} \
    TARGET=$(cat /rust-target) \
 && cargo build --release --locked --target "$TARGET" \
 && cp "target/$TARGET/release/migration-injector" /migration-injector

FROM scratch AS prebuilt
ARG PREBUILT_BINARY=target/x86_64-unknown-linux-musl/release/migration-injector
COPY ${PREBUILT_BINARY} /migration-injector

FROM ${BINARY} AS binary

FROM ${RUNTIME_BASE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="migration-injector" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook that injects an Atlas schema-migration init container" \
      org.opencontainers.image.source="https://github.com/migration-injector/migration-injector" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binary /migration-injector /migration-injector
USER 65532:65532
# 8443: HTTPS POST /mutate; 8080: plain-HTTP /healthz, /readyz, /metrics.
EXPOSE 8443 8080
ENTRYPOINT ["/migration-injector"]
CMD ["serve"]
