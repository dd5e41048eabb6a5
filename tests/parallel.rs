//! `NAME_run_parallel`: threads under the caller's control. Compiled models run through the
//! caller's `parallel_for` with 1, 2 and 3 tasks must give outputs bitwise identical to `NAME_run`
//! on x86_64 and aarch64 (under qemu); `par == NULL` and `tasks <= 1` run serially; a `par` asking
//! for parts without a callback is refused; two models' headers go into one program; the C
//! example builds and runs.

use kiln::runner::{Runner, Toolchain};
use kiln::{Compiled, Compiler, Target, WeightsMode};
use kiln_frontend::builder::{attr, elem, ModelBuilder};
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGETS: [&str; 2] = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compile_path(path: &Path, name: &str, triple: &str) -> Compiled {
    compile_with(path, name, triple, WeightsMode::Embedded)
}

fn compile_with(path: &Path, name: &str, triple: &str, weights: WeightsMode) -> Compiled {
    Compiler::new(path)
        .name(name)
        .target(Target::parse(triple, "generic", &[]).unwrap())
        .weights(weights)
        .compile()
        .unwrap_or_else(|e| panic!("{} for {triple}: {e}", path.display()))
}

const X_DIMS: [usize; 4] = [2, 3, 131, 173];
const K_DIMS: [usize; 2] = [300, 301];
const BIAS: [f32; 3] = [0.5, -0.25, 1.0];

/// A model whose elementwise ops are large enough to be split into parts, with odd sizes so
/// the parts are uneven and the last chunk is short: a broadcast add and a `where` (split over
/// the outer dims), relu (one long run), an f16 round trip and an i64 add (the converting and
/// scalar loops).
fn wide_model(dir: &Path) -> PathBuf {
    let xd: Vec<i64> = X_DIMS.iter().map(|&d| d as i64).collect();
    let kd: Vec<i64> = K_DIMS.iter().map(|&d| d as i64).collect();
    let mut b = ModelBuilder::new("wide");
    b.input("x", elem::FLOAT, &xd)
        .input("k", elem::INT64, &kd)
        .initializer_f32("b", &[1, 3, 1, 1], &BIAS)
        .initializer_f32("zero", &[], &[0.0])
        .node("Add", &["x", "b"], &["sum"], vec![])
        .node("Relu", &["x"], &["relu"], vec![])
        .node(
            "Cast",
            &["x"],
            &["half"],
            vec![attr::int("to", elem::FLOAT16 as i64)],
        )
        .node(
            "Cast",
            &["half"],
            &["back"],
            vec![attr::int("to", elem::FLOAT as i64)],
        )
        .node("Add", &["k", "k"], &["kk"], vec![])
        .node("Greater", &["x", "zero"], &["pos"], vec![])
        .node("Where", &["pos", "x", "b"], &["w"], vec![])
        .output("sum", elem::FLOAT, &xd)
        .output("relu", elem::FLOAT, &xd)
        .output("back", elem::FLOAT, &xd)
        .output("kk", elem::INT64, &kd)
        .output("w", elem::FLOAT, &xd);
    let p = dir.join("wide.onnx");
    std::fs::write(&p, b.to_bytes()).unwrap();
    p
}

/// Inputs of [`wide_model`]: x in [-2, 2] in steps of 1/500 (no value small enough to be an
/// f16 subnormal), k small integers of both signs.
fn wide_inputs() -> (Vec<f32>, Vec<i64>) {
    let nx: usize = X_DIMS.iter().product();
    let nk: usize = K_DIMS.iter().product();
    let x = (0..nx)
        .map(|i| ((i * 7919) % 2001) as f32 / 500.0 - 2.0)
        .collect();
    let k = (0..nk).map(|i| (i as i64 * 31) % 1001 - 500).collect();
    (x, k)
}

