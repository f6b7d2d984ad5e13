"""The main job through the service: start `nas up`, submit a search with the SDK, follow it, show the result.

    python examples/service_demo.py [SPEC] [--data-dir DIR]

Uses only the embedded defaults (SQLite, an in-process Ray on 127.0.0.1, built-in data). The trained winner is
downloaded through the API and loaded back with ``nas.load``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import nas
from api.launcher import ServiceProcess
from nas.arch import Architecture
from nas.client import Client

console = Console()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="examples/digits-spos.yaml")
    parser.add_argument("--data-dir", default="runs/service", help="the service's database, artifacts and token")
    parser.add_argument("--output", default="runs/demo", help="where the trained model is downloaded")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    console.print(f"starting the service (data in {args.data_dir}) ...")
    with ServiceProcess(args.data_dir) as service:
        console.print(f"service ready at {service.url} after {time.perf_counter() - started:.1f} s")
        with Client(service.url, service.token) as client:
            search = client.submit(Path(args.spec))
            console.print(f"submitted {args.spec} as search [bold]{search.id}[/bold]")
            info = search.wait(progress=True)
            best = search.best()
            candidates = search.candidates(limit=5)
            model_dir = search.download(args.output)
    model = nas.load(model_dir)
    params = sum(p.numel() for p in model.parameters())

    table = Table(title=f"search {info.id}: {info.status} in {info.result.elapsed_s:.0f} s" if info.result else "")
    for col in ("rank", "architecture", "search acc", "params"):
        table.add_column(col)
    for i, c in enumerate(candidates, start=1):
        acc = f"{c.accuracy:.3f}" if c.accuracy is not None else "-"
        table.add_row(str(i), c.arch_hash, acc, f"{c.params:,.0f}" if c.params else "-")
    console.print(table)
    metrics = best.metrics
    console.print(
        f"winner {Architecture.model_validate(best.arch).hash}: "
        f"test accuracy {metrics.get('test_accuracy', float('nan')):.4f}, {metrics.get('params', 0):,.0f} params, "
        f"{metrics.get('macs', 0):,.0f} MACs"
    )
    console.print(f"trained model downloaded to {model_dir} and loaded with nas.load ({params:,} parameters)")
    console.print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
