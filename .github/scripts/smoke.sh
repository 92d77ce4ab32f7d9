#!/usr/bin/env bash
# Smoke check of a deployed Sagaline: the orchestrator's probes answer, and its REST API enforces and
# accepts API keys.
#
#   smoke.sh <base url>                      e.g. https://sagaline-orchestrator.onrender.com
#
# Waits up to SMOKE_TIMEOUT seconds (default 300) for /livez and then /readyz (a database round trip
# and a recent poll) to answer 200. Then GET /v1/sagas without a key must be 401 (authentication is
# on), and, with SMOKE_API_KEY set (a `client` key), GET /v1/sagas?limit=1 with it must be 200.
set -euo pipefail

base=${1:?usage: smoke.sh <base url>}
base=${base%/}
timeout=${SMOKE_TIMEOUT:-300}
interval=${SMOKE_INTERVAL:-5}

status_of() {  # status_of <url> [curl args...]: the HTTP status, 000 when nothing answered
  local url=$1
  shift
  curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "$@" "$url" 2>/dev/null || true
}

wait_for_200() {
  local path=$1 deadline=$((SECONDS + timeout)) code
  while true; do
    code=$(status_of "${base}${path}")
    if [[ "$code" == 200 ]]; then
      echo "smoke: ${path} 200"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      echo "smoke: ${path} answered ${code} for ${timeout}s" >&2
      return 1
    fi
    sleep "$interval"
  done
}

expect() {  # expect <status> <path> [curl args...]
  local want=$1 path=$2 code
  shift 2
  code=$(status_of "${base}${path}" "$@")
  if [[ "$code" != "$want" ]]; then
    echo "smoke: ${path} answered ${code}, expected ${want}" >&2
    return 1
  fi
  echo "smoke: ${path} ${code}"
}

wait_for_200 /livez
wait_for_200 /readyz
expect 401 /v1/sagas
if [[ -n "${SMOKE_API_KEY:-}" ]]; then
  expect 200 '/v1/sagas?limit=1' -H "Authorization: Bearer ${SMOKE_API_KEY}"
else
  echo "smoke: SMOKE_API_KEY is not set, skipping the authenticated request"
fi
echo "smoke: ${base} is up"
