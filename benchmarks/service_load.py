"""Load on the REST API over loopback: submission throughput, listing latency under 50 clients, submit-to-running.

    python benchmarks/service_load.py [--backend sqlite|postgresql|both] [--stored 10000] [--clients 50]
                                      [--parts submit,list,running]

Each backend gets a fresh database (a SQLite file, or a new schema in the PostgreSQL of NAS_TEST_POSTGRES_URL).
The API runs as `nas up` in a child process (one uvicorn worker), the load comes from httpx in this process.
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
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.launcher import ServiceProcess
from service.store import Database, repo, upgrade

SPEC: dict[str, Any] = {
    "name": "bench",
    "space": {"name": "nasnet", "macro": {"cells_per_stack": 1, "filters": 8}},
    "dataset": {"name": "digits", "image_size": 8, "limit": 200},
    "strategy": {"name": "random", "options": {}},
    "final": {"enabled": False},
}
PG_ENV = "NAS_TEST_POSTGRES_URL"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc): the server's cost, whatever else loads the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def database_url(backend: str, data_dir: Path) -> tuple[str | None, Any]:
    if backend == "sqlite":
        return None, lambda: None
    from sqlalchemy import create_engine, text

    base = os.environ.get(PG_ENV, "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    schema = f"nas_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", drop


def seed(url: str, stored: int) -> None:
    """Store ``stored`` more finished searches of the admin directly (seeding is not what is measured)."""
    db = Database(url)
    upgrade(db.engine)
    with db.session() as s:
        admin = repo.get_user(s, "admin")
        for start in range(0, stored, 1000):
            for i in range(start, min(stored, start + 1000)):
                row, _ = repo.create_search(s, admin, {**SPEC, "name": f"seed-{i}"})
                row.status = "succeeded"
            s.flush()
    db.dispose()


async def timed(client: httpx.AsyncClient, method: str, path: str, **kw: Any) -> tuple[float, int]:
    """(seconds, status); a dropped connection (e.g. a kept-alive one the server closed meanwhile) is status 0,
    counted among the errors."""
    t = time.perf_counter()
    try:
        r = await client.request(method, path, **kw)
    except httpx.TransportError:
        return time.perf_counter() - t, 0
    return time.perf_counter() - t, r.status_code


async def submissions(url: str, token: str, n: int, concurrency: int) -> dict[str, float]:
    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as client:

        async def one(i: int) -> tuple[float, int]:
            async with sem:
                key = uuid.uuid4().hex
                return await timed(client, "POST", "/api/v1/searches", json={"spec": {**SPEC, "name": f"s{i}"}},
                                   headers={"Idempotency-Key": key})  # fmt: skip

        t = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t
    lat = [r[0] * 1000 for r in results]
    return {
        "submissions": n,
        "errors": sum(r[1] != 201 for r in results),
        "per_s": n / wall,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
    }


async def listing(url: str, token: str, clients: int, per_client: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as client:

        async def one_client(c: int) -> list[tuple[float, int]]:
            out = []
            for i in range(per_client):
                offset = ((c * per_client + i) * 50) % 9_950
                out.append(await timed(client, "GET", f"/api/v1/searches?limit=50&offset={offset}"))
            return out

        t = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(one_client(c) for c in range(clients))) for r in rs]
        wall = time.perf_counter() - t
    lat = [r[0] * 1000 for r in results]
    return {
        "requests": len(results),
        "errors": sum(r[1] != 200 for r in results),
        "per_s": len(results) / wall,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
    }


def submit_to_running(url: str, token: str, repeats: int) -> dict[str, float]:
    """Time from POST to status 'running' (claimed) and to the runner's first event (its Ray actor is up)."""
    headers = {"Authorization": f"Bearer {token}"}
    claimed, started = [], []
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for i in range(repeats):
            t = time.perf_counter()
            sid = client.post("/api/v1/searches", json={"spec": {**SPEC, "name": f"latency-{i}"}}).json()["id"]
            t_claim = None
            while True:
                info = client.get(f"/api/v1/searches/{sid}").json()
                if t_claim is None and info["status"] != "queued":
                    t_claim = time.perf_counter() - t
                if client.get(f"/api/v1/searches/{sid}/events?limit=1").json():
                    break
                time.sleep(0.01)
            claimed.append(t_claim * 1000)
            started.append((time.perf_counter() - t) * 1000)
            client.post(f"/api/v1/searches/{sid}/cancel")
            while client.get(f"/api/v1/searches/{sid}").json()["status"] not in ("cancelled", "succeeded", "failed"):
                time.sleep(0.05)
    return {
        "claimed_median_ms": statistics.median(claimed),
        "claimed_max_ms": max(claimed),
        "runner_median_ms": statistics.median(started),
        "runner_max_ms": max(started),
    }


