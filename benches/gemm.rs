//! GEMM throughput: `Y[M,N] = A[M,K] x B[K,N]`, B a constant, M = N = K in {64, 256, 512, 1024},
//! and the GEMM-based convolution on layer shapes of ResNet-18 (3x3 at each stage, the 7x7 stem,
//! a stride-2 3x3) and MobileNetV2 (pointwise), compiled by kiln for the host (`generic` and
//! `native`) and timed inside kiln's C driver (`Runner::bench`, the same timing as `kiln bench`).
//! Prints GFLOP/s and the share of the core's 128-bit FMA peak: 16 flop/cycle (2 FMA pipes x 4
//! f32 lanes x 2 flop) x the measured clock.
//!
//! A `harness = false` bench rather than a criterion one: the kernel runs in the driver process, so
//! criterion would time process start-up, not the kernel. The statistics follow criterion's idea:
//! several samples (separate driver processes), each the median of N runs; the report is the
//! median of the sample medians.
//!
//! ```text
//! cargo bench --bench gemm                 # all cases
//! cargo bench --bench gemm -- 256 1024     # only cases whose name contains 256 or 1024
//! cargo bench --bench gemm -- conv         # only the convolutions
//! KILN_BENCH_MARKDOWN=gemm.md cargo bench --bench gemm   # also write the table as markdown
//! ```

mod common;

use kiln_frontend::builder::{attr, elem, ModelBuilder};
use std::fmt::Write as _;

const SIZES: [usize; 4] = [64, 256, 512, 1024];

