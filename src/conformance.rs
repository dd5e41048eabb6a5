//! The ONNX backend node tests as a conformance suite (after tract's `test-rt/suite-onnx`).
//!
//! `scripts/conformance_cases.py` writes the cases the pinned onnx generates to
//! `tests/conformance/cases/<name>/` (`model.onnx` + `test_data_set_N/{input,output}_K.pb`) and lists
//! the ones inside kiln's target op set in `tests/conformance/edge_set.txt`. For each case this module
//! compiles the model with kiln for a target, links it with [`Runner`] exactly as a C user would, runs
//! every data set (aarch64 under qemu) and compares the outputs with the expected ones, giving one
//! [`Status`] per case. The checked-in manifest `tests/conformance/node.txt` ([`Manifest`]) records
//! the status of every edge-set case; a case recorded as `pass` that stops passing is a regression.
//!
//! The `kiln-conformance` binary and `tests/conformance.rs` drive this module.

use crate::runner::{Runner, Toolchain};
use crate::{Compiled, Compiler, Error, Target};
use kiln_backend::BackendError;
use kiln_frontend::ImportError;
use kiln_ir::{DType, Tensor};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, Once};
use std::time::Duration;

/// Absolute tolerance for float outputs.
pub const ATOL: f64 = 1e-5;
/// Relative tolerance for float outputs (times the expected magnitude).
pub const RTOL: f64 = 1e-3;
/// Default limit on one run of a compiled case.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest detail kept in the manifest.
pub const MANIFEST_DETAIL_CHARS: usize = 120;

/// Largest test-data tensor accepted (node tests are tiny; this only guards against a broken file).
const MAX_DATA_BYTES: u64 = 1 << 30;
/// The C prefix of every compiled case (must be a C identifier and not a C keyword).
const CASE_NAME: &str = "conf";

/// The verdict on one case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Every output of every data set matches.
    Pass,
    /// It compiled and ran, but an output differs (shape, dtype or values).
    Mismatch,
    /// kiln reports the model as legal ONNX it does not handle yet (a typed "unsupported" error).
    Unsupported,
    /// Compilation failed otherwise, or panicked (a kiln bug either way).
    CompileError,
    /// Linking or running the compiled code failed, crashed or timed out.
    RunError,
}

impl Status {
    /// Every status, in report order.
    pub const ALL: [Status; 5] = [
        Status::Pass,
        Status::Mismatch,
        Status::Unsupported,
        Status::CompileError,
        Status::RunError,
    ];

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Mismatch => "mismatch",
            Status::Unsupported => "unsupported",
            Status::CompileError => "compile-error",
            Status::RunError => "run-error",
        }
    }

    /// Inverse of [`Status::as_str`].
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The case name (`test_abs`).
    pub name: String,
    /// The verdict.
    pub status: Status,
    /// Why, for anything but a pass (one line).
    pub detail: String,
    /// What to blame, for the summary (empty for a pass).
    pub blame: Vec<Blame>,
}

/// One thing a failing case blames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blame {
    /// The ONNX op type (or kiln IR op) an error names, or a category (`panic`, `timeout`, `values`).
    pub what: String,
    /// Why, as far as it concerns `what` (one line).
    pub why: String,
}

impl Outcome {
    /// An outcome blaming the categories `what`, each for the whole detail.
    fn new(name: &str, status: Status, detail: impl Into<String>, what: &[&str]) -> Outcome {
        let detail = one_line(&detail.into());
        let blame = what
            .iter()
            .map(|w| Blame {
                what: w.to_string(),
                why: detail.clone(),
            })
            .collect();
        Outcome {
            name: name.to_string(),
            status,
            detail,
            blame,
        }
    }

    fn with_blame(
        name: &str,
        status: Status,
        detail: impl Into<String>,
        blame: Vec<Blame>,
    ) -> Outcome {
        let blame = blame
            .into_iter()
            .map(|b| Blame {
                what: b.what,
                why: one_line(&b.why),
            })
            .collect();
        Outcome {
            name: name.to_string(),
            status,
            detail: one_line(&detail.into()),
            blame,
        }
    }
}

