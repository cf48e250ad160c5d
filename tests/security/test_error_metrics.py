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


def test_hot_route_requests_are_counted_once_each_under_method_route_and_status(make_app):
    with make_app() as app:
        before = app.client.get("/metrics").text
        created = [app.client.post("/v1/videos", headers=app.auth, json={"prompt": "a fox"}) for _ in range(3)]
        assert all(r.status_code == 200 for r in created)
        for _ in range(2):
            assert app.client.get("/v1/videos/vid_nope", headers=app.auth).status_code == 404
        assert app.client.get(f"/v1/videos/{created[0].json()['id']}", headers=app.auth).status_code == 200
        assert app.client.get(f"/v1/videos/{created[0].json()['id']}").status_code == 401
        after = app.client.get("/metrics").text

    def added(**labels: str) -> float:
        return (metric(after, "reelgate_http_requests_total", **labels)
                - metric(before, "reelgate_http_requests_total", **labels))

    one = "/v1/videos/{video_id}"
    assert added(method="POST", route="/v1/videos", status="200") == 3
    assert added(method="GET", route=one, status="404") == 2
    assert added(method="GET", route=one, status="200") == 1
    assert added(method="GET", route=one, status="401") == 1
