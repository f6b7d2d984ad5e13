from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import tests.toy_space  # noqa: F401  (registers the 'toyconv' space)


@pytest.fixture(autouse=True)
def _small_torch() -> None:
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead, and CI has 2 shared cores


def tiny_splits(n_train: int = 96, n_val: int = 48, n_test: int = 48, size: int = 8, classes: int = 3, seed: int = 0):
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


# ---------------------------------------------------------------- databases (store and API tests)

POSTGRES_ENV = "NAS_TEST_POSTGRES_URL"


def _postgres_url() -> str:
    """The test PostgreSQL, or a skip with the reason. CI sets NAS_TEST_REQUIRE_POSTGRES=1: then it must work."""
    url = os.environ.get(POSTGRES_ENV)
    required = os.environ.get("NAS_TEST_REQUIRE_POSTGRES") == "1"
    if not url:
        if required:
            pytest.fail(f"{POSTGRES_ENV} is not set but NAS_TEST_REQUIRE_POSTGRES=1")
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect means: no PostgreSQL here
        if required:
            pytest.fail(f"PostgreSQL at {url} is required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {url} is unreachable: {type(exc).__name__}")
    return url


def make_test_database(backend: str, tmp_path):
    """A migrated, empty database: a SQLite file in ``tmp_path`` or a fresh schema in the test PostgreSQL.

    Returns (Database, cleanup). The URL (``db.url``) reaches the same schema from other processes.
    """
    import uuid

    from sqlalchemy import create_engine, text

    from nas.store import Database, upgrade

    if backend == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'nas.db'}")
        upgrade(db.engine)
        return db, db.dispose
    base = _postgres_url()
    schema = f"nas_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}options=-csearch_path%3D{schema}"
    db = Database(url)
    upgrade(db.engine)

    def cleanup() -> None:
        db.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return db, cleanup


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """Each test using it runs on SQLite and on PostgreSQL (skipped with a reason where there is none)."""
    db, cleanup = make_test_database(request.param, tmp_path)
    yield db
    cleanup()
