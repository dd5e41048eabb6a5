//! The long "model families" suite: every `build/families/NAME.onnx` made by
//! `scripts/export_families.py` (torchvision classifiers, a YOLO-style detector, BERT- and GPT-2-style
//! transformers, an old-style CNN at opsets 9 and 11) is compiled for x86_64 and aarch64, linked into a
//! C driver, run (aarch64 under qemu) and compared with onnxruntime's outputs.
//!
//! ```text
//! bash scripts/install-torch.sh && .venv-torch/bin/python scripts/export_families.py
//! KILN_LONG=1 cargo test --release --test families -- --nocapture
//! KILN_LONG=1 KILN_WRITE_DOCS=1 cargo test --release --test families -- --nocapture   # + docs/MODELS.md
//! KILN_LONG=1 KILN_FAMILIES=resnet18,gpt2_style cargo test --release --test families -- --nocapture
//! KILN_LONG=1 KILN_FAMILIES_DIR=/tmp/other-exports cargo test --release --test families -- --nocapture
//! ```
//!
//! One line per model and target: PASS (max error), MISMATCH, UNSUPPORTED (the ops, with why),
//! COMPILE-ERROR, RUN-ERROR (the compiled program failed) or PANIC (a kiln bug). Every model is tried
//! even after a failure, so one run lists everything that is missing; the test fails at the end if any
//! model present did not pass.
//!
//! Without `KILN_LONG=1` the test passes at once: it needs the large torch venv and minutes of compile
//! time, so it is not part of CI. (`#[ignore]` cannot depend on an environment variable, hence the
//! check at run time.)

use kiln::runner::{Runner, Toolchain};
use kiln::{Compiled, Compiler, Error, Target};
use kiln_backend::BackendError;
use kiln_frontend::ImportError;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

const TARGETS: [(&str, &str); 2] = [
    ("x86_64", "x86_64-unknown-linux-gnu"),
    ("aarch64", "aarch64-unknown-linux-gnu"),
];

/// Pass criterion for floating-point outputs: |got - want| <= RTOL * max|want| + ATOL, elementwise.
/// Relative to the output's scale rather than to each element, because a kernel that sums in another
/// order errs by a few ulps of the partial sums, not of the (possibly tiny) result.
const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-5;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The outcome of one model on one target.
#[derive(Clone, Debug)]
enum Status {
    /// Every output within tolerance; the largest error relative to its output's scale.
    Pass { max_err: f64 },
    /// Ran, but an output is wrong.
    Mismatch(String),
    /// The importer or the backend does not handle these ops yet: `(op, reason, node count)`.
    Unsupported(Vec<(String, String, usize)>),
    /// Any other error from `Compiler::compile`.
    CompileError(String),
    /// Linking or running the compiled program failed.
    RunError(String),
    /// kiln panicked.
    Panic(String),
    /// The target's C toolchain or qemu is missing.
    Skip(String),
}

impl Status {
    fn label(&self) -> &'static str {
        match self {
            Status::Pass { .. } => "PASS",
            Status::Mismatch(_) => "MISMATCH",
            Status::Unsupported(_) => "UNSUPPORTED",
            Status::CompileError(_) => "COMPILE-ERROR",
            Status::RunError(_) => "RUN-ERROR",
            Status::Panic(_) => "PANIC",
            Status::Skip(_) => "SKIP",
        }
    }

    /// One line: the label and what to know about it.
    fn line(&self) -> String {
        match self {
            Status::Pass { max_err } => format!("PASS (max err {max_err:.1e} of scale)"),
            Status::Unsupported(ops) => format!("UNSUPPORTED ({})", unsupported_list(ops, true)),
            Status::Mismatch(s)
            | Status::CompileError(s)
            | Status::RunError(s)
            | Status::Panic(s)
            | Status::Skip(s) => {
                format!("{} ({})", self.label(), one_line(s, 400))
            }
        }
    }

    /// The short form for the docs table.
    fn cell(&self) -> String {
        match self {
            Status::Pass { max_err } => format!("PASS {max_err:.1e}"),
            Status::Unsupported(ops) => format!("UNSUPPORTED: {}", unsupported_list(ops, false)),
            other => other.label().to_string(),
        }
    }
}

