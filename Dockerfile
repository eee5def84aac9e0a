# Builds fleetd, fleet-agent and fleetctl (the default, last stage) and the `s3` stage. Used by
# docker-compose.yml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins

# The S3-compatible store of docker-compose.yml (`s3` service): s3s-fs, the server the S3 tests
# run against (0.14.1 builds with this toolchain).
FROM rust:1-bookworm AS s3
RUN cargo install --locked s3s-fs@0.14.1 --features binary

FROM debian:bookworm-slim
# The system CA store: agents and fleetctl verify public HTTPS (S3 downloads) against it when no
# --ca is given.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/fleetd /src/target/release/fleet-agent /src/target/release/fleetctl /src/target/release/fleet-sample-app /usr/local/bin/
VOLUME /var/lib/fleetd
EXPOSE 7878 1883
ENTRYPOINT ["fleetd"]
