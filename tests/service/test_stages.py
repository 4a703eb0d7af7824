"""How a stage call that Ray cancelled reaches the flow."""

import asyncio

import pytest

from dalleflow.service.stages import StageCancelled, cancelled_by_ray_is_an_error


async def test_a_cancel_the_caller_did_not_ask_for_is_an_error():
    # Ray raises asyncio.CancelledError in a caller whose task nobody cancelled
    # when it cancels the call itself; left as it is, it ends the task silently.
    with pytest.raises(StageCancelled, match="generator-dalle: Ray cancelled the call"):
        with cancelled_by_ray_is_an_error("generator-dalle"):
            raise asyncio.CancelledError()


async def test_the_callers_own_cancel_passes_through():
    started = asyncio.Event()

    async def call():
        with cancelled_by_ray_is_an_error("generator-dalle"):
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(call())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
