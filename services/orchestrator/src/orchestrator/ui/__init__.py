"""The saga timeline web UI at `/ui`: server-rendered pages (Jinja2, a little vendored htmx, plain CSS).

Each orchestrator instance serves it next to the REST API, with the same API keys and roles: `client`
reads, `admin` also retries and cancels. The modules: `timeline` (what a saga page shows, derived from
the read model, pure) and `routes` (the pages, sign-in, CSRF, and `install`, which the API calls).
"""

from orchestrator.ui.routes import CSRF_COOKIE, SESSION_COOKIE, install, session_key

__all__ = ["CSRF_COOKIE", "SESSION_COOKIE", "install", "session_key"]
