"""The job codec: a faithful, JSON-safe round trip (no database involved)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.job import Attempt, VideoJob, VideoOutput
from gateway.provider import VendorJob
from gateway.request import ImageKind
from gateway.store import codec
from gateway.store.base import JobRow
from tests.store.jobs import BILLED, CREDITS, ESTIMATE, finished_job, new_job, vendor_job

# a 1x1 PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def round_trip(job: VideoJob) -> VideoJob:
    # through JSON text, as a store does
    return codec.decode_job(json.loads(codec.dumps(codec.encode_job(job))))


def test_a_job_with_attempts_comes_back_equal() -> None:
    job = finished_job()
    assert round_trip(job) == job


def test_money_is_exact_decimal_strings() -> None:
    doc = codec.encode_job(finished_job())
    won = doc["attempts"][1]
    assert (won["estimated_usd"], won["cost_usd"], won["vendor_units"]) == ("0.3", str(BILLED), "37.5")
    back = round_trip(finished_job()).attempts[1]
    assert (back.estimated_usd, back.cost_usd, back.vendor_units) == (ESTIMATE, BILLED, CREDITS)
    assert back.estimated_usd == Decimal("0.3")


def test_a_local_image_is_stored_as_its_path_and_loads_after_the_file_is_gone(tmp_path: Path) -> None:
    frame = tmp_path / "start.png"
    frame.write_bytes(PNG)
    job = new_job(start_image=str(frame))
    doc = codec.encode_job(job)
    assert doc["request"]["start_image"] == {"kind": "path", "value": str(frame.resolve())}
    frame.unlink()  # resuming a job must not depend on the file still being there
    back = round_trip(job)
    assert back.request.start_image == job.request.start_image


def test_a_data_uri_is_kept_whole() -> None:
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    job = new_job(start_image=uri, end_image="https://example.com/end.png")
    back = round_trip(job).request
    assert back.start_image is not None and back.start_image.kind is ImageKind.DATA_URI
    assert back.start_image.value == uri
    assert back.end_image is not None and back.end_image.value == "https://example.com/end.png"


@pytest.mark.parametrize(("cls", "encoded"), [
    (VideoJob, lambda: codec.encode_job(finished_job())),
    (Attempt, lambda: codec.encode_attempt(finished_job().attempts[1])),
    (VideoOutput, lambda: codec.encode_output(VideoOutput(url="u"))),
])
def test_every_field_is_encoded(cls: type, encoded) -> None:
    # a field added to the job model must be added to the codec, or jobs would lose it (a
    # field that takes no part in equality is no state: the job's cached request document)
    fields = {f.name for f in dataclasses.fields(cls) if f.compare}
    assert fields <= set(encoded())


def test_an_unknown_format_is_refused() -> None:
    doc = codec.encode_job(new_job())
    doc["format"] = 99
    with pytest.raises(ValueError, match="format 99"):
        codec.decode_job(doc)


def test_nan_is_refused_rather_than_written_as_invalid_json() -> None:
    job = new_job()
    job.progress = float("nan")
    with pytest.raises(ValueError):
        codec.dumps(codec.encode_job(job))


def test_an_at_risk_amount_comes_back_exact_and_older_documents_have_none() -> None:
    job = finished_job()
    job.attempts[0].at_risk_usd = ESTIMATE
    assert round_trip(job).attempts[0].at_risk_usd == ESTIMATE == round_trip(job).at_risk_usd
    doc = codec.encode_job(finished_job())
    for attempt in doc["attempts"]:
        del attempt["at_risk_usd"]  # written before at-risk bookkeeping existed
    assert codec.decode_job(doc).at_risk_usd == Decimal(0)


def test_infinity_is_refused_too() -> None:
    job = new_job()
    job.plan = {"latency_s": float("inf")}
    with pytest.raises(ValueError):
        codec.dumps(codec.encode_job(job))


@pytest.mark.parametrize("text", ["un café, s'il vous plaît 🦊", "NaN and Infinity are only words here",
                                  "a lone surrogate \ud800 stays escaped", 'quotes " and \\ backslashes'])
def test_a_document_reads_back_as_json_would_have_written_it(text: str) -> None:
    # the fast encoder, or json where it would differ: the same document either way
    job = finished_job()
    job.notes, job.plan = [text], {"label": text, "latency_s": 1e16, "tiny": 1e-7, "big": 2**70}
    doc = codec.encode_job(job)
    assert json.loads(codec.dumps(doc)) == json.loads(json.dumps(doc)) == doc


def test_a_vendor_job_dict_has_every_field_and_rebuilds_it() -> None:
    job = vendor_job()
    assert set(job.to_dict()) == {f.name for f in dataclasses.fields(VendorJob)}
    assert VendorJob.from_dict(job.to_dict()) == job


def test_an_edits_source_length_comes_back_and_older_documents_have_none() -> None:
    job = new_job()
    job.source_s = 9.04
    assert round_trip(job).source_s == 9.04 and round_trip(job).seconds == 9.04
    doc = codec.encode_job(new_job())
    del doc["source_s"]  # written before an edit recorded its source's length
    assert codec.decode_job(doc).source_s is None and codec.decode_job(doc).seconds == 5


def test_the_written_document_is_the_jobs_encoding_and_follows_a_new_request() -> None:
    # the request's part is encoded once per job and kept on it (codec.request_json): a job
    # given another request object must be written with that one, never the kept text
    job = finished_job()
    assert json.loads(codec.job_json(job)) == codec.encode_job(job)
    assert codec.job_json(job) == codec.job_json(job)
    job.request = job.request.model_copy(update={"prompt": "another take"})
    assert json.loads(codec.job_json(job)) == codec.encode_job(job)
    assert json.loads(codec.job_json(job))["request"]["prompt"] == "another take"
    assert codec.fingerprint(job.request) == codec.digest(codec.encode_request(job.request))


def test_states_are_written_as_their_plain_values() -> None:
    # the codec writes str(status) (a C call) for status.value (a Python property): the same
    # plain text only while the enums are StrEnums
    from gateway.job import AttemptOutcome, JobStatus

    for member in (*JobStatus, *AttemptOutcome):
        assert type(str(member)) is str and str(member) == member.value
    doc = json.loads(codec.job_json(finished_job()))
    assert doc["status"] == "succeeded" and [a["outcome"] for a in doc["attempts"]] == ["rejected", "succeeded"]


@pytest.mark.parametrize("prompt", ["a red fox", "un café 🦊 \u2028", 'quotes " and \\ \x01'])
def test_a_fingerprint_is_the_same_bytes_as_before(prompt: str) -> None:
    # fingerprints are stored and compared across processes and versions (a retried
    # idempotency key at another replica): the canonical JSON must not change with the encoder
    encoded = codec.encode_request(new_job(prompt, key="k").request)
    canonical = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert codec.digest(encoded) == hashlib.sha256(canonical.encode()).hexdigest()


def test_a_row_is_at_risk_when_any_attempt_is() -> None:
    job = finished_job()
    assert JobRow.of(job).at_risk is False and job.at_risk_usd == 0
    job.attempts[-1].at_risk_usd = ESTIMATE  # the last of several: every attempt is looked at
    assert JobRow.of(job).at_risk is True
    assert JobRow.of(new_job()).at_risk is False  # no attempt yet
