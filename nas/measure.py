"""Cost measurement of a network: parameters, multiply-accumulates (MACs) and latency.

MACs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the FLOPs of matrix products and
convolutions (including attention) at the ATen level; one MAC is two FLOPs. Element-wise operations (activations,
normalisation in eval mode, additions) are not counted, the usual convention of papers and of fvcore/thop.

The counter needs only shapes, so :func:`count_costs` builds the network on the ``meta`` device (no memory, no weight
initialisation, no random draws) and counts on a meta input: the same numbers as :func:`count_params` and
:func:`count_macs` on a real build, without the arithmetic (a fraction of the time for large networks). Where the
meta pass fails (an op without a meta kernel, ``.item()``, a data-dependent shape), it logs why and counts on a real
CPU build instead.
"""

from __future__ import annotations

import gc
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas.errors import InvalidInput, NASError

logger = logging.getLogger(__name__)

__all__ = ["count_costs", "count_macs", "count_params", "measure_build_costs", "measure_costs", "measure_latency"]


def count_params(model: nn.Module) -> int:
    """Number of parameter elements, trainable or not (buffers such as BatchNorm statistics excluded).

    A parameter shared by several modules counts once.
    """
    return sum(p.numel() for p in model.parameters())


def _check_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise InvalidInput("input_shape", f"must be a non-empty tuple of positive sizes, got {input_shape!r}")
    return shape


def _model_device(model: nn.Module) -> torch.device:
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` and every submodule in eval mode, restoring each module's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on a zero input of ``input_shape`` (batch dimension included).

    The model runs in eval mode under ``torch.no_grad`` on the device its parameters live on (CPU for a freshly
    built network); its training flags are restored. Tuple outputs (auxiliary heads) are counted as a whole.
    """
    return _count_macs_on(model, _check_shape(input_shape), _model_device(model))


def _count_macs_on(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> int:
    x = torch.zeros(shape, device=device)
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), torch.no_grad(), counter:
        model(x)
    return int(counter.get_total_flops()) // 2


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (restoring its state afterwards).

    A meta pass allocates a few hundred thousand short-lived Python objects (its first one also imports the modules
    behind meta kernels), which would trigger full collections over every object of the process; without them the
    count of a large network takes some 15 % less time. Only small meta objects are created meanwhile.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_fallback_warned: set[str] = set()


def count_costs(build: Callable[[], nn.Module], input_shape: tuple[int, ...]) -> dict[str, float]:
    """``params`` and ``macs`` of the network ``build()`` returns, without running it on data.

    ``build`` is called under ``torch.device("meta")``: parameters and buffers get shapes but no storage, weight
    initialisation does nothing and no random number is drawn. MACs are then counted as :func:`count_macs` does
    (eval mode, ``torch.no_grad``, ``FlopCounterMode``) on a meta input of ``input_shape``, so both numbers equal
    :func:`count_params` and :func:`count_macs` of a real build. If the meta build or pass fails (an op without a
    meta kernel, ``.item()``, a data-dependent shape, a tensor created on an explicit device), the reason is logged
    and ``build()`` is called again normally and counted on real CPU tensors. Errors of the project itself
    (:class:`~nas.errors.NASError`, e.g. an invalid architecture) propagate.
    """
    shape = _check_shape(input_shape)
    meta = torch.device("meta")
    try:
        with meta, _gc_paused():
            model = build()
            return {"params": float(count_params(model)), "macs": float(_count_macs_on(model, shape, meta))}
    except NASError:
        raise
    except Exception as exc:  # the meta device cannot run this network; count on real tensors
        kind = type(exc).__name__
        first_line = next(iter(str(exc).strip().splitlines()), "")
        log = logger.debug if kind in _fallback_warned else logger.warning  # warn once per kind of failure
        _fallback_warned.add(kind)
        log("counting on the meta device failed (%s: %s); counting on real tensors instead", kind, first_line)
    model = build()
    return {"params": float(count_params(model)), "macs": float(count_macs(model, shape))}


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (0 <= q <= 100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: torch.device | str,
    *,
    warmup: int = 5,
    repeats: int = 20,
) -> dict[str, float]:
    """Wall-clock latency of one forward pass on ``device`` in milliseconds.

    Returns ``median_ms``, ``p90_ms``, ``mean_ms``, ``min_ms`` and ``repeats``. On CUDA every repeat is timed with a
    pair of CUDA events (device time, no host overhead in between) and the device is synchronised before reading
    them; on other devices ``time.perf_counter`` around a synchronous forward is used. The model is moved to
    ``device`` for the measurement and moved back to where it was afterwards; it runs in eval mode under
    ``torch.no_grad`` and its training flags are restored.
    """
    if warmup < 0:
        raise InvalidInput("warmup", f"must be >= 0, got {warmup}")
    if repeats < 1:
        raise InvalidInput("repeats", f"must be >= 1, got {repeats}")
    shape = _check_shape(input_shape)
    dev = torch.device(device)
    home = _model_device(model)
    model.to(dev)
    try:
        x = torch.randn(shape, device=dev)
        times: list[float] = []
        with _eval_mode(model), torch.no_grad():
            for _ in range(warmup):
                model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                events = [
                    (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)
                ]
                for start, end in events:
                    start.record()
                    model(x)
                    end.record()
                torch.cuda.synchronize(dev)
                times = [start.elapsed_time(end) for start, end in events]
            else:
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    model(x)
                    times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        model.to(home)
    return {
        "median_ms": statistics.median(times),
        "p90_ms": _percentile(times, 90.0),
        "mean_ms": statistics.fmean(times),
        "min_ms": min(times),
        "repeats": float(repeats),
    }


def measure_costs(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    device: torch.device | str = "cpu",
    latency: bool = False,
) -> dict[str, float]:
    """``params`` and ``macs`` of ``model`` (and ``latency_ms``, the median latency on ``device``, when asked).

    MACs are counted where the model's parameters live; latency is measured on ``device``.
    """
    costs: dict[str, float] = {
        "params": float(count_params(model)),
        "macs": float(count_macs(model, input_shape)),
    }
    if latency:
        costs["latency_ms"] = measure_latency(model, input_shape, device)["median_ms"]
    logger.debug("costs %s for input %s", costs, input_shape)
    return costs


def measure_build_costs(
    build: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    *,
    device: torch.device | str = "cpu",
    latency: bool = False,
) -> dict[str, float]:
    """:func:`measure_costs` of the network ``build()`` returns, counting params and MACs with :func:`count_costs`.

    Only latency needs a real network: ``build()`` is called normally (drawing from the random generators as a
    build does) only when ``latency`` is asked for, and the network is timed on ``device``.
    """
    costs = count_costs(build, input_shape)
    if latency:
        costs["latency_ms"] = measure_latency(build(), input_shape, device)["median_ms"]
    logger.debug("costs %s for input %s", costs, input_shape)
    return costs
