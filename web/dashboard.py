"""The dashboard's pages (login, the live page, report files) and its JSON API.

Every page and API route needs a session: pages without one redirect to /login, the API
answers 401. State changes (acknowledge, logout) also need the CSRF token and a same-site
Origin. The page polls the API every few seconds, so it updates without a reload.
"""

from __future__ import annotations

import html
import time
from datetime import datetime, timedelta
from pathlib import Path
from string import Template
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from core import dashboard as queries
from core import incidents as lifecycle
from core.clock import utcnow
from models import db
from models.config import EventopsConfig
from web import schemas
from web.auth import COOKIE, CSRF_FIELD, SESSION_MAX_AGE_S, Auth, DashboardSession
from web.inputs import BadJson, RowId, parse_json, read_body
from workers.settings import Settings

TEMPLATES = Path(__file__).resolve().parent / "templates"
# How often the page asks for fresh figures (the docs say the same).
POLL_INTERVAL_MS = 3000
# Insight changes slowly and may be costly to compute: shared by all viewers this long.
SLOW_PANELS_TTL_S = 30.0
WINDOWS = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}

router = APIRouter()


def _auth(request: Request) -> Auth:
    auth: Auth = request.app.state.auth
    return auth


def api_session(request: Request) -> DashboardSession:
    return _auth(request).require_api(request)


def page_session(request: Request) -> DashboardSession:
    return _auth(request).require_page(request)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _config(request: Request) -> EventopsConfig:
    config: EventopsConfig = request.app.state.get_config()
    return config


def _now(request: Request) -> datetime:
    """The app's clock (tests may set app.state.clock)."""
    clock = getattr(request.app.state, "clock", None)
    return clock() if clock else utcnow()


ApiUser = Annotated[DashboardSession, Depends(api_session)]
PageUser = Annotated[DashboardSession, Depends(page_session)]


def _render(name: str, **values: str) -> str:
    return Template((TEMPLATES / name).read_text()).substitute(
        {key: html.escape(value, quote=True) for key, value in values.items()}
    )


def _safe_next(value: str | None) -> str:
    """Only same-site paths: never an open redirect to another host."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _json_or_400(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except queries.DashboardQueryError as error:
        raise HTTPException(status_code=400, detail=str(error)) from None


# -- pages ----------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return HTMLResponse(_render("login.html", next=_safe_next(next), error=""))


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    auth = _auth(request)
    auth.check_origin(request)
    form = await _form(request)
    user = form.get("username", "")
    password = form.get("password", "")
    next_path = _safe_next(form.get("next"))
    client = request.client.host if request.client else "unknown"
    keys = [f"addr:{client}"]
    # Only the one real user name is worth guessing; other names get no key of their own,
    # so a spray of made-up names cannot grow the limiter.
    if user.lower() == auth.user.lower():
        keys.append(f"user:{user.lower()}")
    wait = auth.limiter.retry_after(keys)
    if wait:
        page = _render(
            "login.html", next=next_path, error=f"Too many failed logins; try again in {wait} s."
        )
        return HTMLResponse(page, status_code=429, headers={"Retry-After": str(wait)})
    if not auth.check_credentials(user, password):
        auth.limiter.failed(keys)
        page = _render("login.html", next=next_path, error="Wrong user name or password.")
        return HTMLResponse(page, status_code=401)
    auth.limiter.succeeded(keys)
    _, cookie = auth.new_session(user)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=auth.secure_cookies(request),
        path="/",
    )
    return response


MAX_FORM_BYTES = 16_384


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form or a JSON object (no multipart needed for a login). Read in chunks
    and refused past MAX_FORM_BYTES: /login is open to anyone, and reading a whole body
    before cutting it let one request fill the server's memory."""
    body = await read_body(request, MAX_FORM_BYTES)
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = parse_json(body or b"{}")
        except BadJson as error:
            raise HTTPException(status_code=400, detail=f"body: not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise HTTPException(status_code=400, detail="body: not a JSON object")
        # Only strings: str() of a nested value or a 5,000-digit number is not a field.
        wrong = sorted(key for key, value in data.items() if not isinstance(value, str))
        if wrong:
            raise HTTPException(status_code=400, detail=f"body: {wrong[0]}: not a string")
        return data
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}


