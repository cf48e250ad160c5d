"""Errors are counted: an unhandled exception is a JSON 500 that reaches
``reelgate_http_requests_total``; a cancelled job reaches ``reelgate_jobs_finished_total``."""

from __future__ import annotations

import re


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_an_unhandled_error_is_a_json_500_and_is_counted(make_app, caplog):
    with make_app() as app:
        async def broken(**_kwargs):
            raise RuntimeError("the store fell over")

        app.service.store.list_jobs = broken
        response = app.client.get("/v1/jobs", headers=app.auth)
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["type"] == "server_error" and "fell over" not in error["message"]
        metrics = app.client.get("/metrics").text
        assert metric(metrics, "reelgate_http_requests_total", method="GET", route="/v1/jobs", status="500") == 1
    assert any("the store fell over" in r.getMessage() or (r.exc_info and "fell over" in str(r.exc_info[1]))
               for r in caplog.records)


def test_a_cancelled_job_is_counted_as_finished(make_app):
    from gateway.emulation.base import Timing

    with make_app(timing=Timing(queue_s=60, run_s=60)) as app:  # still running when cancelled
        video = app.client.post("/v1/videos", headers=app.auth, json={"prompt": "a fox"}).json()
        cancelled = app.client.post(f"/v1/videos/{video['id']}/cancel", headers=app.auth).json()
        assert cancelled["error"]["code"] == "cancelled"
        metrics = app.client.get("/metrics").text
        assert metric(metrics, "reelgate_jobs_finished_total", status="cancelled") == 1, \
            re.findall(r"reelgate_jobs_finished_total.*", metrics)
