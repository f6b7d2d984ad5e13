"""Block-wise ensemble bootstrapping (BossNAS, spec section 2): the online and target networks, the per-block
projector and predictor, the population-center target, the loss and the target's momentum schedule.

BossNAS trains a :class:`nas.supernet.BlockwiseSupernet` (HyTra's, the MBConv space's): spaces whose ``blocks()`` is
not None build one. Here block 0 runs the stem itself, so a block's input is the raw image for block 0 and the
previous block's output otherwise.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.errors import InvalidInput
from nas.supernet import BlockPath, BlockwiseSupernet, missing_members

if TYPE_CHECKING:
    from nas.space import MacroBase, SearchSpace
    from nas.strategies.bossnas.options import BossNASOptions

Path = BlockPath

# the loss of one path is -2 cos(p1, T2) - 2 cos(p2, T1), in [-4, 4]; the rank-correlation score adds this back
LOSS_OFFSET = 4.0


def as_path(path: Iterable[int]) -> Path:
    return tuple(int(o) for o in path)


def mlp(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    """Linear -> BN -> ReLU -> Linear (BYOL's projector and predictor)."""
    return nn.Sequential(
        nn.Linear(c_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, c_out)
    )


class ShapeAdapter(nn.Sequential):
    """Brings a block output of ``c_in`` channels to the last level's width and (about) its resolution: depthwise
    conv with kernel = stride = ``stride`` -> 1x1 conv -> BN (spec section 2)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_in, stride, stride, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Projector(nn.Module):
    """One block's projector: a shape adapter per level the block's paths end at, global average pool, MLP (last
    width -> hidden -> dim). ``shapes`` maps an end level to the (channels, side) of outputs there."""

    def __init__(self, shapes: dict[int, tuple[int, int]], last: tuple[int, int], hidden: int, dim: int) -> None:
        super().__init__()
        c_last, side_last = last
        self.adapters = nn.ModuleDict(
            {
                str(level): ShapeAdapter(c, c_last, max(1, round(side / max(1, side_last))))
                for level, (c, side) in sorted(shapes.items())
            }
        )
        self.mlp = mlp(c_last, hidden, dim)

    def forward(self, x: Tensor, level: int) -> Tensor:
        return self.mlp(self.adapters[str(level)](x).mean((2, 3)))  # type: ignore[no-any-return]


def block_shapes(supernet: BlockwiseSupernet, k: int) -> dict[int, tuple[int, int]]:
    """End level -> (channels, side) of block ``k``'s outputs over its candidate paths."""
    return {supernet.path_end_level(k, p): supernet.block_output_shape(k, p) for p in supernet.block_paths(k)}


def head_sizes(supernet: BlockwiseSupernet, proj_hidden: int | None, proj_dim: int | None) -> tuple[int, int]:
    """(hidden, dim): the options, or the spec's 4096/256 scaled with the last width (2x and /8, dim >= 16)."""
    last_c = last_shape(supernet)[0]
    return proj_hidden or 2 * last_c, proj_dim or max(16, last_c // 8)


def last_shape(supernet: BlockwiseSupernet) -> tuple[int, int]:
    """The deepest output shape of the last block (HyTra: 7x7; its paths may also end at 14x14): the shape every
    projector brings its block's output to."""
    k = supernet.num_blocks - 1
    shapes = {supernet.block_output_shape(k, p) for p in supernet.block_paths(k)}
    return min(shapes, key=lambda cs: (cs[1], -cs[0]))


class BossNASNet(nn.Module):
    """Everything BossNAS trains: the online supernet, its EMA target, and per block an online projector and
    predictor and a target projector. ``ratings`` / ``prefixes`` are filled as blocks are rated."""

    def __init__(
        self, supernet: BlockwiseSupernet, proj_hidden: int | None = None, proj_dim: int | None = None
    ) -> None:
        super().__init__()
        if not isinstance(supernet, nn.Module):
            raise TypeError(f"a block-wise supernet must be an nn.Module, got {type(supernet).__name__}")
        self.online: BlockwiseSupernet = supernet
        hidden, dim = head_sizes(supernet, proj_hidden, proj_dim)
        last = last_shape(supernet)
        self.projectors = nn.ModuleList(
            [Projector(block_shapes(supernet, k), last, hidden, dim) for k in range(supernet.num_blocks)]
        )
        self.predictors = nn.ModuleList([mlp(dim, hidden, dim) for _ in range(supernet.num_blocks)])
        self.target: BlockwiseSupernet = copy.deepcopy(supernet).requires_grad_(False)
        self.target_projectors = copy.deepcopy(self.projectors).requires_grad_(False)
        self.num_blocks = supernet.num_blocks
        self.start_level = supernet.path_start_levels(0)[0]
        self.ratings: dict[int, dict[Path, float]] = {}  # block -> path -> rating (lower is better)
        self.prefixes: dict[int, list[Path]] = {}  # block -> the paths of the blocks before it that fed it
        # (block, input level) -> ratings of the block's paths on an input at that level (see the strategy)
        self.fallback_ratings: dict[tuple[int, int], dict[Path, float]] = {}
        self.timings: dict[str, float] = {}

    # --- forward pieces ----------------------------------------------------------------------------------------
    def nets(self, which: str) -> tuple[BlockwiseSupernet, nn.ModuleList]:
        if which == "online":
            return self.online, self.projectors
        return self.target, self.target_projectors

    def run_block(self, which: str, h: Tensor, k: int, path: Path, level: int) -> Tensor:
        """Block ``k`` on ``path`` (block 0 runs the stem first, so its ``h`` is the image batch)."""
        sn = self.nets(which)[0]
        if k == 0:
            h = sn.stem_forward(h)
        return sn.forward_block(k, h, path, level)

    def run_prefix(self, which: str, x: Tensor, prefix: Sequence[Path]) -> tuple[Tensor, int]:
        """The input of block ``len(prefix)``: ``x`` through the blocks of ``prefix``, and its level."""
        level = self.start_level
        for j, path in enumerate(prefix):
            x = self.run_block(which, x, j, path, level)
            level = self.online.path_end_level(j, path)
        return x, level

    def online_prediction(self, h: Tensor, k: int, level: int) -> Tensor:
        """The predictor's output for block ``k``'s output ``h`` at ``level``."""
        return self.predictors[k](self.projectors[k](h, level))  # type: ignore[no-any-return]

    def target_projection(self, h: Tensor, k: int, level: int, normalize: bool = True) -> Tensor:
        """Target projection of block ``k``'s output ``h`` at ``level``, L2-normalised unless ``normalize`` is
        False."""
        out = self.target_projectors[k](h, level).float()
        return F.normalize(out, dim=1) if normalize else out

    # --- parameters --------------------------------------------------------------------------------------------
    def block_module_list(self, which: str, k: int) -> list[nn.Module]:
        return list(self.nets(which)[0].block_modules(k))

    def trainable_parameters(self, k: int) -> list[nn.Parameter]:
        """What the optimizer of block ``k`` updates: blocks 0..k (earlier blocks keep receiving gradients on their
        paths), block k's projector and predictor."""
        modules = [m for j in range(k + 1) for m in self.block_module_list("online", j)]
        modules += [self.projectors[k], self.predictors[k]]
        return _unique_parameters(modules)

    def ema_pairs(self, k: int) -> tuple[list[Tensor], list[Tensor]]:
        """(online, target) parameters the target follows while block ``k`` trains: blocks 0..k and the projector."""
        online = [m for j in range(k + 1) for m in self.block_module_list("online", j)] + [self.projectors[k]]
        target = [m for j in range(k + 1) for m in self.block_module_list("target", j)] + [self.target_projectors[k]]
        a, b = _unique_parameters(online), _unique_parameters(target)
        if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
            raise RuntimeError("online and target networks differ in structure")
        return [p.data for p in a], [p.data for p in b]


def _unique_parameters(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    seen: set[int] = set()
    out = []
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


# --- the objective ---------------------------------------------------------------------------------------------
def population_center(projections: Sequence[Tensor]) -> Tensor:
    """The ensemble target of one view: the mean over paths of the L2-normalised target projections (B, D)."""
    return torch.stack([F.normalize(t.float(), dim=1) for t in projections]).mean(0)


def bootstrap_loss(p1: Tensor, p2: Tensor, t1: Tensor, t2: Tensor) -> Tensor:
    """Per-sample loss of one path: ``-2 cos(p1, T2) - 2 cos(p2, T1)`` (p: online predictions of views 1 and 2;
    T: population centers of views 1 and 2). Shape (B,), values in [-4, 4]."""
    return -2.0 * F.cosine_similarity(p1.float(), t2.float(), dim=1) - 2.0 * F.cosine_similarity(
        p2.float(), t1.float(), dim=1
    )


def target_momentum(step: int, total: int, base: float) -> float:
    """BYOL's schedule: ``1 - (1 - base) * (cos(pi * step / total) + 1) / 2``, from ``base`` at step 0 to 1."""
    if total <= 0:
        return 1.0
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total) / total) + 1.0) / 2.0