/// f32 -> f16 -> f32 for normal f16 values: keep 10 of the 23 mantissa bits, rounding to nearest
/// even.
fn through_f16(x: f32) -> f32 {
    let bits = x.to_bits();
    let low = bits & 0x1fff;
    let base = bits & !0x1fff;
    let up = low > 0x1000 || (low == 0x1000 && bits & 0x2000 != 0);
    f32::from_bits(if up { base + 0x2000 } else { base })
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The outputs of [`wide_model`], computed here from their definitions.
fn wide_expected(x: &[f32], k: &[i64]) -> Vec<Vec<u8>> {
    let plane = X_DIMS[2] * X_DIMS[3];
    let bias = |i: usize| BIAS[(i / plane) % 3];
    let sum: Vec<f32> = x.iter().enumerate().map(|(i, &v)| v + bias(i)).collect();
    let relu: Vec<f32> = x.iter().map(|&v| v.max(0.0)).collect();
    let back: Vec<f32> = x.iter().map(|&v| through_f16(v)).collect();
    let kk: Vec<i64> = k.iter().map(|&v| v + v).collect();
    let w: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| if v > 0.0 { v } else { bias(i) })
        .collect();
    vec![
        f32_bytes(&sum),
        f32_bytes(&relu),
        f32_bytes(&back),
        i64_bytes(&kk),
        f32_bytes(&w),
    ]
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

/// The names of the object's trampolines, one per distinct split kernel (`nm`; `None` without it).
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

/// Runs `r` with `NAME_run` and with 1, 2 and 3 threads (and as many tasks); every output must be
/// identical to `NAME_run`'s, byte for byte. Returns `NAME_run`'s outputs.
fn same_for_every_split(r: &mut Runner, inputs: &[Vec<u8>], what: &str) -> Vec<Vec<u8>> {
    r.set_threads(0);
    let serial = r.run(inputs, 1).unwrap();
    for threads in [1, 2, 3] {
        r.set_threads(threads);
        let got = r.run(inputs, 2).unwrap();
        for (k, (g, s)) in got.iter().zip(&serial).enumerate() {
            assert!(
                g == s,
                "{what}: output {k} with {threads} tasks differs from NAME_run's"
            );
        }
    }
    serial
}

#[test]
fn split_kernels_give_identical_results_on_both_targets() {
    let dir = tempfile::tempdir().unwrap();
    let model = wide_model(dir.path());
    let (x, k) = wide_inputs();
    let inputs = vec![f32_bytes(&x), i64_bytes(&k)];
    let want = wide_expected(&x, &k);
    for triple in TARGETS {
        // External weights move `par` to the fifth parameter.
        for weights in [WeightsMode::Embedded, WeightsMode::External] {
            let c = compile_with(&model, "wide", triple, weights);
            if let Some(tasks) = task_symbols(&c) {
                // Every op of the model is over 64K elements: all of them are split.
                assert!(tasks.len() >= 4, "{triple}: split kernels {tasks:?}");
            }
            let Some(mut r) = runner_or_skip(&c) else {
                continue;
            };
            let what = format!("{triple}, {weights:?} weights");
            let got = same_for_every_split(&mut r, &inputs, &what);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g == w,
                    "{what}: output {} differs from its definition",
                    c.outputs[i].name
                );
            }
        }
    }
}

#[test]
fn test_models_give_identical_results_on_both_targets() {
    for m in ["mlp.onnx", "cnn.onnx", "legacy_cnn.onnx", "ops_zoo.onnx"] {
        let path = root().join("tests/models").join(m);
        for triple in TARGETS {
            let c = compile_path(&path, "m", triple);
            let Some(mut r) = runner_or_skip(&c) else {
                continue;
            };
            let inputs: Vec<Vec<u8>> = c.inputs.iter().map(kiln::runner::pattern).collect();
            same_for_every_split(&mut r, &inputs, &format!("{m} on {triple}"));
        }
    }
}

#[test]
fn real_models_give_identical_results() {
    // Exported by scripts/export_families.py (needs PyTorch); skipped when absent.
    // ResNet-18 on the host; MobileNetV2 (smaller) on both targets.
    let host = Target::host().triple.to_string();
    for (m, triples) in [
        ("resnet18", vec![host.as_str()]),
        ("mobilenet_v2", TARGETS.to_vec()),
    ] {
        let path = root().join("build/families").join(format!("{m}.onnx"));
        if !path.exists() {
            eprintln!("SKIP {m}: {} not found", path.display());
            continue;
        }
        for triple in triples {
            let c = compile_path(&path, m, triple);
            let Some(mut r) = runner_or_skip(&c) else {
                continue;
            };
            let inputs: Vec<Vec<u8>> = c.inputs.iter().map(kiln::runner::pattern).collect();
            same_for_every_split(&mut r, &inputs, &format!("{m} on {triple}"));
        }
    }
}

