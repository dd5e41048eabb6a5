//! Fused elementwise chains through the whole compiler: an ONNX model of separate elementwise nodes
//! is imported, optimized (the pipeline fuses each chain into one `fused_ew`), compiled for x86_64
//! and aarch64, linked into a C program and run (aarch64 under qemu). The outputs must match the
//! reference interpreter run on the model as imported (no passes), and runs split into 1, 2 and 3
//! parts must give the same bytes as the serial run.

use kiln::runner::{Runner, Toolchain};
use kiln::{Compiled, Compiler, ImportOptions, Target};
use kiln_frontend::builder::{attr, elem, ModelBuilder};
use kiln_ir::{interpret, Op, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGETS: [&str; 2] = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

/// x and y of the tanh chain: big enough to be split over rows, rows of 173 (a scalar tail).
const X_DIMS: [i64; 4] = [2, 3, 131, 173];
/// The one-dimensional chains: split into blocks, the last one short.
const Z_LEN: i64 = 40_003;

/// Three chains:
/// - `tanh(x * 0.5 + 1) * y`, y a row broadcast along x;
/// - `sqrt(|sin(z) * 3| + 0.5)` on a long vector;
/// - `|fmod(z * 3, 1.7)|`, whose remainder makes the kernel scalar.
fn chain_model(dir: &Path) -> PathBuf {
    let mut b = ModelBuilder::new("chains");
    b.input("x", elem::FLOAT, &X_DIMS)
        .input("y", elem::FLOAT, &[X_DIMS[3]])
        .input("z", elem::FLOAT, &[Z_LEN])
        .initializer_f32("half", &[], &[0.5])
        .initializer_f32("one", &[1], &[1.0])
        .initializer_f32("three", &[], &[3.0])
        .initializer_f32("m", &[], &[1.7])
        .node("Mul", &["x", "half"], &["a"], vec![])
        .node("Add", &["a", "one"], &["b"], vec![])
        .node("Tanh", &["b"], &["c"], vec![])
        .node("Mul", &["c", "y"], &["gated"], vec![])
        .node("Sin", &["z"], &["s"], vec![])
        .node("Mul", &["s", "three"], &["s3"], vec![])
        .node("Abs", &["s3"], &["sa"], vec![])
        .node("Add", &["sa", "half"], &["sh"], vec![])
        .node("Sqrt", &["sh"], &["root"], vec![])
        .node("Mul", &["z", "three"], &["z3"], vec![])
        .node("Mod", &["z3", "m"], &["r"], vec![attr::int("fmod", 1)])
        .node("Abs", &["r"], &["rem"], vec![])
        .output("gated", elem::FLOAT, &X_DIMS)
        .output("root", elem::FLOAT, &[Z_LEN])
        .output("rem", elem::FLOAT, &[Z_LEN]);
    let p = dir.join("chains.onnx");
    std::fs::write(&p, b.to_bytes()).unwrap();
    p
}

/// Deterministic inputs in about [-3, 3].
fn inputs(c: &Compiled) -> Vec<Tensor> {
    c.inputs
        .iter()
        .enumerate()
        .map(|(k, io)| {
            let n: usize = io.dims.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 + k * 104_729) % 6007) as f32 / 1000.0 - 3.0)
                .collect();
            Tensor::from_f32(io.dims.clone(), &v)
        })
        .collect()
}

/// The object's trampolines, one per distinct split kernel (`nm`; `None` without it).
fn task_symbols(c: &Compiled) -> Option<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.o");
    std::fs::write(&p, &c.object).unwrap();
    let out = Command::new("nm").arg(&p).output().ok()?;
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .filter(|s| s.ends_with("_task"))
            .map(str::to_string)
            .collect(),
    )
}

fn runner_or_skip(c: &Compiled) -> Option<Runner> {
    let tc = Toolchain::for_target(c).unwrap();
    if !tc.available() {
        eprintln!("SKIP {}: {} not installed", c.target.triple, tc.cc[0]);
        return None;
    }
    Some(Runner::build(c).unwrap())
}

#[test]
fn fused_chains_match_the_reference_serial_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let model = chain_model(dir.path());

    // The pipeline fuses each chain into one node.
    let (optimized, _) = Compiler::new(&model).optimized_graph().unwrap();
    let fused = optimized
        .node_ids()
        .into_iter()
        .filter(|&id| matches!(optimized.node(id).op, Op::FusedEw(_)))
        .count();
    assert_eq!(
        fused,
        3,
        "{}",
        kiln_ir::print(&optimized, Default::default())
    );

    // The oracle: the model as imported, before any pass.
    let imported = kiln_frontend::import_file(&model, &ImportOptions::default()).unwrap();

    for triple in TARGETS {
        let c = Compiler::new(&model)
            .name("chains")
            .target(Target::parse(triple, "generic", &[]).unwrap())
            .compile()
            .unwrap_or_else(|e| panic!("{triple}: {e}"));
        if let Some(tasks) = task_symbols(&c) {
            // Every fused kernel is large enough to be split into parts.
            let fused_tasks = tasks.iter().filter(|t| t.contains("fused_ew")).count();
            assert_eq!(fused_tasks, 3, "{triple}: split kernels {tasks:?}");
        }
        let ins = inputs(&c);
        let want = interpret(&imported.graph, &ins).unwrap();
        let Some(mut r) = runner_or_skip(&c) else {
            continue;
        };
        let raw: Vec<Vec<u8>> = ins.iter().map(|t| t.bytes().to_vec()).collect();
        let serial = r.run(&raw, 1).unwrap();
        for (k, (got, w)) in serial.iter().zip(&want).enumerate() {
            let got: Vec<f32> = got
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let w = w.to_f32_vec();
            assert_eq!(got.len(), w.len());
            let bad: Vec<String> = got
                .iter()
                .zip(&w)
                .enumerate()
                .filter(|(_, (&g, &w))| (g - w).abs() > 1e-5 + 1e-4 * w.abs())
                .take(4)
                .map(|(i, (g, w))| format!("[{i}] got {g} want {w}"))
                .collect();
            assert!(
                bad.is_empty(),
                "{triple}: output {} differs: {}",
                c.outputs[k].name,
                bad.join("; ")
            );
        }
        for threads in [1, 2, 3] {
            r.set_threads(threads);
            let got = r.run(&raw, 2).unwrap();
            for (k, (g, s)) in got.iter().zip(&serial).enumerate() {
                assert!(
                    g == s,
                    "{triple}: output {} with {threads} parts differs from the serial run",
                    c.outputs[k].name
                );
            }
        }
    }
}
