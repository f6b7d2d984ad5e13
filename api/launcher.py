"""Start ``nas up`` as a child process and wait until it is ready (the demo, tests and benchmarks use it)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """The embedded service in a child process: ``with ServiceProcess(data_dir) as svc: Client(svc.url, svc.token)``."""

    def __init__(self, data_dir: str | Path, *, port: int | None = None, env: dict[str, str] | None = None,
                 log_file: str | Path | None = None, args: list[str] | None = None) -> None:  # fmt: skip
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.env = env or {}
        self.log_path = Path(log_file) if log_file else self.data_dir / "controller.log"
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def start(self, timeout: float = 120.0) -> ServiceProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "NAS_DATA_DIR": str(self.data_dir), "NAS_PORT": str(self.port), **self.env}
        env.pop("NAS_URL", None)
        cmd = [sys.executable, "-m", "nas.cli", "up", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"`nas up` exited with code {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the service at {self.url} was not ready after {timeout:.0f} s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL the controller, as a crash would; then clear what is left of its process group."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        self.proc.wait(timeout=30)
        time.sleep(1.0)  # the in-process Ray notices its driver is gone and stops by itself
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
