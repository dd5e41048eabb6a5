#!/usr/bin/env python3
"""Build kiln's test models and their onnxruntime reference data.

Usage:
    python3 scripts/make_models.py            # (re)write tests/models and tests/data
    python3 scripts/make_models.py --verify   # rebuild in memory, compare with the files

Every model is built node by node with onnx.helper from fixed seeds, so the
.onnx bytes and the input files are identical on every run and machine (with
the pinned packages of scripts/requirements.txt). The output files come from
onnxruntime (single-threaded, optimizations off, see scripts/ort_run.py); ORT
may pick different SIMD kernels on another CPU, so outputs are compared with a
tolerance by --verify, never bit for bit.

For each model NAME this writes:
    tests/models/NAME.onnx
    tests/data/NAME/input_<k>.bin    k-th graph input, raw little-endian, row-major
    tests/data/NAME/output_<k>.bin   k-th graph output, same layout
    tests/data/NAME/meta.json        names, dtypes, shapes, files, model sha256

Besides onnx.checker (full_check) and one ORT run, some models are also checked
against a plain numpy evaluation written here, so a mistake in this script
(a wrong attribute, a misread spec) shows up as a mismatch rather than as
silently wrong reference data.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ort_run  # noqa: E402  (sibling script, shares the session settings)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS_DIR = os.path.join(ROOT, "tests", "models")
DATA_DIR = os.path.join(ROOT, "tests", "data")

# Stamped into every model instead of library versions, so upgrading onnx does
# not change the bytes of models whose content did not change.
PRODUCER = "kiln scripts/make_models.py"
PRODUCER_VERSION = "1"

# Everything here is checked into git.
SIZE_BUDGET = 1 << 20

# Tolerances suggested to consumers of the reference data (recorded in
# meta.json): f32 kernels that sum in a different order differ by a few ulps
# per accumulation step, and the largest reductions here are ~1k terms.
SUGGESTED_ATOL = 1e-5
SUGGESTED_RTOL = 1e-4

INT64_MIN = -(2**63)


@dataclass
class Built:
    """A model plus what is needed to make its reference data."""

    model: onnx.ModelProto
    # Concrete input arrays, in graph-input order.
    inputs: List[np.ndarray]
    # Optional independent numpy evaluation: inputs -> outputs in graph order.
    numpy_ref: Optional[Callable[[List[np.ndarray]], List[np.ndarray]]] = None
    note: str = ""


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def he(g: np.random.Generator, shape: Sequence[int], fan_in: int) -> np.ndarray:
    """He-normal weights: keeps activations O(1) through Relu layers, so the
    final Softmax is neither saturated (one-hot) nor flat (uniform) and the
    reference outputs stay sensitive to every layer."""
    return f32(g.standard_normal(shape) * np.sqrt(2.0 / fan_in))


def init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array, name)


def make_model(
    graph: onnx.GraphProto, opset: int, ir_version: int, doc: str
) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        doc_string=doc,
    )
    # The IR version of the onnx release that introduced this opset, as real
    # exporters of that era wrote it, rather than the newest one.
    model.ir_version = ir_version
    return model


# ---------------------------------------------------------------------------
# numpy reference pieces (independent of onnxruntime)
# ---------------------------------------------------------------------------


def np_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_conv2d(x, w, b, pads, stride=1, group=1):
    """Direct NCHW convolution in float64. pads = (top, left, bottom, right)."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (xp.shape[2] - kh) // stride + 1
    ow = (xp.shape[3] - kw) // stride + 1
    out = np.zeros((n, m, oh, ow))
    mg = m // group
    for o in range(m):
        gi = o // mg
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, gi * cg : (gi + 1) * cg, i * stride : i * stride + kh, j * stride : j * stride + kw]
                out[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3))
    return out + b.reshape(1, -1, 1, 1)


def np_bn(x, scale, bias, mean, var, eps):
    s = (1, -1, 1, 1)
    return (x - mean.reshape(s)) / np.sqrt(var.reshape(s) + eps) * scale.reshape(s) + bias.reshape(s)


