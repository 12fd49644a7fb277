"""The one web app eventops serves: the live dashboard and its API, plus the routers of other
duties when they are installed (Web Vitals ingestion under /ingest, Prometheus /metrics).

    eventops dashboard --port 8600

(`uvicorn --factory web.app:create_app` also serves it, but then pass --no-proxy-headers,
or --forwarded-allow-ips with your proxies: uvicorn's default believes X-Forwarded-For
from loopback, which `eventops dashboard` does only for EVENTOPS_TRUSTED_PROXIES.)

The ingestion and metrics routers carry their own token auth (machines call them); every
other route needs a dashboard session.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from models import db
from models.config import EventopsConfig
from web import dashboard
from web.auth import Auth, LoginRequired
from workers.settings import Settings, get_config, get_settings

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"

# Everything the page loads is its own: no inline script, no third-party origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

# (module, attribute, prefix to mount under when the router has none of its own)
OPTIONAL_ROUTERS = (("web.ingest", "router", "/ingest"), ("web.metrics", "router", ""))


def create_app(settings: Settings | None = None, config: EventopsConfig | None = None) -> FastAPI:
    settings = settings or get_settings()
    if settings.database_url:
        db.configure(settings.database_url)
    app = FastAPI(
        title="eventops dashboard",
        version="1",
        description=(
            "The live dashboard's HTTP API. Every route needs a dashboard session (log in at "
            "/login); state changes also need the page's CSRF token in `X-CSRF-Token`. "
            "See docs/dashboard.md."
        ),
        # The schema is served behind the login below; no third-party Swagger UI assets.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.auth = Auth(settings)
    app.state.get_config = (lambda: config) if config is not None else get_config
    app.state.panel_cache = {}
    app.state.mounted = mount_optional_routers(app)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, error: LoginRequired) -> Response:
        from urllib.parse import quote

        return RedirectResponse(f"/login?next={quote(error.next_path, safe='')}", 303)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(request: Request) -> JSONResponse:
        app.state.auth.require_api(request)
        return JSONResponse(app.openapi())

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        """Liveness for compose and load balancers; says nothing about the platform."""
        return {"status": "ok"}

    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def mount_optional_routers(app: FastAPI) -> list[str]:
    """Include other duties' routers that exist; a missing module is simply not mounted."""
    mounted = []
    for module_name, attribute, prefix in OPTIONAL_ROUTERS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise  # the module exists but is broken: say so, do not hide it
            continue
        router: Any = getattr(module, attribute, None)
        if router is None:
            continue
        # A router that already carries its prefix is mounted as it is.
        own_prefix = getattr(router, "prefix", "")
        app.include_router(router, prefix="" if own_prefix else prefix)
        mounted.append(module_name)
    return mounted


def openapi_document() -> dict[str, Any]:
    """The dashboard API's schema as docs/openapi.json holds it: the dashboard's routes only,
    so other duties' routers (documented by their owners) never make the file stale."""
    from fastapi.openapi.utils import get_openapi

    app = create_app(_schema_settings(), config=None)
    routes = [r for r in dashboard.router.routes if getattr(r, "path", "").startswith("/api/")]
    return get_openapi(
        title=app.title, version=app.version, description=app.description, routes=routes
    )


def _schema_settings() -> Settings:
    """Settings for building the schema only: no database, a throwaway secret."""
    import tempfile

    from pydantic import SecretStr

    return Settings(
        database_url=None,
        broker_url=None,
        var_dir=Path(tempfile.gettempdir()),
        dashboard_password=SecretStr("schema-only"),
        dashboard_secret=SecretStr("schema-only"),
    )


def main() -> None:
    """`python -m web.app --openapi` prints the schema docs/openapi.json holds."""
    if sys.argv[1:] != ["--openapi"]:
        sys.exit("usage: python -m web.app --openapi > docs/openapi.json")
    print(json.dumps(openapi_document(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
