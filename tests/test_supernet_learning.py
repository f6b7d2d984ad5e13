"""Supernets learn: a short training on digits lowers the loss of sampled paths (issue 9), and the NASNet single-path
supernet's identity initialisation and normalised head, which make it learn, keep extraction exact."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from nas.data import load_dataset
from nas.ops.conv import FactorizedReduce, ReLUConvBN
from nas.ops.init import identity_conv_, identity_init_
from nas.space import get_space
from nas.spec import DatasetSpec, TrainSpec
from nas.train import make_optimizer, make_scheduler
from searchspaces.nasnet.supernet import NASNetSupernet, NormedSlicedLinear, SlicedLinear

DEMO_OPS = ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3", "skip_connect"]
NASNET_MACRO = {"cells_per_stack": 1, "filters": 4, "stem_multiplier": 1, "image_size": 8}


def sampled_training(
    net: nn.Module, choose: Callable[[random.Random], None] | None, steps: int, size: int = 8, lr: float = 0.05
) -> list[tuple[float, float]]:
    """``(loss, accuracy)`` of every step of SGD on digits at ``size`` px, calling ``choose`` (a path draw) first."""
    torch.manual_seed(0)
    data = load_dataset(DatasetSpec(name="digits", image_size=size))
    loader = data.loader("train", 32, shuffle=True, augment=False, device=torch.device("cpu"), seed=1)
    cfg = TrainSpec(epochs=1, lr=lr, weight_decay=1e-4, warmup_epochs=0, batch_size=32)
    params = net.weight_parameters() if hasattr(net, "weight_parameters") else list(net.parameters())
    opt = make_optimizer(params, cfg)
    sched = make_scheduler(opt, cfg, steps)
    rng, history = random.Random(0), []
    criterion = nn.CrossEntropyLoss()
    while len(history) < steps:
        for x, y in loader:
            if len(history) == steps:
                break
            if choose is not None:
                choose(rng)
            net.train()
            opt.zero_grad(set_to_none=True)
            out = net(x)
            logits = out[0] if isinstance(out, tuple) else out
            loss = criterion(logits, y)
            loss.backward()
            opt.step()
            sched.step()
            history.append((float(loss.detach()), float((logits.argmax(1) == y).float().mean())))
    return history


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def nasnet_supernet(**supernet: Any) -> NASNetSupernet:
    space = get_space("nasnet", ops=DEMO_OPS, **({"supernet": supernet} if supernet else {}))
    torch.manual_seed(0)
    net = space.supernet(space.macro(NASNET_MACRO, num_classes=10, in_channels=1))
    assert isinstance(net, NASNetSupernet)
    return net


@pytest.mark.slow
def test_nasnet_single_path_supernet_learns_with_a_new_wiring_every_step() -> None:
    """The failure of issue 9: a new uniform path every step left the supernet at chance (10 %). With the identity
    initialisation and the normalised head the sampled paths learn within 60 steps."""
    net = nasnet_supernet()
    history = sampled_training(net, lambda rng: net.set_active(net.space.sample(rng)), steps=60)
    accuracy = mean([a for _, a in history[-20:]])
    assert accuracy > 0.25, f"sampled-path training accuracy {accuracy:.2f} after 60 steps (chance: 0.10)"
    assert mean([loss for loss, _ in history[-20:]]) < mean([loss for loss, _ in history[:10]]) - 0.3


@pytest.mark.slow
@pytest.mark.parametrize(
    ("space_name", "macro"),
    [
        ("hytra", {"stem": "small", "stem_channels": 4, "widths": [8, 16, 32, 64], "head_dim": 4, "image_size": 8}),
        ("bossnas-mbconv", {"stem_stride": 1, "width_mult": 0.125, "head_channels": 32, "image_size": 8}),
    ],
)
def test_block_space_single_path_supernets_learn(space_name: str, macro: dict[str, Any]) -> None:
    """Residual block spaces learn under uniform sampling with the default initialisation, slowly at this size."""
    space = get_space(space_name)
    torch.manual_seed(0)
    net = space.supernet(space.macro(macro, num_classes=10, in_channels=1))
    history = sampled_training(net, lambda rng: net.set_active(space.sample(rng)), steps=100, lr=0.2)
    assert mean([loss for loss, _ in history[-10:]]) < mean([loss for loss, _ in history[:10]]) - 0.1


@pytest.mark.slow
def test_darts_supernet_learns() -> None:
    space = get_space("nasnet", ops=DEMO_OPS)
    torch.manual_seed(0)
    net = space.supernet(
        space.macro({"kind": "darts", "layers": 3, "channels": 4, "image_size": 8}, num_classes=10, in_channels=1),
        mode="differentiable",
    )
    history = sampled_training(net, None, steps=40)
    assert mean([loss for loss, _ in history[-10:]]) < mean([loss for loss, _ in history[:10]]) - 0.3


def test_identity_init_maps_every_channel_to_itself() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 5)
    dense, depthwise = nn.Conv2d(6, 6, 3, padding=1, bias=True), nn.Conv2d(6, 6, 5, padding=2, groups=6, bias=False)
    for conv in (dense, depthwise):
        identity_conv_(conv)
        assert torch.allclose(conv(x), x)
    narrow = nn.Conv2d(6, 3, 1, bias=False)
    identity_conv_(narrow, offset=3)
    assert torch.allclose(narrow(x), x[:, 3:])
    reduce = FactorizedReduce(6, 6, relu=False)
    assert identity_init_(reduce) == 2
    # path 1 keeps the first half of the channels, path 2 the second
    assert torch.allclose(reduce.conv1(x), x[:, :3, ::2, ::2])
    assert torch.allclose(reduce.conv2(x), x[:, 3:, ::2, ::2])
    with pytest.raises(ValueError, match="groups"):
        identity_conv_(nn.Conv2d(6, 6, 1, groups=2))


def test_supernet_starts_aligned_and_the_default_is_identity() -> None:
    net = nasnet_supernet()
    f = net.net.specs[0].filters
    op = net.net.cells[0].choices["1_0"]["2"]["sep_conv_3x3"]
    depthwise = op[0][1].weight
    assert float(depthwise[:, 0, 1, 1].min()) == 1.0 and float(depthwise.abs().sum()) == depthwise.shape[0]
    pre1 = net.net.cells[1].pre1
    assert isinstance(pre1, ReLUConvBN) and pre1.conv.in_channels == 7 * f
    w = pre1.conv.weight
    assert all(torch.equal(w[:, :f], w[:, j * f : (j + 1) * f]) for j in range(7))
    assert isinstance(net.net.classifier, NormedSlicedLinear)
    plain = nasnet_supernet(init="random", head_norm=False)
    assert type(plain.net.classifier) is SlicedLinear
    w = plain.net.cells[1].pre1.conv.weight
    assert not torch.equal(w[:, :f], w[:, f : 2 * f])


@pytest.mark.parametrize("settings", [{}, {"init": "random", "head_norm": False}, {"head_norm": False}])
def test_extraction_is_exact_with_every_supernet_setting(settings: dict[str, Any]) -> None:
    net = nasnet_supernet(**settings)
    rng, g = random.Random(3), torch.Generator().manual_seed(3)
    for _ in range(3):
        arch = net.space.sample(rng)
        net.set_active(arch)
        net.train()
        with torch.no_grad():
            for _ in range(3):  # move the running statistics (the head's too) away from their initial values
                net(torch.randn(8, 1, 8, 8, generator=g) * 3 + 1)
        net.eval()
        sub = net.extract(arch).eval()
        x = torch.randn(4, 1, 8, 8, generator=g)
        with torch.no_grad():
            assert torch.allclose(sub(x), net(x), atol=1e-5)
