"""How the flow reaches a stage: a Ray Serve handle, or a worker in this process.

Both expose `await stage.call(method, *args, **kwargs)`, so the flow is written
once and its Serve overhead can be measured against the same flow in-process.
Image models (generators, the refiner) also expose `stage.stream(method, ...)`:
the same call as an async iterator of Step events ending with Done(answer) (the
worker's `<method>_stream`, see workers.py); leaving the iteration early lets the
model stop at its next step.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from contextlib import contextmanager
from typing import Any, Protocol

from dalleflow.service.errors import StageUnavailable
from dalleflow.service.progress import Done, Step
from dalleflow.service.workers import worker_for


class Stage(Protocol):
    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any: ...

    async def ready(self) -> bool: ...

    def stream(self, method: str, *args: Any, **kwargs: Any) -> AsyncIterator[Step | Done]: ...


class LocalStage:
    """A model in this process, through its worker (workers.py) as a deployment runs it;
    blocking calls run in a thread to keep the event loop free."""

    def __init__(self, model: Any):
        self.worker = worker_for(model)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        function = getattr(self.worker, method)
        if inspect.iscoroutinefunction(function):
            return await function(*args, **kwargs)
        return await asyncio.to_thread(function, *args, **kwargs)

    async def ready(self) -> bool:
        return True  # constructed means loaded

    async def stream(self, method: str, *args: Any, **kwargs: Any) -> AsyncIterator[Step | Done]:
        async for event in getattr(self.worker, f"{method}_stream")(*args, **kwargs):
            yield event


class StageCancelled(Exception):
    """Ray cancelled a stage call that its caller had not cancelled."""


@contextmanager
def cancelled_by_ray_is_an_error(stage: str):
    """Ray answers a call that it cancelled itself (TaskCancelledError: a replica's
    request cancelled, or a parent request that Serve believes cancelled) with
    asyncio.CancelledError in the caller. The caller's task was not cancelled, so
    that would end its task silently; here it becomes an error, which fails the call."""
    try:
        yield
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise  # the caller is being cancelled: pass it on
        raise StageCancelled(f"{stage}: Ray cancelled the call") from None


@contextmanager
def nothing_ran_is_unavailable(stage: str):
    """Ray refusing a call before any replica took it (every replica's queue full, or none
    running) is StageUnavailable: the request may be sent again; anything else may have run."""
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    try:
        yield
    except (BackPressureError, DeploymentUnavailableError) as error:
        raise StageUnavailable(f"{stage}: no replica could take the call") from error


class HandleStage:
    """A Ray Serve DeploymentHandle.

    A call that fails with one of `retry_on` (the ingress passes Ray's errors for
    a replica that died or cannot be reached) runs once more, on another replica:
    every stage call is idempotent (seeded), so the answer is the same.
    """

    def __init__(self, handle: Any, retry_on: tuple[type[BaseException], ...] = ()):
        self.handle = handle
        self.retry_on = retry_on

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with cancelled_by_ray_is_an_error(self.handle.deployment_name), nothing_ran_is_unavailable(self.handle.deployment_name):
            try:
                return await getattr(self.handle, method).remote(*args, **kwargs)
            except self.retry_on:
                return await getattr(self.handle, method).remote(*args, **kwargs)

    async def ready(self) -> bool:
        # Answers only once a replica has finished loading its model.
        return await self.handle.ready.remote()

    async def stream(self, method: str, *args: Any, **kwargs: Any) -> AsyncIterator[Step | Done]:
        # The deployment's `<method>_stream` generator method (workers.py), streamed back.
        events = getattr(self.handle.options(stream=True), f"{method}_stream").remote(*args, **kwargs)
        try:
            with cancelled_by_ray_is_an_error(self.handle.deployment_name), nothing_ran_is_unavailable(self.handle.deployment_name):
                async for event in events:
                    yield event
        finally:
            # Also when this request is cancelled or its reader leaves early: the
            # replica gets CancelledError and stops the model at its next step.
            events.cancel()
