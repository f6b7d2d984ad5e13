"""Identity ("aligned") initialisation of candidate ops in a weight-sharing supernet.

A cell supernet whose wiring is sampled anew at every step (which state each op reads, which states are concatenated)
does not learn from the default random initialisation: every candidate op and input starts as an independent random
projection, so a state's channels mean something different on every sampled path, and the shared readers of a cell
output (the next cells' 1x1 adjustments, the classifier) get gradients that cancel out. Initialising every conv as
the identity on channels (a centred delta for depthwise kernels, a channel diagonal for dense kernels, the matching
halves for a factorised reduction) makes channel ``c`` of every candidate op's output start as channel ``c`` of its
input, so all sampled paths compute the same features at first and training starts from a common code. The
architecture is unchanged: only the starting values of the weights differ, and extraction copies trained weights as
before.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.ops.conv import FactorizedReduce


@torch.no_grad()
def identity_conv_(conv: nn.Conv2d, offset: int = 0) -> None:
    """Set ``conv`` to map input channel ``(offset + i) mod c_in`` of each group to output channel ``i`` at the
    kernel centre (a depthwise conv gets a centred delta per channel); any bias becomes zero."""
    w = conv.weight
    w.zero_()
    c_out, c_in_per_group, kh, kw = w.shape
    ch, cw = kh // 2, kw // 2
    if conv.groups > 1:
        if c_in_per_group != 1:
            raise ValueError(f"identity init supports dense and depthwise convs, not groups={conv.groups}")
        w[:, 0, ch, cw] = 1.0
    else:
        for i in range(c_out):
            w[i, (offset + i) % c_in_per_group, ch, cw] = 1.0
    if conv.bias is not None:
        conv.bias.zero_()


@torch.no_grad()
def identity_init_(module: nn.Module) -> int:
    """Identity-initialise every conv inside ``module`` (see the module docstring); returns how many were set.

    A :class:`~nas.ops.conv.FactorizedReduce` keeps both halves of its input: path 1 takes the first
    ``c_out // 2`` channels, path 2 the next ones. Modules without convs (pools, identity) are left as they are.
    """
    count = 0
    done: set[int] = set()
    for m in module.modules():
        if isinstance(m, FactorizedReduce):
            identity_conv_(m.conv1)
            identity_conv_(m.conv2, offset=m.conv1.out_channels)
            done.update((id(m.conv1), id(m.conv2)))
            count += 2
        elif isinstance(m, nn.Conv2d) and id(m) not in done:
            identity_conv_(m)
            count += 1
    return count
