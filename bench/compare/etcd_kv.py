"""A tiny etcd v3 KV client: stubs compiled from etcd_kv.proto on first use.

grpcio-tools (already a build and test dependency) compiles the proto into a
directory of the caller's (the run's temporary directory), which is put on
``sys.path`` because the generated ``*_pb2_grpc`` module imports its ``*_pb2``
twin by its top-level name.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

PROTO = Path(__file__).with_name("etcd_kv.proto")


def load(out_dir: Path) -> tuple[ModuleType, ModuleType]:
    """(etcd_kv_pb2, etcd_kv_pb2_grpc), compiled into ``out_dir`` unless already imported."""
    if "etcd_kv_pb2_grpc" in sys.modules:
        return sys.modules["etcd_kv_pb2"], sys.modules["etcd_kv_pb2_grpc"]
    from grpc_tools import protoc  # grpcio-tools: imported only when etcd is measured

    out_dir.mkdir(parents=True, exist_ok=True)
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO.parent}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO),
        ]
    )
    if code != 0:
        raise RuntimeError(f"protoc could not compile {PROTO} (exit code {code})")
    sys.path.insert(0, str(out_dir))
    return importlib.import_module("etcd_kv_pb2"), importlib.import_module("etcd_kv_pb2_grpc")
