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
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sqs2pg \
    && cp target/release/sqs2pg /usr/local/bin/sqs2pg

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
# No HEALTHCHECK: the slim image has no HTTP client; orchestrators probe /healthz and
# /readyz on port 9898 themselves (Kubernetes httpGet, Prometheus `up`).
ENTRYPOINT ["sqs2pg"]
CMD ["run"]
