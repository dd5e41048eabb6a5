//! Compile time per model (criterion): `Compiler::compile` for the host at `native`, in process:
//! reading the file, import, the pass pipeline, Cranelift code generation and the archive. Each model
//! in `tests/models` and `build/families` (when present); models kiln cannot compile are skipped
//! with a note on stderr.
//!
//! ```text
//! cargo bench --bench compile
//! cargo bench --bench compile -- resnet18      # criterion's filter
//! ```

mod common;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use std::time::Duration;

fn compile_time(c: &mut Criterion) {
    let target = common::host_target("native");
    let mut group = c.benchmark_group("compile");
    // Big models take most of a second each: few flat samples keep the whole bench to minutes.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for path in common::models() {
        let name = common::stem(&path);
        let compiler = kiln::Compiler::new(&path).target(target.clone());
        if let Err(e) = compiler.compile() {
            eprintln!(
                "compile/{name}: skipped, kiln cannot compile it: {}",
                e.to_string().lines().next().unwrap_or("")
            );
            continue;
        }
        group.bench_function(name.as_str(), |b| {
            b.iter(|| compiler.compile().expect("compiled once already"))
        });
    }
    group.finish();
}

criterion_group!(benches, compile_time);
criterion_main!(benches);