/// Exercises the C API directly: `par == NULL`, `tasks` 0 and 1 without a callback, a refused
/// `par`, a callback that runs the parts in reverse order on one thread (count must be `tasks`,
/// each index once), the pool with more tasks than threads, and a second model in the same
/// program sharing the pool.
const API_DRIVER: &str = r#"
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "wide.h"
#include "mlp.h"
#include "kiln_pool.h"

static void *load(const char *p, size_t n) {
    void *b = aligned_alloc(64, (n + 63) / 64 * 64);
    FILE *f = fopen(p, "rb");
    if (!b || !f || fread(b, 1, n, f) != n) { fprintf(stderr, "cannot read %s\n", p); exit(3); }
    fclose(f);
    return b;
}

static uint32_t last_count, calls, bad_index;
static unsigned char seen[64];
static void reverse_for(void *user, uint32_t count, kiln_task_fn task, void *ctx) {
    uint32_t i;
    (void)user;
    calls++;
    last_count = count;
    memset(seen, 0, sizeof seen);
    for (i = count; i-- > 0;) task(ctx, i), seen[i]++;
    for (i = 0; i < count; i++) if (seen[i] != 1) bad_index = 1;
}

#define NOUT 5
static const size_t out_bytes[NOUT] = { wide_sum_BYTES, wide_relu_BYTES, wide_back_BYTES, wide_kk_BYTES, wide_w_BYTES };

static void fresh(void **o) {
    int i;
    for (i = 0; i < NOUT; i++) { o[i] = aligned_alloc(64, (out_bytes[i] + 63) / 64 * 64); memset(o[i], 0xAB, out_bytes[i]); }
}

static int same(void **a, void **b) {
    int i;
    for (i = 0; i < NOUT; i++) if (memcmp(a[i], b[i], out_bytes[i])) return 0;
    return 1;
}

static int untouched(void **o) {
    int i; size_t j;
    for (i = 0; i < NOUT; i++) for (j = 0; j < out_bytes[i]; j++) if (((unsigned char *)o[i])[j] != 0xAB) return 0;
    return 1;
}

int main(void) {
    void *ins[2] = { load("x.bin", wide_x_BYTES), load("k.bin", wide_k_BYTES) };
    void *arena = aligned_alloc(64, wide_ARENA_SIZE);
    void *ref[NOUT], *o[NOUT];
    kiln_pool *pool = kiln_pool_new(2);
    kiln_parallel par;
    int rc;
    fresh(ref);
    printf("%d", wide_run((const wide_inputs *)ins, (wide_outputs *)ref, arena));

    fresh(o);
    rc = wide_run_parallel((const wide_inputs *)ins, (wide_outputs *)o, arena, NULL);
    printf(" %d %d", rc, same(o, ref));

    par.parallel_for = NULL; par.user = NULL; par.tasks = 0;
    fresh(o);
    rc = wide_run_parallel((const wide_inputs *)ins, (wide_outputs *)o, arena, &par);
    printf(" %d %d", rc, same(o, ref));
    par.tasks = 1;
    fresh(o);
    rc = wide_run_parallel((const wide_inputs *)ins, (wide_outputs *)o, arena, &par);
    printf(" %d %d", rc, same(o, ref));
    par.tasks = 2;
    fresh(o);
    rc = wide_run_parallel((const wide_inputs *)ins, (wide_outputs *)o, arena, &par);
    printf(" %d %d", rc, untouched(o));

    par.parallel_for = reverse_for; par.tasks = 5;
    fresh(o);
    rc = wide_run_parallel((const wide_inputs *)ins, (wide_outputs *)o, arena, &par);
    printf(" %d %d", rc, same(o, ref));
    printf(" %d %u %u", calls > 0, last_count, bad_index);

    par = kiln_pool_parallel(pool);
    par.tasks = 7;
    fresh(o);
    rc = wide_run_parallel((const wide_inputs *)ins, (wide_outputs *)o, arena, &par);
    printf(" %d %d", rc, same(o, ref));

    {
        static float mx[4096], my1[4096], my2[4096]; /* the test checks mlp fits */
        void *mi[1] = { mx }, *m1[1] = { my1 }, *m2[1] = { my2 };
        void *ma = aligned_alloc(64, mlp_ARENA_SIZE);
        int i;
        for (i = 0; i < 4096; i++) mx[i] = (float)(i % 13) / 13.0f;
        par = kiln_pool_parallel(pool);
        printf(" %d", mlp_run((const mlp_inputs *)mi, (mlp_outputs *)m1, ma));
        printf(" %d", mlp_run_parallel((const mlp_inputs *)mi, (mlp_outputs *)m2, ma, &par));
        printf(" %d", !memcmp(my1, my2, sizeof my1));
    }
    kiln_pool_free(pool);
    printf("\n");
    return 0;
}
"#;

