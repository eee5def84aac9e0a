# Builds fleetd, fleet-agent and fleetctl. Used by docker-compose.yml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins

FROM debian:bookworm-slim
COPY --from=build /src/target/release/fleetd /src/target/release/fleet-agent /src/target/release/fleetctl /src/target/release/fleet-sample-app /usr/local/bin/
VOLUME /var/lib/fleetd
EXPOSE 7878 1883
ENTRYPOINT ["fleetd"]
