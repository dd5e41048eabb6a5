#!/usr/bin/env python3
"""Export real model families to ONNX, with onnxruntime reference data, for tests/families.rs.

Usage (with the torch venv made by scripts/install-torch.sh):
    .venv-torch/bin/python scripts/export_families.py            # (re)write build/families
    .venv-torch/bin/python scripts/export_families.py resnet18   # only these models
    .venv-torch/bin/python scripts/export_families.py --check    # re-export in memory, compare with the files
    .venv-torch/bin/python scripts/export_families.py --list

For each model NAME this writes (git-ignored):
    build/families/NAME.onnx
    build/families/NAME/input_<k>.bin    k-th graph input, raw little-endian, row-major
    build/families/NAME/output_<k>.bin   k-th graph output from onnxruntime, same layout
    build/families/NAME/meta.json        names, dtypes, shapes, op histogram, sizes, sha256

The models are the families a user is likely to bring: torchvision classifiers
(MobileNetV2, ResNet-18, SqueezeNet 1.1, ShuffleNetV2 x1.0, EfficientNet-B0),
a YOLO-style detector, a BERT-style encoder, a GPT-2-style decoder, and one
small CNN exported the way older tools did (opset 9 and 11: legacy
BatchNormalization, Upsample, Pad and Clip with attributes, a Sum of three
inputs, weights as graph inputs or as Constant nodes).

All weights are random, from fixed seeds; there is no download. BatchNorm
running statistics are not left at their identity defaults: they are measured
on random batches (in float64, so ulp-level differences between CPUs cannot
change the float32 weights), which keeps activations O(1) through deep nets as
trained weights do. Every model is exported with the TorchScript exporter
(dynamo=False, constant folding on) at a fixed input shape, so the .onnx bytes
are identical from run to run with the pinned packages (--check verifies).

The reference outputs come from onnxruntime, single-threaded, graph
optimizations off (scripts/ort_run.py); each is also compared with PyTorch's
own eager output, so a bad export shows up here rather than as a kiln bug.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

try:
    import numpy as np
    import onnx
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torchvision
    from onnx import helper, numpy_helper
except ImportError as e:  # the system python has onnx but not torch: say which venv to use
    sys.exit(f"export_families: {e}; run bash scripts/install-torch.sh && .venv-torch/bin/python scripts/export_families.py")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ort_run  # noqa: E402  (sibling script: the same ORT session settings as tests/data)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "build", "families")

# PyTorch eager vs onnxruntime: both f32, summing in different orders over at
# most a few thousand terms per output, measured relative to the output's scale.
EXPORT_RTOL = 1e-4


class CheckFailed(Exception):
    """The export or its reference data is not what it should be."""


@dataclass
class Spec:
    """Everything needed to export one model."""

    module: nn.Module
    # Example inputs, in graph-input order; also the reference inputs.
    inputs: List[np.ndarray]
    input_names: List[str]
    output_names: List[str]
    opset: int = 17
    description: str = ""
    keep_initializers_as_inputs: bool = False
    # Rewrites applied to the exported ModelProto (older-style graphs).
    postprocess: Optional[Callable[[onnx.ModelProto], onnx.ModelProto]] = None
    # The IR version to stamp, for graphs that imitate an older exporter.
    ir_version: Optional[int] = None


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def seeded(seed: int) -> None:
    """Make module construction (torch's own init) reproducible."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def image_input(seed: int, shape: Sequence[int]) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def calibrate_norms(model: nn.Module, shape: Sequence[int], seed: int, batches: int = 2, batch: int = 4) -> nn.Module:
    """Give every BatchNorm a random affine part and running statistics measured on random inputs
    (as training would), and every LayerNorm a random affine part; returns the model in eval mode.

    Identity BatchNorms (mean 0, var 1, weight 1, bias 0) would let a compiler that ignores them pass,
    and would let activations drift far from O(1) through 50 layers. The statistics are measured in
    float64 so that the float32 weights do not depend on the CPU's summation order."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        if bns:
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # a plain average over the calibration batches
            model.double().train()
            for _ in range(batches):
                model(torch.randn((batch, *shape[1:]), generator=g, dtype=torch.float64))
            model.float()
    return model.eval()


def torchvision_spec(ctor: Callable[..., nn.Module], seed: int, description: str) -> Spec:
    seeded(seed)
    shape = (1, 3, 224, 224)
    model = calibrate_norms(ctor(weights=None), shape, seed + 1)
    return Spec(
        module=model,
        inputs=[image_input(seed + 2, shape)],
        input_names=["input"],
        output_names=["logits"],
        description=description,
    )


# ---------------------------------------------------------------------------
# torchvision classifiers
# ---------------------------------------------------------------------------


def mobilenet_v2() -> Spec:
    return torchvision_spec(
        torchvision.models.mobilenet_v2, 101,
        "torchvision MobileNetV2, 1x3x224x224 -> 1000 logits (depthwise convs, Clip as ReLU6)")


def resnet18() -> Spec:
    return torchvision_spec(
        torchvision.models.resnet18, 102,
        "torchvision ResNet-18, 1x3x224x224 -> 1000 logits (residual Add, MaxPool, Gemm)")


def squeezenet1_1() -> Spec:
    return torchvision_spec(
        torchvision.models.squeezenet1_1, 103,
        "torchvision SqueezeNet 1.1, 1x3x224x224 -> 1000 logits (fire modules: Concat, ceil-mode MaxPool)")


def shufflenet_v2_x1_0() -> Spec:
    return torchvision_spec(
        torchvision.models.shufflenet_v2_x1_0, 104,
        "torchvision ShuffleNetV2 x1.0, 1x3x224x224 -> 1000 logits (channel shuffle and chunk computed from Shape: "
        "Gather/Div/Concat/Reshape/Transpose/Slice)")


def efficientnet_b0() -> Spec:
    return torchvision_spec(
        torchvision.models.efficientnet_b0, 105,
        "torchvision EfficientNet-B0, 1x3x224x224 -> 1000 logits (SiLU as Sigmoid*Mul, squeeze-excitation)")


# ---------------------------------------------------------------------------
# A YOLO-style detector
# ---------------------------------------------------------------------------


class ConvBnAct(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True):
        super().__init__()
        self.cv1 = ConvBnAct(c, c, 1)
        self.cv2 = ConvBnAct(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class CspBlock(nn.Module):
    """Cross-stage partial block: half the channels through bottlenecks, concatenated with the rest."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        h = c2 // 2
        self.cv1 = ConvBnAct(c1, h, 1)
        self.cv2 = ConvBnAct(c1, h, 1)
        self.m = nn.Sequential(*(Bottleneck(h, shortcut) for _ in range(n)))
        self.cv3 = ConvBnAct(2 * h, c2, 1)

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class Sppf(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max pools, concatenated."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        h = c1 // 2
        self.cv1 = ConvBnAct(c1, h, 1)
        self.cv2 = ConvBnAct(4 * h, c2, 1)
        self.m = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class DetectHead(nn.Module):
    """Per level: 1x1 conv to anchors x (box, objectness, classes), reshape/permute to
    [1, anchors, ny, nx, no], sigmoid, decode boxes against the grid and anchors; all levels are
    concatenated into [1, N, no], then split into boxes (xywh, pixels) and scores."""

    ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))

    def __init__(self, nc: int, ch: Sequence[int], strides: Sequence[int], size: int):
        super().__init__()
        self.no = nc + 5
        self.na = 3
        self.strides = list(strides)
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in ch)
        for i, s in enumerate(strides):
            n = size // s
            yv, xv = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij")
            self.register_buffer(f"grid{i}", torch.stack((xv, yv), 2).view(1, 1, n, n, 2))
            anchors = torch.tensor(self.ANCHORS[i], dtype=torch.float32).view(1, self.na, 1, 1, 2)
            self.register_buffer(f"anchor_grid{i}", anchors.expand(1, self.na, n, n, 2).contiguous())

    def forward(self, xs):
        z = []
        for i, x in enumerate(xs):
            y = self.m[i](x)
            bs, _, ny, nx = y.shape
            y = y.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous().sigmoid()
            xy = (y[..., 0:2] * 2 - 0.5 + getattr(self, f"grid{i}")) * self.strides[i]
            wh = (y[..., 2:4] * 2) ** 2 * getattr(self, f"anchor_grid{i}")
            y = torch.cat((xy, wh, y[..., 4:]), -1)
            z.append(y.view(bs, -1, self.no))
        det = torch.cat(z, 1)
        return det[..., :4], det[..., 4:]


