#!/usr/bin/env python3
"""Static throughput estimates of kiln's GEMM inner loops for cores this machine does not have.

    python3 scripts/mca_kernels.py          # needs llvm-mca (Debian: llvm), aarch64-linux-gnu-objdump
                                             # (binutils-aarch64-linux-gnu, from scripts/install-deps.sh)

aarch64 output can only be run under qemu here, which checks results but says nothing about speed.
This script compiles two products with kiln for each target, takes the innermost loop of the GEMM
micro-kernel out of the object (`objdump -d`: the backward branch whose body has the most FMAs), and
asks llvm-mca how many cycles an iteration takes on a core's scheduling model, against a loop of
the same number of independent FMAs on the same model (the FMA-bound ideal):

  matmul   Y[256,256] = X[256,256] x W, W constant: A is the input, read in place
  conv1x1  a 1x1 convolution, 256 -> 256 channels at 32x32, channels-first: A is the packed weights
           (on aarch64 the 8x8 tile with lane-indexed `fmla`)

These are model estimates, not measurements: llvm-mca knows only the in-core resources (no caches,
no memory), and LLVM 14's AArch64 models stand in for related cores (its Cortex-A57 model serves the
A72/A73/A75/A76 names too). The x86_64 row, on the Zen 3 model, can be set against this machine's
measurement (`python3 scripts/fma_probe.py`, `cargo bench --bench gemm`) to judge how far to trust
the rest.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (target triple, kiln --cpu, objdump, llvm-mca -mtriple, [(-mcpu, what it stands for)])
TARGETS = [
    ("x86_64-unknown-linux-gnu", "native", "objdump", "x86_64",
     [("znver3", "AMD Zen 3 model (this machine is Zen 5)")]),
    ("aarch64-unknown-linux-gnu", "generic", "aarch64-linux-gnu-objdump", "aarch64",
     [("cortex-a53", "Raspberry Pi 3, many SBCs (in-order)"),
      ("cortex-a55", "phones' little cores, RK3566 boards (in-order)"),
      ("cortex-a57", "Jetson Nano; LLVM's model for A72 (Raspberry Pi 4) too"),
      ("apple-m1", "Apple M1 (Cyclone model)")]),
]


def tool(*names: str) -> str:
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    raise SystemExit(f"mca_kernels: none of {', '.join(names)} found")


def make_models(d: str) -> dict:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    out = {}
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [256, 256])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 256])
    w = numpy_helper.from_array(rng.standard_normal((256, 256)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul", [x], [y], [w])
    out["matmul"] = (g, [])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256, 32, 32])
    w = numpy_helper.from_array(rng.standard_normal((256, 256, 1, 1)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "conv1x1", [x], [y], [w])
    out["conv1x1"] = (g, ["--layout", "nchw"])
    paths = {}
    for name, (g, flags) in out.items():
        p = os.path.join(d, f"{name}.onnx")
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
        paths[name] = (p, flags)
    return paths


FMA = re.compile(r"\b(v?fmadd\d+ps|fmla)\b")


BRANCH = re.compile(r"(j\w+|b(\.\w+)?|cb\w+|tb\w+)\s+(.*?)([0-9a-f]+) <")


def iteration(insts: list, lo: int, hi: int) -> list:
    """The instructions one iteration of the loop `[lo, hi]` runs. Cranelift tests at the top and
    may lay the exit path out between the test and the body: the test jumps forward into the body,
    so the iteration is the head up to that jump plus the body from its target."""
    span = [(a, t) for a, t in insts if lo <= a <= hi]
    for i, (a, t) in enumerate(span):
        m = BRANCH.match(t)
        if m and a != hi:
            target = int(m.group(4), 16)
            if lo < target <= hi:
                return [t for _, t in span[: i + 1]] + [t for b, t in span if b >= target]
            break
    return [t for _, t in span]


def hot_loop(disasm: str, arch: str) -> list:
    """The instructions of the backward-branch loop with the most FMAs, as assembly text."""
    insts = []  # (address, text without objdump's comments)
    for line in disasm.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(.*)$", line)
        if not m or m.group(2).startswith("(bad)"):
            continue
        text = m.group(2).split("//")[0]
        if arch == "x86_64":
            text = text.split("#")[0]
        insts.append((int(m.group(1), 16), text.strip()))
    loops = []  # (first address, backward branch address)
    for addr, text in insts:
        m = BRANCH.match(text)
        if m and int(m.group(4), 16) < addr:
            loops.append((int(m.group(4), 16), addr))
    # Innermost loops (no other loop inside), then the one with the most FMAs: the full tile's
    # k loop rather than an edge tile's or an enclosing loop.
    best = None
    for lo, hi in loops:
        if any((l2, h2) != (lo, hi) and lo <= l2 and h2 <= hi for l2, h2 in loops):
            continue
        body = iteration(insts, lo, hi)
        n = sum(1 for t in body if FMA.search(t))
        if n and (best is None or n > best[0]):
            best = (n, body)
    if best is None:
        raise SystemExit("mca_kernels: no FMA loop found in the object")
    return best[1]


def to_asm(body: list, arch: str) -> str:
    lines = ["loop:"]
    for t in body:
        t = re.sub(r"(\s)(0x)?[0-9a-f]+ <[^>]*>$", r"\1loop", t)  # branch target -> label
        lines.append("  " + t)
    return "\n".join(lines) + "\n"


def mca(mca_bin: str, triple: str, cpu: str, asm: str) -> float:
    """llvm-mca's cycles per iteration (total cycles / iterations) for `asm` on `cpu`."""
    p = subprocess.run([mca_bin, f"-mtriple={triple}", f"-mcpu={cpu}", "-iterations=1000"],
                       input=asm, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"mca_kernels: llvm-mca failed on {cpu}:\n{p.stderr[:2000]}\n{asm}")
    it = int(re.search(r"Iterations:\s+(\d+)", p.stdout).group(1))
    cyc = int(re.search(r"Total Cycles:\s+(\d+)", p.stdout).group(1))
    return cyc / it


