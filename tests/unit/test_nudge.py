"""A poll's sleep that a vendor webhook cuts short (``vendor_calls.Nudge``), without a
second task per poll: the nudge cancels the sleep, and only its own cancellation is absorbed."""

from __future__ import annotations

import asyncio

import pytest

from gateway.vendor_calls import Nudge


async def sleep_forever(_seconds: float) -> None:
    """A sleep that only ends when something interrupts it (no clock involved)."""
    await asyncio.Event().wait()


async def test_a_nudge_wakes_a_sleeping_poll() -> None:
    nudge = Nudge()
    sleeper = asyncio.create_task(nudge.sleep(sleep_forever, 60.0))
    await asyncio.sleep(0)  # let it start sleeping
    nudge.set()
    await asyncio.wait_for(sleeper, 1.0)
    assert not sleeper.cancelled()


async def test_a_second_nudge_during_the_same_sleep_is_harmless() -> None:
    nudge = Nudge()
    sleeper = asyncio.create_task(nudge.sleep(sleep_forever, 60.0))
    await asyncio.sleep(0)
    nudge.set()
    nudge.set()  # a duplicated webhook
    await asyncio.wait_for(sleeper, 1.0)
    assert not sleeper.cancelled()


async def test_a_nudge_outside_the_sleep_cancels_nothing() -> None:
    nudge = Nudge()
    nudge.set()  # arrives while the poll is busy with its HTTP call
    await asyncio.sleep(0)  # that call goes on undisturbed
    assert asyncio.current_task().cancelling() == 0
    assert nudge.is_set()  # and the next wait returns at once (VendorCalls._wait)


async def test_a_cancellation_from_outside_still_cancels_the_poll() -> None:
    nudge = Nudge()
    sleeper = asyncio.create_task(nudge.sleep(sleep_forever, 60.0))
    await asyncio.sleep(0)
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    assert sleeper.cancelled()


async def test_a_nudge_and_an_outside_cancellation_together_cancel() -> None:
    nudge = Nudge()
    sleeper = asyncio.create_task(nudge.sleep(sleep_forever, 60.0))
    await asyncio.sleep(0)
    nudge.set()
    sleeper.cancel()  # e.g. the job's deadline, in the same loop iteration
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    assert sleeper.cancelled()


async def test_a_deadline_around_a_nudged_sleep_still_fires_later() -> None:
    nudge = Nudge()

    async def poll_twice() -> None:
        async with asyncio.timeout(0.2):
            await nudge.sleep(sleep_forever, 60.0)  # nudged: returns early
            nudge.clear()
            await nudge.sleep(sleep_forever, 60.0)  # not nudged: the deadline ends it

    task = asyncio.create_task(poll_twice())
    await asyncio.sleep(0)
    nudge.set()
    with pytest.raises(TimeoutError):
        await task
