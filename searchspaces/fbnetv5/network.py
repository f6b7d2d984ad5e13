"""Standalone networks of the FBNetV5 space (see docs/fbnetv5.md): FBNetV3-A's blocks on four HRNet-like parallel
paths at H/4, H/8, H/16, H/32 (``stem_stride`` 1: H/2..H/16), fusion between stages, and one head per task.

A network runs only what its architecture keeps and its heads read: blocks with mask 0, fusion edges with mask 0 and
paths that reach no head are not built, so params and MACs are those of the architecture. The supernet
(:mod:`searchspaces.fbnetv5.supernet`) is the same class built with every block, edge and alternative, with the
same module names, so extraction copies tensors by name. Imports only torch and nas.ops (standalone export).
"""

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.ops.attention import TransformerBlock2d
from nas.ops.mbconv import IRF
from searchspaces.fbnetv5.encoding import (
    FBNETV3A_STEM_BLOCKS,
    FBNETV3A_STEM_WIDTH,
    HYBRID_PATHS,
    IRF_BLOCK,
    NUM_PATHS,
    SKIP,
    TRANSFORMER,
    block_plan,
    fused_targets,
    fusion_edges,
    head_paths,
    live_paths,
    make_divisible,
    path_widths,
    paths_in_stage,
    repeats,
    scaled,
)

FBNETV5_MACRO_DEFAULTS: dict[str, Any] = {
    "num_classes": 10,
    "in_channels": 3,
    "tasks": ["classification"],
    "width_mult": 1.0,
    "stem_stride": 2,
    "head_channels": 1984,
    "head_expansion": 6.0,
    "cls_paths": [0, 1, 2, 3],
    "seg_channels": 128,
    "det_path": 1,
    "det_channels": 64,
    "dropout": 0.2,
    "attn_heads": 4,
    "mlp_ratio": 2.0,
    "stages": 4,
    "extra_blocks": 2,
    "depth_mult": 1.0,
    "hybrid": False,
    "native_padding": False,
}
DETECTION_BOX_CHANNELS = 4  # per location: distances to the box's left, top, right, bottom (log, in strides)
DETECTION_PRIOR = 0.01  # initial foreground probability of the class logits (focal-loss prior)