def np_pool(x, k, stride, reduce):
    n, c, h, w = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = reduce(x[:, :, i * stride : i * stride + k, j * stride : j * stride + k], axis=(2, 3))
    return out


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def build_mlp() -> Built:
    """input f32[1,64] -> Gemm(transB=1) -> Relu -> Gemm -> Softmax(axis=1)."""
    g = rng(1001)
    w1 = he(g, (128, 64), 64)  # [N, K]: read through transB=1
    b1 = f32(g.standard_normal(128) * 0.1)
    w2 = he(g, (128, 10), 128)  # [K, N]: plain layout, no transB
    b2 = f32(g.standard_normal(10) * 0.1)

    nodes = [
        helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["fc1_out"], name="/fc1/Gemm", transB=1),
        helper.make_node("Relu", ["fc1_out"], ["relu_out"], name="/relu/Relu"),
        helper.make_node("Gemm", ["relu_out", "fc2.weight", "fc2.bias"], ["logits"], name="/fc2/Gemm"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="/softmax/Softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
        initializer=[init("fc1.weight", w1), init("fc1.bias", b1), init("fc2.weight", w2), init("fc2.bias", b2)],
    )
    model = make_model(graph, 17, 8, "Two-layer perceptron, 64 -> 128 -> 10, softmax output.")

    def ref(inputs):
        x = inputs[0].astype(np.float64)
        h = np.maximum(x @ w1.T.astype(np.float64) + b1, 0.0)
        return [np_softmax(h @ w2.astype(np.float64) + b2, axis=1)]

    x = f32(rng(2001).standard_normal((1, 64)))
    return Built(model, [x], ref)


