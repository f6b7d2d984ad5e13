"""`nas up` and `nas worker`: refusals that need no running service, and the command a worker runs."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from nas.cli import app
from workers.cli import ray_start_command

runner = CliRunner()


def test_up_refuses_no_auth_on_a_public_address(tmp_path) -> None:
    result = runner.invoke(app, ["up", "--host", "0.0.0.0", "--no-auth", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "auth" in result.output and "loopback" in result.output
    assert not any(tmp_path.iterdir())  # nothing was created


def test_up_refuses_a_port_in_use(tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["up", "--port", str(port), "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "port" in result.output and "in use" in result.output
    assert not any(tmp_path.iterdir())


def test_worker_needs_an_address(monkeypatch) -> None:
    monkeypatch.delenv("NAS_RAY_ADDRESS", raising=False)
    result = runner.invoke(app, ["worker"])
    assert result.exit_code == 2 and "address" in result.output
    result = runner.invoke(app, ["worker", "--address", "no-port-here"])
    assert result.exit_code == 2 and "HOST:PORT" in result.output


def test_worker_joins_with_ray_start() -> None:
    cmd = ray_start_command("head:6380", 4, 1, block=True)
    assert cmd[0].endswith("ray") and cmd[1:] == [
        "start",
        "--address=head:6380",
        "--num-cpus=4",
        "--num-gpus=1",
        "--block",
    ]
