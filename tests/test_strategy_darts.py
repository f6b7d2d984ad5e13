"""DARTS: the differentiable NASNet supernet (derivation, fixed paths) and the first-order search strategy (alpha
updates, a tiny run, exact resume)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from nas.arch import Architecture
from nas.errors import InvalidInput, SearchCancelled
from nas.events import EventType, ListReporter
from nas.strategies.base import get_strategy
from nas.strategies.darts import DARTSStrategy, split_training_data
from nas.train import make_optimizer, make_scheduler
from searchspaces.nasnet import NASNetSpace
from searchspaces.nasnet.darts_supernet import DartsSupernet, edge_offset, num_edges
from searchspaces.nasnet.genotype import DARTS_OPS
from tests.test_strategy_random import CancelAfter, make_ctx, toy_data

OPS = ["skip_connect", "sep_conv_3x3", "max_pool_3x3"]
MACRO = {"layers": 3, "channels": 4, "image_size": 8}


class NoDiffNASNet(NASNetSpace):
    """A space without a differentiable supernet."""

    supports_differentiable = False


def tiny_supernet(**kw: Any) -> DartsSupernet:
    torch.manual_seed(0)
    return DartsSupernet(NASNetSpace(ops=OPS), {**MACRO, "num_classes": 2}, **kw)


def darts_ctx(folder: Path, **kw: Any) -> Any:
    """A context on little data whose candidates are measured with a small DARTS macro."""
    kw.setdefault("space", NASNetSpace(ops=OPS))
    return make_ctx(folder, data=toy_data(n_train=32, n_val=16), macro={"kind": "darts", **MACRO}, **kw)


def darts_opts(epochs: int = 1) -> dict[str, Any]:
    return {"train": {"epochs": epochs, "batch_size": 8, "lr": 0.025}, "macro": MACRO, "arch_lr": 3e-2}


def test_shapes_and_parameter_groups() -> None:
    net = tiny_supernet()
    assert num_edges(4) == 14 and net.alpha_normal.shape == (14, 1 + len(OPS))
    assert net.candidate_names == ("none", *OPS)
    arch_ids = {id(p) for p in net.arch_parameters()}
    assert arch_ids == {id(net.alpha_normal), id(net.alpha_reduce)}
    assert not arch_ids & {id(p) for p in net.weight_parameters()}
    out = net(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 2)
    out.sum().backward()
    assert net.alpha_normal.grad is not None and net.alpha_reduce.grad is not None
    assert net.alpha_normal.grad.abs().sum() > 0 and net.alpha_reduce.grad.abs().sum() > 0


def test_derive_keeps_top2_edges_with_strongest_non_zero_op() -> None:
    net = tiny_supernet()
    none, skip, sep, pool = range(4)
    with torch.no_grad():
        a = torch.zeros(14, 4)
        # node 0 (edges from 0, 1): sep on 0, pool on 1
        a[edge_offset(0) + 0, sep] = 3.0
        a[edge_offset(0) + 1, pool] = 2.0
        # node 1 (from 0, 1, 2): "none" dominates input 0 but is ignored; skip on 1 beats pool on 2, beats sep on 0
        a[edge_offset(1) + 0, none] = 9.0
        a[edge_offset(1) + 0, sep] = 0.5
        a[edge_offset(1) + 1, skip] = 4.0
        a[edge_offset(1) + 2, pool] = 2.0
        # node 2 (from 0..3): strongest edges 3 (sep) and 2 (skip)
        a[edge_offset(2) + 3, sep] = 5.0
        a[edge_offset(2) + 2, skip] = 4.0
        a[edge_offset(2) + 0, pool] = 1.0
        # node 3 (from 0..4): 4 (pool) and 1 (sep)
        a[edge_offset(3) + 4, pool] = 6.0
        a[edge_offset(3) + 1, sep] = 3.0
        net.alpha_normal.copy_(a)
        r = torch.zeros(14, 4)
        r[edge_offset(0) + 0, none] = 5.0  # "none" wins edge 0 but the strongest non-zero op is kept
        r[edge_offset(0) + 0, sep] = 1.0
        r[edge_offset(0) + 1, pool] = 0.5
        net.alpha_reduce.copy_(r)
    arch = net.derive()
    assert arch.space == "nasnet"
    assert arch.choices["normal"] == {
        "blocks": [
            [0, "sep_conv_3x3", 1, "max_pool_3x3"],
            [1, "skip_connect", 2, "max_pool_3x3"],
            [2, "skip_connect", 3, "sep_conv_3x3"],
            [1, "sep_conv_3x3", 4, "max_pool_3x3"],
            [0, "skip_connect", 0, "skip_connect"],  # dead placeholder: DARTS cells have 4 nodes
        ],
        "concat": [2, 3, 4, 5],
    }
    reduce = arch.choices["reduce"]["blocks"]
    assert reduce[0] == [0, "sep_conv_3x3", 1, "max_pool_3x3"]
    NASNetSpace(ops=OPS).validate(arch)


def test_darts_op_set_gives_exactly_the_darts_candidates_and_never_derives_none() -> None:
    torch.manual_seed(0)
    space = NASNetSpace(ops="darts")
    net = space.supernet({**MACRO, "num_classes": 2}, mode="differentiable")
    assert isinstance(net, DartsSupernet)
    assert net.candidate_names == DARTS_OPS  # "none" once, as column 0, then DARTS's 7 in its order
    assert net.alpha_normal.shape == (14, 8)
    with torch.no_grad():
        net.alpha_normal.zero_()
        net.alpha_reduce.zero_()
        net.alpha_normal[:, 0] = 10.0  # "none" dominates every edge
        net.alpha_normal[:, DARTS_OPS.index("dil_conv_5x5")] = 1.0
        net.alpha_reduce[:, DARTS_OPS.index("dil_conv_5x5")] = 1.0
    arch = net.derive()
    space.validate(arch)
    ops = {blk[k] for t in ("normal", "reduce") for blk in arch.choices[t]["blocks"][:4] for k in (1, 3)}
    assert ops == {"dil_conv_5x5"}
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 2)
    with pytest.raises(InvalidInput, match="besides 'none'"):
        DartsSupernet(NASNetSpace(ops=["none"]), {**MACRO, "num_classes": 2})


def test_default_weight_training_is_darts_sgd() -> None:
    cfg = DARTSStrategy().options.train
    assert (cfg.lr, cfg.lr_min, cfg.momentum, cfg.nesterov) == (0.025, 0.001, 0.9, False)
    assert (cfg.weight_decay, cfg.grad_clip, cfg.batch_size, cfg.epochs) == (3e-4, 5.0, 64, 50)
    net = nn.Linear(3, 2)
    opt = make_optimizer(net.parameters(), cfg)
    assert all(not g["nesterov"] and g["momentum"] == 0.9 for g in opt.param_groups)
    sched = make_scheduler(opt, cfg, steps_per_epoch=4)
    lrs = []
    for _ in range(cfg.epochs * 4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.025)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001)  # the cosine floor at the end, not 0
    assert min(lrs) >= 0.001 - 1e-12 and lrs == sorted(lrs, reverse=True)


def test_five_nodes_concat_every_block() -> None:
    net = tiny_supernet(nodes=5)
    assert net.alpha_reduce.shape == (20, 4)
    arch = net.derive()
    assert arch.choices["normal"]["concat"] == [2, 3, 4, 5, 6]


def test_set_active_runs_the_discrete_path_and_rejects_others() -> None:
    net = tiny_supernet().eval()
    arch = net.derive()
    net.set_active(arch)
    x = torch.randn(2, 3, 8, 8)
    fixed = net(x)
    net.clear_active()
    assert not torch.allclose(fixed, net(x))
    assert net.extract(arch)(x).shape == (2, 2)
    bad = {t: {"blocks": arch.choices[t]["blocks"], "concat": [5]} for t in ("normal", "reduce")}
    with pytest.raises(InvalidInput, match="concat"):
        net.set_active(Architecture(space="nasnet", version="1", choices=bad))


def test_options_name_bad_fields() -> None:
    with pytest.raises(InvalidInput) as err:
        DARTSStrategy({"train": {"epochs": 0}})
    assert err.value.field == "strategy.options.train.epochs"
    with pytest.raises(InvalidInput) as err:
        DARTSStrategy({"arch_betas": [0.5, 1.5]})
    assert err.value.field == "strategy.options.arch_betas.1"
    with pytest.raises(InvalidInput) as err:
        DARTSStrategy({"weight_share": 1.0})
    assert err.value.field == "strategy.options.weight_share"
    assert isinstance(get_strategy("darts"), DARTSStrategy)
    assert DARTSStrategy().options.train.lr == 0.025 and DARTSStrategy().options.train.epochs == 50


def test_refuses_a_space_without_differentiable_supernet(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as err:
        DARTSStrategy(darts_opts()).run(darts_ctx(tmp_path, space=NoDiffNASNet(ops=OPS)))
    assert err.value.field == "strategy.name"


def test_training_data_split_is_disjoint_and_seeded() -> None:
    data = toy_data(n_train=10)
    a, b = split_training_data(data, 0.5, seed=1)
    assert len(a.train) == 5 and len(b.train) == 5
    rows = {tuple(x.flatten().tolist()) for x in torch.cat([a.train.x, b.train.x])}
    assert len(rows) == 10
    again, _ = split_training_data(data, 0.5, seed=1)
    assert torch.equal(again.train.x, a.train.x)


def test_one_epoch_updates_alphas_and_returns_a_valid_genotype(tmp_path: Path) -> None:
    reporter = ListReporter()
    space = NASNetSpace(ops=OPS)
    ctx = darts_ctx(tmp_path, space=space, reporter=reporter)
    result = DARTSStrategy(darts_opts()).run(ctx)
    best = result.best[0]
    space.validate(best.arch)
    assert best.arch.choices["normal"]["concat"] == [2, 3, 4, 5]
    assert 0.0 <= best.metrics["accuracy"] <= 1.0 and best.metrics["params"] > 0
    final = [e for e in reporter.of_type(EventType.CANDIDATE) if e.data.get("final")]
    assert len(final) == 1 and Architecture.from_dict(final[0].data["arch"]) == best.arch
    alphas = final[0].data["alphas"]
    assert alphas["ops"] == ["none", *OPS] and len(alphas["normal"]) == 14
    assert all(abs(sum(row) - 1.0) < 1e-3 for row in alphas["normal"])
    # the alphas moved away from their initial values
    torch.manual_seed(ctx.seed)
    initial = DartsSupernet(space, space.macro(ctx.macro, **MACRO))
    trained = ctx.checkpoints.load("darts")["trainer"]["model"]
    assert not torch.allclose(trained["alpha_normal"], initial.alpha_normal.detach())
    assert not torch.allclose(trained["alpha_reduce"], initial.alpha_reduce.detach())
    # the derived network trains as a standalone model
    model = space.build(best.arch, ctx.macro)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 2)


@pytest.mark.slow  # two DARTS searches
def test_resume_after_cancellation_gives_the_same_genotype(tmp_path: Path) -> None:
    opts = darts_opts(epochs=2)
    full = DARTSStrategy(opts).run(darts_ctx(tmp_path / "full", seed=5))
    reporter = CancelAfter(1, EventType.EPOCH)  # cancel during the second epoch
    with pytest.raises(SearchCancelled):
        DARTSStrategy(opts).run(darts_ctx(tmp_path / "resumed", reporter=reporter, seed=5))
    second = ListReporter()
    resumed = DARTSStrategy(opts).run(darts_ctx(tmp_path / "resumed", reporter=second, seed=5))
    assert [e.step for e in second.of_type(EventType.EPOCH)] == [2]
    assert resumed.best[0].arch == full.best[0].arch
    assert resumed.extra["alphas"] == full.extra["alphas"]
    assert [c.metrics["accuracy"] for c in resumed.candidates] == [c.metrics["accuracy"] for c in full.candidates]
