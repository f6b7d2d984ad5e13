"""``nas worker``: join this machine to a Ray cluster as a worker node (runs search runners and trials)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer


def ray_start_command(address: str, num_cpus: int | None, num_gpus: int | None, block: bool) -> list[str]:
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    cmd = [ray, "start", f"--address={address}"]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    if num_gpus is not None:
        cmd.append(f"--num-gpus={num_gpus}")
    if block:
        cmd.append("--block")
    return cmd


def register(app: typer.Typer) -> None:
    from nas.cli import user_errors
    from nas.errors import InvalidInput

    @app.command()
    @user_errors
    def worker(
        address: Annotated[str | None, typer.Option(help="Ray head HOST:PORT (default NAS_RAY_ADDRESS)")] = None,
        num_cpus: Annotated[int | None, typer.Option(min=1, help="CPUs to offer (default: all)")] = None,
        num_gpus: Annotated[int | None, typer.Option(min=0, help="GPUs to offer (default: all)")] = None,
        block: Annotated[bool, typer.Option(help="stay in the foreground until stopped")] = True,
    ) -> None:
        """Join this machine to the Ray cluster of a nas-service deployment."""
        address = address or os.environ.get("NAS_RAY_ADDRESS")
        if not address:
            raise InvalidInput("address", "give --address HOST:PORT of the Ray head (or set NAS_RAY_ADDRESS)")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidInput("address", f"{address!r} is not HOST:PORT")
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        raise typer.Exit(subprocess.call(ray_start_command(address, num_cpus, num_gpus, block), env=env))
