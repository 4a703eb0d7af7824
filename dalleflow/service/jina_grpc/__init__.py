"""dalle-flow's 2022 client code over `grpc://`: Jina's gRPC protocol, beside the HTTP port.

    server_url = 'grpc://127.0.0.1:51005'          # dalle-flow's own port
    doc = Document(text=prompt).post(server_url, parameters={'num_images': 8})

Jina's client sends DataRequestProto messages on the bidirectional stream
`jina.JinaRPC/Call` (its default) or the single-request `jina.JinaSingleDataRequestRPC/
process_single_data` (stream=False), and reads one DataRequestProto back per request,
matched by header.request_id. Each request here is turned into the JSON body Jina's HTTP
client would have sent and answered by the same code (service/jina_compat.respond), so the
two transports cannot differ; the answer goes back as protobuf.

Why a server of its own: Ray Serve's gRPC proxy serves unary and server-streaming methods of
the app's own services, not a client-streaming or bidirectional one such as JinaRPC/Call, and
it routes by an `application` metadata key that Jina's client does not send. So the ingress
replica runs this grpc.aio server on its own event loop, beside its FastAPI app, over the
same Flow; on Linux gRPC binds with SO_REUSEPORT, so every ingress replica on a node can
listen on the one port and the kernel spreads connections over them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from dalleflow.service.jina_grpc.jina_protocol_pb2 import DataRequestProto, DocumentProto

logger = logging.getLogger(__name__)

Respond = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
# Docs carry PNGs as data URIs: room for dalle-flow's 36 variations in one answer.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def body_of(request: DataRequestProto) -> dict[str, Any]:
    """The JSON body Jina's HTTP client sends for the same request."""
    header = request.header
    body: dict[str, Any] = {"header": {"request_id": header.request_id}}
    for field in ("exec_endpoint", "target_executor"):
        if header.HasField(field):
            body["header"][field] = getattr(header, field)
    if request.HasField("parameters"):
        body["parameters"] = json_format.MessageToDict(request.parameters)
    documents = request.data.WhichOneof("documents")
    if documents == "docs_bytes":
        raise ValueError("data: docs_bytes (docarray's serialized form) is not read here; send docs")
    body["data"] = [doc_of(doc) for doc in request.data.docs.docs] if documents == "docs" else []
    return body


def doc_of(doc: DocumentProto) -> dict[str, Any]:
    """A DocumentProto as docarray 0.x's JSON (the fields jina_compat reads)."""
    json: dict[str, Any] = {"id": doc.id}
    content = doc.WhichOneof("content")
    if content == "text":
        json["text"] = doc.text
    elif content == "blob":
        json["blob"] = base64.b64encode(doc.blob).decode()
    for field in ("uri", "mime_type", "parent_id"):
        if getattr(doc, field):
            json[field] = getattr(doc, field)
    if doc.HasField("tags"):
        json["tags"] = json_format.MessageToDict(doc.tags)
    if doc.HasField("embedding") and doc.embedding.HasField("dense"):
        dense = doc.embedding.dense
        json["embedding"] = np.frombuffer(dense.buffer, dtype=np.dtype(dense.dtype)).astype(float).tolist()
    if doc.matches:
        json["matches"] = [doc_of(match) for match in doc.matches]
    return json


def proto_of(body: dict[str, Any]) -> DataRequestProto:
    """An answer of jina_compat.respond as the DataRequestProto Jina's client reads."""
    answer = DataRequestProto()
    header = body.get("header", {})
    answer.header.request_id = header.get("request_id") or ""
    for field in ("exec_endpoint", "target_executor"):
        if header.get(field) is not None:
            setattr(answer.header, field, header[field])
    status = header.get("status", {})
    answer.header.status.code = status.get("code", 0)
    answer.header.status.description = status.get("description", "")
    if "exception" in status:
        exception = answer.header.status.exception
        exception.name = status["exception"].get("name", "")
        exception.args.extend(str(arg) for arg in status["exception"].get("args", []))
    if "data" in body:
        answer.data.docs.docs.extend(doc_proto(doc) for doc in body["data"])
    return answer


