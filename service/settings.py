"""Configuration of the service, read from ``NAS_*`` environment variables (pydantic-settings).

The embedded default needs none of them: SQLite and artifacts in the data directory, a local Ray on 127.0.0.1.
A cluster sets ``NAS_DATABASE_URL`` (PostgreSQL), ``NAS_RAY_ADDRESS`` and a shared ``NAS_DATA_DIR``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from nas.client.config import DEFAULT_PORT, TOKEN_FILE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NAS_", extra="ignore")

    data_dir: Path = Field(Path("~/.nas"), description="database (SQLite), artifacts and the local admin token")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in the data directory")
    host: str = Field("127.0.0.1", description="address the API listens on")
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    url: str | None = Field(None, description="where clients reach the API (default http://host:port)")
    token: str | None = Field(None, description="API token used by the CLI and SDK")
    auth: bool = Field(True, description="require bearer tokens; cannot be off on a non-loopback address")
    ray_address: str | None = Field(None, description="Ray cluster to join; default: start Ray in-process")
    local_cpus: int | None = Field(None, ge=1, description="CPUs of the in-process Ray (default: all)")
    local_gpus: int | None = Field(None, ge=0, description="GPUs of the in-process Ray (default: all)")
    dataset_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="folders datasets named by path may be read from (os.pathsep-separated)"
    )
    scheduler: bool = Field(True, description="run the scheduler loop in this controller")
    max_running_per_user: int = Field(2, ge=1)
    max_queued_per_user: int = Field(20, ge=1, description="queued searches a non-admin user may have (over: 429)")
    max_priority_user: int = Field(10, ge=-100, le=100, description="highest priority a non-admin user may ask for")
    max_attempts: int = Field(3, ge=1, le=20, description="default attempts of a search before it fails")
    retry_backoff_s: float = Field(5.0, ge=0.0, description="first retry delay; doubles with each attempt")
    lease_s: float = Field(60.0, gt=0.0, description="a running search whose heartbeat is older is re-queued")
    heartbeat_s: float = Field(5.0, gt=0.0)
    scheduler_interval_s: float = Field(1.0, gt=0.0)
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest request body the API accepts")
    max_streams_per_user: int = Field(20, ge=1, description="open event streams (SSE) a user may hold at once")
    max_streams: int = Field(500, ge=1, description="open event streams (SSE) the API serves at once, in all")
    rate_limit_per_s: float = Field(
        0.0, ge=0.0, description="requests per second each user may send (token bucket; 0: no limit)"
    )
    rate_limit_burst: int = Field(100, ge=1, description="requests a user may send at once before the rate applies")
    metrics_token: str | None = Field(None, description="bearer token /metrics requires; default: none (open)")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host header names the API answers (comma-separated); default: loopback names with auth off, "
        "else any",
    )

    @field_validator("dataset_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p for p in value.split(os.pathsep) if p.strip()]
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'nas.db').resolve()}"

    @property
    def api_url(self) -> str:
        if self.url:
            return self.url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def token_file(self) -> Path:
        return self.data_dir / TOKEN_FILE

    @property
    def searches_dir(self) -> Path:
        return self.data_dir / "searches"

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
