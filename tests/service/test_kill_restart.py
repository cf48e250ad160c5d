"""SIGKILL mid-flight loses no job and pays for none twice: the server, pointed at a
separate sandbox process through its config file, is killed and restarted."""

from __future__ import annotations

import time

import httpx
import yaml

from tests.service.conftest import stored_at_vendor


def test_server_killed_mid_flight_finishes_every_job_once(processes, tmp_path):
    sandbox_url, _ = processes.start("sandbox", health_path="/_sandbox/stats")
    httpx.post(f"{sandbox_url}/_sandbox/timing", json={v: {"queue_s": 1.0, "run_s": 4.0}
                                                       for v in ("fal", "apiframe", "railwail")}).raise_for_status()
    config = tmp_path / "reelgate.yaml"
    config.write_text(yaml.safe_dump({
        "providers": {v: {"base_url": f"{sandbox_url}/{v}", "api_key": f"emulated-{v}-key"}
                      for v in ("fal", "apiframe", "railwail")},
        "polling": {"initial_s": 0.2, "max_s": 0.5},
    }))
    key = processes.create_key("app")
    auth = {"Authorization": f"Bearer {key}"}
    url, server = processes.start("serve", "--config", str(config))

    bodies = [{"prompt": "a fox", "size": "1280x720"}, {"prompt": "a cat", "aspect_ratio": "1:1"},
              {"prompt": "a tower", "aspect_ratio": "9:21"}, {"prompt": "a boat", "providers": ["railwail"]},
              {"prompt": "a kite", "size": "720x1280", "providers": ["apiframe"]}]
    ids = [httpx.post(f"{url}/v1/videos", json=b, headers=auth).raise_for_status().json()["id"] for b in bodies]

    def jobs(base: str) -> list[dict]:
        return [httpx.get(f"{base}/v1/jobs/{i}", headers=auth).raise_for_status().json() for i in ids]

    deadline = time.monotonic() + 20
    while not stored_at_vendor(processes.home, ids):
        assert time.monotonic() < deadline, "jobs never reached their vendors"
        time.sleep(0.1)
    assert not any(j["status"] == "succeeded" for j in jobs(url))  # killed while they run
    processes.kill(server)

    url, _ = processes.start("serve", "--config", str(config))
    deadline = time.monotonic() + 60
    while True:
        final = jobs(url)
        if all(j["status"] == "succeeded" for j in final):
            break
        assert not any(j["status"] in ("failed", "cancelled") for j in final), final
        assert time.monotonic() < deadline, "jobs did not finish after the restart"
        time.sleep(0.2)
    assert all(len(j["attempts"]) == 1 for j in final)
    stats = httpx.get(f"{sandbox_url}/_sandbox/stats").json()
    accepted = sum(stats[v]["accepted_submissions"] for v in ("fal", "apiframe", "railwail"))
    assert accepted == len(ids)  # exactly one accepted submission per job
    videos = [httpx.get(f"{url}/v1/videos/{i}/content", headers=auth) for i in ids]
    assert all(v.status_code == 200 and v.content[4:8] == b"ftyp" for v in videos)
    for j in final:  # vendor keys never reach a response
        assert "emulated-" not in str(j)
