"""The rank-correlation study (benchmarks/rank_correlation.py) end to end on a tiny config, and its pieces: the signed
correlations, architecture sampling, the --quick preset and the table."""

from __future__ import annotations

import math
import random

import pytest

from benchmarks.rank_correlation import (
    QUICK,
    StudyConfig,
    correlation,
    format_table,
    parse_args,
    run_study,
    sample_architectures,
)
from nas.space import get_space

# the --quick preset's shape on HyTra's tiny fabric (cheaper to rate than MBConv's 1,040 block paths)
TINY = StudyConfig(
    space="hytra",
    dataset="digits",
    image_size=8,
    limit=64,
    archs=4,
    epochs=3,
    block_epochs=1,
    repeats=2,
    batch_size=16,
    rating_batches=1,
    eval_batch_size=16,
)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    return run_study(TINY, workdir=tmp_path_factory.mktemp("study"), progress=lambda _msg: None)


def test_study_reports_every_architecture_and_finite_correlations(result) -> None:
    rows = result["architectures"]
    assert len(rows) == TINY.archs
    assert len({r["hash"] for r in rows}) == TINY.archs
    space = get_space("hytra")
    for r in rows:
        space.validate(space.make(r["choices"]))
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["spos_val_accuracy"] <= 1.0
        assert len(r["test_accuracy_runs"]) == TINY.repeats
        assert r["test_accuracy"] == pytest.approx(sum(r["test_accuracy_runs"]) / TINY.repeats)
        assert r["params"] > 0 and r["macs"] > 0
        # sum over 4 blocks of (loss + 4), each loss in [-4, 4]
        assert math.isfinite(r["bossnas_score"]) and 0.0 <= r["bossnas_score"] <= 4 * 8.0
    assert len({r["test_accuracy"] for r in rows}) > 1, "the tiny config must give distinct accuracies"
    for name in ("spos", "bossnas", "params", "macs", "repeat_agreement"):
        c = result["correlations"][name]
        for key in ("kendall_tau", "spearman_rho"):
            assert c[key] is not None and math.isfinite(c[key]) and -1.0 <= c[key] <= 1.0, (name, key, c)
        assert 0.0 <= c["kendall_p"] <= 1.0 and 0.0 <= c["spearman_p"] <= 1.0


def test_study_correlations_match_its_table(result) -> None:
    rows = result["architectures"]
    acc = [r["test_accuracy"] for r in rows]
    assert result["correlations"]["spos"] == correlation([r["spos_val_accuracy"] for r in rows], acc, True)
    assert result["correlations"]["bossnas"] == correlation([r["bossnas_score"] for r in rows], acc, False)
    first, second = ([r["test_accuracy_runs"][i] for r in rows] for i in (0, 1))
    assert result["correlations"]["repeat_agreement"] == correlation(first, second, True)


def test_study_records_budget_timings_and_machine(result) -> None:
    budget = result["budget"]
    assert budget["blocks"] == 4
    assert budget["spos_epochs"] == budget["blocks"] * TINY.block_epochs
    assert budget["images_seen_spos"] == budget["images_seen_bossnas"] == budget["spos_epochs"] * TINY.limit
    assert result["data"]["train"] == TINY.limit
    for key in ("standalone_s", "spos_train_s", "spos_score_s", "bossnas_train_s", "bossnas_score_s", "total_s"):
        assert result["timings"][key] >= 0.0
    t = result["timings"]
    assert t["total_s"] >= t["standalone_s"] + t["bossnas_train_s"]
    assert 0.0 < t["bossnas_block_training_s"] + t["bossnas_block_rating_s"] <= t["bossnas_train_s"] + 0.2
    assert len(result["load_average"]["start"]) == 3 and result["machine"]["cpus"] >= 1
    assert result["config"]["space"] == "hytra" and result["config"]["macro"]["image_size"] == 8
    table = format_table(result)
    assert all(r["hash"] in table for r in result["architectures"])
    assert "Kendall tau" in table and "0.65" in table


def test_correlation_is_signed_so_that_agreement_is_positive() -> None:
    acc = [0.1, 0.4, 0.3, 0.9]
    assert correlation([1.0, 4.0, 3.0, 9.0], acc, higher_is_better=True)["kendall_tau"] == pytest.approx(1.0)
    lower = correlation([9.0, 6.0, 7.0, 1.0], acc, higher_is_better=False)
    assert lower["kendall_tau"] == pytest.approx(1.0) and lower["spearman_rho"] == pytest.approx(1.0)
    reversed_ = correlation([9.0, 6.0, 7.0, 1.0], acc, higher_is_better=True)
    assert reversed_["kendall_tau"] == pytest.approx(-1.0) and reversed_["spearman_rho"] == pytest.approx(-1.0)
    assert correlation([2.0, 2.0, 2.0, 2.0], acc, higher_is_better=True)["kendall_tau"] is None


def test_sampled_architectures_are_distinct_and_seeded() -> None:
    space = get_space("bossnas-mbconv")
    a = sample_architectures(space, 12, seed=5)
    assert len({x.hash for x in a}) == 12
    assert [x.hash for x in a] == [x.hash for x in sample_architectures(space, 12, seed=5)]
    assert [x.hash for x in a] != [x.hash for x in sample_architectures(space, 12, seed=6)]
    for x in a:
        space.validate(x)
    assert a[0].hash == space.sample(random.Random(5)).hash


def test_cli_quick_preset_and_overrides() -> None:
    cfg, _ = parse_args(["--quick"])
    assert cfg.archs == QUICK["archs"] and cfg.dataset == QUICK["dataset"] and cfg.space == "bossnas-mbconv"
    cfg, args = parse_args(["--quick", "--archs", "6", "--limit", "0", "--space", "hytra", "--json", "x.json"])
    assert cfg.archs == 6 and cfg.limit is None and cfg.space == "hytra" and args.json == "x.json"
    assert cfg.macro_dict()["stem"] == "small"
    cfg, _ = parse_args(["--macro", '{"width_mult": 0.5}', "--seed", "3"])
    assert cfg.macro_dict() == {"width_mult": 0.5, "image_size": 16} and cfg.seed == 3 and cfg.archs >= 12
