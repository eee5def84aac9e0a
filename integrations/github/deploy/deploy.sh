#!/usr/bin/env bash
# The step of the deploy action: `fleetctl deploy [--wait]` with the INPUT_* variables the
# action maps from its inputs. Progress is printed as fleetctl's JSON lines; deployment_id,
# state and exit_code go to $GITHUB_OUTPUT; the step exits with fleetctl's code (0 only when
# the deployment succeeded).
set -uo pipefail
fleetctl="${INPUT_FLEETCTL:-fleetctl}"
if [ -n "${INPUT_ENDPOINT:-}" ]; then export FLEET_SERVER="$INPUT_ENDPOINT"; fi
if [ -n "${INPUT_API_KEY:-}" ]; then export FLEET_TOKEN="$INPUT_API_KEY"; fi
if [ -n "${INPUT_CA:-}" ]; then export FLEET_CA="$INPUT_CA"; fi
: "${FLEET_SERVER:?no endpoint: give the endpoint input or run upload-artifact first}"
: "${FLEET_TOKEN:?no api_key: give the api_key input or run upload-artifact first}"
version="${INPUT_VERSION:?input version is required}"
version="${version#v}"
args=(deploy --app "${INPUT_APPLICATION:?input application is required}" --version "$version")
if [ -n "${INPUT_STRATEGY:-}" ]; then args+=(--strategy "$INPUT_STRATEGY"); fi
if [ -n "${INPUT_TARGET_GROUP:-}" ]; then args+=(--group "$INPUT_TARGET_GROUP"); fi
if [ -n "${INPUT_SELECTOR:-}" ]; then args+=(--selector "$INPUT_SELECTOR"); fi
if [ -n "${INPUT_DEVICES:-}" ]; then args+=(--devices "$INPUT_DEVICES"); fi
if [ -n "${INPUT_CANARY_PERCENTAGE:-}" ]; then args+=(--param "initial_percentage=$INPUT_CANARY_PERCENTAGE"); fi
if [ -n "${INPUT_INCREMENT:-}" ]; then args+=(--param "increment_percentage=$INPUT_INCREMENT"); fi
if [ -n "${INPUT_INTERVAL:-}" ]; then args+=(--param "increment_interval=$INPUT_INTERVAL"); fi
for p in ${INPUT_PARAMS:-}; do args+=(--param "$p"); done
if [ "${INPUT_WAIT:-true}" = "true" ]; then
  args+=(--wait --timeout "${INPUT_TIMEOUT:-3600}")
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
"$fleetctl" --output json "${args[@]}" | tee "$log"
code="${PIPESTATUS[0]}"
field() { sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" "$log" | head -n 1; }
deployment="$(field deployment)"
if [ -z "$deployment" ]; then deployment="$(field id)"; fi
state="$(sed -n 's/.*"event":"result".*"outcome":"\([^"]*\)".*/\1/p' "$log" | tail -n 1)"
if [ -z "$state" ] && [ "$code" = 0 ] && [ -n "$deployment" ]; then state=created; fi
{
  echo "deployment_id=${deployment}"
  echo "state=${state:-error}"
  echo "exit_code=${code}"
} >> "${GITHUB_OUTPUT:-/dev/null}"
exit "$code"
