#!/usr/bin/env python3
"""Compare kiln's compiled code with onnxruntime and tract on real models, in one run.

Usage:
    cargo build --release                                    # target/release/kiln
    CARGO_TARGET_DIR=target/tract-runner \\
        cargo build --release --manifest-path bench/tract-runner/Cargo.toml
    python3 scripts/bench_compare.py                         # all models, rewrites docs/BENCHMARKS.md
    python3 scripts/bench_compare.py --models mlp,resnet18 --runs 50 --rounds 3
    python3 scripts/bench_compare.py --quick                 # 10 runs, 1 round, prints only
    python3 scripts/bench_compare.py --gemm                  # also runs `cargo bench --bench gemm`

For each model, every tool is measured `--rounds` times, the tools taking turns
(round-robin, the order rotated each round) so that whatever else the machine
is doing hits all of them alike; each cell is the median over rounds. The
tools:

  kiln-generic  `kiln bench MODEL --json -n N --cpu generic` (x86-64-v2: SSE4.2)
  kiln-native   the same with `--cpu native` (adds FMA; kiln emits 128-bit vectors)
  kiln-2t       kiln-native with `--threads 2`: NAME_run_parallel through the pthread pool of
                examples/c/kiln_pool.h, every split kernel in 2 parts (the "kiln 2t" column,
                and its speedup over kiln-native, which runs one thread)
  kiln-compile  `kiln compile MODEL --cpu native` wall time, and libNAME.a bytes
  ort-1t        onnxruntime, intra_op=1, inter_op=1, sequential, ORT_ENABLE_ALL
  ort-default   onnxruntime, default threads, ORT_ENABLE_ALL
  tract         bench/tract-runner (tract-onnx, into_optimized, one thread)

Every measurement runs in a fresh process, so each reports its own peak RSS
(VmHWM from /proc/self/status, as kiln's driver does). Each process times one
cold run and then N warm runs of the same fixed input (the pattern of
`kiln::runner::pattern`, reproduced here and in tract-runner, so all tools see
identical bytes). kiln times inside its C driver around NAME_run; ORT times
`run_with_iobinding` from Python (a few microseconds of binding overhead,
visible on the tiny models only); tract times `SimpleState::run` from Rust.

MFLOPs are counted from the ONNX graph: 2 x the multiply-accumulates of Conv,
ConvTranspose, Gemm and MatMul (shapes from onnx.shape_inference), nothing else.

A full run (no --models, no --quick) rewrites docs/BENCHMARKS.md; partial runs
only print unless --out is given. The file is generated: edit this script, not
the file.

Internal entry points (used by the script on itself): --ort-worker MODEL runs
one onnxruntime measurement and prints JSON; --ort-baseline prints the peak RSS
of a Python process that has only imported numpy and onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = os.path.join(ROOT, "build", "families")
TEST_MODELS = os.path.join(ROOT, "tests", "models")
TRACT_RUNNER = os.path.join(ROOT, "target", "tract-runner", "release", "tract-runner")

# The models the issue names, in its order, then whatever else build/families holds.
PRIMARY: List[Tuple[str, str]] = [
    ("mobilenet_v2", os.path.join(FAMILIES, "mobilenet_v2.onnx")),
    ("resnet18", os.path.join(FAMILIES, "resnet18.onnx")),
    ("squeezenet1_1", os.path.join(FAMILIES, "squeezenet1_1.onnx")),
    ("shufflenet_v2_x1_0", os.path.join(FAMILIES, "shufflenet_v2_x1_0.onnx")),
    ("bert_style", os.path.join(FAMILIES, "bert_style.onnx")),
    ("gpt2_style", os.path.join(FAMILIES, "gpt2_style.onnx")),
    ("mlp", os.path.join(TEST_MODELS, "mlp.onnx")),
    ("cnn", os.path.join(TEST_MODELS, "cnn.onnx")),
]

TOOLS = ["kiln-generic", "kiln-native", "kiln-2t", "kiln-compile", "ort-1t", "ort-default", "tract"]


# --------------------------------------------------------------------------------------------
# Inputs: the same bytes every tool sees.
# --------------------------------------------------------------------------------------------

def pattern_unit(n: int):
    """The xorshift32 stream of kiln::runner::pattern as float64 in [0, 1), restarted per input."""
    import numpy as np

    out = np.empty(n, dtype=np.float64)
    state = 0x9E3779B9
    mask = 0xFFFFFFFF
    for i in range(n):
        state ^= (state << 13) & mask
        state ^= state >> 17
        state ^= (state << 5) & mask
        out[i] = (state >> 8) / float(1 << 24)
    return out


def pattern(np_dtype, shape: Sequence[int]):
    import numpy as np

    n = 1
    for d in shape:
        n *= d
    unit = pattern_unit(n)
    dt = np.dtype(np_dtype)
    if dt.kind == "f":
        vals = (unit * 2.0 - 1.0).astype(dt)
    elif dt.kind == "b":
        vals = (unit * 8.0).astype(np.int64) != 0
    else:
        vals = (unit * 8.0).astype(np.int64).astype(dt)
    return vals.reshape(tuple(shape))


# --------------------------------------------------------------------------------------------
# The onnxruntime worker: one measurement per process.
# --------------------------------------------------------------------------------------------

ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
    "tensor(float16)": "float16",
}


def peak_rss_kib() -> int:
    """VmHWM of this process. Not ru_maxrss: Linux keeps that across exec, so a child's value
    can include what its parent had mapped at fork time."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def ort_worker(model: str, threads: str, runs: int, warmup: int) -> dict:
    import resource

    import numpy as np
    import onnxruntime as ort

    t0 = time.perf_counter()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads == "1":
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3

    binding = sess.io_binding()
    keep = []
    for i in sess.get_inputs():
        if i.type not in ORT_TYPES:
            raise SystemExit(f"ort-worker: input {i.name} has type {i.type}, not supported here")
        if not all(isinstance(d, int) for d in i.shape):
            raise SystemExit(f"ort-worker: input {i.name} has a symbolic shape {i.shape}")
        arr = np.ascontiguousarray(pattern(ORT_TYPES[i.type], i.shape))
        keep.append(arr)
        binding.bind_cpu_input(i.name, arr)
    for o in sess.get_outputs():
        # Preallocated outputs when the shape is known, so a run allocates no output tensors.
        if o.type in ORT_TYPES and all(isinstance(d, int) for d in o.shape):
            val = ort.OrtValue.ortvalue_from_shape_and_type(o.shape, np.dtype(ORT_TYPES[o.type]).type, "cpu", 0)
            keep.append(val)
            binding.bind_ortvalue_output(o.name, val)
        else:
            binding.bind_output(o.name, "cpu")

    t = time.perf_counter_ns()
    sess.run_with_iobinding(binding)
    cold_ms = (time.perf_counter_ns() - t) / 1e6
    for _ in range(warmup):
        sess.run_with_iobinding(binding)
    times = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        sess.run_with_iobinding(binding)
        times.append((time.perf_counter_ns() - t) / 1e6)
    times.sort()
    return {
        "tool": f"ort-{threads}",
        "runs": runs,
        "load_ms": load_ms,
        "cold_ms": cold_ms,
        "p50_ms": quantile(times, 0.5),
        "p99_ms": quantile(times, 0.99),
        "min_ms": times[0],
        "peak_rss_kib": peak_rss_kib(),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def ort_baseline() -> dict:
    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401

    return {"peak_rss_kib": peak_rss_kib()}


def quantile(sorted_vals: List[float], q: float) -> float:
    # Nearest rank, rounded: the rule of kiln::runner::Timings::quantile and tract-runner.
    return sorted_vals[int(round((len(sorted_vals) - 1) * q))]


# --------------------------------------------------------------------------------------------
# FLOP counter.
# --------------------------------------------------------------------------------------------

COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def count_mflops(path: str) -> Optional[float]:
    """2 x the MACs of Conv, ConvTranspose, Gemm and MatMul, in millions; None when a shape is unknown.

    Shapes come from onnx.shape_inference (with data propagation); where it gives up (a Slice or Pad
    fed by computed values, as exporters write), the missing shapes are read off one onnxruntime run
    with those tensors exposed as extra graph outputs.
    """
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(path), data_prop=True)
    g = model.graph
    shapes: Dict[str, List[Optional[int]]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = list(a.t.dims)

    def needed(node) -> List[str]:
        if node.op_type == "ConvTranspose":
            return [node.input[0], node.input[1]]
        return [node.input[0], node.input[1], node.output[0]]

    counted = [n for n in g.node if n.op_type in COUNTED_OPS]
    missing = sorted({x for n in counted for x in needed(n) if shapes.get(x) is None or None in shapes[x]})
    if missing:
        shapes.update(runtime_shapes(path, missing))

    def prod(v: Sequence[int]) -> int:
        p = 1
        for d in v:
            p *= d
        return p

    macs = 0
    for node in counted:
        dims = [shapes.get(x) for x in needed(node)]
        if any(d is None or None in d for d in dims):
            return None
        if node.op_type == "Conv":
            _, w, y = dims
            # Each output element sums over (Cin / group) x kernel.
            macs += prod(y) * prod(w[1:])
        elif node.op_type == "ConvTranspose":
            x, w = dims
            # Each input element scatters into (Cout / group) x kernel outputs.
            macs += prod(x) * prod(w[1:])
        elif node.op_type == "Gemm":
            a, _, y = dims
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            macs += prod(y) * (a[0] if trans_a else a[1])
        else:  # MatMul; a 1-D A is [K]
            a, _, y = dims
            macs += prod(y) * a[-1]
    return 2.0 * macs / 1e6


def runtime_shapes(path: str, names: List[str]) -> Dict[str, List[int]]:
    """The shapes of `names` in one onnxruntime run on the pattern inputs; {} if that fails."""
    import onnx

    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        return {}
    model = onnx.load(path)
    have = {o.name for o in model.graph.output}
    for n in names:
        if n not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=n))
    so = ort.SessionOptions()
    # Unoptimized, so every original tensor still exists to be returned.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feeds = {i.name: pattern(ORT_TYPES[i.type], i.shape) for i in sess.get_inputs()}
        outs = sess.run(names, feeds)
    except Exception as e:  # noqa: BLE001 - any ORT failure just means "shape unknown"
        print(f"{os.path.basename(path)}: onnxruntime could not give the shapes for the FLOP count: {e}",
              file=sys.stderr)
        return {}
    return {n: list(np.shape(o)) for n, o in zip(names, outs)}


