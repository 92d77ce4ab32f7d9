"""Regenerate the committed gRPC code of libs/contracts from its protos.

`python scripts/gen_protos.py` writes into libs/contracts/src; `--check` writes into a temporary
directory and fails when anything differs from what is committed (the freshness check of `make test`).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "libs" / "contracts" / "proto"
OUT_ROOT = ROOT / "libs" / "contracts" / "src"
PACKAGE = "sagaline_contracts"


def generate(out: Path) -> None:
    """Run protoc with the Python, gRPC and mypy stub plugins over every proto."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    # The mypy plugins are console scripts installed beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for directory in [out / PACKAGE, *(out / PACKAGE).rglob("*")]:
        if directory.is_dir() and not (directory / "__init__.py").exists():
            (directory / "__init__.py").touch()


def generated_files(root: Path) -> set[Path]:
    """Every generated file below the package, relative to root."""
    return {p.relative_to(root) for p in (root / PACKAGE).rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def check() -> int:
    """Compare a fresh generation with the committed files; 1 when stale."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        committed = {p for p in generated_files(OUT_ROOT) if p.name != "py.typed"}
        expected = generated_files(fresh)
        stale = sorted(str(p) for p in committed ^ expected)
        stale += sorted(str(p) for p in expected & committed if not filecmp.cmp(fresh / p, OUT_ROOT / p, shallow=False))
    if stale:
        print("generated code is stale, run `make proto`:", *stale, sep="\n  ")
        return 1
    print("generated code is fresh")
    return 0


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when committed code is stale")
    if parser.parse_args().check:
        return check()
    target = OUT_ROOT / PACKAGE
    for child in target.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
    generate(OUT_ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
