//! End-to-end harness: build a graph, compile it, link it into a C driver, run it (natively on
//! x86_64, under qemu on aarch64), and compare its outputs with the IR's reference evaluator.
#![allow(dead_code)]

use kiln_backend::{compile, Artifact, Options, Target, WeightsMode};
use kiln_ir::{DType, Graph, Op, Tensor, TensorType, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Deterministic xorshift generator: the same test data on every run and host.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }
    /// Uniform integer in [lo, hi].
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % ((hi - lo + 1) as u64)) as i64
    }
}

/// How to fill an input.
#[derive(Clone, Copy, Debug)]
pub enum Gen {
    /// Uniform floats in [lo, hi).
    Uniform(f64, f64),
    /// Uniform integers in [lo, hi] (converted to the dtype).
    Ints(i64, i64),
}

/// A graph under construction together with its input data.
pub struct Case {
    pub g: Graph,
    pub inputs: Vec<Tensor>,
    pub rng: Rng,
    /// Relative and absolute tolerance for float outputs.
    pub rtol: f64,
    pub atol: f64,
}

impl Case {
    pub fn new(name: &str) -> Self {
        let seed = name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        Case {
            g: Graph::new(name),
            inputs: Vec::new(),
            rng: Rng::new(seed),
            rtol: 1e-4,
            atol: 1e-5,
        }
    }

    pub fn random(&mut self, dtype: DType, dims: &[usize], gen: Gen) -> Tensor {
        let n: usize = dims.iter().product();
        match gen {
            Gen::Uniform(lo, hi) => {
                let v: Vec<f64> = (0..n).map(|_| self.rng.uniform(lo, hi)).collect();
                Tensor::from_f64(dtype, dims.to_vec(), &v)
            }
            Gen::Ints(lo, hi) => {
                let v: Vec<i64> = (0..n).map(|_| self.rng.int(lo, hi)).collect();
                Tensor::from_i64(dtype, dims.to_vec(), &v)
            }
        }
    }

    /// A graph input filled by `gen`.
    pub fn input(&mut self, name: &str, dtype: DType, dims: &[usize], gen: Gen) -> Value {
        let t = self.random(dtype, dims, gen);
        self.inputs.push(t);
        self.g.add_input(name, TensorType::new(dtype, dims))
    }

    /// An f32 input uniform in [-2, 2).
    pub fn x(&mut self, name: &str, dims: &[usize]) -> Value {
        self.input(name, DType::F32, dims, Gen::Uniform(-2.0, 2.0))
    }

    pub fn constant(&mut self, name: &str, t: Tensor) -> Value {
        self.g.add_const(name, t)
    }

    /// An f32 constant uniform in [-1, 1).
    pub fn weight(&mut self, name: &str, dims: &[usize]) -> Value {
        let t = self.random(DType::F32, dims, Gen::Uniform(-1.0, 1.0));
        self.g.add_const(name, t)
    }

    pub fn node(&mut self, name: &str, op: Op, ins: &[Value]) -> Value {
        let ins: Vec<Option<Value>> = ins.iter().map(|&v| Some(v)).collect();
        self.node_opt(name, op, &ins)
    }

    pub fn node_opt(&mut self, name: &str, op: Op, ins: &[Option<Value>]) -> Value {
        match self.g.add_node(name, op, ins, &[name]) {
            Ok(v) => v[0],
            Err(e) => panic!("building {name}: {e}"),
        }
    }

    pub fn output(&mut self, name: &str, v: Value) {
        self.g.outputs.push((name.to_string(), v));
    }

    /// `node` + `output` under the same name.
    pub fn out(&mut self, name: &str, op: Op, ins: &[Value]) -> Value {
        let v = self.node(name, op, ins);
        self.output(name, v);
        v
    }
}

