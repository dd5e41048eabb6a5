#!/usr/bin/env python3
"""What limits kiln's x86_64 GEMM tile: times hand-written versions of the 6x8 f32x4 k-loop.

    python3 scripts/fma_probe.py            # needs gcc (or $CC) and an x86_64 CPU with AVX2 + FMA

kiln's GEMM micro-kernel on x86_64 keeps a 6 x 8 tile of C in 12 xmm registers; each k step loads 2
B vectors and multiplies them by 6 broadcast A elements. Cranelift 0.135 lowers `fma` only to
`vfmadd213ps`/`vfmadd132ps`, which overwrite a *multiplicand*. kiln therefore gives every FMA its own
`vbroadcastss` from memory (a value used once, that the FMA may overwrite), and regalloc's rotation of
the accumulators leaves 12 `movdqa` at the loop's back edge. This script runs, in inline assembly:

  kiln        the loop as kiln emits it today (transcribed from `objdump -d` of a 1024x1024 MatMul)
  kiln-nomov  the same without the 12 back-edge moves (wrong results; timing only)
  231-fresh   `vfmadd231ps` (accumulator overwritten) with kiln's 12 broadcasts
  231-shared  `vfmadd231ps` with one broadcast per row (6), what a 231 lowering would allow
  kiln-x2     kiln's loop, two k steps per iteration, 12 moves per iteration
  shuf4       A from a packed panel: rows 0-3 splatted from one vector load by `vpermilps` into
              fresh registers (loads 14 -> 7), the 213 form, 12 moves per step
  shuf4-x2, shuf2-x2
              the same (4 or 2 rows by shuffles) with two k steps per iteration and the
              accumulators rotated through 13 registers so that they end where they started: no
              moves at all, still only the 213 form that Cranelift emits

and prints cycles per k step (12 FMAs; 6.0 cycles is the 2-FMA-per-cycle peak) at the clock measured
by chains of dependent register adds (bench_compare's measured_clock_ghz). The numbers show where the tile's time goes; nothing here is kiln code.
"""
import os
import shutil
import subprocess
import sys
import tempfile

from bench_compare import measured_clock_ghz  # chains of dependent register adds, as the GEMM bench

# kiln's loop body, from the disassembly (rcx: A at (row 0, k), rsi: packed B at k).
KILN = """
vbroadcastss (%%rcx),%%xmm10
vmovups (%%rsi),%%xmm13
vfmadd213ps %%xmm12,%%xmm13,%%xmm10
vbroadcastss (%%rcx),%%xmm12
vmovups 0x10(%%rsi),%%xmm14
vfmadd213ps %%xmm11,%%xmm14,%%xmm12
vbroadcastss 0x1000(%%rcx),%%xmm11
vfmadd213ps %%xmm9,%%xmm13,%%xmm11
vbroadcastss 0x1000(%%rcx),%%xmm9
vfmadd213ps %%xmm8,%%xmm14,%%xmm9
vbroadcastss 0x2000(%%rcx),%%xmm8
vfmadd213ps %%xmm7,%%xmm13,%%xmm8
vbroadcastss 0x2000(%%rcx),%%xmm7
vfmadd213ps %%xmm6,%%xmm14,%%xmm7
vbroadcastss 0x3000(%%rcx),%%xmm6
vfmadd213ps %%xmm5,%%xmm13,%%xmm6
vbroadcastss 0x3000(%%rcx),%%xmm5
vfmadd213ps %%xmm4,%%xmm14,%%xmm5
vbroadcastss 0x4000(%%rcx),%%xmm4
vfmadd213ps %%xmm3,%%xmm13,%%xmm4
vbroadcastss 0x4000(%%rcx),%%xmm3
vfmadd213ps %%xmm2,%%xmm14,%%xmm3
vbroadcastss 0x5000(%%rcx),%%xmm2
vfmadd213ps %%xmm1,%%xmm13,%%xmm2
vbroadcastss 0x5000(%%rcx),%%xmm1
vfmadd213ps %%xmm0,%%xmm14,%%xmm1
add $0x4,%%rcx
add $0x20,%%rsi
"""
MOVES = """
movdqa %%xmm1,%%xmm0
movdqa %%xmm2,%%xmm1
movdqa %%xmm3,%%xmm2
movdqa %%xmm4,%%xmm3
movdqa %%xmm5,%%xmm4
movdqa %%xmm6,%%xmm5
movdqa %%xmm7,%%xmm6
movdqa %%xmm8,%%xmm7
movdqa %%xmm9,%%xmm8
movdqa %%xmm11,%%xmm9
movdqa %%xmm12,%%xmm11
movdqa %%xmm10,%%xmm12
"""


def fma231(shared: bool) -> str:
    lines = ["vmovups (%%rsi),%%xmm13", "vmovups 0x10(%%rsi),%%xmm14"]
    for r in range(6):
        for v in range(2):
            if v == 0 or not shared:
                lines.append(f"vbroadcastss {r * 0x1000:#x}(%%rcx),%%xmm15")
            lines.append(f"vfmadd231ps %%xmm{13 + v},%%xmm15,%%xmm{2 * r + v}")
    lines += ["add $0x4,%%rcx", "add $0x20,%%rsi"]
    return "\n".join(lines)