def build_cnn() -> Built:
    """A digits-style classifier: two conv/BN/relu/pool stages, a depthwise
    conv, global average pool and a linear head."""
    g = rng(1002)
    eps = 1e-3

    def bn_params(c):
        return (
            f32(g.uniform(0.5, 1.5, c)),  # scale
            f32(g.standard_normal(c) * 0.2),  # bias
            f32(g.standard_normal(c) * 0.5),  # running mean
            f32(g.uniform(0.5, 2.0, c)),  # running var
        )

    w1, b1 = he(g, (8, 1, 3, 3), 9), f32(g.standard_normal(8) * 0.1)
    bn1 = bn_params(8)
    w2, b2 = he(g, (16, 8, 3, 3), 72), f32(g.standard_normal(16) * 0.1)
    bn2 = bn_params(16)
    w3, b3 = he(g, (16, 1, 3, 3), 9), f32(g.standard_normal(16) * 0.1)
    wf, bf = he(g, (10, 16), 16), f32(g.standard_normal(10) * 0.1)

    inits = [init("conv1.weight", w1), init("conv1.bias", b1)]
    inits += [init(f"bn1.{k}", v) for k, v in zip(("weight", "bias", "running_mean", "running_var"), bn1)]
    inits += [init("conv2.weight", w2), init("conv2.bias", b2)]
    inits += [init(f"bn2.{k}", v) for k, v in zip(("weight", "bias", "running_mean", "running_var"), bn2)]
    inits += [init("dw.weight", w3), init("dw.bias", b3), init("fc.weight", wf), init("fc.bias", bf)]

    def bn(i, x, y):
        p = f"bn{i}."
        return helper.make_node(
            "BatchNormalization",
            [x, p + "weight", p + "bias", p + "running_mean", p + "running_var"],
            [y],
            name=f"/bn{i}/BatchNormalization",
            epsilon=eps,
        )

    conv3x3 = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    pool2 = dict(kernel_shape=[2, 2], strides=[2, 2])
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], name="/conv1/Conv", **conv3x3),
        bn(1, "c1", "n1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="/relu1/Relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="/pool1/MaxPool", **pool2),
        helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], name="/conv2/Conv", **conv3x3),
        bn(2, "c2", "n2"),
        helper.make_node("Relu", ["n2"], ["r2"], name="/relu2/Relu"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="/pool2/MaxPool", **pool2),
        helper.make_node("Conv", ["p2", "dw.weight", "dw.bias"], ["c3"], name="/dw/Conv", group=16, **conv3x3),
        helper.make_node("Relu", ["c3"], ["r3"], name="/relu3/Relu"),
        helper.make_node("GlobalAveragePool", ["r3"], ["gap"], name="/gap/GlobalAveragePool"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="/flatten/Flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1),
        # Softmax-13's default axis (-1) on purpose: the last axis, here 1.
        helper.make_node("Softmax", ["logits"], ["probs"], name="/softmax/Softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = make_model(graph, 13, 7, "Small 28x28 digits-style CNN with batch norm and a depthwise conv.")

    def ref(inputs):
        x = inputs[0].astype(np.float64)
        x = np.maximum(np_bn(np_conv2d(x, w1, b1, (1, 1, 1, 1)), *bn1, eps), 0)
        x = np_pool(x, 2, 2, np.max)
        x = np.maximum(np_bn(np_conv2d(x, w2, b2, (1, 1, 1, 1)), *bn2, eps), 0)
        x = np_pool(x, 2, 2, np.max)
        x = np.maximum(np_conv2d(x, w3, b3, (1, 1, 1, 1), group=16), 0)
        x = x.mean(axis=(2, 3))
        return [np_softmax(x @ wf.T.astype(np.float64) + bf, axis=-1)]

    image = f32(rng(2002).uniform(0.0, 1.0, (1, 1, 28, 28)))
    return Built(model, [image], ref)


def build_legacy_cnn() -> Built:
    """Opset 9 as exporters of that era wrote it: weights in Constant nodes, a
    Reshape target computed at run time, attribute-style Unsqueeze and Clip,
    auto_pad, and Softmax with the pre-13 "flatten to 2-D" semantics."""
    g = rng(1003)
    eps = 1e-5
    w = he(g, (8, 3, 3, 3), 27)
    b = f32(g.standard_normal(8) * 0.1)
    scale, bias = f32(g.uniform(0.5, 1.5, 8)), f32(g.standard_normal(8) * 0.2)
    mean, var = f32(g.standard_normal(8) * 0.5), f32(g.uniform(0.5, 2.0, 8))
    wf = he(g, (10, 128), 128)
    cf = f32(g.standard_normal(10) * 0.1)

    def const(name, value):
        return helper.make_node(
            "Constant", [], [name], name=f"/{name}/Constant", value=numpy_helper.from_array(value, name)
        )

    nodes = [
        const("conv.weight", w),
        const("conv.bias", b),
        const("bn.weight", scale),
        const("bn.bias", bias),
        const("bn.running_mean", mean),
        const("bn.running_var", var),
        const("fc.weight", wf),
        const("fc.bias", cf),
        const("gather_index", np.array(0, dtype=np.int64)),  # a 0-d tensor
        const("minus_one", np.array([-1], dtype=np.int64)),
        # 16x16 at stride 2 -> 8x8; SAME_UPPER needs 1 pixel of padding in
        # total and puts it at the end (bottom/right), none at the start.
        helper.make_node(
            "Conv",
            ["x", "conv.weight", "conv.bias"],
            ["conv_out"],
            name="/conv/Conv",
            auto_pad="SAME_UPPER",
            kernel_shape=[3, 3],
            strides=[2, 2],
        ),
        helper.make_node(
            "BatchNormalization",
            ["conv_out", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
            ["bn_out"],
            name="/bn/BatchNormalization",
            epsilon=eps,
        ),
        # Clip-6: bounds are attributes (inputs only from opset 11).
        helper.make_node("Clip", ["bn_out"], ["relu6"], name="/relu6/Clip", min=0.0, max=6.0),
        helper.make_node("AveragePool", ["relu6"], ["pooled"], name="/pool/AveragePool", kernel_shape=[2, 2], strides=[2, 2]),
        # Reshape to [batch, -1], batch read from the input's shape at run time.
        helper.make_node("Shape", ["pooled"], ["pooled_shape"], name="/Shape"),
        helper.make_node("Gather", ["pooled_shape", "gather_index"], ["batch"], name="/Gather", axis=0),
        helper.make_node("Unsqueeze", ["batch"], ["batch_1d"], name="/Unsqueeze", axes=[0]),
        helper.make_node("Concat", ["batch_1d", "minus_one"], ["flat_shape"], name="/Concat", axis=0),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"], name="/Reshape"),
        # Gemm-9: C is a required input; beta != 1 so it must really be used.
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1, beta=0.5),
        helper.make_node("Softmax", ["logits"], ["probs"], name="/softmax/Softmax", axis=1),
        # Softmax-1..12 on a 4-D tensor with axis=1 normalizes over the
        # flattened C*H*W block, not over C alone as Softmax-13 would.
        helper.make_node("Softmax", ["pooled"], ["pooled_softmax"], name="/pooled_softmax/Softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "legacy_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10]),
            helper.make_tensor_value_info("pooled_softmax", TensorProto.FLOAT, [1, 8, 4, 4]),
        ],
    )
    model = make_model(graph, 9, 4, "Opset-9 style CNN: Constant weights, dynamic Reshape, legacy Softmax.")

    def ref(inputs):
        x = inputs[0].astype(np.float64)
        y = np_conv2d(x, w, b, (0, 0, 1, 1), stride=2)
        y = np.clip(np_bn(y, scale, bias, mean, var, eps), 0.0, 6.0)
        pooled = np_pool(y, 2, 2, np.mean)
        flat = pooled.reshape(pooled.shape[0], -1)
        probs = np_softmax(flat @ wf.T.astype(np.float64) + 0.5 * cf, axis=1)
        return [probs, np_softmax(flat, axis=1).reshape(pooled.shape)]

    x = f32(rng(2003).standard_normal((1, 3, 16, 16)))
    return Built(model, [x], ref)


