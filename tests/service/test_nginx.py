"""docs/deploy/nginx.conf, run: nginx in front of two ``reelgate serve --sandbox`` replicas
sharing one PostgreSQL store and one home (so one directory of kept videos). Through the
balancer a caller creates a job, polls it, downloads its video; a body over the service's
limit is refused; both replicas take traffic; with one replica killed, requests go on; what
nginx answers itself is JSON in the service's error envelope.

nginx is required, not optional: .ci/run installs it (Debian's nginx-light) when missing,
and this test fails, never skips, without it."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.config import ServiceConfig
from tests.conftest import keep_log
from tests.service.conftest import Processes, free_port, wait_until_up

CONFIG = Path(__file__).parents[2] / "docs" / "deploy" / "nginx.conf"


def directive(name: str, text: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", text, flags=re.MULTILINE)


def loopback_copy(text: str, lb_port: int, replica_ports: list[int], logs: Path) -> str:
    """The reference config with only its addresses, ports and log path changed."""
    upstreams = iter(replica_ports)
    text = re.sub(r"server 127\.0\.0\.1:808[12]", lambda _: f"server 127.0.0.1:{next(upstreams)}", text)
    text = text.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{lb_port};")
    return text.replace("/var/log/nginx/", f"{logs}/")


Replicas = list[tuple[str, subprocess.Popen]]


@pytest.fixture
def balancer(processes: Processes, pg_database: str, tmp_path: Path) -> Iterator[tuple[str, Replicas]]:
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    assert nginx, "nginx is not installed: `apt-get install -y nginx-light` (.ci/run does)"
    config = tmp_path / "reelgate.yaml"
    config.write_text(f"service:\n  store_url: {pg_database}\n")
    made = processes.cli("keys", "create", "--name", "lb", "--config", str(config))
    assert made.returncode == 0, made.stderr
    processes.env["REELGATE_TEST_KEY"] = made.stdout.strip()
    replicas = [processes.start("serve", "--sandbox", "--config", str(config), "--replica-id", f"replica-{i}",
                                health_path="/readyz") for i in (1, 2)]
    lb_port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(loopback_copy(CONFIG.read_text(), lb_port, [int(u.rsplit(":", 1)[1]) for u, _ in replicas],
                                  tmp_path))
    run = [nginx, "-p", str(tmp_path), "-c", str(conf),
           "-g", f"daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;"]
    checked = subprocess.run([*run[:5], "-t", *run[5:]], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        keep_log(processes.node, tmp_path / "error.log")
        wait_until_up(f"http://127.0.0.1:{lb_port}", proc, "/lb-health", tmp_path / "error.log")
        yield f"http://127.0.0.1:{lb_port}", replicas
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_reference_config_matches_the_services_limits() -> None:
    text = CONFIG.read_text()
    size = directive("client_max_body_size", text)[0]
    assert size.endswith("m") and int(size[:-1]) * 1024 * 1024 == ServiceConfig().max_upload_bytes
    assert directive("client_body_timeout", text) == [f"{ServiceConfig().body_timeout_s:.0f}s"]
    # the 413 nginx answers itself names the same limit
    assert f"request body larger than {ServiceConfig().max_upload_bytes} bytes" in text
    content = text[text.index("location ~ ^/v1/videos/[^/]+/content$"):]
    content = content[:content.index("}")]
    assert "proxy_buffering off" in content
    assert int(directive("proxy_read_timeout", content)[0].rstrip("s")) >= 600
    # a POST never goes to a second replica once it reached one: no non_idempotent retries
    assert all("non_idempotent" not in d for d in directive("proxy_next_upstream", text))


def test_two_replicas_behind_nginx_serve_a_job_end_to_end(processes: Processes, balancer) -> None:
    url, replicas = balancer
    auth = {"Authorization": f"Bearer {processes.env['REELGATE_TEST_KEY']}"}
    with httpx.Client(base_url=url, headers=auth, timeout=30) as lb:
        seen = {lb.get("/readyz").json()["replica"]["id"] for _ in range(8)}
        assert seen == {"replica-1", "replica-2"}  # both take traffic
        created = lb.post("/v1/videos", json={"prompt": "a fox", "providers": ["fal"]})
        assert created.status_code == 200, created.text
        video_id = created.json()["id"]
        deadline = time.monotonic() + 60
        while (status := lb.get(f"/v1/videos/{video_id}").json()["status"]) != "completed":
            assert status in ("queued", "in_progress") and time.monotonic() < deadline, status
            time.sleep(0.2)
        content = lb.get(f"/v1/videos/{video_id}/content")
        assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
        assert len(content.content) == int(content.headers["content-length"]) > 1000
        # over the service's limit: refused by nginx, before any replica reads it
        too_big = lb.post("/v1/videos", content=b"x" * (ServiceConfig().max_upload_bytes + 1),
                          headers={"content-type": "application/json"})
        assert too_big.status_code == 413
        assert too_big.json()["error"]["code"] == "too_large"  # the service's envelope, not nginx's page
        too_long = lb.get("/v1/videos", headers={"x-trace": "t" * 10_000})
        assert too_long.status_code == 431 and too_long.json()["error"]["code"] == "head_too_large"
        # per-replica counters are scraped at each replica, never through the balancer
        assert lb.get("/metrics").status_code == 403
        # under it: passed through, and the replica says what is wrong with it
        assert lb.post("/v1/videos", content=b"{" * 1024 * 1024,
                       headers={"content-type": "application/json"}).status_code == 400

        processes.kill(replicas[0][1])  # one replica dies: the balancer goes on with the other
        for _ in range(10):
            answer = lb.get(f"/v1/videos/{video_id}")
            assert answer.status_code == 200 and answer.json()["status"] == "completed"
        assert lb.get(f"/v1/videos/{video_id}/content").content == content.content
        assert lb.get("/readyz").json()["replica"]["id"] == "replica-2"


#: every error nginx itself may answer in front of the replicas (494: its "header too large")
NGINX_ERRORS = (400, 403, 404, 405, 408, 413, 414, 494, 500, 501, 502, 503, 504, 505)


def envelope_of(response: httpx.Response) -> dict:
    """The service's error envelope, from nginx as from a replica (never nginx's HTML page)."""
    assert response.headers["content-type"] == "application/json", response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    return error


def test_every_error_nginx_makes_is_in_the_services_envelope() -> None:
    text = CONFIG.read_text()
    pages = dict(d.split(None, 1) for d in directive("error_page", text))
    assert set(map(int, pages)) == set(NGINX_ERRORS), pages
    for status, target in pages.items():
        answered = target.split()[0].lstrip("=") if target.startswith("=") else status
        uri = target.split()[-1]
        assert uri == f"/_reelgate_error/{answered}", target  # a URI: nginx answers 500 for a named location
        block = text[text.index(f"location = {uri} {{"):]
        code, body = re.match(r"location = \S+ \{\s*return (\d+) '(.*)\\n';", block).groups()  # type: ignore[union-attr]
        assert code == answered
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}


def raw_request(url: str, request: bytes) -> bytes:
    """What nginx answers to bytes no HTTP client would send."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_nginxs_own_errors_are_json_behind_the_real_nginx(processes: Processes, balancer) -> None:
    url, replicas = balancer
    auth = {"Authorization": f"Bearer {processes.env['REELGATE_TEST_KEY']}"}
    with httpx.Client(base_url=url, headers=auth, timeout=30) as lb:
        # a URL past nginx's header buffers: 414 before nginx has a URI (was its HTML page)
        too_long = lb.get("/v1/videos/" + "v" * 10_000)
        assert too_long.status_code == 414 and envelope_of(too_long)["code"] == "uri_too_long"
        assert lb.get("/metrics").status_code == 403 and envelope_of(lb.get("/metrics"))["code"] == "forbidden"
        hidden = lb.get("/_reelgate_error/502")  # the error pages are nginx's own, not a path
        assert hidden.status_code == 404 and envelope_of(hidden)["code"] == "not_found"
        # a request line nginx cannot read: 400, and the same envelope
        head, _, body = raw_request(url, b"NOT HTTP AT ALL\r\n\r\n").partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head, head
        assert json.loads(body)["error"]["code"] == "invalid_request"
        # no replica left to answer: nginx's 502, in the envelope SDKs read
        for _, replica in replicas:
            processes.kill(replica)
        down = lb.get("/v1/videos")
        assert down.status_code == 502, down.text
        error = envelope_of(down)
        assert error["code"] == "bad_gateway" and error["type"] == "unavailable_error"
