"""Weight-sharing machinery: choice modules, path activation, differentiable mixing, BatchNorm recalibration, and
the block-wise supernet interface (:class:`BlockwiseSupernet`) that BossNAS trains through."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Generic, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from nas.arch import Architecture


class LayerChoice(nn.Module):
    """Holds one module per candidate; forward runs the active one only.

    Only the active candidate's parameters take part in the forward pass, so a single-path step costs what the
    sampled subnet costs.
    """

    def __init__(self, candidates: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not candidates:
            raise ValueError("LayerChoice needs at least one candidate")
        self.candidates = nn.ModuleDict(dict(candidates))
        self.active: str = next(iter(self.candidates))

    def choose(self, key: str) -> None:
        if key not in self.candidates:
            raise KeyError(f"{key!r} is not a candidate ({', '.join(self.candidates)})")
        self.active = key

    def forward(self, *args: Tensor) -> Tensor:
        return self.candidates[self.active](*args)  # type: ignore[no-any-return]


class MixedOp(nn.Module):
    """DARTS relaxation of a choice: a weighted sum of every candidate's output."""

    def __init__(self, candidates: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.candidates = nn.ModuleDict(dict(candidates))

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        out: Tensor | None = None
        for w, op in zip(weights, self.candidates.values(), strict=True):
            y = w * op(x)
            out = y if out is None else out + y
        assert out is not None
        return out


class Supernet(nn.Module):
    """A network holding the weights of every architecture of a space.

    Single-path supernets follow the path set by :meth:`set_active`. Differentiable supernets expose their
    architecture logits through :meth:`arch_parameters` and turn them into an architecture with :meth:`derive`.
    """

    mode: str = "single_path"

    @abstractmethod
    def set_active(self, arch: Architecture) -> None:
        """Route the forward pass through ``arch``'s choices."""

    @abstractmethod
    def extract(self, arch: Architecture) -> nn.Module:
        """A standalone network for ``arch`` carrying the supernet's weights for that path.

        Its output equals the supernet's with ``arch`` active (in eval mode).
        """

    def arch_parameters(self) -> list[nn.Parameter]:
        return []

    def weight_parameters(self) -> list[nn.Parameter]:
        arch_ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch_ids]

    def derive(self) -> Architecture:
        raise NotImplementedError(f"{type(self).__name__} is not differentiable")


BlockPath = tuple[int, ...]
"""A candidate path of one block: an op index per layer of the block."""


@runtime_checkable
class BlockwiseSupernet(Protocol):
    """A single-path supernet that runs block by block (HyTra, BossNAS's MBConv): what BossNAS trains.

    The network is ``head_forward(block_{n-1}( ... block_0(stem_forward(x))))``; block ``k`` runs one of its
    candidate paths (:data:`BlockPath`). Spaces that search the resolution (HyTra) place every block input and
    output at a *level* (0 = the stem's output, each level halves the side): a path runs on some input levels only
    and ends at one level. Spaces without (MBConv) have the single level 0.

    Implementations are ``Supernet`` subclasses that also list this protocol among their bases, so mypy checks
    their signatures; the spaces whose ``blocks()`` is not None build one. ``isinstance(x, BlockwiseSupernet)``
    checks that every member is present.
    """

    @property
    def num_blocks(self) -> int:
        """The number of blocks."""
        ...

    def stem_forward(self, x: Tensor) -> Tensor:
        """The stem's output (level 0) for images ``x``; block 0 reads it."""
        ...

    def forward_block(self, k: int, x: Tensor, path: Sequence[int], start_level: int) -> Tensor:
        """Block ``k`` on ``path``; ``x`` is the previous block's output (the stem's for block 0), at
        ``start_level``."""
        ...

    def head_forward(self, x: Tensor) -> Tensor:
        """The network's output (logits) from the last block's output."""
        ...

    def block_paths(self, k: int, start_level: int | None = None) -> list[BlockPath]:
        """Block ``k``'s candidate paths: all of them (None) or those that run on an input at ``start_level``."""
        ...

    def path_start_levels(self, k: int) -> list[int]:
        """The input levels block ``k`` can read (block 0: the stem's level only)."""
        ...

    def path_end_level(self, k: int, path: Sequence[int]) -> int:
        """The level of block ``k``'s output on ``path``."""
        ...

    def path_completes(self, k: int, path: Sequence[int]) -> bool:
        """Whether the later blocks have a path that can follow ``path`` of block ``k``."""
        ...

    def block_modules(self, k: int) -> list[nn.Module]:
        """The modules that hold block ``k``'s weights (block 0 also owns the stem): what training block ``k``
        updates and what freezing it stops."""
        ...

    def block_output_shape(self, k: int, path: Sequence[int]) -> tuple[int, int]:
        """(channels, side) of block ``k``'s output on ``path`` for the macro's image size."""
        ...

    def reference_paths(self) -> list[BlockPath]:
        """A fixed path per block such that block ``k`` reads, from the reference paths of blocks < k, an input on
        which the most of its candidates run (all of them where a block's candidates do not depend on its input
        level; HyTra: BossNAS's default lists); blocks trained independently are fed through these."""
        ...

    def arch_from_paths(self, paths: Sequence[Sequence[int]]) -> Architecture:
        """The architecture made of one path per block."""
        ...

    def paths_of(self, arch: Architecture) -> list[BlockPath]:
        """An architecture's path per block."""
        ...


def missing_members(obj: object, protocol: type) -> list[str]:
    """The public members of ``protocol`` (a Protocol class) that ``obj`` lacks, for error messages."""
    layers = [klass for klass in protocol.__mro__ if klass not in (object, Protocol, Generic)]
    members = {name for klass in layers for name in (*vars(klass), *vars(klass).get("__annotations__", {}))}
    return sorted(name for name in members if not name.startswith("_") and not hasattr(obj, name))


@torch.no_grad()
def fitting(source: Mapping[str, Tensor], skey: str, key: str, target: Tensor) -> Tensor:
    """``source[skey]``, which must have the shape of the standalone network's ``key`` (``target``)."""
    tensor = source[skey]
    if tensor.shape != target.shape:
        raise RuntimeError(f"supernet tensor {skey} {tuple(tensor.shape)} does not fit {key}")
    return tensor


@torch.no_grad()
def inherit_weights(net: nn.Module, supernet: nn.Module, tensor_for: Callable[[str, Tensor], Tensor]) -> nn.Module:
    """Fill every state entry ``key`` of the standalone ``net`` with a copy of ``tensor_for(key, entry)`` (taken
    from the supernet), then give ``net`` the supernet's device and training mode. The core of ``extract``."""
    state = {key: tensor_for(key, value).detach().clone() for key, value in net.state_dict().items()}
    net.load_state_dict(state)
    net.to(next(supernet.parameters()).device)
    net.train(supernet.training)
    return net


def recalibrate_bn(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Re-estimate BatchNorm running statistics of ``model`` (for its current path) from ``batches``.

    Running stats are reset and accumulated as a true average over the batches (momentum None). Returns the number
    of batches used. The model is left in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    count = 0
    for x in batches:
        model(x)
        count += 1
    for bn, momentum in zip(bns, saved, strict=True):
        bn.momentum = momentum
    model.eval()
    return count
