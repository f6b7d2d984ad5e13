"""Single-path supernet of the FBNetV5 space: every block, every fusion edge and (hybrid) every transformer
alternative, routed by the active architecture's masks.

It wraps an :class:`~searchspaces.fbnetv5.network.FBNetV5Network` built ``full`` (module ``net``), so a standalone
network's tensor ``K`` is the supernet's ``net.K``, except a block kept as a transformer block (value 2), whose
tensors are ``net.alt.<block>``. Skipped blocks and dropped edges do not run; paths that reach no head do not run.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from nas.supernet import Supernet, fitting, inherit_weights
from searchspaces.fbnetv5.encoding import TRANSFORMER
from searchspaces.fbnetv5.network import FBNetV5Network, all_on

if TYPE_CHECKING:
    from nas.arch import Architecture
    from searchspaces.fbnetv5.space import FBNetV5Macro, FBNetV5Space


class FBNetV5Supernet(Supernet):
    mode = "single_path"

    def __init__(self, space: FBNetV5Space, macro: FBNetV5Macro) -> None:
        super().__init__()
        self.space = space
        self.macro = macro
        m = macro.model_dump()
        self.net = FBNetV5Network(all_on(m), m, full=True)
        self.active: Architecture | None = None
        self.set_active(space.sample(random.Random(0)))

    def set_active(self, arch: Architecture) -> None:
        self.space.validate(arch)
        self.net.route(arch.choices)
        self.active = arch

    def forward(self, x: Tensor) -> Any:
        return self.net(x)

    def block_ops(self, arch: Architecture) -> dict[str, int]:
        """The op (0 skip, 1 IRF, 2 transformer) of every block of ``arch``, by module key."""
        return {
            b["key"]: FBNetV5Network.op_of(arch.choices, s, p, b)
            for s, row in enumerate(self.net.plan)
            for p, blocks in enumerate(row)
            for b in blocks
        }

    @torch.no_grad()
    def extract(self, arch: Architecture) -> nn.Module:
        net = self.space.build(arch, self.macro)
        ops = self.block_ops(arch)
        source = self.state_dict()

        def source_key(key: str) -> str:
            parts = key.split(".")
            if parts[0] == "blocks" and ops.get(parts[1]) == TRANSFORMER:
                return ".".join(["net", "alt", *parts[1:]])
            return f"net.{key}"

        return inherit_weights(net, self, lambda key, t: fitting(source, source_key(key), key, t))
