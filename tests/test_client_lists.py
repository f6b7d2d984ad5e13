"""The SDK's side of issue 12 against the real API app (tests.live_service): summaries from ``searches()``, search id
prefixes, candidate and event filters, and architecture diagrams."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nas.client import Client, Conflict, InvalidRequest, NotFound, SearchSummary
from nas.space import get_space
from tests.live_service import SPEC, LiveService, event

NASNET_SPEC: dict[str, Any] = {**SPEC, "space": {"name": "nasnet", "macro": {"cells_per_stack": 1, "filters": 8}}}


@pytest.fixture
def client(live: LiveService, user: tuple[str, str]) -> Iterator[Client]:
    with Client(live.url, user[1], retries=0) as c:
        yield c


def nasnet(seed: int) -> dict[str, Any]:
    return get_space("nasnet").sample(random.Random(seed)).model_dump(mode="json")


def rename(live: LiveService, search_id: str, new_id: str) -> str:
    live.set_search(search_id, id=new_id)
    return new_id


def test_searches_are_summaries(live: LiveService, user: tuple[str, str], client: Client) -> None:
    sid = live.create_search(user[0], NASNET_SPEC, status="running", phase="search", progress_step=1,
                             progress_total=4)  # fmt: skip
    live.add_candidates(sid, [{"arch": nasnet(0), "metrics": {"accuracy": 0.4}},
                              {"arch": nasnet(1), "metrics": {"accuracy": 0.8}}])  # fmt: skip
    [row] = client.searches()
    assert isinstance(row, SearchSummary) and not hasattr(row, "spec")
    assert (row.id, row.space, row.strategy, row.dataset, row.best_accuracy, row.candidates) == (
        sid, "nasnet", "spos", "digits", 0.8, 2)  # fmt: skip
    assert row.progress is not None and row.progress.fraction == 0.25 and not row.done
    assert client.search(row.id).info.spec.space.name == "nasnet"  # the full search, spec included


def test_a_unique_prefix_names_a_search(live: LiveService, user: tuple[str, str], client: Client) -> None:
    a = rename(live, live.create_search(user[0]), "c0ffee01" + "a" * 24)
    b = rename(live, live.create_search(user[0]), "c0ffee02" + "b" * 24)
    other_name, other_token = live.new_user()
    rename(live, live.create_search(other_name), "c0ffee03" + "c" * 24)
    search = client.search("c0ffee01")
    assert search.id == a  # the handle holds the full id ...
    assert search.cancel().status == "cancelled"  # ... which later calls use
    assert client.search(" C0FFEE02 ").id == b
    with pytest.raises(Conflict) as amb:
        client.search("c0ffee")
    assert a in str(amb.value) and b in str(amb.value) and "c0ffee03" not in str(amb.value)
    with pytest.raises(NotFound, match="at least 6 characters"):
        client.search("c0ffe")
    with pytest.raises(NotFound):
        client.search("c0ffee03")  # another user's
    with Client(live.url, other_token, retries=0) as other:
        assert other.search("c0ffee").id.startswith("c0ffee03")  # unique among that user's own


def test_candidate_filters_one_candidate_and_diagrams(
    live: LiveService, user: tuple[str, str], client: Client, tmp_path: Path
) -> None:
    sid = live.create_search(user[0], NASNET_SPEC, status="succeeded")
    archs = [nasnet(i) for i in range(4)]
    live.add_candidates(sid, [
        {"arch": archs[0], "metrics": {"accuracy": 0.5, "params": 300.0}, "phase": "search"},
        {"arch": archs[1], "metrics": {"accuracy": 0.9, "params": 900.0}, "phase": "search"},
        {"arch": archs[2], "metrics": {"accuracy": 0.7, "params": 100.0}, "phase": "search", "feasible": False},
        {"arch": archs[3], "metrics": {"params": 50.0}, "phase": "final"},
    ])  # fmt: skip
    search = client.search(sid)
    assert [c.accuracy for c in search.candidates(min_accuracy=0.6)] == [0.9, 0.7]
    assert [c.params for c in search.candidates(max_params=300, sort="params", order="asc")] == [50, 100, 300]
    assert [c.accuracy for c in search.candidates(feasible=True, phase="search")] == [0.9, 0.5]
    assert [c.accuracy for c in search.candidates(feasible=False)] == [0.7]
    best = search.candidates(limit=1)[0]
    assert search.candidate(best.arch_hash[:6]).arch_hash == best.arch_hash

    target = tmp_path / "out" / "best.svg"
    text = search.architecture_svg(best.arch_hash, target)
    root = ET.fromstring(text)
    assert root.get("data-testid") == "arch-diagram" and target.read_text() == text
    again = client.architecture_svg(best.arch)  # any architecture, drawn by the service: the same drawing
    assert again == text
    exported = {"architecture": best.arch, "space_options": {}, "macro": {}}  # an exported arch.json
    assert client.architecture_svg(exported) == text
    with pytest.raises(InvalidRequest) as bad:
        client.architecture_svg({**best.arch, "choices": {"normal": {}, "reduce": {}}})
    assert bad.value.field is not None and bad.value.field.startswith("architecture.choices")
    with pytest.raises(NotFound):
        search.architecture_svg("0" * 16)


def test_events_filtered_by_type_and_phase(live: LiveService, user: tuple[str, str], client: Client) -> None:
    sid = live.create_search(user[0], status="succeeded")
    events = [event(1, "epoch"), event(2, "progress"), event(3, "epoch", phase="final-1"), event(4, "candidate")]
    ids = live.add_events(sid, events)
    search = client.search(sid)
    assert [e.id for e in search.events(follow=False, types=["epoch"])] == [ids[0], ids[2]]
    assert [e.id for e in search.events(follow=False, types=["epoch"], phases=["supernet"])] == [ids[0]]
    assert [e.id for e in search.events(follow=False, phases=["final-1"])] == [ids[2]]
    assert [e.id for e in search.events(follow=False, types=["epoch"], after=ids[0])] == [ids[2]]


def test_summary_model_keeps_old_fields(live: LiveService, user: tuple[str, str], client: Client) -> None:
    """What scripts used from the list items before (id, name, owner, status, priority, progress, dates) is there."""
    sid = live.create_search(user[0], status="failed", error="boom\nline 2")
    [row] = client.searches()
    assert (row.id, row.name, row.owner, row.status, row.priority, row.error) == (sid, "toy", user[0], "failed", 0,
                                                                                  "boom")  # fmt: skip
    assert row.created_at is not None and row.updated_at is not None
    assert set(SearchSummary.model_fields) >= {"attempts", "max_attempts", "cancel_requested", "started_at"}