/// How to run the suite.
#[derive(Clone, Debug)]
pub struct Options {
    /// The target to compile for (aarch64 runs under qemu on an x86_64 host).
    pub target: Target,
    /// Worker threads (each compiles, links and runs one case at a time).
    pub jobs: usize,
    /// Limit on one run of a compiled case.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: Target::host(),
            jobs: 2,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// `tests/conformance` of this source tree.
pub fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// Reads a list of case names (`edge_set.txt`): one per line, `#` comments and blank lines ignored.
pub fn read_case_list(path: &Path) -> crate::Result<Vec<String>> {
    let text = fs::read_to_string(path).map_err(crate::io_err(path))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The checked-in record of every edge-set case's status (`tests/conformance/node.txt`): one line per
/// case, sorted, `<name> <status>` plus ` # detail` for anything but a pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Case name -> (status, detail).
    pub entries: BTreeMap<String, (Status, String)>,
}

impl Manifest {
    /// Parses the manifest text.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut entries = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let (body, detail) = match line.split_once('#') {
                Some((b, d)) => (b.trim(), d.trim()),
                None => (line.trim(), ""),
            };
            if body.is_empty() {
                continue;
            }
            let mut words = body.split_whitespace();
            let (Some(name), Some(status), None) = (words.next(), words.next(), words.next())
            else {
                return Err(format!(
                    "line {}: expected `<name> <status>`, got {line:?}",
                    i + 1
                ));
            };
            let status = Status::parse(status)
                .ok_or_else(|| format!("line {}: unknown status {status:?}", i + 1))?;
            if entries
                .insert(name.to_string(), (status, detail.to_string()))
                .is_some()
            {
                return Err(format!("line {}: {name} is listed twice", i + 1));
            }
        }
        Ok(Manifest { entries })
    }

    /// Reads the manifest at `path`; a missing file is an empty manifest.
    pub fn read(path: &Path) -> crate::Result<Manifest> {
        match fs::read_to_string(path) {
            Ok(text) => {
                Manifest::parse(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(Error::Io {
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }

    /// Records the outcomes (replacing earlier entries of the same cases).
    pub fn update(&mut self, outcomes: &[Outcome]) {
        for o in outcomes {
            self.entries.insert(
                o.name.clone(),
                (o.status, truncate(&o.detail, MANIFEST_DETAIL_CHARS)),
            );
        }
    }

    /// Drops the cases not in `names` (cases that left the edge set).
    pub fn retain(&mut self, names: &BTreeSet<String>) {
        self.entries.retain(|k, _| names.contains(k));
    }

    /// The cases recorded as passing, sorted.
    pub fn passing(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, (s, _))| *s == Status::Pass)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The manifest text (what [`Manifest::parse`] reads back).
    pub fn render(&self) -> String {
        let mut s = String::from(
            "# kiln conformance manifest: the ONNX backend node tests of tests/conformance/edge_set.txt on\n\
             # x86_64. `pass` cases must keep passing (tests/conformance.rs). Regenerate with\n\
             #   cargo run --release --bin kiln-conformance -- --write-manifest\n",
        );
        for (name, (status, detail)) in &self.entries {
            if detail.is_empty() {
                writeln!(s, "{name} {status}").expect("formatting into a String");
            } else {
                writeln!(s, "{name} {status} # {detail}").expect("formatting into a String");
            }
        }
        s
    }

    /// Writes the manifest to `path` (whole: a temporary file renamed into place).
    pub fn write(&self, path: &Path) -> crate::Result<()> {
        let tmp = path.with_extension("txt.tmp");
        fs::write(&tmp, self.render()).map_err(crate::io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(crate::io_err(path))
    }
}

/// The outcomes of cases the manifest records as `pass` that no longer pass.
pub fn regressions<'a>(manifest: &Manifest, outcomes: &'a [Outcome]) -> Vec<&'a Outcome> {
    outcomes
        .iter()
        .filter(|o| {
            o.status != Status::Pass
                && matches!(manifest.entries.get(&o.name), Some((Status::Pass, _)))
        })
        .collect()
}

/// The outcomes of cases that pass now but are not recorded as `pass` (the manifest is stale).
pub fn newly_passing<'a>(manifest: &Manifest, outcomes: &'a [Outcome]) -> Vec<&'a Outcome> {
    outcomes
        .iter()
        .filter(|o| {
            o.status == Status::Pass
                && !matches!(manifest.entries.get(&o.name), Some((Status::Pass, _)))
        })
        .collect()
}

/// Counts per status, and for the failures the op types (or categories) blamed most often, each with
/// the number of cases it alone blocks and its most frequent reason: what to implement or fix next.
pub fn summary(outcomes: &[Outcome], top: usize) -> String {
    let mut s = String::new();
    let total = outcomes.len();
    let _ = write!(s, "{total} cases:");
    for st in Status::ALL {
        let n = outcomes.iter().filter(|o| o.status == st).count();
        let _ = write!(s, " {n} {st},");
    }
    s.pop();
    s.push('\n');
    for (title, statuses) in [
        (
            "unsupported / compile-error",
            &[Status::Unsupported, Status::CompileError][..],
        ),
        (
            "mismatch / run-error",
            &[Status::Mismatch, Status::RunError][..],
        ),
    ] {
        // what -> (cases, cases blaming only it, why -> count)
        let mut by: BTreeMap<&str, (usize, usize, BTreeMap<&str, usize>)> = BTreeMap::new();
        for o in outcomes.iter().filter(|o| statuses.contains(&o.status)) {
            let alone = o
                .blame
                .iter()
                .all(|b| o.blame.first().is_some_and(|f| f.what == b.what));
            let mut seen = BTreeSet::new();
            for b in &o.blame {
                let e = by.entry(&b.what).or_default();
                if seen.insert(&b.what) {
                    e.0 += 1;
                    e.1 += alone as usize;
                }
                *e.2.entry(&b.why).or_default() += 1;
            }
        }
        if by.is_empty() {
            continue;
        }
        let mut rows: Vec<_> = by.into_iter().collect();
        rows.sort_by(|a, b| (b.1 .0, b.1 .1).cmp(&(a.1 .0, a.1 .1)).then(a.0.cmp(b.0)));
        let _ = writeln!(
            s,
            "top {title} by op/category (cases, cases it alone blocks: most frequent reason):"
        );
        for (what, (n, alone, whys)) in rows.iter().take(top) {
            let (why, _) = whys
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .expect("one reason at least");
            // Reasons usually start with the op they blame; say it once.
            let why = why.strip_prefix(&format!("{what}: ")).unwrap_or(why);
            if why == *what {
                let _ = writeln!(s, "  {n:4} {alone:4}  {}", truncate(what, 120));
            } else {
                let _ = writeln!(s, "  {n:4} {alone:4}  {what}: {}", truncate(why, 110));
            }
        }
    }
    s
}