def doc_proto(doc: dict[str, Any]) -> DocumentProto:
    proto = DocumentProto(id=doc.get("id") or "")
    if doc.get("text") is not None:
        proto.text = doc["text"]
    elif doc.get("blob"):
        proto.blob = base64.b64decode(doc["blob"])
    for field in ("uri", "mime_type", "parent_id"):
        if doc.get(field):
            setattr(proto, field, doc[field])
    if doc.get("tags"):
        proto.tags.update(doc["tags"])
    if doc.get("embedding") is not None:
        vector = np.asarray(doc["embedding"], dtype="<f4")
        proto.embedding.dense.buffer = vector.tobytes()
        proto.embedding.dense.shape.extend(vector.shape)
        proto.embedding.dense.dtype = vector.dtype.str
        proto.embedding.cls_name = "numpy"
    for name, score in (doc.get("scores") or {}).items():
        proto.scores[name].value = score["value"]
    proto.matches.extend(doc_proto(match) for match in doc.get("matches") or [])
    return proto


class JinaGrpcServer:
    """Jina's two data RPCs on `address` (host:port), each request answered by `respond`.
    With API keys on, a call carries `authorization: Bearer <key>` metadata, as an HTTP
    request carries the header (jina's client sends it with post(..., metadata=...))."""

    def __init__(self, respond: Respond, address: str, api_keys=None):
        self.respond = respond
        self.address = address
        self.api_keys = api_keys
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    async def answer(self, request: DataRequestProto) -> DataRequestProto:
        try:
            body = body_of(request)
        except Exception as error:  # a request this side cannot read: Jina's error answer, not a broken stream
            from dalleflow.service.jina_compat import error_body

            return proto_of(error_body(request.header.request_id, error))
        return proto_of(await self.respond(body))

    async def _check_key(self, context) -> None:
        if self.api_keys is None:
            return
        authorization = dict(context.invocation_metadata()).get("authorization")
        if self.api_keys.challenge("POST", "/post", authorization) is not None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "authorization: Bearer <API key> metadata is required")

    async def _call(self, requests: AsyncIterator[DataRequestProto], context) -> AsyncIterator[DataRequestProto]:
        await self._check_key(context)
        # Requests on one stream are answered as each finishes (Jina matches them by request_id).
        answers: asyncio.Queue[DataRequestProto | None] = asyncio.Queue()

        async def read() -> None:
            async with asyncio.TaskGroup() as group:
                async for request in requests:
                    group.create_task(self._answer_into(request, answers))
            await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
        finally:
            reader.cancel()

    async def _answer_into(self, request: DataRequestProto, answers: asyncio.Queue) -> None:
        await answers.put(await self.answer(request))

    async def _single(self, request: DataRequestProto, context) -> DataRequestProto:
        await self._check_key(context)
        return await self.answer(request)

    async def start(self) -> int:
        options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]  # fmt: skip
        self._server = grpc.aio.server(options=options)
        self._server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("jina.JinaRPC", {"Call": grpc.stream_stream_rpc_method_handler(
                self._call, DataRequestProto.FromString, DataRequestProto.SerializeToString)}),
            grpc.method_handlers_generic_handler("jina.JinaSingleDataRequestRPC", {
                "process_single_data": grpc.unary_unary_rpc_method_handler(
                    self._single, DataRequestProto.FromString, DataRequestProto.SerializeToString)}),
        ))  # fmt: skip
        try:
            self.port = self._server.add_insecure_port(self.address)
        except RuntimeError as error:  # the port is taken: HTTP (and Jina over HTTP) still serve
            logger.error("jina_grpc: cannot listen on %s (%s); dalle-flow's gRPC clients will not connect", self.address, error)
            self.port = 0
            return 0
        await self._server.start()
        logger.info("dalle-flow's gRPC protocol on %s", self.address)
        return self.port

    async def stop(self, grace_s: float = 5.0) -> None:
        if self._server is not None:
            await self._server.stop(grace_s)
