"""The hot routes (gateway/server/hot_routes.py) answer exactly as FastAPI's stack does:
the same statuses, bodies and headers for good and hostile requests, counted in the
request metric under the route's path, documented in /openapi.json, and a crash is the
same JSON 500."""

from __future__ import annotations

from typing import Any

from tests.security.test_error_metrics import metric

#: requests to both hot routes (method, path, keyword arguments of the client); ``{id}``
#: is replaced by a job's id. Good ones, and each kind of refusal the routes make.
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/videos", {"json": {"prompt": "a fox", "size": "1280x720", "seconds": "5"}}),
    ("POST", "/v1/videos", {"json": {"prompt": "a fox", "colour": "red"}}),
    ("POST", "/v1/videos", {"json": {"prompt": "a fox", "size": "3x3"}}),
    ("POST", "/v1/videos", {"json": {"prompt": ""}}),
    ("POST", "/v1/videos", {"json": ["a list"]}),
    ("POST", "/v1/videos", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
    ("POST", "/v1/videos", {"content": b'{"prompt": "a", "max_cost_usd": NaN}',
                            "headers": {"content-type": "application/json"}}),
    ("POST", "/v1/videos", {"content": b'{"prompt": "a", "metadata": ' + b"[" * 40 + b"]" * 40 + b"}",
                            "headers": {"content-type": "application/json"}}),
    ("POST", "/v1/videos", {"content": b'{"prompt": "\\ud83d"}', "headers": {"content-type": "application/json"}}),
    ("POST", "/v1/videos", {"content": b"prompt=a", "headers": {"content-type": "text/plain"}}),
    ("POST", "/v1/videos", {"content": b"x" * 2048, "headers": {"content-type": "application/json"}}),
    ("POST", "/v1/videos", {"json": {"prompt": "a fox"}, "headers": {"origin": "https://evil.example"}}),
    ("POST", "/v1/videos", {"json": {"prompt": "a fox"}, "headers": {"authorization": "Bearer rg_nope_nope"}}),
    ("POST", "/v1/videos", {"json": {"prompt": "a fox"}, "headers": {"Authorization": ""}}),
    ("POST", "/v1/videos", {"data": {"prompt": "a fox", "seconds": "9"}}),
    ("GET", "/v1/videos/{id}", {}),
    ("GET", "/v1/videos/vid_missing", {}),
    ("GET", "/v1/videos/{id}", {"headers": {"authorization": "Basic abc"}}),
]


def _answer(app: Any, job_id: str, method: str, path: str,
            options: dict[str, Any]) -> tuple[int, Any, tuple[str, str | None]]:
    headers = {k.lower(): v for k, v in {**app.auth, **options.get("headers", {})}.items()}
    options = {**options, "headers": {k: v for k, v in headers.items() if v}}
    response = app.client.request(method, path.replace("{id}", job_id), **options)
    body = response.json()
    if isinstance(body, dict) and body.get("object") == "video":
        # a new job each time (its own id and times), and one that moves on between the two
        # answers (the sandbox runs it in 0.4 s: status, progress, size once planned): the
        # fields that say which request it is are what both ways must agree on
        body = {k: v for k, v in body.items() if k in ("object", "model", "prompt", "seconds",
                                                          "remixed_from_video_id")}
    cors = response.headers.get("access-control-allow-origin")
    return response.status_code, body, (response.headers.get("content-type", ""), cors)


def _both_ways(app: Any, cases: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[int, Any, Any]]:
    """Each case's answer through the hot routes, asserted equal to FastAPI's answer."""
    hot = app.client.app.hot
    assert hot is not None
    job_id = app.client.post("/v1/videos", headers=app.auth, json={"prompt": "a fox"}).json()["id"]
    answers = {}
    for variant in (hot, None):
        app.client.app.hot = variant
        answers[variant is None] = [_answer(app, job_id, *case) for case in cases]
    app.client.app.hot = hot
    for case, fast, full in zip(cases, answers[False], answers[True], strict=True):
        assert fast == full, case
    return answers[False]


def test_the_hot_routes_answer_as_the_fastapi_stack_does(make_app):
    with make_app(max_upload_bytes=1024, require_api_key=True) as app:
        statuses = {status for status, _, _ in _both_ways(app, CASES)}
        assert {200, 400, 401, 403, 404, 413, 415} <= statuses


def test_the_hot_routes_send_the_same_cors_headers(make_app):
    allowed = {"origin": "https://app.example"}
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/videos", {"json": {"prompt": "a fox"}, "headers": allowed}),
        ("POST", "/v1/videos", {"json": {"colour": "red"}, "headers": allowed}),
        ("GET", "/v1/videos/{id}", {"headers": allowed}),
    ]
    with make_app(cors_allow_origins=["https://app.example"]) as app:
        answers = _both_ways(app, cases)
        assert all(cors == "https://app.example" for _, _, (_, cors) in answers)


def test_the_hot_routes_are_taken_counted_and_documented(make_app):
    with make_app() as app:
        served = []
        claim = app.client.app.hot.claim

        def spy(scope: Any) -> bool:
            taken: bool = claim(scope)
            served.append((scope["method"], scope["path"], taken))
            return taken

        app.client.app.hot.claim = spy
        video = app.client.post("/v1/videos", headers=app.auth, json={"prompt": "a fox"}).json()
        assert app.client.get(f"/v1/videos/{video['id']}", headers=app.auth).status_code == 200
        assert app.client.get(f"/v1/videos/{video['id']}/content", headers=app.auth).status_code == 404
        assert served[:3] == [("POST", "/v1/videos", True), ("GET", f"/v1/videos/{video['id']}", True),
                              ("GET", f"/v1/videos/{video['id']}/content", False)]
        metrics = app.client.get("/metrics").text
        assert metric(metrics, "reelgate_http_requests_total", method="POST", route="/v1/videos", status="200") == 1
        assert metric(metrics, "reelgate_http_requests_total", method="GET", route="/v1/videos/{video_id}",
                      status="200") == 1
        paths = app.client.get("/openapi.json").json()["paths"]
        assert "post" in paths["/v1/videos"] and "get" in paths["/v1/videos/{video_id}"]


def test_a_crash_on_a_hot_route_is_the_json_500_and_is_counted(make_app):
    with make_app() as app:
        async def broken(*_args: Any, **_kwargs: Any) -> None:
            raise RuntimeError("the store fell over")

        app.service.get = broken
        response = app.client.get("/v1/videos/vid_x", headers=app.auth)
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "server_error"
        metrics = app.client.get("/metrics").text
        assert metric(metrics, "reelgate_http_requests_total", method="GET", route="/v1/videos/{video_id}",
                      status="500") == 1
