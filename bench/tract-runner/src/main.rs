//! `tract-runner MODEL --runs N --warmup W`: times tract on one ONNX model and prints JSON
//! `{p50_ms, p99_ms, min_ms, cold_ms, load_ms, peak_rss_kib, runs, warmup}` on stdout.
//!
//! kiln's pure-Rust peer in `scripts/bench_compare.py`. It loads the model with the input shapes the
//! model declares, optimizes it (`into_optimized`, `into_runnable`), and feeds it the same
//! deterministic pattern `kiln bench` uses (`kiln::runner::pattern`), so all tools compute on
//! identical bytes. tract's matrix kernels run on one thread unless its `multithread-mm` feature is
//! on, and it is off here: the comparison is single-threaded.
//!
//! Exit status: 0 on success, 2 on bad arguments, 1 when tract fails to load or run the model.

use std::process::ExitCode;
use std::time::Instant;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::tract_data::internal::{bail, format_err};

struct Args {
    model: String,
    runs: usize,
    warmup: usize,
}

fn usage() -> String {
    "usage: tract-runner MODEL [--runs N] [--warmup W]".to_string()
}

fn parse_args() -> Result<Args, String> {
    let mut model = None;
    let mut runs = 100;
    let mut warmup = 5;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |flag: &str| -> Result<usize, String> {
            let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            v.parse()
                .map_err(|_| format!("{flag}: {v:?} is not a non-negative integer"))
        };
        match a.as_str() {
            "--runs" | "-n" => runs = number("--runs")?,
            "--warmup" => warmup = number("--warmup")?,
            "-h" | "--help" => return Err(usage()),
            s if s.starts_with('-') => return Err(format!("unknown flag {s}\n{}", usage())),
            _ if model.is_none() => model = Some(a),
            _ => return Err(format!("one model only\n{}", usage())),
        }
    }
    let model = model.ok_or_else(usage)?;
    Ok(Args {
        model,
        runs: runs.max(1),
        warmup,
    })
}

/// The same xorshift32 stream as `kiln::runner::pattern`, restarted for every input: floats in
/// [-1, 1), integers in [0, 8).
fn pattern(dt: DatumType, shape: &[usize]) -> TractResult<Tensor> {
    let n: usize = shape.iter().product();
    let mut state: u32 = 0x9e37_79b9;
    let unit: Vec<f64> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 8) as f64 / (1u32 << 24) as f64
        })
        .collect();
    let t = match dt {
        DatumType::F32 => Tensor::from_shape(
            shape,
            &unit
                .iter()
                .map(|x| (x * 2.0 - 1.0) as f32)
                .collect::<Vec<_>>(),
        )?,
        DatumType::F64 => Tensor::from_shape(
            shape,
            &unit.iter().map(|x| x * 2.0 - 1.0).collect::<Vec<_>>(),
        )?,
        DatumType::I64 => Tensor::from_shape(
            shape,
            &unit.iter().map(|x| (x * 8.0) as i64).collect::<Vec<_>>(),
        )?,
        DatumType::I32 => Tensor::from_shape(
            shape,
            &unit.iter().map(|x| (x * 8.0) as i32).collect::<Vec<_>>(),
        )?,
        DatumType::Bool => Tensor::from_shape(
            shape,
            &unit
                .iter()
                .map(|x| (x * 8.0) as i64 != 0)
                .collect::<Vec<_>>(),
        )?,
        other => bail!("input type {other:?} is not supported by tract-runner"),
    };
    Ok(t)
}

/// Peak resident set of this process in KiB (`VmHWM`), 0 if unknown.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    // Same rule as `kiln::runner::Timings::quantile`: nearest rank, rounded.
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn bench(args: &Args) -> TractResult<String> {
    let t0 = Instant::now();
    let model = tract_onnx::onnx()
        .model_for_path(&args.model)?
        .into_optimized()?;
    let mut inputs = TVec::new();
    for i in 0..model.inputs.len() {
        let fact = model.input_fact(i)?;
        let shape = fact
            .shape
            .as_concrete()
            .ok_or_else(|| {
                format_err!(
                    "input {i} has a symbolic shape {:?}: tract-runner needs fixed shapes",
                    fact.shape
                )
            })?
            .to_vec();
        inputs.push(pattern(fact.datum_type, &shape)?.into_tvalue());
    }
    let plan = model.into_runnable()?;
    // One state reused across runs, as an application would keep it: tract then reuses its
    // scratch buffers instead of allocating them every call.
    let mut state = plan.spawn()?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;

    let t = Instant::now();
    state.run(inputs.clone())?;
    let cold_ms = t.elapsed().as_secs_f64() * 1e3;
    for _ in 0..args.warmup {
        state.run(inputs.clone())?;
    }
    let mut times = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        // The clone only bumps reference counts (TValue is shared), so it costs nothing measurable.
        let run_inputs = inputs.clone();
        let t = Instant::now();
        let out = state.run(run_inputs)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        drop(out);
    }
    times.sort_by(f64::total_cmp);
    Ok(format!(
        "{{\"tool\": \"tract\", \"model\": {:?}, \"runs\": {}, \"warmup\": {}, \"load_ms\": {:.4}, \"cold_ms\": {:.4}, \"p50_ms\": {:.4}, \"p99_ms\": {:.4}, \"min_ms\": {:.4}, \"peak_rss_kib\": {}}}",
        args.model,
        args.runs,
        args.warmup,
        load_ms,
        cold_ms,
        quantile(&times, 0.5),
        quantile(&times, 0.99),
        times[0],
        peak_rss_kib()
    ))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match bench(&args) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tract-runner: {}: {e:#}", args.model);
            ExitCode::from(1)
        }
    }
}