def build_mixed_encodings() -> Built:
    """Initializers stored in every TensorProto field a reader must decode:
    float_data, int64_data, int32_data (holding int32, int8 and float16 bit
    patterns), double_data and raw_data, plus a 0-d scalar."""
    g = rng(1004)
    w = f32(g.standard_normal((8, 4)) * 0.5)
    bias16 = (g.standard_normal(4) * 0.5).astype(np.float16)
    q8 = g.integers(-128, 128, 4).astype(np.int8)
    q8[0] = -128  # the extreme, which sign handling gets wrong first
    scale = np.float32(0.03125)
    offset = np.array([0.1], dtype=np.float64)
    shape = np.array([2, 2], dtype=np.int64)
    idx = np.array([3, -4, 1], dtype=np.int32)  # -4 wraps to 0 on axis of size 4
    raw_gain = f32(g.uniform(0.5, 1.5, (1, 4)))

    def typed(name, dtype, array):
        # raw=False: the values go to the typed repeated field for the dtype.
        return helper.make_tensor(name, dtype, list(array.shape), array.flatten().tolist(), raw=False)

    inits = [
        typed("w_float_data", TensorProto.FLOAT, w),
        # make_tensor stores float16 values as their bit patterns in int32_data.
        helper.make_tensor("bias_f16_int32_data", TensorProto.FLOAT16, [4], bias16, raw=False),
        typed("q_int8_int32_data", TensorProto.INT8, q8),
        typed("scale_scalar_float_data", TensorProto.FLOAT, np.array(scale)),
        typed("offset_double_data", TensorProto.DOUBLE, offset),
        typed("shape_int64_data", TensorProto.INT64, shape),
        typed("idx_int32_data", TensorProto.INT32, idx),
        init("gain_raw_data", raw_gain),
    ]
    for t in inits[:-1]:
        assert not t.HasField("raw_data"), t.name
    assert inits[-1].HasField("raw_data")

    nodes = [
        helper.make_node("MatMul", ["x", "w_float_data"], ["h"], name="/MatMul"),
        helper.make_node("Cast", ["bias_f16_int32_data"], ["bias"], name="/bias/Cast", to=TensorProto.FLOAT),
        helper.make_node("Add", ["h", "bias"], ["h2"], name="/Add"),
        helper.make_node("Cast", ["q_int8_int32_data"], ["q"], name="/q/Cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["q", "scale_scalar_float_data"], ["dq"], name="/dequant/Mul"),
        helper.make_node("Mul", ["h2", "dq"], ["h3"], name="/Mul"),
        helper.make_node("Cast", ["offset_double_data"], ["offset"], name="/offset/Cast", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["h3", "offset"], ["h4"], name="/Sub"),
        helper.make_node("Mul", ["h4", "gain_raw_data"], ["h5"], name="/gain/Mul"),
        helper.make_node("Reshape", ["h5", "shape_int64_data"], ["y"], name="/Reshape"),
        helper.make_node("Gather", ["h5", "idx_int32_data"], ["picked"], name="/Gather", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mixed_encodings",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2]),
            helper.make_tensor_value_info("picked", TensorProto.FLOAT, [1, 3]),
        ],
        initializer=inits,
    )
    model = make_model(graph, 13, 7, "Initializers in float_data/int32_data/int64_data/double_data/raw_data.")

    def ref(inputs):
        x = inputs[0].astype(np.float64)
        h = x @ w + bias16.astype(np.float64)
        h = h * (q8.astype(np.float64) * float(scale))
        h = (h - offset[0]) * raw_gain
        return [h.reshape(2, 2), h[:, [3, 0, 1]]]

    x = f32(rng(2004).standard_normal((1, 8)))
    return Built(model, [x], ref)


def build_ops_zoo() -> Built:
    """One graph exercising awkward corners of common ops: both AveragePool
    padding conventions, ceil_mode, negative-step Slice with INT64_MIN ends,
    negative Gather indices, batched MatMul and broadcasting arithmetic."""
    g = rng(1005)
    mu = f32(g.standard_normal((1, 5)) * 0.1)
    sd = f32(g.uniform(0.5, 2.0, (4, 1)))
    k = f32(0.75)  # 0-d, broadcast against everything

    def i64(name, values):
        return init(name, np.array(values, dtype=np.int64))

    inits = [
        i64("slice_starts", [1, -1]),
        i64("slice_ends", [100, INT64_MIN]),  # both past the end: clamped
        i64("slice_axes", [1, -1]),
        i64("slice_steps", [1, -2]),
        i64("gather_idx", [-1, 0]),
        i64("reshape_shape", [0, 4, -1]),  # 0 copies the input dim
        init("mu", mu),
        init("sd", sd),
        init("k", k),
    ]
    nodes = [
        # 8 -> ceil((8 + 2 - 3) / 2) + 1 = 5; the last window starts on the
        # last real pixel and hangs past the padding: only real pixels count.
        helper.make_node(
            "AveragePool",
            ["a"],
            ["pool_ceil"],
            name="/pool_ceil/AveragePool",
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            ceil_mode=1,
            count_include_pad=0,
        ),
        # Asymmetric pads, padded zeros counted in the divisor: 8+1+2 -> 5.
        helper.make_node(
            "AveragePool",
            ["a"],
            ["pool_incl"],
            name="/pool_incl/AveragePool",
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 2, 2],
            count_include_pad=1,
        ),
        helper.make_node("Concat", ["pool_ceil", "pool_incl"], ["cat"], name="/Concat", axis=1),  # [2,6,5,5]
        helper.make_node("Transpose", ["cat"], ["nhwc"], name="/Transpose", perm=[0, 2, 3, 1]),  # [2,5,5,6]
        # axis 1: rows 1..4; axis -1: channels 5, 3, 1 -> [2,4,5,3]
        helper.make_node(
            "Slice",
            ["nhwc", "slice_starts", "slice_ends", "slice_axes", "slice_steps"],
            ["sliced"],
            name="/Slice",
        ),
        helper.make_node("Gather", ["sliced", "gather_idx"], ["gathered"], name="/Gather", axis=2),  # [2,4,2,3]
        helper.make_node("Reshape", ["gathered", "reshape_shape"], ["rows"], name="/Reshape"),  # [2,4,6]
        helper.make_node("MatMul", ["rows", "b"], ["mm"], name="/MatMul"),  # [2,4,6] x [2,6,5] -> [2,4,5]
        helper.make_node("Sub", ["mm", "mu"], ["centered"], name="/Sub"),  # [1,5] broadcast
        helper.make_node("Div", ["centered", "sd"], ["normed"], name="/Div"),  # [4,1] broadcast
        helper.make_node("Sigmoid", ["normed"], ["sig"], name="/Sigmoid"),
        helper.make_node("Tanh", ["normed"], ["tanh"], name="/Tanh"),
        helper.make_node("LeakyRelu", ["normed"], ["leaky"], name="/LeakyRelu", alpha=0.1),
        helper.make_node("Mul", ["sig", "tanh"], ["gated"], name="/gate/Mul"),
        helper.make_node("Mul", ["leaky", "k"], ["leaky_k"], name="/scale/Mul"),
        helper.make_node("Add", ["gated", "leaky_k"], ["out"], name="/Add"),
    ]
    graph = helper.make_graph(
        nodes,
        "ops_zoo",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3, 8, 8]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 6, 5]),
        ],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4, 5]),
            helper.make_tensor_value_info("sliced", TensorProto.FLOAT, [2, 4, 5, 3]),
        ],
        initializer=inits,
    )
    model = make_model(graph, 17, 8, "Corner cases of pooling, slicing, gathering, broadcasting, batched MatMul.")

    def avg_pool(x, pads, ceil, include_pad):
        # pads = (top, left, bottom, right); windows are clipped to the padded
        # input, and with include_pad=0 only real pixels are averaged.
        n, c, h, w = x.shape
        ph, pw = h + pads[0] + pads[2], w + pads[1] + pads[3]
        rnd = np.ceil if ceil else np.floor
        oh, ow = int(rnd((ph - 3) / 2)) + 1, int(rnd((pw - 3) / 2)) + 1
        out = np.zeros((n, c, oh, ow))
        for i in range(oh):
            for j in range(ow):
                r0, c0 = i * 2 - pads[0], j * 2 - pads[1]
                r1, c1 = min(r0 + 3, h + pads[2]), min(c0 + 3, w + pads[3])
                rr0, cc0, rr1, cc1 = max(r0, 0), max(c0, 0), min(r1, h), min(c1, w)
                total = x[:, :, rr0:rr1, cc0:cc1].sum(axis=(2, 3))
                count = (r1 - r0) * (c1 - c0) if include_pad else (rr1 - rr0) * (cc1 - cc0)
                out[:, :, i, j] = total / count
        return out

    def ref(inputs):
        a, b = (v.astype(np.float64) for v in inputs)
        cat = np.concatenate(
            [avg_pool(a, (1, 1, 1, 1), True, False), avg_pool(a, (1, 1, 2, 2), False, True)], axis=1
        )
        sliced = cat.transpose(0, 2, 3, 1)[:, 1:, :, ::-2]
        rows = sliced[:, :, [-1, 0], :].reshape(2, 4, -1)
        n = (rows @ b - mu) / sd
        sig = 1.0 / (1.0 + np.exp(-n))
        return [sig * np.tanh(n) + np.where(n >= 0, n, 0.1 * n) * float(k), sliced]

    ig = rng(2005)
    a = f32(ig.standard_normal((2, 3, 8, 8)))
    b = f32(ig.standard_normal((2, 6, 5)) * 0.5)
    return Built(model, [a, b], ref)