/// Checks that the target's C toolchain (and emulator) is installed, by compiling the smallest case.
pub fn check_toolchain(cases_dir: &Path, target: &Target) -> crate::Result<()> {
    let c = Compiler::new(cases_dir.join("test_abs/model.onnx"))
        .name(CASE_NAME)
        .target(target.clone())
        .compile()?;
    let tc = Toolchain::for_target(&c)?;
    if tc.available() {
        Ok(())
    } else {
        Err(Error::Run(format!(
            "{} or {:?} not found: run scripts/install-deps.sh",
            tc.cc[0], tc.run_prefix
        )))
    }
}

/// Runs the named cases of `cases_dir` on `opts.jobs` threads. `progress(done, total, outcome)` is
/// called as each case finishes. Outcomes come back in the order of `names`. A case that panics is
/// recorded as a compile error; it never stops the run.
pub fn run_cases(
    cases_dir: &Path,
    names: &[String],
    opts: &Options,
    progress: &(dyn Fn(usize, usize, &Outcome) + Sync),
) -> Vec<Outcome> {
    install_panic_recorder();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; names.len()]);
    std::thread::scope(|scope| {
        for w in 0..opts.jobs.max(1) {
            let (next, done, results) = (&next, &done, &results);
            std::thread::Builder::new()
                .name(format!("conformance-{w}"))
                // Deep graphs recurse in places; a stack overflow would abort the whole run.
                .stack_size(64 << 20)
                .spawn_scoped(scope, move || loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(name) = names.get(i) else { break };
                    let o = run_case(cases_dir, name, opts);
                    let d = done.fetch_add(1, Ordering::SeqCst) + 1;
                    progress(d, names.len(), &o);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(o);
                })
                .expect("spawning a worker thread");
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|o| o.expect("every case ran"))
        .collect()
}

/// Runs one case: compile, link, run each data set, compare. Panics are caught and recorded.
pub fn run_case(cases_dir: &Path, name: &str, opts: &Options) -> Outcome {
    let dir = cases_dir.join(name);
    PANIC_SITE.with(|p| p.borrow_mut().take());
    IN_CASE.with(|f| f.set(true));
    let r = panic::catch_unwind(AssertUnwindSafe(|| run_case_inner(&dir, name, opts)));
    IN_CASE.with(|f| f.set(false));
    match r {
        Ok(o) => o,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string payload)".into());
            let site = PANIC_SITE
                .with(|p| p.borrow_mut().take())
                .map(|s| format!(" at {s}"))
                .unwrap_or_default();
            Outcome::new(
                name,
                Status::CompileError,
                format!("panic: {}{site}", first_line(&msg)),
                &["panic"],
            )
        }
    }
}

thread_local! {
    static IN_CASE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static PANIC_SITE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics inside a case are expected data, not noise: record where they happened instead of printing
/// a backtrace banner, and leave every other thread's panics to the previous hook.
fn install_panic_recorder() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_CASE.with(|f| f.get()) {
                let site = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()));
                PANIC_SITE.with(|p| *p.borrow_mut() = site);
            } else {
                prev(info);
            }
        }));
    });
}

/// One data set: its inputs and expected outputs, by name, in file order.
struct DataSet {
    index: usize,
    inputs: Vec<(String, Tensor)>,
    outputs: Vec<(String, Tensor)>,
}

