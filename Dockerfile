# syntax=docker/dockerfile:1
# The sqs2pg service image: `docker build -t sqs2pg .`, or let `docker compose up` build it.
#
# Build stage: the release binary, built from the lock file. The cache mounts keep the
# registry and target/ between builds (the AWS SDK takes minutes to compile).
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Embedded into the binary by refinery::embed_migrations!.
COPY migrations ./migrations
# Declared in Cargo.toml, so Cargo needs it present to read the manifest.
COPY benches ./benches
# Stripped of its debug info (113 MB of the release build's 135.5 MB, leaving 27.5 MB):
# every pod that autoscaling starts pulls the image. The symbol table stays, so a panic's
# backtrace still names its functions; the full debug info is kept apart, in this stage
# only, for symbolizing addresses (`docker build --target builder`, then copy
# /usr/local/bin/sqs2pg.debug out of it).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sqs2pg \
    && objcopy --only-keep-debug target/release/sqs2pg /usr/local/bin/sqs2pg.debug \
    && objcopy --strip-debug --add-gnu-debuglink=/usr/local/bin/sqs2pg.debug \
       target/release/sqs2pg /usr/local/bin/sqs2pg

# Runtime stage: the binary, CA certificates for TLS to AWS, and a user without privileges.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin sqs2pg
COPY --from=builder /usr/local/bin/sqs2pg /usr/local/bin/sqs2pg
USER sqs2pg:sqs2pg
# Inside a container, /metrics, /healthz and /readyz must listen beyond loopback.
ENV SQS2PG_METRICS_ADDR=0.0.0.0:9898
EXPOSE 9898
# Ready means /readyz answers 200 (database and SQS reachable, not shutting down). The slim
# image has no curl: the binary asks itself. Kubernetes ignores this and probes over HTTP.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/sqs2pg", "healthcheck"]
ENTRYPOINT ["sqs2pg"]
CMD ["run"]
