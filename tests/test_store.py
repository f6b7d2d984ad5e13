"""The store (models, repository, engines, migrations) on SQLite and PostgreSQL.

Every test that takes the ``database`` fixture runs on both backends (PostgreSQL is skipped with a reason where there
is none, and required in CI). The concurrency tests open one ``Database`` per thread on the same URL, the way several
controllers share one database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text, update

from nas.events import Event, EventType
from service.store import Database, repo
from service.store.migrate import alembic_config, current, downgrade, upgrade
from service.store.models import ApiToken, Base, CandidateRow, Search, User, utcnow
from tests.conftest import make_test_database

TABLES = {"users", "api_tokens", "searches", "search_events", "candidates", "artifacts"}
BIG = 1000  # a per-user limit that never binds


# ---------------------------------------------------------------- helpers


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated database made by make_test_database, for the migration tests (dropped afterwards)."""
    db, cleanup = make_test_database(request.param, tmp_path)
    yield db
    cleanup()


def make_users(db: Database, *names: str, admin: str | None = None) -> dict[str, User]:
    with db.session() as s:
        users = {n: repo.create_user(s, n, admin=(n == admin)) for n in names}
    return users


def add_search(
    db: Database,
    owner: User,
    name: str = "s",
    *,
    priority: int = 0,
    cpus: float = 1.0,
    gpus: float = 0.0,
    max_attempts: int = 3,
    created_at: dt.datetime | None = None,
) -> str:
    with db.session() as s:
        row, created = repo.create_search(
            s, owner, {"name": name}, priority=priority, cpus=cpus, gpus=gpus, max_attempts=max_attempts
        )
        assert created
        if created_at is not None:
            row.created_at = created_at
        return row.id


def load(db: Database, search_id: str) -> Search:
    with db.session() as s:
        return repo.get_search(s, search_id)


def claim(db: Database, **kw: Any) -> repo.Claim | None:
    args: dict[str, Any] = {"free_cpus": 64.0, "free_gpus": 8.0, "per_user_limit": BIG, "lease_s": 60.0}
    args.update(kw)
    return repo.claim_next(db, **args)


def set_fields(db: Database, search_id: str, **values: Any) -> None:
    with db.session() as s:
        s.execute(update(Search).where(Search.id == search_id).values(**values))


def dump_all_tables(db: Database) -> str:
    """Every cell of every table as text: for "this secret is stored nowhere" checks."""
    parts = []
    with db.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                parts.extend(repr(v) for v in row)
    return "\n".join(parts)


# ---------------------------------------------------------------- migrations


def test_upgrade_creates_every_table_and_stamps_head(fresh: Database) -> None:
    assert set(inspect(fresh.engine).get_table_names()) >= TABLES
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    assert current(fresh.engine) == head
    upgrade(fresh.engine)  # idempotent
    assert current(fresh.engine) == head


def test_migrated_schema_matches_the_models(fresh: Database) -> None:
    insp = inspect(fresh.engine)
    for table in Base.metadata.sorted_tables:
        columns = {c["name"] for c in insp.get_columns(table.name)}
        assert columns == {c.name for c in table.columns}, f"columns of {table.name} differ from the model"


def test_downgrade_to_base_and_upgrade_again(fresh: Database) -> None:
    users = make_users(fresh, "alice")
    add_search(fresh, users["alice"])
    downgrade(fresh.engine, "base")
    assert current(fresh.engine) is None
    assert not TABLES & set(inspect(fresh.engine).get_table_names())
    upgrade(fresh.engine)
    assert set(inspect(fresh.engine).get_table_names()) >= TABLES
    with fresh.session() as s:  # usable, and empty again
        assert s.scalar(select(func.count()).select_from(Search)) == 0
        repo.create_user(s, "alice")


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'sub' / 'nas.db'}")  # the parent folder is created
    try:
        upgrade(db.engine)
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        db.dispose()


def test_datetimes_come_back_timezone_aware(database: Database) -> None:
    users = make_users(database, "alice")
    search_id = add_search(database, users["alice"])
    row = load(database, search_id)
    assert row.created_at.tzinfo is not None
    assert abs(utcnow() - row.created_at) < dt.timedelta(minutes=1)


# ---------------------------------------------------------------- users and tokens


def test_create_user_twice_is_a_conflict(database: Database) -> None:
    make_users(database, "alice")
    with pytest.raises(repo.Conflict) as info, database.session() as s:
        repo.create_user(s, "alice")
    assert info.value.field == "name"
    assert info.value.status == 409
    with database.session() as s:
        assert repo.get_user(s, "alice").name == "alice"
        with pytest.raises(repo.NotFound):
            repo.get_user(s, "nobody")


