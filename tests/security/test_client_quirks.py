"""Real clients' edge cases: the openai SDK's list fields, a size fixed at create, list
order, a multipart end frame, and a client hanging up mid-upload."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.security.test_http_hygiene import wait_for_status

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the openai Videos API methods are marked so
def test_the_openai_sdk_list_fields_are_understood(reelgate_serve):
    from openai import OpenAI

    server = reelgate_serve()
    client = OpenAI(base_url=f"{server.url}/v1", api_key=server.key)
    video = client.videos.create(model="ray-2-flash", prompt="a fox", seconds="5", size="1280x720",
                                 extra_body={"providers": ["apiframe", "fal"], "concepts": ["pan_left"],
                                             "metadata": {"order": "42", "team": "video"}})
    job = httpx.get(f"{server.url}/v1/jobs/{video.id}", headers=server.auth).json()
    assert job["request"]["providers"] == ["apiframe", "fal"]
    assert job["request"]["concepts"] == ["pan_left"]
    assert job["request"]["metadata"] == {"order": "42", "team": "video"}


def test_a_video_created_without_size_keeps_the_size_it_was_given(make_app):
    with make_app() as app:
        created = app.client.post("/v1/videos", headers=app.auth, json={"prompt": "a fox"}).json()
        done = wait_for_status(app, created["id"], "completed")
        assert done["size"] == created["size"]
        assert done["reelgate"]["resolution"] == created["reelgate"]["resolution"]
        job = app.client.get(f"/v1/jobs/{created['id']}", headers=app.auth).json()
        assert job["resolution"] == created["reelgate"]["resolution"]


@pytest.mark.parametrize("path", ["/v1/videos", "/v1/jobs"])
def test_list_order_is_honoured_and_checked(make_app, path):
    with make_app() as app:
        ids = [app.client.post("/v1/videos", headers=app.auth, json={"prompt": f"fox {i}"}).json()["id"]
               for i in range(3)]
        newest = [v["id"] for v in app.client.get(path, headers=app.auth).json()["data"]]
        oldest = [v["id"] for v in app.client.get(path, headers=app.auth, params={"order": "asc"}).json()["data"]]
        assert newest == ids[::-1] and oldest == ids
        page = app.client.get(path, headers=app.auth, params={"order": "asc", "after": ids[0], "limit": 1}).json()
        assert [v["id"] for v in page["data"]] == [ids[1]] and page["has_more"]
        wrong = app.client.get(path, headers=app.auth, params={"order": "sideways"})
        assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "order"


def test_a_multipart_end_image_is_used(make_app):
    with make_app() as app:
        response = app.client.post("/v1/videos", headers=app.auth, data={"prompt": "a fox"},
                                   files={"input_reference": ("a.png", PNG, "image/png"),
                                          "end_image": ("b.png", PNG, "image/png")})
        assert response.status_code == 200, response.text
        job = app.client.get(f"/v1/jobs/{response.json()['id']}", headers=app.auth).json()
        assert job["request"]["end_image"].startswith("data URI (")
        bad = app.client.post("/v1/videos", headers=app.auth, data={"prompt": "a fox"},
                              files={"end_image": ("b.png", b"not an image", "image/png")})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "end_image"


def test_a_client_hanging_up_mid_upload_leaves_no_traceback(reelgate_serve):
    server = reelgate_serve()
    host, port = server.url.removeprefix("http://").split(":")
    form = (b'--zz\r\nContent-Disposition: form-data; name="input_reference"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + PNG)
    sent = [("/v1/videos", "application/json", b'{"prompt": "' + b"a" * 1000),
            ("/v1/jobs", "application/json", b'{"prompt": "' + b"a" * 1000),
            ("/v1/videos", "multipart/form-data; boundary=zz", form)]
    for path, content_type, partial in sent:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {server.key}\r\n"
                         f"Content-Type: {content_type}\r\nContent-Length: 100000\r\n\r\n".encode() + partial)
    # the hang-ups are counted (status 499) once the server has handled them
    deadline = time.monotonic() + 30
    while True:
        metrics = httpx.get(f"{server.url}/metrics").text
        counted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                      if line.startswith("reelgate_http_requests_total") and 'status="499"' in line)
        if counted == len(sent) or "Traceback" in server.log_text():
            break
        assert time.monotonic() < deadline, metrics
        time.sleep(0.05)
    log = server.log_text()
    assert "Traceback" not in log and "ClientDisconnect" not in log, log
    assert counted == len(sent), metrics
