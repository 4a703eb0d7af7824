"""Jina's gRPC messages to and from the JSON bodies service/jina_compat answers: what Jina's
client sends over grpc:// reads as what it sends over http://, and the answers come back
with every field the client reads. The transport itself runs with the real jina client in
tests/cluster/test_dalle_flow_config.py."""

import base64

import numpy as np
import pytest
from google.protobuf import json_format

from dalleflow.service.jina_grpc import body_of, proto_of
from dalleflow.service.jina_grpc.jina_protocol_pb2 import DataRequestProto


def test_a_request_reads_as_the_json_body_of_jinas_http_client():
    request = DataRequestProto()
    request.header.request_id = "5e1d"
    request.header.target_executor = "diffusion"
    json_format.ParseDict({"skip_rate": 0.5, "num_images": 36}, request.parameters)
    doc = request.data.docs.docs.add(id="d1", text="a red circle", uri="data:image/png;base64,AAAA")
    doc.tags.update({"image_id": "0" * 32})
    vector = np.arange(4, dtype="<f4")
    doc.embedding.dense.buffer, doc.embedding.dense.dtype = vector.tobytes(), "<f4"
    doc.embedding.dense.shape.append(4)
    assert body_of(request) == {
        "header": {"request_id": "5e1d", "target_executor": "diffusion"},
        "parameters": {"skip_rate": 0.5, "num_images": 36.0},
        "data": [{"id": "d1", "text": "a red circle", "uri": "data:image/png;base64,AAAA",
                  "tags": {"image_id": "0" * 32}, "embedding": [0.0, 1.0, 2.0, 3.0]}],
    }  # fmt: skip


def test_a_blob_reads_as_base64_and_docs_bytes_are_refused():
    request = DataRequestProto()
    request.data.docs.docs.add(id="d1", blob=b"\x89PNG")
    assert body_of(request)["data"] == [{"id": "d1", "blob": base64.b64encode(b"\x89PNG").decode()}]
    request.data.docs_bytes = b"\x00"
    with pytest.raises(ValueError, match="data: docs_bytes"):
        body_of(request)


def test_an_answer_carries_its_matches_scores_tags_and_embedding():
    answer = proto_of({
        "header": {"request_id": "5e1d", "exec_endpoint": "/", "status": {"code": 0}},
        "data": [{"id": "d1", "text": "a red circle", "embedding": [0.5, -1.0], "tags": {"k": "v"},
                  "matches": [{"id": "m1", "uri": "data:image/png;base64,AAAA", "mime_type": "image/png",
                               "tags": {"generator": "glid3", "clip_score": 0.25},
                               "scores": {"clip_score": {"value": 0.25}}}]}],
    })  # fmt: skip
    doc = DataRequestProto.FromString(answer.SerializeToString()).data.docs.docs[0]
    assert (doc.id, doc.text, json_format.MessageToDict(doc.tags)) == ("d1", "a red circle", {"k": "v"})
    assert np.frombuffer(doc.embedding.dense.buffer, dtype=doc.embedding.dense.dtype).tolist() == [0.5, -1.0]
    (match,) = doc.matches
    assert (match.id, match.mime_type, match.scores["clip_score"].value) == ("m1", "image/png", 0.25)
    assert json_format.MessageToDict(match.tags)["generator"] == "glid3"
    assert answer.header.exec_endpoint == "/" and answer.header.status.code == 0


def test_an_error_answer_is_jinas_error_status():
    from dalleflow.service.jina_compat import error_body

    answer = proto_of(error_body("5e1d", ValueError("num_images: at most 16")))
    assert answer.header.status.code == 1 and answer.header.request_id == "5e1d"
    assert answer.header.status.exception.name == "ValueError"
    assert "num_images" in answer.header.status.description