# --------------------------------------------------------------------------------------------
# Running the tools.
# --------------------------------------------------------------------------------------------

class Failure(Exception):
    pass


def run_json(cmd: List[str], timeout: float) -> dict:
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failure(f"timed out after {timeout:.0f} s")
    if p.returncode != 0:
        msg = (p.stderr.strip() or p.stdout.strip() or f"exit {p.returncode}").splitlines()
        # The first line that says what went wrong, not a backtrace.
        first = next((l for l in msg if "error" in l.lower()), msg[0] if msg else "")
        # Paths relative to the repository: the report should not name this machine's folders.
        raise Failure(first.strip().replace(ROOT + os.sep, "")[:300])
    try:
        return json.loads(p.stdout)
    except json.JSONDecodeError:
        raise Failure(f"not JSON: {p.stdout[:200]!r}")


def measure(tool: str, model: str, runs: int, warmup: int, kiln: str, timeout: float) -> dict:
    if tool in ("kiln-generic", "kiln-native"):
        cpu = tool.split("-")[1]
        # kiln bench has no separate warm-up: it times the cold run and then N warm runs.
        return run_json([kiln, "bench", model, "--json", "-n", str(runs), "--cpu", cpu], timeout)
    if tool == "kiln-2t":
        return run_json([kiln, "bench", model, "--json", "-n", str(runs), "--cpu", "native", "--threads", "2"],
                        timeout)
    if tool == "kiln-compile":
        with tempfile.TemporaryDirectory(prefix="kiln-bench-") as d:
            t = time.perf_counter()
            p = subprocess.run([kiln, "compile", model, "--cpu", "native", "-o", d, "--name", "bench_model"],
                               cwd=ROOT, capture_output=True, text=True, timeout=timeout)
            wall = time.perf_counter() - t
            if p.returncode != 0:
                raise Failure((p.stderr.strip().splitlines() or ["compile failed"])[0][:300])
            return {"compile_s": wall, "library_bytes": os.path.getsize(os.path.join(d, "libbench_model.a"))}
    if tool in ("ort-1t", "ort-default"):
        threads = "1" if tool == "ort-1t" else "default"
        return run_json([sys.executable, os.path.abspath(__file__), "--ort-worker", model, "--threads", threads,
                         "--runs", str(runs), "--warmup", str(warmup)], timeout)
    if tool == "tract":
        if not os.path.exists(TRACT_RUNNER):
            raise Failure("tract-runner not built (see the usage at the top of scripts/bench_compare.py)")
        return run_json([TRACT_RUNNER, model, "--runs", str(runs), "--warmup", str(warmup)], timeout)
    raise ValueError(tool)


