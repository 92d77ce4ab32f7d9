#!/bin/sh
# Entrypoint of the Sagaline image: turn the PostgreSQL password Docker secret into PGPASSWORD, then exec.
#
# Database URLs in compose carry no password (postgresql://sagaline@postgres-order:5432/order_service);
# asyncpg takes the password from PGPASSWORD when the URL has none. The secret file is named by
# PGPASSWORD_FILE (the same file the postgres container reads through POSTGRES_PASSWORD_FILE), so the
# password lives in exactly one place and never in compose.yaml, the image, a URL, or a log line.
# Where the password is already inside the URL (Render's connectionString), leave PGPASSWORD_FILE unset.
set -eu
if [ -n "${PGPASSWORD_FILE:-}" ]; then
  if [ ! -r "$PGPASSWORD_FILE" ]; then
    echo "entrypoint: PGPASSWORD_FILE=$PGPASSWORD_FILE is not a readable file" >&2
    exit 2
  fi
  PGPASSWORD="$(cat "$PGPASSWORD_FILE")"
  export PGPASSWORD
  unset PGPASSWORD_FILE
fi
exec "$@"
