# The tomato node, built in release mode and run as an unprivileged user.
# docker build -t tomato .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tomato \
 && cp target/release/tomato /usr/local/bin/tomato

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/tomato --create-home tomato
COPY --from=build /usr/local/bin/tomato /usr/local/bin/tomato
USER tomato
WORKDIR /var/lib/tomato
ENV TOMATO_SERVER__BIND=0.0.0.0:8080 \
    TOMATO_LOG__FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["tomato"]
CMD ["serve"]
