"""End to end through the embedded service: `nas up` in a child process, the SDK, live events, download, load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

import nas
from api.launcher import ServiceProcess
from nas.client import Client
from tests.service_helpers import FAST_ENV, checkpointed_runner_pid, spec, store, wait_for
from workers.runner import HOLD_ENV, HOLD_MESSAGE

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    # the first attempt of a search named "victim" holds after its first checkpoint (workers/runner.py's test hook)
    env = {**FAST_ENV, HOLD_ENV: "victim:1"}
    svc = ServiceProcess(tmp_path_factory.mktemp("svc"), env=env).start()
    yield svc
    svc.stop()


@pytest.fixture
def client(service):
    with Client(service.url, service.token) as c:
        yield c


def test_submit_follow_download_and_load(service, client, tmp_path) -> None:
    search = client.submit(spec())
    events = list(search.events(follow=True))  # live, until the search ends
    types = [e.type for e in events]
    assert events[0].type == "log" and "runner started" in (events[0].message or "")
    assert "phase_started" in types and types[-1] == "finished"
    assert "epoch" in types and "candidate" in types and "checkpoint" in types
    assert [e.id for e in events] == sorted(e.id for e in events)

    info = search.refresh()
    assert info.status == "succeeded" and info.attempts == 1
    candidates = search.candidates()
    assert candidates and all(c.arch_hash for c in candidates)
    assert search.pareto()
    best = search.best()
    assert 0.0 <= best.metrics["test_accuracy"] <= 1.0

    folder = search.download(tmp_path / "model")
    assert folder == tmp_path / "model" / best.path
    model = nas.load(folder)
    with torch.no_grad():
        logits = model(torch.zeros(2, 1, 8, 8))
    assert logits.shape == (2, 10)

    env = {**os.environ, "NAS_URL": service.url, "NAS_TOKEN": service.token}
    shown = subprocess.run([sys.executable, "-m", "nas.cli", "show", search.id, "--json"], env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert search.id in shown.stdout and "succeeded" in shown.stdout


def test_cancel_a_running_search(service, client) -> None:
    long = spec(name="long", strategy={"name": "spos", "options": {"epochs": 500, "train": {"batch_size": 32}}})
    search = client.submit(long)
    wait_for(lambda: search.refresh().status == "running" and search.info.progress, 120, "the search to run")
    search.cancel()
    final = wait_for(lambda: search.refresh().done and search.info, 30, "the cancel to take effect")
    assert final.status == "cancelled"


def test_killed_runner_resumes_from_its_checkpoint_with_the_same_result(service, client) -> None:
    """Kill the runner process mid-training: the search resumes and ends exactly like an uninterrupted twin."""
    db = store(service.data_dir)
    victim = client.submit(spec(name="victim"))
    twin = client.submit(spec(name="twin"))  # the same search under another name: the hook leaves it alone
    # the victim's runner holds right after its first checkpoint (HOLD_ENV), so the kill lands there, not later
    pid = wait_for(lambda: checkpointed_runner_pid(db, victim.id), 180, "a supernet checkpoint of the victim")
    os.kill(pid, signal.SIGKILL)

    a = victim.wait(timeout=300)
    b = twin.wait(timeout=300)
    assert a.status == b.status == "succeeded"
    assert a.attempts == 2 and b.attempts == 1
    assert a.result is not None and b.result is not None
    assert a.result.final[0].arch == b.result.final[0].arch
    assert a.result.final[0].metrics == b.result.final[0].metrics
    events = list(victim.events(follow=False))
    first = [e for e in events if e.attempt == 1]
    assert [e.type for e in first].count("checkpoint") == 1
    assert any(HOLD_MESSAGE in (e.message or "") for e in first)  # killed where the hook held it
    assert any("resuming from the last checkpoint" in (e.message or "") for e in events if e.attempt == 2)
    db.dispose()