def median_of(results: List[dict], key: str) -> Optional[float]:
    vals = [r[key] for r in results if key in r]
    return statistics.median(vals) if vals else None


def probe_ms(model: str, kiln: str, timeout: float) -> Optional[float]:
    """A rough latency for choosing N: onnxruntime, one thread, a few runs."""
    for tool in ("ort-1t", "kiln-native"):
        try:
            return measure(tool, model, 3, 0, kiln, timeout)["p50_ms"]
        except Failure:
            continue
    return None


# --------------------------------------------------------------------------------------------
# The machine and the tools' versions.
# --------------------------------------------------------------------------------------------

def machine() -> Dict[str, str]:
    info: Dict[str, str] = {}
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        text = ""

    def field(name: str) -> str:
        m = re.search(rf"^{re.escape(name)}\s*:\s*(.*)$", text, re.M)
        return m.group(1).strip() if m else "?"

    info["cpu"] = field("model name")
    info["logical cpus"] = str(os.cpu_count())
    info["cores per socket"] = field("cpu cores")
    info["cpu MHz (/proc/cpuinfo)"] = field("cpu MHz")
    flags = field("flags").split()
    info["vector features"] = " ".join(f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni") if f in flags)
    info["kernel"] = f"{platform.system()} {platform.release()}"
    return info


def versions(kiln: str) -> Dict[str, str]:
    v: Dict[str, str] = {}

    def out(cmd: List[str]) -> str:
        try:
            return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    rev = out(["git", "rev-parse", "--short", "HEAD"])
    dirty = out(["git", "status", "--porcelain", "--untracked-files=no"])
    v["kiln"] = f"{out([kiln, '--version'])} (git {rev}{', uncommitted changes' if dirty else ''})"
    v["rustc"] = out(["rustc", "--version"])
    try:
        import numpy
        import onnxruntime

        v["onnxruntime"] = f"{onnxruntime.__version__} (Python {platform.python_version()}, numpy {numpy.__version__})"
    except ImportError:
        v["onnxruntime"] = "not installed"
    lock = os.path.join(ROOT, "bench", "tract-runner", "Cargo.lock")
    m = re.search(r'name = "tract-onnx"\nversion = "([^"]+)"', open(lock).read()) if os.path.exists(lock) else None
    v["tract"] = f"tract-onnx {m.group(1)}" if m else "?"
    v["cc (kiln driver)"] = out(["cc", "--version"]).splitlines()[0] if out(["cc", "--version"]) else "?"
    return v


# --------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------

def sig(v: float) -> str:
    """Three significant digits without exponent notation: 0.00123, 0.0456, 7.89, 12.3, 456."""
    if v == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(abs(v))))
    return f"{v:,.{digits}f}"