/// `Resize x2 (why), Where x4 (why)`; the reasons only when `why`.
fn unsupported_list(ops: &[(String, String, usize)], why: bool) -> String {
    if !why {
        let mut by_op: BTreeMap<&str, usize> = BTreeMap::new();
        for (op, _, n) in ops {
            *by_op.entry(op).or_default() += n;
        }
        return by_op
            .iter()
            .map(|(op, n)| format!("{op} x{n}"))
            .collect::<Vec<_>>()
            .join(", ");
    }
    ops.iter()
        .map(|(op, reason, n)| format!("{op} x{n}: {reason}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > max {
        format!("{}...", s.chars().take(max).collect::<String>())
    } else {
        s
    }
}

/// Groups unsupported nodes by (op, reason), counting nodes; sorted for a stable report.
fn group(items: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String, usize)> {
    let mut m: BTreeMap<(String, String), usize> = BTreeMap::new();
    for k in items {
        *m.entry(k).or_default() += 1;
    }
    m.into_iter()
        .map(|((op, reason), n)| (op, reason, n))
        .collect()
}

/// Collects the backend's "unsupported" errors into `out`; true when every error is of that kind.
fn backend_unsupported(e: &BackendError, out: &mut Vec<(String, String)>) -> bool {
    match e {
        BackendError::Unsupported { op, reason, .. } => {
            out.push((op.clone(), format!("backend: {reason}")));
            true
        }
        BackendError::Many(v) => {
            // Visit every error (no short-circuit), so all unsupported ops are collected.
            let each: Vec<bool> = v.iter().map(|e| backend_unsupported(e, out)).collect();
            each.into_iter().all(|u| u)
        }
        _ => false,
    }
}

/// Sorts a compile error into UNSUPPORTED (legal ONNX that kiln does not handle yet) or COMPILE-ERROR.
fn classify(e: &Error) -> Status {
    match e {
        Error::Import(ImportError::Unsupported(nodes)) => Status::Unsupported(group(
            nodes.iter().map(|n| (n.op_type.clone(), n.reason.clone())),
        )),
        Error::Backend(b) => {
            let mut ops = Vec::new();
            if backend_unsupported(b, &mut ops) {
                Status::Unsupported(group(ops))
            } else {
                Status::CompileError(e.to_string())
            }
        }
        _ => Status::CompileError(e.to_string()),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic with a non-string payload".into())
}

/// A graph input or output as `meta.json` describes it.
#[derive(Clone, Debug)]
struct Io {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    file: String,
}

/// One model's files and facts.
struct Model {
    name: String,
    path: PathBuf,
    size: u64,
    nodes: usize,
    op_types: usize,
    /// ONNX op type -> node count, from meta.json.
    ops: Vec<(String, u64)>,
    opset: i64,
    description: String,
    inputs: Vec<Io>,
    outputs: Vec<Io>,
    input_data: Vec<Vec<u8>>,
    output_data: Vec<Vec<u8>>,
}

fn ios(meta: &Value, key: &str) -> Result<Vec<Io>, String> {
    let list = meta[key]
        .as_array()
        .ok_or(format!("meta.json has no {key:?} list"))?;
    list.iter()
        .map(|t| {
            Ok(Io {
                name: t["name"].as_str().ok_or("name")?.to_string(),
                dtype: t["dtype"].as_str().ok_or("dtype")?.to_string(),
                shape: t["shape"]
                    .as_array()
                    .ok_or("shape")?
                    .iter()
                    .map(|d| d.as_u64().map(|d| d as usize).ok_or("dim"))
                    .collect::<Result<_, _>>()?,
                file: t["file"].as_str().ok_or("file")?.to_string(),
            })
        })
        .collect::<Result<_, &str>>()
        .map_err(|what| format!("meta.json: {key}: bad or missing {what:?}"))
}

fn load_model(path: &Path) -> Result<Model, String> {
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let dir = path.with_extension("");
    let read = |p: &Path| {
        std::fs::read(p)
            .map_err(|e| format!("{}: {e} (re-run scripts/export_families.py)", p.display()))
    };
    let meta: Value = serde_json::from_slice(&read(&dir.join("meta.json"))?)
        .map_err(|e| format!("meta.json: {e}"))?;
    let inputs = ios(&meta, "inputs")?;
    let outputs = ios(&meta, "outputs")?;
    let input_data = inputs
        .iter()
        .map(|io| read(&dir.join(&io.file)))
        .collect::<Result<_, _>>()?;
    let output_data = outputs
        .iter()
        .map(|io| read(&dir.join(&io.file)))
        .collect::<Result<_, _>>()?;
    Ok(Model {
        size: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        nodes: meta["nodes"].as_u64().unwrap_or(0) as usize,
        op_types: meta["ops"].as_object().map_or(0, |o| o.len()),
        ops: meta["ops"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default(),
        opset: meta["opset"].as_i64().unwrap_or(0),
        description: meta["description"].as_str().unwrap_or("").to_string(),
        name,
        path: path.to_path_buf(),
        inputs,
        outputs,
        input_data,
        output_data,
    })
}

/// kiln's dtype name for a numpy dtype name, and the element size.
fn kiln_dtype(numpy: &str) -> Option<(&'static str, usize)> {
    Some(match numpy {
        "float32" => ("f32", 4),
        "float64" => ("f64", 8),
        "float16" => ("f16", 2),
        "int64" => ("i64", 8),
        "int32" => ("i32", 4),
        "int16" => ("i16", 2),
        "int8" => ("i8", 1),
        "uint64" => ("u64", 8),
        "uint32" => ("u32", 4),
        "uint16" => ("u16", 2),
        "uint8" => ("u8", 1),
        "bool" => ("bool", 1),
        _ => return None,
    })
}

/// Raw little-endian elements as f64 (exact for every integer below 2^53, which is all a test meets).
fn decode(numpy: &str, bytes: &[u8]) -> Option<Vec<f64>> {
    let (_, size) = kiln_dtype(numpy)?;
    let v = bytes
        .chunks_exact(size)
        .map(|c| match numpy {
            "float32" => f32::from_le_bytes(c.try_into().unwrap()) as f64,
            "float64" => f64::from_le_bytes(c.try_into().unwrap()),
            "float16" => half_to_f64(u16::from_le_bytes(c.try_into().unwrap())),
            "int64" => i64::from_le_bytes(c.try_into().unwrap()) as f64,
            "int32" => i32::from_le_bytes(c.try_into().unwrap()) as f64,
            "int16" => i16::from_le_bytes(c.try_into().unwrap()) as f64,
            "int8" => c[0] as i8 as f64,
            "uint64" => u64::from_le_bytes(c.try_into().unwrap()) as f64,
            "uint32" => u32::from_le_bytes(c.try_into().unwrap()) as f64,
            "uint16" => u16::from_le_bytes(c.try_into().unwrap()) as f64,
            _ => c[0] as f64,
        })
        .collect();
    Some(v)
}

fn half_to_f64(h: u16) -> f64 {
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// Compares one output: `Ok(max |got - want| / max |want|)`, or why it fails. Floats pass within
/// `RTOL * max|want| + ATOL` elementwise (NaN never passes), integers and booleans must be exact.
fn check_values(float: bool, want: &[f64], got: &[f64]) -> Result<f64, String> {
    let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
    let bound = if float { RTOL * scale + ATOL } else { 0.0 };
    let (mut max_abs, mut at) = (0f64, None);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        // NaN compares false with everything: make it the worst element instead of skipping it.
        let d = if d.is_nan() { f64::INFINITY } else { d };
        if d > max_abs {
            max_abs = d;
            at = Some(i);
        }
    }
    let rel = if scale > 0.0 {
        max_abs / scale
    } else {
        max_abs
    };
    match at {
        Some(i) if max_abs > bound => Err(format!(
            "max |got - want| {max_abs:.3e} = {rel:.2e} of the output's scale {scale:.3e} (allowed {bound:.2e}), \
             worst at flat index {i}: got {} want {}",
            got[i], want[i]
        )),
        _ => Ok(rel),
    }
}

/// Compares every output; `Ok(max error relative to scale)` or a description of the first bad output.
fn compare(m: &Model, c: &Compiled, got: &[Vec<u8>]) -> Result<f64, String> {
    if got.len() != m.outputs.len() {
        return Err(format!(
            "{} outputs, onnxruntime has {}",
            got.len(),
            m.outputs.len()
        ));
    }
    let mut worst: f64 = 0.0;
    for (k, ((io, want), g)) in m.outputs.iter().zip(&m.output_data).zip(got).enumerate() {
        let what = format!("output {k} ({:?})", io.name);
        let Some((kd, _)) = kiln_dtype(&io.dtype) else {
            return Err(format!(
                "{what}: dtype {} not handled by this test",
                io.dtype
            ));
        };
        if let Some(ci) = c.outputs.get(k) {
            if ci.dtype.name() != kd || ci.dims != io.shape {
                return Err(format!(
                    "{what}: kiln says {}{:?}, onnxruntime {kd}{:?}",
                    ci.dtype.name(),
                    ci.dims,
                    io.shape
                ));
            }
        }
        let (w, g) = (
            decode(&io.dtype, want).unwrap(),
            decode(&io.dtype, g).unwrap(),
        );
        if w.len() != g.len() {
            return Err(format!(
                "{what}: {} elements, onnxruntime has {}",
                g.len(),
                w.len()
            ));
        }
        let rel = check_values(io.dtype.starts_with("float"), &w, &g)
            .map_err(|e| format!("{what}: {e}"))?;
        worst = worst.max(rel);
    }
    Ok(worst)
}

/// Links and runs a compiled model and compares its outputs.
fn run_and_compare(m: &Model, c: &Compiled) -> Status {
    let tc = match Toolchain::for_target(c) {
        Ok(tc) => tc,
        Err(e) => return Status::Skip(e.to_string()),
    };
    if !tc.available() {
        return Status::Skip(format!(
            "{} not installed (scripts/install-deps.sh)",
            tc.cc.join(" ")
        ));
    }
    // The reference inputs must be what the compiled entry point takes, or the run means nothing.
    let want: Vec<(String, Vec<usize>)> = m
        .inputs
        .iter()
        .map(|io| {
            (
                kiln_dtype(&io.dtype).map_or("?", |d| d.0).to_string(),
                io.shape.clone(),
            )
        })
        .collect();
    let have: Vec<(String, Vec<usize>)> = c
        .inputs
        .iter()
        .map(|io| (io.dtype.name().to_string(), io.dims.clone()))
        .collect();
    if want != have {
        return Status::RunError(format!(
            "the compiled model takes inputs {have:?}, the reference data is {want:?}"
        ));
    }
    let runner = match Runner::build(c) {
        Ok(r) => r,
        Err(e) => return Status::RunError(e.to_string()),
    };
    match runner.run(&m.input_data, 1) {
        Ok(got) => match compare(m, c, &got) {
            Ok(max_err) => Status::Pass { max_err },
            Err(why) => Status::Mismatch(why),
        },
        Err(e) => Status::RunError(e.to_string()),
    }
}

/// One model on one target: the status and the compile time in seconds.
fn check(m: &Model, triple: &str) -> (Status, Option<f64>) {
    let target = match Target::parse(triple, "generic", &[]) {
        Ok(t) => t,
        Err(e) => return (Status::CompileError(e.to_string()), None),
    };
    let t0 = Instant::now();
    let compiled = catch_unwind(AssertUnwindSafe(|| {
        Compiler::new(&m.path).target(target).compile()
    }));
    let secs = t0.elapsed().as_secs_f64();
    let c = match compiled {
        Err(p) => {
            return (
                Status::Panic(format!("while compiling: {}", panic_message(p.as_ref()))),
                None,
            )
        }
        Ok(Err(e)) => return (classify(&e), None),
        Ok(Ok(c)) => c,
    };
    let status = catch_unwind(AssertUnwindSafe(|| run_and_compare(m, &c)))
        .unwrap_or_else(|p| Status::Panic(format!("while running: {}", panic_message(p.as_ref()))));
    (status, Some(secs))
}

struct Row {
    model: Model,
    results: Vec<(Status, Option<f64>)>,
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    }
}

/// A compile time as the power of ten of seconds that bounds it (`<= 1 s`, `<= 10 s`, ...): enough
/// to spot a model that compiles slowly, coarse enough that regenerating the docs on another run or
/// machine leaves the file unchanged unless something really moved. The exact time is in the
/// console line.
fn time_bucket(secs: f64) -> String {
    let mut bound = 1u64;
    while secs > bound as f64 && bound < 1_000_000 {
        bound *= 10;
    }
    format!("<= {bound} s")
}

/// docs/MODELS.md: the table, the ops to implement next, and the details of every failure. Nothing
/// in it depends on the date or the machine except the (coarse) compile times.
fn render_docs(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("# Model families\n\n");
    s.push_str(
        "Generated by `KILN_LONG=1 KILN_WRITE_DOCS=1 cargo test --release --test families -- --nocapture` \
         (tests/families.rs); do not edit by hand. The models come from `scripts/export_families.py` \
         (random weights from fixed seeds, PyTorch's TorchScript exporter, fixed input shapes; \
         `bash scripts/install-torch.sh` makes the venv it needs). Each is compiled for both targets, linked \
         into a C driver and run (aarch64 under qemu-aarch64) on the exported input; PASS means every output \
         is within 1e-3 x max|reference| + 1e-5 of onnxruntime's (1 thread, optimizations off), and the number \
         is the largest error as a fraction of its output's largest magnitude. Compile times (import, \
         passes and code generation) are rounded up to a power of ten of seconds, so this file only changes \
         when something really moved.\n\n",
    );
    s.push_str("| model | size | nodes (op types) | opset | x86_64 | aarch64 | compile time (x86_64 / aarch64) |\n");
    s.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for r in rows {
        let m = &r.model;
        let time = |t: &Option<f64>| t.map_or("-".to_string(), time_bucket);
        let _ = writeln!(
            s,
            "| {} | {} | {} ({}) | {} | {} | {} | {} / {} |",
            m.name,
            human_size(m.size),
            m.nodes,
            m.op_types,
            m.opset,
            r.results[0].0.cell(),
            r.results[1].0.cell(),
            time(&r.results[0].1),
            time(&r.results[1].1)
        );
    }

    // What to implement next: every unsupported op, with the models that need it.
    let mut needed: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in rows {
        for (st, _) in &r.results {
            if let Status::Unsupported(ops) = st {
                for (op, reason, n) in ops {
                    let e = needed.entry((op.clone(), reason.clone())).or_default();
                    let label = format!("{} (x{n})", r.model.name);
                    if !e.contains(&label) {
                        e.push(label);
                    }
                }
            }
        }
    }
    s.push_str("\n## Unsupported ops\n\n");
    if needed.is_empty() {
        s.push_str("None: every model imports and compiles.\n");
    } else {
        s.push_str("| op | why | models (nodes) |\n| --- | --- | --- |\n");
        for ((op, reason), models) in &needed {
            let _ = writeln!(
                s,
                "| {op} | {} | {} |",
                reason.replace('|', "\\|"),
                models.join(", ")
            );
        }
    }

    s.push_str("\n## Models\n");
    for r in rows {
        let m = &r.model;
        let _ = writeln!(s, "\n### {}\n\n{}\n", m.name, m.description);
        let io = |v: &[Io]| {
            v.iter()
                .map(|i| format!("`{}` {}{:?}", i.name, i.dtype, i.shape))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "- inputs: {}\n- outputs: {}",
            io(&m.inputs),
            io(&m.outputs)
        );
        let ops: Vec<String> = m.ops.iter().map(|(op, n)| format!("{op} x{n}")).collect();
        let _ = writeln!(s, "- ops: {}", ops.join(", "));
        for ((arch, _), (st, _)) in TARGETS.iter().zip(&r.results) {
            let _ = writeln!(s, "- {arch}: {}", st.line().replace('|', "\\|"));
        }
    }
    s
}

#[test]
fn model_families_match_onnxruntime() {
    if std::env::var("KILN_LONG").as_deref() != Ok("1") {
        println!("SKIP: the model-families suite is long; run KILN_LONG=1 cargo test --release --test families -- --nocapture");
        return;
    }
    // Another folder of exports (same layout) can be checked the same way, e.g. variants being tried.
    let custom_dir = std::env::var_os("KILN_FAMILIES_DIR").map(PathBuf::from);
    let dir = custom_dir
        .clone()
        .unwrap_or_else(|| root().join("build/families"));
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .collect(),
        Err(_) => {
            println!("SKIP: run scripts/install-torch.sh && .venv-torch/bin/python scripts/export_families.py");
            return;
        }
    };
    paths.sort();
    let only: Option<Vec<String>> = std::env::var("KILN_FAMILIES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    if let Some(only) = &only {
        paths.retain(|p| {
            only.iter()
                .any(|o| p.file_stem().is_some_and(|s| s.to_string_lossy() == *o))
        });
    }
    if paths.is_empty() {
        println!(
            "SKIP: no models in {}: run .venv-torch/bin/python scripts/export_families.py",
            dir.display()
        );
        return;
    }

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for path in &paths {
        let model = match load_model(path) {
            Ok(m) => m,
            Err(e) => {
                println!("{}: REFERENCE-DATA-ERROR ({e})", path.display());
                failures.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let mut results = Vec::new();
        for (arch, triple) in TARGETS {
            let (status, secs) = check(&model, triple);
            let time = secs.map_or(String::new(), |t| format!(" [compile {t:.1} s]"));
            println!("{:<20} {arch:<8} {}{time}", model.name, status.line());
            if !matches!(status, Status::Pass { .. } | Status::Skip(_)) {
                failures.push(format!("{} on {arch}: {}", model.name, status.line()));
            }
            results.push((status, secs));
        }
        rows.push(Row { model, results });
    }

    if std::env::var("KILN_WRITE_DOCS").as_deref() == Ok("1") {
        if only.is_some() || custom_dir.is_some() {
            println!("not writing docs/MODELS.md: KILN_FAMILIES or KILN_FAMILIES_DIR ran something else than the suite");
        } else {
            let path = root().join("docs/MODELS.md");
            std::fs::write(&path, render_docs(&rows))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            println!("wrote {}", path.display());
        }
    }
    let passed = rows
        .iter()
        .flat_map(|r| &r.results)
        .filter(|(s, _)| matches!(s, Status::Pass { .. }))
        .count();
    println!(
        "model families: {passed} of {} model/target pairs pass",
        rows.len() * TARGETS.len()
    );
    assert!(
        failures.is_empty(),
        "{} model/target pairs did not pass:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// The pieces that decide PASS or MISMATCH, checked on hand-made values (these run in every
// `cargo test`, KILN_LONG or not).

#[test]
fn tolerance_is_relative_to_the_output_scale() {
    // Scale 128: anything within 1e-3 * 128 + 1e-5 = 0.12801 passes, even on the small element.
    // (Powers of two, so the ratios are exact.)
    assert_eq!(
        check_values(true, &[128.0, 0.0], &[128.0625, 0.0]),
        Ok(0.0625 / 128.0)
    );
    assert_eq!(
        check_values(true, &[128.0, 0.0], &[128.0, 0.125]),
        Ok(0.125 / 128.0)
    );
    assert!(check_values(true, &[128.0, 0.0], &[128.0, 0.25]).is_err());
    // An all-zero output still allows ATOL.
    assert!(check_values(true, &[0.0, 0.0], &[5e-6, -5e-6]).is_ok());
    assert!(check_values(true, &[0.0, 0.0], &[2e-5, 0.0]).is_err());
}

#[test]
fn nan_and_integer_outputs_must_match() {
    let err = check_values(true, &[1.0, 2.0], &[1.0, f64::NAN]).unwrap_err();
    assert!(err.contains("flat index 1"), "{err}");
    assert!(check_values(false, &[3.0, 7.0], &[3.0, 7.0]).is_ok());
    assert!(check_values(false, &[3.0, 7.0], &[3.0, 8.0]).is_err());
}

#[test]
fn raw_bytes_decode_little_endian() {
    assert_eq!(decode("float32", &1.5f32.to_le_bytes()), Some(vec![1.5]));
    assert_eq!(decode("int64", &(-3i64).to_le_bytes()), Some(vec![-3.0]));
    assert_eq!(decode("bool", &[0, 1]), Some(vec![0.0, 1.0]));
    // 0x3C00 is 1.0 in binary16, 0xC000 is -2.0, 0x0001 the smallest subnormal 2^-24.
    assert_eq!(
        decode("float16", &[0x00, 0x3C, 0x00, 0xC0, 0x01, 0x00]),
        Some(vec![1.0, -2.0, 2f64.powi(-24)])
    );
    assert_eq!(decode("complex64", &[0; 8]), None);
}

#[test]
fn compile_times_round_up_to_powers_of_ten() {
    assert_eq!(time_bucket(0.03), "<= 1 s");
    assert_eq!(time_bucket(1.0), "<= 1 s");
    assert_eq!(time_bucket(1.5), "<= 10 s");
    assert_eq!(time_bucket(99.0), "<= 100 s");
    assert_eq!(time_bucket(120.0), "<= 1000 s");
}

#[test]
fn unsupported_nodes_are_grouped_by_op_and_reason() {
    let g = group([
        ("Where".to_string(), "no mapping".to_string()),
        ("Resize".to_string(), "cubic".to_string()),
        ("Where".to_string(), "no mapping".to_string()),
    ]);
    assert_eq!(
        g,
        vec![
            ("Resize".into(), "cubic".into(), 1),
            ("Where".into(), "no mapping".into(), 2)
        ]
    );
    assert_eq!(unsupported_list(&g, false), "Resize x1, Where x2");
    assert_eq!(
        Status::Unsupported(g).cell(),
        "UNSUPPORTED: Resize x1, Where x2"
    );
}
