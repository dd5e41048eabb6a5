#!/usr/bin/env python3
"""Materialize the ONNX backend node tests for kiln's conformance runner.

Usage:
    python3 scripts/conformance_cases.py           # write the cases if missing or stale
    python3 scripts/conformance_cases.py --force   # rewrite them anyway

The pinned onnx (scripts/requirements.txt) generates its node test cases in
memory (`onnx.backend.test.case.node.collect_testcases`); the pip package does
not ship them as files. This writes each case the way onnx's own
`backend-test-tools generate-data` lays them out:

    tests/conformance/cases/<name>/model.onnx
    tests/conformance/cases/<name>/test_data_set_<n>/input_<k>.pb    (TensorProto)
    tests/conformance/cases/<name>/test_data_set_<n>/output_<k>.pb   (TensorProto)

k follows the order of the graph's inputs/outputs, and every TensorProto is
named after its graph input/output, so a reader can match either way. Cases
whose inputs or outputs are sequences, optionals or maps get no data sets,
only a `SKIP` file saying why (kiln compiles tensor graphs only).

The cases folder is git-ignored. A stamp file records the onnx version and the
layout version; when it matches, the script exits at once, so tests can run
it unconditionally.

It also writes tests/conformance/edge_set.txt (checked in): the cases whose
graph uses only default-domain ops from EDGE_OPS and only non-string tensor
inputs and outputs. That list is what `kiln-conformance` runs.

Exit codes: 0 done, 3 onnx missing or not the pinned version (callers treat
that as "skip"), 1 anything else.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from typing import NoReturn

ONNX_VERSION = "1.23.2"
# Bump when the on-disk layout changes, so stale folders are rewritten.
LAYOUT_VERSION = 1

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF_DIR = os.path.join(ROOT, "tests", "conformance")
CASES_DIR = os.path.join(CONF_DIR, "cases")
EDGE_SET = os.path.join(CONF_DIR, "edge_set.txt")
STAMP = ".stamp"

# The ops of the "edge" operator set kiln targets (issue "Operator coverage").
EDGE_OPS = frozenset(
    """
    Abs Neg Exp Log Sqrt Reciprocal Pow Erf Sin Cos Tan Floor Ceil Round Sign
    Min Max Sum Mean Add Sub Mul Div Mod
    Relu LeakyRelu PRelu Elu Selu Celu HardSigmoid HardSwish Softplus Softsign
    Gelu Mish ThresholdedRelu Sigmoid Tanh Clip
    Where Equal Less LessOrEqual Greater GreaterOrEqual And Or Not Xor IsNaN IsInf
    Cast CastLike Identity Dropout Constant
    ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2
    ReduceLogSum ReduceLogSumExp ReduceSumSquare ArgMax ArgMin
    Softmax LogSoftmax Hardmax
    BatchNormalization InstanceNormalization LayerNormalization GroupNormalization
    LpNormalization RMSNormalization MeanVarianceNormalization LRN
    Conv ConvTranspose MaxPool AveragePool LpPool GlobalAveragePool GlobalMaxPool
    GlobalLpPool MatMul Gemm Einsum
    Reshape Transpose Concat Split Slice Gather GatherElements GatherND Expand Tile
    Pad Squeeze Unsqueeze Flatten DepthToSpace SpaceToDepth Resize Upsample Trilu
    CumSum TopK OneHot Range ConstantOfShape Shape Size ScatterND ScatterElements
    EyeLike Attention RotaryEmbedding SwiGLU
    """.split()
)


def fail(code: int, msg: str) -> NoReturn:
    print(f"conformance_cases: {msg}", file=sys.stderr)
    sys.exit(code)


def import_onnx():
    try:
        import onnx
    except Exception as e:  # any import failure means "not usable here"
        fail(3, f"cannot import onnx ({e}); run scripts/install-deps.sh")
    if onnx.__version__ != ONNX_VERSION:
        fail(
            3,
            f"onnx {onnx.__version__} is installed but the cases are pinned to onnx {ONNX_VERSION}; "
            "run scripts/install-deps.sh",
        )
    return onnx


def stamp_text() -> str:
    return f"onnx {ONNX_VERSION}\nlayout {LAYOUT_VERSION}\n"


def up_to_date() -> bool:
    try:
        with open(os.path.join(CASES_DIR, STAMP)) as f:
            return f.read() == stamp_text() and os.path.exists(EDGE_SET)
    except OSError:
        return False


def non_tensor_kind(vi) -> str | None:
    """Why a graph input/output cannot carry a tensor test file, or None when it can."""
    for kind in ("sequence_type", "optional_type", "map_type", "sparse_tensor_type"):
        if vi.type.HasField(kind):
            return kind.replace("_type", "")
    if not vi.type.HasField("tensor_type"):
        return "untyped"
    return None


def in_edge_set(model, onnx) -> bool:
    g = model.graph
    for n in g.node:
        if n.domain not in ("", "ai.onnx") or n.op_type not in EDGE_OPS:
            return False
    for vi in list(g.input) + list(g.output):
        if non_tensor_kind(vi) is not None:
            return False
        if vi.type.tensor_type.elem_type == onnx.TensorProto.STRING:
            return False
    return True


def to_tensor_proto(value, name: str, onnx):
    """A test value as a TensorProto named `name` (values may already be TensorProtos, e.g. float8)."""
    import numpy as np
    from onnx import numpy_helper

    if isinstance(value, onnx.TensorProto):
        t = onnx.TensorProto()
        t.CopyFrom(value)
        t.name = name
        return t
    return numpy_helper.from_array(np.asarray(value), name)


def write_case(case, dest: str, onnx) -> str | None:
    """Writes one case; returns the reason when its data sets were skipped."""
    os.makedirs(dest)
    with open(os.path.join(dest, "model.onnx"), "wb") as f:
        f.write(case.model.SerializeToString())
    g = case.model.graph
    for vi in list(g.input) + list(g.output):
        kind = non_tensor_kind(vi)
        if kind is not None:
            return f"{vi.name} has a {kind} type"
    protos = []
    try:
        for inputs, outputs in case.data_sets:
            if len(inputs) != len(g.input) or len(outputs) != len(g.output):
                return (
                    f"data set has {len(inputs)} inputs/{len(outputs)} outputs, "
                    f"the graph {len(g.input)}/{len(g.output)}"
                )
            protos.append(
                (
                    [to_tensor_proto(v, vi.name, onnx) for v, vi in zip(inputs, g.input)],
                    [to_tensor_proto(v, vi.name, onnx) for v, vi in zip(outputs, g.output)],
                )
            )
    except Exception as e:  # a value numpy_helper cannot encode: keep the case, drop its data
        return f"data not encodable as TensorProto: {type(e).__name__}: {e}"
    for n, (ins, outs) in enumerate(protos):
        d = os.path.join(dest, f"test_data_set_{n}")
        os.makedirs(d)
        for prefix, ts in (("input", ins), ("output", outs)):
            for k, t in enumerate(ts):
                with open(os.path.join(d, f"{prefix}_{k}.pb"), "wb") as f:
                    f.write(t.SerializeToString())
    return None


def materialize(onnx) -> None:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        # The generators overflow casts and divide by zero on purpose (inf/NaN cases).
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    cases = sorted(cases, key=lambda c: c.name)
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        fail(1, "onnx returned two cases with the same name")

    # Build next to the final folder and rename it into place, so a reader never sees half a tree
    # and an interrupted run leaves the old state (or nothing) behind.
    tmp = os.path.join(CONF_DIR, f".cases.tmp.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    skipped = 0
    edge = []
    for c in cases:
        reason = write_case(c, os.path.join(tmp, c.name), onnx)
        if reason is not None:
            skipped += 1
            with open(os.path.join(tmp, c.name, "SKIP"), "w") as f:
                f.write(reason + "\n")
        elif in_edge_set(c.model, onnx):
            edge.append(c.name)
    with open(os.path.join(tmp, STAMP), "w") as f:
        f.write(stamp_text())

    old = os.path.join(CONF_DIR, f".cases.old.{os.getpid()}")
    if os.path.exists(CASES_DIR):
        os.rename(CASES_DIR, old)
    try:
        os.rename(tmp, CASES_DIR)
    except OSError:
        # Another run put a fresh folder in place meanwhile; keep theirs.
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)

    edge_tmp = EDGE_SET + f".tmp.{os.getpid()}"
    with open(edge_tmp, "w") as f:
        f.write(
            f"# ONNX backend node tests (onnx {ONNX_VERSION}) whose graphs use only default-domain ops of\n"
            "# the edge op set (EDGE_OPS in scripts/conformance_cases.py) and only non-string tensor\n"
            f"# inputs and outputs: {len(edge)} of {len(cases)} cases.\n"
            "# Generated by scripts/conformance_cases.py; do not edit.\n"
        )
        for name in edge:
            f.write(name + "\n")
    os.replace(edge_tmp, EDGE_SET)
    print(
        f"conformance_cases: wrote {len(cases)} cases to {os.path.relpath(CASES_DIR, ROOT)} "
        f"({skipped} without data: sequences/optionals/maps); edge set: {len(edge)} cases"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--force", action="store_true", help="rewrite the cases even if the stamp matches")
    args = ap.parse_args()
    onnx = import_onnx()
    if not args.force and up_to_date():
        print(f"conformance_cases: {os.path.relpath(CASES_DIR, ROOT)} is up to date (onnx {ONNX_VERSION})")
        return
    materialize(onnx)


if __name__ == "__main__":
    main()
