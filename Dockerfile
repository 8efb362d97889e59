# syntax=docker/dockerfile:1
# migration-injector: a static (musl) binary on distroless, running as 65532:65532.
#   docker build -t migration-injector .
#   docker run --rm migration-injector --help
# Needs BuildKit (the default builder of current Docker) for the cache mounts.

FROM rust:1-bookworm AS builder
ARG TARGET=x86_64-unknown-linux-musl
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$TARGET"
WORKDIR /src
COPY . .
# The registry and target/ live in cache mounts (kept between builds, not in the layer), so the
# binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "$TARGET" \
 && cp "target/$TARGET/release/migration-injector" /migration-injector

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="migration-injector" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook that injects an Atlas schema-migration init container" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /migration-injector /migration-injector
USER 65532:65532
# 8443: HTTPS POST /mutate; 8080: plain-HTTP /healthz, /readyz, /metrics.
EXPOSE 8443 8080
ENTRYPOINT ["/migration-injector"]
CMD ["serve"]
