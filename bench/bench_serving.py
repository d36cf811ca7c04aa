"""Serving over HTTP: requests/s of the nested customers query under gunicorn, 1 and 2 workers.

The data set and query are bench_graphql's (100 customers with 5 to 8 interactions each on
PostgreSQL; customers(first: 100) x interactions(first: 5), about 60 kB of JSON). The
Rapport side is `gunicorn -c python:core.gunicorn_conf` (what `rapport serve
--production` runs: preloaded app, sync workers, JSON access log) with the API plugin;
the baseline is bench_graphql's hand-written route (same API-key check, two SQLAlchemy
Core queries, jsonify) served as its own gunicorn service with the same configuration
and worker count. Both answers are compared once before timing.

The load comes from a separate process: CONCURRENCY threads, each sending one request
at a time on a new connection (sync workers close it after each answer), for SECONDS per
window; windows alternate Rapport / baseline ROUNDS times. Figures are requests/s and
latency percentiles over all windows of a side, and the server's CPU time (master and
workers, user + system) per request, which other load on the machine disturbs less than
the throughput. The load generator shares the machine's 2 cores with the servers and
PostgreSQL, as a co-located client would.

    python -m bench serving                      # defaults
    python -m bench serving -- --seconds 10 --rounds 3 --concurrency 4
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import bench_graphql, common

NAME = "serving"
ROOT = Path(__file__).resolve().parents[1]
SECONDS = float(os.environ.get("RAPPORT_BENCH_SECONDS", "5"))
ROUNDS = 2
CONCURRENCY = 4
WORKERS = (1, 2)


def baseline_app() -> Any:
    """The baseline service's WSGI app (gunicorn calls this factory)."""
    from core import create_app

    app = create_app()
    bench_graphql.add_baseline_routes(app)
    return app


# --- Load generator (runs in its own process) -----------------------------------------------


def _worker(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str],
            deadline: float, out: list[Any]) -> None:
    latencies: list[float] = []
    errors = 0
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            connection.close()
            ok = response.status == 200
        except OSError:
            ok = False
        if ok:
            latencies.append(time.perf_counter() - started)
        else:
            errors += 1
    out.append((latencies, errors))


