"""The ground-truth table (benchmarks/ground_truth.py): its qualification rule, the result file, resuming, --quick."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.ground_truth import (
    VERSION,
    GroundTruthConfig,
    load_rows,
    main,
    parse_args,
    percentile,
    qualification,
)


def rows(first: list[float], second: list[float]) -> list[dict[str, Any]]:
    return [{"test_accuracy": [a, b], "mean": (a + b) / 2} for a, b in zip(first, second, strict=True)]


@pytest.mark.parametrize("q", [0, 10, 37.5, 50, 90, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = [0.52, 0.9, 0.61, 0.75, 0.55, 0.98, 0.7]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_qualifies_only_with_agreeing_seeds_and_spread() -> None:
    accs = [0.5 + 0.02 * i for i in range(24)]  # 0.50 .. 0.96: spread 0.368
    agree = qualification(rows(accs, [a + 0.005 for a in accs]))
    assert agree["seed_tau"] == pytest.approx(1.0) and agree["p"] < 1e-6
    assert agree["spread"] == pytest.approx(percentile(accs, 90) - percentile(accs, 10) + 0.0, abs=1e-9)
    assert agree["qualifies"] is True

    shuffled = qualification(rows(accs, list(reversed(accs))))  # seeds rank in opposite orders
    assert shuffled["seed_tau"] == pytest.approx(-1.0) and shuffled["qualifies"] is False

    flat = [0.6 + 0.002 * i for i in range(24)]  # seeds agree but the spread is under 10 points
    narrow = qualification(rows(flat, flat))
    assert narrow["seed_tau"] == pytest.approx(1.0) and narrow["spread"] < 0.1 and narrow["qualifies"] is False

    single = qualification([{"test_accuracy": [0.7], "mean": 0.7}] * 4)  # one seed: no agreement to measure
    assert single["seed_tau"] is None and single["qualifies"] is False


def test_config_defaults_and_args() -> None:
    cfg, _ = parse_args(["--space", "hytra", "--archs", "5", "--image-size", "16"])
    assert cfg.space == "hytra" and cfg.archs == 5 and cfg.macro["image_size"] == 16
    nasnet = GroundTruthConfig()
    assert nasnet.options["ops"] == [
        "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    ]  # fmt: skip
    assert nasnet.macro["filters"] == 16 and nasnet.macro["cells_per_stack"] == 1
    record = nasnet.record()
    assert record["seeds"] == [1, 2] and record["recipe"]["epochs"] == nasnet.epochs
    with pytest.raises(ValueError, match="space"):
        GroundTruthConfig(space="mbconv")


def test_quick_run_writes_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gt.json"
    out = main(["--quick", "--json", str(path)])
    saved = json.loads(path.read_text())
    assert saved["version"] == VERSION and saved["config"]["space"] == "nasnet"
    assert saved["config"]["dataset"]["name"] == "pathfinder" and saved["config"]["seeds"] == [1, 2]
    assert len(saved["rows"]) == 3 and len({r["arch"] for r in saved["rows"]}) == 3
    for row in saved["rows"]:
        assert len(row["test_accuracy"]) == 2 and all(0.0 <= a <= 1.0 for a in row["test_accuracy"])
        assert row["mean"] == pytest.approx(sum(row["test_accuracy"]) / 2)
        assert row["params"] > 0 and row["macs"] > 0 and row["choices"]
    assert set(saved["qualification"]) >= {"seed_tau", "p", "p10", "p90", "spread", "qualifies"}
    assert out["rows"] == saved["rows"]

    # a second run of the same config trains nothing: every row is kept from the file
    again = main(["--quick", "--json", str(path)])
    assert again["rows"] == saved["rows"]
    assert "kept" in capsys.readouterr().err

    # more architectures continue the same rows; another recipe or dataset starts over
    assert load_rows(path, dict(saved["config"], archs=24)) == saved["rows"]
    assert load_rows(path, dict(saved["config"], recipe={**saved["config"]["recipe"], "lr": 0.1})) == []
    assert load_rows(path, dict(saved["config"], dataset={**saved["config"]["dataset"], "image_size": 16})) == []
