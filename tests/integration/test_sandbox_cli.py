"""`reelgate sandbox` as its own process: stats and live fault changes over HTTP."""

from __future__ import annotations

import subprocess
import sys

import httpx

from tests.conftest import keep_log
from tests.service.conftest import free_port, wait_until_up


def test_sandbox_process_serves_stats_and_takes_faults(tmp_path, request):
    port = free_port()
    log = tmp_path / "sandbox.log"
    keep_log(request.node, log)
    with log.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "sandbox", "--port", str(port),
                                 "--fault", "fal=outage"], stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base, proc, "/_sandbox/stats", log)
        stats = httpx.get(f"{base}/_sandbox/stats").json()
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


def test_sandbox_rejects_an_unknown_vendor_fault_cleanly():
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "sandbox", "--fault", "nobody=outage"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no emulator for nobody" in result.stderr
    assert "Traceback" not in result.stderr
