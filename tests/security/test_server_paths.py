"""Over HTTP an image is a public URL, a data URI or an upload, never a file of the server.

Every field and form that becomes an image is tried with a real PNG on the server's disk,
a missing file, a directory and a file that is not an image: each answers the same 400
(so the answer tells nothing about the server's files), and no vendor sees a thing.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from tests.security.conftest import Harness

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
DATA_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.fixture
def server_paths(tmp_path: Path) -> list[str]:
    """A real image, a missing file, a directory, a file that is not an image, a ~ path."""
    image = tmp_path / "secret.png"
    image.write_bytes(PNG)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    return [str(image), str(tmp_path / "missing.png"), str(tmp_path), str(text), "~/.ssh/id_rsa",
            f"file://{image}"]


def _kind_path(path: str) -> dict[str, str]:
    return {"kind": "path", "value": path}


# (route, how the body is sent, builds the body from a path, the field the 400 names)
CASES: list[tuple[str, str, Any, str]] = [
    ("/v1/jobs", "json", lambda p: {"prompt": "x", "start_image": p}, "start_image"),
    ("/v1/jobs", "json", lambda p: {"prompt": "x", "end_image": p}, "end_image"),
    ("/v1/jobs", "json", lambda p: {"prompt": "x", "start_image": _kind_path(p)}, "start_image"),
    ("/v1/jobs", "json", lambda p: {"prompt": "x", "start_image": DATA_URI, "end_image": _kind_path(p)}, "end_image"),
    ("/v1/jobs", "json", lambda p: {"prompt": "x", "start_image": {"kind": "url", "value": p}}, "start_image"),
    ("/v1/jobs", "json", lambda p: {"prompt": "x", "end_image": {"kind": "data_uri", "value": p}}, "end_image"),
    ("/v1/quotes", "json", lambda p: {"prompt": "x", "start_image": p}, "start_image"),
    ("/v1/quotes", "json", lambda p: {"prompt": "x", "end_image": _kind_path(p)}, "end_image"),
    ("/v1/videos", "json", lambda p: {"prompt": "x", "input_reference": {"image_url": p}},
     "input_reference.image_url"),
    ("/v1/videos", "json", lambda p: {"prompt": "x", "start_image": p}, "start_image"),
    ("/v1/videos", "json", lambda p: {"prompt": "x", "end_image": p}, "end_image"),
    ("/v1/videos", "json", lambda p: {"prompt": "x", "start_image": _kind_path(p)}, "start_image"),
    ("/v1/videos", "form", lambda p: {"prompt": "x", "start_image": p}, "start_image"),
    ("/v1/videos", "form", lambda p: {"prompt": "x", "end_image": p}, "end_image"),
]


@pytest.mark.parametrize(("route", "how", "body", "field"), CASES,
                         ids=[f"{r}-{h}-{f}-{i}" for i, (r, h, _, f) in enumerate(CASES)])
def test_no_image_field_or_form_reads_a_server_file(harness: Harness, server_paths: list[str],
                                                    route: str, how: str, body: Any, field: str) -> None:
    messages = set()
    for path in server_paths:
        sent = body(path)
        if how == "json":
            response = harness.post(route, json=sent)
        else:  # multipart, each field a plain form field (no filename)
            response = harness.post(route, files={k: (None, v) for k, v in sent.items()})
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert error["param"] == field, (path, error)
        assert path not in error["message"] and "secret.png" not in error["message"]
        messages.add(error["message"])
    assert len(messages) == 1, messages  # one answer, whatever the path is
    assert "server file paths are not accepted" in messages.pop()
    assert harness.submissions() == 0
    assert harness.jobs() == []


def test_the_service_refuses_a_path_image_however_the_request_was_built(harness: Harness, tmp_path: Path) -> None:
    """Defence in depth: a request built with local files allowed (the library's way) is
    still refused by the service before any fetch, plan or vendor call."""
    from gateway.errors import InvalidRequest
    from gateway.request import VideoRequest

    image = tmp_path / "frame.png"
    image.write_bytes(PNG)
    request = VideoRequest(prompt="x", start_image=str(image))
    assert harness.client.portal is not None
    with pytest.raises(InvalidRequest) as raised:
        harness.client.portal.call(harness.service.submit, request, harness.service.keys.list()[0])
    assert raised.value.field == "start_image" and "server file paths are not accepted" in raised.value.reason
    assert harness.submissions() == 0
