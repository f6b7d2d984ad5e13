"""Where clients find the service: defaults shared by the SDK, the CLI and the server settings (no dependencies)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_PORT = 8321
TOKEN_FILE = "admin.token"


def data_dir() -> Path:
    return Path(os.environ.get("NAS_DATA_DIR", "~/.nas")).expanduser()


def default_url() -> str:
    """NAS_URL, else the embedded service on this machine (NAS_PORT or 8321)."""
    if os.environ.get("NAS_URL"):
        return os.environ["NAS_URL"].rstrip("/")
    return f"http://127.0.0.1:{os.environ.get('NAS_PORT', DEFAULT_PORT)}"


def default_token() -> str | None:
    """NAS_TOKEN, else the local admin token the embedded service wrote into its data directory."""
    if os.environ.get("NAS_TOKEN"):
        return os.environ["NAS_TOKEN"].strip()
    path = data_dir() / TOKEN_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