def fill_fbnetv5_macro(macro: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(FBNETV5_MACRO_DEFAULTS)
    out.update({k: v for k, v in (macro or {}).items() if v is not None})
    return out


def conv_bn_act(c_in: int, c_out: int, kernel: int, stride: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.Hardswish())
    return nn.Sequential(*layers)


class Stem(nn.Sequential):
    """[conv_k3_hs 16 s2] then [ir_k3_hs 16 s1 n2 e1] (fixed, not searched)."""

    def __init__(self, m: dict[str, Any]) -> None:
        mult = float(m["width_mult"])
        c = scaled(FBNETV3A_STEM_WIDTH, mult)
        layers: list[nn.Module] = [conv_bn_act(int(m["in_channels"]), c, 3, int(m["stem_stride"]))]
        for k, e, se, width, stride, n in FBNETV3A_STEM_BLOCKS:
            for i in range(repeats(n, float(m["depth_mult"]))):
                c_out = scaled(width, mult)
                layers.append(IRF(c, c_out, k, stride if i == 0 else 1, e, se))
                c = c_out
        super().__init__(*layers)


class Resample(nn.Module):
    """A fusion edge from path ``src`` to path ``dst``: down, a chain of 3x3 stride-2 convs + BN (hard swish between
    them); up, a 1x1 conv + BN, then bilinear upsampling. The result is resized (bilinear) to the target's size where
    the sizes differ (odd sides, FBNetV3-A's native paddings)."""

    def __init__(self, c_src: int, c_dst: int, src: int, dst: int) -> None:
        super().__init__()
        self.up = src > dst
        if self.up:
            self.conv = conv_bn_act(c_src, c_dst, 1, act=False)
        else:
            steps = [conv_bn_act(c_src, c_src, 3, 2) for _ in range(dst - src - 1)]
            self.conv = nn.Sequential(*steps, conv_bn_act(c_src, c_dst, 3, 2, act=False))

    def forward(self, x: Tensor, like: Tensor) -> Tensor:
        y = self.conv(x)
        if y.shape[-2:] != like.shape[-2:]:
            y = F.interpolate(y, size=like.shape[-2:], mode="bilinear", align_corners=False)
        return y


class ClassificationHead(nn.Module):
    """FBNetV3-A's [ir_pool_hs 1984 e6] over several paths: per path a 1x1 expansion + BN + hard swish, global
    average pool; the pooled paths concatenated -> 1x1 conv (bias) to ``head_channels`` + hard swish -> dropout ->
    linear."""

    def __init__(self, widths: list[int], m: dict[str, Any]) -> None:
        super().__init__()
        mids = [make_divisible(c * float(m["head_expansion"])) for c in widths]
        self.expand = nn.ModuleList([conv_bn_act(c, mid, 1) for c, mid in zip(widths, mids, strict=True)])
        self.conv = nn.Conv2d(sum(mids), int(m["head_channels"]), 1, bias=True)
        self.act = nn.Hardswish()
        self.dropout = nn.Dropout(float(m["dropout"]))
        self.classifier = nn.Linear(int(m["head_channels"]), int(m["num_classes"]))

    def forward(self, feats: list[Tensor]) -> Tensor:
        pooled = [e(f).mean((2, 3), keepdim=True) for e, f in zip(self.expand, feats, strict=True)]
        x = self.act(self.conv(torch.cat(pooled, dim=1))).flatten(1)
        return self.classifier(self.dropout(x))


class SegmentationHead(nn.Module):
    """All paths upsampled (bilinear) to the first path's resolution, concatenated -> 1x1 conv + BN + hard swish ->
    1x1 per-pixel classifier (``num_classes + 1``: class 0 is background) -> bilinear upsampling to the input's
    H x W."""

    def __init__(self, widths: list[int], m: dict[str, Any]) -> None:
        super().__init__()
        self.fuse = conv_bn_act(sum(widths), int(m["seg_channels"]), 1)
        self.classifier = nn.Conv2d(int(m["seg_channels"]), int(m["num_classes"]) + 1, 1)

    def forward(self, feats: list[Tensor], size: list[int]) -> Tensor:
        top = feats[0].shape[-2:]
        ups = [f if f.shape[-2:] == top else F.interpolate(f, size=top, mode="bilinear", align_corners=False)
               for f in feats]  # fmt: skip
        y = self.classifier(self.fuse(torch.cat(ups, dim=1)))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


class DetectionHead(nn.Module):
    """A single-scale anchor-free head (FCOS / CenterNet style) on one path: 3x3 conv + BN + hard swish, then per
    location ``num_classes`` class logits (sigmoid; bias at the focal-loss prior) and 4 box distances (left, top,
    right, bottom, as logs in units of the path's stride): output (N, num_classes + 4, h, w)."""

    def __init__(self, width: int, m: dict[str, Any]) -> None:
        super().__init__()
        c = int(m["det_channels"])
        self.tower = conv_bn_act(width, c, 3)
        self.cls = nn.Conv2d(c, int(m["num_classes"]), 1, bias=False)
        self.cls_bias = nn.Parameter(
            torch.full((int(m["num_classes"]),), -math.log((1 - DETECTION_PRIOR) / DETECTION_PRIOR))
        )
        self.box = nn.Conv2d(c, DETECTION_BOX_CHANNELS, 1)

    def forward(self, x: Tensor) -> Tensor:
        t = self.tower(x)
        return torch.cat([self.cls(t) + self.cls_bias[:, None, None], self.box(t)], dim=1)


def structure_of(m: dict[str, Any]) -> dict[str, Any]:
    return {"stages": m["stages"], "extra_blocks": m["extra_blocks"], "depth_mult": m["depth_mult"]}


def all_on(m: dict[str, Any]) -> dict[str, Any]:
    """Choices keeping every block and every fusion edge (what the supernet builds)."""
    plan = block_plan(structure_of(m))
    return {
        "blocks": [[[IRF_BLOCK] * sum(b["searchable"] for b in blocks) for blocks in row] for row in plan],
        "fusion": [[1] * len(fusion_edges(b)) for b in range(int(m["stages"]) - 1)],
    }


class FBNetV5Network(nn.Module):
    """stem -> stages of blocks on parallel paths with fusion between them -> one head per task (``macro.tasks``).

    The output is the head's for one task, a tuple in ``macro.tasks`` order for several. Module names: ``stem``,
    ``blocks.s{stage}_p{path}_b{index}``, ``fusion.f{boundary}_{src}to{dst}``, ``heads.{task}``; a supernet
    (``full``) also has ``alt.{block}``, the transformer alternative of each hybrid block.
    """

    def __init__(self, choices: dict[str, Any], macro: dict[str, Any], full: bool = False) -> None:
        super().__init__()
        m = fill_fbnetv5_macro(macro)
        self.macro = m
        self.structure = structure_of(m)
        self.plan = block_plan(self.structure, float(m["width_mult"]), bool(m["native_padding"]))
        self.widths = path_widths(float(m["width_mult"]))
        self.head_inputs = head_paths(m)
        self.outputs = sorted({p for ps in self.head_inputs.values() for p in ps})
        self.full = full
        built = all_on(m) if full else choices
        self.stem = Stem(m)
        self.blocks = nn.ModuleDict()
        self.alt = nn.ModuleDict()
        self.fusion = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self._build_blocks(built)
        self._build_fusion(built)
        self._build_heads()
        self.route(choices)

    def _build_blocks(self, built: dict[str, Any]) -> None:
        """The kept blocks of the paths that reach a head (a supernet: all, and the transformer alternatives)."""
        live = live_paths(built, self.structure, self.outputs)
        alternatives = self.full and bool(self.macro["hybrid"])
        for s, row in enumerate(self.plan):
            for p in sorted(live[s]):
                for b in row[p]:
                    op = self.op_of(built, s, p, b)
                    if op == TRANSFORMER:
                        self.blocks[b["key"]] = self.transformer(b)
                    elif op != SKIP:
                        k, stride, e = b["kernel"], b["stride"], b["expansion"]
                        self.blocks[b["key"]] = IRF(b["c_in"], b["c_out"], k, stride, e, b["se"], padding=b["padding"])
                    if alternatives and b["searchable"] and p in HYBRID_PATHS:
                        self.alt[b["key"]] = self.transformer(b)

    def _build_fusion(self, built: dict[str, Any]) -> None:
        """The kept fusion edges into the paths whose fused output is used."""
        targets = fused_targets(built, self.structure, self.outputs)
        for k in range(len(self.plan) - 1):
            for (src, dst), bit in zip(fusion_edges(k), built["fusion"][k], strict=True):
                if bit and dst in targets[k]:
                    self.fusion[f"f{k}_{src}to{dst}"] = Resample(self.widths[src], self.widths[dst], src, dst)

    def _build_heads(self) -> None:
        for task, paths in self.head_inputs.items():
            widths = [self.widths[p] for p in paths]
            if task == "classification":
                self.heads[task] = ClassificationHead(widths, self.macro)
            elif task == "segmentation":
                self.heads[task] = SegmentationHead(widths, self.macro)
            else:
                self.heads[task] = DetectionHead(widths[0], self.macro)

    def transformer(self, b: dict[str, Any]) -> nn.Module:
        return TransformerBlock2d(b["c_out"], int(self.macro["attn_heads"]), float(self.macro["mlp_ratio"]))

    @staticmethod
    def op_of(choices: dict[str, Any], s: int, p: int, b: dict[str, Any]) -> int:
        return IRF_BLOCK if b["slot"] is None else int(choices["blocks"][s][p][b["slot"]])

    def route(self, choices: dict[str, Any]) -> None:
        """Follow ``choices`` from now on (a supernet: any architecture of its space)."""
        self.choices = choices
        self._live = live_paths(choices, self.structure, self.outputs)
        self._targets = fused_targets(choices, self.structure, self.outputs)

    def features(self, x: Tensor) -> dict[int, Tensor]:
        """The last stage's output of every path a head reads."""
        choices = self.choices
        inputs: dict[int, Tensor] = {0: self.stem(x)}
        feats: dict[int, Tensor] = {}
        for s, row in enumerate(self.plan):
            feats = {}
            for p in sorted(self._live[s]):
                h = inputs[p]
                for b in row[p]:
                    op = self.op_of(choices, s, p, b)
                    if op == SKIP:
                        continue
                    module = self.alt[b["key"]] if op == TRANSFORMER and self.full else self.blocks[b["key"]]
                    h = module(h)
                feats[p] = h
            if s == len(self.plan) - 1:
                break
            inputs = {}
            for q in sorted(self._targets[s]):
                y = feats[q]
                for (src, dst), bit in zip(fusion_edges(s), choices["fusion"][s], strict=True):
                    if bit and dst == q:
                        y = y + self.fusion[f"f{s}_{src}to{dst}"](feats[src], feats[q])
                inputs[q] = y
            n = paths_in_stage(s)
            if n < paths_in_stage(s + 1) and n - 1 in inputs:
                inputs[n] = inputs[n - 1]
        return feats

    def forward(self, x: Tensor) -> Any:
        feats = self.features(x)
        outs: list[Tensor] = []
        for task, paths in self.head_inputs.items():
            head = self.heads[task]
            if task == "classification":
                outs.append(head([feats[p] for p in paths]))
            elif task == "segmentation":
                outs.append(head([feats[p] for p in paths], list(x.shape[-2:])))
            else:
                outs.append(head(feats[paths[0]]))
        return outs[0] if len(outs) == 1 else tuple(outs)


def build_network(choices: dict[str, Any], macro: dict[str, Any]) -> FBNetV5Network:
    """The standalone network for ``choices`` (see :mod:`searchspaces.fbnetv5.encoding`) and a macro dict."""
    return FBNetV5Network(choices, macro)


__all__ = ["NUM_PATHS", "FBNetV5Network", "build_network"]
