"""Streamed answers and jobs: the calls behind Client.generate_stream, Client.submit_generate...

A stream is the server's NDJSON answer (`Accept: application/x-ndjson`), read line by
line into the schema's typed events: ProgressEvent per model step, GeneratedEvent per
generator, and ResultEvent last. An error event (the request failed after the stream
began) is raised as the RequestError the plain call would have raised. Leaving the
iteration early (break, close()) closes the connection, which cancels the work on
the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
import httpx
from pydantic import ValidationError

from .errors import DalleflowError, RequestError
from .schemas import (
    FINISHED_JOB_STATUSES,
    NDJSON,
    STREAM_EVENT,
    ErrorEvent,
    GeneratedEvent,
    Job,
    ProgressEvent,
    ResultEvent,
)

# What a stream yields; its last event is always a ResultEvent.
Event = ProgressEvent | GeneratedEvent | ResultEvent
STREAM_HEADERS = {"accept": NDJSON}


def read_event(line: str, response: httpx.Response) -> Event:
    try:
        event = STREAM_EVENT.validate_json(line)
    except ValidationError as error:
        raise DalleflowError(f"unexpected event from {response.request.url}: {error}") from error
    if isinstance(event, ErrorEvent):
        raise RequestError(event.status_code, event.detail, response.request.method, str(response.request.url))
    return event


def _ended_early(response: httpx.Response) -> DalleflowError:
    return DalleflowError(f"the stream from {response.request.url} ended before the result")


def iter_events(response: httpx.Response) -> Iterator[Event]:
    """The events of an open, successful streamed answer."""
    for line in response.iter_lines():
        if line.strip():
            event = read_event(line, response)
            yield event
            if isinstance(event, ResultEvent):
                return
    raise _ended_early(response)


async def aiter_events(response: httpx.Response) -> AsyncIterator[Event]:
    async for line in response.aiter_lines():
        if line.strip():
            event = read_event(line, response)
            yield event
            if isinstance(event, ResultEvent):
                return
    raise _ended_early(response)


def read_job(response: httpx.Response) -> Job:
    return Job.model_validate_json(response.content)


def is_finished(job: Job) -> bool:
    return job.status in FINISHED_JOB_STATUSES