/// A convolution layer: (name, in channels, out channels, input size, kernel, stride, pad).
type ConvShape = (&'static str, usize, usize, usize, usize, usize, usize);

/// ResNet-18 3x3 convolutions at each stage, its stem and a stride-2 3x3; MobileNetV2 pointwise
/// convolutions (expand and project) at three resolutions.
const CONVS: [ConvShape; 9] = [
    ("conv-r18-l1-3x3", 64, 64, 56, 3, 1, 1),
    ("conv-r18-l2-3x3", 128, 128, 28, 3, 1, 1),
    ("conv-r18-l3-3x3", 256, 256, 14, 3, 1, 1),
    ("conv-r18-l4-3x3", 512, 512, 7, 3, 1, 1),
    ("conv-r18-stem-7x7s2", 3, 64, 224, 7, 2, 3),
    ("conv-r18-3x3s2", 64, 128, 56, 3, 2, 1),
    ("conv-mb2-pw-56", 144, 24, 56, 1, 1, 0),
    ("conv-mb2-pw-14", 96, 576, 14, 1, 1, 0),
    ("conv-mb2-pw-7", 320, 1280, 7, 1, 1, 0),
];

/// One benchmark case.
#[derive(Clone, Copy)]
enum Case {
    /// `n x n` times a constant `n x n`.
    Square(usize),
    /// A convolution with constant weights and bias, batch 1.
    Conv(ConvShape),
}

impl Case {
    fn name(&self) -> String {
        match self {
            Case::Square(n) => format!("matmul-{n}"),
            Case::Conv(c) => c.0.to_string(),
        }
    }

    fn out_size(&self) -> usize {
        match *self {
            Case::Square(_) => 0,
            Case::Conv((_, _, _, hw, k, s, p)) => (hw + 2 * p - k) / s + 1,
        }
    }

    /// Multiply-adds x 2.
    fn flop(&self) -> f64 {
        match *self {
            Case::Square(n) => 2.0 * (n as f64).powi(3),
            Case::Conv((_, c, m, _, k, _, _)) => {
                let o = self.out_size();
                2.0 * (m * c * k * k * o * o) as f64
            }
        }
    }

    fn input_len(&self) -> usize {
        match *self {
            Case::Square(n) => n * n,
            Case::Conv((_, c, _, hw, _, _, _)) => c * hw * hw,
        }
    }

    fn model(&self) -> Vec<u8> {
        match *self {
            Case::Square(n) => gemm_model(n),
            Case::Conv(shape) => conv_model(shape, self.out_size()),
        }
    }

    fn check(&self, x: &[f32], out: &[u8]) -> Result<(), String> {
        match *self {
            Case::Square(n) => check(n, x, out),
            Case::Conv(shape) => check_conv(shape, self.out_size(), x, out),
        }
    }
}

fn conv_model((_, c, m, hw, k, s, p): ConvShape, o: usize) -> Vec<u8> {
    let w: Vec<f32> = (0..m * c * k * k).map(|i| value(i, 17) * 0.1).collect();
    let b: Vec<f32> = (0..m).map(|i| value(i, 3)).collect();
    let (c, m, hw, k, s, p, o) = (
        c as i64, m as i64, hw as i64, k as i64, s as i64, p as i64, o as i64,
    );
    let mut mb = ModelBuilder::new("conv");
    mb.input("x", elem::FLOAT, &[1, c, hw, hw])
        .initializer_f32("w", &[m, c, k, k], &w)
        .initializer_f32("b", &[m], &b)
        .node(
            "Conv",
            &["x", "w", "b"],
            &["y"],
            vec![
                attr::ints("kernel_shape", &[k, k]),
                attr::ints("strides", &[s, s]),
                attr::ints("pads", &[p, p, p, p]),
            ],
        )
        .output("y", elem::FLOAT, &[1, m, o, o]);
    mb.to_bytes()
}

/// Checks a spread of convolution outputs against a plain f64 sum.
fn check_conv(
    (_, c, m, hw, k, s, p): ConvShape,
    o: usize,
    x: &[f32],
    out: &[u8],
) -> Result<(), String> {
    let y: Vec<f32> = out
        .chunks_exact(4)
        .map(|ch| f32::from_le_bytes(ch.try_into().unwrap()))
        .collect();
    for t in 0..64 {
        let (mi, oy, ox) = ((t * 37) % m, (t * 13) % o, (t * 101 + 3) % o);
        let mut want = value(mi, 3) as f64;
        for ci in 0..c {
            for ky in 0..k {
                for kx in 0..k {
                    let (iy, ix) = (
                        (oy * s + ky) as i64 - p as i64,
                        (ox * s + kx) as i64 - p as i64,
                    );
                    if iy < 0 || ix < 0 || iy >= hw as i64 || ix >= hw as i64 {
                        continue;
                    }
                    let wv = value(((mi * c + ci) * k + ky) * k + kx, 17) as f64 * 0.1;
                    want += wv * x[(ci * hw + iy as usize) * hw + ix as usize] as f64;
                }
            }
        }
        let got = y[(mi * o + oy) * o + ox] as f64;
        if (got - want).abs() > 1e-3 * (1.0 + want.abs()) {
            return Err(format!("y[{mi},{oy},{ox}] = {got}, expected {want}"));
        }
    }
    Ok(())
}
const CPUS: [&str; 2] = ["generic", "native"];
/// Samples (driver processes) per case.
const SAMPLES: usize = 5;
/// Seconds of timed runs per sample, at most.
const BUDGET_S: f64 = 0.6;
/// f32 flop per cycle of one core with two 128-bit FMA pipes.
const FLOP_PER_CYCLE_128: f64 = 16.0;

/// A deterministic value in [-0.5, 0.5) for element `i` (no RNG crate needed, no denormals).
fn value(i: usize, salt: usize) -> f32 {
    ((i.wrapping_mul(2_654_435_761).wrapping_add(salt) % 1000) as f32) / 1000.0 - 0.5
}

fn gemm_model(n: usize) -> Vec<u8> {
    let b: Vec<f32> = (0..n * n).map(|i| value(i, 17)).collect();
    let d = n as i64;
    let mut m = ModelBuilder::new("gemm");
    m.input("a", elem::FLOAT, &[d, d])
        .initializer_f32("b", &[d, d], &b)
        .node("MatMul", &["a", "b"], &["y"], vec![])
        .output("y", elem::FLOAT, &[d, d]);
    m.to_bytes()
}

/// Checks a spread of output elements against a plain f64 dot product, so a broken kernel does not
/// get a throughput figure.
fn check(n: usize, a: &[f32], out: &[u8]) -> Result<(), String> {
    let y: Vec<f32> = out
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for k in 0..64 {
        let (i, j) = ((k * 37) % n, (k * 101 + 3) % n);
        let want: f64 = (0..n)
            .map(|p| a[i * n + p] as f64 * value(p * n + j, 17) as f64)
            .sum();
        let got = y[i * n + j] as f64;
        if (got - want).abs() > 1e-3 * (1.0 + want.abs()) {
            return Err(format!("y[{i},{j}] = {got}, expected {want}"));
        }
    }
    Ok(())
}

struct Row {
    name: String,
    flop: f64,
    cpu: &'static str,
    runs: usize,
    p50_ns: f64,
    best_ns: f64,
}

fn bench_one(case: Case, cpu: &'static str, dir: &std::path::Path) -> Result<Row, String> {
    let path = dir.join(format!("{}.onnx", case.name()));
    std::fs::write(&path, case.model()).map_err(|e| e.to_string())?;
    let compiled = kiln::Compiler::new(&path)
        .target(common::host_target(cpu))
        .compile()
        .map_err(|e| e.to_string())?;
    let runner = kiln::runner::Runner::build(&compiled).map_err(|e| e.to_string())?;
    let a: Vec<f32> = (0..case.input_len()).map(|i| value(i, 5)).collect();
    let input: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
    let inputs = vec![input];
    let out = runner.run(&inputs, 1).map_err(|e| e.to_string())?;
    case.check(&a, &out[0])?;
    // Calibrate N on a short run, then take SAMPLES samples of N runs each.
    let probe = runner.bench(&inputs, 4).map_err(|e| e.to_string())?;
    let runs = common::runs_for(probe.quantile(0.5), BUDGET_S, 5, 2000);
    let mut medians = Vec::new();
    let mut best = f64::MAX;
    for _ in 0..SAMPLES {
        let t = runner.bench(&inputs, runs + 1).map_err(|e| e.to_string())?;
        medians.push(t.quantile(0.5));
        best = best.min(t.quantile(0.0));
    }
    Ok(Row {
        name: case.name(),
        flop: case.flop(),
        cpu,
        runs,
        p50_ns: common::median(&medians),
        best_ns: best,
    })
}

fn main() {
    let filters = common::filters();
    let before = common::measured_clock_ghz();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut rows = Vec::new();
    let cases = SIZES
        .iter()
        .map(|&n| Case::Square(n))
        .chain(CONVS.iter().map(|&c| Case::Conv(c)));
    for case in cases {
        if !common::selected(&case.name(), &filters) {
            continue;
        }
        for cpu in CPUS {
            eprintln!("{} {cpu} ...", case.name());
            rows.push((case.name(), cpu, bench_one(case, cpu, dir.path())));
        }
    }
    // The clock again after the runs, and the higher of the two: the boost level varies with what
    // else the machine runs, and the peak should not be understated.
    let after = common::measured_clock_ghz();
    let mhz = common::cpuinfo_mhz();
    let (ghz, clock_src) = match (before.into_iter().chain(after).reduce(f64::max), mhz) {
        (Some(g), _) => (
            g,
            "measured: the best of 40 dependent-add loops, before and after the runs",
        ),
        (None, Some(m)) => (m / 1e3, "from /proc/cpuinfo"),
        (None, None) => (f64::NAN, "unknown"),
    };
    let peak = FLOP_PER_CYCLE_128 * ghz;
    let mut md = String::new();
    writeln!(md, "matmul-n: Y[n,n] = A[n,n] x B[n,n], B constant; conv-*: batch-1 convolutions with constant weights and bias.").unwrap();
    writeln!(md, "GFLOP/s count a convolution's direct flops (2 x C x M x taps x outputs): the 3x3 stride-1 layers kiln computes by Winograd do 2.25-4x fewer multiplies, so they can pass the 128-bit peak.").unwrap();
    writeln!(
        md,
        "f32, one thread, timed inside kiln's C driver; {SAMPLES} samples"
    )
    .unwrap();
    writeln!(md, "(driver processes) per case, each the median of N runs; p50 = median of the sample medians.").unwrap();
    writeln!(md).unwrap();
    writeln!(md, "- CPU: {}", common::cpu_model()).unwrap();
    writeln!(
        md,
        "- clock: {ghz:.2} GHz ({clock_src}); /proc/cpuinfo says {}",
        mhz.map_or("nothing".to_string(), |m| format!("{m:.0} MHz"))
    )
    .unwrap();
    writeln!(
        md,
        "- 128-bit FMA peak: {FLOP_PER_CYCLE_128} flop/cycle x {ghz:.2} GHz = {peak:.1} GFLOP/s"
    )
    .unwrap();
    writeln!(md).unwrap();
    writeln!(md, "| case | cpu | N | p50 ms | best ms | GFLOP/s (p50) | GFLOP/s (best) | % of 128-bit peak (p50) | % of peak (best) |").unwrap();
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    for (name, cpu, r) in rows {
        match r {
            Ok(r) => {
                let flop = r.flop;
                let g50 = flop / r.p50_ns;
                let gbest = flop / r.best_ns;
                writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1}% | {:.1}% |",
                    r.name,
                    r.cpu,
                    r.runs,
                    common::ms(r.p50_ns),
                    common::ms(r.best_ns),
                    g50,
                    gbest,
                    100.0 * g50 / peak,
                    100.0 * gbest / peak
                )
                .unwrap();
            }
            Err(e) => writeln!(
                md,
                "| {name} | {cpu} | — | failed: {} | | | | | |",
                e.lines().next().unwrap_or("")
            )
            .unwrap(),
        }
    }
    print!("{md}");
    if let Some(p) = std::env::var_os("KILN_BENCH_MARKDOWN") {
        std::fs::write(&p, &md)
            .unwrap_or_else(|e| eprintln!("cannot write {}: {e}", p.to_string_lossy()));
    }
}
