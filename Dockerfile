# syntax=docker/dockerfile:1
# Build: docker build -t portcullis .
# Run:   docker run -p 8080:8080 -p 9090:9090 \
#          -v $PWD/portcullis.yaml:/etc/portcullis/portcullis.yaml:ro \
#          -e PORTCULLIS_SESSION_SECRET=... portcullis

FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY templates ./templates
COPY benches ./benches
RUN cargo build --release --locked --bin portcullis

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/portcullis --create-home portcullis
COPY --from=builder /src/target/release/portcullis /usr/local/bin/portcullis
COPY config.example.yaml /etc/portcullis/portcullis.example.yaml
USER portcullis
WORKDIR /var/lib/portcullis
ENV PORTCULLIS_CONFIG=/etc/portcullis/portcullis.yaml
EXPOSE 8080 8443 9090
# The admin listener must listen on an address reachable inside the
# container (e.g. 0.0.0.0:9090) for this check.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
  CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["run"]