def _load(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str],
          seconds: float, concurrency: int, queue: Any) -> None:
    deadline = time.perf_counter() + seconds
    out: list[Any] = []
    threads = [threading.Thread(target=_worker,
                                args=(port, method, path, body, headers, deadline, out))
               for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    queue.put(([lat for lats, _ in out for lat in lats], sum(e for _, e in out), elapsed))


def generate_load(port: int, method: str, path: str, body: bytes | None,
                  headers: dict[str, str], seconds: float, concurrency: int
                  ) -> tuple[list[float], int, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_load, args=(port, method, path, body, headers, seconds,
                                                  concurrency, queue))
    process.start()
    result = queue.get(timeout=seconds + 120)
    process.join(timeout=30)
    return result  # type: ignore[no-any-return]


# --- Servers --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A gunicorn with core/gunicorn_conf.py on a free port; output to a file."""

    def __init__(self, env: dict[str, str], workers: int, log_dir: Path, label: str,
                 app: str | None = None):
        self.port = _free_port()
        self.log = open(log_dir / f"{label}-{workers}.log", "w")  # noqa: SIM115
        args = [sys.executable, "-m", "gunicorn", "--config", "python:core.gunicorn_conf"]
        if app:
            args.append(app)
        self.process = subprocess.Popen(
            args, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**env, "RAPPORT_WORKERS": str(workers),
                 "RAPPORT_BIND": f"127.0.0.1:{self.port}",
                 "PROMETHEUS_MULTIPROC_DIR": str(log_dir / f"metrics-{label}-{workers}")})
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn ({label}) did not start: see {self.log.name}")
            time.sleep(0.1)

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]
                ) -> Any:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        assert response.status == 200, data[:500]
        return json.loads(data)

    def pids(self) -> list[int]:
        pid = self.process.pid
        return [pid, *(int(c) for c in
                       Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]

    def cpu_seconds(self) -> float:
        """CPU time used so far by the master and its workers (user + system)."""
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def memory_mb(self) -> tuple[float, float, float]:
        """(master RSS, mean worker RSS, mean worker private memory) in MB: what a worker
        does not share with the master (copy-on-write pages it wrote, its own heap)."""

        def rollup(pid: int) -> dict[str, float]:
            fields = {}
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
                name, value = line.split(":", 1)
                fields[name] = float(value.split()[0]) / 1024
            return fields

        master, *children = self.pids()
        workers = [rollup(c) for c in children]
        return (rollup(master)["Rss"], statistics.mean(w["Rss"] for w in workers),
                statistics.mean(w["Private_Clean"] + w["Private_Dirty"] for w in workers))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench serving")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="per window")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    args = parser.parse_args(argv if argv is not None else [])
    print(__doc__.strip().splitlines()[0])
    print(f"{bench_graphql.CUSTOMERS} customers, query customers(first: "
          f"{bench_graphql.PAGE}) x interactions(first: {bench_graphql.NESTED}); "
          f"{args.concurrency} client threads in a separate process; {args.rounds} x "
          f"{args.seconds:g} s windows per side and worker count, alternating.\n")
    rows = []
    with common.fresh_database(NAME) as url, tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        config = {"RAPPORT_INSTANCE_PATH": str(scratch_dir / "instance")}
        app = common.make_app(url, **config)
        try:
            bench_graphql.seed(app)
            secret = common.admin_key(app)
        finally:
            common.dispose(app)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("RAPPORT_") and k not in ("WEB_CONCURRENCY", "PORT")}
        env.update({"RAPPORT_ENV": "test", "RAPPORT_DATABASE_URL": url, "RAPPORT_PLUGINS": "",
                    "RAPPORT_LOG_FORMAT": "json", "RAPPORT_RATE_LIMIT": "10000000/minute",
                    **config})
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        graphql_body = json.dumps({"query": bench_graphql.QUERY}).encode()
        cases = {"rapport": ("POST", "/graphql", graphql_body, None),
                 "baseline": ("GET", "/bench/customers", None,
                              "bench.bench_serving:baseline_app()")}
        memory: dict[int, tuple[float, float, float]] = {}
        for workers in WORKERS:
            servers = {side: Server(env, workers, scratch_dir, side, app=target)
                       for side, (_, _, _, target) in cases.items()}
            try:
                answers = {side: servers[side].request(method, path, body, headers)
                           for side, (method, path, body, _) in cases.items()}
                assert "errors" not in answers["rapport"], answers["rapport"]["errors"]
                assert answers["rapport"] == answers["baseline"], \
                    "GraphQL and the hand-written endpoint disagree"
                results: dict[str, tuple[list[float], int, float]] = {
                    side: ([], 0, 0.0) for side in cases}
                cpu = dict.fromkeys(cases, 0.0)
                for side, (method, path, body, _) in cases.items():  # warm every worker up
                    generate_load(servers[side].port, method, path, body, headers, 1.0,
                                  args.concurrency)
                for _ in range(args.rounds):
                    for side, (method, path, body, _) in cases.items():
                        cpu_before = servers[side].cpu_seconds()
                        lat, err, elapsed = generate_load(
                            servers[side].port, method, path, body, headers, args.seconds,
                            args.concurrency)
                        cpu[side] += servers[side].cpu_seconds() - cpu_before
                        done = results[side]
                        results[side] = (done[0] + lat, done[1] + err, done[2] + elapsed)
                memory[workers] = servers["rapport"].memory_mb()
            finally:
                for server in servers.values():
                    server.stop()
            rps = {side: len(lat) / elapsed for side, (lat, _, elapsed) in results.items()}
            for side, (lat, errors, _) in results.items():
                rows.append([workers, side, rps[side], statistics.median(lat) * 1000,
                             _percentile(lat, 0.99) * 1000, cpu[side] * 1000 / len(lat),
                             len(lat), errors])
            rows.append([workers, "ratio rapport/baseline",
                         common.ratio(rps["rapport"], rps["baseline"]), "", "", "", "", ""])
    common.print_table(["workers", "server", "req/s", "p50 ms", "p99 ms", "CPU ms/req",
                        "requests", "errors"], rows)
    common.print_table(["workers", "master RSS MB", "worker RSS MB", "worker private MB"],
                       [[w, *m] for w, m in memory.items()],
                       title="Memory of the Rapport server after the load (preloaded app, "
                             "collector frozen before fork):")
    by = {(r[0], r[1]): r[2] for r in rows}
    for side in cases:
        print(f"{side}: 2 workers / 1 worker = "
              f"{common.ratio(by[(2, side)], by[(1, side)]):.2f}x")


if __name__ == "__main__":
    main()