PARTS = ("submit", "list", "running")


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {"NAS_SCHEDULER_INTERVAL_S": "0.2", "NAS_HEARTBEAT_S": "1", "NAS_LOCAL_CPUS": "2"}
    out: dict[str, Any] = {"backend": backend}
    # 1. the API alone (no scheduler): submissions, then listing over the stored searches
    if "submit" in args.parts or "list" in args.parts:
        data_dir = Path(tempfile.mkdtemp(prefix=f"nas-bench-{backend}-"))
        url, drop = database_url(backend, data_dir)
        try:
            with ServiceProcess(data_dir, env={**env, **({"NAS_DATABASE_URL": url} if url else {})},
                                args=["--no-scheduler"]) as svc:  # fmt: skip
                assert svc.proc is not None
                submitted = 0
                if "submit" in args.parts:
                    cpu = cpu_seconds(svc.proc.pid)
                    sub = asyncio.run(submissions(svc.url, svc.token, args.submissions, args.concurrency))
                    sub["server_cpu_ms"] = (cpu_seconds(svc.proc.pid) - cpu) * 1000 / args.submissions
                    out["submit"] = sub
                    submitted = args.submissions
                if "list" in args.parts:
                    t = time.perf_counter()
                    seed(url or f"sqlite:///{data_dir / 'nas.db'}", args.stored - submitted)
                    out["seed_s"] = time.perf_counter() - t
                    cpu = cpu_seconds(svc.proc.pid)
                    lst = asyncio.run(listing(svc.url, svc.token, args.clients, args.per_client))
                    lst["server_cpu_ms"] = (cpu_seconds(svc.proc.pid) - cpu) * 1000 / lst["requests"]
                    out["list"] = lst
        finally:
            drop()
    # 2. the whole controller on an empty queue: submit-to-running
    if "running" in args.parts:
        data_dir = Path(tempfile.mkdtemp(prefix=f"nas-bench-{backend}-"))
        url, drop = database_url(backend, data_dir)
        try:
            with ServiceProcess(data_dir, env={**env, **({"NAS_DATABASE_URL": url} if url else {})}) as svc:
                out["submit_to_running"] = submit_to_running(svc.url, svc.token, args.repeats)
        finally:
            drop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--submissions", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--stored", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--per-client", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    if unknown := set(args.parts) - set(PARTS):
        p.error(f"--parts: unknown {', '.join(sorted(unknown))}; allowed: {', '.join(PARTS)}")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d"),
        "runs": [run_backend(b, args) for b in backends],
    }
    for r in results["runs"]:
        if s := r.get("submit"):
            print(f"[{r['backend']}] submit: {s['per_s']:.0f}/s (p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, "
                  f"{s['errors']} errors; server CPU {s['server_cpu_ms']:.1f} ms per submission)")  # fmt: skip
        if ls := r.get("list"):
            print(f"[{r['backend']}] list over {args.stored} stored, {args.clients} clients: {ls['per_s']:.0f} "
                  f"req/s, p50 {ls['p50_ms']:.1f} ms, p99 {ls['p99_ms']:.1f} ms, {ls['errors']} errors; "
                  f"server CPU {ls['server_cpu_ms']:.2f} ms per request")  # fmt: skip
        if lat := r.get("submit_to_running"):
            print(f"[{r['backend']}] submit->running (claimed): median {lat['claimed_median_ms']:.0f} ms, "
                  f"max {lat['claimed_max_ms']:.0f} ms; submit->runner up: median {lat['runner_median_ms']:.0f} "
                  f"ms, max {lat['runner_max_ms']:.0f} ms")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
