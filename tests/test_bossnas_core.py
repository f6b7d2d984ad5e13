"""BossNAS pieces on known inputs: the target momentum schedule and EMA, the loss, the population center, rating
from predictions, one training step on the HyTra supernet, projector shapes, compact state, the rated space."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from nas.space import get_space
from nas.strategies.bossnas.blocks import BlockTrainer, view_specs
from nas.strategies.bossnas.bootstrap import (
    bootstrap_loss,
    build_net,
    ema_update,
    head_sizes,
    pack_state,
    population_center,
    prefix_to_level,
    reference_prefix,
    target_momentum,
    unpack_state,
)
from nas.strategies.bossnas.options import BossNASOptions
from nas.strategies.bossnas.rating import path_losses
from nas.strategies.bossnas.search import RatedSpace, greedy_paths
from tests.conftest import tiny_splits

TINY = {"stem": "small", "stem_channels": 4, "widths": [8, 8, 16, 16], "head_dim": 2, "image_size": 8}


@pytest.fixture(scope="module")
def hytra_net():
    space = get_space("hytra")
    macro = space.macro(TINY, num_classes=3, in_channels=1)
    return build_net(space, macro, BossNASOptions(), seed=0)


def test_target_momentum_follows_the_cosine_from_base_to_one() -> None:
    assert target_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert target_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert target_momentum(100, 100, 0.99) == pytest.approx(1.0)
    assert target_momentum(25, 100, 0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    values = [target_momentum(s, 40, 0.9) for s in range(41)]
    assert values == sorted(values)


def test_ema_update_moves_the_target_towards_the_online_weights() -> None:
    online, target = [torch.tensor([1.0, 2.0])], [torch.tensor([3.0, 0.0])]
    ema_update(online, target, 0.75)
    assert torch.allclose(target[0], torch.tensor([0.75 * 3 + 0.25 * 1, 0.25 * 2]))


def test_loss_is_minus_two_cosines_against_the_other_views_center() -> None:
    p1, p2 = torch.tensor([[1.0, 0.0], [2.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 5.0]])
    t1, t2 = torch.tensor([[3.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    loss = bootstrap_loss(p1, p2, t1, t2)
    # sample 0: cos(p1, T2) = 0, cos(p2, T1) = 1/sqrt(2); sample 1: cos(p1, T2) = 1, cos(p2, T1) = 1
    assert loss.tolist() == pytest.approx([-2 / math.sqrt(2), -4.0])
    assert bootstrap_loss(3 * p1, 0.5 * p2, 7 * t1, t2).tolist() == pytest.approx(loss.tolist())  # scale-free


def test_population_center_is_the_mean_of_normalised_projections() -> None:
    center = population_center([torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 3.0]]), torch.tensor([[0.0, -1.0]])])
    assert center[0].tolist() == pytest.approx([1 / 3, 0.0])


def test_rating_puts_the_path_that_predicts_the_center_first() -> None:
    g = torch.Generator().manual_seed(0)
    targets = [(torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)) for _ in range(3)]
    center1 = population_center([t[0] for t in targets])
    center2 = population_center([t[1] for t in targets])
    preds = [(torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)) for _ in range(2)]
    preds.append((2.5 * center2, 0.1 * center1))  # view 1 predicts view 2's center and vice versa
    losses = path_losses(preds, targets)
    assert losses[2] == pytest.approx(-4.0)
    assert min(losses) == losses[2] and all(-4.0 <= v <= 4.0 for v in losses)
    expected0 = float(
        (-2 * F.cosine_similarity(preds[0][0], center2) - 2 * F.cosine_similarity(preds[0][1], center1)).mean()
    )
    assert losses[0] == pytest.approx(expected0, abs=1e-6)


def test_raw_rating_center_is_the_mean_of_the_raw_projections() -> None:
    g = torch.Generator().manual_seed(1)
    scales = (1.0, 10.0, 0.1)  # different norms per path: the two centres differ
    targets = [(s * torch.randn(10, 4, generator=g), s * torch.randn(10, 4, generator=g)) for s in scales]
    preds = [(torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)) for _ in range(3)]
    raw1 = torch.stack([t[0] for t in targets]).mean(0)
    raw2 = torch.stack([t[1] for t in targets]).mean(0)
    raw = path_losses(preds, targets, "raw")
    for (p1, p2), got in zip(preds, raw, strict=True):
        want = float((-2 * F.cosine_similarity(p1, raw2) - 2 * F.cosine_similarity(p2, raw1)).mean())
        assert got == pytest.approx(want, abs=1e-6)
    assert raw != pytest.approx(path_losses(preds, targets, "normalized"), abs=1e-3)
    # the raw centre follows the largest projections: a path predicting the loud path's targets wins
    preds.append((targets[1][1], targets[1][0]))
    assert min(range(4), key=lambda i: path_losses(preds, targets, "raw")[i]) == 3
    with pytest.raises(ValueError, match="center"):
        path_losses(preds, targets, "median")


def test_views_follow_the_public_order_by_default() -> None:
    first, second = view_specs(BossNASOptions(), flip_ok=True)
    assert (first.blur_p, first.solarize_p, second.blur_p, second.solarize_p) == (0.1, 0.0, 1.0, 0.2)
    first, second = view_specs(BossNASOptions(view_order="byol"), flip_ok=False)
    assert (first.blur_p, first.solarize_p, second.blur_p, second.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert first.flip_p == second.flip_p == 0.0


def _trainer(interval: int, steps_per_epoch: int = 4) -> tuple[BlockTrainer, Any]:
    opts = BossNASOptions(
        batch_size=16, epochs_per_block=2, lr=5.0, paths_per_step=2, update_interval=interval, warmup_epochs=0.0
    )
    data = tiny_splits(n_train=48, n_val=16)
    net = build_net(get_space("hytra"), get_space("hytra").macro(TINY, num_classes=3, in_channels=1), opts, seed=1)
    trainer = BlockTrainer(net, 1, reference_prefix(net.online, 1), opts, data, torch.device("cpu"), 0, steps_per_epoch)
    return trainer, data


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_update_interval_sums_the_gradients_of_several_steps_before_one_update() -> None:
    trainer, data = _trainer(2)
    assert trainer.total_steps == 2 * 2  # 4 steps per epoch, an update every 2
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5.0 * 16 * 2 / 256)  # the batch of an update
    batches = [x for x, _ in data.loader("train", 16, shuffle=True, augment=False)]
    online0 = [p.detach().clone() for p in trainer.online_params]
    target0 = [p.detach().clone() for p in trainer.target_params]
    trainer.train_step(batches[0])
    assert trainer.step == 0 and trainer.pending == 1
    assert all(torch.equal(a, b) for a, b in zip(online0, trainer.online_params, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(target0, trainer.target_params, strict=True))
    params = trainer.net.trainable_parameters(1)
    first = {i: p.grad.clone() for i, p in enumerate(params) if p.grad is not None}
    assert first
    summed: dict[int, torch.Tensor] = {}
    step = trainer.optimizer.step

    def record(*args: Any, **kw: Any) -> Any:
        summed.update({i: p.grad.clone() for i, p in enumerate(params) if p.grad is not None})
        return step(*args, **kw)

    trainer.optimizer.step = record  # type: ignore[method-assign]
    metrics = trainer.train_step(batches[1])
    assert trainer.step == 1 and trainer.pending == 0 and metrics["target_momentum"] == pytest.approx(0.99)
    assert not all(torch.equal(a, b) for a, b in zip(online0, trainer.online_params, strict=True))
    for before, online, target in zip(target0, trainer.online_params, trainer.target_params, strict=True):
        torch.testing.assert_close(target, 0.99 * before + 0.01 * online.detach(), atol=1e-6, rtol=0)
    # the update saw the sum of the two steps' gradients: the second alone, from a twin, makes up the difference
    twin, _ = _trainer(2)
    twin.train_step(batches[0])
    twin.optimizer.zero_grad(set_to_none=True)
    twin_params = twin.net.trainable_parameters(1)
    second: dict[int, torch.Tensor] = {}
    twin_step = twin.optimizer.step

    def record_twin(*args: Any, **kw: Any) -> Any:
        second.update({i: p.grad.clone() for i, p in enumerate(twin_params) if p.grad is not None})
        return twin_step(*args, **kw)

    twin.optimizer.step = record_twin  # type: ignore[method-assign]
    twin.train_step(batches[1])
    assert second and set(summed) == set(first) | set(second)
    for i, got in summed.items():
        zero = torch.zeros_like(got)
        torch.testing.assert_close(got, first.get(i, zero) + second.get(i, zero), atol=1e-5, rtol=1e-4)


def test_an_epoch_ends_with_an_update_of_its_last_steps() -> None:
    trainer, data = _trainer(2, steps_per_epoch=3)
    loader = data.loader("train", 16, shuffle=True, augment=False)
    assert len(loader) == 3 and trainer.total_steps == 2 * 2  # per epoch: 2 steps, then 1
    seen: list[tuple[int, int]] = []
    trainer.train_epoch(loader, on_step=lambda step, total: seen.append((step, total)))
    assert trainer.step == 2 and trainer.pending == 0 and seen == [(1, 4), (2, 4)]
    assert all(p.grad is None for p in trainer.net.trainable_parameters(1))
    assert trainer.state_dict()["tau"] == trainer.tau


def test_projector_sizes_follow_the_spec_at_full_width_and_scale_down(hytra_net) -> None:
    class Full:
        num_blocks = 1

        def block_paths(self, k):
            return [(0,)]

        def block_output_shape(self, k, path):
            return (2048, 7)

    assert head_sizes(Full(), None, None) == (4096, 256)
    hidden, dim = head_sizes(hytra_net.online, None, None)
    assert (hidden, dim) == (32, 16)
    sn = hytra_net.online
    x = torch.randn(2, 1, 8, 8)
    h, level = x, 0
    for k, path in enumerate(sn.reference_paths()):
        h = hytra_net.run_block("online", h, k, path, level)
        level = sn.path_end_level(k, path)
        assert hytra_net.online_prediction(h, k, level).shape == (2, dim)
        assert hytra_net.target_projection(h, k, level).norm(dim=1).tolist() == pytest.approx([1.0, 1.0])
    # every end level a block's paths reach has an adapter
    assert sorted(hytra_net.projectors[0].adapters) == ["0", "1", "2", "3"]
    assert sorted(hytra_net.projectors[3].adapters) == ["2", "3"]  # the last block may end at 14x14 (BossNAS lists)


def test_one_step_trains_the_online_network_and_the_target_follows_by_ema(hytra_net) -> None:
    opts = BossNASOptions(batch_size=16, epochs_per_block=2, lr=5.0, paths_per_step=4)
    data = tiny_splits(n_train=32, n_val=16)
    net = build_net(get_space("hytra"), hytra_net.online.macro, opts, seed=1)
    k = 1
    trainer = BlockTrainer(net, k, reference_prefix(net.online, k), opts, data, torch.device("cpu"), 0, 2)
    assert trainer.level == 1 and len(trainer.candidates) == 99
    online_before = [p.clone() for p in trainer.online_params]
    target_before = [p.clone() for p in trainer.target_params]
    x = next(iter(data.loader("train", 16, shuffle=True, augment=False)))[0]
    metrics = trainer.train_step(x)
    assert math.isfinite(metrics["loss"]) and -4.0 <= metrics["loss"] <= 4.0
    assert metrics["target_momentum"] == pytest.approx(0.99)
    changed = [
        i for i, (a, b) in enumerate(zip(online_before, trainer.online_params, strict=True)) if not torch.equal(a, b)
    ]
    assert changed
    for i in changed:  # target = 0.99 * target + 0.01 * online (after the step)
        expected = 0.99 * target_before[i] + 0.01 * trainer.online_params[i]
        assert torch.allclose(trainer.target_params[i], expected, atol=1e-6)
    assert trainer.step == 1


def test_prefixes_reach_every_input_level_a_block_reads(hytra_net) -> None:
    sn = hytra_net.online
    for k in range(4):
        for level in sn.path_start_levels(k):
            prefix = prefix_to_level(sn, k, level)
            assert len(prefix) == k
            reached = 0
            for j, p in enumerate(prefix):
                assert p in sn.block_paths(j, reached)
                reached = sn.path_end_level(j, p)
            assert reached == level
        # the reference paths where they hand block k the level (its default one)
        default = max(sn.path_start_levels(k), key=lambda s: len(sn.block_paths(k, s)))
        assert prefix_to_level(sn, k, default) == reference_prefix(sn, k)
    with pytest.raises(ValueError, match="block 2 cannot read an input at level 1"):
        prefix_to_level(sn, 2, 1)


def test_packed_state_round_trips(hytra_net) -> None:
    state = hytra_net.state_dict()
    back = unpack_state(pack_state(state))
    assert list(back) == list(state) and all(torch.equal(back[k], state[k]) for k in state)


def test_rated_space_samples_only_rated_architectures_and_greedy_takes_the_best(hytra_net) -> None:
    sn = hytra_net.online
    rng = random.Random(0)
    full = {k: {p: rng.uniform(-4, 4) for p in sn.block_paths(k)} for k in range(4)}
    assert RatedSpace(sn, full).size() == 1_615_872  # every architecture of the space
    # a sequential-mode table: block 1 rated on level 2 only (its prefix ended there)
    partial = dict(full)
    partial[1] = {p: v for p, v in full[1].items() if p in set(sn.block_paths(1, 2))}
    rated = RatedSpace(sn, partial)
    assert 0 < rated.size() < 1_615_872
    space = get_space("hytra")
    for _ in range(20):
        arch = rated.sample(rng)
        space.validate(arch)
        assert rated.contains(arch)
    paths = greedy_paths(sn, full)
    level = 0
    for k, path in enumerate(paths):
        options = [p for p in sn.block_paths(k, level) if sn.path_completes(k, p)]
        assert full[k][path] == min(full[k][p] for p in options)
        level = sn.path_end_level(k, path)
    space.validate(sn.arch_from_paths(paths))
