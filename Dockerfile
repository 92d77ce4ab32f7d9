# syntax=docker/dockerfile:1.7
# One image for every Sagaline process; compose.yaml and render.yaml pick the process with the command:
#   sagaline serve orchestrator|order|payment|inventory      (or python -m orchestrator|order_service|...)
#   python /app/deploy/docker/migrate.py <service>            (one-shot migration + demo seed)
# The image healthcheck probes /livez on $HEALTHCHECK_PORT (8080 for an orchestrator, 9101/9102/9103 for
# the order/payment/inventory services): set it per service, as compose.yaml does.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The uv that wrote uv.lock; any uv that reads lockfile revision 3 works.
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---- builder: resolve nothing, install exactly uv.lock into /app/.venv -------------------------------
FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app

# Third-party dependencies first, from the lock file and the workspace manifests only, so this layer is
# rebuilt when a dependency changes and not on every source edit. Every workspace member must be listed.
COPY pyproject.toml uv.lock README.md ./
COPY libs/contracts/pyproject.toml libs/contracts/
COPY libs/servicekit/pyproject.toml libs/servicekit/
COPY services/order/pyproject.toml services/order/
COPY services/payment/pyproject.toml services/payment/
COPY services/inventory/pyproject.toml services/inventory/
COPY services/orchestrator/pyproject.toml services/orchestrator/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-packages --no-install-workspace

# Then the workspace itself. Members stay editable installs on purpose: each service finds its SQL
# migrations beside its source (services/<name>/migrations), so the source tree ships as /app.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-packages \
 && python -m compileall -q src libs/*/src services/*/src deploy/docker

# ---- runtime: slim Python, no build tools, no uv, a non-root user ----------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="sagaline" \
      org.opencontainers.image.description="Sagaline distributed saga orchestrator and its participant services"
RUN groupadd --system --gid 10001 sagaline \
 && useradd --system --uid 10001 --gid sagaline --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin sagaline
# Owned by root and read-only for the process user: the application cannot rewrite its own code.
COPY --from=builder /app /app
WORKDIR /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HEALTHCHECK_PORT=8080
USER sagaline:sagaline
# orchestrator REST + /metrics; participants' HTTP (/livez /readyz /metrics) and gRPC ports.
EXPOSE 8080 9101 9102 9103 50051 50052 50053
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HEALTHCHECK_PORT', '8080') + '/livez', timeout=2)"]
ENTRYPOINT ["/bin/sh", "/app/deploy/docker/entrypoint.sh"]
CMD ["sagaline", "serve", "orchestrator"]
