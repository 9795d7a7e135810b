# One image for the whole backend: /usr/local/bin holds gateway, chat-core,
# agent-worker and the all-in-one `chat`; the command picks the service:
#
#   docker build -t chat-backend .
#   docker run --rm -p 3006:3006 chat-backend                  # all-in-one on SQLite
#   docker run --rm chat-backend chat-core migrate              # apply migrations, exit
#   docker run --rm chat-backend gateway --help                 # any service's flags
#   docker build --target dev -t chat-backend:dev .             # toolchain for compose/docker-compose.dev.yml
#
# No protoc (protos compile with pure-Rust protox) and no OpenSSL (rustls).

# rust:1-bookworm is the newest stable on Debian 12 (the workspace needs >= 1.88);
# pin e.g. RUST_VERSION=1.88 for reproducible builds. The runtime is Debian 12 too,
# so the glibc the binaries link against matches.
ARG RUST_VERSION=1
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12

# ---- chef: the toolchain plus cargo-chef, shared by the planner and the builder
FROM rust:${RUST_VERSION}-bookworm AS chef
# Empty installs the newest cargo-chef; set e.g. 0.1.77 to pin it.
ARG CARGO_CHEF_VERSION=
RUN cargo install --locked cargo-chef ${CARGO_CHEF_VERSION:+--version "$CARGO_CHEF_VERSION"}
WORKDIR /src
# Stripped binaries of the `production` profile (release with whole-program
# LTO, see Cargo.toml) without debug info. Set here, so the dependency layer
# and the final build use the same profile (otherwise all is rebuilt).
ENV CARGO_PROFILE_PRODUCTION_STRIP=symbols \
    CARGO_PROFILE_PRODUCTION_DEBUG=false \
    CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never

# ---- planner: reduce the workspace to its manifests and lockfile (recipe.json).
# Its output changes only when dependencies change, not when sources do.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---- builder: dependencies first (a cached layer), then the workspace itself
FROM chef AS builder
ARG PACKAGES="-p gateway -p chat-core -p agent-worker -p chat-allinone"
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --profile production --locked --recipe-path recipe.json ${PACKAGES}
COPY . .
RUN cargo build --profile production --locked ${PACKAGES} \
        --bin gateway --bin chat-core --bin agent-worker --bin chat \
 && mkdir -p /out/bin /out/app/data \
 && cp target/production/gateway target/production/chat-core \
       target/production/agent-worker target/production/chat /out/bin/

# ---- dev: the toolchain with the sources bind-mounted at /src (see
# compose/docker-compose.dev.yml); cargo-watch rebuilds and restarts on change.
FROM rust:${RUST_VERSION}-bookworm AS dev
RUN cargo install --locked cargo-watch
WORKDIR /src
# Build output outside the mounted sources, in a volume of its own.
ENV CARGO_TARGET_DIR=/target \
    GATEWAY_LISTEN=0.0.0.0:3006 \
    CHAT_CORE_LISTEN=0.0.0.0:50051 \
    AGENT_WORKER_LISTEN=0.0.0.0:50052
EXPOSE 3006 9000 9001 9002 50051 50052
# The all-in-one; compose runs each service with `cargo run -p <service>`.
CMD ["cargo", "run", "--locked", "--bin", "chat"]

# ---- runtime: glibc, libgcc and CA certificates; no shell, no package manager
FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=builder /out/bin/ /usr/local/bin/
# Working directory of the all-in-one, whose SQLite file and generated token
# secret go to ./data; owned by the unprivileged user the services run as.
COPY --from=builder --chown=10001:10001 /out/app/ /app/
WORKDIR /app
USER 10001:10001
# Containers listen on every interface; the admin listeners (/healthz, /readyz,
# /metrics) keep their per-service loopback defaults unless ADMIN_LISTEN is set.
ENV GATEWAY_LISTEN=0.0.0.0:3006 \
    CHAT_CORE_LISTEN=0.0.0.0:50051 \
    AGENT_WORKER_LISTEN=0.0.0.0:50052
# gateway HTTP, chat-core gRPC, agent-worker gRPC, then the admin listeners.
EXPOSE 3006 50051 50052 9000 9001 9002
# `chat healthcheck [URL]` exits 0 on a 2xx answer (the image has no curl).
# The default URL is the gateway's (and all-in-one's) http://127.0.0.1:9000/healthz;
# compose gives chat-core (9001) and agent-worker (9002) their own.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["chat", "healthcheck"]
LABEL org.opencontainers.image.title="chat-backend" \
      org.opencontainers.image.description="gateway, chat-core, agent-worker and the all-in-one chat" \
      org.opencontainers.image.licenses="Apache-2.0"
CMD ["chat"]
