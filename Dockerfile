# Builds fleetd, fleet-agent and fleetctl. Used by docker-compose.yml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins

FROM debian:bookworm-slim
# The system CA store: agents and fleetctl verify public HTTPS (S3 downloads) against it when no
# --ca is given.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/fleetd /src/target/release/fleet-agent /src/target/release/fleetctl /src/target/release/fleet-sample-app /usr/local/bin/
VOLUME /var/lib/fleetd
EXPOSE 7878 1883
ENTRYPOINT ["fleetd"]
