//! End to end: compile the exporter-made models for x86_64 and aarch64, link each archive into a C
//! program with nothing else, run it (aarch64 under qemu) and compare with onnxruntime's outputs
//! (tests/data, made by scripts/make_models.py) and with kiln's reference interpreter.

use kiln::runner::{Runner, Toolchain};
use kiln::{Compiled, Compiler, Target, WeightsMode};
use kiln_ir::{DType, Tensor};
use std::path::{Path, PathBuf};

const TARGETS: [&str; 2] = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compile(model: &str, triple: &str) -> Compiled {
    Compiler::new(root().join("tests/models").join(model))
        .target(Target::parse(triple, "generic", &[]).unwrap())
        .compile()
        .unwrap_or_else(|e| panic!("{model} for {triple}: {e}"))
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Max over elements of |got - want| / max(|want|, scale * 1e-3), where scale is the output's largest
/// magnitude: relative where values are large, absolute near zero.
fn max_rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want
        .iter()
        .fold(0f64, |m, &v| m.max(v.abs() as f64))
        .max(1e-6);
    got.iter()
        .zip(want)
        .map(|(&g, &w)| ((g as f64 - w as f64).abs()) / (w.abs() as f64).max(scale * 1e-3))
        .fold(0.0, f64::max)
}

fn reference_data(model: &str) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let dir = root()
        .join("tests/data")
        .join(model.trim_end_matches(".onnx"));
    let read_all = |prefix: &str| -> Vec<Vec<u8>> {
        (0..)
            .map(|k| dir.join(format!("{prefix}_{k}.bin")))
            .take_while(|p| p.exists())
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    };
    (read_all("input"), read_all("output"))
}

fn runner_or_skip(c: &Compiled) -> Option<Runner> {
    let tc = Toolchain::for_target(c).unwrap();
    if !tc.available() {
        eprintln!(
            "SKIP {}: {} not installed (scripts/install-deps.sh)",
            c.target.triple, tc.cc[0]
        );
        return None;
    }
    Some(Runner::build(c).unwrap())
}

fn check_model(model: &str) {
    let (inputs, want) = reference_data(model);
    // The reference interpreter on the optimized graph, as a second oracle.
    let (graph, _) = Compiler::new(root().join("tests/models").join(model))
        .optimized_graph()
        .unwrap();
    let in_tensors: Vec<Tensor> = graph
        .inputs
        .iter()
        .zip(&inputs)
        .map(|(&id, b)| {
            let ty = &graph.node(id).outputs[0].ty;
            Tensor::from_bytes(ty.dtype, ty.dims().unwrap(), b.clone()).unwrap()
        })
        .collect();
    let interp = kiln_ir::interpret(&graph, &in_tensors).unwrap();
    for (k, (t, w)) in interp.iter().zip(&want).enumerate() {
        let err = max_rel_err(&t.to_f32_vec(), &floats(w));
        assert!(
            err < 1e-4,
            "{model}: interpreter output {k} differs from onnxruntime by {err:e}"
        );
    }
    for triple in TARGETS {
        let c = compile(model, triple);
        let Some(r) = runner_or_skip(&c) else {
            continue;
        };
        let got = r.run(&inputs, 1).unwrap();
        assert_eq!(got.len(), want.len());
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(c.outputs[k].dtype, DType::F32);
            let err = max_rel_err(&floats(g), &floats(w));
            eprintln!("{model} {triple} output {k}: max rel err vs onnxruntime {err:.2e}");
            assert!(
                err < 1e-4,
                "{model} on {triple}: output {k} differs from onnxruntime by {err:e}"
            );
        }
    }
}

#[test]
fn mlp_matches_onnxruntime() {
    check_model("mlp.onnx");
}

#[test]
fn cnn_matches_onnxruntime() {
    check_model("cnn.onnx");
}

#[test]
fn legacy_cnn_matches_onnxruntime() {
    check_model("legacy_cnn.onnx");
}

#[test]
fn mixed_encodings_match_onnxruntime() {
    check_model("mixed_encodings.onnx");
}

#[test]
fn ops_zoo_matches_onnxruntime() {
    check_model("ops_zoo.onnx");
}

#[test]
fn compiling_twice_gives_identical_bytes() {
    for triple in TARGETS {
        let a = compile("cnn.onnx", triple);
        let b = compile("cnn.onnx", triple);
        assert!(a.archive == b.archive, "{triple}: archives differ");
        assert_eq!(a.header, b.header);
    }
}

#[test]
fn archives_have_no_undefined_symbols() {
    for triple in TARGETS {
        for m in ["mlp.onnx", "cnn.onnx", "legacy_cnn.onnx"] {
            let c = compile(m, triple);
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("lib.a");
            std::fs::write(&p, &c.archive).unwrap();
            let Ok(out) = std::process::Command::new("nm").arg("-u").arg(&p).output() else {
                eprintln!("SKIP: no nm");
                return;
            };
            let undefined: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.ends_with(':'))
                .map(str::to_string)
                .collect();
            assert!(undefined.is_empty(), "{m} for {triple} needs {undefined:?}");
        }
    }
}

#[test]
fn external_weights_file() {
    let dir = tempfile::tempdir().unwrap();
    let (c, w) = Compiler::new(root().join("tests/models/cnn.onnx"))
        .weights(WeightsMode::External)
        .write_to(dir.path())
        .unwrap();
    let wpath = w.weights.expect("a weights file");
    assert_eq!(wpath.file_name().unwrap(), "cnn.weights.bin");
    assert_eq!(
        std::fs::read(&wpath).unwrap().len(),
        c.weights.as_ref().unwrap().len()
    );
    assert!(
        c.header.contains("weights"),
        "header must document the weights pointer"
    );
    let embedded = compile("cnn.onnx", &Target::host().triple.to_string());
    assert!(
        c.archive.len() < embedded.archive.len(),
        "external weights must shrink the library"
    );
    let (inputs, want) = reference_data("cnn.onnx");
    if let Some(r) = runner_or_skip(&c) {
        let got = r.run(&inputs, 1).unwrap();
        assert!(max_rel_err(&floats(&got[0]), &floats(&want[0])) < 1e-4);
    }
}

#[test]
fn write_to_creates_library_and_header() {
    let dir = tempfile::tempdir().unwrap();
    let (c, w) = Compiler::new(root().join("tests/models/mlp.onnx"))
        .write_to(&dir.path().join("out"))
        .unwrap();
    assert_eq!(c.name, "mlp");
    assert_eq!(w.library, dir.path().join("out/libmlp.a"));
    assert_eq!(w.header, dir.path().join("out/mlp.h"));
    let h = std::fs::read_to_string(&w.header).unwrap();
    assert!(
        h.contains("int mlp_run(") && h.contains("mlp_ARENA_SIZE"),
        "{h}"
    );
    let names: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        ["libmlp.a", "mlp.h"],
        "no temporary files left behind"
    );
}

#[test]
fn bad_name_is_refused() {
    let e = Compiler::new(root().join("tests/models/mlp.onnx"))
        .name("my-model")
        .compile()
        .unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("my_model"), "{e}");
    let _ = Path::new("");
}
