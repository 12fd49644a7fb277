"""`eventops dashboard`: serve the live dashboard (and /metrics, /ingest when installed)."""

from __future__ import annotations

import sys

import click

from models.config import ConfigError


@click.command()
@click.option("--port", type=int, default=8600, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True)
def dashboard(port: int, address: str) -> None:
    """Serve the live dashboard behind a login (EVENTOPS_DASHBOARD_USER / _PASSWORD)."""
    try:
        _serve(port, address)
    except ConfigError as error:
        # Not workers.cli's decorator: importing workers.cli here would be circular.
        click.echo("eventops: the configuration has problems:", err=True)
        for line in error.problems:
            click.echo(f"  {line}", err=True)
        sys.exit(2)


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
    # proxy_headers: behind a TLS proxy the scheme is https, so cookies are Secure.
    uvicorn.run(app, host=address, port=port, proxy_headers=True, log_level="warning")
