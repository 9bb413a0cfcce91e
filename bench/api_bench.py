"""Scoring API throughput and latency: requests/s and p50/p95/p99 at 1, 8 and 32
concurrent clients, with same-run baselines.

Needs Kafka and Cassandra (`txmon infra up`). Starts ``txmon api --workers W`` on a free
loopback port with a champion (the registry's, else one trained here on planted data
with the default training settings, so the models have their real size), creates a key,
and drives ``POST /v1/score`` (no ingest: nothing is written) with keep-alive clients
(one asyncio process speaking minimal HTTP/1.1 on raw connections, far cheaper per request
than httpx) for ``--seconds`` per step. Baselines measured in the same
run:

- ``in-process score``: :meth:`Scorer.score` on one row (features, rules, both models,
  risk, reasons), no I/O: the floor of a request's work;
- ``in-process + Cassandra``: the same with the profile reads a request makes;
- ``/healthz``: the same server and clients with no work behind the route.

Then a paced step (``--rate`` requests/s, open loop over 32 connections) for the latency
at a fixed load. The client shares the machine's cores with the server and the stack:
its own cost is in every figure (compare /healthz). Each step also reports the CPU spent
per request by the server's processes, Cassandra and the client (``psutil``): on a shared
machine requests/s follow the neighbours' load, CPU per request much less.

    .venv/bin/python -m txmon.bench.api_bench                    # 2 workers, 10 s per step
    .venv/bin/python -m txmon.bench.api_bench --workers 1 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil

from txmon.bench.memory import stack_processes
from txmon.infra.cassandra_schema import apply_schema
from txmon.infra.process import wait_until
from txmon.infra.settings import load_settings
from txmon.ingestion.events import to_json, validate_event
from txmon.ingestion.simulate import SimulateOptions, simulator_for
from txmon.models.config import models_dir
from txmon.models.registry import Registry
from txmon.models.testing import planted_frame
from txmon.models.training import TrainingConfig, train_frame
from txmon.webapp.api.keys import create_key
from txmon.webapp.api.scorer import Profiles, Scorer
from txmon.webapp.api.store import ApiStore
from txmon.webapp.app import single_threaded_models

CONCURRENCY = (1, 8, 32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _events(n: int, seed: int = 7) -> list[bytes]:
    """``n`` live-clock simulated events as their wire JSON (valid for the contract's clock)."""

    sim = simulator_for(SimulateOptions(seed=seed, count=n, rate=None, n_customers=2_000, live=True, progress=False))
    now = datetime.now(UTC)
    return [to_json(item.event) for item in sim.generate(n) if item.event.event_time <= now]


def _registry(settings, tmp: Path) -> Path:
    """The configured registry if it has a champion, else a temporary one with a model
    trained here on planted data."""

    if Registry(models_dir()).champion() is not None:
        return models_dir()

    # The default model's sizes (up to 300 boosting rounds, 100 trees in the forest); no
    # hyperparameter search or seed spread, which change how long training takes, not scoring.
    config = TrainingConfig(tune=False, seed_spread=False)
    trained = train_frame(planted_frame(n=20_000, seed=3), config, data_source="api-bench planted")
    registry = Registry(tmp / "models")
    registry.promote(registry.register(trained.bundle, trained.metadata))
    return registry.root


def _quantiles(latencies_s: list[float]) -> tuple[float, float, float]:
    a = np.asarray(latencies_s) * 1000
    return tuple(float(np.percentile(a, q)) for q in (50, 95, 99))  # type: ignore[return-value]


def baseline_in_process(settings, registry: Path, events: list[bytes], seconds: float) -> list[dict]:
    single_threaded_models()  # as every API worker does
    scorer = Scorer(None, registry)
    scorer.ready()  # rules and champion loaded outside the timed loop, as a worker does at start
    parsed = [validate_event(e) for e in events[:500]]
    store = ApiStore(settings, timeout_s=5)
    rows = []
    try:
        for name, with_store in (("in-process score (1 row)", False), ("in-process + Cassandra reads", True)):
            latencies, i, end = [], 0, time.monotonic() + seconds
            while time.monotonic() < end:
                e = parsed[i % len(parsed)]
                i += 1
                start = time.perf_counter()
                profiles = (
                    store.profiles(e.payer.account_number, e.payee.account_number or e.payee.vpa)
                    if with_store
                    else Profiles()
                )
                scorer.score(e, profiles)
                latencies.append(time.perf_counter() - start)
            p50, p95, p99 = _quantiles(latencies)
            rows.append(
                {
                    "step": name,
                    "clients": 1,
                    "rps": len(latencies) / seconds,
                    "p50": p50,
                    "p95": p95,
                    "p99": p99,
                    "errors": 0,
                }
            )
    finally:
        store.close()
    return rows


class _Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for this
    bench: a request is pre-encoded bytes, an answer is read by its Content-Length. The
    client shares the server's two cores, so its cost per request is in every figure:
    httpx spent about a core at ~400 requests/s (its GET /healthz at 32 clients, where the
    server does no work, stopped there), which would cap what the bench can show."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, data: bytes) -> int:
        """Send one request, read the whole answer; its status code."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _request_bytes(host: str, port: int, path: str, headers: dict, body: bytes | None) -> bytes:
    lines = [f"{'GET' if body is None else 'POST'} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def _drive(
    url: str, headers: dict, bodies: list[bytes] | None, clients: int, seconds: float, rate: float | None = None
) -> dict:
    """``clients`` keep-alive connections for ``seconds``; closed loop, or open loop at
    ``rate`` requests/s (latency then counts from each request's scheduled time)."""

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = (
        [_request_bytes(host, port, parts.path, headers, None)]
        if bodies is None
        else [_request_bytes(host, port, parts.path, headers, b) for b in bodies]
    )
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    end = start + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        connection = _Connection(host, port)
        i = w
        sent = 0
        try:
            while True:
                scheduled = time.perf_counter()
                if rate is not None:
                    scheduled = start + (sent * clients + w) / rate
                    delay = scheduled - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if scheduled >= end or time.perf_counter() >= end:
                    return
                sent += 1
                try:
                    async with asyncio.timeout(30):
                        ok = await connection.request(requests[i % len(requests)]) == 200
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
                    # a timeout or a dropped connection counts, never stops the step
                    connection.close()
                    ok = False
                i += clients
                latencies.append(time.perf_counter() - scheduled)
                errors += not ok
        finally:
            connection.close()

    await asyncio.gather(*(worker(w) for w in range(clients)))
    elapsed = time.perf_counter() - start
    p50, p95, p99 = _quantiles(latencies)
    return {
        "rps": len(latencies) / elapsed,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "errors": errors,
        "requests": len(latencies),
    }


def _run(coro):
    """The bench client's event loop: uvloop where installed (uvicorn's own choice), it
    costs the client less per request than asyncio's."""
    try:
        # uvloop is optional (uvicorn's extra): without it the client runs on asyncio
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _serve(workers: int, port: int, registry: Path, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "TXMON_API__REGISTRY_ROOT": str(registry),
        "TXMON_API__RATE_PER_S": "1000000",
        "TXMON_API__BURST": "1000000",
    }
    txmon = Path(sys.executable).with_name("txmon")
    return subprocess.Popen(
        [str(txmon), "api", "--port", str(port), "--workers", str(workers)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def _wait_healthy(base: str, child: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    if wait_until(healthy, timeout, abort=lambda: child.poll() is not None):
        return
    if child.poll() is not None:
        raise SystemExit(f"txmon api exited:\n{log.read_text()[-3000:]}")
    raise SystemExit(f"txmon api not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _warm_up(url: str, headers: dict, events: list[bytes], timeout: float = 300) -> None:
    """Until 50 requests in a row succeed: every worker has loaded the rules and the
    champion (a worker loads them on its first request)."""

    streak = 0

    def fifty_in_a_row() -> bool:
        nonlocal streak
        try:  # a new connection each time, so that every worker gets some
            ok = httpx.post(url, content=events[streak], headers=headers, timeout=120).status_code == 200
        except httpx.TransportError:
            ok = False
        streak = streak + 1 if ok else 0
        return streak >= 50

    if not wait_until(fifty_in_a_row, timeout, interval=0):
        raise SystemExit(f"the API did not answer 50 requests in a row within {timeout:.0f} s")


class _CpuMeter:
    """CPU per request of each step by where it was spent: the server's processes (the
    ``txmon api`` supervisor and its workers), Cassandra, and this client. The machine is
    shared, so requests/s move with the neighbours' load; CPU per request mostly does not,
    and on 2 cores ``2000 / (all ms per request)`` is the most requests/s it could carry."""

    def __init__(self, settings, server_pid: int) -> None:
        self.server = psutil.Process(server_pid)
        self.cassandra = [p for name, procs in stack_processes(settings).items() if "cassandra" in name for p in procs]

    @staticmethod
    def _seconds(procs) -> float:
        total = 0.0
        for p in procs:
            try:
                c = p.cpu_times()
                total += c.user + c.system
            except psutil.Error:  # gone: its share is lost, not the step
                pass
        return total

    def measure(self, coro) -> dict:
        server = [self.server, *self.server.children(recursive=True)]
        before = (self._seconds(server), self._seconds(self.cassandra), time.process_time())
        row = _run(coro)
        after = (self._seconds(server), self._seconds(self.cassandra), time.process_time())
        n = max(row["requests"], 1)
        spent = [1000 * (b - a) / n for a, b in zip(before, after)]
        return {**row, "server_ms": spent[0], "cassandra_ms": spent[1], "client_ms": spent[2]}


def run(workers: int, seconds: float, rate: float, registry: Path | None = None) -> list[dict]:
    settings = load_settings()
    apply_schema(settings)
    tmp = Path(tempfile.mkdtemp(prefix="txmon-api-bench-"))
    registry = registry or _registry(settings, tmp)
    events = _events(4_000)
    store = ApiStore(settings, timeout_s=10)
    try:
        key, principal = create_key(store, "api-bench", ["score"])
    finally:
        store.close()
    rows = baseline_in_process(settings, registry, events, min(seconds, 5.0))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp / "api.log"
    child = _serve(workers, port, registry, log)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    try:
        _wait_healthy(base, child, log)
        _warm_up(f"{base}/v1/score", headers, events)
        cpu = _CpuMeter(settings, child.pid)
        for clients in CONCURRENCY:
            rows.append(
                {
                    "step": "GET /healthz",
                    "clients": clients,
                    **cpu.measure(_drive(f"{base}/healthz", {}, None, clients, seconds)),
                }
            )
            rows.append(
                {
                    "step": "POST /v1/score",
                    "clients": clients,
                    **cpu.measure(_drive(f"{base}/v1/score", headers, events, clients, seconds)),
                }
            )
        rows.append(
            {
                "step": f"POST /v1/score at {rate:g}/s",
                "clients": 32,
                **cpu.measure(_drive(f"{base}/v1/score", headers, events, 32, seconds, rate=rate)),
            }
        )
    finally:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
        _revoke(settings, principal.key_id)
    return rows


def _revoke(settings, key_id: str) -> None:
    store = ApiStore(settings, timeout_s=10)
    try:
        store.revoke_key(key_id)
    finally:
        store.close()


def format_table(rows: list[dict]) -> str:
    """The rows as a table; CPU ms per request (server, Cassandra, client) where measured."""
    lines = [
        "| step | clients | requests/s | p50 ms | p95 ms | p99 ms | errors | CPU ms/request: server, Cassandra, client |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        cpu = f"{r['server_ms']:.2f}, {r['cassandra_ms']:.2f}, {r['client_ms']:.2f}" if "server_ms" in r else "-"
        lines.append(
            f"| {r['step']} | {r['clients']} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p95']:.2f} | "
            f"{r['p99']:.2f} | {r['errors']} | {cpu} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="txmon api --workers (default 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per step (default 10)")
    parser.add_argument("--rate", type=float, default=500.0, help="paced step's requests/s (default 500)")
    parser.add_argument(
        "--registry",
        type=Path,
        help="model registry with a champion (default: the configured one if it has a champion, else one trained here)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    rows = run(args.workers, args.seconds, args.rate, args.registry)
    print(
        f"txmon api bench, {args.workers} worker(s), {args.seconds:g} s per step, "
        f"{started:%Y-%m-%d %H:%M} UTC, load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print(format_table(rows))
    by = {(r["step"], r["clients"]): r for r in rows}
    floor = by[("in-process score (1 row)", 1)]
    for clients in CONCURRENCY:
        score, health = by[("POST /v1/score", clients)], by[("GET /healthz", clients)]
        print(
            f"{clients:>2} clients: score / healthz requests/s {score['rps'] / health['rps']:.2f}; "
            f"score p50 / in-process p50 {score['p50'] / floor['p50']:.1f}x"
        )
        if "server_ms" in score:
            total = score["server_ms"] + score["cassandra_ms"] + score["client_ms"]
            print(
                f"{clients:>2} clients: {total:.2f} ms CPU per scored request (server {score['server_ms']:.2f}, "
                f"Cassandra {score['cassandra_ms']:.2f}, client {score['client_ms']:.2f}): "
                f"at most {1000 * (os.cpu_count() or 1) / total:,.0f} requests/s on {os.cpu_count()} cores"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