def fmt_ms(v: Optional[float]) -> str:
    return "—" if v is None else sig(v)


def fmt_num(v: Optional[float], spec: str) -> str:
    return "—" if v is None else format(v, spec)


def fmt_ratio(a: Optional[float], b: Optional[float]) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def fmt_bytes(v: Optional[float]) -> str:
    if v is None:
        return "—"
    v = float(v)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return "?"


def fmt_kib(v: Optional[float]) -> str:
    return "—" if v is None else fmt_bytes(v * 1024)


CLOCK_C = r"""
#include <stdio.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(void) {
  double best = 1e9;
  for (int r = 0; r < 40; r++) {
    long n = 500000, x = 0, one = 1; double t0 = now();
    /* 100 dependent register-register adds per iteration: one per cycle on any x86_64 core */
    __asm__ volatile("1:\n .rept 100\n add %2, %0\n .endr\n dec %1\n jnz 1b\n" : "+r"(x), "+r"(n) : "r"(one));
    double t = now() - t0; if (t < best) best = t;
  }
  printf("%.4f\n", 100.0 * 500000 / best / 1e9);
  return 0;
}
"""


def measured_clock_ghz() -> Optional[float]:
    """The highest clock the core reaches, in GHz, from chains of dependent adds (as `cargo bench
    --bench gemm` measures it); None off x86_64 or without a C compiler."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "clock.c"), os.path.join(d, "clock")
        with open(src, "w") as f:
            f.write(CLOCK_C)
        try:
            subprocess.run(["cc", "-O1", src, "-o", exe], check=True, capture_output=True)
            return float(subprocess.run([exe], check=True, capture_output=True, text=True).stdout)
        except (OSError, subprocess.CalledProcessError, ValueError):
            return None


def bounds_section(rows: List[dict], ghz: Optional[float]) -> List[str]:
    """What the machine's vector width allows: each tool's GFLOP/s against the 128-bit FMA peak."""
    if not ghz:
        return []
    peak = 16 * ghz  # two 4-lane FMAs per cycle, 2 flops each
    L = ["", "## What bounds kiln / ORT: GFLOP/s against the 128-bit FMA peak", ""]
    L.append(f"kiln emits 128-bit vectors only (Cranelift has no wider ones), so no kiln kernel can pass the "
             f"128-bit FMA peak: 16 flop/cycle x {ghz:.2f} GHz (measured, dependent adds) = {peak:.1f} GFLOP/s. "
             "Where a peer's GFLOP/s over that peak is above 1, it computes the model's multiply-adds "
             "faster than any 128-bit code could, and kiln / peer cannot go below that figure by better "
             "128-bit kernels alone (on layers kiln computes by Winograd, which does 2.25-4x fewer "
             "multiplies, the bound is looser). GFLOP/s = MFLOPs / p50, as above.")
    L.append("")
    L.append("| model | MFLOPs | kiln native GFLOP/s | kiln / peak | ORT-1t GFLOP/s | ORT-1t / peak | tract GFLOP/s | tract / peak |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        mf = r["mflops"]
        if not mf:
            continue
        cells = []
        for tool in ("kiln-native", "ort-1t", "tract"):
            ms = r["tools"].get(tool, {}).get("p50_ms")
            g = mf / ms if ms else None  # MFLOP per ms is GFLOP per s
            cells.append(f"{fmt_num(g, '.1f')} | {fmt_num(g / peak if g else None, '.2f')}")
        L.append(f"| {r['name']} | {sig(mf)} | " + " | ".join(cells) + " |")
    return L


def build_report(rows: List[dict], meta: dict, gemm: Optional[str]) -> str:
    L: List[str] = []
    L.append("# Benchmarks")
    L.append("")
    L.append("<!-- Generated by scripts/bench_compare.py; do not edit by hand: rerun the script. -->")
    L.append("")
    L.append("kiln's compiled code against onnxruntime and tract, measured in one run of")
    L.append(f"`{meta['command']}`.")
    L.append("")
    L.append("To reproduce:")
    L.append("")
    L.append("```sh")
    L.append("cargo build --release")
    L.append("CARGO_TARGET_DIR=target/tract-runner cargo build --release --manifest-path bench/tract-runner/Cargo.toml")
    L.append(meta["command"])
    L.append("```")
    L.append("")
    L.append("## Machine and tools")
    L.append("")
    for k, val in meta["machine"].items():
        L.append(f"- {k}: {val}")
    for k, val in meta["versions"].items():
        L.append(f"- {k}: {val}")
    L.append(f"- load average before / after: {meta['load_before']} / {meta['load_after']}")
    L.append("")
    L.append("## Method")
    L.append("")
    warm = (f", then {meta['warmup']} untimed warm-up runs (ORT and tract only: kiln bench has none)"
            if meta["warmup"] else "")
    L.append(f"- Every tool measures one cold run{warm}, then N timed runs of the same input. N is the same")
    L.append(f"  for every tool on a model (`N` column): `--runs {meta['runs']}`, lowered for slow models so that")
    L.append(f"  one measurement takes about {meta['budget']:.0f} s at most.")
    L.append(f"- {meta['rounds']} round(s): the tools take turns on each model (order rotated every round) so machine")
    L.append("  noise hits them alike; each cell is the median over rounds. Each measurement is a fresh process.")
    L.append("- Input: the same bytes for every tool (`kiln::runner::pattern`: floats in [-1, 1), integers in [0, 8)).")
    L.append("- kiln: `kiln bench --json` times `NAME_run` inside its C driver. `generic` = x86-64-v2 (SSE4.2),")
    L.append("  `native` = the host's features (FMA). kiln emits 128-bit vectors only, although this machine has")
    L.append("  AVX-512; onnxruntime and tract pick 256/512-bit kernels at run time.")
    L.append("- kiln 2t: kiln native with `--threads 2`: `NAME_run_parallel` with the pthread pool of")
    L.append("  `examples/c/kiln_pool.h` (the caller plus one worker), each split kernel in 2 parts. `2t speedup` is")
    L.append("  kiln native p50 over kiln 2t p50 (above 1: two threads are faster).")
    L.append("- ORT-1t: onnxruntime with intra_op_num_threads=1, inter_op_num_threads=1, sequential execution,")
    L.append("  ORT_ENABLE_ALL; ORT-def: default threads (one per core), ORT_ENABLE_ALL. Timed around")
    L.append("  `run_with_iobinding` from Python with preallocated outputs (a few µs of call overhead).")
    L.append("- tract: `bench/tract-runner` (tract-onnx, `into_optimized`, `into_runnable`, one reused state,")
    L.append("  single-threaded).")
    L.append("- MFLOPs: 2 × multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul, counted from the ONNX")
    L.append("  graph with inferred shapes; other ops are not counted. GFLOP/s = MFLOPs / kiln-native p50.")
    L.append("- Ratios are kiln-native p50 over the peer's p50: below 1 kiln is faster, above 1 it is slower.")
    L.append("- Compile: wall time of `kiln compile MODEL --cpu native` (process start to `libNAME.a` written).")
    L.append("- Peak RSS: VmHWM of the measuring process. kiln's is its C driver (libc, code, weights, arena,")
    L.append("  tensors); ORT's includes the Python interpreter with numpy and onnxruntime imported, "
             f"which alone peaks at {fmt_kib(meta.get('ort_baseline_kib'))}; tract's is its Rust runner.")
    L.append("")
    L.append("## Latency (ms)")
    L.append("")
    L.append("| model | MFLOPs | N | kiln generic p50 / p99 | kiln native p50 / p99 | GFLOP/s | kiln 2t p50 | 2t speedup | ORT-1t p50 / p99 | ORT-def p50 | tract p50 | kiln / ORT-1t | kiln / tract | compile s |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        t = r["tools"]
        kg, kn, k2, o1, od, tr, kc = (t.get(x, {}) for x in ("kiln-generic", "kiln-native", "kiln-2t", "ort-1t", "ort-default", "tract", "kiln-compile"))
        mf = r["mflops"]
        # MFLOP per ms is GFLOP per s.
        gflops = sig(mf / kn["p50_ms"]) if mf and kn.get("p50_ms") else "—"
        L.append(
            f"| {r['name']} | {'—' if mf is None else sig(mf)} | {r['runs']} "
            f"| {cell2(kg)} | {cell2(kn)} | {gflops} | {fmt_ms(k2.get('p50_ms'))} | {fmt_ratio(kn.get('p50_ms'), k2.get('p50_ms'))} "
            f"| {cell2(o1)} | {fmt_ms(od.get('p50_ms'))} | {fmt_ms(tr.get('p50_ms'))} "
            f"| {fmt_ratio(kn.get('p50_ms'), o1.get('p50_ms'))} | {fmt_ratio(kn.get('p50_ms'), tr.get('p50_ms'))} "
            f"| {fmt_num(kc.get('compile_s'), '.2f')} |"
        )
    L.append("")
    L.append("## Size, memory and cold start")
    L.append("")
    L.append("| model | libNAME.a | weights | arena | peak RSS kiln | peak RSS ORT-1t | peak RSS tract | cold kiln | cold ORT-1t | cold tract | ORT-1t load | tract load |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        t = r["tools"]
        kn, o1, tr, kc = (t.get(x, {}) for x in ("kiln-native", "ort-1t", "tract", "kiln-compile"))
        lib = kc.get("library_bytes", kn.get("library_bytes"))
        L.append(
            f"| {r['name']} | {fmt_bytes(lib)} | {fmt_bytes(kn.get('weight_bytes'))} | {fmt_bytes(kn.get('arena_bytes'))} "
            f"| {fmt_kib(kn.get('peak_rss_kib'))} | {fmt_kib(o1.get('peak_rss_kib'))} | {fmt_kib(tr.get('peak_rss_kib'))} "
            f"| {fmt_ms(kn.get('cold_ms'))} | {fmt_ms(o1.get('cold_ms'))} | {fmt_ms(tr.get('cold_ms'))} "
            f"| {fmt_ms(o1.get('load_ms'))} | {fmt_ms(tr.get('load_ms'))} |"
        )
    L.extend(bounds_section(rows, meta.get("clock_ghz")))
    failures = [(r["name"], tool, msg) for r in rows for tool, msg in r["errors"].items()]
    if failures:
        L.append("")
        L.append("## Failures")
        L.append("")
        L.append("A dash in the tables above is one of these (first line of the tool's error):")
        L.append("")
        for name, tool, msg in failures:
            L.append(f"- {name}, {tool}: `{msg.replace('`', chr(39))}`")
    if gemm:
        L.append("")
        L.append("## GEMM tile throughput (`cargo bench --bench gemm`)")
        L.append("")
        L.append(gemm.rstrip())
    L.append("")
    return "\n".join(L)


def cell2(t: dict) -> str:
    if not t.get("p50_ms"):
        return "—"
    return f"{fmt_ms(t['p50_ms'])} / {fmt_ms(t.get('p99_ms'))}"


# --------------------------------------------------------------------------------------------
# Driver.
# --------------------------------------------------------------------------------------------

def select_models(spec: Optional[str]) -> List[Tuple[str, str]]:
    models = list(PRIMARY)
    if os.path.isdir(FAMILIES):
        known = {n for n, _ in models}
        for f in sorted(os.listdir(FAMILIES)):
            if f.endswith(".onnx") and f[:-5] not in known:
                models.append((f[:-5], os.path.join(FAMILIES, f)))
    if spec:
        wanted = [s.strip() for s in spec.split(",") if s.strip()]
        by_name = dict(models)
        out = []
        for w in wanted:
            if w in by_name:
                out.append((w, by_name[w]))
            elif os.path.exists(w):
                out.append((os.path.splitext(os.path.basename(w))[0], os.path.abspath(w)))
            else:
                raise SystemExit(f"bench_compare: unknown model {w!r}; known: {', '.join(n for n, _ in models)}")
        models = out
    return models


def load_avg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def run_gemm() -> Optional[str]:
    """Runs the GEMM bench and returns its markdown table."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "gemm.md")
        env = dict(os.environ, KILN_BENCH_MARKDOWN=out)
        p = subprocess.run(["cargo", "bench", "--bench", "gemm"], cwd=ROOT, env=env)
        if p.returncode != 0 or not os.path.exists(out):
            print("bench_compare: cargo bench --bench gemm failed", file=sys.stderr)
            return None
        return open(out).read()


