"""Commands contributed by the service packages (``nas up`` from api, ``nas worker`` from workers).

They plug in through the ``nas.commands`` entry point group, so the engine never imports those packages by name.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

import typer

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    """Add every command registered under the ``nas.commands`` entry point group."""
    for ep in entry_points(group="nas.commands"):
        try:
            ep.load()(app)
        except ImportError as exc:  # a package of the service that is not installed here
            log.debug("command plugin %s unavailable: %s", ep.name, exc)


# what the `service` extra brings (pyproject.toml); a command that needs one of these says how to install it
SERVICE_MODULES = frozenset(
    {"fastapi", "starlette", "uvicorn", "sse_starlette", "sqlalchemy", "alembic", "psycopg", "prometheus_client",
     "pydantic_settings", "ray"}
)  # fmt: skip


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The one-line hint for a service command run where the ``service`` extra is not installed, else None."""
    top = (exc.name or "").split(".")[0]
    if top not in SERVICE_MODULES:
        return None
    return f"this command needs the service's packages ({top} is missing): pip install 'nas-service[service]'"
