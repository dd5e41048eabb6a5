#!/usr/bin/env python3
"""Run an ONNX model with onnxruntime on raw tensor files; kiln's reference peer.

Usage:
    python3 scripts/ort_run.py MODEL.onnx --inputs-dir DIR --outputs-dir DIR
        [--shape NAME=1,3,28,28 ...] [--opt-level disabled|basic]

Reads `input_<k>.bin` for the k-th graph input (k counts the graph inputs that
are not initializers, in graph order) and writes `output_<k>.bin` for the k-th
graph output. Files are raw little-endian, row-major, with no header: f32 for
float inputs, the tensor's own element type otherwise. Shapes come from the
model; a symbolic dimension must be given with --shape, or come from a
`meta.json` (as written by scripts/make_models.py) found in the inputs dir.

A JSON summary of the outputs (name, dtype, shape, file) is printed on stdout
so a caller (kiln's Rust tests) knows the shapes without parsing the model.

The session is single-threaded with graph optimizations disabled by default:
the point is the plainest reading of each op's semantics, reproducible from run
to run, not speed. --opt-level basic allows ORT's semantics-preserving
rewrites (constant folding, redundant node removal) for comparison.

Exit status: 0 on success, 2 on bad arguments or input files (message on
stderr), anything else is an onnxruntime failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnxruntime as ort

# onnxruntime's type strings -> numpy element types. Only the types kiln can
# meet at a graph boundary are listed; anything else is reported as an error.
ORT_TYPES: Dict[str, np.dtype] = {
    "tensor(float)": np.dtype("<f4"),
    "tensor(double)": np.dtype("<f8"),
    "tensor(float16)": np.dtype("<f2"),
    "tensor(int8)": np.dtype("i1"),
    "tensor(uint8)": np.dtype("u1"),
    "tensor(int16)": np.dtype("<i2"),
    "tensor(uint16)": np.dtype("<u2"),
    "tensor(int32)": np.dtype("<i4"),
    "tensor(uint32)": np.dtype("<u4"),
    "tensor(int64)": np.dtype("<i8"),
    "tensor(uint64)": np.dtype("<u8"),
    "tensor(bool)": np.dtype("?"),
}

OPT_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
}


class UsageError(Exception):
    """A problem with the arguments or input files, reported with exit code 2."""


def make_session(model: "str | bytes", opt_level: str = "disabled") -> ort.InferenceSession:
    """Build a single-threaded CPU session, so results do not depend on the
    machine's core count or on thread scheduling."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = OPT_LEVELS[opt_level]
    # Quiet: warnings about unused initializers etc. would drown test output.
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def numpy_dtype(ort_type: str, what: str) -> np.dtype:
    try:
        return ORT_TYPES[ort_type]
    except KeyError:
        raise UsageError(f"{what}: unsupported element type {ort_type}") from None


def resolve_shape(
    name: str,
    model_shape: Sequence,
    override: Optional[Sequence[int]],
) -> Tuple[int, ...]:
    """Concrete shape for an input: the override if given (checked against the
    model's fixed dims), else the model's own shape, which must be fully fixed."""
    if override is not None:
        if len(override) != len(model_shape):
            raise UsageError(
                f"input {name!r}: --shape has rank {len(override)}, model says rank {len(model_shape)}"
            )
        for i, (want, got) in enumerate(zip(model_shape, override)):
            if isinstance(want, int) and want != got:
                raise UsageError(
                    f"input {name!r}: --shape dim {i} is {got}, model fixes it to {want}"
                )
        return tuple(int(d) for d in override)
    if not all(isinstance(d, int) for d in model_shape):
        raise UsageError(
            f"input {name!r} has symbolic shape {list(model_shape)}; pass --shape {name}=d0,d1,..."
        )
    return tuple(model_shape)


def read_tensor(path: str, dtype: np.dtype, shape: Tuple[int, ...], what: str) -> np.ndarray:
    try:
        raw = open(path, "rb").read()
    except OSError as e:
        raise UsageError(f"{what}: cannot read {path}: {e.strerror}") from None
    want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != want:
        raise UsageError(
            f"{what}: {path} has {len(raw)} bytes, shape {list(shape)} of {dtype.name} needs {want}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def write_tensor(path: str, array: np.ndarray) -> None:
    # Force little-endian, row-major bytes whatever the array's layout is.
    with open(path, "wb") as f:
        f.write(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())


def load_meta_shapes(inputs_dir: str) -> Dict[str, List[int]]:
    """Input shapes from a make_models.py meta.json, if the dir has one."""
    path = os.path.join(inputs_dir, "meta.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        meta = json.load(f)
    return {t["name"]: list(t["shape"]) for t in meta.get("inputs", [])}


def run(
    session: ort.InferenceSession, feeds: Dict[str, np.ndarray]
) -> List[Tuple[str, np.ndarray]]:
    """Run once; returns (name, array) for every graph output, in graph order."""
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, feeds)
    return list(zip(names, values))


def parse_shape_args(items: Sequence[str]) -> Dict[str, List[int]]:
    shapes: Dict[str, List[int]] = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        if not sep or not name:
            raise UsageError(f"--shape {item!r}: expected NAME=d0,d1,...")
        try:
            shapes[name] = [int(d) for d in dims.split(",")] if dims else []
        except ValueError:
            raise UsageError(f"--shape {item!r}: dims must be integers") from None
    return shapes


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="path to the .onnx model")
    parser.add_argument("--inputs-dir", required=True, help="dir holding input_<k>.bin")
    parser.add_argument("--outputs-dir", required=True, help="dir to write output_<k>.bin into")
    parser.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=D0,D1,...",
        help="concrete shape for an input with symbolic dims (repeatable)",
    )
    parser.add_argument("--opt-level", choices=sorted(OPT_LEVELS), default="disabled")
    args = parser.parse_args(argv)

    try:
        overrides = load_meta_shapes(args.inputs_dir)
        overrides.update(parse_shape_args(args.shape))
        if not os.path.isfile(args.model):
            raise UsageError(f"model {args.model} not found")
        session = make_session(args.model, args.opt_level)

        feeds: Dict[str, np.ndarray] = {}
        for k, inp in enumerate(session.get_inputs()):
            what = f"input {k} ({inp.name!r})"
            dtype = numpy_dtype(inp.type, what)
            shape = resolve_shape(inp.name, inp.shape, overrides.get(inp.name))
            path = os.path.join(args.inputs_dir, f"input_{k}.bin")
            feeds[inp.name] = read_tensor(path, dtype, shape, what)

        results = run(session, feeds)

        os.makedirs(args.outputs_dir, exist_ok=True)
        summary = []
        for k, (name, value) in enumerate(results):
            value = np.asarray(value)
            if value.dtype not in ORT_TYPES.values():
                raise UsageError(f"output {k} ({name!r}): unsupported element type {value.dtype}")
            path = os.path.join(args.outputs_dir, f"output_{k}.bin")
            write_tensor(path, value)
            summary.append(
                {
                    "index": k,
                    "name": name,
                    "dtype": value.dtype.name,
                    "shape": list(value.shape),
                    "file": path,
                }
            )
    except UsageError as e:
        print(f"ort_run: {e}", file=sys.stderr)
        return 2

    json.dump({"outputs": summary}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
