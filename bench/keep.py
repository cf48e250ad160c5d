"""What keeping a finished video costs: ``LocalStorage.put`` and ``mirror`` of a small video.

    PYTHONPATH=. .venv/bin/python bench/keep.py [--videos 2000] [--concurrency 64]
                                                [--rounds 3] [--baseline DIR] [--kinds put mirror]
                                                [--file-threads N [N ...]] [--compare-rounds]

``reelgate serve`` keeps every finished video: it downloads it from the vendor
(``gateway.storage.mirror``) and writes it into result storage (``LocalStorage.put``:
a private temporary file, fsynced, renamed into place). In ``bench.service`` each video
is 1 KiB, so the cost is per file, not per byte. Two measurements, each ``--videos``
files with ``--concurrency`` at a time (64: ``bench.service``'s callers), into a fresh
directory:

- ``put``: ``LocalStorage.put(key, <1 KiB>)``;
- ``mirror``: ``mirror()`` of the same 1 KiB MP4 from ``bench.service``'s upstream (an
  aiohttp server in its own process) through the gateway's client, into ``LocalStorage``;
  the request built as the service's adapters build it (``URLPrefix.get``, the provider's
  headers object), so none of httpx's URL parsing is counted that the service does not pay.

It prints CPU microseconds per video (``getrusage`` of this process, every thread: the event
loop and the worker threads doing the file I/O), split into user and kernel time (creating a file and
fsyncing it are kernel work, most of a small put on this machine), and wall milliseconds
per video. ``--baseline DIR``
(``git archive <commit> | tar -x -C DIR``) runs the same in a child process on that tree's
``gateway``, alternating round by round (which side goes first alternates too), and prints
the CPU ratio baseline / this tree, user and kernel time apart. ``--file-threads 2 8``
instead runs this tree with each count of file-writing threads, side by side;
``--compare-rounds`` runs this tree with the per-file thread path (``keeper.syncfs`` off, as
on a kernel before 5.8) against its rounds (``gateway/storage/keeper.py``). ``kthreads`` is
the CPU of every kernel thread of the machine meanwhile (``syncfs`` has the flusher
kworkers write the pages it waits for, so their CPU is part of its cost; other programs'
I/O shows up there too, so read it as a comparison between alternating sides).

Fairness on ext4 without a journal (this machine's root): allocating an inode skips every
free inode of the block group deleted in the last 60-300 s (``recently_deleted``), so a
directory of files deleted just before makes the next run's creates dearer. Every run
writes into its own directory under one parent (``REELGATE_BENCH_TMP`` or the system's),
and nothing is deleted until the last run is done.
Run as a script (not ``-m``) so the child can import another tree's ``gateway``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

import httpx

HERE = Path(__file__).resolve().parent.parent
#: the same 1 KiB MP4 as ``bench.service``'s upstream serves
FAKE_MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(1000)


async def measure(kind: str, videos: int, concurrency: int, upstream: str, root: Path) -> dict[str, float]:
    from gateway.storage import LocalStorage, atomic_file, mirror
    from gateway.transport import URLPrefix, make_client

    if threads := os.environ.get("REELGATE_BENCH_FILE_THREADS"):
        atomic_file.FILE_THREADS = int(threads)  # read when the pool starts, at the first write
    if os.environ.get("REELGATE_BENCH_NO_ROUNDS"):
        from gateway.storage import keeper
        keeper.syncfs = None
    client = make_client()
    # ``root`` is deleted by the parent once every run is done (see the module's note)
    storage = LocalStorage(root / "videos")
    gate = asyncio.Semaphore(concurrency)
    # the request as the service's adapters build it (``URLPrefix.get`` with the provider's
    # own headers object), not an ``httpx.Request`` parsing its URL string every time
    urls = URLPrefix(f"{upstream}/v1")
    headers = httpx.Headers({"Authorization": "Bearer bench", "Accept": "application/binary"})

    async def one(n: int) -> None:
        async with gate:
            key = f"jobs/job_{n:08d}.mp4"
            if kind == "put":
                await storage.put(key, FAKE_MP4, "video/mp4")
            else:
                request = urls.get(f"{upstream}/v1/videos/v{n}/content", headers)
                await mirror(client, request, storage, key, provider="bench")

    await asyncio.gather(*(one(n) for n in range(min(50, videos))))  # warm: connections, directory
    # getrusage: microseconds (os.times counts 10 ms ticks: 5 us per video at 2000 videos)
    before, wall, kernel_threads = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), kthreads_cpu()
    await asyncio.gather(*(one(n) for n in range(50, 50 + videos)))
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - wall
    kernel_threads = kthreads_cpu() - kernel_threads
    await client.aclose()
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"cpu_us": (user + system) / videos * 1e6, "user_us": user / videos * 1e6,
            "sys_us": system / videos * 1e6, "wall_ms": wall / videos * 1e3,
            "kthreads_us": kernel_threads / videos * 1e6}


def kthreads_cpu() -> float:
    """CPU seconds of every kernel thread (children of kthreadd, pid 2) so far; 0 off Linux."""
    total = 0
    for pid in os.listdir("/proc") if os.path.isdir("/proc/2") else ():
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == "2":
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def child(side: Side, kind: str, args: argparse.Namespace, upstream: str, root: Path) -> dict[str, float]:
    # imported here, not at the top: a child runs this file on another tree's sources
    from bench.common import in_tree

    env = dict(os.environ)
    if side.threads is not None:
        env["REELGATE_BENCH_FILE_THREADS"] = str(side.threads)
    if not side.rounds:
        env["REELGATE_BENCH_NO_ROUNDS"] = "1"
    out = in_tree(side.tree or HERE, [sys.executable, __file__, "--child", kind, str(args.videos),
                                      str(args.concurrency), upstream, str(root)], env)
    return json.loads(out)  # type: ignore[no-any-return]


class Side(NamedTuple):
    name: str
    #: another source tree (``None``: this one)
    tree: str | None = None
    #: ``atomic_file.FILE_THREADS`` for the run (``None``: the tree's own)
    threads: int | None = None
    #: small files in the keeper's rounds (``False``: the per-file thread path)
    rounds: bool = True


def sides_of(args: argparse.Namespace) -> list[Side]:
    """Baseline and this tree, or this tree with each ``--file-threads`` count; the first is
    the one the ratios divide by the second."""
    threads = args.file_threads or [None]
    if args.compare_rounds:
        return [Side("per-file", None, threads[0], False), Side("rounds", None, threads[0])]
    if len(threads) > 1:
        return [Side(f"{n} threads", None, n) for n in threads]
    if args.baseline:
        return [Side("baseline", args.baseline, threads[0]), Side("this tree", None, threads[0])]
    return [Side("this tree", None, threads[0])]


def main() -> None:
    from bench.common import free_port, in_turn  # here, not at the top: see child()

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", metavar="DIR")
    parser.add_argument("--kinds", nargs="+", choices=("put", "mirror"), default=["put", "mirror"])
    parser.add_argument("--file-threads", type=int, nargs="+", metavar="N",
                        help="atomic_file.FILE_THREADS for both sides; two or more: this tree with each, side by side")
    parser.add_argument("--compare-rounds", action="store_true",
                        help="this tree's per-file thread path against its rounds, side by side")
    args = parser.parse_args()
    sides = sides_of(args)
    port = free_port()
    upstream = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "bench.service", "--upstream-port", str(port)],
                              cwd=HERE, env={**os.environ, "PYTHONPATH": str(HERE)})
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{upstream}/_sandbox/stats", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        print(f"# {os.cpu_count()} CPUs; {args.videos} videos of {len(FAKE_MP4)} bytes, "
              f"{args.concurrency} at a time; CPU of every thread per video")
        ratios: dict[str, dict[str, list[float]]] = {}
        with tempfile.TemporaryDirectory(dir=os.environ.get("REELGATE_BENCH_TMP")) as tmp:
            runs = 0
            for round_ in range(args.rounds):
                for kind in args.kinds:
                    results: dict[str, dict[str, float]] = {}
                    for side in in_turn(sides, round_):
                        runs += 1
                        results[side.name] = r = child(side, kind, args, upstream, Path(tmp) / f"run-{runs}")
                        print(f"{kind:7s} {side.name:10s} {r['cpu_us']:7.1f} us CPU/video (user {r['user_us']:6.1f}, "
                              f"kernel {r['sys_us']:6.1f})  {r['wall_ms']:6.3f} ms wall  "
                              f"kthreads {r['kthreads_us']:6.1f} us", flush=True)
                    if len(sides) == 2:
                        for part in ("cpu_us", "user_us", "sys_us", "kthreads_us"):
                            ratios.setdefault(kind, {}).setdefault(part, []).append(
                                results[sides[0].name][part] / max(results[sides[1].name][part], 1e-9))
        for kind, parts in ratios.items():
            print(f"{kind}: {sides[0].name} / {sides[1].name}, median of {args.rounds}: "
                  + ", ".join(f"{part[:-3]} x{statistics.median(values):.2f}" for part, values in parts.items())
                  + "  (CPU: " + ", ".join(f"{v:.2f}" for v in parts["cpu_us"]) + ")")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        kind, videos, concurrency, upstream, root = sys.argv[2:7]
        print(json.dumps(asyncio.run(measure(kind, int(videos), int(concurrency), upstream, Path(root)))))
    else:
        main()
