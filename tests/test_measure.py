"""Parameter, MAC and latency measurement (nas.measure)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from nas.errors import InvalidInput
from nas.measure import count_costs, count_macs, count_params, measure_build_costs, measure_costs, measure_latency


def conv_linear() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


class WithAux(nn.Module):
    """Returns (logits, aux) in training mode and logits only in eval mode, like our spaces' aux heads."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.aux = nn.Linear(4, 100)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        out = self.body(x)
        return (out, self.aux(x)) if self.training else out


def test_params_of_conv_and_linear_are_hand_computed() -> None:
    # conv 3*8*9 + 8 bias; BN weight + bias 2*8 (running stats are buffers); linear 8*10 + 10
    assert count_params(conv_linear()) == 224 + 16 + 90


def test_shared_parameters_count_once_and_frozen_ones_count() -> None:
    a = nn.Linear(5, 5, bias=False)
    b = nn.Linear(5, 5, bias=False)
    b.weight = a.weight
    frozen = nn.Linear(5, 2)
    frozen.requires_grad_(False)
    assert count_params(nn.Sequential(a, b, frozen)) == 25 + 12


def test_macs_of_conv_and_linear_are_hand_computed() -> None:
    model = conv_linear()
    # conv: out elements (8*16*16) times 3*3*3 MACs each; linear 8*10; BN, ReLU and pooling are not counted
    expected = 8 * 16 * 16 * 27 + 80
    assert count_macs(model, (1, 3, 16, 16)) == expected
    assert count_macs(model, (2, 3, 16, 16)) == 2 * expected


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 3),
    c_in=st.integers(1, 4),
    c_out=st.integers(1, 4),
    k=st.sampled_from([1, 3]),
    stride=st.integers(1, 2),
    size=st.integers(4, 9),
)
def test_conv_macs_match_formula(batch: int, c_in: int, c_out: int, k: int, stride: int, size: int) -> None:
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)
    out = (size + 2 * (k // 2) - k) // stride + 1
    assert count_macs(conv, (batch, c_in, size, size)) == batch * c_out * out * out * c_in * k * k


def test_macs_use_eval_mode_and_restore_training_flags() -> None:
    model = WithAux()
    model.train()
    model.aux.eval()  # a submodule's own flag must survive as well
    assert count_macs(model, (1, 4)) == 4 * 6  # the aux head is off in eval mode
    assert model.training is True
    assert model.body.training is True
    assert model.aux.training is False


def test_macs_count_tuple_outputs_whole() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(3, 5)

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return self.a(x), self.b(x)

    assert count_macs(Two(), (1, 3)) == 3 * 2 + 3 * 5


def test_macs_run_without_grad() -> None:
    seen: list[bool] = []

    class Probe(nn.Linear):
        def forward(self, x: Tensor) -> Tensor:
            seen.append(torch.is_grad_enabled())
            return super().forward(x)

    count_macs(Probe(2, 2), (1, 2))
    assert seen == [False]


def test_bad_input_shape_names_the_field() -> None:
    with pytest.raises(InvalidInput) as err:
        count_macs(conv_linear(), (1, 0, 8, 8))
    assert err.value.field == "input_shape"


def test_latency_is_positive_and_restores_the_model() -> None:
    model = conv_linear().train()
    stats = measure_latency(model, (1, 3, 16, 16), "cpu", warmup=1, repeats=5)
    assert stats["median_ms"] > 0
    assert stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    assert stats["repeats"] == 5
    assert model.training is True
    assert next(model.parameters()).device.type == "cpu"


def test_latency_rejects_zero_repeats() -> None:
    with pytest.raises(InvalidInput) as err:
        measure_latency(conv_linear(), (1, 3, 8, 8), "cpu", repeats=0)
    assert err.value.field == "repeats"


def test_measure_costs_keys() -> None:
    model = conv_linear()
    costs = measure_costs(model, (1, 3, 16, 16), device="cpu")
    assert costs == {"params": 330.0, "macs": float(8 * 16 * 16 * 27 + 80)}
    with_latency = measure_costs(model, (1, 3, 16, 16), device=torch.device("cpu"), latency=True)
    assert set(with_latency) == {"params", "macs", "latency_ms"}
    assert with_latency["latency_ms"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_latency_on_cuda_uses_events_and_moves_back() -> None:
    model = conv_linear()
    stats = measure_latency(model, (2, 3, 32, 32), "cuda", warmup=2, repeats=5)
    assert stats["median_ms"] > 0
    assert next(model.parameters()).device.type == "cpu"


# --- counting on the meta device (count_costs, measure_build_costs) ---------------------------------------------
def _small_size(space_name: str) -> int:
    return 32 if space_name == "nasnet" else 64  # hytra and the MBConv space downsample 32x: 64 px keeps 2x2


def _cases() -> list[tuple[str, str]]:
    """Every preset of every built-in space, and two sampled architectures of each (the MBConv space has none)."""
    from nas.space import get_space

    cases: list[tuple[str, str]] = []
    for space_name in ("nasnet", "hytra", "bossnas-mbconv"):
        cases += [(space_name, preset) for preset in get_space(space_name).presets()]
        cases += [(space_name, "sample-0"), (space_name, "sample-1")]
    return cases


def _arch_and_macro(space_name: str, which: str) -> tuple[Any, Any, Any]:
    import random

    from nas.space import get_space

    space = get_space(space_name)
    if which.startswith("sample-"):
        arch = space.sample(random.Random(int(which.removeprefix("sample-"))))
        return space, arch, space.macro().for_inference()
    preset = space.preset(which)
    return space, preset.arch, space.macro(preset.macro).for_inference()


@pytest.mark.parametrize(("space_name", "which"), _cases())
def test_meta_counts_equal_real_tensor_counts(space_name: str, which: str) -> None:
    space, arch, macro = _arch_and_macro(space_name, which)
    size = _small_size(space_name)
    shape = (1, macro.in_channels, size, size)
    real = space.build(arch, macro)  # the reference: a real network run on a real zero input
    reference = {"params": float(count_params(real)), "macs": float(count_macs(real, shape))}
    assert next(real.parameters()).device.type == "cpu"
    assert count_costs(lambda: space.build(arch, macro), shape) == reference


def test_meta_count_draws_no_random_numbers_and_allocates_nothing() -> None:
    space, arch, macro = _arch_and_macro("nasnet", "nasnet-a-cifar")
    built: list[nn.Module] = []

    def build() -> nn.Module:
        built.append(space.build(arch, macro))
        return built[-1]

    torch.manual_seed(3)
    count_costs(build, (1, 3, 32, 32))
    after = torch.rand(4)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(4))
    assert {p.device.type for p in built[0].parameters()} == {"meta"}


class ItemInForward(nn.Module):
    """A network the meta device cannot run: its forward reads a tensor value."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y * float(y.abs().sum().item() >= 0)


def test_meta_failure_falls_back_to_real_tensors_with_a_logged_reason(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[torch.device] = []

    def build() -> nn.Module:
        model = ItemInForward()
        calls.append(model.conv.weight.device)
        return model

    with caplog.at_level(logging.DEBUG, logger="nas.measure"):
        costs = count_costs(build, (1, 3, 10, 10))
    assert costs == {"params": float(4 * 3 * 9 + 4), "macs": float(4 * 8 * 8 * 27)}
    assert [d.type for d in calls] == ["meta", "cpu"]
    assert any("meta device failed" in r.getMessage() and "item" in r.getMessage() for r in caplog.records)


def test_errors_of_the_build_itself_propagate_without_fallback() -> None:
    calls = 0

    def build() -> nn.Module:
        nonlocal calls
        calls += 1
        raise InvalidInput("architecture", "not buildable")

    with pytest.raises(InvalidInput, match="not buildable"):
        count_costs(build, (1, 3, 8, 8))
    assert calls == 1


def test_measure_build_costs_times_a_real_network_only_when_asked() -> None:
    devices: list[str] = []

    def build() -> nn.Module:
        model = conv_linear()
        devices.append(next(model.parameters()).device.type)
        return model

    costs = measure_build_costs(build, (1, 3, 16, 16))
    assert costs == measure_costs(conv_linear(), (1, 3, 16, 16)) and devices == ["meta"]
    timed = measure_build_costs(build, (1, 3, 16, 16), device="cpu", latency=True)
    assert list(timed) == ["params", "macs", "latency_ms"] and timed["latency_ms"] > 0
    assert devices == ["meta", "meta", "cpu"]
