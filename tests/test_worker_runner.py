"""The search runner in-process (no Ray): what it writes to the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import threading

import pytest

from nas.events import Event, EventType, ListReporter, MultiReporter
from nas.spec import SearchSpec
from service.settings import Settings
from service.store import repo
from tests.service_helpers import spec
from workers.runner import HOLD_ENV, HOLD_MESSAGE, DbReporter, _with_test_hold, finite, run_claim


def _claim(database, body):
    with database.session() as s:
        user = repo.create_user(s, "alice")
        row, _ = repo.create_search(s, user, body)
    claim = repo.claim_next(database, free_cpus=4, free_gpus=0, per_user_limit=4, lease_s=60)
    assert claim is not None and claim.search_id == row.id
    return claim


@pytest.mark.slow  # a whole search per backend
def test_runner_records_events_candidates_artifacts_and_result(database, tmp_path) -> None:
    body = spec(strategy={"name": "spos", "options": {"epochs": 1, "evolution": {"population": 4, "generations": 1}}})
    body["final"]["train"]["epochs"] = 1
    claim = _claim(database, body)
    settings = Settings(data_dir=tmp_path, heartbeat_s=0.2)
    assert run_claim(settings, claim, db=database) == "succeeded"

    with database.session() as s:
        row = repo.get_search(s, claim.search_id)
        events = repo.list_events(s, claim.search_id, limit=10_000)
        candidates = repo.list_candidates(s, claim.search_id, limit=100)
        artifacts = {a.name: a for a in repo.list_artifacts(s, claim.search_id)}
    assert row.status == "succeeded" and row.lease_token is None and row.output_dir
    assert (row.phase, row.progress_step, row.progress_total) == ("done", 1, 1)  # complete, not stale
    assert row.result["final"][0]["path"].startswith("final/1-")
    assert events[0].type == "log" and "runner started" in events[0].message
    assert events[-1].type == "finished"
    assert candidates.total >= 1 and any(c.pareto for c in candidates.items)
    final = row.result["final"][0]["path"]
    assert f"{final}/model.safetensors" in artifacts and "result.json" in artifacts


def test_a_runner_whose_lease_is_gone_writes_nothing(database, tmp_path) -> None:
    claim = _claim(database, spec())
    assert repo.release_attempt(database, claim.search_id, claim.lease_token, "lost", backoff_s=0) == "queued"
    assert run_claim(Settings(data_dir=tmp_path), claim, db=database) == "lost"
    with database.session() as s:
        assert repo.list_events(s, claim.search_id) == []
        assert repo.get_search(s, claim.search_id).status == "queued"


def test_non_finite_metrics_are_left_out_of_the_store(database) -> None:
    """JSON has no NaN: PostgreSQL refuses it, so a strategy's NaN metric must not fail the run."""
    assert finite({"a": 1.0, "b": math.nan, "c": math.inf, "d": 2}) == {"a": 1.0, "d": 2.0}
    claim = _claim(database, spec())
    reporter = DbReporter(database, claim.search_id, claim.attempt)
    arch = {"space": "nasnet", "version": "1", "choices": {"x": 1}}
    reporter.emit(Event(type=EventType.CANDIDATE, phase="evolution", metrics={"acc": math.nan, "params": 5.0},
                        data={"arch": arch}))  # fmt: skip
    reporter.flush()
    with database.session() as s:
        [event] = repo.list_events(s, claim.search_id)
        [cand] = repo.list_candidates(s, claim.search_id).items
    assert event.metrics == {"params": 5.0} and cand.metrics == {"params": 5.0}


class FlushCounter(ListReporter):
    """Stands in for the DbReporter: records events, and signals each flush."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed = threading.Event()

    def flush(self) -> None:
        self.flushed.set()


def test_the_hold_hook_holds_only_the_first_attempt_of_the_named_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """NAS_TEST_HOLD_AFTER_CHECKPOINT (the service tests' way to kill a runner at a defined point)."""
    recorder = FlushCounter()
    victim, twin = SearchSpec.model_validate(spec(name="victim")), SearchSpec.model_validate(spec(name="twin"))
    monkeypatch.delenv(HOLD_ENV, raising=False)
    assert _with_test_hold(recorder, victim, 1) is recorder  # unset: nothing changes
    monkeypatch.setenv(HOLD_ENV, "victim:2")
    assert _with_test_hold(recorder, twin, 1) is recorder
    assert _with_test_hold(recorder, victim, 2) is recorder  # a resumed attempt runs through
    held = _with_test_hold(recorder, victim, 1)
    assert isinstance(held, MultiReporter)
    hold = held.reporters[1]
    held.checkpoint("supernet", "epoch-1")
    assert not recorder.flushed.is_set()
    thread = threading.Thread(target=held.checkpoint, args=("supernet", "epoch-2"), daemon=True)
    thread.start()
    assert recorder.flushed.wait(60)  # the hold message is stored before it waits
    assert thread.is_alive()  # held: it only returns once released (in a run: never, the process is killed)
    assert [e.type for e in recorder.events] == [EventType.CHECKPOINT, EventType.CHECKPOINT, EventType.LOG]
    assert HOLD_MESSAGE in (recorder.events[-1].message or "")
    hold.released.set()
    thread.join(60)
    assert not thread.is_alive()


def test_bad_input_found_at_run_time_records_a_failed_event(database, tmp_path) -> None:
    """A refused pickle is only seen when the runner loads the data: the search fails with a ``failed`` event."""
    import pickle

    from tests.test_data import _Evil, write_cifar10

    folder = tmp_path / "data" / "cifar-10-batches-py"
    write_cifar10(folder)
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    claim = _claim(database, spec(dataset={"name": "cifar10", "path": str(folder)}))
    settings = Settings(data_dir=tmp_path / "service", dataset_roots=[tmp_path / "data"], heartbeat_s=0.2)
    assert run_claim(settings, claim, db=database) == "failed"

    with database.session() as s:
        row = repo.get_search(s, claim.search_id)
        events = repo.list_events(s, claim.search_id, limit=100)
    assert row.status == "failed" and "not allowed" in row.error and not marker.exists()
    assert events[-1].type == "failed" and events[-1].message == row.error
    assert events[-1].attempt == claim.attempt
    assert [e.type for e in events].count("failed") == 1


def test_an_attempt_that_crashes_before_the_engine_reports_records_a_failed_event(
    database, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every attempt's events end with its outcome, also when it is re-queued for another attempt."""
    import nas.runner

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(nas.runner, "run_search", crash)
    claim = _claim(database, spec())
    assert run_claim(Settings(data_dir=tmp_path, heartbeat_s=0.2), claim, db=database) == "queued"
    with database.session() as s:
        events = repo.list_events(s, claim.search_id, limit=100)
        assert repo.get_search(s, claim.search_id).error == "RuntimeError: disk on fire"
    assert events[-1].type == "failed" and events[-1].message == "RuntimeError: disk on fire"