@torch.no_grad()
def ema_update(online: list[Tensor], target: list[Tensor], tau: float) -> None:
    """target = tau * target + (1 - tau) * online."""
    torch._foreach_mul_(target, tau)
    torch._foreach_add_(target, online, alpha=1.0 - tau)


# --- compact state --------------------------------------------------------------------------------------------
def pack_state(state: dict[str, Tensor]) -> dict[str, Any]:
    """A state dict as one flat CPU tensor per dtype plus names and shapes: a block-wise supernet has thousands of
    small tensors, which ``torch.save`` writes one by one (about 1 s for HyTra's 3,700 at any width)."""
    names, shapes, dtypes = list(state), [list(v.shape) for v in state.values()], [str(v.dtype) for v in state.values()]
    flat: dict[str, Tensor] = {}
    for dtype in sorted(set(dtypes)):
        parts = [v.detach().reshape(-1).cpu() for v in state.values() if str(v.dtype) == dtype]
        flat[dtype] = torch.cat(parts) if parts else torch.empty(0)
    return {"names": names, "shapes": shapes, "dtypes": dtypes, "flat": flat}


def unpack_state(packed: dict[str, Any]) -> dict[str, Tensor]:
    """The inverse of :func:`pack_state`."""
    names, shapes, dtypes = packed["names"], packed["shapes"], packed["dtypes"]
    out: dict[str, Tensor] = {}
    for dtype, flat in packed["flat"].items():
        index = [i for i, d in enumerate(dtypes) if d == dtype]
        sizes = [math.prod(shapes[i]) for i in index]
        for i, part in zip(index, torch.split(flat, sizes), strict=True):
            out[names[i]] = part.view(shapes[i])
    return {name: out[name] for name in names}


