//! GEMM tile throughput: `Y[M,N] = A[M,K] x B[K,N]`, B a constant, M = N = K in {64, 256, 512, 1024},
//! compiled by kiln for the host (`generic` and `native`) and timed inside kiln's C driver
//! (`Runner::bench`, the same timing as `kiln bench`). Prints GFLOP/s and the share of the core's
//! 128-bit FMA peak: 16 flop/cycle (2 FMA pipes x 4 f32 lanes x 2 flop) x the measured clock.
//!
//! A `harness = false` bench rather than a criterion one: the kernel runs in the driver process, so
//! criterion would time process start-up, not the kernel. The statistics follow criterion's idea:
//! several samples (separate driver processes), each the median of N runs; the report is the
//! median of the sample medians.
//!
//! ```text
//! cargo bench --bench gemm                 # all sizes
//! cargo bench --bench gemm -- 256 1024     # only these sizes
//! KILN_BENCH_MARKDOWN=gemm.md cargo bench --bench gemm   # also write the table as markdown
//! ```

mod common;

use kiln_frontend::builder::{elem, ModelBuilder};
use std::fmt::Write as _;

const SIZES: [usize; 4] = [64, 256, 512, 1024];
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
    n: usize,
    cpu: &'static str,
    runs: usize,
    p50_ns: f64,
    best_ns: f64,
}

fn bench_one(n: usize, cpu: &'static str, dir: &std::path::Path) -> Result<Row, String> {
    let path = dir.join(format!("gemm{n}.onnx"));
    std::fs::write(&path, gemm_model(n)).map_err(|e| e.to_string())?;
    let compiled = kiln::Compiler::new(&path)
        .target(common::host_target(cpu))
        .compile()
        .map_err(|e| e.to_string())?;
    let runner = kiln::runner::Runner::build(&compiled).map_err(|e| e.to_string())?;
    let a: Vec<f32> = (0..n * n).map(|i| value(i, 5)).collect();
    let input: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
    let inputs = vec![input];
    let out = runner.run(&inputs, 1).map_err(|e| e.to_string())?;
    check(n, &a, &out[0])?;
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
        n,
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
    for n in SIZES {
        if !common::selected(&n.to_string(), &filters) {
            continue;
        }
        for cpu in CPUS {
            eprintln!("gemm {n} {cpu} ...");
            rows.push((n, cpu, bench_one(n, cpu, dir.path())));
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
    writeln!(md, "Y[n,n] = A[n,n] x B[n,n], B constant, f32, one thread, timed inside kiln's C driver; {SAMPLES} samples").unwrap();
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
    writeln!(md, "| n | cpu | N | p50 ms | best ms | GFLOP/s (p50) | GFLOP/s (best) | % of 128-bit peak (p50) |").unwrap();
    writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---:|").unwrap();
    for (n, cpu, r) in rows {
        match r {
            Ok(r) => {
                let flop = 2.0 * (r.n as f64).powi(3);
                let g50 = flop / r.p50_ns;
                writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1}% |",
                    r.n,
                    r.cpu,
                    r.runs,
                    common::ms(r.p50_ns),
                    common::ms(r.best_ns),
                    g50,
                    flop / r.best_ns,
                    100.0 * g50 / peak
                )
                .unwrap();
            }
            Err(e) => writeln!(
                md,
                "| {n} | {cpu} | — | failed: {} | | | | |",
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
