"""`reelgate sandbox` as its own process: stats and live fault changes over HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sandbox_process_serves_stats_and_takes_faults():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "sandbox", "--port", str(port),
                             "--fault", "fal=outage"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                stats = httpx.get(f"{base}/_sandbox/stats").json()
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError(proc.stderr.read1().decode())
        assert {"fal", "apiframe", "railwail"} <= set(stats)
        assert stats["fal"]["faults"] == ["outage"]
        down = httpx.post(f"{base}/fal/fal-ai/luma-dream-machine/ray-2-flash", json={"prompt": "x"},
                          headers={"Authorization": "Key k"})
        assert down.status_code == 503
        changed = httpx.post(f"{base}/_sandbox/faults", json={"fal": [], "apiframe": ["rate-limit:retry_after=2"]})
        assert changed.json()["fal"] == [] and changed.json()["apiframe"] == ["rate-limit:retry_after=2"]
        up = httpx.post(f"{base}/fal/fal-ai/luma-dream-machine/ray-2-flash", json={"prompt": "x"},
                        headers={"Authorization": "Key k"})
        assert up.status_code == 200 and httpx.get(f"{base}/_sandbox/stats").json()["fal"]["accepted_submissions"] == 1
        bad = httpx.post(f"{base}/_sandbox/faults", json={"fal": ["meteor"]})
        assert bad.status_code == 400 and "unknown fault 'meteor'" in bad.json()["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stderr.close()


def test_sandbox_rejects_an_unknown_vendor_fault_cleanly():
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "sandbox", "--fault", "nobody=outage"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no emulator for nobody" in result.stderr
    assert "Traceback" not in result.stderr
