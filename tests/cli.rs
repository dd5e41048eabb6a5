//! The `kiln` command as a user runs it: real exporter-made models, bad input, exit codes.

use kiln_frontend::builder::{attr, elem, ModelBuilder};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("running kiln")
}

fn model(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(name)
        .display()
        .to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `bytes` as `name` in a fresh temp dir.
fn write_tmp(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    (dir, p)
}

/// Runs `kiln inspect`, `kiln ir` and `kiln compile` on a bad model: each must exit 2 with a message
/// containing every `needle`, must not panic, and `compile` must leave its output folder empty.
fn assert_bad_input(path: &Path, needles: &[&str]) {
    let p = path.to_str().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let o = out_dir.path().to_str().unwrap();
    for args in [vec!["ir", p], vec!["compile", p, "--out-dir", o]] {
        let r = kiln(&args);
        let err = stderr(&r);
        assert_eq!(
            r.status.code(),
            Some(2),
            "kiln {args:?} should exit 2:\n{err}"
        );
        assert!(!err.contains("panicked"), "kiln {args:?} panicked:\n{err}");
        for n in needles {
            assert!(
                err.contains(n),
                "kiln {args:?}: message lacks {n:?}:\n{err}"
            );
        }
    }
    let left: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().collect();
    assert!(left.is_empty(), "compile left files behind: {left:?}");
}

#[test]
fn inspect_cnn_from_exporter() {
    let r = kiln(&["inspect", &model("cnn.onnx")]);
    assert!(r.status.success(), "{}", stderr(&r));
    let text = stdout(&r);
    for needle in [
        "image",
        "probs",
        "Conv",
        "BatchNormalization",
        "Gemm",
        "Softmax",
        "[1, 1, 28, 28]",
    ] {
        assert!(
            text.contains(needle) || text.contains(&needle.replace(", ", ",")),
            "inspect lacks {needle:?}:\n{text}"
        );
    }
    // JSON form parses and has the histogram: the CNN has 3 Conv nodes.
    let r = kiln(&["inspect", &model("cnn.onnx"), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).expect("inspect --json is JSON");
    let hist = v["op_histogram"].to_string();
    assert!(hist.contains("Conv") && hist.contains('3'), "{hist}");
}

#[test]
fn ir_snapshots_before_and_after_passes() {
    let before = kiln(&["ir", &model("legacy_cnn.onnx"), "--after", "input"]);
    assert!(before.status.success(), "{}", stderr(&before));
    let after = kiln(&["ir", &model("legacy_cnn.onnx")]);
    assert!(after.status.success(), "{}", stderr(&after));
    let (before, after) = (stdout(&before), stdout(&after));
    // The Shape -> Gather -> Unsqueeze -> Concat chain that computes the Reshape target is folded away.
    assert!(
        before.contains("= shape(") && !after.contains("= shape("),
        "{after}"
    );
    insta::assert_snapshot!("legacy_cnn_input", before);
    insta::assert_snapshot!("legacy_cnn_optimized", after);

    let mlp = kiln(&["ir", &model("mlp.onnx")]);
    insta::assert_snapshot!("mlp_optimized", stdout(&mlp));
}

#[test]
fn ir_unknown_pass_is_a_usage_error() {
    let r = kiln(&["ir", &model("mlp.onnx"), "--after", "nonsense"]);
    assert_ne!(r.status.code(), Some(0));
    assert!(stderr(&r).contains("const-fold"), "{}", stderr(&r));
}

#[test]
fn every_exported_model_imports() {
    for m in [
        "mlp.onnx",
        "cnn.onnx",
        "legacy_cnn.onnx",
        "mixed_encodings.onnx",
        "ops_zoo.onnx",
    ] {
        let r = kiln(&["ir", &model(m)]);
        assert!(r.status.success(), "{m}: {}", stderr(&r));
    }
}

#[test]
fn truncated_and_random_bytes() {
    let bytes = std::fs::read(model("cnn.onnx")).unwrap();
    let (_d, p) = write_tmp("truncated.onnx", &bytes[..bytes.len() / 2]);
    assert_bad_input(&p, &["truncated.onnx"]);
    let mut state = 12345u32;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (state >> 16) as u8
        })
        .collect();
    let (_d, p) = write_tmp("noise.onnx", &noise);
    assert_bad_input(&p, &["noise.onnx"]);
}