class YoloStyle(nn.Module):
    """A small YOLOv5-like detector: CSP backbone, SPPF, FPN + PAN neck (nearest upsampling and
    Concat), three detection levels at strides 8, 16, 32."""

    def __init__(self, size: int = 320, nc: int = 80):
        super().__init__()
        self.stem = nn.Sequential(ConvBnAct(3, 16, 3, 2), ConvBnAct(16, 32, 3, 2), CspBlock(32, 32))
        self.s3 = nn.Sequential(ConvBnAct(32, 64, 3, 2), CspBlock(64, 64, 2))
        self.s4 = nn.Sequential(ConvBnAct(64, 128, 3, 2), CspBlock(128, 128, 2))
        self.s5 = nn.Sequential(ConvBnAct(128, 256, 3, 2), CspBlock(256, 256), Sppf(256, 256))
        self.lat5 = ConvBnAct(256, 128, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.td4 = CspBlock(256, 128, shortcut=False)
        self.lat4 = ConvBnAct(128, 64, 1)
        self.td3 = CspBlock(128, 64, shortcut=False)
        self.down3 = ConvBnAct(64, 64, 3, 2)
        self.bu4 = CspBlock(128, 128, shortcut=False)
        self.down4 = ConvBnAct(128, 128, 3, 2)
        self.bu5 = CspBlock(256, 256, shortcut=False)
        self.detect = DetectHead(nc, (64, 128, 256), (8, 16, 32), size)

    def forward(self, x):
        p3 = self.s3(self.stem(x))
        p4 = self.s4(p3)
        h5 = self.lat5(self.s5(p4))
        h4 = self.lat4(self.td4(torch.cat((self.up(h5), p4), 1)))
        o3 = self.td3(torch.cat((self.up(h4), p3), 1))
        o4 = self.bu4(torch.cat((self.down3(o3), h4), 1))
        o5 = self.bu5(torch.cat((self.down4(o4), h5), 1))
        return self.detect([o3, o4, o5])


def yolo_style() -> Spec:
    seeded(201)
    shape = (1, 3, 320, 320)
    model = calibrate_norms(YoloStyle(320), shape, 202)
    return Spec(
        module=model,
        inputs=[image_input(203, shape)],
        input_names=["images"],
        output_names=["boxes", "scores"],
        description="YOLOv5-style detector, 1x3x320x320 -> boxes [1,6300,4] + scores [1,6300,81] "
        "(SiLU, SPPF MaxPool, nearest Resize, Concat, Reshape/Transpose, Sigmoid, Pow, Slice)",
    )


# ---------------------------------------------------------------------------
# A BERT-style encoder
# ---------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head self-attention written out as BERT and GPT-2 implementations do: separate
    projections (or one fused qkv), reshape to heads, scaled QK^T, additive or Where mask, softmax."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.hd = hidden // heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.o = nn.Linear(hidden, hidden)

    def split(self, x):
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.hd).transpose(1, 2)

    def forward(self, x, additive_mask):
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hd) + additive_mask
        ctx = torch.matmul(scores.softmax(-1), v)
        b, _, t, _ = ctx.shape
        return self.o(ctx.transpose(1, 2).reshape(b, t, self.heads * self.hd))