def test_tokens_are_stored_only_as_sha256(database: Database) -> None:
    users = make_users(database, "alice")
    with database.session() as s:
        token = repo.create_token(s, users["alice"], name="laptop")
    assert token.startswith(repo.TOKEN_PREFIX)
    with database.session() as s:
        row = s.scalar(select(ApiToken))
        assert row is not None
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert row.name == "laptop"
    assert token not in dump_all_tables(database)


def test_authenticate_accepts_good_tokens_only(database: Database) -> None:
    users = make_users(database, "alice", "bob")
    with database.session() as s:
        alice_token = repo.create_token(s, users["alice"])
        bob_token = repo.create_token(s, users["bob"])
    with database.session() as s:
        user = repo.authenticate(s, alice_token)
        assert user is not None and user.name == "alice"
        assert repo.authenticate(s, alice_token + "x") is None
        assert repo.authenticate(s, "nas_wrong") is None
    repo.record_token_use(database, alice_token)  # once the request's own session is over
    with database.session() as s:
        last_used = dict(s.execute(select(ApiToken.user_id, ApiToken.last_used_at)).all())
        assert last_used[users["alice"].id] is not None and last_used[users["bob"].id] is None
        assert repo.revoke_tokens(s, repo.get_user(s, "alice")) == 1
    with database.session() as s:
        assert repo.authenticate(s, alice_token) is None  # revoked
        bob = repo.authenticate(s, bob_token)
        assert bob is not None and bob.name == "bob"  # untouched