fn run_case_inner(dir: &Path, name: &str, opts: &Options) -> Outcome {
    let model = dir.join("model.onnx");
    if !model.exists() {
        return Outcome::new(
            name,
            Status::RunError,
            format!(
                "{} is missing: run scripts/conformance_cases.py",
                model.display()
            ),
            &["harness"],
        );
    }
    if let Ok(why) = fs::read_to_string(dir.join("SKIP")) {
        return Outcome::new(
            name,
            Status::Unsupported,
            format!("test data: {}", why.trim()),
            &["non-tensor data"],
        );
    }
    let sets = match read_data_sets(dir) {
        Ok(s) => s,
        Err(e) => {
            let (status, detail, _) = classify(&e, dir);
            // Grouped by the reason itself: these are element types the data (so the model) uses.
            let what = format!("test data: {detail}");
            return Outcome::new(name, status, &what, &[what.as_str()]);
        }
    };
    if sets.is_empty() {
        return Outcome::new(
            name,
            Status::RunError,
            "no test_data_set_N folders",
            &["harness"],
        );
    }

    // Inputs that set shapes (axes, pads, sizes, scales) must be compile-time values for kiln, but node
    // tests feed them at run time. When the plain compile says so, those inputs are frozen to the data
    // set's values (`--freeze` for users), as tract's suite does; the manifest says which.
    let mut frozen: BTreeMap<String, Tensor> = BTreeMap::new();
    let compile = |dims: &BTreeMap<String, usize>, frozen: &BTreeMap<String, Tensor>| {
        Compiler::new(&model)
            .name(CASE_NAME)
            .target(opts.target.clone())
            .dims(dims)
            .freeze_inputs(frozen)
            .compile()
    };
    let first = compile(&BTreeMap::new(), &frozen);
    let first = match first {
        Err(Error::Import(ImportError::Unsupported(list)))
            if sets.len() == 1
                && list
                    .iter()
                    .any(|u| u.reason.contains("computed at run time")) =>
        {
            frozen = shape_parameter_inputs(&sets[0]);
            if frozen.is_empty() {
                Err(Error::Import(ImportError::Unsupported(list)))
            } else {
                compile(&BTreeMap::new(), &frozen)
            }
        }
        r => r,
    };
    // Most node tests have static shapes. The others get their symbolic dims bound to the data's
    // sizes, compiling once per distinct binding.
    let mut groups: Vec<(Compiled, Vec<&DataSet>)> = Vec::new();
    match first {
        Ok(c) => groups.push((c, sets.iter().collect())),
        Err(Error::Import(ImportError::UnboundDim { .. } | ImportError::UnknownDim { .. })) => {
            let mut bound: Vec<(BTreeMap<String, usize>, Vec<&DataSet>)> = Vec::new();
            for set in &sets {
                let dims = match symbolic_bindings(&model, set) {
                    Ok(d) => d,
                    Err(e) => {
                        let (status, detail, blame) = classify(&e, dir);
                        return Outcome::with_blame(name, status, detail, blame);
                    }
                };
                match bound.iter_mut().find(|(d, _)| *d == dims) {
                    Some((_, v)) => v.push(set),
                    None => bound.push((dims, vec![set])),
                }
            }
            for (dims, sets) in bound {
                match compile(&dims, &frozen) {
                    Ok(c) => groups.push((c, sets)),
                    Err(e) => {
                        let (status, detail, blame) = classify(&e, dir);
                        return Outcome::with_blame(name, status, detail, blame);
                    }
                }
            }
        }
        Err(e) => {
            let (status, detail, blame) = classify(&e, dir);
            return Outcome::with_blame(name, status, detail, blame);
        }
    }

    for (compiled, sets) in groups {
        let runner = match Runner::build(&compiled) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                return Outcome::new(
                    name,
                    Status::RunError,
                    format!("link: {}", first_line(&e.to_string())),
                    &["link"],
                )
            }
        };
        for set in sets {
            if let Err(mut o) = run_data_set(name, &compiled, &runner, set, opts.timeout) {
                blame_graph_ops(&model, &mut o);
                return o;
            }
        }
    }
    let note = if frozen.is_empty() {
        String::new()
    } else {
        format!(
            "frozen inputs: {}",
            frozen.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    Outcome::new(name, Status::Pass, note, &[])
}

/// The inputs of a data set that look like shape parameters: integer vectors of at most 16 elements,
/// scalars, and Resize's `roi`/`scales`/`sizes`.
fn shape_parameter_inputs(set: &DataSet) -> BTreeMap<String, Tensor> {
    set.inputs
        .iter()
        .filter(|(n, t)| {
            (matches!(t.dtype(), kiln_ir::DType::I64 | kiln_ir::DType::I32)
                && t.shape().len() <= 1
                && t.len() <= 16)
                || t.shape().is_empty()
                || matches!(n.as_str(), "roi" | "scales" | "sizes")
        })
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect()
}

/// A wrong or crashing result has no error naming an op: blame every op type of the graph (node tests
/// are mostly one op), so the summary groups mismatches by op too. Harness problems keep their blame.
fn blame_graph_ops(model: &Path, o: &mut Outcome) {
    if o.blame.iter().any(|b| b.what == "harness") {
        return;
    }
    if let Ok(info) = kiln_frontend::inspect_file(model, &Default::default()) {
        if !info.op_histogram.is_empty() {
            o.blame = info
                .op_histogram
                .into_iter()
                .map(|(op, _)| Blame {
                    what: op,
                    why: o.detail.clone(),
                })
                .collect();
        }
    }
}

fn run_data_set(
    name: &str,
    c: &Compiled,
    runner: &Arc<Runner>,
    set: &DataSet,
    timeout: Duration,
) -> Result<(), Outcome> {
    let run_err =
        |detail: String, what: &str| Outcome::new(name, Status::RunError, detail, &[what]);
    let mut raw = Vec::with_capacity(c.inputs.len());
    for (k, io) in c.inputs.iter().enumerate() {
        // Test files are named after the graph inputs; fall back to the position for unnamed ones.
        let t = set
            .inputs
            .iter()
            .find(|(n, _)| *n == io.name)
            .or_else(|| set.inputs.get(k).filter(|(n, _)| n.is_empty()))
            .map(|(_, t)| t);
        let Some(t) = t else {
            return Err(run_err(
                format!("data set {}: no data for input {:?}", set.index, io.name),
                "harness",
            ));
        };
        if t.dtype() != io.dtype || t.shape() != io.dims.as_slice() {
            return Err(run_err(
                format!(
                    "data set {}: input {:?} is {} but the compiled model takes {}",
                    set.index,
                    io.name,
                    type_str(t.dtype(), t.shape()),
                    type_str(io.dtype, &io.dims)
                ),
                "harness",
            ));
        }
        raw.push(t.bytes().to_vec());
    }
    let got = run_with_timeout(runner, raw, timeout)
        .map_err(|(detail, blame)| run_err(format!("data set {}: {detail}", set.index), blame))?;
    if got.len() != c.outputs.len() || c.outputs.len() != set.outputs.len() {
        return Err(Outcome::new(
            name,
            Status::Mismatch,
            format!(
                "data set {}: {} outputs, expected {}",
                set.index,
                c.outputs.len(),
                set.outputs.len()
            ),
            &["outputs"],
        ));
    }
    for (k, (io, bytes)) in c.outputs.iter().zip(got).enumerate() {
        let (want_name, want) = set
            .outputs
            .iter()
            .find(|(n, _)| *n == io.name)
            .unwrap_or(&set.outputs[k]);
        if want.dtype() != io.dtype || want.shape() != io.dims.as_slice() {
            return Err(Outcome::new(
                name,
                Status::Mismatch,
                format!(
                    "data set {}: output {want_name:?} is {}, expected {}",
                    set.index,
                    type_str(io.dtype, &io.dims),
                    type_str(want.dtype(), want.shape())
                ),
                &["output type"],
            ));
        }
        let got = Tensor::from_bytes(io.dtype, io.dims.clone(), bytes)
            .map_err(|e| run_err(format!("output {want_name:?}: {e}"), "harness"))?;
        if let Some(m) = compare(&got, want) {
            return Err(Outcome::new(
                name,
                Status::Mismatch,
                format!("data set {}: {want_name}{m}", set.index),
                &["values"],
            ));
        }
    }
    Ok(())
}

fn type_str(dtype: DType, dims: &[usize]) -> String {
    format!("{dtype}{dims:?}")
}

/// Runs the compiled case once; on timeout kills the run (see [`kill_stale_children`]).
fn run_with_timeout(
    runner: &Arc<Runner>,
    inputs: Vec<Vec<u8>>,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>, (String, &'static str)> {
    let (tx, rx) = mpsc::channel();
    let r = Arc::clone(runner);
    // A plain thread, not a scoped one: if the process cannot be killed we give up on it rather than
    // block the whole suite.
    std::thread::spawn(move || {
        let _ = tx.send(r.run(&inputs, 1));
    });
    let result = match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            return Err(("the run thread died".into(), "harness"))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            kill_stale_children(timeout);
            return match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(_) => Err((
                    format!("timeout after {} s (killed)", timeout.as_secs()),
                    "timeout",
                )),
                Err(_) => Err((
                    format!(
                        "timeout after {} s (could not kill the process)",
                        timeout.as_secs()
                    ),
                    "timeout",
                )),
            };
        }
    };
    result.map_err(|e| {
        let msg = e.to_string();
        // "the compiled model failed (signal: 11 (SIGSEGV)):\n<stderr>": keep the status and the
        // first line of stderr.
        let mut lines = msg.lines().filter(|l| !l.trim().is_empty());
        let head = lines.next().unwrap_or("").trim_end_matches(':').to_string();
        let detail = match lines.next() {
            Some(l) => format!("{head}: {}", l.trim()),
            None => head,
        };
        (detail, "crash")
    })
}

