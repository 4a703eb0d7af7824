"""How the flow reaches a stage: a Ray Serve handle, or a model in this process.

Both expose `await stage.call(method, *args, **kwargs)`, so the flow is written
once and its Serve overhead can be measured against the same flow in-process.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class Stage(Protocol):
    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any: ...

    async def ready(self) -> bool: ...


class LocalStage:
    """A model object in this process; calls run in a worker thread to keep the event loop free."""

    def __init__(self, model: Any):
        self.model = model

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.model, method), *args, **kwargs)

    async def ready(self) -> bool:
        return True  # constructed means loaded


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
        try:
            return await getattr(self.handle, method).remote(*args, **kwargs)
        except self.retry_on:
            return await getattr(self.handle, method).remote(*args, **kwargs)

    async def ready(self) -> bool:
        # Answers only once a replica has finished loading its model.
        return await self.handle.ready.remote()
