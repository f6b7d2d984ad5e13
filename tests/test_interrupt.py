"""Ctrl-C during a local search, then --resume, ends with the result of an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SPEC = {
    "name": "sigint",
    "seed": 2,
    "device": "cpu",
    "space": {
        "name": "nasnet",
        "options": {"ops": ["sep_conv_3x3", "max_pool_3x3", "skip_connect"]},
        "macro": {"cells_per_stack": 1, "filters": 8, "stem_multiplier": 1},
    },
    "dataset": {"name": "digits", "image_size": 8, "limit": 150},
    "strategy": {
        "name": "spos",
        "options": {"epochs": 3, "train": {"batch_size": 32}, "evolution": {"population": 4, "generations": 2}},
    },
    "final": {"train": {"epochs": 3, "batch_size": 32}, "export": ["json", "safetensors"]},
}


LAUNCHER = Path(__file__).with_name("interrupt_launcher.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def nas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nas.cli", *args], env=ENV, capture_output=True, text=True, timeout=300, check=False
    )


def nas_interrupted(after_checkpoints: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, which sends itself SIGINT right after its ``after_checkpoints``-th checkpoint event."""
    command = [sys.executable, str(LAUNCHER), str(after_checkpoints), *args]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300, check=False)


def final_of(run: Path) -> dict:
    result = json.loads((run / "result.json").read_text())
    return {"arch": result["final"][0]["arch"], "test_accuracy": result["final"][0]["metrics"]["test_accuracy"]}


def events_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sigint_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    ref, run = tmp_path / "ref", tmp_path / "run"
    done = nas("search", str(spec), "--local", "-o", str(ref), "-q")
    assert done.returncode == 0, done.stderr

    # Ctrl-C right after the second supernet checkpoint (epoch 2 of 3): a defined point, whatever the machine's speed
    stopped = nas_interrupted(2, "search", str(spec), "--local", "-o", str(run), "-q")
    assert stopped.returncode == 130, stopped.stderr
    assert "interrupted" in stopped.stderr and "--resume" in stopped.stderr
    assert not (run / "result.json").exists()
    events = events_of(run)
    assert [e["phase"] for e in events if e["type"] == "checkpoint"] == ["supernet", "supernet"]
    assert events[-1]["type"] == "cancelled" and "KeyboardInterrupt" in events[-1]["message"]

    resumed = nas("search", str(spec), "--local", "-o", str(run), "-q", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert final_of(run) == final_of(ref)
    assert "resumed supernet at epoch 2/3" in [e.get("message") for e in events_of(run)]