/// Kills (SIGKILL) the child processes of this process that have run for at least `min_age`. The
/// runner does not expose its child, but every child we start for a case is short-lived, so the only
/// ones this old are the hung runs. Linux only (reads /proc); elsewhere it does nothing.
fn kill_stale_children(min_age: Duration) {
    const USER_HZ: f64 = 100.0; // /proc reports start times in USER_HZ ticks, 100 on Linux
    let me = std::process::id().to_string();
    let Some(uptime) = fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
    else {
        return;
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesized command name: state ppid ... starttime (field 22 overall).
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let (Some(&ppid), Some(start)) = (f.get(1), f.get(19).and_then(|s| s.parse::<f64>().ok()))
        else {
            continue;
        };
        if ppid == me && uptime - start / USER_HZ >= min_age.as_secs_f64() - 1.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
        }
    }
}

/// Compares one output with its expected value; `None` when they match, else where and how they
/// differ most. Floats: |got - want| <= ATOL + RTOL * |want|, NaN matches NaN, an infinity matches
/// the same infinity. Everything else: exact.
pub fn compare(got: &Tensor, want: &Tensor) -> Option<String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Some(format!(
            ": got {}, expected {}",
            type_str(got.dtype(), got.shape()),
            type_str(want.dtype(), want.shape())
        ));
    }
    let n = want.len();
    let mut bad = 0usize;
    // (badness, index) of the worst element; badness is the error over the allowed error.
    let mut worst: Option<(f64, usize)> = None;
    for i in 0..n {
        let badness = if want.dtype().is_float() {
            let (g, w) = (got.get_f64(i), want.get_f64(i));
            if w.is_nan() {
                if g.is_nan() {
                    continue;
                }
                f64::INFINITY
            } else if w.is_infinite() || g.is_nan() || g.is_infinite() {
                if g == w {
                    continue;
                }
                f64::INFINITY
            } else {
                let b = (g - w).abs() / (ATOL + RTOL * w.abs());
                if b <= 1.0 {
                    continue;
                }
                b
            }
        } else {
            if got.get_i64(i) == want.get_i64(i) {
                continue;
            }
            f64::INFINITY
        };
        bad += 1;
        if worst.is_none_or(|(b, _)| badness > b) {
            worst = Some((badness, i));
        }
    }
    let (_, i) = worst?;
    // Shortest round-trip spelling at the tensor's own precision (f32 for the 16-bit floats too).
    let show = |t: &Tensor| match t.dtype() {
        DType::F64 => format!("{}", t.get_f64(i)),
        d if d.is_float() => format!("{}", t.get_f64(i) as f32),
        _ => format!("{}", t.get_i64(i)),
    };
    Some(format!(
        "{:?}: got {}, expected {} ({bad} of {n} elements differ)",
        unravel(i, want.shape()),
        show(got),
        show(want)
    ))
}

