"""BossNet-T0 / T0 without SE / T1 (BossNAS's searched HyTra architectures) in their retraining form."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas.arch import Architecture
from nas.space import Preset

if TYPE_CHECKING:
    from searchspaces.hytra.space import HyTraSpace

REFERENCE = (
    "Li et al. BossNAS: Exploring Hybrid CNN-transformers with Block-wisely Self-supervised Neural Architecture "
    "Search. ICCV 2021; github.com/changlin31/BossNAS (retraining_hytra/boss_models.py)"
)

# Published per-stage encoding [[1], [1], [1, 1, 1, 0, 1], [0, 0, 0, 1, 0, 0, 0, 0, 0]] (0 = ResAtt, 1 = ResConv):
# 56x56 ResConv | 28x28 ResConv | 14x14 ResConv x3, ResAtt, ResConv | 7x7 ResAtt x3, ResConv, ResAtt x5.
# As HyTra op indices (0 ResAtt@7, 1 ResConv@7, 2 ResAtt@14, 3 ResConv@14, 4 ResConv@28, 5 ResConv@56), 4 per block:
BOSSNET_T0 = {"blocks": [[5, 4, 3, 3], [3, 2, 3, 0], [0, 0, 1, 0], [0, 0, 0, 0]]}

_RETRAIN: dict[str, Any] = {
    "form": "retrain",
    "stem": "imagenet",
    "stem_channels": 64,
    "widths": [256, 512, 1024, 2048],
    "bottlenecks": [64, 128, 256, 512],
    "head_dim": 64,
    "drop_path": 0.1,
    "num_classes": 1000,
    "image_size": 224,
}


def hytra_presets(space: HyTraSpace) -> dict[str, Preset]:
    arch = Architecture(space=space.name, version=space.version, choices=BOSSNET_T0)
    presets = [
        Preset(
            name="bossnet-t0",
            arch=arch,
            macro={**_RETRAIN, "activation": "silu", "se": True, "stage_strides": [1, 2, 2, 2]},
            input_size=224,
            description="BossNet-T0 (SE in ResConv, SiLU) on ImageNet (published 3.4B MAdds, 80.8% top-1)",
            reference=REFERENCE,
        ),
        Preset(
            name="bossnet-t0-nose",
            arch=arch,
            macro={**_RETRAIN, "activation": "relu", "se": False, "stage_strides": [1, 2, 2, 2]},
            input_size=224,
            description="BossNet-T0 without SE (ReLU) on ImageNet (published 3.4B MAdds, 80.5% top-1)",
            reference=REFERENCE,
        ),
        Preset(
            name="bossnet-t1",
            arch=arch,
            macro={**_RETRAIN, "activation": "silu", "se": True, "stage_strides": [1, 2, 2, 1]},
            input_size=224,
            description="BossNet-T1: T0 with the last stage kept at 14x14 (published 7.9B MAdds, 81.9% top-1 in the "
            "code's README, 82.2% in the paper)",
            reference=REFERENCE,
        ),
    ]
    return {p.name: p for p in presets}
