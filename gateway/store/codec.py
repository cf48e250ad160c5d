"""A job as a JSON-safe document and back, exactly: what the stores write.

``VideoJob.to_dict()`` is a *presentation* view (money as floats, data URIs
summarised, vendor jobs reduced to an id); it cannot rebuild a job. This codec can:

* money is a decimal string, so ``Decimal("0.1")`` comes back as ``Decimal("0.1")``;
* the request is dumped by pydantic and rebuilt through ``VideoRequest.parse``;
  images are kept as given (kind + value): a local file stays a path and a data URI
  stays whole, and rebuilding does not re-read the file, so a job whose file has
  since moved can still be loaded and reported;
* the fingerprint of the request the caller sent is kept, so a reused idempotency key
  can be told from a retry even across processes;
* a vendor job keeps only its ``credential_ref`` ("env:FAL_KEY"), never a key: the
  key lives in ``ProviderSettings`` and nothing here reaches it.

``FORMAT`` is written into every document so a later layout can read older ones.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

import pydantic_core

from gateway.job import Attempt, AttemptOutcome, JobStatus, VideoJob, VideoOutput
from gateway.provider import VendorJob
from gateway.request import VideoRequest

FORMAT = 1


def dumps(doc: dict[str, Any]) -> str:
    """Compact JSON; NaN and infinities are refused rather than written as invalid JSON.

    pydantic-core's encoder (a dependency already) writes a job document in a quarter of
    ``json.dumps``'s time, and every save writes one (bench/store_writes.py). It spells a
    non-finite float ``NaN`` / ``Infinity`` instead of refusing it, and refuses some strings
    json takes (a lone surrogate): then ``json`` has the last word, so what is written, or
    refused, parses back as ``json.dumps`` would have it (non-ASCII is written as UTF-8)."""
    try:
        text = pydantic_core.to_json(doc)
    except ValueError:
        return _strict_json(doc)
    if b"NaN" in text or b"Infinity" in text:  # a non-finite float, or only a string saying so
        return _strict_json(doc)
    return text.decode()


def _strict_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def encode_job(job: VideoJob) -> dict[str, Any]:
    return {**_state(job), "request": encode_request(job.request)}


def job_json(job: VideoJob) -> str:
    """``dumps(encode_job(job))``, with the request's part written once per job: a request
    never changes (frozen), and a job is written four times or more (bench/jobpath.py)."""
    request = request_json(job)
    state = dumps(_state(job))
    return '{"request":' + request + "," + state[1:]


def request_json(job: VideoJob) -> str:
    """The job's request as JSON text, kept on the job for its next writes."""
    cached = job.request_json
    if cached is None or cached[0] is not job.request:  # a new request object: encoded anew
        cached = job.request_json = (job.request, dumps(encode_request(job.request)))
    return cached[1]


def _state(job: VideoJob) -> dict[str, Any]:
    """Everything of the job document but its request."""
    return {
        "format": FORMAT,
        "id": job.id,
        "status": str(job.status),  # a StrEnum's value: str() is a C call, ``.value`` a Python property
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "attempts": [encode_attempt(a) for a in job.attempts],
        "output": None if job.output is None else encode_output(job.output),
        "error": job.error,
        "progress": job.progress,
        "plan": job.plan,
        "degradations": list(job.degradations),
        "notes": list(job.notes),
        "resolution": job.resolution,
        "owner": job.owner,
        "webhooks": list(job.webhooks),
        "fingerprint": job.fingerprint,
        "parent_id": job.parent_id,
        "source_s": job.source_s,
    }


