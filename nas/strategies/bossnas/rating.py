"""Rating the candidate paths of a block (spec section 3).

For block k on a fixed input (the outputs of the prefix paths of blocks < k): every candidate path that runs on
that input is, after the BatchNorm statistics of the block and its heads are re-estimated on a training batch (its
two BYOL views), evaluated on held-out view pairs: the online predictions of both views and the target projections.
The population center of each view is the mean of the target projections over *all* rated candidates of the block,
normalised first (``rating_center: normalized``, as in training) or raw (``raw``: the public code's ``val_hook``); a
path's rating is the mean over the held-out images of ``-2 cos(p1, T2) - 2 cos(p2, T1)``. Lower is better.

The held-out views (and the BatchNorm views) come from generators seeded by the search's seed and the block, so
every candidate sees the same images; the prefix's outputs are computed once per block (after re-estimating the
prefix's BatchNorm statistics on the same training views). In eval mode a batch's two views go through the network
together, which gives the same outputs as two passes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.data.byol import byol_views
from nas.errors import SearchCancelled
from nas.strategies.bossnas.blocks import SALT_BN, SALT_RATING, Normaliser, block_seed, view_specs
from nas.strategies.bossnas.bootstrap import BossNASNet, Path, as_path
from nas.train import autocast

if TYPE_CHECKING:
    from nas.data import DataSplits
    from nas.strategies.bossnas.options import BossNASOptions


def path_losses(
    preds: Sequence[tuple[Tensor, Tensor]], targets: Sequence[tuple[Tensor, Tensor]], center: str = "normalized"
) -> list[float]:
    """Ratings of paths from their online predictions ``(p1, p2)`` and their target projections ``(t1, t2)``, all
    (N, D) over the same N held-out images: each path's mean ``-2 cos(p1, T2) - 2 cos(p2, T1)`` where T is the
    population center: the mean over all paths of the L2-normalised target projections (``normalized``) or of the
    projections as given (``raw``, the public code's rating)."""
    if center not in ("normalized", "raw"):
        raise ValueError(f"center must be 'normalized' or 'raw', got {center!r}")

    def prepare(t: Tensor) -> Tensor:
        return F.normalize(t.float(), dim=1) if center == "normalized" else t.float()

    center1 = torch.stack([prepare(t[0]) for t in targets]).mean(0)
    center2 = torch.stack([prepare(t[1]) for t in targets]).mean(0)
    c1, c2 = F.normalize(center1, dim=1), F.normalize(center2, dim=1)
    out = []
    for p1, p2 in preds:
        loss = -2.0 * (F.normalize(p1.float(), dim=1) * c2).sum(1) - 2.0 * (F.normalize(p2.float(), dim=1) * c1).sum(1)
        out.append(float(loss.mean()))
    return out


class RatingData:
    """The images a block is rated on, normalised: ``bn`` holds training batches (each with its two views
    concatenated) for BatchNorm re-estimation, ``val`` held-out batches (view 1 then view 2, concatenated); both
    fixed by the seed and the block."""

    def __init__(self, data: DataSplits, opts: BossNASOptions, device: torch.device, seed: int, k: int) -> None:
        norm = Normaliser(data, device)
        specs = view_specs(opts, data.flip_ok)
        gen = torch.Generator().manual_seed(block_seed(seed, SALT_RATING, k))
        bn_loader = data.loader(
            "train", opts.batch_size, shuffle=True, augment=False, device=device, seed=block_seed(seed, SALT_BN, k)
        )
        self.bn: list[Tensor] = []
        for i, (x, _) in enumerate(bn_loader):
            if i >= opts.bn_batches:
                break
            v1, v2 = byol_views(norm.to_unit(x), gen, specs)
            self.bn.append(norm.normalise(torch.cat([v1, v2])))
        val_loader = data.loader("val", opts.eval_batch_size, shuffle=False, augment=False, device=device)
        self.val: list[Tensor] = []
        for i, (x, _) in enumerate(val_loader):
            if opts.rating_batches is not None and i >= opts.rating_batches:
                break
            v1, v2 = byol_views(norm.to_unit(x), gen, specs)
            self.val.append(norm.normalise(torch.cat([v1, v2])))
        if not self.val or not self.bn:
            raise ValueError("rating needs at least one training and one validation batch")


class BatchNormSet:
    """The modules under ``modules`` and their BatchNorms, listed once (a block is rated for many paths)."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list({id(m): m for top in modules for m in top.modules()}.values())
        self.bns = [m for m in self.modules if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def set_training(self, mode: bool) -> None:
        for m in self.modules:
            m.__dict__["training"] = mode  # what Module.train sets, without its recursion

    @torch.no_grad()
    def recalibrate(self, run: Callable[[Tensor], Any], batches: Sequence[Tensor]) -> None:
        """Re-estimate the running statistics as the true average over ``batches`` (momentum None), running
        ``run(x)`` in train mode; leaves the modules in eval mode (as :func:`nas.supernet.recalibrate_bn`, for a
        set of modules rather than one)."""
        saved = [bn.momentum for bn in self.bns]
        for bn in self.bns:
            bn.reset_running_stats()
            bn.momentum = None
        self.set_training(True)
        for x in batches:
            run(x)
        for bn, momentum in zip(self.bns, saved, strict=True):
            bn.momentum = momentum
        self.set_training(False)


@torch.no_grad()
def rate_block(
    net: BossNASNet,
    k: int,
    prefix: Sequence[Path],
    candidates: Sequence[Path],
    inputs: RatingData,
    *,
    device: torch.device,
    amp: bool = False,
    cancel: threading.Event | None = None,
    on_path: Callable[[int, int], None] | None = None,
    center: str = "normalized",
) -> dict[Path, float]:
    """Rate ``candidates`` of block ``k`` (each must run on the output of ``prefix``); see the module docstring.
    ``center``: the population center from the normalised (default) or the raw target projections (public code).
    Leaves the networks in eval mode."""
    prefix = [as_path(p) for p in prefix]
    candidates = [as_path(p) for p in candidates]
    amp = amp and device.type == "cuda"
    sn = net.online
    net.eval()
    level = net.start_level
    for j, p in enumerate(prefix):
        level = sn.path_end_level(j, p)

    # the block's inputs, computed once: online and target prefix on the BN batches and the held-out batches
    feats: dict[str, tuple[list[Tensor], list[Tensor]]] = {}
    for which in ("online", "target"):

        def run_prefix(x: Tensor, which: str = which) -> Tensor:
            with autocast(amp, device):
                return net.run_prefix(which, x, prefix)[0]

        if prefix:
            modules = [m for j in range(len(prefix)) for m in net.block_module_list(which, j)]
            BatchNormSet(modules).recalibrate(run_prefix, inputs.bn)
        feats[which] = ([run_prefix(x) for x in inputs.bn], [run_prefix(v) for v in inputs.val])

    heads = {
        "online": BatchNormSet([*net.block_module_list("online", k), net.projectors[k], net.predictors[k]]),
        "target": BatchNormSet([*net.block_module_list("target", k), net.target_projectors[k]]),
    }
    preds: list[tuple[Tensor, Tensor]] = []
    targets: list[tuple[Tensor, Tensor]] = []
    for i, path in enumerate(candidates):
        if cancel is not None and cancel.is_set():
            raise SearchCancelled("search cancelled")
        end = sn.path_end_level(k, path)
        outputs: dict[str, tuple[Tensor, Tensor]] = {}
        for which in ("online", "target"):
            bn_feats, val_feats = feats[which]

            def head(h: Tensor, which: str = which, path: Path = path, end: int = end) -> Tensor:
                with autocast(amp, device):
                    out = net.run_block(which, h, k, path, level)
                    if which == "online":
                        return net.online_prediction(out, k, end).float()
                    return net.target_projection(out, k, end, normalize=center == "normalized")

            heads[which].recalibrate(head, bn_feats)
            halves = [head(v).chunk(2) for v in val_feats]
            outputs[which] = (torch.cat([h[0] for h in halves]), torch.cat([h[1] for h in halves]))
        preds.append(outputs["online"])
        targets.append(outputs["target"])
        if on_path is not None:
            on_path(i + 1, len(candidates))
    return dict(zip(candidates, path_losses(preds, targets, center), strict=True))
