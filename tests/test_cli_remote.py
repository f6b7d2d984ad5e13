"""The administration commands of `nas` (`nas admin ...`, `nas db ...`), straight on a SQLite database in a temporary
data directory. (The service commands, through the SDK, are tested against the real app in test_cli_sdk.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import invoke, one_error_line
from tests.conftest import wide_consoles

# ---------------------------------------------------------------- admin and db (directly on the database)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("NAS_DATABASE_URL", raising=False)
    wide_consoles(monkeypatch)
    return tmp_path


def test_db_upgrade_and_current(data_dir: Path) -> None:
    before = invoke("db", "current")
    assert before.exit_code == 0, before.output
    assert "nas.db: none (not head" in before.stdout and "nas db upgrade" in before.stdout
    unmigrated = invoke("admin", "create-user", "alice")
    assert unmigrated.exit_code == 1
    assert "is at revision none (empty)" in one_error_line(unmigrated) and "nas db upgrade" in unmigrated.stderr
    up = invoke("db", "upgrade")
    assert up.exit_code == 0, up.output
    assert "upgraded from empty to" in up.stdout and (data_dir / "nas.db").is_file()
    again = invoke("db", "upgrade")
    assert again.exit_code == 0 and "already at" in again.stdout
    assert invoke("db", "current").stdout.rstrip().endswith("(head)")


def test_admin_users_and_tokens(data_dir: Path) -> None:
    from service.store import Database, repo

    assert invoke("db", "upgrade").exit_code == 0
    created = invoke("admin", "create-user", "alice")
    assert created.exit_code == 0, created.output
    assert created.stdout == "created user alice\n" and "nas admin create-token alice" in created.stderr
    assert invoke("admin", "create-user", "root", "--admin").stdout == "created admin user root\n"
    duplicate = invoke("admin", "create-user", "alice")
    assert duplicate.exit_code == 2
    assert one_error_line(duplicate) == "error: name: a user named 'alice' already exists"
    bad = invoke("admin", "create-user", "no spaces!")
    assert bad.exit_code == 2 and one_error_line(bad).startswith("error: name: 'no spaces!' is not allowed")

    token_result = invoke("admin", "create-token", "alice", "--name", "laptop")
    assert token_result.exit_code == 0, token_result.output
    token = token_result.stdout.strip()
    assert token.startswith(repo.TOKEN_PREFIX) and "\n" not in token
    assert "cannot be shown again" in token_result.stderr
    db = Database(f"sqlite:///{data_dir / 'nas.db'}")  # the database of NAS_DATA_DIR
    try:
        with db.session() as s:
            user = repo.authenticate(s, token)
            assert user is not None and user.name == "alice" and not user.is_admin
    finally:
        db.dispose()
    unknown = invoke("admin", "create-token", "bob")
    assert unknown.exit_code == 2 and one_error_line(unknown) == "error: user: no user named 'bob'"

    listed = invoke("admin", "list-users", "--json")
    assert listed.exit_code == 0
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert (rows["alice"]["is_admin"], rows["alice"]["tokens"]) == (False, 1)
    assert (rows["root"]["is_admin"], rows["root"]["tokens"]) == (True, 0)
    table = invoke("admin", "list-users")
    assert table.exit_code == 0 and "alice" in table.stdout and "root" in table.stdout


def test_bad_settings_are_named(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_PORT", "not-a-port")
    result = invoke("db", "current")
    assert result.exit_code == 2 and one_error_line(result).startswith("error: NAS_PORT: ")


def test_unreachable_database_exits_1(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_DATABASE_URL", "postgresql+psycopg://nobody:secret@127.0.0.1:1/none?connect_timeout=2")
    result = invoke("db", "current")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert line.startswith("error: database: ") and "secret" not in line
