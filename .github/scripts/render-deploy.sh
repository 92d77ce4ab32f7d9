#!/usr/bin/env bash
# Trigger Render deploy hooks, one per service, in the order given, and wait until each deploy is live.
#
#   render-deploy.sh order=<hook url> payment=<hook url> ... orchestrator=<hook url>
#
# A hook URL is a secret (anyone holding it can deploy): it is never printed. Each hook answers with the
# deploy it started ({"deploy": {"id": "dep-..."}}); with RENDER_API_KEY set, the script then polls
# GET $RENDER_API/services/<srv-id>/deploys/<dep-id> until the deploy is `live`, and fails on a failed,
# cancelled or deactivated deploy or after DEPLOY_TIMEOUT seconds. Without RENDER_API_KEY it only
# triggers, and says so. With IMAGE_PREFIX and IMAGE_DIGEST set (image-backed Render services), each hook
# gets imgURL=<IMAGE_PREFIX>-<name>@<IMAGE_DIGEST>, so Render runs exactly the image CD pushed.
set -euo pipefail

RENDER_API="${RENDER_API:-https://api.render.com/v1}"
DEPLOY_TIMEOUT="${DEPLOY_TIMEOUT:-900}"
POLL_INTERVAL="${POLL_INTERVAL:-10}"

json_field() {  # json_field '<python expression on d>' < json
  python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"
}

wait_live() {  # wait_live <name> <service id> <deploy id>
  local name=$1 service=$2 deploy=$3 status deadline=$((SECONDS + DEPLOY_TIMEOUT))
  while true; do
    status=$(curl -fsS --max-time 20 -H "Authorization: Bearer ${RENDER_API_KEY}" -H "Accept: application/json" \
      "${RENDER_API}/services/${service}/deploys/${deploy}" | json_field 'd.get("status", "")')
    case "$status" in
      live) echo "render-deploy: ${name}: ${deploy} is live"; return 0 ;;
      build_failed | update_failed | pre_deploy_failed | canceled | deactivated)
        echo "render-deploy: ${name}: ${deploy} ended ${status}" >&2; return 1 ;;
    esac
    if ((SECONDS >= deadline)); then
      echo "render-deploy: ${name}: ${deploy} still '${status}' after ${DEPLOY_TIMEOUT}s" >&2
      return 1
    fi
    sleep "$POLL_INTERVAL"
  done
}

if (($# == 0)); then
  echo "usage: render-deploy.sh name=<deploy hook url>..." >&2
  exit 2
fi
for pair in "$@"; do
  name=${pair%%=*}
  hook=${pair#*=}
  if [[ -z "$hook" || "$pair" != *=* ]]; then
    echo "render-deploy: no deploy hook for ${name} (set the secret RENDER_DEPLOY_HOOK_${name^^})" >&2
    exit 2
  fi
  if [[ -n "${IMAGE_PREFIX:-}" && -n "${IMAGE_DIGEST:-}" ]]; then
    separator='?'; [[ "$hook" == *\?* ]] && separator='&'
    hook="${hook}${separator}imgURL=${IMAGE_PREFIX}-${name}@${IMAGE_DIGEST}"
  fi
  service=$(sed -nE 's#.*/deploy/(srv-[A-Za-z0-9]+).*#\1#p' <<<"$hook")
  answer=$(curl -fsS --max-time 30 -X POST "$hook") || {
    echo "render-deploy: ${name}: the deploy hook failed" >&2
    exit 1
  }
  deploy=$(json_field '(d.get("deploy") or {}).get("id", "")' <<<"$answer" 2>/dev/null || true)
  echo "render-deploy: ${name}: triggered ${deploy:-a deploy}"
  if [[ -z "${RENDER_API_KEY:-}" ]]; then
    echo "render-deploy: ${name}: RENDER_API_KEY is not set, not waiting for the deploy to go live"
  elif [[ -z "$service" || -z "$deploy" ]]; then
    echo "render-deploy: ${name}: the hook did not name its service and deploy; cannot wait for it" >&2
    exit 1
  else
    wait_live "$name" "$service" "$deploy"
  fi
done