#[test]
fn c_api_serial_fallbacks_errors_and_two_models() {
    let dir = tempfile::tempdir().unwrap();
    let model = wide_model(dir.path());
    let (x, k) = wide_inputs();
    for triple in TARGETS {
        let wide = compile_path(&model, "wide", triple);
        let mlp = compile_path(&root().join("tests/models/mlp.onnx"), "mlp", triple);
        let tc = Toolchain::for_target(&wide).unwrap();
        if !tc.available() {
            eprintln!("SKIP {triple}: {} not installed", tc.cc[0]);
            continue;
        }
        // The driver's static buffers hold up to 4096 mlp inputs and outputs.
        let mlp_in: usize = mlp.inputs[0].dims.iter().product();
        let mlp_out: usize = mlp.outputs[0].dims.iter().product();
        assert!(mlp_in <= 4096 && mlp_out <= 4096);
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for c in [&wide, &mlp] {
            std::fs::write(p.join(format!("lib{}.a", c.name)), &c.archive).unwrap();
            std::fs::write(p.join(format!("{}.h", c.name)), &c.header).unwrap();
        }
        std::fs::write(p.join("main.c"), API_DRIVER).unwrap();
        std::fs::write(p.join("x.bin"), f32_bytes(&x)).unwrap();
        std::fs::write(p.join("k.bin"), i64_bytes(&k)).unwrap();
        let exe = p.join("main");
        let out = Command::new(&tc.cc[0])
            .args(&tc.cc[1..])
            .args(["-std=c11", "-O1", "-pthread", "-Wall", "-Wextra", "-Werror"])
            .arg("-I")
            .arg(p)
            .arg("-I")
            .arg(root().join("examples/c"))
            .arg("-o")
            .arg(&exe)
            .arg(p.join("main.c"))
            .arg(p.join("libwide.a"))
            .arg(p.join("libmlp.a"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{triple}: building the driver failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = match tc.run_prefix.split_first() {
            Some((emu, rest)) => {
                let mut c = Command::new(emu);
                c.args(rest).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let run = cmd.current_dir(p).output().unwrap();
        assert!(
            run.status.success(),
            "{triple}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        // run ok; NULL par: ok, same; tasks 0 and 1 without a callback: ok, same; tasks 2 without
        // a callback: ERR_PARALLEL, nothing written; reverse order: ok, same, called, count 5,
        // each index once; pool with 7 tasks on 2 threads: ok, same; mlp serial and parallel: ok,
        // ok, same.
        assert_eq!(
            String::from_utf8_lossy(&run.stdout).trim(),
            "0 0 1 0 1 0 1 4 1 0 1 1 5 0 0 1 0 0 1",
            "{triple}"
        );
    }
}

#[test]
fn c_example_builds_and_runs() {
    for triple in TARGETS {
        let c = compile_path(&root().join("tests/models/cnn.onnx"), "cnn", triple);
        let tc = Toolchain::for_target(&c).unwrap();
        if !tc.available() {
            eprintln!("SKIP {triple}: {} not installed", tc.cc[0]);
            continue;
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("libcnn.a"), &c.archive).unwrap();
        std::fs::write(p.join("cnn.h"), &c.header).unwrap();
        let exe = p.join("classify_parallel");
        let out = Command::new(&tc.cc[0])
            .args(&tc.cc[1..])
            .args([
                "-std=c11",
                "-O2",
                "-pthread",
                "-Wall",
                "-Wextra",
                "-pedantic",
            ])
            .arg("-Werror")
            .arg("-I")
            .arg(p)
            .arg("-I")
            .arg(root().join("examples/c"))
            .arg(root().join("examples/c/classify_parallel.c"))
            .arg(p.join("libcnn.a"))
            .arg("-o")
            .arg(&exe)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{triple}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = match tc.run_prefix.split_first() {
            Some((emu, rest)) => {
                let mut c = Command::new(emu);
                c.args(rest).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let run = cmd.arg("3").output().unwrap();
        let text = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{triple}: {text}");
        assert!(text.contains("threads: 3"), "{triple}: {text}");
        assert!(
            text.contains("identical to cnn_run: yes"),
            "{triple}: {text}"
        );
    }
}