#[test]
fn missing_file() {
    let r = kiln(&["inspect", "/nonexistent/model.onnx"]);
    assert_eq!(r.status.code(), Some(2));
    assert!(stderr(&r).contains("/nonexistent/model.onnx"));
}

#[test]
fn unsupported_ops_are_all_listed() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[1, 4])
        .output("z", elem::FLOAT, &[1, 4]);
    b.node_named("first_bad", "", "StringNormalizer", &["x"], &["y"], vec![]);
    b.node_named(
        "second_bad",
        "com.microsoft",
        "FusedGemm",
        &["y"],
        &["z"],
        vec![],
    );
    let (_d, p) = write_tmp("unsupported.onnx", &b.to_bytes());
    assert_bad_input(
        &p,
        &[
            "first_bad",
            "StringNormalizer",
            "second_bad",
            "com.microsoft",
        ],
    );
    // inspect still reports the model, with the unsupported list.
    let r = kiln(&["inspect", p.to_str().unwrap()]);
    let text = stdout(&r) + &stderr(&r);
    assert!(
        text.contains("first_bad") && text.contains("second_bad"),
        "{text}"
    );
}

#[test]
fn cycle_dangling_and_shape_mismatch() {
    let mut b = ModelBuilder::new("cycle");
    b.input("x", elem::FLOAT, &[2])
        .output("b", elem::FLOAT, &[2]);
    b.node_named("n1", "", "Add", &["x", "b"], &["a"], vec![]);
    b.node_named("n2", "", "Relu", &["a"], &["b"], vec![]);
    let (_d, p) = write_tmp("cycle.onnx", &b.to_bytes());
    assert_bad_input(&p, &["cycle"]);

    let mut b = ModelBuilder::new("dangling");
    b.input("x", elem::FLOAT, &[2])
        .output("y", elem::FLOAT, &[2]);
    b.node_named("adder", "", "Add", &["x", "nowhere"], &["y"], vec![]);
    let (_d, p) = write_tmp("dangling.onnx", &b.to_bytes());
    assert_bad_input(&p, &["adder", "nowhere"]);

    let mut b = ModelBuilder::new("mismatch");
    b.input("x", elem::FLOAT, &[2, 3])
        .input("w", elem::FLOAT, &[4])
        .output("y", elem::FLOAT, &[2, 3]);
    b.node_named("bad_add", "", "Add", &["x", "w"], &["y"], vec![]);
    let (_d, p) = write_tmp("mismatch.onnx", &b.to_bytes());
    assert_bad_input(&p, &["bad_add", "Add"]);
}