class BertLayer(nn.Module):
    """Post-LayerNorm encoder layer with an exact (Erf) GELU feed-forward."""

    def __init__(self, hidden: int, heads: int, inter: int):
        super().__init__()
        self.attn = SelfAttention(hidden, heads)
        self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
        self.fc1 = nn.Linear(hidden, inter)
        self.fc2 = nn.Linear(inter, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x, mask):
        x = self.ln1(x + self.attn(x, mask))
        return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))


class BertStyle(nn.Module):
    def __init__(self, vocab=1024, hidden=256, heads=4, layers=4, inter=1024, max_pos=128):
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.pos = nn.Embedding(max_pos, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.ln = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(hidden, heads, inter) for _ in range(layers))
        self.pool = nn.Linear(hidden, hidden)

    def forward(self, input_ids, attention_mask):
        t = input_ids.shape[1]
        pos = torch.arange(t, dtype=torch.long).unsqueeze(0)
        x = self.word(input_ids) + self.pos(pos) + self.token_type(torch.zeros_like(input_ids))
        x = self.ln(x)
        # [1, T] of 1 (attend) / 0 (padding) -> [1, 1, 1, T] of 0 / -10000, added to the scores.
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask)
        return x, torch.tanh(self.pool(x[:, 0]))


def bert_style() -> Spec:
    seeded(301)
    vocab, seq = 1024, 128
    model = calibrate_norms(BertStyle(vocab=vocab), (1, seq), 302)
    g = np.random.default_rng(303)
    ids = g.integers(0, vocab, size=(1, seq), dtype=np.int64)
    mask = np.ones((1, seq), dtype=np.int64)
    mask[:, 100:] = 0  # a padded batch element: the last 28 positions are padding
    return Spec(
        module=model,
        inputs=[ids, mask],
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state", "pooler_output"],
        description="BERT-style encoder: 4 layers, hidden 256, 4 heads, seq 128, vocab 1024; int64 input_ids + "
        "attention_mask -> hidden states + pooled (Gather, LayerNormalization, MatMul, Softmax, Erf GELU, Tanh)",
    )