/// Evaluates the graph with the IR's reference evaluator.
pub fn reference(g: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut vals: HashMap<Value, Tensor> = HashMap::new();
    for id in g.topo_order().expect("acyclic") {
        let n = g.node(id);
        let outs = match &n.op {
            Op::Input(i) => vec![inputs[*i].clone()],
            op => {
                let ins: Vec<Option<Tensor>> = g
                    .inputs(id)
                    .iter()
                    .map(|v| v.map(|v| vals[&v].clone()))
                    .collect();
                let refs: Vec<Option<&Tensor>> = ins.iter().map(|t| t.as_ref()).collect();
                op.eval(&refs).unwrap_or_else(|e| {
                    panic!("reference evaluation of {} ({}): {e}", n.name, op.name())
                })
            }
        };
        for (slot, t) in outs.into_iter().enumerate() {
            vals.insert(
                Value {
                    node: id,
                    slot: slot as u32,
                },
                t,
            );
        }
    }
    g.outputs.iter().map(|(_, v)| vals[v].clone()).collect()
}

/// Which machine a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    pub fn target(self) -> Target {
        Target::parse(self.triple(), "generic", &[]).expect("target")
    }

    fn have(tool: &str) -> bool {
        Command::new(tool)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// The compiler and runner for this arch, or why not.
    pub fn toolchain(
        self,
    ) -> Result<(&'static str, Vec<&'static str>, Option<&'static str>), String> {
        let host_x86 = cfg!(target_arch = "x86_64");
        match self {
            Arch::X86_64 if host_x86 => {
                if Self::have("cc") {
                    Ok(("cc", vec![], None))
                } else {
                    Err("no `cc`".into())
                }
            }
            Arch::X86_64 => Err("not an x86_64 host".into()),
            Arch::Aarch64 => {
                if !cfg!(target_arch = "aarch64") {
                    if !Self::have("aarch64-linux-gnu-gcc") {
                        return Err("no `aarch64-linux-gnu-gcc`".into());
                    }
                    if !Self::have("qemu-aarch64") {
                        return Err("no `qemu-aarch64`".into());
                    }
                    Ok((
                        "aarch64-linux-gnu-gcc",
                        vec!["-static"],
                        Some("qemu-aarch64"),
                    ))
                } else if Self::have("cc") {
                    Ok(("cc", vec![], None))
                } else {
                    Err("no `cc`".into())
                }
            }
        }
    }
}

pub const ARCHES: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

pub fn options(name: &str, arch: Arch, weights: WeightsMode) -> Options {
    Options {
        winograd: kiln_backend::Winograd::Auto,
        name: name.to_string(),
        target: arch.target(),
        weights,
        model_file: "test.onnx".into(),
    }
}

/// The x86_64 FMA build (`x86-64-v3`: AVX2 + FMA), when the host can run it.
pub fn fma_options() -> Option<Options> {
    if !cfg!(target_arch = "x86_64") || Arch::X86_64.toolchain().is_err() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return None;
        }
    }
    let target =
        Target::parse("x86_64-unknown-linux-gnu", "x86-64-v3", &[]).expect("the v3 level parses");
    Some(Options {
        target,
        ..options("m", Arch::X86_64, WeightsMode::Embedded)
    })
}

/// [`check`], plus the x86_64 FMA build.
pub fn check_all(case: &Case) {
    check(case);
    if let Some(opts) = fma_options() {
        let want = reference(&case.g, &case.inputs);
        if let Some(got) = run_with(case, Arch::X86_64, &opts) {
            compare(case, Arch::X86_64, &got, &want);
        }
    }
}

fn rounded(n: usize) -> usize {
    n.max(1).div_ceil(64) * 64
}