/// The multi-index of flat index `i` in a row-major `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = i % d;
            i /= d;
        }
    }
    idx
}

fn read_data_sets(dir: &Path) -> crate::Result<Vec<DataSet>> {
    let mut indices: Vec<usize> = fs::read_dir(dir)
        .map_err(crate::io_err(dir))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("test_data_set_")?
                .parse()
                .ok()
        })
        .collect();
    indices.sort_unstable();
    let mut sets = Vec::new();
    for index in indices {
        let d = dir.join(format!("test_data_set_{index}"));
        let read = |prefix: &str| -> crate::Result<Vec<(String, Tensor)>> {
            let mut v = Vec::new();
            for k in 0.. {
                let p = d.join(format!("{prefix}_{k}.pb"));
                if !p.exists() {
                    break;
                }
                let bytes = fs::read(&p).map_err(crate::io_err(&p))?;
                let label = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
                v.push(kiln_frontend::decode_tensor_bytes(
                    &bytes,
                    &label,
                    MAX_DATA_BYTES,
                )?);
            }
            Ok(v)
        };
        sets.push(DataSet {
            index,
            inputs: read("input")?,
            outputs: read("output")?,
        });
    }
    Ok(sets)
}

/// Binds each symbolic dim of the model's inputs (`N`, or `input:axis` for an anonymous one) to the
/// size the data set has there, so models with dynamic shapes compile for the test data.
fn symbolic_bindings(model: &Path, set: &DataSet) -> crate::Result<BTreeMap<String, usize>> {
    let mut dims = BTreeMap::new();
    let info = kiln_frontend::inspect_file(model, &Default::default())?;
    for (k, input) in info.inputs.iter().enumerate() {
        let Some(declared) = &input.dims else {
            continue;
        };
        if declared.iter().all(|d| d.parse::<usize>().is_ok()) {
            continue;
        }
        let Some((_, t)) = set
            .inputs
            .iter()
            .find(|(n, _)| *n == input.name)
            .or_else(|| set.inputs.get(k))
        else {
            continue;
        };
        for (axis, (d, &size)) in declared.iter().zip(t.shape()).enumerate() {
            if d == "?" {
                dims.insert(format!("{}:{axis}", input.name), size);
            } else if d.parse::<usize>().is_err() {
                dims.insert(d.clone(), size);
            }
        }
    }
    Ok(dims)
}