def build_torch_cnn() -> Optional[Built]:
    """A tiny CNN exported by torch's TorchScript exporter, for the node names,
    value_info and constant layout that real exports have. Only when torch is
    importable: it is not installed on purpose (its default wheel pulls
    gigabytes of CUDA libraries), so this model may be absent."""
    try:
        import torch
    except ImportError:
        return None

    torch.manual_seed(1006)

    class TinyCnn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.bn1 = torch.nn.BatchNorm2d(4)
            self.conv2 = torch.nn.Conv2d(4, 8, 3, padding=1, stride=2)
            self.fc = torch.nn.Linear(8, 10)

        def forward(self, x):
            x = torch.nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
            x = torch.relu(self.conv2(x))
            x = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)
            return torch.softmax(self.fc(x), dim=1)

    net = TinyCnn().eval()
    with torch.no_grad():
        # Non-trivial running stats, else BN is the identity and proves nothing.
        net.bn1.running_mean.copy_(torch.randn(4) * 0.5)
        net.bn1.running_var.copy_(torch.rand(4) * 1.5 + 0.5)
        net.bn1.weight.copy_(torch.rand(4) + 0.5)
        net.bn1.bias.copy_(torch.randn(4) * 0.2)

    example = torch.zeros(1, 1, 28, 28)
    buf = io.BytesIO()
    kwargs = dict(opset_version=17, input_names=["image"], output_names=["probs"], do_constant_folding=True)
    try:
        torch.onnx.export(net, (example,), buf, dynamo=False, **kwargs)
    except TypeError as e:
        # torch < 2.5 has no `dynamo` argument; its only exporter is TorchScript.
        if "dynamo" not in str(e):
            raise
        buf = io.BytesIO()
        torch.onnx.export(net, (example,), buf, **kwargs)
    model = onnx.load_from_string(buf.getvalue())

    def ref(inputs):
        with torch.no_grad():
            return [net(torch.from_numpy(inputs[0])).double().numpy()]

    image = f32(rng(2006).uniform(0.0, 1.0, (1, 1, 28, 28)))
    return Built(model, [image], ref, note="exported by torch; bytes depend on the torch version")


