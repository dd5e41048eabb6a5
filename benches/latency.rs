//! Run latency per model: each model in `tests/models` and `build/families` (when present) compiled
//! for the host at `generic` and `native`, timed inside kiln's C driver as `kiln bench` does.
//! Prints p50 / p99 / best of N warm runs and the cold first run; models kiln cannot compile are
//! listed with the first line of their error. For the comparison with onnxruntime and tract, see
//! `scripts/bench_compare.py`.
//!
//! A `harness = false` bench: the model runs in the driver process, outside anything criterion
//! could time.
//!
//! ```text
//! cargo bench --bench latency              # every model
//! cargo bench --bench latency -- resnet    # names containing "resnet"
//! ```

mod common;

/// Seconds of timed runs per case, at most.
const BUDGET_S: f64 = 3.0;

fn main() {
    let filters = common::filters();
    println!(
        "{} | timed inside kiln's C driver around NAME_run; N warm runs after one cold run",
        common::cpu_model()
    );
    println!();
    println!("| model | cpu | compile ms | N | cold ms | p50 ms | p99 ms | best ms |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for path in common::models() {
        let name = common::stem(&path);
        if !common::selected(&name, &filters) {
            continue;
        }
        for cpu in ["generic", "native"] {
            let t = std::time::Instant::now();
            let compiled = match kiln::Compiler::new(&path)
                .target(common::host_target(cpu))
                .compile()
            {
                Ok(c) => c,
                Err(e) => {
                    println!(
                        "| {name} | {cpu} | not compiled: {} | | | | | |",
                        e.to_string().lines().next().unwrap_or("")
                    );
                    continue;
                }
            };
            let compile_ms = t.elapsed().as_secs_f64() * 1e3;
            let inputs: Vec<Vec<u8>> = compiled.inputs.iter().map(kiln::runner::pattern).collect();
            let timed = kiln::runner::Runner::build(&compiled).and_then(|r| {
                let probe = r.bench(&inputs, 3)?;
                let runs = common::runs_for(probe.quantile(0.5), BUDGET_S, 5, 1000);
                Ok((runs, r.bench(&inputs, runs + 1)?))
            });
            match timed {
                Ok((runs, t)) => println!(
                    "| {name} | {cpu} | {compile_ms:.1} | {runs} | {} | {} | {} | {} |",
                    common::ms(t.runs_ns[0]),
                    common::ms(t.quantile(0.5)),
                    common::ms(t.quantile(0.99)),
                    common::ms(t.quantile(0.0))
                ),
                Err(e) => println!(
                    "| {name} | {cpu} | {compile_ms:.1} | failed: {} | | | | |",
                    e.to_string().lines().next().unwrap_or("")
                ),
            }
        }
    }
}