# ---------------------------------------------------------------------------
# A GPT-2-style decoder
# ---------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, seq: int):
        super().__init__()
        self.heads = heads
        self.hd = hidden // heads
        self.c_attn = nn.Linear(hidden, 3 * hidden)
        self.c_proj = nn.Linear(hidden, hidden)
        self.register_buffer("bias", torch.tril(torch.ones(seq, seq, dtype=torch.bool)).view(1, 1, seq, seq))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q = q.view(b, t, self.heads, self.hd).transpose(1, 2)
        k = k.view(b, t, self.heads, self.hd).transpose(1, 2)
        v = v.view(b, t, self.heads, self.hd).transpose(1, 2)
        att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hd))
        att = torch.where(self.bias[:, :, :t, :t], att, torch.tensor(torch.finfo(att.dtype).min, dtype=att.dtype))
        y = torch.matmul(att.softmax(-1), v)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


def gelu_new(x):
    """GPT-2's tanh approximation of GELU, written out as GPT-2 does (Pow, Tanh)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class Gpt2Block(nn.Module):
    """Pre-LayerNorm decoder block."""

    def __init__(self, hidden: int, heads: int, seq: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, heads, seq)
        self.ln_2 = nn.LayerNorm(hidden)
        self.c_fc = nn.Linear(hidden, 4 * hidden)
        self.c_proj = nn.Linear(4 * hidden, hidden)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(gelu_new(self.c_fc(self.ln_2(x))))


class Gpt2Style(nn.Module):
    def __init__(self, vocab=1024, hidden=128, heads=4, layers=4, seq=32):
        super().__init__()
        self.wte = nn.Embedding(vocab, hidden)
        self.wpe = nn.Embedding(seq, hidden)
        self.h = nn.ModuleList(Gpt2Block(hidden, heads, seq) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input/output embeddings

    def forward(self, input_ids):
        t = input_ids.shape[1]
        pos = torch.arange(0, t, dtype=torch.long).unsqueeze(0)
        x = self.wte(input_ids) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def gpt2_style() -> Spec:
    seeded(401)
    vocab, seq = 1024, 32
    model = Gpt2Style(vocab=vocab, seq=seq)
    with torch.no_grad():
        # GPT-2's init (N(0, 0.02)) keeps logits small; scale the embedding up so the logits, the
        # attention and the softmax are far from flat and every layer shows in the output.
        model.wte.weight.mul_(0.5)
    model = calibrate_norms(model, (1, seq), 402)
    ids = np.random.default_rng(403).integers(0, vocab, size=(1, seq), dtype=np.int64)
    return Spec(
        module=model,
        inputs=[ids],
        input_names=["input_ids"],
        output_names=["logits"],
        description="GPT-2-style decoder: 4 layers, hidden 128, 4 heads, seq 32, vocab 1024, tied embeddings; "
        "int64 input_ids -> logits (causal mask via Where, fused qkv Split, tanh GELU with Pow)",
    )


# ---------------------------------------------------------------------------
# Older-style graphs: one small CNN at opset 9 and at opset 11
# ---------------------------------------------------------------------------


class Sum3(torch.autograd.Function):
    """a + b + c, exported as one ONNX Sum node (the exporter would write two Adds)."""

    @staticmethod
    def forward(ctx, a, b, c):
        return a + b + c

    @staticmethod
    def symbolic(g, a, b, c):
        return g.op("Sum", a, b, c)


class LegacyCnn(nn.Module):
    """Ops whose old versions differ from today's: Pad (reflect) and Clip take attributes at opset 9
    and inputs at 11, Upsample (9) vs Resize (11), a BatchNormalization that follows a Relu (so the
    exporter cannot fold it into the conv), an N-ary Sum, Gemm + Softmax on a flattened head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.branches = nn.ModuleList([nn.Conv2d(32, 32, 1), nn.Conv2d(32, 32, 3, padding=1), nn.Conv2d(32, 32, 5, padding=2)])
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        x = self.bn1(F.relu(self.conv1(x)))
        x = F.max_pool2d(x, 2)
        x = F.relu6(self.conv2(x))
        x = Sum3.apply(*(b(x) for b in self.branches))
        x = F.avg_pool2d(x, 2)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = F.relu(self.conv3(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.softmax(self.fc(x), dim=1)


def initializers_to_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Move every initializer into a Constant node at the top of the graph, as exporters of the
    opset 9-11 era (and some converters still) wrote weights."""
    g = model.graph
    consts = [
        helper.make_node("Constant", [], [t.name], name=f"Constant_{i}", value=t)
        for i, t in enumerate(g.initializer)
    ]
    del g.initializer[:]
    nodes = consts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return model


def legacy_spec(opset: int) -> Spec:
    seeded(501)  # the same weights at both opsets
    shape = (1, 3, 32, 32)
    model = calibrate_norms(LegacyCnn(), shape, 502)
    if opset == 9:
        return Spec(
            module=model,
            inputs=[image_input(503, shape)],
            input_names=["input"],
            output_names=["probs"],
            opset=9,
            keep_initializers_as_inputs=True,
            ir_version=4,
            description="Small CNN at opset 9, IR 4, weights listed as graph inputs with initializers "
            "(Pad/Clip attributes, Upsample, BatchNormalization-9, Sum of 3, Gemm, Softmax)",
        )
    return Spec(
        module=model,
        inputs=[image_input(503, shape)],
        input_names=["input"],
        output_names=["probs"],
        opset=11,
        postprocess=initializers_to_constants,
        ir_version=6,
        description="The CNN of legacy_cnn_opset9 at opset 11, IR 6, weights as Constant nodes "
        "(Pad with computed pads, Clip with inputs, Resize-11, Sum of 3, Gemm, Softmax)",
    )


def legacy_cnn_opset9() -> Spec:
    return legacy_spec(9)


def legacy_cnn_opset11() -> Spec:
    return legacy_spec(11)


FAMILIES: Dict[str, Callable[[], Spec]] = {
    "mobilenet_v2": mobilenet_v2,
    "resnet18": resnet18,
    "squeezenet1_1": squeezenet1_1,
    "shufflenet_v2_x1_0": shufflenet_v2_x1_0,
    "efficientnet_b0": efficientnet_b0,
    "yolo_style": yolo_style,
    "bert_style": bert_style,
    "gpt2_style": gpt2_style,
    "legacy_cnn_opset9": legacy_cnn_opset9,
    "legacy_cnn_opset11": legacy_cnn_opset11,
}


# ---------------------------------------------------------------------------
# Export, reference, files
# ---------------------------------------------------------------------------


def scale_err(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|: the error relative to the output's scale."""
    scale = max(float(np.max(np.abs(want.astype(np.float64)))), 1e-30) if want.size else 1.0
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) / scale if want.size else 0.0


def export(name: str, spec: Spec) -> dict:
    """Export one model, run onnxruntime on it; returns everything that goes to disk."""
    model = spec.module.eval()
    args = tuple(torch.from_numpy(a.copy()) for a in spec.inputs)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated (and says so), and the tracer warns about
        # shape-dependent Python values, which are exactly what a fixed-shape export wants.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            eager = model(*args)
            torch.onnx.export(
                model,
                args,
                buf,
                dynamo=False,
                opset_version=spec.opset,
                do_constant_folding=True,
                input_names=spec.input_names,
                output_names=spec.output_names,
                keep_initializers_as_inputs=spec.keep_initializers_as_inputs,
            )
    eager = [eager] if isinstance(eager, torch.Tensor) else list(eager)

    proto = onnx.load_from_string(buf.getvalue())
    if spec.postprocess is not None:
        proto = spec.postprocess(proto)
    if spec.ir_version is not None:
        proto.ir_version = spec.ir_version
    proto.doc_string = spec.description
    onnx.checker.check_model(proto, full_check=True)
    model_bytes = proto.SerializeToString(deterministic=True)

    session = ort_run.make_session(model_bytes)
    ort_inputs = session.get_inputs()
    if [i.name for i in ort_inputs] != spec.input_names:
        raise CheckFailed(f"{name}: ORT sees inputs {[i.name for i in ort_inputs]}, expected {spec.input_names}")
    outputs = ort_run.run(session, {i.name: a for i, a in zip(ort_inputs, spec.inputs)})
    if [n for n, _ in outputs] != spec.output_names:
        raise CheckFailed(f"{name}: ORT outputs {[n for n, _ in outputs]}, expected {spec.output_names}")
    for (out_name, value), ref in zip(outputs, eager):
        ref = ref.numpy()
        if value.shape != ref.shape:
            raise CheckFailed(f"{name}: output {out_name!r}: ORT shape {value.shape}, PyTorch {ref.shape}")
        if not np.all(np.isfinite(value)):
            raise CheckFailed(f"{name}: output {out_name!r} has non-finite values")
        err = scale_err(value, ref)
        if err > EXPORT_RTOL:
            raise CheckFailed(f"{name}: output {out_name!r}: ORT and PyTorch differ by {err:.2e} of the output's scale")

    ops = Counter(n.op_type for n in proto.graph.node)
    init_bytes = sum(len(numpy_helper.to_array(t).tobytes()) for t in proto.graph.initializer)
    const_bytes = sum(
        len(numpy_helper.to_array(a.t).tobytes()) for n in proto.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"
    )

    def tensor_meta(kind, k, tname, array):
        return {"index": k, "name": tname, "dtype": array.dtype.name, "shape": list(array.shape), "file": f"{kind}_{k}.bin"}

    meta = {
        "model": f"{name}.onnx",
        "description": spec.description,
        "model_bytes": len(model_bytes),
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "opset": spec.opset,
        "ir_version": proto.ir_version,
        "nodes": len(proto.graph.node),
        "ops": dict(sorted(ops.items())),
        "weight_bytes": init_bytes + const_bytes,
        "generator": "scripts/export_families.py (TorchScript exporter, dynamo=False, do_constant_folding=True)",
        "reference": "onnxruntime, 1 thread, graph optimizations disabled (scripts/ort_run.py)",
        "layout": "raw little-endian, row-major, no header",
        "inputs": [tensor_meta("input", k, i.name, a) for k, (i, a) in enumerate(zip(ort_inputs, spec.inputs))],
        "outputs": [tensor_meta("output", k, n, v) for k, (n, v) in enumerate(outputs)],
    }
    return {"model_bytes": model_bytes, "inputs": spec.inputs, "outputs": [v for _, v in outputs], "meta": meta}


def tensor_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()


def meta_bytes(meta: dict) -> bytes:
    return (json.dumps(meta, indent=2) + "\n").encode()


def files_of(name: str, result: dict) -> List[Tuple[str, bytes]]:
    """(path, bytes) of every file of one model."""
    d = os.path.join(OUT_DIR, name)
    files = [(os.path.join(OUT_DIR, f"{name}.onnx"), result["model_bytes"])]
    for kind in ("inputs", "outputs"):
        for k, a in enumerate(result[kind]):
            files.append((os.path.join(d, f"{kind[:-1]}_{k}.bin"), tensor_bytes(a)))
    files.append((os.path.join(d, "meta.json"), meta_bytes(result["meta"])))
    return files


def write(name: str, result: dict) -> None:
    d = os.path.join(OUT_DIR, name)
    os.makedirs(d, exist_ok=True)
    # Stale outputs of an older version of this model would be read as extra outputs.
    for f in os.listdir(d):
        if f.endswith(".bin"):
            os.remove(os.path.join(d, f))
    for path, data in files_of(name, result):
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        print(f"  {os.path.relpath(path, ROOT)}: {len(data):,} bytes")


def check(name: str, result: dict) -> None:
    """A fresh export against the files: model, inputs and meta.json bit for bit; the outputs within
    1e-6 of their scale (ORT's kernels can differ between CPUs, never between runs on one)."""
    for path, data in files_of(name, result):
        rel = os.path.relpath(path, ROOT)
        try:
            with open(path, "rb") as f:
                have = f.read()
        except OSError:
            raise CheckFailed(f"{name}: {rel} is missing") from None
        if have == data:
            print(f"  {rel}: {len(data):,} bytes, identical")
            continue
        if os.path.basename(path).startswith("output_"):
            k = int(os.path.basename(path)[len("output_"):-len(".bin")])
            want = result["outputs"][k]
            got = np.frombuffer(have, dtype=want.dtype.newbyteorder("<"))
            if got.size == want.size and scale_err(got.reshape(want.shape), want) <= 1e-6:
                print(f"  {rel}: {len(data):,} bytes, within 1e-6 of its scale (not bit-identical)")
                continue
        raise CheckFailed(f"{name}: {rel} differs from a fresh export")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="re-export in memory and compare with build/families")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    parser.add_argument("models", nargs="*", metavar="MODEL", help="only these models (default: all)")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(FAMILIES))
        return 0
    unknown = [m for m in args.models if m not in FAMILIES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(FAMILIES)}")

    # One thread: float results (BatchNorm statistics, eager outputs) independent of the core count.
    torch.set_num_threads(1)
    failures = 0
    for name in args.models or list(FAMILIES):
        try:
            result = export(name, FAMILIES[name]())
            m = result["meta"]
            outs = ", ".join(f"{o['name']}{o['shape']}" for o in m["outputs"])
            print(f"{name}: {m['model_bytes']:,} bytes, {m['nodes']} nodes, {len(m['ops'])} op types, "
                  f"opset {m['opset']}, sha256 {m['model_sha256'][:16]}..., outputs {outs}")
            if args.check:
                check(name, result)
            else:
                write(name, result)
        except (CheckFailed, onnx.checker.ValidationError) as e:
            print(f"{name}: FAILED: {e}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