/// Status, one-line detail and blame for a failed compile (or data read), by the error's type.
fn classify(e: &Error, dir: &Path) -> (Status, String, Vec<Blame>) {
    let strip = |s: &str| -> String {
        // Messages start with the model path; the case name already says which model it is.
        let s = first_line(s);
        let model = dir.join("model.onnx").display().to_string();
        s.strip_prefix(&model)
            .map(|r| r.trim_start_matches(':').trim_start().to_string())
            .unwrap_or(s)
    };
    let blame = |what: &str, why: &str| Blame {
        what: what.to_string(),
        why: why.to_string(),
    };
    match e {
        Error::Import(ImportError::Unsupported(nodes)) => {
            let blames = unique_blames(nodes.iter().map(|n| blame(&n.op_type, &n.reason)));
            (Status::Unsupported, joined(&blames), blames)
        }
        Error::Import(ImportError::Node { op_type, msg, .. }) => {
            let why = first_line(msg);
            (
                Status::CompileError,
                format!("{op_type}: {why}"),
                vec![blame(op_type, &why)],
            )
        }
        Error::Import(other) => {
            let why = strip(&other.to_string());
            (
                Status::CompileError,
                why.clone(),
                vec![blame(&format!("import: {}", import_kind(other)), &why)],
            )
        }
        Error::Backend(b) => {
            let mut leaves = Vec::new();
            backend_leaves(b, &mut leaves);
            let blames = unique_blames(leaves.iter().map(|l| match l {
                BackendError::Unsupported { op, reason, .. } => blame(op, reason),
                BackendError::Internal(m) => blame("backend: internal", m),
                BackendError::Graph(m) => blame("backend: graph", m),
                other => blame("backend: options", &other.to_string()),
            }));
            if !leaves.is_empty()
                && leaves
                    .iter()
                    .all(|l| matches!(l, BackendError::Unsupported { .. }))
            {
                (Status::Unsupported, joined(&blames), blames)
            } else {
                (Status::CompileError, strip(&b.to_string()), blames)
            }
        }
        Error::Pass(p) => {
            let why = first_line(&p.to_string());
            (
                Status::CompileError,
                format!("pass: {why}"),
                vec![blame("passes", &why)],
            )
        }
        other => {
            let why = strip(&other.to_string());
            (
                Status::CompileError,
                why.clone(),
                vec![blame("other", &why)],
            )
        }
    }
}

fn unique_blames(it: impl Iterator<Item = Blame>) -> Vec<Blame> {
    let mut seen = BTreeSet::new();
    it.filter(|b| seen.insert((b.what.clone(), b.why.clone())))
        .collect()
}