# --- construction ----------------------------------------------------------------------------------------------
def build_net(space: SearchSpace, macro: MacroBase, opts: BossNASOptions, seed: int) -> BossNASNet:
    """The initial network of a search: weights depend on ``seed`` alone (every process builds the same)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        supernet = space.supernet(macro, mode="single_path")
        if not isinstance(supernet, BlockwiseSupernet):
            missing = ", ".join(missing_members(supernet, BlockwiseSupernet))
            raise InvalidInput(
                "space.name",
                f"BossNAS trains block-wise supernets and the supernet of {space.name!r} is not one (it lacks "
                f"{missing} of nas.supernet.BlockwiseSupernet); allowed: hytra, bossnas-mbconv",
            )
        return BossNASNet(supernet, opts.proj_hidden, opts.proj_dim)


def reference_prefix(supernet: BlockwiseSupernet, k: int) -> list[Path]:
    """The fixed paths of blocks < k that feed block k in the independent mode: the supernet's reference paths
    (HyTra: an input at block k's default level, where BossNAS lists its candidates before a path is chosen)."""
    return [as_path(p) for p in supernet.reference_paths()[:k]]


def prefix_to_level(supernet: BlockwiseSupernet, k: int, level: int) -> list[Path]:
    """Paths of blocks < k that hand block k an input at ``level``: the reference paths where they do, otherwise
    the first completion found block by block (each block tries its reference path first, then its candidates)."""
    if level not in supernet.path_start_levels(k):
        raise ValueError(f"block {k} cannot read an input at level {level}; it reads {supernet.path_start_levels(k)}")
    refs = [as_path(p) for p in supernet.reference_paths()]
    dead: set[tuple[int, int]] = set()

    def search(j: int, current: int) -> list[Path] | None:
        if j == k:
            return [] if current == level else None
        if (j, current) in dead:
            return None
        options = [as_path(p) for p in supernet.block_paths(j, current)]
        options.sort(key=lambda p: (p != refs[j], p))
        for p in options:
            rest = search(j + 1, supernet.path_end_level(j, p))
            if rest is not None:
                return [p, *rest]
        dead.add((j, current))
        return None

    start = supernet.path_start_levels(0)[0]
    found = search(0, start)
    if found is None:
        raise ValueError(f"no paths of blocks < {k} hand block {k} an input at level {level}")
    return found
