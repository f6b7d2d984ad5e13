"""`nas admin` token and user lifecycle (issue 10, defect 3): list-tokens, revoke-token, disable-user, enable-user,
create-token --expires-in-days, straight on a SQLite database in a temporary data directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.settings import Settings
from service.store import Database, repo
from tests.test_cli_remote import data_dir, invoke, one_error_line

__all__ = ["data_dir"]  # the fixture


def authenticates(token: str) -> bool:
    db = Database(Settings().db_url)
    try:
        with db.session() as s:
            return repo.authenticate(s, token) is not None
    finally:
        db.dispose()


@pytest.fixture
def alice(data_dir: Path) -> Path:
    assert invoke("db", "upgrade").exit_code == 0
    assert invoke("admin", "create-user", "alice").exit_code == 0
    return data_dir


def test_tokens_listed_revoked_by_id_prefix_and_all(alice: Path) -> None:
    t1 = invoke("admin", "create-token", "alice", "--name", "laptop").stdout.strip()
    t2 = invoke("admin", "create-token", "alice", "--name", "ci", "--expires-in-days", "7")
    assert t2.exit_code == 0 and "expires" in t2.stderr
    t2_token = t2.stdout.strip()
    t3 = invoke("admin", "create-token", "alice").stdout.strip()
    listed = invoke("admin", "list-tokens", "alice", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["prefix"], r["revoked_at"]) for r in rows] == [
        ("laptop", t1[:12], None),
        ("ci", t2_token[:12], None),
        ("default", t3[:12], None),
    ]
    assert rows[0]["expires_at"] is None and rows[1]["expires_at"] is not None
    assert t1 not in listed.stdout and "token_hash" not in listed.stdout
    table = invoke("admin", "list-tokens", "alice")
    assert table.exit_code == 0 and "laptop" in table.stdout and "3 tokens of alice" in table.stdout

    r = invoke("admin", "revoke-token", "alice", "--token-id", str(rows[0]["id"]))
    assert r.exit_code == 0 and "revoked token" in r.stdout
    assert not authenticates(t1) and authenticates(t2_token)
    r = invoke("admin", "revoke-token", "alice", "--token-id", t2_token[:12])
    assert r.exit_code == 0, r.output
    assert not authenticates(t2_token) and authenticates(t3)
    r = invoke("admin", "revoke-token", "alice", "--all")
    assert r.exit_code == 0 and r.stdout == "revoked 1 token of alice\n"
    assert not authenticates(t3)
    revoked = json.loads(invoke("admin", "list-tokens", "alice", "--json").stdout)
    assert all(row["revoked_at"] for row in revoked)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["revoke-token", "alice"], "--token-id"),
        (["revoke-token", "alice", "--token-id", "1", "--all"], "--token-id"),
        (["revoke-token", "alice", "--token-id", "abc"], "--token-id"),
        (["revoke-token", "alice", "--token-id", "99999999999999"], "--token-id"),
        (["revoke-token", "alice", "--token-id", "42"], "token_id"),
        (["revoke-token", "bob", "--all"], "user"),
        (["create-token", "alice", "--expires-in-days", "0"], "--expires-in-days"),
        (["create-token", "alice", "--expires-in-days", "abc"], "--expires-in-days"),
        (["create-token", "alice", "--expires-in-days", "99999"], "--expires-in-days"),
        (["list-tokens", "bob"], "user"),
        (["list-tokens", "no spaces"], "user"),
        (["disable-user", "bob"], "user"),
        (["enable-user", "bob"], "user"),
    ],
)
def test_bad_input_exits_2_with_one_line(alice: Path, args: list[str], needle: str) -> None:
    result = invoke("admin", *args)
    assert result.exit_code == 2, result.output
    assert needle in one_error_line(result)


def test_disable_and_enable_user(alice: Path) -> None:
    token = invoke("admin", "create-token", "alice").stdout.strip()
    db = Database(Settings().db_url)
    try:
        with db.session() as s:
            owner = repo.get_user(s, "alice")
            queued, _ = repo.create_search(s, owner, {"name": "q"})
            queued_id = queued.id
    finally:
        db.dispose()
    r = invoke("admin", "disable-user", "alice")
    assert r.exit_code == 0 and "1 queued searches cancelled" in r.stdout, r.output
    assert not authenticates(token)
    rows = {u["name"]: u for u in json.loads(invoke("admin", "list-users", "--json").stdout)}
    assert rows["alice"]["disabled_at"] is not None
    db = Database(Settings().db_url)
    try:
        with db.session() as s:
            assert repo.get_search(s, queued_id).status == "cancelled"
    finally:
        db.dispose()
    r = invoke("admin", "enable-user", "alice")
    assert r.exit_code == 0 and r.stdout == "enabled user alice\n"
    assert authenticates(token)
