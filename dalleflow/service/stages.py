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
    """A Ray Serve DeploymentHandle."""

    def __init__(self, handle: Any):
        self.handle = handle

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.handle, method).remote(*args, **kwargs)

    async def ready(self) -> bool:
        # Answers only once a replica has finished loading its model.
        return await self.handle.ready.remote()
