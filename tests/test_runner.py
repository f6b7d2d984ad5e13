from __future__ import annotations

import json
import threading

import pytest

from nas.errors import InvalidInput, SearchCancelled
from nas.events import Event, EventType, ListReporter
from nas.runner import run_search
from nas.specio import parse_spec

SPEC = {
    "name": "toy",
    "seed": 1,
    "device": "cpu",
    "space": {"name": "toyconv", "macro": {"width": 4}},
    "dataset": {"name": "digits", "image_size": 8, "limit": 200},
    "strategy": {
        "name": "spos",
        "options": {"epochs": 1, "train": {"batch_size": 32}, "evolution": {"population": 4, "generations": 1}},
    },
    "final": {"top_k": 1, "train": {"epochs": 2, "batch_size": 32}, "export": ["json", "safetensors", "torchscript"]},
}


@pytest.mark.slow  # a whole search: data, strategy, retraining, export
def test_run_search_end_to_end(tmp_path) -> None:
    reporter = ListReporter()
    result = run_search(parse_spec(SPEC), tmp_path / "run", reporter=reporter)
    run = tmp_path / "run"
    assert (run / "result.json").is_file() and (run / "search_result.json").is_file()
    final = result.final[0]
    assert 0.0 <= final.metrics["test_accuracy"] <= 1.0
    assert set(final.artifacts) == {"json", "safetensors", "torchscript"}
    stored = json.loads((run / "result.json").read_text())
    assert stored["final"][0]["arch"]["choices"] == result.search.best[0].arch.choices
    lines = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert lines[-1]["type"] == "finished"
    assert reporter.of_type(EventType.FINISHED)

    from nas import load

    model = load(final.directory)
    assert sum(p.numel() for p in model.parameters()) == final.metrics["params"]


class CancelOn(ListReporter):
    def __init__(self, cancel: threading.Event, phase: str) -> None:
        super().__init__()
        self.cancel, self.phase = cancel, phase

    def emit(self, event: Event) -> None:
        super().emit(event)
        if event.type == EventType.EPOCH and event.phase == self.phase:
            self.cancel.set()


def test_interrupted_run_resumes_to_the_same_result(tmp_path) -> None:
    spec = parse_spec(SPEC)
    reference = run_search(spec, tmp_path / "ref")
    cancel = threading.Event()
    with pytest.raises(SearchCancelled):
        run_search(spec, tmp_path / "int", reporter=CancelOn(cancel, "retrain-1"), cancel=cancel)
    assert not (tmp_path / "int" / "result.json").exists()
    events = (tmp_path / "int" / "events.jsonl").read_text()
    assert '"type":"cancelled"' in events
    resumed = run_search(spec, tmp_path / "int", resume=True)
    assert resumed.final[0].arch == reference.final[0].arch
    assert resumed.final[0].metrics["test_accuracy"] == reference.final[0].metrics["test_accuracy"]


def test_existing_output_needs_resume_and_same_spec(tmp_path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("keep me")
    with pytest.raises(InvalidInput) as info:
        run_search(parse_spec(SPEC), tmp_path / "x")
    assert info.value.field == "output"
    with pytest.raises(InvalidInput) as info:
        run_search(parse_spec(SPEC), tmp_path / "y", resume=True)
    assert info.value.field == "output" and not (tmp_path / "y").exists()


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"space": {"name": "nope"}}, "space"),
        ({"dataset": {"name": "mnist"}}, "dataset.name"),
        ({"dataset": {"name": "cifar10", "path": "/definitely/not/here"}}, "dataset.path"),
        ({"dataset": {"name": "cifar10"}}, "dataset.path"),
        ({"strategy": {"name": "spos", "options": {"epochs": -3}}}, "strategy.options.epochs"),
        ({"strategy": {"name": "annealing"}}, "strategy.name"),
        ({"space": {"name": "toyconv", "macro": {"width": 0}}}, "macro.width"),
        ({"final": {"macro": {"width": 100000}}}, "final.macro.width"),
        ({"final": {"export": ["pickle"]}}, "final.export.0"),
        ({"objectives": ["accuracy", "accuracy"]}, "objectives"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_specs_name_the_field_and_write_nothing(tmp_path, patch, field) -> None:
    data = {**SPEC, **patch}
    with pytest.raises(InvalidInput) as info:
        run_search(parse_spec(data), tmp_path / "out")
    assert info.value.field == field, info.value
    assert not (tmp_path / "out").exists()
