# The coordinator image: `bertsweep` (serve and the CLI verbs). No libtorch, no shell.
# From the repository root:
#   docker build -f deploy/docker/coordinator.Dockerfile -t bertsweep-coordinator:0.1.0 .
#
# Base images are pinned by tag and digest. The digests were copied from public Dockerfiles
# that pin the same tags (no registry was reachable where this file was written). To move to a
# newer build of a tag: `docker buildx imagetools inspect IMAGE:TAG` and replace the digest.
# tests/tests/deploy_commands.rs runs the ENTRYPOINT + CMD and HEALTHCHECK lines below:
# keep them JSON arrays.

FROM rust:1.95.0-trixie@sha256:0861191076afc8e2dfcf0bec6ad6c2dec8494b3a1e9249729e1989690afed5ec AS build
# rust-toolchain.toml also lists rustfmt and clippy, which a release build does not need;
# naming the toolchain keeps rustup from downloading them.
ENV RUSTUP_TOOLCHAIN=1.95.0 CARGO_INCREMENTAL=0
WORKDIR /src
COPY . .
# The cache mounts keep crates and build output between builds; the binary leaves them in /out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=bertsweep-coordinator-target \
    cargo build --locked --release -p bertsweep-coordinator \
    && install -D -m 0755 target/release/bertsweep /out/bertsweep \
    && install -d -m 0700 /out/state

# distroless/cc: glibc, libgcc and CA certificates, Debian 13 like the builder; user 65532.
FROM gcr.io/distroless/cc-debian13:nonroot@sha256:54df941ed0d06a1bd95ef5e0ce391fd8d9f94b64782dc9a60062727849ee3f97
COPY --from=build /out/bertsweep /usr/local/bin/bertsweep
# The database and the blob store (uploaded inputs, kept models) live on this volume.
COPY --from=build --chown=65532:65532 /out/state /var/lib/bertsweep
USER 65532:65532
# What `bertsweep health` (and `docker exec … bertsweep study list`) dial by default: the
# server's own TLS port, so its certificate needs a `localhost` SAN. For a plaintext
# coordinator set BERTSWEEP_COORDINATOR=http://localhost:50051 when starting the container.
ENV BERTSWEEP_COORDINATOR=https://localhost:50051 BERTSWEEP_CA_CERT=/run/secrets/ca.crt
# 50051: gRPC (TLS); 9464: Prometheus /metrics (plain HTTP, no token: publish it only to the scraper).
EXPOSE 50051 9464 8080
VOLUME ["/var/lib/bertsweep"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/bertsweep", "health"]
ENTRYPOINT ["/usr/local/bin/bertsweep"]
# Secrets are read from /run/secrets (Compose and Swarm mount them there).
CMD ["serve", "--listen", "0.0.0.0:50051", "--db", "sqlite:///var/lib/bertsweep/bertsweep.db", "--token-file", "/run/secrets/token", "--tls-cert", "/run/secrets/tls.crt", "--tls-key", "/run/secrets/tls.key", "--metrics-listen", "0.0.0.0:9464", "--http", "0.0.0.0:8080"]