def test_ensure_local_admin_writes_a_private_file_and_reuses_it(database: Database, tmp_path: Path) -> None:
    token_file = tmp_path / "data" / "admin.token"
    token = repo.ensure_local_admin(database, token_file)
    assert token_file.read_text().strip() == token
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    with database.session() as s:
        user = repo.authenticate(s, token)
        assert user is not None and user.name == "admin" and user.is_admin

    assert repo.ensure_local_admin(database, token_file) == token  # valid: reused, no new token
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(ApiToken)) == 1

    token_file.write_text("nas_not-a-real-token\n")  # invalid: replaced
    replaced = repo.ensure_local_admin(database, token_file)
    assert replaced != token
    assert token_file.read_text().strip() == replaced
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600

    with database.session() as s:  # revoked: replaced too, by a token of the same admin user
        repo.revoke_tokens(s, repo.get_user(s, "admin"))
    again = repo.ensure_local_admin(database, token_file)
    assert again not in (token, replaced)
    with database.session() as s:
        user = repo.authenticate(s, again)
        assert user is not None and user.name == "admin"
        assert s.scalar(select(func.count()).select_from(User)) == 1
    assert not [p for p in token_file.parent.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- searches


def test_create_search_with_and_without_idempotency_key(database: Database) -> None:
    users = make_users(database, "alice", "bob")
    alice, bob = users["alice"], users["bob"]
    spec = {"name": "cifar", "budget": {"epochs": 3}}
    with database.session() as s:
        a, created_a = repo.create_search(s, alice, spec)
        b, created_b = repo.create_search(s, alice, spec)
    assert created_a and created_b and a.id != b.id  # no key: two searches

    with database.session() as s:
        first, created = repo.create_search(s, alice, spec, idempotency_key="k1", priority=5)
        assert created and first.status == "queued" and first.priority == 5 and first.name == "cifar"
    with database.session() as s:
        again, created = repo.create_search(s, alice, dict(spec), idempotency_key="k1")
        assert not created and again.id == first.id
    with pytest.raises(repo.Conflict) as info, database.session() as s:
        repo.create_search(s, alice, {"name": "other"}, idempotency_key="k1")
    assert info.value.field == "Idempotency-Key"
    with database.session() as s:  # keys are per user
        other, created = repo.create_search(s, bob, spec, idempotency_key="k1")
        assert created and other.id != first.id
        assert s.scalar(select(func.count()).select_from(Search)) == 4


def test_visibility_non_admin_sees_only_own_searches(database: Database) -> None:
    users = make_users(database, "alice", "bob", "root", admin="root")
    alice_ids = {add_search(database, users["alice"], f"a{i}") for i in range(3)}
    bob_id = add_search(database, users["bob"], "b0")
    with database.session() as s:
        alice = repo.get_user(s, "alice")
        root = repo.get_user(s, "root")
        assert {r.id for r in repo.list_searches(s, alice).items} == alice_ids
        assert repo.list_searches(s, alice).total == 3
        assert {r.id for r in repo.list_searches(s, root).items} == alice_ids | {bob_id}
        with pytest.raises(repo.NotFound) as info:
            repo.get_search(s, bob_id, alice)
        assert info.value.status == 404 and info.value.field == "search_id"
        assert repo.get_search(s, bob_id, root).id == bob_id
        assert repo.get_search(s, bob_id).owner.name == "bob"
        with pytest.raises(repo.NotFound):
            repo.get_search(s, "0" * 32, root)


def test_list_searches_filters_sorts_and_pages(database: Database) -> None:
    users = make_users(database, "alice", "bob", "root", admin="root")
    t0 = utcnow() - dt.timedelta(hours=1)
    ids = [
        add_search(database, users["alice"], f"resnet-{i}", priority=i, created_at=t0 + dt.timedelta(seconds=i))
        for i in range(7)
    ]
    bob_ids = [
        add_search(database, users["bob"], "100%_vit", created_at=t0 + dt.timedelta(seconds=10 + i)) for i in range(2)
    ]
    set_fields(database, ids[0], status="failed")
    set_fields(database, ids[1], status="running")
    with database.session() as s:
        alice = repo.get_user(s, "alice")
        root = repo.get_user(s, "root")

        page = repo.list_searches(s, alice, limit=3, offset=0)
        assert [r.id for r in page.items] == ids[::-1][:3]  # newest first by default
        assert (page.total, page.limit, page.offset) == (7, 3, 0)
        page = repo.list_searches(s, alice, limit=3, offset=6)
        assert [r.id for r in page.items] == [ids[0]] and page.total == 7

        asc = repo.list_searches(s, alice, sort="priority", descending=False, limit=100)
        assert [r.priority for r in asc.items] == list(range(7))

        queued = repo.list_searches(s, alice, status=["queued"], limit=2)
        assert queued.total == 5 and len(queued.items) == 2
        assert {r.status for r in queued.items} == {"queued"}
        both = repo.list_searches(s, alice, status=["failed", "running"])
        assert {r.id for r in both.items} == {ids[0], ids[1]}

        assert repo.list_searches(s, alice, name="resnet-3").total == 1
        assert repo.list_searches(s, root, name="100%").total == 2  # % is literal, not a wildcard
        assert repo.list_searches(s, root, name="0%").total == 2
        assert repo.list_searches(s, root, name="%").total == 2
        assert repo.list_searches(s, root, name="_").total == 2  # _ is literal too

        by_owner = repo.list_searches(s, root, owner="bob")
        assert {r.id for r in by_owner.items} == set(bob_ids) and by_owner.total == 2
        assert repo.list_searches(s, alice, owner="bob").total == 0  # a filter never widens visibility
        assert repo.list_searches(s, root, owner="nobody").total == 0


def test_request_cancel_by_status(database: Database) -> None:
    users = make_users(database, "alice")
    queued_id = add_search(database, users["alice"], "queued")
    with database.session() as s:
        row = repo.request_cancel(s, repo.get_search(s, queued_id))
        assert row.status == "cancelled" and row.cancel_requested and row.finished_at is not None

    running_id = add_search(database, users["alice"], "running")
    c = claim(database)
    assert c is not None and c.search_id == running_id
    with database.session() as s:
        row = repo.request_cancel(s, repo.get_search(s, running_id))
        assert row.status == "running" and row.cancel_requested and row.finished_at is None
    assert repo.heartbeat(database, running_id, c.lease_token, 60.0) is True  # the runner sees the flag

    with pytest.raises(repo.Conflict) as info, database.session() as s:  # cancelled already: final
        repo.request_cancel(s, repo.get_search(s, queued_id))
    assert info.value.field == "status"
    assert repo.finish(database, running_id, c.lease_token, "succeeded")
    with pytest.raises(repo.Conflict), database.session() as s:
        repo.request_cancel(s, repo.get_search(s, running_id))


def test_retry_search_requeues_failed_and_cancelled_only(database: Database) -> None:
    users = make_users(database, "alice")
    search_id = add_search(database, users["alice"], max_attempts=1)
    with pytest.raises(repo.Conflict), database.session() as s:
        repo.retry_search(s, repo.get_search(s, search_id))  # queued
    c = claim(database)
    assert c is not None
    assert repo.release_attempt(database, search_id, c.lease_token, "boom", backoff_s=5.0) == "failed"
    with database.session() as s:
        row = repo.retry_search(s, repo.get_search(s, search_id))
        assert row.status == "queued" and row.attempts == 1 and row.error is None and row.finished_at is None
    c2 = claim(database)  # no back-off after a manual retry
    assert c2 is not None and c2.search_id == search_id and c2.attempt == 2  # attempts keep counting

    with database.session() as s:
        repo.request_cancel(s, repo.get_search(s, search_id))
    assert repo.release_attempt(database, search_id, c2.lease_token, "stopped", backoff_s=5.0) == "cancelled"
    with database.session() as s:
        row = repo.retry_search(s, repo.get_search(s, search_id))
        assert row.status == "queued" and not row.cancel_requested


def test_retry_keeps_counting_attempts_with_a_fresh_budget(database: Database) -> None:
    """Two runs must never both be attempt 1: the Ray actor is named after the attempt (one name per attempt)."""
    from workers.ray_executor import actor_name

    users = make_users(database, "alice")
    search_id = add_search(database, users["alice"], max_attempts=2)
    attempts = []
    for expected in ("queued", "failed"):
        c = claim(database)
        assert c is not None
        attempts.append(c.attempt)
        assert repo.release_attempt(database, search_id, c.lease_token, "boom", backoff_s=0.0) == expected
    with database.session() as s:
        repo.retry_search(s, repo.get_search(s, search_id))
    backoff = 100.0
    c = claim(database)
    assert c is not None
    attempts.append(c.attempt)
    # a fresh budget of max_attempts=2, and the back-off of the first failure of a run
    before = utcnow()
    assert repo.release_attempt(database, search_id, c.lease_token, "boom", backoff_s=backoff) == "queued"
    row = load(database, search_id)
    assert row.not_before is not None and row.not_before <= before + dt.timedelta(seconds=backoff + 5)
    set_fields(database, search_id, not_before=None)
    c = claim(database)
    assert c is not None
    attempts.append(c.attempt)
    assert repo.release_attempt(database, search_id, c.lease_token, "boom", backoff_s=0.0) == "failed"
    assert attempts == [1, 2, 3, 4]
    assert len({actor_name(search_id, a) for a in attempts}) == 4
    row = load(database, search_id)
    assert (row.attempts, row.max_attempts, row.attempts_base) == (4, 2, 2)


# ---------------------------------------------------------------- scheduling


def test_claim_order_is_priority_then_age(database: Database) -> None:
    users = make_users(database, "alice")
    alice = users["alice"]
    t0 = utcnow() - dt.timedelta(hours=1)
    new_low = add_search(database, alice, "new-low", priority=0, created_at=t0 + dt.timedelta(seconds=30))
    old_low = add_search(database, alice, "old-low", priority=0, created_at=t0)
    new_high = add_search(database, alice, "new-high", priority=10, created_at=t0 + dt.timedelta(seconds=40))
    old_high = add_search(database, alice, "old-high", priority=10, created_at=t0 + dt.timedelta(seconds=20))
    negative = add_search(database, alice, "negative", priority=-5, created_at=t0 - dt.timedelta(hours=1))
    order = []
    while (c := claim(database, runner={"node": "n1"})) is not None:
        order.append(c.search_id)
    assert order == [old_high, new_high, old_low, new_low, negative]
    row = load(database, old_high)
    assert row.status == "running" and row.attempts == 1 and row.runner == {"node": "n1"}
    assert row.started_at is not None and row.lease_token is not None
    assert row.lease_expires_at is not None and row.lease_expires_at > utcnow() + dt.timedelta(seconds=50)


def test_claim_respects_not_before(database: Database) -> None:
    users = make_users(database, "alice")
    later = add_search(database, users["alice"], "later")
    set_fields(database, later, not_before=utcnow() + dt.timedelta(minutes=5))
    assert claim(database) is None
    set_fields(database, later, not_before=utcnow() - dt.timedelta(seconds=1))
    c = claim(database)
    assert c is not None and c.search_id == later
    assert load(database, later).not_before is None


def test_claim_only_what_fits_the_free_resources(database: Database) -> None:
    users = make_users(database, "alice")
    alice = users["alice"]
    t0 = utcnow() - dt.timedelta(hours=1)
    big_gpu = add_search(database, alice, "4gpu", gpus=4, cpus=4, priority=5, created_at=t0)
    many_cpu = add_search(database, alice, "16cpu", cpus=16, priority=5, created_at=t0 + dt.timedelta(seconds=1))
    small = add_search(database, alice, "1gpu", gpus=1, cpus=2, created_at=t0 + dt.timedelta(seconds=2))
    frac = add_search(database, alice, "half-gpu", gpus=0.5, cpus=1, created_at=t0 + dt.timedelta(seconds=3))

    c = claim(database, free_cpus=8, free_gpus=1)
    assert c is not None and c.search_id == small and (c.cpus, c.gpus) == (2.0, 1.0)
    c = claim(database, free_cpus=6, free_gpus=0.5)
    assert c is not None and c.search_id == frac
    assert claim(database, free_cpus=8, free_gpus=0) is None
    c = claim(database, free_cpus=8, free_gpus=4)
    assert c is not None and c.search_id == big_gpu
    c = claim(database, free_cpus=16, free_gpus=0)
    assert c is not None and c.search_id == many_cpu


def test_per_user_running_limit(database: Database) -> None:
    users = make_users(database, "alice", "bob")
    t0 = utcnow() - dt.timedelta(hours=1)
    a = [
        add_search(database, users["alice"], f"a{i}", priority=10, created_at=t0 + dt.timedelta(seconds=i))
        for i in range(3)
    ]
    b = add_search(database, users["bob"], "b", created_at=t0 + dt.timedelta(seconds=9))
    first = claim(database, per_user_limit=2)
    second = claim(database, per_user_limit=2)
    third = claim(database, per_user_limit=2)
    assert first is not None and second is not None and third is not None
    assert [first.search_id, second.search_id, third.search_id] == [a[0], a[1], b]  # alice is at her limit
    assert claim(database, per_user_limit=2) is None
    assert repo.finish(database, a[0], first.lease_token, "succeeded")
    fourth = claim(database, per_user_limit=2)
    assert fourth is not None and fourth.search_id == a[2]
    with database.session() as s:
        assert repo.status_counts(s) == {"succeeded": 1, "running": 3}
        assert {r.id for r in repo.running_searches(s)} == {a[1], a[2], b}


def test_heartbeat_extends_lease_and_reports_cancel(database: Database) -> None:
    users = make_users(database, "alice")
    search_id = add_search(database, users["alice"])
    c = claim(database, lease_s=10.0)
    assert c is not None
    before = load(database, search_id).lease_expires_at
    assert before is not None
    assert repo.heartbeat(database, search_id, c.lease_token, 600.0, progress=("supernet", 3, 10)) is False
    row = load(database, search_id)
    assert row.lease_expires_at is not None and row.lease_expires_at > before + dt.timedelta(seconds=500)
    assert (row.phase, row.progress_step, row.progress_total) == ("supernet", 3, 10)

    with pytest.raises(repo.LeaseLost):
        repo.heartbeat(database, search_id, "stale-token", 60.0)
    with database.session() as s:
        repo.request_cancel(s, repo.get_search(s, search_id))
    assert repo.heartbeat(database, search_id, c.lease_token, 60.0, runner={"pid": 1}) is True
    assert load(database, search_id).runner == {"pid": 1}
    assert repo.finish(database, search_id, c.lease_token, "cancelled")
    row = load(database, search_id)
    assert (row.phase, row.progress_step, row.progress_total) == ("supernet", 3, 10)  # where it stopped
    with pytest.raises(repo.LeaseLost):
        repo.heartbeat(database, search_id, c.lease_token, 60.0)  # finished: the lease is gone


def test_finish_needs_the_current_lease(database: Database) -> None:
    users = make_users(database, "alice")
    search_id = add_search(database, users["alice"])
    c = claim(database)
    assert c is not None
    assert repo.finish(database, search_id, "someone-else", "failed", error="x") is False
    assert load(database, search_id).status == "running"
    assert repo.heartbeat(database, search_id, c.lease_token, 60.0, progress=("export", 2, 5)) is False
    result = {"elapsed_s": 1.5, "best": {"hash": "abc"}}
    assert repo.finish(database, search_id, c.lease_token, "succeeded", result=result) is True
    row = load(database, search_id)
    assert row.status == "succeeded" and row.result == result and row.lease_token is None
    assert row.finished_at is not None and row.error is None
    assert (row.phase, row.progress_step, row.progress_total) == ("done", 1, 1)  # not the stale export 2/5
    assert repo.finish(database, search_id, c.lease_token, "failed", error="late") is False  # only once
    assert load(database, search_id).status == "succeeded"


def test_release_attempt_backs_off_exponentially_then_fails(database: Database) -> None:
    users = make_users(database, "alice")
    search_id = add_search(database, users["alice"], max_attempts=3)
    backoff = 10.0
    for attempt in (1, 2):
        c = claim(database)
        assert c is not None and c.search_id == search_id and c.attempt == attempt
        assert repo.release_attempt(database, "0" * 32, c.lease_token, "x", backoff_s=backoff) is None
        assert repo.release_attempt(database, search_id, "stale", "x", backoff_s=backoff) is None
        before = utcnow()
        assert (
            repo.release_attempt(database, search_id, c.lease_token, f"crash {attempt}", backoff_s=backoff) == "queued"
        )
        after = utcnow()
        row = load(database, search_id)
        assert row.status == "queued" and row.error == f"crash {attempt}" and row.lease_token is None
        assert row.not_before is not None
        # not_before = (the release's clock reading) + backoff * 2^(attempt-1); that reading lies in [before, after]
        delay = dt.timedelta(seconds=backoff * 2 ** (attempt - 1))
        assert before + delay <= row.not_before <= after + delay
        assert claim(database) is None  # backing off
        set_fields(database, search_id, not_before=utcnow() - dt.timedelta(seconds=1))
    c = claim(database)
    assert c is not None and c.attempt == 3
    assert repo.release_attempt(database, search_id, c.lease_token, "crash 3", backoff_s=backoff) == "failed"
    row = load(database, search_id)
    assert row.status == "failed" and row.finished_at is not None and row.attempts == 3
    assert claim(database) is None


def test_release_attempt_cancel_wins_and_not_retryable_fails(database: Database) -> None:
    users = make_users(database, "alice")
    cancelled = add_search(database, users["alice"], "cancel")
    c = claim(database)
    assert c is not None
    with database.session() as s:
        repo.request_cancel(s, repo.get_search(s, cancelled))
    assert repo.release_attempt(database, cancelled, c.lease_token, "lost", backoff_s=1.0) == "cancelled"
    assert load(database, cancelled).finished_at is not None

    fatal = add_search(database, users["alice"], "fatal")
    c = claim(database)
    assert c is not None and c.search_id == fatal
    assert repo.release_attempt(database, fatal, None, "bad spec", backoff_s=1.0, retryable=False) == "failed"
    assert load(database, fatal).error == "bad spec"


def test_expired_leases(database: Database) -> None:
    users = make_users(database, "alice")
    short = add_search(database, users["alice"], "short")
    long = add_search(database, users["alice"], "long")
    c_short = claim(database, lease_s=30.0)
    c_long = claim(database, lease_s=300.0)
    assert c_short is not None and c_long is not None
    assert {c_short.search_id, c_long.search_id} == {short, long}
    short_token = c_short.lease_token if c_short.search_id == short else c_long.lease_token
    with database.session() as s:
        assert repo.expired_leases(s) == []
        assert repo.expired_leases(s, utcnow() + dt.timedelta(seconds=60)) == [(short, short_token)]
        assert {i for i, _ in repo.expired_leases(s, utcnow() + dt.timedelta(seconds=600))} == {short, long}
    set_fields(database, short, lease_expires_at=utcnow() - dt.timedelta(seconds=1))
    with database.session() as s:
        assert repo.expired_leases(s) == [(short, short_token)]
    assert repo.release_attempt(database, short, short_token, "lease expired", backoff_s=0.0) == "queued"
    with database.session() as s:
        assert repo.expired_leases(s) == []


# ---------------------------------------------------------------- concurrency: several controllers


def run_threads(n: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a claimer hung"
    if errors:
        raise errors[0]


def queued_count(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Search).where(Search.status == "queued")) or 0)