def decode_job(doc: dict[str, Any]) -> VideoJob:
    if doc.get("format") != FORMAT:
        raise ValueError(f"job document format {doc.get('format')!r} is not {FORMAT}")
    return VideoJob(
        request=decode_request(doc["request"]),
        id=doc["id"],
        status=JobStatus(doc["status"]),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        attempts=[decode_attempt(a) for a in doc["attempts"]],
        output=None if doc["output"] is None else VideoOutput(**doc["output"]),
        error=doc["error"],
        progress=doc["progress"],
        plan=doc["plan"],
        degradations=list(doc["degradations"]),
        notes=list(doc["notes"]),
        resolution=doc["resolution"],
        owner=doc.get("owner"),
        webhooks=list(doc.get("webhooks", [])),
        fingerprint=doc.get("fingerprint"),
        parent_id=doc.get("parent_id"),
        source_s=doc.get("source_s"),
    )


def encode_request(request: VideoRequest) -> dict[str, Any]:
    data = request.model_dump(mode="json")
    # a frozenset dumps in hash order; sorted, equal requests give equal documents
    data["allow"] = sorted(data["allow"])
    return data


def fingerprint(request: VideoRequest) -> str:
    """A digest of the request's canonical document: equal requests, however they were
    spelled (field order, header or body key, OpenAI size or aspect + resolution), give
    equal digests."""
    return digest(encode_request(request))


#: ``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)``'s own encoder,
#: made once: ``dumps`` with arguments builds one per call, ~10 % of each digest (docs/benchmarks.md 6.jobstore)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(encoded: dict[str, Any]) -> str:
    """``fingerprint`` of a request already encoded (``encode_request``), which it leaves as it is."""
    return hashlib.sha256(_CANONICAL.encode(encoded).encode()).hexdigest()


def remember_request(job: VideoJob, encoded: dict[str, Any]) -> None:
    """Keep ``encoded`` (``encode_request(job.request)``, e.g. made for its fingerprint) as the
    job's request document: its first write need not encode the request again."""
    job.request_json = (job.request, dumps(encoded))


def decode_request(data: dict[str, Any]) -> VideoRequest:
    # images arrive as {"kind", "value"} dicts, which the request takes as they are
    return VideoRequest.parse(data)


def encode_attempt(attempt: Attempt) -> dict[str, Any]:
    return {
        "provider": attempt.provider,
        "vendor_model": attempt.vendor_model,
        "started_at": attempt.started_at,
        "attempt_key": attempt.attempt_key,
        "outcome": str(attempt.outcome),
        "ended_at": attempt.ended_at,
        "vendor_job": None if attempt.vendor_job is None else attempt.vendor_job.to_dict(),
        "error": attempt.error,
        # money as exact decimal strings (inline, not a function call each: every save encodes every attempt)
        "estimated_usd": str(attempt.estimated_usd),
        "cost_usd": str(attempt.cost_usd),
        "vendor_units": None if attempt.vendor_units is None else str(attempt.vendor_units),
        "unit_name": attempt.unit_name,
        "submit_retries": attempt.submit_retries,
        "polls": attempt.polls,
        "at_risk_usd": str(attempt.at_risk_usd),
    }


def decode_attempt(data: dict[str, Any]) -> Attempt:
    vendor_job = data["vendor_job"]
    return Attempt(
        provider=data["provider"],
        vendor_model=data["vendor_model"],
        started_at=data["started_at"],
        attempt_key=data["attempt_key"],
        outcome=AttemptOutcome(data["outcome"]),
        ended_at=data["ended_at"],
        vendor_job=None if vendor_job is None else VendorJob.from_dict(vendor_job),
        error=data["error"],
        estimated_usd=Decimal(data["estimated_usd"]),
        cost_usd=Decimal(data["cost_usd"]),
        vendor_units=None if data["vendor_units"] is None else Decimal(data["vendor_units"]),
        unit_name=data["unit_name"],
        submit_retries=data["submit_retries"],
        polls=data["polls"],
        # absent from documents written before at-risk bookkeeping: nothing was at risk then
        at_risk_usd=Decimal(data.get("at_risk_usd") or 0),
    )


def encode_output(output: VideoOutput) -> dict[str, Any]:
    return {
        "url": output.url,
        "content_type": output.content_type,
        "path": output.path,
        "uri": output.uri,
        "size_bytes": output.size_bytes,
        "sha256": output.sha256,
    }

