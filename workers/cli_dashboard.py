"""`eventops dashboard`: serve the live dashboard (and /metrics, /ingest when installed)."""

from __future__ import annotations

import click

from workers.cli_output import config_errors_exit_2


@click.command()
@click.option("--port", type=int, default=8600, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True)
@config_errors_exit_2
def dashboard(port: int, address: str) -> None:
    """Serve the live dashboard behind a login (EVENTOPS_DASHBOARD_USER / _PASSWORD)."""
    _serve(port, address)


def _serve(port: int, address: str) -> None:
    import uvicorn

    from web.app import create_app
    from web.auth import password_source
    from workers.settings import get_config, get_settings

    settings = get_settings()
    get_config()  # a bad config file stops here with its field paths, exit 2
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    where = password_source(settings)
    click.echo(
        f"eventops: dashboard on http://{address}:{port}  (login {settings.dashboard_user}, "
        f"password in {where})",
        err=True,
    )
    # X-Forwarded-For and -Proto only from the proxies the settings name: uvicorn's default
    # believed them from any local process, which could then pose as any client address
    # and reset the per-address login limit with every request.
    proxies = settings.trusted_proxies
    uvicorn.run(
        app,
        host=address,
        port=port,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        log_level="warning",
    )