def test_concurrent_claimers_claim_every_search_exactly_once(database: Database) -> None:
    users = make_users(database, "u0", "u1", "u2")
    ids = [add_search(database, users[f"u{i % 3}"], f"s{i}", priority=i % 4) for i in range(60)]
    claims: list[tuple[int, repo.Claim]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def controller(index: int) -> None:
        db = Database(database.url)  # its own engine and pool, like another controller process
        try:
            start.wait()
            deadline = time.monotonic() + 30
            while True:
                c = claim(db, runner={"controller": index})
                if c is None:
                    # None means "nothing claimable for me now" (rows locked by another controller count too)
                    if queued_count(db) == 0:
                        return
                    assert time.monotonic() < deadline, "claimers starve while searches stay queued"
                    time.sleep(0.005)  # a scheduler waits before its next pass
                    continue
                with lock:
                    claims.append((index, c))
                finished = repo.finish(db, c.search_id, c.lease_token, "succeeded", result={"by": index})
                assert finished, f"lost the lease on {c.search_id}: another controller claimed it too"
        finally:
            db.dispose()

    run_threads(8, controller)
    claimed = Counter(c.search_id for _, c in claims)
    assert [i for i, n in claimed.items() if n > 1] == [], "claimed twice"
    assert set(claimed) == set(ids), "lost searches"
    with database.session() as s:
        rows = list(s.scalars(select(Search)))
    assert {r.status for r in rows} == {"succeeded"}
    assert {r.attempts for r in rows} == {1}
    by = {c.search_id: index for index, c in claims}
    assert all(r.result == {"by": by[r.id]} and r.runner == {"controller": by[r.id]} for r in rows)


def test_concurrent_claimers_respect_the_per_user_limit(database: Database) -> None:
    names = ["u0", "u1", "u2", "u3"]
    users = make_users(database, *names)
    for i in range(24):
        add_search(database, users[names[i % 4]], f"s{i}")
    claims: list[repo.Claim] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def running(db: Database) -> int:
        with db.session() as s:
            return int(s.scalar(select(func.count()).select_from(Search).where(Search.status == "running")) or 0)

    def controller(_index: int) -> None:
        db = Database(database.url)
        try:
            start.wait()
            deadline = time.monotonic() + 30  # a hang guard only: the loop ends when every user runs one search
            while True:  # claimers never finish: every claim stays running
                c = claim(db, per_user_limit=1)
                if c is not None:
                    with lock:
                        claims.append(c)
                elif running(db) >= len(names):
                    return
                else:
                    assert time.monotonic() < deadline, "claimers starve while users have nothing running"
                    time.sleep(0.005)
        finally:
            db.dispose()

    run_threads(8, controller)
    assert claim(database, per_user_limit=1) is None
    with database.session() as s:
        owners = dict(s.execute(select(Search.id, Search.owner_id)).all())
        running_q = select(Search.owner_id, func.count()).where(Search.status == "running")
        per_user = dict(s.execute(running_q.group_by(Search.owner_id)).all())
    assert len(claims) == len(names)
    assert len({c.search_id for c in claims}) == len(names)
    assert sorted(Counter(owners[c.search_id] for c in claims).values()) == [1] * len(names)
    assert per_user == {users[n].id: 1 for n in names}


def test_concurrent_submissions_with_idempotency_keys_are_stored_once(database: Database) -> None:
    """Several API processes receive the same submissions (client retries): each key becomes exactly one search.

    On SQLite a read-then-write transaction must hold the write lock from its start (``write_lock=True``).
    """
    make_users(database, "alice")
    keys = [f"key-{i}" for i in range(12)]
    results: list[tuple[str, str, bool]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def api_process(index: int) -> None:
        db = Database(database.url)
        try:
            start.wait()
            for key in keys[index % 3 :] + keys[: index % 3]:
                with db.session(write_lock=True) as s:
                    owner = repo.get_user(s, "alice")
                    row, created = repo.create_search(s, owner, {"name": key}, idempotency_key=key)
                with lock:
                    results.append((key, row.id, created))
        finally:
            db.dispose()

    run_threads(8, api_process)
    assert len(results) == 8 * len(keys)
    assert sorted(k for k, _, created in results if created) == sorted(keys)  # one creation per key
    ids_by_key: dict[str, set[str]] = {}
    for key, search_id, _ in results:
        ids_by_key.setdefault(key, set()).add(search_id)
    assert all(len(ids) == 1 for ids in ids_by_key.values())  # every answer names the same search
    with database.session() as s:
        rows = list(s.scalars(select(Search)))
    assert sorted(r.idempotency_key or "" for r in rows) == sorted(keys)
    assert {r.id for r in rows} == set().union(*ids_by_key.values())


def test_authenticate_while_another_request_updates_the_same_token(database: Database) -> None:
    """Two requests authenticate with the same token at once; both must succeed (the API does this all the time)."""
    users = make_users(database, "alice")
    with database.session() as s:
        token = repo.create_token(s, users["alice"])
    other = Database(database.url)
    try:
        with database.session() as first:
            user = repo.authenticate(first, token)
            assert user is not None
            with other.session() as second:  # a concurrent request, which records the use meanwhile
                assert repo.authenticate(second, token) is not None
            repo.record_token_use(other, token)
            assert user.name == "alice"
        repo.record_token_use(database, token)  # due no more: a no-op, not an error
    finally:
        other.dispose()
    with database.session() as s:
        assert s.scalar(select(ApiToken.last_used_at)) is not None


# ---------------------------------------------------------------- events, candidates, artifacts


def test_events_page_by_id(database: Database) -> None:
    users = make_users(database, "alice")
    search_id = add_search(database, users["alice"])
    other_id = add_search(database, users["alice"], "other")
    events = [Event(type=EventType.PHASE_STARTED, phase="supernet", total=5, message="go")]
    events += [
        Event(type=EventType.EPOCH, phase="supernet", step=i, total=5, metrics={"loss": 1.0 / (i + 1)})
        for i in range(5)
    ]
    events.append(Event(type=EventType.CANDIDATE, phase="evolution", data={"arch": {"hash": "h"}}))
    with database.session() as s:
        repo.add_events(s, search_id, 1, events[:3])
        repo.add_events(s, other_id, 1, [Event(type=EventType.LOG, message="elsewhere")])
    with database.session() as s:
        repo.add_events(s, search_id, 2, events[3:])

    with database.session() as s:
        seen: list[Any] = []
        after = 0
        while page := repo.list_events(s, search_id, after_id=after, limit=3):
            assert len(page) <= 3
            seen.extend(page)
            after = page[-1].id
    assert [e.id for e in seen] == sorted(e.id for e in seen)
    assert len({e.id for e in seen}) == len(events)
    assert [(e.type, e.step) for e in seen] == [(str(e.type), e.step) for e in events]
    assert [e.attempt for e in seen] == [1, 1, 1, 2, 2, 2, 2]
    assert seen[0].message == "go" and seen[0].total == 5
    assert seen[1].metrics == {"loss": 1.0} and seen[-1].data == {"arch": {"hash": "h"}}
    assert seen[1].time == pytest.approx(events[1].time)
    with database.session() as s:
        assert repo.list_events(s, search_id, after_id=seen[-1].id) == []
        assert [e.message for e in repo.list_events(s, other_id)] == ["elsewhere"]


def candidate(h: str, pareto: bool = False, **metrics: float) -> dict[str, Any]:
    return {"arch": {"hash": h, "choices": {"depth": len(h)}}, "metrics": metrics, "pareto": pareto, "phase": "eval"}


def test_upsert_candidates_refreshes_the_same_architecture(database: Database) -> None:
    users = make_users(database, "alice")
    search_id = add_search(database, users["alice"])
    other_id = add_search(database, users["alice"], "other")
    with database.session() as s:
        repo.upsert_candidates(s, search_id, [candidate("a", accuracy=0.5, params=1e6)])
        repo.upsert_candidates(s, other_id, [candidate("a", accuracy=0.1)])  # same hash, other search
        repo.upsert_candidates(s, search_id, [])
    with database.session() as s:
        repo.upsert_candidates(s, search_id, [candidate("a", pareto=True, accuracy=0.75, params=1e6, macs=2e8)])
    with database.session() as s:
        rows = list(s.scalars(select(CandidateRow).where(CandidateRow.search_id == search_id)))
        assert len(rows) == 1
        row = rows[0]
        assert (row.accuracy, row.params, row.macs, row.latency_ms) == (0.75, 1e6, 2e8, None)
        assert row.metrics == {"accuracy": 0.75, "params": 1e6, "macs": 2e8}
        assert row.pareto and row.feasible and row.arch["hash"] == "a"
        assert repo.list_candidates(s, other_id).items[0].accuracy == 0.1


def test_list_candidates_sorts_nulls_last_and_filters_pareto(database: Database) -> None:
    users = make_users(database, "alice")
    search_id = add_search(database, users["alice"])
    with database.session() as s:
        repo.upsert_candidates(
            s,
            search_id,
            [
                candidate("a", accuracy=0.7, latency_ms=3.0),
                candidate("b", latency_ms=1.0),  # not evaluated for accuracy yet
                candidate("c", pareto=True, accuracy=0.9, latency_ms=5.0),
                candidate("d", pareto=True, accuracy=0.8),
                candidate("e", accuracy=0.6, latency_ms=2.0),
            ],
        )
    with database.session() as s:

        def hashes(**kw: Any) -> list[str]:
            return [r.arch_hash for r in repo.list_candidates(s, search_id, **kw).items]

        assert hashes() == ["c", "d", "a", "e", "b"]
        assert hashes(descending=False) == ["e", "a", "d", "c", "b"]
        assert hashes(sort="latency_ms", descending=False) == ["b", "e", "a", "c", "d"]
        assert hashes(sort="latency_ms") == ["c", "a", "e", "b", "d"]
        assert hashes(pareto_only=True) == ["c", "d"]
        page = repo.list_candidates(s, search_id, limit=2, offset=2)
        assert [r.arch_hash for r in page.items] == ["a", "e"] and page.total == 5
        assert repo.list_candidates(s, search_id, pareto_only=True, limit=1).total == 2


def test_artifacts_are_registered_with_size_and_sha256(database: Database, tmp_path: Path) -> None:
    users = make_users(database, "alice")
    search_id = add_search(database, users["alice"])
    other_id = add_search(database, users["alice"], "other")
    root = tmp_path / "searches" / search_id
    (root / "final" / "1-abc").mkdir(parents=True)
    model = root / "final" / "1-abc" / "model.safetensors"
    model.write_bytes(b"\x00weights" * 100)
    result = root / "result.json"
    result.write_text('{"ok": true}')
    with database.session() as s:
        rows = repo.register_artifacts(s, search_id, root, [model, result], kind="model")
        ids = [r.id for r in rows]
    with database.session() as s:
        listed = repo.list_artifacts(s, search_id)
        assert [a.name for a in listed] == ["final/1-abc/model.safetensors", "result.json"]
        assert [a.id for a in listed] == ids
        assert listed[0].size == 800 and listed[0].sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
        assert listed[1].size == len(result.read_bytes())
        got = repo.get_artifact(s, search_id, ids[1])
        assert got.name == "result.json" and got.kind == "model"
        with pytest.raises(repo.NotFound) as info:
            repo.get_artifact(s, other_id, ids[0])  # wrong search
        assert info.value.field == "artifact_id"
        with pytest.raises(repo.NotFound):
            repo.get_artifact(s, search_id, max(ids) + 100)
        assert repo.list_artifacts(s, other_id) == []

    result.write_text('{"ok": false, "longer": 1}')  # registering again refreshes the same row
    with database.session() as s:
        (row,) = repo.register_artifacts(s, search_id, root, [result], kind="result")
        assert row.id == ids[1]
    with database.session() as s:
        got = repo.get_artifact(s, search_id, ids[1])
        assert got.kind == "result" and got.size == len(result.read_bytes())
        assert got.sha256 == hashlib.sha256(result.read_bytes()).hexdigest()
        assert len(repo.list_artifacts(s, search_id)) == 2


def test_deleting_a_search_cascades(database: Database) -> None:
    users = make_users(database, "alice")
    search_id = add_search(database, users["alice"])
    with database.session() as s:
        repo.add_events(s, search_id, 1, [Event(type=EventType.LOG, message="x")])
        repo.upsert_candidates(s, search_id, [candidate("a", accuracy=0.5)])
    with database.session() as s:
        s.execute(text("DELETE FROM searches WHERE id = :id"), {"id": search_id})
    with database.session() as s:
        assert repo.list_events(s, search_id) == []
        assert repo.list_candidates(s, search_id).total == 0
