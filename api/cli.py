"""``nas up``: the embedded service (API, scheduler, local Ray, SQLite) or a cluster controller."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    from nas.cli import err, out, user_errors

    @app.command()
    @user_errors
    def up(
        host: Annotated[str | None, typer.Option(help="address to listen on (default 127.0.0.1, NAS_HOST)")] = None,
        port: Annotated[int | None, typer.Option(help="port (default 8321, NAS_PORT)")] = None,
        data_dir: Annotated[Path | None, typer.Option(help="database, artifacts, token (NAS_DATA_DIR)")] = None,
        no_auth: Annotated[bool, typer.Option("--no-auth", help="no tokens (loopback only)")] = False,
        no_scheduler: Annotated[bool, typer.Option("--no-scheduler", help="API only")] = False,
    ) -> None:
        """Start the service: REST API, scheduler and Ray (in-process unless NAS_RAY_ADDRESS is set)."""
        from api.serve import Controller, serve
        from service.settings import Settings

        overrides: dict[str, Any] = {}
        if host is not None:
            overrides["host"] = host
        if port is not None:
            overrides["port"] = port
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        if no_auth:
            overrides["auth"] = False
        if no_scheduler:
            overrides["scheduler"] = False
        settings = Settings(**overrides)

        def ready(c: Controller) -> None:
            url = settings.api_url
            out.print(f"nas-service listening on [bold]{url}[/bold] (API docs: {url}/api/v1/docs)")
            out.print(f"database: {settings.db_url.split('@')[-1]}   data: {settings.data_dir}")
            if c.token_file:
                out.print(f"admin token: {c.token_file} (the CLI and SDK on this machine read it)")
            elif settings.auth:
                out.print("auth is on: create tokens with `nas admin create-token USER`")
            out.print("Ctrl-C stops it.")

        try:
            serve(settings, on_ready=ready)
        except KeyboardInterrupt:
            err.print("stopped")
