"""``/content`` at a replica that cannot read the kept video answers before it starts a 200.

Run by hand: two replicas without a shared ``storage`` (each its own ``REELGATE_HOME/videos``),
the video kept by the first; ``/content`` at the second answered 200 with 0 bytes (curl: exit
18, a partial file) and logged a traceback. Now it is a 503 a balancer retries at another
replica, and a file gone from storage a 404 ``not_kept``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from gateway.storage import LocalStorage
from tests.service.conftest import InProcess, wait_kept


def test_content_this_replica_cannot_read_is_a_503_and_a_lost_file_a_404(service: InProcess, tmp_path: Path,
                                                                          caplog) -> None:
    client, auth = service.client, service.auth
    made = client.post("/v1/videos", headers=auth, json={"prompt": "a fox", "providers": ["fal"]})
    assert made.status_code == 200, made.text
    video_id = made.json()["id"]
    uri = wait_kept(service, video_id)["output"]["uri"]
    assert client.get(f"/v1/videos/{video_id}/content", headers=auth).status_code == 200

    app_service = client.app.state.service  # type: ignore[attr-defined]
    own = app_service.storage
    app_service.storage = LocalStorage(tmp_path / "another-replicas-home" / "videos")  # this replica's own
    try:
        answer = client.get(f"/v1/videos/{video_id}/content", headers=auth)
    finally:
        app_service.storage = own
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1", answer.text
    assert answer.json()["error"]["code"] == "not_here"
    assert any("cannot be read here" in r.getMessage() for r in caplog.records)

    Path(unquote(urlsplit(uri).path)).unlink()  # gone from storage (deleted by hand, a lost disk)
    answer = client.get(f"/v1/videos/{video_id}/content", headers=auth)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_kept", answer.text