/// A C driver that reads `{name}_in{i}.bin`, runs the model, and writes `{name}_out{i}.bin`.
/// Output buffers and the arena are filled with a poison pattern first.
pub fn driver_fragment(name: &str, g: &Graph, external: bool) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "static int run_{name}(void) {{");
    let _ = writeln!(c, "    {name}_inputs in; {name}_outputs out;");
    let _ = writeln!(
        c,
        "    memset(&in, 0, sizeof in); memset(&out, 0, sizeof out);"
    );
    let _ = writeln!(c, "    void **ip = (void **)&in, **op = (void **)&out;");
    for (i, &id) in g.inputs.iter().enumerate() {
        let n = g.ty(Value { node: id, slot: 0 }).byte_size().unwrap();
        let _ = writeln!(c, "    ip[{i}] = load(\"{name}_in{i}.bin\", {n});");
    }
    for (i, (_, v)) in g.outputs.iter().enumerate() {
        let n = g.ty(*v).byte_size().unwrap();
        let _ = writeln!(
            c,
            "    op[{i}] = aligned_alloc(64, {}); memset(op[{i}], 0x7f, {});",
            rounded(n),
            rounded(n)
        );
    }
    let _ = writeln!(c, "    void *arena = aligned_alloc(64, {name}_ARENA_SIZE); memset(arena, 0x7f, {name}_ARENA_SIZE);");
    if external {
        let _ = writeln!(
            c,
            "    const void *w = load(\"{name}.weights.bin\", {name}_WEIGHTS_SIZE);"
        );
        let _ = writeln!(c, "    int rc = {name}_run(&in, &out, arena, w);");
    } else {
        let _ = writeln!(c, "    int rc = {name}_run(&in, &out, arena);");
    }
    let _ = writeln!(
        c,
        "    if (rc != 0) {{ fprintf(stderr, \"{name}_run returned %d\\n\", rc); return rc; }}"
    );
    for (i, (_, v)) in g.outputs.iter().enumerate() {
        let n = g.ty(*v).byte_size().unwrap();
        let _ = writeln!(c, "    save(\"{name}_out{i}.bin\", op[{i}], {n});");
    }
    let _ = writeln!(c, "    return 0;\n}}");
    c
}

pub const DRIVER_PRELUDE: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
static void *load(const char *path, size_t n) {
    void *b = aligned_alloc(64, n ? (n + 63) / 64 * 64 : 64);
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(90); }
    if (n && fread(b, 1, n, f) != n) { fprintf(stderr, "short read %s\n", path); exit(91); }
    fclose(f);
    return b;
}
static void save(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) { fprintf(stderr, "cannot write %s\n", path); exit(92); }
    fclose(f);
}
"#;

/// Writes an artifact's files into `dir` under `name`.
pub fn write_artifact(dir: &Path, name: &str, a: &Artifact) {
    std::fs::write(dir.join(format!("{name}.o")), &a.object).unwrap();
    std::fs::write(dir.join(format!("{name}.h")), &a.header).unwrap();
    if let Some(w) = &a.weights_blob {
        std::fs::write(dir.join(format!("{name}.weights.bin")), w).unwrap();
    }
}

