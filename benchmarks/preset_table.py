"""Params and MACs of the NASNet-space presets beside the published numbers (docs/nasnet.md).

Usage: python benchmarks/preset_table.py

MACs are counted with torch.utils.flop_counter.FlopCounterMode at the preset's input size, batch 1, eval mode
(no auxiliary head), as flops / 2. Params are given with and without the auxiliary head (the papers count the
network without it).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from searchspaces.nasnet import NASNetSpace

PUBLISHED: dict[str, tuple[float, float | None, str]] = {
    # name: (params M, mult-adds M or None, source)
    "nasnet-a-cifar": (3.3, None, "Zoph et al. 2018, Table 1 (NASNet-A 6 @ 768)"),
    "nasnet-a-mobile": (5.3, 564.0, "Zoph et al. 2018, Table 2 (NASNet-A 4 @ 1056)"),
    "nasnet-a-large": (88.9, 23800.0, "Zoph et al. 2018, Table 2 (NASNet-A 6 @ 4032)"),
    "pnasnet-5-large": (86.1, 25000.0, "Liu et al. 2018 (PNAS), ImageNet large-setting table (PNASNet-5, N=4, F=216)"),
    "darts-v2-cifar": (3.3, None, "Liu et al. 2019 (DARTS), Table 1 (second order)"),
}


def measure(name: str) -> dict[str, float]:
    space = NASNetSpace()
    preset = space.preset(name)
    net = space.build(preset.arch, preset.macro).eval()
    total = sum(p.numel() for p in net.parameters())
    aux = sum(p.numel() for p in net.aux.parameters()) if net.aux is not None else 0
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, 3, preset.input_size, preset.input_size))
    return {"params": (total - aux) / 1e6, "params_aux": total / 1e6, "macs": counter.get_total_flops() / 2 / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    header = "| preset | input | params (M) | with aux (M) | published params (M) | MACs (M) | published MACs (M) |"
    print(header)
    print("|" + "---|" * 7)
    space = NASNetSpace()
    for name, (pub_params, pub_macs, _) in PUBLISHED.items():
        m = measure(name)
        size = space.preset(name).input_size
        pub = f"{pub_macs:,.0f}" if pub_macs is not None else "n/a"
        print(
            f"| {name} | {size} | {m['params']:.2f} | {m['params_aux']:.2f} | {pub_params} | {m['macs']:,.0f} | {pub} |"
        )
    print()
    for name, (_, _, source) in PUBLISHED.items():
        print(f"- {name}: {source}")


if __name__ == "__main__":
    main()
