#!/bin/sh
# Deploy from CI by MQTT publish, with only mosquitto_pub, mosquitto_sub and openssl (topics.md,
# "CI requests"). Signs one request with the token (HMAC-SHA256, so the token itself never
# crosses the bus), publishes it on fleet/_ci/requests/<token id>/<hmac>, prints the progress
# answers, waits for the verdict on <reply>/result and exits like `fleetctl deploy --wait`:
# 0 succeeded, 1 refused (the answer names the field), 3 failed, 4 rolled back, 5 aborted,
# 6 timed out, 7 superseded.
#
# Environment: FLEET_TOKEN (a deploy-scoped API token), APP, VERSION, TARGET (JSON, e.g.
# '{"group":"edge-stores","selector":{"location":"us-west"}}'); optional FLEET_MQTT_HOST
# (127.0.0.1), FLEET_MQTT_PORT (1883), FLEET_MQTT_CAFILE (for TLS), STRATEGY (JSON, e.g.
# '{"type":"canary","initial_percentage":10}'), REQUEST_ID (default APP-VERSION-<CI run id>),
# TIMEOUT (seconds, 3600).
set -eu
host="${FLEET_MQTT_HOST:-127.0.0.1}"
port="${FLEET_MQTT_PORT:-1883}"
token_id="$(printf '%s' "$FLEET_TOKEN" | cut -d_ -f2)"
key="$(printf '%s' "$(printf '%s' "$FLEET_TOKEN" | cut -d_ -f3)" | sha256sum | cut -d' ' -f1)"
user="_token-$token_id"
run="${CI_PIPELINE_ID:-${GITHUB_RUN_ID:-${BUILD_NUMBER:-$(date +%s)}}}"
id="${REQUEST_ID:-$APP-$VERSION-$run}"
reply="fleet/_ci/replies/$user/$id"
strategy=""
if [ -n "${STRATEGY:-}" ]; then strategy=",\"strategy\":$STRATEGY"; fi
set -- -h "$host" -p "$port" -u "$user" -P "$FLEET_TOKEN" -q 1
if [ -n "${FLEET_MQTT_CAFILE:-}" ]; then set -- "$@" --cafile "$FLEET_MQTT_CAFILE"; fi

# Subscribe before publishing: progress is not retained, and a refused credential's answer is
# not either.
out="$(mktemp)"
mosquitto_sub "$@" -t "$reply/progress" &
progress=$!
mosquitto_sub "$@" -t "$reply/result" -C 1 -W "${TIMEOUT:-3600}" >"$out" &
verdict=$!
trap 'kill $progress 2>/dev/null || true; rm -f "$out"' EXIT
sleep 1 # let the subscriptions settle before the request goes out
body="$(printf '{"id":"%s","issued_at":%s,"deployment":{"application":"%s","version":"%s","target":%s%s}}' \
  "$id" "$(date +%s)" "$APP" "$VERSION" "$TARGET" "$strategy")"
mac="$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$key" -r | cut -d' ' -f1)"
printf '%s' "$body" | mosquitto_pub "$@" -t "fleet/_ci/requests/$token_id/$mac" -s
wait "$verdict" || true
result="$(cat "$out")"
echo "$result"
case "$result" in
  *'"outcome":"succeeded"'*) exit 0 ;;
  *'"outcome":"failed"'*) exit 3 ;;
  *'"outcome":"rolled-back"'*) exit 4 ;;
  *'"outcome":"aborted"'*) exit 5 ;;
  '') echo "no verdict within ${TIMEOUT:-3600}s on $reply/result" >&2; exit 6 ;;
  *'"outcome":"superseded"'*) exit 7 ;;
  *) exit 1 ;;
esac
