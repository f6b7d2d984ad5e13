"""Token and user lifecycle in the store (issue 10, defect 3) and the queued-search quota, on SQLite and PostgreSQL:
revoked and expired tokens and disabled users are refused; disabling cancels the user's queued searches and asks
their running ones to stop; the migration 0003 adds the columns and takes them away again."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import inspect

from service.store import Database, repo
from service.store.migrate import downgrade, upgrade
from service.store.models import utcnow
from tests.test_store import add_search, claim, fresh, load, make_users

__all__ = ["fresh"]  # the fixture, imported for the migration test


def test_migration_0003_adds_and_drops_the_lifecycle_columns(fresh: Database) -> None:
    users = make_users(fresh, "alice")
    with fresh.session() as s:
        token = repo.create_token(s, users["alice"])
    downgrade(fresh.engine, "0002")
    insp = inspect(fresh.engine)
    assert "disabled_at" not in {c["name"] for c in insp.get_columns("users")}
    assert "expires_at" not in {c["name"] for c in insp.get_columns("api_tokens")}
    upgrade(fresh.engine)
    with fresh.session() as s:  # rows and tokens survive the round trip (no cascade from a table copy)
        user = repo.authenticate(s, token)
        assert user is not None and user.name == "alice" and user.disabled_at is None


def test_expired_tokens_are_refused(database: Database) -> None:
    users = make_users(database, "alice")
    now = utcnow()
    with database.session() as s:
        past = repo.create_token(s, users["alice"], expires_at=now - dt.timedelta(seconds=1))
        future = repo.create_token(s, users["alice"], expires_at=now + dt.timedelta(days=1))
    with database.session() as s:
        assert repo.authenticate(s, past) is None
        assert repo.authenticate(s, future) is not None


def test_revoke_one_token_by_id_or_prefix(database: Database) -> None:
    users = make_users(database, "alice", "bob")
    with database.session() as s:
        first, t1 = repo.issue_token(s, users["alice"], "laptop")
        second, t2 = repo.issue_token(s, users["alice"], "ci")
        bob_row, bob_token = repo.issue_token(s, users["bob"])
        ids = (first.id, second.id, bob_row.id)
    with database.session() as s:
        alice = repo.get_user(s, "alice")
        with pytest.raises(repo.NotFound) as info:  # bob's token is not alice's
            repo.find_token(s, alice, token_id=ids[2])
        assert info.value.field == "token_id"
        repo.revoke_token(s, repo.find_token(s, alice, token_id=ids[0]))
    with database.session() as s:
        assert repo.authenticate(s, t1) is None
        assert repo.authenticate(s, t2) is not None and repo.authenticate(s, bob_token) is not None
        alice = repo.get_user(s, "alice")
        row = repo.revoke_token(s, repo.find_token(s, alice, prefix=t2[:12]))
        assert row.id == ids[1]
        with pytest.raises(repo.NotFound):
            repo.find_token(s, alice, prefix="nas_%")  # a LIKE wildcard is matched literally
    with database.session() as s:
        assert repo.authenticate(s, t2) is None
        listed = repo.list_tokens(s, repo.get_user(s, "alice"))
        assert [(t.name, t.revoked_at is not None) for t in listed] == [("laptop", True), ("ci", True)]
        assert all(t.prefix and t.created_at for t in listed)


def test_disable_refuses_tokens_and_cancels_searches_enable_restores(database: Database) -> None:
    users = make_users(database, "alice", "bob")
    with database.session() as s:
        token = repo.create_token(s, users["alice"])
        bob_token = repo.create_token(s, users["bob"])
    running = add_search(database, users["alice"], "running")
    c = claim(database)
    assert c is not None and c.search_id == running
    queued = add_search(database, users["alice"], "queued")
    bobs = add_search(database, users["bob"], "bobs")
    with database.session() as s:
        touched = repo.disable_user(s, repo.get_user(s, "alice"))
        assert {r.id for r in touched} == {running, queued}
    with database.session() as s:
        assert repo.authenticate(s, token) is None
        assert repo.authenticate(s, bob_token) is not None
        assert [t.revoked_at for t in repo.list_tokens(s, repo.get_user(s, "alice"))] == [None]  # not revoked
    assert load(database, queued).status == "cancelled"
    row = load(database, running)
    assert row.status == "running" and row.cancel_requested
    assert repo.heartbeat(database, running, c.lease_token, 60.0) is True  # the runner is told to stop
    assert load(database, bobs).status == "queued"
    with database.session() as s:
        again = repo.disable_user(s, repo.get_user(s, "alice"))  # disabling again: the running one is asked again
        assert [r.id for r in again] == [running]
        repo.enable_user(s, repo.get_user(s, "alice"))
    with database.session() as s:
        user = repo.authenticate(s, token)
        assert user is not None and user.disabled_at is None
    assert load(database, queued).status == "cancelled"  # stays cancelled


def test_queued_quota(database: Database) -> None:
    users = make_users(database, "alice", "bob")
    with database.session() as s:
        for _ in range(2):
            repo.create_search(s, users["alice"], {"name": "q"}, max_queued=2)
    with pytest.raises(repo.QuotaExceeded) as info, database.session() as s:
        repo.create_search(s, users["alice"], {"name": "q"}, max_queued=2)
    assert info.value.status == 429
    with database.session() as s:
        repo.create_search(s, users["bob"], {"name": "q"}, max_queued=2)  # per user
        assert repo.count_queued(s, users["alice"]) == 2
    assert claim(database) is not None  # one starts: room for one more
    with database.session() as s:
        repo.create_search(s, users["alice"], {"name": "q"}, max_queued=2)


def test_a_disabled_users_queued_search_is_not_started(database: Database) -> None:
    """A search stored after the disable (a request that authenticated just before it) waits until the user is
    enabled again; other users' searches start meanwhile."""
    users = make_users(database, "alice", "bob")
    with database.session() as s:
        repo.disable_user(s, repo.get_user(s, "alice"))
    late = add_search(database, users["alice"], "late", priority=50)
    bobs = add_search(database, users["bob"], "bobs")
    c = claim(database)
    assert c is not None and c.search_id == bobs
    assert claim(database) is None
    with database.session() as s:
        repo.enable_user(s, repo.get_user(s, "alice"))
    c = claim(database)
    assert c is not None and c.search_id == late
