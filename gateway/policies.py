"""Small pure policies with named constants: when to retry, how long to wait, how often to poll.

Randomness and clocks come in as arguments so tests pin them; nothing here sleeps.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from gateway.errors import ProviderError, RateLimited

#: growth of the poll interval per poll: short early (most of a job's news comes late,
#: but a fast vendor should not wait on a slow schedule), longer later
POLL_GROWTH = 1.5
#: +/- share of jitter on every poll, so thousands of jobs do not poll in lockstep
POLL_JITTER = 0.2


def should_retry_submit(error: ProviderError, retries_done: int, max_retries: int, max_retry_after_s: float) -> bool:
    """Retry the same vendor only when it rejected the call (no job exists) and it says
    trying again may work; a Retry-After longer than we are willing to wait falls back."""
    if not error.retryable or not error.fallback_safe or retries_done >= max_retries:
        return False
    if isinstance(error, RateLimited) and error.retry_after is not None:
        return error.retry_after <= max_retry_after_s
    return True


def backoff_s(retries_done: int, base_s: float, cap_s: float, jitter: float = 0.0,
              rng: Callable[[], float] = random.random) -> float:
    """Seconds before the next try: ``base_s`` doubled per retry done, capped at ``cap_s``,
    less a random share of up to ``jitter`` of it (0: none; 1: "full jitter", anywhere up to
    the cap), so many clients failing together do not retry in lock-step."""
    ceiling = min(cap_s, base_s * 2.0**retries_done)
    return ceiling * (1 - jitter * rng()) if jitter else ceiling


def submit_backoff(
    error: ProviderError, retries_done: int, base_s: float, cap_s: float, rng: random.Random
) -> float:
    """Seconds to wait: the vendor's Retry-After when given, else exponential with full jitter."""
    if isinstance(error, RateLimited) and error.retry_after is not None:
        return max(error.retry_after, 0.0)
    return backoff_s(retries_done, base_s, cap_s, jitter=1.0, rng=rng.random)


def retry_after_s(headers: httpx.Headers, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now, or None when absent or unreadable.

    Delta-seconds, or an HTTP-date measured against the answer's own ``Date`` when it has
    one (two vendor timestamps are immune to our clock's skew), else against ``now`` (unix
    seconds, default the wall clock). A time in the past is 0."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        when = _http_date(value)
        if when is None:
            return None
        reference = _http_date(headers.get("date", ""))
        base = reference.timestamp() if reference is not None else (time.time() if now is None else now)
        return max(when.timestamp() - base, 0.0)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _http_date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


#: before the expected finish, wait this share of the time that remains: few polls while
#: nothing can have happened, denser ones as the finish nears (about log2(expected/initial) polls)
EXPECTED_SHARE = 0.5
#: never wait longer than this before one poll, however long the job is expected to take
MAX_EARLY_WAIT_S = 120.0


def next_poll_delay(
    polls_done: int,
    initial_s: float,
    max_s: float,
    rng: random.Random,
    hint_s: float | None = None,
    expected_s: float | None = None,
    elapsed_s: float | None = None,
) -> float:
    """The wait before the next status call.

    With an expected duration, polls halve the remaining time until the expected finish,
    then fall back to the growing schedule (``initial_s`` x1.5 per poll, capped at
    ``max_s``) for a job that runs late. A vendor hint (``poll after N ms``) is a floor:
    the vendor asked us not to come back sooner.
    """
    remaining = (expected_s - elapsed_s) if expected_s is not None and elapsed_s is not None else None
    if remaining is not None and remaining > initial_s:
        base = min(max(remaining * EXPECTED_SHARE, initial_s), MAX_EARLY_WAIT_S)
    else:
        late_polls = polls_done if remaining is None else max(polls_done - _early_polls(expected_s, initial_s), 0)
        base = min(initial_s * (POLL_GROWTH**late_polls), max_s)
    delay = base * rng.uniform(1 - POLL_JITTER, 1 + POLL_JITTER)
    if hint_s is not None and hint_s > 0:
        delay = max(delay, hint_s)
    return delay


def _early_polls(expected_s: float | None, initial_s: float) -> int:
    """How many polls the halving phase takes, so the late schedule starts from its beginning."""
    if not expected_s or expected_s <= initial_s:
        return 0
    return max(int(math.log2(expected_s / initial_s)), 0)


#: below this a vendor's progress figure says too little to extrapolate from
MIN_PROGRESS = 0.05


def expected_from_progress(elapsed_s: float, running_for_s: float, progress: float | None) -> float | None:
    """The job's expected total seconds from the vendor's own progress report.

    A job ``progress`` (0..1) of the way through after ``running_for_s`` seconds of
    running needs about ``running_for_s * (1 - progress) / progress`` more, assuming a
    steady pace; ``None`` when there is no usable figure. A catalogued or learned
    duration is a guess about jobs in general, this one is about this job, so it wins."""
    if progress is None or not MIN_PROGRESS <= progress < 1 or running_for_s <= 0:
        return None
    return elapsed_s + running_for_s * (1 - progress) / progress
