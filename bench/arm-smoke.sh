#!/usr/bin/env bash
# ARM smoke test and footprint of fleet-agent: cross-builds the agent for aarch64 and armv7
# Linux, runs each build under qemu-user against a real broker (the embedded one, through the
# footprint test in agent/tests/footprint.rs: the agent connects, supervises one app, reports it
# running), and prints stripped binary size, idle RSS and idle CPU time per hour. A native run
# gives the figures without the emulator's overhead. Installs what it needs on Debian (as root).
#
#   bench/arm-smoke.sh            # both targets, 60 s idle window
#   FLEET_IDLE_SECS=20 bench/arm-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
declare -A qemu=([aarch64-unknown-linux-gnu]="qemu-aarch64 -L /usr/aarch64-linux-gnu"
                 [armv7-unknown-linux-gnueabihf]="qemu-arm -L /usr/arm-linux-gnueabihf")

need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
rustup target add "${targets[@]}" >/dev/null

export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc
cargo build --release -p fleet-agent --bin fleet-agent "${targets[@]/#/--target=}"
cargo build --release -p fleet-agent --bin fleet-agent

printf '\n%-34s %10s\n' "binary (release, stripped)" "bytes"
printf '%-34s %10s\n' "x86_64-unknown-linux-gnu" "$(stat -c %s target/release/fleet-agent)"
for t in "${targets[@]}"; do
  printf '%-34s %10s\n' "$t" "$(stat -c %s "target/$t/release/fleet-agent")"
done

# The size bounds (agent/tests/footprint.rs): both ARM builds must be there, stripped, in budget.
FLEET_FOOTPRINT_TARGETS="$(IFS=,; echo "${targets[*]}")" \
  cargo test -q -p fleet-agent --test footprint -- release_binaries

run() {
  FLEET_IDLE_SECS="${FLEET_IDLE_SECS:-60}" FLEET_AGENT_BIN="$1" FLEET_AGENT_RUNNER="${2:-}" \
    cargo test -q -p fleet-agent --test footprint -- --ignored --nocapture 2>&1 |
    grep -E '^FOOTPRINT|panicked|FAILED' || { echo "smoke test failed for $1"; return 1; }
}
echo
echo "native x86_64: $(run "$PWD/target/release/fleet-agent")"
for t in "${targets[@]}"; do
  echo "$t under qemu-user: $(run "$PWD/target/$t/release/fleet-agent" "${qemu[$t]}")"
done