/// Compiles `main.c` with the objects and runs it in `dir`. Returns (exit code, stdout, stderr).
pub fn build_and_run(dir: &Path, arch: Arch, objects: &[&str]) -> (i32, String, String) {
    let (cc, flags, runner) = arch.toolchain().expect("toolchain checked by the caller");
    let exe: PathBuf = dir.join("prog");
    let mut cmd = Command::new(cc);
    cmd.current_dir(dir)
        .arg("-O1")
        .arg("-std=c11")
        .arg("-Wall")
        .arg("-Werror")
        .args(&flags)
        .arg("-o")
        .arg(&exe)
        .arg("main.c");
    for o in objects {
        cmd.arg(o);
    }
    let out = cmd.output().expect("run the C compiler");
    assert!(
        out.status.success(),
        "C build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = match runner {
        Some(r) => Command::new(r).current_dir(dir).arg(&exe).output(),
        None => Command::new(&exe).current_dir(dir).output(),
    }
    .expect("run the program");
    (
        run.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&run.stdout).into_owned(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

/// Compiles and runs a case on `arch` and returns the raw output bytes, or `None` (after printing
/// why) when the toolchain is missing.
pub fn run_compiled(case: &Case, arch: Arch, weights: WeightsMode) -> Option<Vec<Vec<u8>>> {
    run_with(case, arch, &options("m", arch, weights))
}

/// [`run_compiled`] with explicit options (`opts.name` must be `m`).
pub fn run_with(case: &Case, arch: Arch, opts: &Options) -> Option<Vec<Vec<u8>>> {
    if let Err(why) = arch.toolchain() {
        println!("skipping {arch:?}: {why}");
        return None;
    }
    let name = "m";
    let weights = opts.weights;
    let art = compile(&case.g, opts).unwrap_or_else(|e| panic!("compile {}: {e}", case.g.name));
    let dir = tempfile::tempdir().unwrap();
    write_artifact(dir.path(), name, &art);
    for (i, t) in case.inputs.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{name}_in{i}.bin")), t.bytes()).unwrap();
    }
    let mut main = String::from(DRIVER_PRELUDE);
    main.push_str(&format!("#include \"{name}.h\"\n"));
    main.push_str(&driver_fragment(
        name,
        &case.g,
        weights == WeightsMode::External,
    ));
    main.push_str(&format!("int main(void) {{ return run_{name}(); }}\n"));
    std::fs::write(dir.path().join("main.c"), main).unwrap();
    let (code, _, err) = build_and_run(dir.path(), arch, &[&format!("{name}.o")]);
    assert_eq!(
        code, 0,
        "{} on {arch:?}: program failed: {err}",
        case.g.name
    );
    Some(
        (0..case.g.outputs.len())
            .map(|i| std::fs::read(dir.path().join(format!("{name}_out{i}.bin"))).unwrap())
            .collect(),
    )
}

/// Compares compiled outputs with the reference; panics listing every mismatching output.
pub fn compare(case: &Case, arch: Arch, got: &[Vec<u8>], want: &[Tensor]) {
    let mut problems = Vec::new();
    for (i, ((name, v), w)) in case.g.outputs.iter().zip(want).enumerate() {
        let ty = case.g.ty(*v);
        let g = &got[i];
        if g.len() != w.bytes().len() {
            problems.push(format!(
                "{name}: {} bytes, expected {}",
                g.len(),
                w.bytes().len()
            ));
            continue;
        }
        if ty.dtype == DType::F32 {
            let gv: Vec<f32> = g
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let wv = w.to_f64_vec();
            let mut bad = 0;
            let mut first = String::new();
            for (j, (&a, &b)) in gv.iter().zip(&wv).enumerate() {
                let a = a as f64;
                let ok = (a.is_nan() && b.is_nan())
                    || a == b
                    || (a - b).abs() <= case.atol + case.rtol * b.abs();
                if !ok {
                    if bad < 5 {
                        let _ = write!(first, " [{j}] got {a} want {b};");
                    }
                    bad += 1;
                }
            }
            if bad > 0 {
                problems.push(format!(
                    "{name} ({}): {bad} of {} elements differ:{first}",
                    ty,
                    gv.len()
                ));
            }
        } else if g != w.bytes() {
            let t = Tensor::from_bytes(ty.dtype, w.shape().to_vec(), g.clone()).unwrap();
            let (gi, wi) = (t.to_i64_vec(), w.to_i64_vec());
            let diffs: Vec<String> = gi
                .iter()
                .zip(&wi)
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .take(5)
                .map(|(j, (a, b))| format!("[{j}] got {a} want {b}"))
                .collect();
            problems.push(format!("{name} ({ty}): {}", diffs.join("; ")));
        }
    }
    assert!(
        problems.is_empty(),
        "{} on {arch:?}:\n  {}",
        case.g.name,
        problems.join("\n  ")
    );
}

/// Runs the case on every arch whose toolchain is present and compares with the reference.
pub fn check(case: &Case) {
    check_mode(case, WeightsMode::Embedded)
}

pub fn check_mode(case: &Case, weights: WeightsMode) {
    kiln_ir::verify(&case.g).unwrap_or_else(|e| panic!("{} does not verify: {e}", case.g.name));
    let want = reference(&case.g, &case.inputs);
    for arch in ARCHES {
        if let Some(got) = run_compiled(case, arch, weights) {
            compare(case, arch, &got, &want);
        }
    }
}

/// A C driver that runs the model serially and then as 2, 3 and 5 parts through
/// `parallel_for_src`, C source (after the model's header) that defines
/// `static void parallel_for(void *user, uint32_t count, kiln_task_fn task, void *ctx)`, and fails
/// unless every run wrote the same bytes.
pub fn split_driver(g: &kiln_ir::Graph, parallel_for_src: &str) -> String {
    let mut c = String::from(DRIVER_PRELUDE);
    c.push_str("#include <pthread.h>\n#include \"m.h\"\n");
    c.push_str(parallel_for_src);
    c.push_str("int main(void) {\n    m_inputs in; m_outputs out;\n    (void)save;\n");
    c.push_str("    void **ip = (void **)&in, **op = (void **)&out;\n");
    for (i, &id) in g.inputs.iter().enumerate() {
        let n = g
            .ty(kiln_ir::Value { node: id, slot: 0 })
            .byte_size()
            .unwrap();
        c.push_str(&format!("    ip[{i}] = load(\"m_in{i}.bin\", {n});\n"));
    }
    let sizes: Vec<usize> = g
        .outputs
        .iter()
        .map(|(_, v)| g.ty(*v).byte_size().unwrap())
        .collect();
    c.push_str("    void *arena = aligned_alloc(64, m_ARENA_SIZE);\n");
    for (i, n) in sizes.iter().enumerate() {
        let r = n.div_ceil(64).max(1) * 64;
        c.push_str(&format!(
            "    void *ref{i} = aligned_alloc(64, {r}); op[{i}] = ref{i};\n"
        ));
    }
    c.push_str("    if (m_run(&in, &out, arena)) return 1;\n");
    c.push_str("    uint32_t parts[3] = {2, 3, 5};\n    for (int t = 0; t < 3; t++) {\n");
    c.push_str("        kiln_parallel par = { parallel_for, NULL, parts[t] };\n");
    for (i, n) in sizes.iter().enumerate() {
        let r = n.div_ceil(64).max(1) * 64;
        c.push_str(&format!(
            "        op[{i}] = aligned_alloc(64, {r}); memset(op[{i}], 0x7f, {r});\n"
        ));
    }
    c.push_str("        if (m_run_parallel(&in, &out, arena, &par)) return 2;\n");
    for (i, n) in sizes.iter().enumerate() {
        c.push_str(&format!(
            "        if (memcmp(op[{i}], ref{i}, {n})) {{ fprintf(stderr, \"output {i} differs with %u parts\\n\", parts[t]); return 3; }}\n"
        ));
    }
    c.push_str("    }\n    return 0;\n}\n");
    c
}

/// A driver that runs the model serially, then through `parallel_for` (parts run last first)
/// with 2 to 9 parts, and fails unless every run wrote the serial bytes.
pub fn parallel_driver(c: &Case) -> String {
    let mut main = String::from(DRIVER_PRELUDE);
    main.push_str("#include \"m.h\"\n");
    main.push_str(
        "static void reversed(void *user, uint32_t count, kiln_task_fn task, void *ctx) {\n\
         \x20   (void)user; for (uint32_t i = count; i-- > 0;) task(ctx, i);\n}\n",
    );
    let frag = driver_fragment("m", &c.g, false);
    let setup: String = frag
        .lines()
        .take_while(|l| !l.contains("int rc"))
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect();
    let nout = c.g.outputs.len();
    let sizes: Vec<String> =
        c.g.outputs
            .iter()
            .map(|(_, v)| c.g.ty(*v).byte_size().unwrap().to_string())
            .collect();
    main.push_str(&format!(
        "int main(void) {{\n    (void)save;\n{setup}\
         \x20   static const size_t size[{nout}] = {{{}}};\n\
         \x20   void *want[{nout}];\n\
         \x20   if (m_run(&in, &out, arena)) return 10;\n\
         \x20   for (int i = 0; i < {nout}; i++) {{ want[i] = malloc(size[i]); memcpy(want[i], op[i], size[i]); }}\n\
         \x20   for (uint32_t t = 2; t <= 9; t++) {{\n\
         \x20       kiln_parallel par = {{ reversed, NULL, t }};\n\
         \x20       for (int i = 0; i < {nout}; i++) memset(op[i], 0x7f, size[i]);\n\
         \x20       memset(arena, 0x7f, m_ARENA_SIZE);\n\
         \x20       if (m_run_parallel(&in, &out, arena, &par)) return 11;\n\
         \x20       for (int i = 0; i < {nout}; i++)\n\
         \x20           if (memcmp(want[i], op[i], size[i])) {{ fprintf(stderr, \"output %d differs with %u parts\\n\", i, t); return 12; }}\n\
         \x20   }}\n\
         \x20   return 0;\n}}\n",
        sizes.join(", ")
    ));
    main
}

/// A timing program for a compiled case, for the performance probes (ignored tests that print
/// numbers and assert nothing about time): `m_run` repeated for 0.1 s, best of five rounds, in
/// thread CPU time (what other processes on a shared machine disturb least). Built once, so a
/// probe can alternate several builds of the same layer.
pub struct Timer {
    dir: tempfile::TempDir,
}

impl Timer {
    /// Links `art` (compiled from `c` under the name `m`, for the host) into the timing program.
    pub fn build(c: &Case, art: &Artifact) -> Timer {
        let dir = tempfile::tempdir().unwrap();
        write_artifact(dir.path(), "m", art);
        for (i, t) in c.inputs.iter().enumerate() {
            std::fs::write(dir.path().join(format!("m_in{i}.bin")), t.bytes()).unwrap();
        }
        let mut main = String::from(DRIVER_PRELUDE);
        main.push_str("#include <time.h>\n#include \"m.h\"\n");
        // The driver's setup (inputs, outputs, arena), then the timed loop.
        let setup: String = driver_fragment("m", &c.g, false)
            .lines()
            .take_while(|l| !l.contains("int rc"))
            .skip(1)
            .map(|l| format!("{l}\n"))
            .collect();
        main.push_str(&format!(
            "int main(void) {{\n{setup}    double best = 1e9; m_run(&in,&out,arena);\n\
             for (int r = 0; r < 5; r++) {{ struct timespec a,b; int n=0; clock_gettime(CLOCK_THREAD_CPUTIME_ID,&a);\n\
             do {{ m_run(&in,&out,arena); n++; clock_gettime(CLOCK_THREAD_CPUTIME_ID,&b); }} while ((b.tv_sec-a.tv_sec)+(b.tv_nsec-a.tv_nsec)*1e-9 < 0.1);\n\
             double s=((b.tv_sec-a.tv_sec)+(b.tv_nsec-a.tv_nsec)*1e-9)/n; if (s < best) best = s; }}\n\
             printf(\"%.6f\\n\", best*1e3); return 0; }}\n"
        ));
        std::fs::write(dir.path().join("main.c"), main).unwrap();
        let st = Command::new("cc")
            .current_dir(dir.path())
            .args(["-O2", "-o", "prog", "main.c", "m.o"])
            .status()
            .unwrap();
        assert!(st.success(), "the timing driver does not build");
        Timer { dir }
    }

    /// Runs the program: milliseconds per run.
    pub fn ms(&self) -> f64 {
        let out = Command::new("./prog")
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// The folder holding `m.o`, `prog` and the inputs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
