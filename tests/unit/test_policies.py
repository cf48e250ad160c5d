import random
from pathlib import Path

import httpx
import pytest

from gateway.errors import AmbiguousSubmit, AuthenticationFailed, RateLimited, Unavailable, redact
from gateway.home import reelgate_home
from gateway.policies import (
    backoff_s,
    expected_from_progress,
    next_poll_delay,
    retry_after_s,
    should_retry_submit,
    submit_backoff,
)
from gateway.provider import Secret
from gateway.storage import default_videos_dir
from gateway.store.sqlite import default_sqlite_path


def test_retry_only_what_the_vendor_rejected_and_may_accept_later():
    assert should_retry_submit(Unavailable("x", provider="p"), 0, 2, 30)
    assert not should_retry_submit(Unavailable("x", provider="p"), 2, 2, 30)
    assert not should_retry_submit(AuthenticationFailed("x", provider="p"), 0, 2, 30)
    assert not should_retry_submit(AmbiguousSubmit("x", provider="p"), 0, 2, 30)
    assert not should_retry_submit(RateLimited("x", provider="p", retry_after=60), 0, 2, 30)


def test_backoff_honours_retry_after_else_full_jitter():
    rng = random.Random(1)
    assert submit_backoff(RateLimited("x", provider="p", retry_after=3), 0, 0.5, 8, rng) == 3
    waits = [submit_backoff(Unavailable("x", provider="p"), n, 0.5, 8, rng) for n in range(10)]
    assert all(0 <= w <= min(8, 0.5 * 2**n) for n, w in enumerate(waits))


def test_poll_delay_grows_to_the_cap_and_takes_hints():
    rng = random.Random(2)
    delays = [next_poll_delay(n, 1.0, 10.0, rng) for n in range(12)]
    assert delays[0] < 1.3 and max(delays) <= 12.0 and delays[-1] >= 8.0
    assert next_poll_delay(0, 1.0, 10.0, rng, hint_s=4.0) == 4.0  # a hint is a floor
    assert next_poll_delay(0, 1.0, 10.0, rng, hint_s=60.0) == 60.0


def _polls_until(finish_s: float, expected_s: float, rng: random.Random) -> int:
    elapsed, polls = 0.0, 0
    while elapsed < finish_s:
        elapsed += next_poll_delay(polls, 2.0, 10.0, rng, expected_s=expected_s, elapsed_s=elapsed)
        polls += 1
    return polls


def test_expected_duration_keeps_polls_few_for_long_jobs():
    rng = random.Random(3)
    # a job expected at 130 s that takes 60..200 s: few polls whatever it really takes
    counts = sorted(_polls_until(finish, 130.0, rng) for finish in range(60, 201, 10))
    assert counts[len(counts) // 2] <= 10 and counts[-1] <= 20
    # the first poll waits about half the expected time, never more than the early cap
    first = next_poll_delay(0, 2.0, 10.0, rng, expected_s=1000.0, elapsed_s=0.0)
    assert first <= 120.0 * 1.2


def test_progress_extrapolates_the_finish_at_a_steady_pace():
    # 40 s of 100 s elapsed were queueing; a quarter done after 60 s running: 180 s to go
    assert expected_from_progress(100.0, 60.0, 0.25) == 100.0 + 180.0
    assert expected_from_progress(100.0, 60.0, 0.99) == pytest.approx(100.0 + 60.0 / 99)
    # nothing usable: no figure, too early to extrapolate, finished, or no running time
    for progress, running in ((None, 60.0), (0.01, 60.0), (1.0, 60.0), (0.5, 0.0)):
        assert expected_from_progress(100.0, running, progress) is None


def test_secrets_are_redacted_from_messages_by_value():
    Secret("zz_held_key_42")  # any key the process holds is scrubbed by value, whatever its shape
    Secret("afk_secret99")
    text = 'Authorization: Key zz_held_key_42 {"api_key": "zz_held_key_42"} bare zz_held_key_42'
    assert redact(text) == 'Authorization: Key *** {"api_key": "***"} bare ***'
    assert "afk_secret99" not in str(Unavailable("X-API-Key=afk_secret99", provider="p"))


def test_one_backoff_doubles_to_its_cap_less_its_jitter():
    assert [backoff_s(n, 1.0, 5.0) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff_s(2, 1.0, 60.0, jitter=0.5, rng=lambda: 1.0) == 2.0  # at most half taken off
    assert backoff_s(2, 1.0, 60.0, jitter=1.0, rng=lambda: 0.25) == 3.0


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, None),
    ({"Retry-After": " "}, None),
    ({"Retry-After": "soon"}, None),
    ({"Retry-After": "nan"}, None),
    ({"Retry-After": "-3"}, 0.0),
    ({"Retry-After": "1.5"}, 1.5),
    # an HTTP-date against the answer's own Date, else against now
    ({"Date": "Tue, 24 Nov 2026 10:00:00 GMT", "Retry-After": "Tue, 24 Nov 2026 10:00:30 GMT"}, 30.0),
    ({"Retry-After": "Tue, 24 Nov 2026 10:00:12 GMT"}, 12.0),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
])
def test_one_retry_after_parser(headers: dict[str, str], expected: float | None):
    now = 1795514400.0  # Tue, 24 Nov 2026 10:00:00 GMT
    assert retry_after_s(httpx.Headers(headers), now) == expected


def test_one_reelgate_home(tmp_path):
    env = {"REELGATE_HOME": str(tmp_path)}
    assert (reelgate_home(env), default_videos_dir(env), default_sqlite_path(env)) == (
        tmp_path, tmp_path / "videos", tmp_path / "reelgate.db")
    assert reelgate_home({}) == Path("~/.reelgate").expanduser()


def test_redaction_leaves_prose_alone():
    # patterns used to turn this into "no API key *** (set APIFRAME_API_KEY)"
    for prose in ("no API key configured (set APIFRAME_API_KEY)", "Bearer authentication failed; check the token",
                  "api_key: field required", "secret: must be whsec_ followed by base64"):
        assert redact(prose) == prose
        assert str(Unavailable(prose, provider="p")).endswith(prose)