@router.post("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    auth = _auth(request)
    session = auth.require_api(request)
    form = await _form(request)
    auth.check_csrf(request, session, form.get(CSRF_FIELD))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
    return response


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard_page(request: Request, user: PageUser) -> HTMLResponse:
    return HTMLResponse(
        _render(
            "dashboard.html",
            user=user.user,
            csrf=user.csrf,
            poll_ms=str(POLL_INTERVAL_MS),
        ),
        headers={"Cache-Control": "no-store"},
    )


# Report pages are static HTML with their own inline styles and charts, never scripts.
REPORT_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
REPORT_TYPES = {".html": "text/html", ".md": "text/markdown", ".png": "image/png"}


@router.get("/reports/{name}/{filename}", include_in_schema=False)
def report_file(request: Request, user: PageUser, name: str, filename: str) -> Response:
    """A generated report's files: /reports/<name>/index.html links its charts relatively."""
    path = queries.report_file(_settings(request).var_dir, name, filename, _reports_dir(request))
    if path is None:
        raise HTTPException(status_code=404, detail="no such report file")
    media = REPORT_TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media, headers={"Content-Security-Policy": REPORT_CSP})


def _reports_dir(request: Request) -> Path | None:
    """`reports.directory` from the config, when the reports duty configures one."""
    try:
        section = getattr(_config(request), "reports", None)
    except Exception:  # a config problem must not take the dashboard down
        return None
    directory = getattr(section, "directory", None)
    return Path(directory) if directory else None


# -- the JSON API ---------------------------------------------------------------------------


def _session() -> Any:
    return db.session_scope()


