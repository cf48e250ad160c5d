"""The jobs' own webhooks survive a SIGKILL: the server is killed while its deliveries are
being retried (the app answers 503), restarted, and each terminal state -- a cancelled job's
too -- reaches the app exactly once by webhook-id, verifiable with the ``standardwebhooks``
package as any app would."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import httpx
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.emulation.sandbox import BackgroundServer
from tests.service.conftest import WEBHOOK_SECRET


class App:
    """The caller's webhook endpoint: down (503) until ``up`` is set, recording every POST."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.lock = threading.Lock()
        self.failed: Counter[str] = Counter()
        self.acked: list[tuple[dict[str, str], bytes]] = []
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> JSONResponse:
        body, headers = await request.body(), dict(request.headers)
        with self.lock:
            if not self.up.is_set():
                self.failed[headers["webhook-id"]] += 1
                return JSONResponse({"down": True}, status_code=503)
            self.acked.append((headers, body))
        return JSONResponse({"ok": True})


def wait_until(what: str, done, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_deliveries_retried_across_a_sigkill_arrive_once_each_and_verify(processes):
    app = App()
    processes.env["REELGATE_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    key = processes.create_key("app")
    auth = {"Authorization": f"Bearer {key}"}
    with BackgroundServer(app.app) as receiver:
        hook = f"{receiver.url}/hook?token=app-secret"
        url, server = processes.start("serve", "--sandbox")
        ids = [httpx.post(f"{url}/v1/jobs", headers=auth, json={"prompt": p, "webhook_url": hook})
               .raise_for_status().json()["id"] for p in ("a fox", "a kite", "a boat", "a tower")]
        httpx.post(f"{url}/v1/jobs/{ids[-1]}/cancel", headers=auth).raise_for_status()
        # every message has failed at least twice: the server is mid-retry when it dies
        wait_until("four messages, each failed twice", lambda: len(app.failed) == 4
                   and min(app.failed.values()) >= 2)
        processes.kill(server)
        before = set(app.failed)
        app.up.set()
        url, _ = processes.start("serve", "--sandbox")

        def recorded() -> list[dict]:
            return [httpx.get(f"{url}/v1/jobs/{i}", headers=auth).raise_for_status().json() for i in ids]

        wait_until("every job's webhook recorded as delivered",
                   lambda: all(any(w["delivered"] for w in j["webhooks"]) for j in recorded()))
        jobs = recorded()
    with app.lock:
        acked = list(app.acked)
    by_id = Counter(h["webhook-id"] for h, _ in acked)
    assert set(by_id) == before and set(by_id.values()) == {1}  # same ids as before the kill, once each
    verifier = Webhook(WEBHOOK_SECRET)
    events = {}
    for headers, body in acked:
        payload = verifier.verify(body, headers)  # raises unless the signature and timestamp are right
        events[payload["data"]["id"]] = payload["type"]
    assert events == {**{i: "video.completed" for i in ids[:3]}, ids[3]: "video.cancelled"}
    for job in jobs:
        (record,) = job["webhooks"]
        assert record["message_id"] in by_id and "token" not in record["url"]
        assert WEBHOOK_SECRET not in json.dumps(job)
