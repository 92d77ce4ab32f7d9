#!/bin/sh
# One-shot job of compose.yaml (service `secrets`): fill the `secrets` volume, which every container that
# reads a secret mounts read-only at /run/secrets, so that `docker compose up` needs no step before it.
#
# The names are those of deploy/secrets/<name>.txt.example, mounted read-only at /run/secrets-seed. For
# each name, in this order: a value already in the volume is kept (a database was initialised with it, so
# it must not change under it); else a value the operator wrote to deploy/secrets/<name>.txt
# (deploy/secrets/generate.sh, or by hand) is copied; else 32 random bytes are drawn. To replace a secret, remove the volume together
# with the database volumes (`docker compose down -v`). No value is ever printed.
#
# Files are world-readable inside the volume, which only this project's containers mount: the postgres,
# grafana, prometheus and sagaline users that read them all differ.
set -eu
seed="${INIT_SEED_DIR:-/run/secrets-seed}"
target="${1:-/run/secrets}"
umask 022
for example in "$seed"/*.txt.example; do
  if [ ! -e "$example" ]; then
    echo "init-secrets: no $seed/*.txt.example: mount deploy/secrets there" >&2
    exit 2
  fi
  name="$(basename "$example" .txt.example)"
  if [ -s "$target/$name" ]; then
    if [ -s "$seed/$name.txt" ] && ! cmp -s "$seed/$name.txt" "$target/$name"; then
      echo "secrets: $name: deploy/secrets/$name.txt differs from the value in use, which is kept"
    else
      echo "secrets: $name kept"
    fi
  elif [ -s "$seed/$name.txt" ]; then
    cp "$seed/$name.txt" "$target/$name.new"
    mv "$target/$name.new" "$target/$name"
    echo "secrets: $name from deploy/secrets/$name.txt"
  else
    # URL-safe base64 without padding: nothing that needs quoting in a URL or a shell.
    head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' > "$target/$name.new"
    mv "$target/$name.new" "$target/$name"
    echo "secrets: $name generated"
  fi
  chmod 0644 "$target/$name"
done