@router.get(
    "/api/checks",
    tags=["checks"],
    summary="A page of checks with their latest status",
    response_model=schemas.CheckPageOut,
)
def api_checks(
    user: ApiUser,
    request: Request,
    state: Annotated[
        Literal["up", "failing", "down", "unknown", "disabled"] | None,
        Query(description="Only checks in this state."),
    ] = None,
    group: Annotated[str | None, Query(description="Only checks of this group.")] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Only checks whose name starts so.")
    ] = None,
    after: Annotated[
        str | None, Query(max_length=200, description="`next_after` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE)] = 50,
) -> dict[str, Any]:
    """Checks in name order, keyset-paginated: pass the previous page's `next_after` as
    `after`. Each item has its state, latest latency and reason, its newest heartbeats
    (`beats`, oldest first) and its 24-hour uptime. `counts` are the number of checks in
    each state under the same group and name filters."""
    now = _now(request)
    with _session() as session:
        page = _json_or_400(
            queries.latest_status_page,
            session,
            state=state,
            group=group,
            name_prefix=q or None,
            after=after,
            limit=limit,
        )
        uptimes = queries.uptime(
            session, [item["id"] for item in page.items], now - timedelta(hours=24), now
        )
        counts = queries.state_counts(session, group=group, name_prefix=q or None)
    for item in page.items:
        item["uptime_24h"] = uptimes.get(item["id"])
    return {"items": page.items, "next_after": page.next_after, "counts": counts}


@router.get(
    "/api/groups",
    tags=["checks"],
    summary="Check groups and their sizes",
    response_model=schemas.GroupsOut,
)
def api_groups(user: ApiUser) -> dict[str, Any]:
    with _session() as session:
        return {"groups": queries.groups(session)}


@router.get(
    "/api/checks/{check_id}",
    tags=["checks"],
    summary="One check",
    response_model=schemas.CheckOut,
)
def api_check(user: ApiUser, request: Request, check_id: RowId) -> dict[str, Any]:
    now = _now(request)
    with _session() as session:
        check = queries.check_by_id(session, check_id)
        if check is None:
            raise HTTPException(status_code=404, detail=f"no check #{check_id}")
        ups = {
            label: queries.uptime(session, [check_id], now - WINDOWS[label], now)[check_id]
            for label in ("24h", "7d", "30d")
        }
    check["uptime"] = ups
    return check


@router.get(
    "/api/checks/{check_id}/series",
    tags=["checks"],
    summary="Response time and uptime of one check over a window",
    response_model=schemas.SeriesOut,
)
def api_series(
    user: ApiUser,
    request: Request,
    check_id: RowId,
    window: Annotated[Literal["1h", "6h", "24h", "7d", "30d"], Query()] = "1h",
) -> dict[str, Any]:
    """At most 120 points `{t, avg_ms, max_ms, up, total}` for the chart, and the window's
    uptime. Long windows read rollups when they exist, short ones raw outcomes."""
    now = _now(request)
    with _session() as session:
        if queries.check_by_id(session, check_id) is None:
            raise HTTPException(status_code=404, detail=f"no check #{check_id}")
        found: dict[str, Any] = queries.series(session, check_id, now - WINDOWS[window], now)
    found["window"] = window
    return found


@router.get(
    "/api/incidents",
    tags=["incidents"],
    summary="Open and acknowledged incidents",
    response_model=schemas.IncidentList,
)
def api_incidents(
    user: ApiUser, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> dict[str, Any]:
    with _session() as session:
        found: dict[str, Any] = queries.open_incidents(session, limit)
        return found


@router.get(
    "/api/incidents/{incident_id}",
    tags=["incidents"],
    summary="One incident",
    response_model=schemas.IncidentOut,
)
def api_incident(user: ApiUser, incident_id: RowId) -> dict[str, Any]:
    """The incident with its timeline (who did what, when)."""
    with _session() as session:
        found = queries.incident_detail(session, incident_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no incident #{incident_id}")
    return found


@router.post(
    "/api/incidents/{incident_id}/acknowledge",
    tags=["incidents"],
    summary="Acknowledge an incident as the logged-in user",
    responses={403: {"description": "missing or wrong CSRF token, or a cross-site Origin"}},
    response_model=schemas.AcknowledgeOut,
)
def api_acknowledge(user: ApiUser, request: Request, incident_id: RowId) -> dict[str, Any]:
    """Needs the page's CSRF token in the `X-CSRF-Token` header. Pending pages and reminders
    stop; the timeline gets an `acknowledged` event with the user's name. `acknowledged` is
    false when the incident was not open (already acknowledged or resolved)."""
    _auth(request).check_csrf(request, user)
    with _session() as session:
        try:
            changed = lifecycle.acknowledge(
                incident_id, user.user, session=session, now=_now(request)
            )
        except lifecycle.IncidentNotFound:
            raise HTTPException(status_code=404, detail=f"no incident #{incident_id}") from None
        session.flush()
        found = queries.incident_detail(session, incident_id)
    return {"acknowledged": changed, "incident": found}


@router.get("/api/workers", tags=["system"], summary="Worker liveness and queue depth")
def api_workers(user: ApiUser, request: Request) -> dict[str, Any]:
    return _workers(request)


def _workers(request: Request) -> dict[str, Any]:
    from workers.app import QUEUES

    try:
        stale_after = _config(request).maintenance.worker_stale_after
    except Exception:  # a config problem must not take the dashboard down
        stale_after = None
    with _session() as session:
        found: dict[str, Any] = queries.workers_and_queues(
            session, _now(request), _settings(request).broker_url, QUEUES, stale_after
        )
        return found


@router.get(
    "/api/insight", tags=["business"], summary="User activity, KPIs against targets, Web Vitals"
)
def api_insight(user: ApiUser, request: Request) -> dict[str, Any]:
    """`configured: false` until the insight duty is installed. Cached for 30 seconds: its
    activity figures may query the platform's own database, which every open dashboard
    polling every 3 seconds must not load."""
    return _cached(request, "insight", SLOW_PANELS_TTL_S, lambda: _insight(request))


def _insight(request: Request) -> dict[str, Any]:
    with _session() as session:
        found: dict[str, Any] = queries.insight_summary(session, _config(request), _now(request))
        return found


def _cached(request: Request, key: str, ttl_s: float, compute: Any) -> dict[str, Any]:
    """One value per key per app for `ttl_s` seconds (shared by every viewer)."""
    cache: dict[str, tuple[float, dict[str, Any]]] = request.app.state.panel_cache
    hit = cache.get(key)
    now = time.monotonic()
    if hit is not None and now - hit[0] < ttl_s:
        return hit[1]
    value: dict[str, Any] = compute()
    cache[key] = (now, value)
    return value


@router.get("/api/reports", tags=["business"], summary="Generated reports, newest first")
def api_reports(user: ApiUser, request: Request) -> dict[str, Any]:
    """Each report has `html_url` and `md_url` (under `/reports/<name>/`), behind the login."""
    found: dict[str, Any] = queries.reports(_settings(request).var_dir, _reports_dir(request))
    return found


@router.get(
    "/api/summary",
    tags=["system"],
    summary="Everything the page refreshes, in one request",
    response_model=schemas.SummaryOut,
)
def api_summary(user: ApiUser, request: Request) -> dict[str, Any]:
    """Counts by state over all checks, open incidents, workers and queues, insight and
    reports: what the page polls every few seconds besides its page of checks."""
    now = _now(request)
    with _session() as session:
        counts = queries.state_counts(session)
        incidents = queries.open_incidents(session, 100)
    return {
        "now": now.isoformat(),
        "user": user.user,
        "counts": counts,
        "incidents": incidents,
        "workers": _workers(request),
        "insight": api_insight(user, request),
        "reports": api_reports(user, request),
    }
