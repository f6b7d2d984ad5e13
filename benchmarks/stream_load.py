"""Open event streams against the rest of the API: one user holds many streams, another user's requests stay fast.

    python benchmarks/stream_load.py [--streams 200] [--requests 300]

The API runs as `nas up --no-scheduler` in a child process (SQLite, loopback). User "holder" opens ``--streams``
server-sent event streams on one queued search (which therefore never ends) and keeps them open; meanwhile user
"other" sends ``--requests`` sequential GET /api/v1/me, whose latencies are reported (p50/p99, ms) as JSON with the
server's CPU share meanwhile. The streams share one database poll loop (api/streams.py), whatever their number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.launcher import ServiceProcess
from benchmarks.service_load import SPEC, cpu_seconds, percentile
from service.store import Database, repo


def users(db_url: str) -> dict[str, str]:
    db = Database(db_url)
    try:
        with db.session() as s:
            return {name: repo.create_token(s, repo.create_user(s, name)) for name in ("holder", "other")}
    finally:
        db.dispose()


async def measure(url: str, tokens: dict[str, str], streams: int, requests: int) -> dict[str, Any]:
    holder = {"Authorization": f"Bearer {tokens['holder']}"}
    other = {"Authorization": f"Bearer {tokens['other']}"}
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        r = await client.post("/api/v1/searches", json={"spec": SPEC}, headers=holder)
        r.raise_for_status()
        stream_url = f"/api/v1/searches/{r.json()['id']}/events/stream"

        opened = 0
        ready = asyncio.Event()
        if streams == 0:  # the baseline: the same requests with no stream open
            ready.set()
        stop = asyncio.Event()

        async def hold() -> None:
            nonlocal opened
            async with client.stream("GET", stream_url, headers=holder) as resp:
                resp.raise_for_status()
                opened += 1
                if opened == streams:
                    ready.set()
                await stop.wait()

        t = time.perf_counter()
        holders = [asyncio.create_task(hold()) for _ in range(streams)]
        await asyncio.wait_for(ready.wait(), timeout=120)
        open_s = time.perf_counter() - t
        await asyncio.sleep(1.0)  # let the streams settle into their steady state

        latencies = []
        for _ in range(requests):
            t = time.perf_counter()
            r = await client.get("/api/v1/me", headers=other)
            latencies.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
        stop.set()
        await asyncio.gather(*holders)
    return {
        "streams": streams,
        "open_all_s": round(open_s, 3),
        "requests": requests,
        "me_p50_ms": round(statistics.median(latencies), 2),
        "me_p99_ms": round(percentile(latencies, 99), 2),
        "me_max_ms": round(max(latencies), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--requests", type=int, default=300)
    args = p.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="nas-bench-streams-"))
    env = {"NAS_MAX_STREAMS_PER_USER": str(max(1, args.streams)), "NAS_MAX_STREAMS": str(args.streams + 10)}
    with ServiceProcess(data_dir, env=env, args=["--no-scheduler"]) as svc:
        assert svc.proc is not None
        tokens = users(f"sqlite:///{data_dir / 'nas.db'}")
        cpu = cpu_seconds(svc.proc.pid)
        t = time.perf_counter()
        out = asyncio.run(measure(svc.url, tokens, args.streams, args.requests))
        wall = time.perf_counter() - t
        out["server_cpu_share"] = round((cpu_seconds(svc.proc.pid) - cpu) / wall, 3)  # CPU-seconds per second
    out["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
