"""A key made once with ``reelgate keys create --config FILE`` (a PostgreSQL store) works on
two ``reelgate serve`` replicas sharing that store, with the budget of its record; a
``reelgate keys revoke --config FILE`` is refused by both within ``key_cache_s``. Each
replica has a home of its own, so nothing comes from a keys.db. The real PostgreSQL:
these fail, never skip, when it does not answer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import psycopg

from tests.service.conftest import Processes

CACHE_S = 0.5


def start_replica(processes: Processes, config: Path, replica_id: str) -> str:
    processes.env["REELGATE_HOME"] = str(processes.home.parent / replica_id)
    url, _ = processes.start("serve", "--sandbox", "--config", str(config), "--replica-id", replica_id,
                             health_path="/readyz")
    return url


def test_a_key_made_once_works_on_every_replica_until_revoked(processes: Processes, pg_database: str,
                                                               tmp_path: Path) -> None:
    config = tmp_path / "reelgate.yaml"
    config.write_text(f"service:\n  store_url: {pg_database}\n  key_cache_s: {CACHE_S}\n")
    made = processes.cli("keys", "create", "--name", "app", "--config", str(config))
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    poor = processes.cli("keys", "create", "--name", "poor", "--budget", "0.01", "--config", str(config))
    assert poor.returncode == 0, poor.stderr
    listed = processes.cli("keys", "list", "--json", "--config", str(config))
    assert [k["name"] for k in json.loads(listed.stdout)] == ["app", "poor"]
    with psycopg.connect(pg_database) as conn:  # only a digest is stored
        assert key.split("_", 2)[2] not in str(conn.execute("SELECT k::text FROM reelgate.api_keys k").fetchall())

    urls = [start_replica(processes, config, rid) for rid in ("replica-a", "replica-b")]
    auth = {"Authorization": f"Bearer {key}"}
    for url, rid in zip(urls, ("replica-a", "replica-b"), strict=True):
        ready = httpx.get(f"{url}/readyz").json()
        assert ready["replica"] == {"id": rid, "store": "postgresql", "leases": True, "workers": 1,
                                    "pid": ready["replica"]["pid"]}
        assert ready["shared_state"]["backend"] == "in-process"
        assert httpx.get(f"{url}/v1/videos", headers=auth).status_code == 200
    assert not any((processes.home.parent / rid / "keys.db").exists() for rid in ("replica-a", "replica-b"))

    job = httpx.post(f"{urls[0]}/v1/videos", headers=auth, json={"prompt": "a fox", "providers": ["fal"]})
    assert job.status_code == 200, job.text
    assert httpx.get(f"{urls[1]}/v1/videos/{job.json()['id']}", headers=auth).status_code == 200
    # the budget is the key record's, wherever the request lands
    over = httpx.post(f"{urls[1]}/v1/videos", headers={"Authorization": f"Bearer {poor.stdout.strip()}"},
                      json={"prompt": "a fox", "providers": ["fal"]})
    assert over.status_code == 402, over.text

    revoked = processes.cli("keys", "revoke", "app", "--config", str(config))
    assert revoked.returncode == 0, revoked.stderr
    deadline = time.monotonic() + CACHE_S + 2.0
    for url in urls:
        while (status := httpx.get(f"{url}/v1/videos", headers=auth).status_code) != 401:
            assert status == 200 and time.monotonic() < deadline, f"{url} still accepts a revoked key"
            time.sleep(0.05)


def test_keys_cli_names_the_store_it_cannot_reach_without_its_dsn(processes: Processes, tmp_path: Path) -> None:
    config = tmp_path / "reelgate.yaml"
    config.write_text("service:\n  store_url: postgresql://reelgate:hunter2@127.0.0.1:1/nowhere\n")
    done = processes.cli("keys", "list", "--config", str(config))
    assert done.returncode == 2
    assert "key store cannot be used" in done.stderr and "hunter2" not in done.stderr + done.stdout
