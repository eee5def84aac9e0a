#!/usr/bin/env bash
# The step of the upload-artifact action: `fleetctl artifact push` with the INPUT_* variables
# the action maps from its inputs. Writes artifact_id and sha256 to $GITHUB_OUTPUT, and
# FLEET_SERVER / FLEET_TOKEN (/ FLEET_CA) to $GITHUB_ENV so that a later deploy step of the
# same job needs no endpoint or api_key (as in the seed's workflow).
set -euo pipefail
fleetctl="${INPUT_FLEETCTL:-fleetctl}"
export FLEET_SERVER="${INPUT_ENDPOINT:?input endpoint is required}"
export FLEET_TOKEN="${INPUT_API_KEY:?input api_key is required}"
if [ -n "${INPUT_CA:-}" ]; then export FLEET_CA="$INPUT_CA"; fi
version="${INPUT_VERSION:?input version is required}"
version="${version#v}"
args=(artifact push "${INPUT_FILE:?input file is required}"
      --name "${INPUT_NAME:?input name is required}" --version "$version"
      --type "${INPUT_TYPE:-binary}")
for p in ${INPUT_PLATFORMS//,/ }; do args+=(--platform "$p"); done
if [ -n "${INPUT_SIGNING_KEY:-}" ]; then
  if [ -f "$INPUT_SIGNING_KEY" ]; then
    args+=(--sign "$INPUT_SIGNING_KEY")
  else
    key="$(mktemp)"; chmod 600 "$key"; trap 'rm -f "$key"' EXIT
    printf '%s\n' "$INPUT_SIGNING_KEY" > "$key"
    args+=(--sign "$key")
  fi
fi
meta="$("$fleetctl" --output json "${args[@]}")"
printf '%s\n' "$meta"
sha256="$(printf '%s\n' "$meta" | sed -n 's/.*"sha256": *"\([0-9a-f]\{64\}\)".*/\1/p' | head -n 1)"
{
  echo "artifact_id=${INPUT_NAME}@${version}"
  echo "sha256=${sha256}"
} >> "${GITHUB_OUTPUT:-/dev/null}"
{
  echo "FLEET_SERVER=${FLEET_SERVER}"
  echo "FLEET_TOKEN=${FLEET_TOKEN}"
  if [ -n "${FLEET_CA:-}" ]; then echo "FLEET_CA=${FLEET_CA}"; fi
} >> "${GITHUB_ENV:-/dev/null}"