BUILDERS: Dict[str, Callable[[], Optional[Built]]] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "legacy_cnn": build_legacy_cnn,
    "mixed_encodings": build_mixed_encodings,
    "ops_zoo": build_ops_zoo,
    "torch_cnn": build_torch_cnn,
}


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


class CheckFailed(Exception):
    pass


def tensor_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()


def compare(name: str, what: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> None:
    if got.shape != want.shape:
        raise CheckFailed(f"{name}: {what}: shape {got.shape} != {want.shape}")
    if not np.allclose(got, want, atol=atol, rtol=rtol):
        err = np.max(np.abs(got.astype(np.float64) - want))
        raise CheckFailed(f"{name}: {what}: max abs diff {err:g} over atol={atol:g} rtol={rtol:g}")


def produce(name: str, built: Built) -> dict:
    """Check and run one model; returns everything that goes to disk."""
    model = built.model
    onnx.checker.check_model(model, full_check=True)
    model_bytes = model.SerializeToString(deterministic=True)

    session = ort_run.make_session(model_bytes)
    ort_inputs = session.get_inputs()
    if len(ort_inputs) != len(built.inputs):
        raise CheckFailed(f"{name}: {len(ort_inputs)} graph inputs, {len(built.inputs)} arrays")
    feeds = {i.name: a for i, a in zip(ort_inputs, built.inputs)}
    outputs = ort_run.run(session, feeds)

    # Declared output shapes must be what ORT really produced.
    declared = {o.name: o for o in model.graph.output}
    for out_name, value in outputs:
        dims = [d.dim_value for d in declared[out_name].type.tensor_type.shape.dim]
        if list(value.shape) != dims:
            raise CheckFailed(f"{name}: output {out_name!r} is {list(value.shape)}, declared {dims}")
        if not np.all(np.isfinite(value)):
            raise CheckFailed(f"{name}: output {out_name!r} has non-finite values")

    if built.numpy_ref is not None:
        for k, (want, (out_name, got)) in enumerate(zip(built.numpy_ref(built.inputs), outputs)):
            compare(name, f"ORT vs numpy on output {k} ({out_name!r})", got, want, 1e-5, 1e-4)

    def tensor_meta(kind, k, tname, array):
        return {
            "index": k,
            "name": tname,
            "dtype": array.dtype.name,
            "shape": list(array.shape),
            "file": f"{kind}_{k}.bin",
        }

    meta = {
        "model": f"{name}.onnx",
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": model.ir_version,
        "generator": "scripts/make_models.py",
        "reference": "onnxruntime, 1 thread, graph optimizations disabled (scripts/ort_run.py)",
        "layout": "raw little-endian, row-major, no header",
        "suggested_tolerance": {"atol": SUGGESTED_ATOL, "rtol": SUGGESTED_RTOL},
        "inputs": [tensor_meta("input", k, i.name, a) for k, (i, a) in enumerate(zip(ort_inputs, built.inputs))],
        "outputs": [tensor_meta("output", k, n, v) for k, (n, v) in enumerate(outputs)],
    }
    if built.note:
        meta["note"] = built.note
    return {
        "model_bytes": model_bytes,
        "inputs": built.inputs,
        "outputs": [v for _, v in outputs],
        "meta": meta,
    }


def write(name: str, result: dict) -> None:
    data_dir = os.path.join(DATA_DIR, name)
    os.makedirs(data_dir, exist_ok=True)
    os.makedirs(MODELS_DIR, exist_ok=True)
    with open(os.path.join(MODELS_DIR, f"{name}.onnx"), "wb") as f:
        f.write(result["model_bytes"])
    for kind in ("inputs", "outputs"):
        for k, array in enumerate(result[kind]):
            with open(os.path.join(data_dir, f"{kind[:-1]}_{k}.bin"), "wb") as f:
                f.write(tensor_bytes(array))
    with open(os.path.join(data_dir, "meta.json"), "w") as f:
        json.dump(result["meta"], f, indent=2)
        f.write("\n")


def verify(name: str, result: dict) -> None:
    """Compare a fresh build with the files on disk: models and inputs bit for
    bit, outputs within the suggested tolerance (ORT kernels vary by CPU)."""

    def read(path):
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError:
            raise CheckFailed(f"{name}: {path} missing") from None

    rel = lambda p: os.path.relpath(p, ROOT)  # noqa: E731
    model_path = os.path.join(MODELS_DIR, f"{name}.onnx")
    if read(model_path) != result["model_bytes"]:
        raise CheckFailed(f"{name}: {rel(model_path)} differs from a fresh build")
    data_dir = os.path.join(DATA_DIR, name)
    for k, array in enumerate(result["inputs"]):
        path = os.path.join(data_dir, f"input_{k}.bin")
        if read(path) != tensor_bytes(array):
            raise CheckFailed(f"{name}: {rel(path)} differs from a fresh build")
    for k, array in enumerate(result["outputs"]):
        path = os.path.join(data_dir, f"output_{k}.bin")
        stored = np.frombuffer(read(path), dtype=array.dtype.newbyteorder("<"))
        if stored.size != array.size:
            raise CheckFailed(f"{name}: {rel(path)} has {stored.size} elements, expected {array.size}")
        compare(name, rel(path), stored.reshape(array.shape), array, SUGGESTED_ATOL, SUGGESTED_RTOL)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--verify", action="store_true", help="compare a fresh build with the files instead of writing")
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"only these models (default: all of {', '.join(BUILDERS)})")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in BUILDERS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(BUILDERS)}")
    names = args.models or list(BUILDERS)

    total = 0
    failures = 0
    for name in names:
        built = BUILDERS[name]()
        if built is None:
            print(f"{name}: skipped (torch is not installed; not needed for the other models)")
            continue
        try:
            result = produce(name, built)
            if args.verify:
                verify(name, result)
            else:
                write(name, result)
        except (CheckFailed, onnx.checker.ValidationError) as e:
            print(f"{name}: FAILED: {e}", file=sys.stderr)
            failures += 1
            continue
        size = len(result["model_bytes"])
        total += size
        shapes = ", ".join(f"{o['name']}{o['shape']}" for o in result["meta"]["outputs"])
        verb = "verified" if args.verify else "wrote"
        print(f"{name}: {verb} {size} bytes, sha256 {result['meta']['model_sha256'][:16]}..., outputs {shapes}")

    if total > SIZE_BUDGET:
        print(f"models total {total} bytes, over the {SIZE_BUDGET} byte budget", file=sys.stderr)
        failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