def self_test(kiln: str) -> int:
    """Checks the FLOP counter on a model with hand-counted MACs, and that `pattern` gives the bytes
    kiln's own driver feeds (through `kiln run` on an Identity model, when kiln is built)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    def vi(name, dims):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    def zeros(name, dims):
        return helper.make_tensor(name, TensorProto.FLOAT, dims, np.zeros(int(np.prod(dims)), np.float32))

    g = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Gemm", ["a", "B"], ["d"], transA=1),
            helper.make_node("MatMul", ["e", "C"], ["f"]),
        ],
        "flops",
        [vi("x", [1, 3, 8, 8]), vi("a", [5, 2]), vi("e", [2, 4, 6])],
        [vi("c", None), vi("d", None), vi("f", None)],
        [zeros("W", [4, 3, 3, 3]), zeros("B", [5, 3]), zeros("C", [6, 7])],
    )
    # Conv: 4x8x8 outputs x 3x3x3 taps; Gemm: 2x3 outputs x K=5; MatMul: 2x4x7 outputs x K=6.
    want = 2 * (4 * 8 * 8 * 27 + 2 * 3 * 5 + 2 * 4 * 7 * 6) / 1e6
    ok = True
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "flops.onnx")
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
        got = count_mflops(path)
        print(f"count_mflops: {got} (expected {want})")
        ok &= got is not None and abs(got - want) < 1e-12
        if os.path.exists(kiln):
            g = helper.make_graph(
                [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["i"], ["j"])],
                "pattern",
                [vi("x", [3, 50]), helper.make_tensor_value_info("i", TensorProto.INT64, [7])],
                [vi("y", [3, 50]), helper.make_tensor_value_info("j", TensorProto.INT64, [7])],
            )
            path = os.path.join(d, "pattern.onnx")
            onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
            subprocess.run([kiln, "run", path, "--output-dir", d, "--show", "0"], check=True, capture_output=True)
            same = np.array_equal(np.load(os.path.join(d, "y.npy")), pattern("float32", [3, 50])) and np.array_equal(
                np.load(os.path.join(d, "j.npy")), pattern("int64", [7]))
            print(f"pattern matches kiln's driver input: {same}")
            ok &= same
        else:
            print(f"pattern: {kiln} not built, not checked")
    print("self-test", "passed" if ok else "FAILED")
    return 0 if ok else 1


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", help="comma-separated model names (or .onnx paths); default: all")
    ap.add_argument("--runs", type=int, default=100, help="timed warm runs per measurement (default 100)")
    ap.add_argument("--rounds", type=int, default=3, help="round-robin repetitions per model (default 3)")
    ap.add_argument("--warmup", type=int, default=0,
                    help="untimed warm runs for ORT and tract after the cold one (default 0, as kiln bench)")
    ap.add_argument("--budget", type=float, default=20.0,
                    help="seconds one measurement should take at most; lowers N for slow models (default 20)")
    ap.add_argument("--quick", action="store_true", help="10 runs, 1 round; prints only unless --out")
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"subset of {','.join(TOOLS)}")
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    ap.add_argument("--out", help="markdown file to write (default docs/BENCHMARKS.md on a full run)")
    ap.add_argument("--gemm", action="store_true", help="also run `cargo bench --bench gemm` and include its table")
    ap.add_argument("--self-test", action="store_true", help="check the FLOP counter and the input pattern, then exit")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds before a measurement is abandoned")
    # Internal: one onnxruntime measurement in this (fresh) process.
    ap.add_argument("--ort-worker", metavar="MODEL", help=argparse.SUPPRESS)
    ap.add_argument("--ort-baseline", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", default="1", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if a.ort_worker:
        print(json.dumps(ort_worker(a.ort_worker, a.threads, max(1, a.runs), a.warmup)))
        return 0
    if a.ort_baseline:
        print(json.dumps(ort_baseline()))
        return 0

    if a.self_test:
        return self_test(a.kiln)
    if a.quick:
        a.runs, a.rounds = 10, 1
    tools = [t.strip() for t in a.tools.split(",") if t.strip()]
    for t in tools:
        if t not in TOOLS:
            raise SystemExit(f"bench_compare: unknown tool {t!r}; tools: {', '.join(TOOLS)}")
    if any(t.startswith("kiln") for t in tools) and not os.path.exists(a.kiln):
        raise SystemExit(f"bench_compare: {a.kiln} not found; run `cargo build --release` first")
    full = not a.models and not a.quick and tools == TOOLS
    out_path = a.out or (os.path.join(ROOT, "docs", "BENCHMARKS.md") if full else None)
    models = select_models(a.models)

    meta = {
        "command": "python3 scripts/bench_compare.py" + ("" if not argv else " " + " ".join(argv)),
        "machine": machine(),
        "versions": versions(a.kiln),
        "runs": a.runs,
        "rounds": a.rounds,
        "warmup": a.warmup,
        "budget": a.budget,
        "load_before": load_avg(),
    }
    try:
        meta["ort_baseline_kib"] = run_json([sys.executable, os.path.abspath(__file__), "--ort-baseline"], 120)["peak_rss_kib"]
    except Failure:
        meta["ort_baseline_kib"] = None

    rows = []
    for name, path in models:
        if not os.path.exists(path):
            print(f"{name}: {path} missing (scripts/export_families.py writes build/families)", file=sys.stderr)
            rows.append({"name": name, "mflops": None, "runs": 0, "tools": {}, "errors": {"all": f"{path} missing"}})
            continue
        try:
            mflops = count_mflops(path)
        except Exception as e:  # an unreadable model still gets timed by the tools that can read it
            print(f"{name}: FLOP count failed: {e}", file=sys.stderr)
            mflops = None
        est = probe_ms(path, a.kiln, a.timeout)
        runs = a.runs
        if est and est > 0:
            runs = max(5, min(a.runs, int(a.budget * 1e3 / est)))
        print(f"== {name}: {'?' if mflops is None else f'{mflops:,.1f}'} MFLOPs, N={runs}", file=sys.stderr)
        results: Dict[str, List[dict]] = {t: [] for t in tools}
        errors: Dict[str, str] = {}
        for rnd in range(a.rounds):
            order = tools[rnd % len(tools):] + tools[:rnd % len(tools)]
            for tool in order:
                if tool in errors:
                    continue  # a tool that failed once fails again; don't pay for it every round
                try:
                    r = measure(tool, path, runs, a.warmup, a.kiln, a.timeout)
                    results[tool].append(r)
                    shown = f"p50 {fmt_ms(r['p50_ms'])} ms" if "p50_ms" in r else f"{r['compile_s']:.2f} s"
                    print(f"   round {rnd + 1} {tool:<13} {shown}", file=sys.stderr)
                except Failure as e:
                    errors[tool] = str(e)
                    print(f"   round {rnd + 1} {tool:<13} FAILED: {e}", file=sys.stderr)
        merged: Dict[str, dict] = {}
        for tool, rs in results.items():
            if not rs:
                continue
            m = dict(rs[-1])  # sizes are the same every round
            for key in ("p50_ms", "p99_ms", "cold_ms", "load_ms", "compile_s", "peak_rss_kib"):
                v = median_of(rs, key)
                if v is not None:
                    m[key] = v
            if any("min_ms" in r for r in rs):
                m["min_ms"] = min(r["min_ms"] for r in rs if "min_ms" in r)
            merged[tool] = m
        rows.append({"name": name, "mflops": mflops, "runs": runs, "tools": merged, "errors": errors})

    meta["load_after"] = load_avg()
    meta["clock_ghz"] = measured_clock_ghz()
    gemm = run_gemm() if a.gemm else None
    report = build_report(rows, meta, gemm)
    print(report)
    if out_path:
        with open(out_path, "w") as f:
            f.write(report)
        print(f"wrote {os.path.relpath(out_path, ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
