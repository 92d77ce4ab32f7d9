#!/bin/sh
# Optional: choose compose's secrets on the host (deploy/secrets/<name>.txt), each a fresh random value.
# Without them the `secrets` job of compose.yaml draws its own on the first `up`; with them, written before
# that first `up`, it copies these instead (deploy/docker/init-secrets.sh).
# Existing files are kept, so running this again never changes a password a database was created with.
# The files are ignored by git (deploy/secrets/.gitignore). They are made world-readable on purpose:
# compose bind-mounts them into containers whose users (postgres, grafana, the non-root sagaline user)
# differ from yours; keep the machine itself private, or use your own secret store in production.
set -eu
cd "$(dirname "$0")"
for example in *.txt.example; do
  name="${example%.example}"
  if [ -s "$name" ]; then
    echo "kept    deploy/secrets/$name"
    continue
  fi
  # 32 random bytes, URL-safe base64 without padding: no character that needs quoting in a URL or shell.
  value="$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  (umask 022 && printf '%s\n' "$value" > "$name")
  chmod 0644 "$name"
  echo "created deploy/secrets/$name"
done
echo "API keys: Authorization: Bearer \$(cat deploy/secrets/api_key_client.txt)  (admin: api_key_admin.txt)"
