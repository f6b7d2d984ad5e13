from __future__ import annotations

import functools
import importlib.util
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import tests.toy_space  # noqa: F401  (registers the 'toyconv' space)

# fixtures of a live service on loopback (`live`, `user`) for the SDK and CLI tests
pytest_plugins = ["tests.live_service"]

if TYPE_CHECKING:
    from nas.data.base import DataSplits
    from service.store import Database


@pytest.fixture(autouse=True)
def _small_torch() -> None:
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead, and CI has 2 shared cores


def tiny_splits(
    n_train: int = 96, n_val: int = 48, n_test: int = 48, size: int = 8, classes: int = 3, seed: int = 0
) -> DataSplits:
    """A learnable toy dataset: the class decides which quadrant is bright."""
    from nas.data.base import DataSplits, Split

    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> Split:
        y = torch.randint(0, classes, (n,), generator=g)
        x = torch.randint(0, 60, (n, 1, size, size), generator=g, dtype=torch.int64)
        for c in range(classes):
            rows = slice(0, size // 2) if c % 2 == 0 else slice(size // 2, size)
            cols = slice(0, size // 2) if c < 2 else slice(size // 2, size)
            x[y == c, :, rows, cols] += 150
        return Split(x=x.clamp(0, 255).to(torch.uint8), y=y)

    return DataSplits(
        name="tiny", num_classes=classes, channels=1, image_size=size, train=make(n_train), val=make(n_val),
        test=make(n_test), mean=(0.3,), std=(0.3,), class_names=[str(i) for i in range(classes)], flip_ok=False,
    )  # fmt: skip


# ---------------------------------------------------------------- Ray (tests marked `ray`)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``ray`` skips (with the reason) where Ray is not installed; CI sets NAS_TEST_REQUIRE_RAY=1, which
    turns that skip into a failure, so the Ray paths cannot silently drop out of CI."""
    if item.get_closest_marker("ray") is None or importlib.util.find_spec("ray") is not None:
        return
    message = "Ray is not installed (pip install -e '.[ray]')"
    if _env_flag("NAS_TEST_REQUIRE_RAY"):
        pytest.fail(f"NAS_TEST_REQUIRE_RAY=1 but {message}", pytrace=False)
    pytest.skip(message)


# ---------------------------------------------------------------- databases (store and API tests)

POSTGRES_ENV = "NAS_TEST_POSTGRES_URL"
POSTGRES_DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"  # the local server of dev and CI machines
POSTGRES_CONNECT_TIMEOUT_S = 3
_created_schemas: set[str] = set()  # schemas this session made and has not dropped yet (dropped at its end)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


@functools.cache
def _probe_postgres(url: str) -> str | None:
    """None when PostgreSQL answers at ``url``, else why not. Probed once per session, with a short timeout."""
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(url, connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # any failure to connect means: no PostgreSQL here
        lines = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {lines[0] if lines else 'no details'}"
    return None


def _postgres_url() -> str:
    """The test PostgreSQL (``NAS_TEST_POSTGRES_URL``, else the local default), or a skip that says why.

    CI sets NAS_TEST_REQUIRE_POSTGRES=1: then a PostgreSQL that does not answer fails the test instead.
    """
    url = os.environ.get(POSTGRES_ENV) or POSTGRES_DEFAULT_URL
    error = _probe_postgres(url)
    if error is None:
        return url
    message = (
        f"no PostgreSQL answers at {url} within {POSTGRES_CONNECT_TIMEOUT_S} s ({error}); "
        f"start one there or point {POSTGRES_ENV} at one"
    )
    if _env_flag("NAS_TEST_REQUIRE_POSTGRES"):
        pytest.fail(f"NAS_TEST_REQUIRE_POSTGRES=1 but {message}", pytrace=False)
    pytest.skip(message)


def _drop_schema(base: str, schema: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(base, connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S})
    try:
        with admin.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '60s'"))  # a stray connection must not hang the session
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        _created_schemas.discard(schema)
    finally:
        admin.dispose()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop the schemas of tests whose cleanup did not run (an interrupted session, a failed migration)."""
    if not _created_schemas:
        return
    base = os.environ.get(POSTGRES_ENV) or POSTGRES_DEFAULT_URL
    for schema in sorted(_created_schemas):
        try:
            _drop_schema(base, schema)
        except Exception as exc:  # best effort: report, do not turn a passing session into an error
            print(f"\nwarning: could not drop the test schema {schema}: {exc}", file=sys.stderr)


def make_test_database(backend: str, tmp_path: Path) -> tuple[Database, Callable[[], None]]:
    """A migrated, empty database: a SQLite file in ``tmp_path`` or a fresh schema in the test PostgreSQL.

    Returns (Database, cleanup); the cleanup drops the schema. The URL (``db.url``) reaches the same schema from
    other processes.
    """
    from sqlalchemy import create_engine, text

    from service.store import Database, upgrade

    if backend == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'nas.db'}")
        upgrade(db.engine)
        return db, db.dispose
    base = _postgres_url()
    schema = f"nas_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S})
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    finally:
        admin.dispose()
    _created_schemas.add(schema)
    sep = "&" if "?" in base else "?"
    db = Database(f"{base}{sep}options=-csearch_path%3D{schema}")

    def cleanup() -> None:
        db.dispose()
        _drop_schema(base, schema)

    try:
        upgrade(db.engine)
    except BaseException:
        cleanup()
        raise
    return db, cleanup


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """Each test using it runs on SQLite and on PostgreSQL (skipped with a reason where there is none)."""
    db, cleanup = make_test_database(request.param, tmp_path)
    try:
        yield db
    finally:
        cleanup()


def wide_consoles(monkeypatch: pytest.MonkeyPatch, width: int = 200) -> None:
    """The `nas` command's rich consoles print tables this wide, whatever terminal (or none) the tests run in: their
    width is fixed when they are created, from COLUMNS or the terminal, so setting COLUMNS in a test is not enough."""
    from nas import cli, cli_common

    monkeypatch.setenv("COLUMNS", str(width))
    for console in (cli.out, cli.err, cli_common.out, cli_common.err):
        monkeypatch.setattr(console, "_width", width)
