"""Ctrl-C during a local search, then --resume, ends with the result of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def nas(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "nas.cli", *args], env=env, **kw)


def final_of(run: Path) -> dict:
    result = json.loads((run / "result.json").read_text())
    return {"arch": result["final"][0]["arch"], "test_accuracy": result["final"][0]["metrics"]["test_accuracy"]}


def test_sigint_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert nas("search", str(spec), "--local", "-o", str(ref), "-q").wait(timeout=300) == 0

    proc = nas("search", str(spec), "--local", "-o", str(run), "-q", stderr=subprocess.PIPE, text=True)
    events = run / "events.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # interrupt after the second supernet checkpoint
        if events.is_file() and events.read_text().count('"type":"checkpoint"') >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    assert not (run / "result.json").exists()

    assert nas("search", str(spec), "--local", "-o", str(run), "-q", "--resume").wait(timeout=300) == 0
    assert final_of(run) == final_of(ref)
    assert "resumed" in (run / "events.jsonl").read_text()
