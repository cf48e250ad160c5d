"""What is the least CPU a create + retrieve pair can cost a durable gateway on this machine?

    python -m bench.floor [--seconds 10] [--concurrency 64]

``bench.service`` measures ``reelgate serve``'s CPU per pair. This measures the floor under
it: the work no implementation of the same contract can skip, each piece done by the
libraries the service uses (or plain syscalls) with **none** of reelgate's code, and the CPU
the load generator and the upstream take for the same pairs. It answers "how far can the
service still go on these cores?" with figures instead of hope.

Per pair, the contract needs at least:

- **inbound**: two HTTP requests through uvicorn (uvloop + httptools, as ``serve`` runs it),
  answered by an ASGI app that only parses the JSON body and answers a fixed JSON object;
- **outbound**: three calls to the vendor (submit, status, download) on one aiohttp session;
- **store**: three committed writes of a job document (~1.5 KB) in SQLite, WAL,
  ``synchronous = NORMAL`` (the job before its vendor call, the accepted vendor id, the
  terminal state; the durability rules of docs/storage.md);
- **kept video**: one durable 1 KiB file (write, fsync, rename, directory fsync).

Each piece runs alone in a child process (the CPU is that process's user + system time); the
load generator and the upstream are the same as ``bench.service``'s. At the end it prints
the budget the service has at a pairs/s target on this machine's cores after the load
generator and upstream have had theirs, against the floor's sum.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import free_port, machine
from bench.service import UPSTREAM_KEY, cpu_s, process, run_load

#: a job document of the size the store writes (bytes of JSON)
DOCUMENT = json.dumps({"id": "v" * 32, "request": {"prompt": "a red fox in fresh snow " * 20},
                       "attempts": [{"provider": "railwail", "vendor_job": "x" * 24, "notes": "n" * 600}]})


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- inbound: uvicorn and the least an app can do ------------------------------------------------

async def minimal_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """Parse a POST's JSON body, answer a fixed object; a GET answers the same object."""
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if body:
        json.loads(body)
    answer = json.dumps({"id": "video_0123456789abcdef", "object": "video", "status": "queued"}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


# -- outbound: three vendor calls per pair -----------------------------------------------------

async def vendor_calls(upstream: str, seconds: float, concurrency: int) -> dict[str, float]:
    import aiohttp

    headers = {"Authorization": f"Bearer {UPSTREAM_KEY}", "Content-Type": "application/json"}
    body = json.dumps({"prompt": "a red fox in fresh snow", "model": "luma-ray-flash-2", "seconds": "5"})
    done = [0]
    stop_at = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < stop_at:
            async with session.post(f"{upstream}/api/v1/videos", data=body, headers=headers) as r:
                video = json.loads(await r.read())
            async with session.get(f"{upstream}/api/v1/videos/{video['id']}", headers=headers) as r:
                json.loads(await r.read())
            async with session.get(f"{upstream}/api/v1/videos/{video['id']}/content", headers=headers) as r:
                await r.read()
            done[0] += 1

    before = self_cpu_s()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return {"jobs": done[0], "cpu_s": self_cpu_s() - before}


# -- the store: three commits per job ------------------------------------------------------------

def store_writes(directory: Path, jobs: int) -> dict[str, float]:
    conn = sqlite3.connect(directory / "floor.db", isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, status TEXT, document TEXT)")
    before = self_cpu_s()
    for n in range(jobs):
        conn.execute("INSERT INTO jobs VALUES (?, 'queued', ?)", (str(n), DOCUMENT))
        conn.execute("UPDATE jobs SET status = 'submitted', document = ? WHERE id = ?", (DOCUMENT, str(n)))
        conn.execute("UPDATE jobs SET status = 'succeeded', document = ? WHERE id = ?", (DOCUMENT, str(n)))
    return {"jobs": jobs, "cpu_s": self_cpu_s() - before}


# -- the kept video: one durable file per job ----------------------------------------------------

def kept_files(directory: Path, jobs: int, threads: int = 8) -> dict[str, float]:
    videos = directory / "videos"
    videos.mkdir()
    lock = threading.Lock()

    def keep(n: int) -> None:
        temp, target = videos / f".part-{n}", videos / f"{n}.mp4"
        fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.write(fd, bytes(1024))
        os.fsync(fd)
        os.close(fd)
        os.replace(temp, target)
        with lock:  # one directory fsync at a time, as the service groups them
            dir_fd = os.open(videos, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(dir_fd)
            os.close(dir_fd)

    before = self_cpu_s()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(keep, range(jobs)))
    return {"jobs": jobs, "cpu_s": self_cpu_s() - before}


# -- the run ---------------------------------------------------------------------------------------

def child(piece: str, *argv: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench.floor", "--piece", piece, *argv],
                         check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--jobs", type=int, default=5000, help="jobs for the store and file pieces")
    parser.add_argument("--target", type=float, default=1000.0, help="pairs/s to budget for")
    args = parser.parse_args()
    print(f"{machine()}; {args.concurrency} concurrent, {args.seconds:g} s per load piece")
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        upstream_port = free_port()
        upstream = f"http://127.0.0.1:{upstream_port}"
        with process([sys.executable, "-m", "bench.service", "--upstream-port", str(upstream_port)],
                     f"{upstream}/_sandbox/stats") as upstream_proc:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            with process([sys.executable, "-m", "bench.floor", "--piece", "inbound", str(port)],
                         f"{url}/_sandbox/stats") as server:
                loader_before = children_cpu_s()
                pairs = run_load(url, "sk-floor", args, server.pid)  # the load generator is a waited-for child
                loader_s = children_cpu_s() - loader_before
            figures["load generator (2 requests)"] = loader_s * 1000 / max(int(pairs["all_pairs"]), 1)  # type: ignore[call-overload]
            figures["inbound: uvicorn + minimal app (2 requests)"] = float(pairs["cpu_ms_per_pair"])  # type: ignore[arg-type]
            upstream_before = sum(cpu_s(upstream_proc.pid).values())
            calls = child("outbound", upstream, str(args.seconds), str(args.concurrency))
            upstream_used = sum(cpu_s(upstream_proc.pid).values()) - upstream_before
            figures["upstream (3 calls)"] = upstream_used * 1000 / max(calls["jobs"], 1)
            figures["outbound: aiohttp (3 calls)"] = calls["cpu_s"] * 1000 / max(calls["jobs"], 1)
        store = child("store", tmp_dir, str(args.jobs))
        figures["store: SQLite WAL (3 commits)"] = store["cpu_s"] * 1000 / store["jobs"]
        files = child("files", tmp_dir, str(args.jobs))
        figures["kept video: durable 1 KiB file"] = files["cpu_s"] * 1000 / files["jobs"]
    for name, ms in figures.items():
        print(f"{name:<46} {ms:6.3f} ms CPU per pair")
    others = figures["load generator (2 requests)"] + figures["upstream (3 calls)"]
    floor = sum(ms for name, ms in figures.items() if name not in ("load generator (2 requests)", "upstream (3 calls)"))
    budget = (os.cpu_count() or 1) * 1000 / args.target - others
    print(f"service floor (inbound + outbound + store + file): {floor:.3f} ms per pair")
    print(f"at {args.target:g} pairs/s on {os.cpu_count()} CPUs the service has {budget:.3f} ms per pair "
          f"after the load generator and the upstream ({others:.3f} ms)")
    print(f"most pairs/s these cores allow with the floor alone: {(os.cpu_count() or 1) * 1000 / (floor + others):.0f}")


if __name__ == "__main__":
    if "--piece" in sys.argv:
        piece, *rest = sys.argv[sys.argv.index("--piece") + 1:]
        if piece == "inbound":
            import uvicorn

            uvicorn.run(minimal_app, host="127.0.0.1", port=int(rest[0]), log_level="warning", access_log=False,
                        loop="auto", http="auto")
        elif piece == "outbound":
            import uvloop

            print(json.dumps(uvloop.run(vendor_calls(rest[0], float(rest[1]), int(rest[2])))))
        elif piece == "store":
            print(json.dumps(store_writes(Path(rest[0]), int(rest[1]))))
        else:
            print(json.dumps(kept_files(Path(rest[0]), int(rest[1]))))
    else:
        main()