def ideal(arch: str, n: int) -> str:
    """`n` independent FMAs (the same instruction form as the kernel's) and a loop branch."""
    lines = ["loop:"]
    for i in range(n):
        if arch == "aarch64":
            lines.append(f"  fmla v{i % 24}.4s, v30.4s, v31.s[{i % 4}]")
        else:
            lines.append(f"  vfmadd213ps %xmm14, %xmm15, %xmm{i % 14}")
    lines.append("  b.ne loop" if arch == "aarch64" else "  jne loop")
    return "\n".join(lines) + "\n"


def main() -> int:
    kiln = os.path.join(ROOT, "target", "release", "kiln")
    if not os.path.exists(kiln):
        raise SystemExit("mca_kernels: build kiln first (cargo build --release)")
    mca_bin = tool("llvm-mca", "llvm-mca-14", "llvm-mca-15", "llvm-mca-16")
    print("| kernel | target | core model | stands for | FMAs / iter | cycles / iter | FMA-bound cycles | % of model's FMA peak |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as d:
        models = make_models(d)
        for triple, cpu, objdump, arch, cores in TARGETS:
            objdump = tool(objdump)
            for name, (path, flags) in models.items():
                out = os.path.join(d, f"{name}-{arch}")
                subprocess.run([kiln, "compile", path, "--target", triple, "--cpu", cpu, "-o", out, *flags],
                               check=True, capture_output=True)
                lib = next(f for f in os.listdir(out) if f.endswith(".a"))
                subprocess.run(["ar", "x", lib], cwd=out, check=True)
                obj = next(f for f in os.listdir(out) if f.endswith(".o"))
                dis = subprocess.run([objdump, "-d", "--no-show-raw-insn", os.path.join(out, obj)],
                                     check=True, capture_output=True, text=True).stdout
                body = hot_loop(dis, arch)
                asm = to_asm(body, arch)
                nfma = sum(1 for t in body if FMA.search(t))
                for mcpu, what in cores:
                    got = mca(mca_bin, arch, mcpu, asm)
                    best = mca(mca_bin, arch, mcpu, ideal(arch, nfma))
                    print(f"| {name} | {arch} | {mcpu} | {what} | {nfma} | {got:.2f} | {best:.2f} | {100 * best / got:.0f}% |")
                if os.environ.get("MCA_SHOW"):
                    print(asm, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
