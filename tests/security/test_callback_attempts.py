"""The ``?attempt=`` of a vendor callback URL cannot be forged or moved to another attempt.

fal signs every callback with one key set for all its accounts (its JWKS), and the URL is
not part of what it signs: anyone with a fal account can have fal send a genuinely signed
callback for *their* job to ``/webhooks/fal?attempt=<someone's attempt key>`` (an attempt key
is a job id and a counter, known to whoever saw the job id). Unchecked, that bound the
victim's attempt to a foreign job in the store, and the victim's own paid job, whose
callback came next, could no longer be adopted (a binding is one-to-one): paid for nothing.
So the gateway signs the attempt it puts in the URL, and a callback whose attempt is
unsigned, or signed for another attempt, is refused (401) before anything is written."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from gateway.adoption import callback_url
from gateway.config import ServiceConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.plugins import discover
from gateway.server import create_app
from gateway.server.service import Service
from providers.fal import webhooks as fal_webhooks
from tests.service.conftest import WEBHOOK_SECRET

VICTIM = "vid_" + "a" * 32 + ".1"
FORGER = "vid_" + "b" * 32 + ".1"


@contextmanager
def running(tmp_path: Path) -> Iterator[tuple[TestClient, Sandbox]]:
    """The service, with a public URL (fal callbacks name attempts), on an in-thread sandbox."""
    env = {"REELGATE_HOME": str(tmp_path / "home"), "REELGATE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    settings = Settings(service=ServiceConfig(public_url="http://testserver"))
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0, run_s=100))
    with BackgroundServer(sandbox.app) as emulators:
        app = create_app(lambda: Service.start(settings, sandbox_url=emulators.url, env=env))
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, sandbox


def signed_by_fal(sandbox: Sandbox, request_id: str) -> tuple[bytes, dict[str, str]]:
    """A callback fal really sent (signed with its key) for a job of another fal account."""
    body = json.dumps({"request_id": request_id, "status": "OK", "payload": {"video": {"url": "https://x/v.mp4"}}})
    key = sandbox.emulators["fal"].signing_key  # type: ignore[attr-defined]
    return body.encode(), fal_webhooks.sign(key, request_id, "another-fal-account", int(time.time()), body.encode())


def path_of(url: str | None) -> str:
    assert url is not None
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_a_callback_url_names_its_attempt_with_a_signature_only_this_gateway_makes(tmp_path) -> None:
    with running(tmp_path) as (client, sandbox):
        service = client.app.state.service  # type: ignore[attr-defined]
        fal = service.gateway.providers["fal"]
        genuine = callback_url(service.settings, fal, VICTIM)
        assert genuine is not None and f"attempt={VICTIM}&attempt_sig=" in genuine
        assert callback_url(service.settings, fal, FORGER) != genuine.replace(VICTIM, FORGER)
        body, headers = signed_by_fal(sandbox, "req-of-the-real-job")
        answer = client.post(path_of(genuine), content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        bound = client.portal.call(service.store.bound_job, "fal", VICTIM)  # type: ignore[attr-defined]
        assert bound == "req-of-the-real-job"


@pytest.mark.parametrize("forged", [
    f"/webhooks/fal?attempt={VICTIM}",  # unsigned: the URL any fal account can have fal call
    f"/webhooks/fal?attempt={VICTIM}&attempt_sig=",
    f"/webhooks/fal?attempt={VICTIM}&attempt_sig=" + "0" * 32,
    "own",  # the signature of the forger's own attempt, moved onto the victim's
])
def test_a_forged_or_moved_attempt_is_refused_and_binds_nothing(tmp_path, forged: str) -> None:
    with running(tmp_path) as (client, sandbox):
        service = client.app.state.service  # type: ignore[attr-defined]
        if forged == "own":
            forged = path_of(callback_url(service.settings, service.gateway.providers["fal"], FORGER)).replace(
                FORGER, VICTIM)
        body, headers = signed_by_fal(sandbox, "req-of-another-account")
        answer = client.post(forged, content=body, headers=headers)
        assert answer.status_code == 401, answer.text
        error = answer.json()["error"]
        assert error["code"] == "webhook_rejected" and "attempt" in error["message"]
        assert client.portal.call(service.store.bound_job, "fal", VICTIM) is None  # type: ignore[attr-defined]
        # nothing was remembered either: the vendor's genuine callback is still a first sighting
        genuine = path_of(callback_url(service.settings, service.gateway.providers["fal"], VICTIM))
        again = client.post(genuine, content=body, headers=headers)
        assert again.status_code == 200 and "duplicate" not in again.json(), again.text