#[test]
fn negative_and_absurd_dims() {
    let mut b = ModelBuilder::new("neg");
    b.input("x", elem::FLOAT, &[1, 4])
        .output("y", elem::FLOAT, &[1, 4]);
    b.initializer(kiln_frontend::builder::tensor_raw(
        "w",
        elem::FLOAT,
        &[-4],
        vec![],
    ));
    b.node_named("add", "", "Add", &["x", "w"], &["y"], vec![]);
    let (_d, p) = write_tmp("negative.onnx", &b.to_bytes());
    assert_bad_input(&p, &["w"]);

    // 1e12 x 1e12 floats: must be refused before any allocation.
    let mut b = ModelBuilder::new("huge");
    b.input("x", elem::FLOAT, &[1_000_000_000_000, 1_000_000_000_000])
        .output("y", elem::FLOAT, &[1]);
    b.node_named("relu", "", "Relu", &["x"], &["y"], vec![]);
    let (_d, p) = write_tmp("huge.onnx", &b.to_bytes());
    let r = kiln(&[
        "compile",
        p.to_str().unwrap(),
        "--out-dir",
        _d.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(!stderr(&r).contains("panicked"));
}

#[test]
fn external_data_escaping_the_model_folder() {
    let mut b = ModelBuilder::new("ext");
    b.input("x", elem::FLOAT, &[1, 4])
        .output("y", elem::FLOAT, &[1, 4]);
    let mut t = kiln_frontend::builder::tensor_raw("w", elem::FLOAT, &[4], vec![]);
    t.data_location = Some(1);
    t.external_data = vec![kiln_frontend::onnx::StringStringEntryProto {
        key: Some("location".into()),
        value: Some("../secret.bin".into()),
    }];
    b.initializer(t);
    b.node_named("add", "", "Add", &["x", "w"], &["y"], vec![]);
    let (_d, p) = write_tmp("escape.onnx", &b.to_bytes());
    assert_bad_input(&p, &["secret.bin"]);
}

#[test]
fn unbound_symbolic_dim_and_dim_flag() {
    use kiln_frontend::builder::DimSpec;
    let mut b = ModelBuilder::new("sym");
    b.input_sym(
        "x",
        elem::FLOAT,
        &[DimSpec::Param("batch"), DimSpec::Value(4)],
    );
    b.output_sym(
        "y",
        elem::FLOAT,
        &[DimSpec::Param("batch"), DimSpec::Value(4)],
    );
    b.node("Relu", &["x"], &["y"], vec![]);
    let (_d, p) = write_tmp("sym.onnx", &b.to_bytes());
    let r = kiln(&["ir", p.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        stderr(&r).contains("batch") && stderr(&r).contains("--dim"),
        "{}",
        stderr(&r)
    );
    let r = kiln(&["ir", p.to_str().unwrap(), "--dim", "batch=3"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(stdout(&r).contains("f32[3,4]"), "{}", stdout(&r));
    let _ = attr::int("unused", 0);
}

/// `compile --report` lists every kernel function with the nodes it computes, so a profiler's
/// symbols (`NAME_kN_op`) can be traced back to the model. In the small CNN the pools, the
/// depthwise conv (its relu fused), the global pool and the softmax are each served by exactly one
/// kernel (the other relus may or may not be fused, depending on the fusion defaults).
#[test]
fn report_lists_kernels_with_their_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().to_str().unwrap();
    let r = kiln(&["compile", &model("cnn.onnx"), "-o", o, "--report-json", "-"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let text = stdout(&r);
    let json: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    let kernels = json["kernels"].as_array().expect("kernels array");
    let mut nodes = Vec::new();
    let mut bytes = 0;
    for k in kernels {
        let sym = k["symbol"].as_str().unwrap();
        assert!(sym.starts_with("cnn_k"), "{sym}");
        let b = k["code_bytes"].as_u64().unwrap();
        assert!(b > 0, "{sym} has no code");
        bytes += b;
        for n in k["nodes"].as_array().unwrap() {
            nodes.push(n.as_str().unwrap().to_string());
        }
    }
    // Entry points and trampolines come on top of the kernels.
    assert!(bytes <= json["code_bytes"].as_u64().unwrap());
    for want in [
        "node \"/pool1/MaxPool\" (max_pool)",
        "node \"/pool2/MaxPool\" (max_pool)",
        "node \"/dw/Conv\" (conv)",
        "node \"/gap/GlobalAveragePool\" (global_avg_pool)",
        "node \"/softmax/Softmax\" (softmax)",
    ] {
        assert_eq!(
            nodes.iter().filter(|n| *n == want).count(),
            1,
            "{want} in {nodes:?}"
        );
    }
    assert!(
        !nodes.iter().any(|n| n.contains("/relu3/Relu")),
        "{nodes:?}"
    );
    // The text form prints the same table.
    let r = kiln(&["compile", &model("cnn.onnx"), "-o", o, "--report"]);
    let text = stdout(&r);
    assert!(text.contains("_max_pool"), "{text}");
    assert!(text.contains("\"/pool1/MaxPool\""), "{text}");
}

/// `--layout`: `nhwc` switches the small CNN's convs and pools to channels-last (its 1-channel
/// input needs no transpose, only a reshape), and so does the default `auto` (its cost rule finds
/// depthwise conv and pooling work to gain and no Winograd convs to lose), `nchw` leaves the IR as it was,
/// `kiln run` computes the same outputs either way, and a bad value is a usage error. `kiln ir
/// --help` lists the passes from the pipeline, `choose-layout` among them.
#[test]
fn layout_flag() {
    let cnn = model("cnn.onnx");
    let ir = |layout: &str| {
        let r = kiln(&["ir", &cnn, "--layout", layout]);
        assert!(r.status.success(), "{layout}: {}", stderr(&r));
        stdout(&r)
    };
    let default = stdout(&kiln(&["ir", &cnn]));
    assert_eq!(ir("auto"), default);
    let nchw = ir("nchw");
    assert!(!nchw.contains("layout=\"nhwc\""), "{nchw}");
    let nhwc = ir("nhwc");
    assert_eq!(default, nhwc);
    assert_eq!(nhwc.matches("layout=\"nhwc\"").count(), 6, "{nhwc}");
    assert!(!nhwc.contains("= transpose("), "{nhwc}");

    let after = kiln(&["ir", &cnn, "--layout", "nhwc", "--after", "choose-layout"]);
    assert!(after.status.success(), "{}", stderr(&after));
    assert!(stdout(&after).contains("layout=\"nhwc\""));

    let run = |layout: &str| {
        let r = kiln(&["run", &cnn, "--layout", layout, "--show", "10"]);
        assert!(r.status.success(), "{layout}: {}", stderr(&r));
        stdout(&r)
    };
    let (a, b) = (run("nchw"), run("nhwc"));
    let probs = |s: &str| -> Vec<f64> {
        let list = &s[s.find(": [").unwrap() + 3..];
        let list = &list[..list.find(']').unwrap()];
        list.split(", ").map(|v| v.parse().unwrap()).collect()
    };
    let (pa, pb) = (probs(&a), probs(&b));
    assert_eq!(pa.len(), 10, "{a}");
    for (x, y) in pa.iter().zip(&pb) {
        assert!((x - y).abs() <= 1e-5, "{a}\n{b}");
    }

    let bad = kiln(&["compile", &cnn, "-o", "/nonexistent", "--layout", "blocked"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("nhwc"), "{}", stderr(&bad));

    let help = stdout(&kiln(&["ir", "--help"]));
    assert!(
        help.contains("fuse-activation, choose-layout, fuse-elementwise"),
        "{help}"
    );
    for cmd in ["compile", "bench", "run", "ir"] {
        let h = stdout(&kiln(&[cmd, "--help"]));
        assert!(h.contains("--layout <LAYOUT>"), "{cmd}: {h}");
    }
}

/// `--winograd` is on compile, bench and run (not ir: it is a code generation choice), and a bad
/// value is a usage error naming the choices.
#[test]
fn winograd_flag() {
    for cmd in ["compile", "bench", "run"] {
        let h = stdout(&kiln(&[cmd, "--help"]));
        assert!(h.contains("--winograd <MODE>"), "{cmd}: {h}");
    }
    let cnn = model("cnn.onnx");
    let bad = kiln(&["compile", &cnn, "-o", "/nonexistent", "--winograd", "f3"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("auto, off, f2, f4"),
        "{}",
        stderr(&bad)
    );
    let dir = tempfile::tempdir().unwrap();
    let ok = kiln(&[
        "compile",
        &cnn,
        "-o",
        dir.path().to_str().unwrap(),
        "--winograd",
        "off",
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
}
