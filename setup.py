"""Build only: compile native/ into edgekv._speedups and proto/ into edgekv/v1/
(*_pb2, *_pb2_grpc, and *_connect for the HTTP door).

Metadata lives in pyproject.toml. A failed Cython compile fails the install: the
pure-Python fallback exists for parity tests and odd platforms, not to hide a
broken build.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext
from setuptools.command.build_py import build_py as _build_py

ROOT = Path(__file__).resolve().parent
PROTO_DIR = ROOT / "proto"
DEBUG = os.environ.get("EDGEKV_DEBUG") == "1"
# Protos whose services the HTTP door serves over Connect and gRPC-Web.
CONNECT_PROTOS = ("kv", "cluster")


def compile_protos() -> None:
    """Generate edgekv/v1/*_pb2*.py(i) from proto/edgekv/v1/*.proto."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(
        str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "edgekv" / "v1").glob("*.proto")
    )
    if not protos:
        return
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        f"--pyi_out={ROOT}",
        *protos,
    ]
    # The Connect / gRPC-Web door (edgekv/http) serves the public services with
    # connectrpc: its generated *_connect.py modules, on google.protobuf messages.
    public = [p for p in protos if Path(p).stem in CONNECT_PROTOS]
    connect_args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--plugin=protoc-gen-connectrpc={connect_plugin()}",
        f"--connectrpc_out=protobuf=google:{ROOT}",
        *public,
    ]
    cwd = os.getcwd()
    os.chdir(PROTO_DIR)
    try:
        if protoc.main(args) != 0:
            sys.exit("protoc failed; see the messages above")
        if public and protoc.main(connect_args) != 0:
            sys.exit("protoc (protoc-gen-connectrpc) failed; see the messages above")
    finally:
        os.chdir(cwd)


def connect_plugin() -> str:
    """The protoc-gen-connectrpc executable (a build requirement, installed beside Python)."""
    beside = Path(sys.executable).parent / "protoc-gen-connectrpc"
    found = str(beside) if beside.exists() else shutil.which("protoc-gen-connectrpc")
    if not found:
        sys.exit(
            "protoc-gen-connectrpc is not installed; it is a build requirement "
            "(pip install protoc-gen-connectrpc, or make build)"
        )
    return found


class build_py(_build_py):
    def run(self) -> None:
        compile_protos()
        super().run()


class build_ext(_build_ext):
    def run(self) -> None:
        compile_protos()  # editable installs run build_ext but may skip build_py
        super().run()


def extensions() -> list[Extension]:
    from Cython.Build import cythonize

    ext = Extension(
        "edgekv._speedups",
        ["native/_speedups.pyx"],
        extra_compile_args=["-O2"] if not DEBUG else ["-O0", "-g"],
        define_macros=[("CYTHON_TRACE", "1")] if DEBUG else [],
    )
    return cythonize(
        [ext],
        include_path=["native"],
        annotate=DEBUG,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
            "linetrace": DEBUG,
            "profile": DEBUG,
        },
    )


setup(ext_modules=extensions(), cmdclass={"build_py": build_py, "build_ext": build_ext})
