"""Regenerates dalleflow/service/jina_grpc/jina_protocol_pb2.py from its .proto with grpcio-tools'
protoc (a development tool only; the service needs protobuf and grpcio, which Ray brings).

    pip install --target /tmp/grpctools --no-deps grpcio-tools
    PYTHONPATH=/tmp/grpctools .venv/bin/python scripts/make_jina_protocol.py
"""

from pathlib import Path

import grpc_tools
from grpc_tools import protoc

FOLDER = Path(__file__).resolve().parents[1] / "dalleflow" / "service" / "jina_grpc"
includes = Path(grpc_tools.__file__).parent / "_proto"
code = protoc.main(["protoc", f"-I{FOLDER}", f"-I{includes}", f"--python_out={FOLDER}", str(FOLDER / "jina_protocol.proto")])
raise SystemExit(code)