fn joined(blames: &[Blame]) -> String {
    blames
        .iter()
        .map(|b| format!("{}: {}", b.what, first_line(&b.why)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn backend_leaves<'a>(e: &'a BackendError, out: &mut Vec<&'a BackendError>) {
    match e {
        BackendError::Many(v) => v.iter().for_each(|x| backend_leaves(x, out)),
        other => out.push(other),
    }
}

fn import_kind(e: &ImportError) -> &'static str {
    match e {
        ImportError::Io { .. } => "io",
        ImportError::Decode { .. } => "decode",
        ImportError::Model { .. } => "model",
        ImportError::UnboundDim { .. } | ImportError::UnknownDim { .. } => "dims",
        ImportError::Tensor { .. } | ImportError::ExternalData { .. } => "tensor",
        ImportError::DuplicateValue { .. }
        | ImportError::Dangling { .. }
        | ImportError::Cycle { .. } => "graph",
        ImportError::Node { .. } => "node",
        ImportError::Output { .. } => "output",
        ImportError::Unsupported(_) => "unsupported",
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// A newline would break the manifest's line format.
fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(3)).collect();
    t.push_str("...");
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips() {
        let text = "# header\ntest_b mismatch # data set 0: y[1]: got 2, expected 3\ntest_a pass\n\ntest_c unsupported # Foo: bar\n";
        let m = Manifest::parse(text).unwrap();
        assert_eq!(m.entries.len(), 3);
        assert_eq!(m.entries["test_a"], (Status::Pass, String::new()));
        assert_eq!(m.entries["test_b"].0, Status::Mismatch);
        assert_eq!(m.entries["test_c"].1, "Foo: bar");
        assert_eq!(m.passing(), vec!["test_a".to_string()]);
        assert_eq!(Manifest::parse(&m.render()).unwrap(), m);
        // Sorted by name.
        let text = m.render();
        let body: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(body, ["test_a", "test_b", "test_c"]);
        assert!(Manifest::parse("test_a passed\n").is_err());
        assert!(Manifest::parse("test_a pass\ntest_a pass\n").is_err());
        assert!(Manifest::parse("test_a\n").is_err());
    }

    #[test]
    fn regressions_are_recorded_passes_that_fail() {
        let m = Manifest::parse("a pass\nb mismatch # x\nc pass\n").unwrap();
        let o = |n: &str, s| Outcome::new(n, s, "", &[]);
        let outcomes = [
            o("a", Status::RunError),
            o("b", Status::Pass),
            o("c", Status::Pass),
            o("d", Status::Mismatch),
        ];
        let r: Vec<&str> = regressions(&m, &outcomes)
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(r, ["a"]);
        let p: Vec<&str> = newly_passing(&m, &outcomes)
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(p, ["b"]);
    }

    #[test]
    fn float_tolerance_and_specials() {
        let want = Tensor::from_f32(vec![5], &[1000.0, 0.0, f32::NAN, f32::INFINITY, -1.0]);
        // 1000 allows 1e-5 + 1 = 1.00001; 0 allows 1e-5.
        let ok = Tensor::from_f32(vec![5], &[1000.99, 9e-6, f32::NAN, f32::INFINITY, -1.0005]);
        assert_eq!(compare(&ok, &want), None);
        let far = Tensor::from_f32(vec![5], &[1001.5, 0.0, f32::NAN, f32::INFINITY, -1.0]);
        let m = compare(&far, &want).unwrap();
        assert!(m.contains("[0]: got 1001.5, expected 1000"), "{m}");
        assert!(m.contains("1 of 5"), "{m}");
        let nan = Tensor::from_f32(vec![5], &[1000.0, 0.0, 1.0, f32::INFINITY, -1.0]);
        assert!(compare(&nan, &want)
            .unwrap()
            .contains("[2]: got 1, expected NaN"));
        let neg_inf = Tensor::from_f32(vec![5], &[1000.0, 0.0, f32::NAN, f32::NEG_INFINITY, -1.0]);
        assert!(compare(&neg_inf, &want).unwrap().contains("[3]"));
        // The worst element is reported: index [1, 0] is off by far more than [0, 1].
        let want2 = Tensor::from_f32(vec![2, 2], &[0.0, 0.0, 0.0, 0.0]);
        let got2 = Tensor::from_f32(vec![2, 2], &[0.0, 0.01, 5.0, 0.0]);
        let m = compare(&got2, &want2).unwrap();
        assert!(m.starts_with("[1, 0]: got 5, expected 0 (2 of 4"), "{m}");
    }

    #[test]
    fn integers_and_types_are_exact() {
        let want = Tensor::from_i64(DType::I64, vec![3], &[1, -2, 3]);
        assert_eq!(
            compare(&Tensor::from_i64(DType::I64, vec![3], &[1, -2, 3]), &want),
            None
        );
        assert!(
            compare(&Tensor::from_i64(DType::I64, vec![3], &[1, -1, 3]), &want)
                .unwrap()
                .contains("[1]: got -1, expected -2")
        );
        assert!(
            compare(&Tensor::from_i64(DType::I32, vec![3], &[1, -2, 3]), &want)
                .unwrap()
                .contains("got i32[3], expected i64[3]")
        );
        assert!(compare(
            &Tensor::from_i64(DType::I64, vec![1, 3], &[1, -2, 3]),
            &want
        )
        .unwrap()
        .contains("got i64[1, 3]"));
        let b = Tensor::from_i64(DType::Bool, vec![2], &[1, 0]);
        assert!(compare(&Tensor::from_i64(DType::Bool, vec![2], &[1, 1]), &b).is_some());
    }

    #[test]
    fn errors_are_classified_by_type() {
        let dir = Path::new("/cases/test_x");
        let node = |op: &str, reason: &str| kiln_frontend::UnsupportedNode {
            file: "/cases/test_x/model.onnx".into(),
            node: "n".into(),
            op_type: op.into(),
            domain: String::new(),
            opset: 21,
            reason: reason.into(),
        };
        let e = Error::Import(ImportError::Unsupported(vec![
            node("Foo", "no mapping"),
            node("Bar", "no"),
            node("Foo", "no mapping"),
        ]));
        let (st, detail, blame) = classify(&e, dir);
        assert_eq!(st, Status::Unsupported);
        assert_eq!(detail, "Foo: no mapping; Bar: no");
        assert_eq!(
            blame.iter().map(|b| b.what.as_str()).collect::<Vec<_>>(),
            ["Foo", "Bar"]
        );

        let unsup = |op: &str| BackendError::Unsupported {
            node: "n".into(),
            op: op.into(),
            reason: "r".into(),
        };
        let (st, _, blame) = classify(
            &Error::Backend(BackendError::Many(vec![unsup("cast"), unsup("pad")])),
            dir,
        );
        assert_eq!(st, Status::Unsupported);
        assert_eq!(blame.len(), 2);
        // An internal error anywhere makes it a compiler bug, not a missing feature.
        let mixed = BackendError::Many(vec![unsup("cast"), BackendError::Internal("boom".into())]);
        assert_eq!(
            classify(&Error::Backend(mixed), dir).0,
            Status::CompileError
        );

        let bad = ImportError::Node {
            file: "/cases/test_x/model.onnx".into(),
            node: "n".into(),
            op_type: "Gemm".into(),
            opset: 13,
            msg: "shapes differ\nmore".into(),
        };
        let (st, detail, blame) = classify(&Error::Import(bad), dir);
        assert_eq!(
            (st, detail.as_str(), blame[0].what.as_str()),
            (Status::CompileError, "Gemm: shapes differ", "Gemm")
        );
        let out = ImportError::Output {
            file: "/cases/test_x/model.onnx".into(),
            output: "y".into(),
            msg: "missing".into(),
        };
        let (st, detail, blame) = classify(&Error::Import(out), dir);
        assert_eq!(
            (st, detail.as_str(), blame[0].what.as_str()),
            (
                Status::CompileError,
                "graph output \"y\": missing",
                "import: output"
            )
        );
    }

    #[test]
    fn details_fit_one_manifest_line() {
        assert_eq!(one_line("a\n  b #3\n"), "a | b #3");
        assert_eq!(truncate("abcdef", 5), "ab...");
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(unravel(5, &[2, 3]), vec![1, 2]);
        assert_eq!(unravel(0, &[]), Vec::<usize>::new());
    }
}