def rotated(shuffled: int, steps: int) -> str:
    """The 6x8 tile with A read from a packed panel (6 floats per k step): rows below `shuffled`
    splatted from one vector load of the panel by `vpermilps` into a fresh register, the others
    broadcast from memory, each FMA writing over its fresh multiplicand (the 213 form Cranelift
    emits). Accumulators rotate through the 13 registers xmm0-xmm12; with two steps per iteration,
    the second runs the accumulators in reverse order and each lands back in its home register,
    so the loop needs no moves at all. With one step, 12 moves bring them home."""
    home = list(range(12))
    where = dict(enumerate(home))
    spare = [12]
    lines = []
    for s in range(steps):
        lines += [f"vmovups {32 * s}(%%rsi),%%xmm13", f"vmovups {32 * s + 16}(%%rsi),%%xmm14"]
        if shuffled:
            lines.append(f"vmovups {24 * s}(%%rcx),%%xmm15")
        for j in (range(12) if s % 2 == 0 else reversed(range(12))):
            r, v = divmod(j, 2)
            t = home[j] if home[j] in spare else spare[0]
            spare.remove(t)
            if r < shuffled:
                lines.append(f"vpermilps ${r * 0x55:#x},%%xmm15,%%xmm{t}")
            else:
                lines.append(f"vbroadcastss {24 * s + 4 * r}(%%rcx),%%xmm{t}")
            lines.append(f"vfmadd213ps %%xmm{where[j]},%%xmm{13 + v},%%xmm{t}")
            spare.append(where[j])
            where[j] = t
    lines += [f"movdqa %%xmm{where[j]},%%xmm{home[j]}" for j in range(12) if where[j] != home[j]]
    lines += [f"add ${24 * steps},%%rcx", f"add ${32 * steps},%%rsi"]
    return "\n".join(lines)


# name: (loop body, k steps per iteration)
VARIANTS = {
    "kiln": (KILN + MOVES, 1),
    "kiln-nomov": (KILN, 1),
    "231-fresh": (fma231(False), 1),
    "231-shared": (fma231(True), 1),
    "kiln-x2 (moves every 2nd step)": (KILN + KILN + MOVES, 2),
    "shuf4 (4 rows by vpermilps)": (rotated(4, 1), 1),
    "shuf4-x2 (rotated, no moves)": (rotated(4, 2), 2),
    "shuf2-x2 (rotated, no moves)": (rotated(2, 2), 2),
}

STEPS = 256  # k steps per pass: A rows of 1 KiB, B strip of 8 KiB (L1)
PASSES = 400_000

C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(void) {
  float *a = aligned_alloc(64, 2 * (6 * 4096 + 4096)), *b = aligned_alloc(64, 2 * (8 * 4 * STEPS + 64));
  for (int i = 0; i < 2 * (6 * 1024 + 1024); i++) a[i] = 1e-3f;
  for (int i = 0; i < 2 * (8 * STEPS + 16); i++) b[i] = 1e-3f;
  double best = 1e9;
  for (int r = 0; r < 5; r++) {
    double t0 = now();
    for (long p = 0; p < PASSES; p++) {
      float *pa = a, *pb = b; long n = STEPS;
      __asm__ volatile("1:\n" BODY "\n sub $1,%%rdx\n jnz 1b\n" : "+c"(pa), "+S"(pb), "+d"(n) : : "memory",
        "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11","xmm12","xmm13","xmm14","xmm15");
    }
    double t = (now() - t0) / ((double)PASSES * STEPS); if (t < best) best = t;
  }
  printf("%.6e\n", best); /* seconds per k step */
  return 0;
}
"""


def c_string(asm: str) -> str:
    return "".join(f'"{line}\\n"' for line in asm.strip().splitlines())


def main() -> int:
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        print(f"fma_probe: no C compiler ({cc})", file=sys.stderr)
        return 1
    if os.uname().machine != "x86_64":
        print("fma_probe: x86_64 only", file=sys.stderr)
        return 1
    ghz = measured_clock_ghz()
    if ghz is None:
        print("fma_probe: could not measure the clock", file=sys.stderr)
        return 1
    print("| loop | loads per k step | cycles per k step | % of 2-FMA/cycle peak |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as d:
        for name, (body, steps) in VARIANTS.items():
            src = os.path.join(d, "probe.c")
            exe = os.path.join(d, "probe")
            text = C.replace("BODY", c_string(body)).replace("STEPS", str(STEPS)).replace("PASSES", str(PASSES))
            with open(src, "w") as f:
                f.write(text)
            subprocess.run([cc, "-O2", src, "-o", exe], check=True)
            secs = float(subprocess.run([exe], check=True, capture_output=True, text=True).stdout)
            cyc = secs * ghz * 1e9 / steps
            loads = sum(1 for l in body.splitlines() if "(%%" in l) // steps
            print(f"| {name} | {loads} | {cyc:.2f} | {100 * 6.0 / cyc:.1f}% |")
    print(f"\nclock {ghz:.2f} GHz (dependent adds); {STEPS} k steps per pass, the best of 5 runs of {PASSES} passes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
