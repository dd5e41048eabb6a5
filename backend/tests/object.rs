//! Properties of the emitted object and of `NAME_run`: determinism, symbols, argument checks,
//! several models in one program, the report, and errors for what the backend cannot compile.

mod common;
use common::*;
use kiln_backend::{compile, BackendError, Location, Options, Target, WeightsMode};
use kiln_ir::ops::*;
use kiln_ir::{DType, Op, Tensor, TensorType};
use object::{Object, ObjectSymbol, SymbolScope};

/// A model touching the inline math (exp, log, tanh, erf, pow, sigmoid), rounding, a conv and a
/// gemm: everything that could turn into a libm call.
fn mathy() -> Case {
    let mut c = Case::new("mathy");
    let x = c.input("x", DType::F32, &[2, 9], Gen::Uniform(0.1, 2.0));
    let mut h = x;
    for (i, u) in [
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Tanh,
        UnaryOp::Erf,
        UnaryOp::Sigmoid,
        UnaryOp::Floor,
        UnaryOp::Ceil,
        UnaryOp::Sqrt,
    ]
    .into_iter()
    .enumerate()
    {
        h = c.node(&format!("u{i}"), Op::Unary(u), &[h]);
    }
    let p = c.node("pow", Op::Binary(BinaryOp::Pow), &[x, h]);
    let w = c.weight("w", &[9, 4]);
    let g = c.node(
        "gemm",
        Op::Gemm(Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
            post: vec![],
        }),
        &[p, w],
    );
    c.out(
        "y",
        Op::Softmax(Softmax {
            axis: 1,
            flatten: false,
        }),
        &[g],
    );
    let img = c.x("img", &[1, 2, 5, 5]);
    let k = c.weight("k", &[3, 2, 3, 3]);
    let conv = Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        group: 1,
        post: vec![],
    });
    c.out("conv", conv, &[img, k]);
    c
}

fn targets() -> Vec<Target> {
    vec![
        Target::parse("x86_64-unknown-linux-gnu", "generic", &[]).unwrap(),
        Target::parse("x86_64-unknown-linux-gnu", "x86-64-v3", &[]).unwrap(),
        Target::parse("x86_64-unknown-linux-gnu", "x86-64-v3", &["-fma".into()]).unwrap(),
        Target::parse("aarch64-unknown-linux-gnu", "generic", &[]).unwrap(),
    ]
}

#[test]
fn compiling_twice_gives_identical_bytes() {
    let c = mathy();
    for target in targets() {
        for weights in [WeightsMode::Embedded, WeightsMode::External] {
            let o = Options {
                winograd: kiln_backend::Winograd::Auto,
                name: "m".into(),
                target: target.clone(),
                weights,
                model_file: "m.onnx".into(),
            };
            let a = compile(&c.g, &o).unwrap();
            let b = compile(&c.g, &o).unwrap();
            assert!(
                a.object == b.object,
                "object differs for {}",
                target.describe()
            );
            assert_eq!(a.header, b.header);
            assert_eq!(a.weights_blob, b.weights_blob);
        }
    }
}

#[test]
fn objects_define_everything_and_export_only_the_entries() {
    let c = mathy();
    for target in targets() {
        let o = Options {
            winograd: kiln_backend::Winograd::Auto,
            name: "mathy".into(),
            target: target.clone(),
            weights: WeightsMode::Embedded,
            model_file: "m.onnx".into(),
        };
        let a = compile(&c.g, &o).unwrap();
        let file = object::File::parse(&*a.object).unwrap();
        let mut globals = Vec::new();
        for s in file.symbols() {
            let name = s.name().unwrap();
            assert!(
                !s.is_undefined() || name.is_empty(),
                "{}: undefined symbol {name}",
                target.describe()
            );
            if s.is_global() {
                globals.push(name.to_string());
            }
            if s.kind() == object::SymbolKind::Text || s.kind() == object::SymbolKind::Data {
                assert!(
                    name.starts_with("mathy_"),
                    "symbol {name} lacks the model prefix"
                );
            }
        }
        assert_eq!(
            globals,
            vec!["mathy_run".to_string(), "mathy_run_parallel".to_string()],
            "{}",
            target.describe()
        );
        for name in ["mathy_run", "mathy_run_parallel"] {
            let run = file.symbols().find(|s| s.name() == Ok(name)).unwrap();
            assert_eq!(run.scope(), SymbolScope::Dynamic);
        }
        assert!(file
            .symbols()
            .any(|s| s.name() == Ok("mathy_weights") && s.scope() == SymbolScope::Compilation));
        assert!(a.report.code_bytes > 0);
        assert!(
            a.header.contains(&format!("cpu:      {}", target.cpu)),
            "{}",
            a.header
        );
    }
}

#[test]
fn header_records_settings() {
    let c = mathy();
    let o = Options {
        winograd: kiln_backend::Winograd::Auto,
        name: "m".into(),
        target: Target::parse("x86_64-unknown-linux-gnu", "x86-64-v3", &[]).unwrap(),
        weights: WeightsMode::External,
        model_file: "mathy.onnx".into(),
    };
    let a = compile(&c.g, &o).unwrap();
    assert!(a.header.contains("+avx2"), "{}", a.header);
    assert!(a.header.contains("#define m_WEIGHTS_SIZE"), "{}", a.header);
    assert!(a.header.contains(
        "int m_run(const m_inputs *in, m_outputs *out, void *arena, const void *weights);"
    ));
    let get = |k: &str| {
        a.report
            .settings
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("opt_level").as_deref(), Some("speed"));
    assert_eq!(get("is_pic").as_deref(), Some("true"));
    assert_eq!(get("has_avx").as_deref(), Some("true"));
    assert_eq!(get("has_fma").as_deref(), Some("true"));
    assert_eq!(
        a.report.weight_bytes,
        a.weights_blob.as_ref().unwrap().len()
    );
}

const ERROR_DRIVER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include "m.h"
static int poisoned(const float *p, size_t n) { for (size_t i = 0; i < n; i++) { uint32_t u; memcpy(&u, &p[i], 4); if (u != 0x7f7f7f7fu) return 0; } return 1; }
int main(void) {
    float *x = aligned_alloc(64, 64 * 4), *y = aligned_alloc(64, 64 * 4);
    for (int i = 0; i < 64; i++) x[i] = (float)i - 20.0f;
    memset(y, 0x7f, 64 * 4);
    unsigned char *arena = aligned_alloc(64, m_ARENA_SIZE + 64);
    unsigned char *w = aligned_alloc(64, m_WEIGHTS_SIZE + 64);
    FILE *f = fopen("m.weights.bin", "rb"); if (!f || fread(w, 1, m_WEIGHTS_SIZE, f) != m_WEIGHTS_SIZE) return 90; fclose(f);
    m_inputs in = { x }; m_outputs out = { y };
    m_inputs in_null = { NULL }; m_outputs out_null = { NULL };
    printf("%d", m_run(NULL, &out, arena, w));
    printf(" %d", m_run(&in, NULL, arena, w));
    printf(" %d", m_run(&in_null, &out, arena, w));
    printf(" %d", m_run(&in, &out_null, arena, w));
    printf(" %d", m_run(&in, &out, NULL, w));
    printf(" %d", m_run(&in, &out, arena + 8, w));
    printf(" %d", m_run(&in, &out, arena + 32, w));
    printf(" %d", m_run(&in, &out, arena, NULL));
    printf(" %d", m_run(&in, &out, arena, w + 16));
    printf(" %d", poisoned(y, m_y_SIZE));
    printf(" %d", m_run(&in, &out, arena, w));
    printf(" %d", poisoned(y, m_y_SIZE));
    printf(" %.3f\n", y[0]);
    return 0;
}
"#;

#[test]
fn run_checks_its_arguments() {
    let mut c = Case::new("errors");
    let x = c.x("x", &[40]);
    let w = c.weight("w", &[40]);
    let h = c.node("add", Op::Binary(BinaryOp::Add), &[x, w]);
    let h = c.node("relu", Op::Unary(UnaryOp::Relu), &[h]);
    c.out("y", Op::Unary(UnaryOp::Neg), &[h]);
    let w0 = c.g.const_value(w).unwrap().to_f32_vec()[0];
    let expected_y0 = -((-20.0f32 + w0).max(0.0));
    for arch in ARCHES {
        if let Err(why) = arch.toolchain() {
            println!("skipping {arch:?}: {why}");
            continue;
        }
        let a = compile(&c.g, &options("m", arch, WeightsMode::External)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_artifact(dir.path(), "m", &a);
        std::fs::write(dir.path().join("main.c"), ERROR_DRIVER).unwrap();
        let (code, out, err) = build_and_run(dir.path(), arch, &["m.o"]);
        assert_eq!(code, 0, "{err}");
        // null in, null out, null input, null output, null arena, arena +8, arena +32, null weights,
        // weights +16, nothing written, success, written, value.
        assert_eq!(
            out.trim(),
            format!("1 1 1 1 2 2 2 3 3 1 0 0 {expected_y0:.3}"),
            "{arch:?}"
        );
    }
}

#[test]
fn two_models_link_into_one_program() {
    let mut a = Case::new("model_a");
    let x = a.x("x", &[3, 5]);
    let w = a.weight("w", &[5, 4]);
    let h = a.node("mm", Op::MatMul, &[x, w]);
    a.out("y", Op::Unary(UnaryOp::Tanh), &[h]);
    let mut b = Case::new("model_b");
    let x = b.x("x", &[2, 6]);
    let w = b.weight("w", &[6]);
    let h = b.node("mul", Op::Binary(BinaryOp::Mul), &[x, w]);
    b.out("y", Op::Unary(UnaryOp::Relu), &[h]);
    for arch in ARCHES {
        if let Err(why) = arch.toolchain() {
            println!("skipping {arch:?}: {why}");
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut main = String::from(DRIVER_PRELUDE);
        for (name, case) in [("ma", &a), ("mb", &b)] {
            let art = compile(&case.g, &options(name, arch, WeightsMode::Embedded)).unwrap();
            write_artifact(dir.path(), name, &art);
            for (i, t) in case.inputs.iter().enumerate() {
                std::fs::write(dir.path().join(format!("{name}_in{i}.bin")), t.bytes()).unwrap();
            }
            main.push_str(&format!("#include \"{name}.h\"\n"));
            main.push_str(&driver_fragment(name, &case.g, false));
        }
        main.push_str("int main(void) { int r = run_ma(); if (r) return r; return run_mb(); }\n");
        std::fs::write(dir.path().join("main.c"), main).unwrap();
        let (code, _, err) = build_and_run(dir.path(), arch, &["ma.o", "mb.o"]);
        assert_eq!(code, 0, "{err}");
        for (name, case) in [("ma", &a), ("mb", &b)] {
            let got = vec![std::fs::read(dir.path().join(format!("{name}_out0.bin"))).unwrap()];
            compare(case, arch, &got, &reference(&case.g, &case.inputs));
        }
    }
}

#[test]
fn report_shows_views_inplace_and_weights() {
    let mut c = Case::new("report");
    let x = c.x("x", &[4, 8]);
    let w = c.weight("w", &[8, 8]);
    let mm = c.node("mm", Op::MatMul, &[x, w]);
    let t = c.node("tanh", Op::Unary(UnaryOp::Tanh), &[mm]);
    let n = c.node("neg", Op::Unary(UnaryOp::Neg), &[t]);
    let f = c.node("flat", Op::Flatten(Flatten { axis: 0 }), &[n]);
    c.out("y", Op::Unary(UnaryOp::Exp), &[f]);
    let dup = c.constant("w_again", c.g.const_value(w).unwrap().clone());
    let mm2 = c.node("mm2", Op::MatMul, &[x, dup]);
    c.output("z", mm2);
    let a = compile(&c.g, &options("m", Arch::X86_64, WeightsMode::Embedded)).unwrap();
    let loc = |v: &str| {
        a.report
            .tensors
            .iter()
            .find(|t| t.value == v)
            .unwrap_or_else(|| panic!("no {v}"))
            .location
            .clone()
    };
    assert_eq!(loc("x"), Location::Input { index: 0 });
    assert_eq!(loc("y"), Location::Output { index: 0 });
    assert_eq!(loc("mm2"), Location::Output { index: 1 });
    assert_eq!(loc("flat"), Location::View { of: "neg".into() });
    // tanh and neg are elementwise over a dying input: all three share one buffer.
    let Location::Arena { offset } = loc("mm") else {
        panic!("mm not in the arena")
    };
    assert_eq!(loc("tanh"), Location::Arena { offset });
    assert_eq!(loc("neg"), Location::Arena { offset });
    assert_eq!(a.report.arena_bytes, 4 * 8 * 4);
    // A constant right operand lives only in its packed form (8 columns: one panel, no padding),
    // and the identical packed copies of `w` and `w_again` are stored once.
    assert_eq!(loc("w"), Location::Folded);
    assert_eq!(loc("w_again"), Location::Folded);
    assert_eq!(a.report.weight_bytes, 8 * 8 * 4);
}

#[test]
fn unsupported_nodes_are_all_listed() {
    let mut g = kiln_ir::Graph::new("bad");
    // Packed 4-bit tensors are not moved around (only cast).
    let x = g.add_input("x", TensorType::new(DType::I4, &[4, 2]));
    let perm = Op::Transpose(Transpose { perm: vec![1, 0] });
    let y = g.add_node("t4", perm, &[Some(x)], &["y"]).unwrap()[0];
    // Average pooling runs on f32 only (f16 convolution and max pooling have a generic kernel).
    let h = g.add_input("h", TensorType::new(DType::F16, &[1, 1, 4, 4]));
    let pool = Op::Pool(kiln_ir::ops::Pool {
        layout: kiln_ir::ops::Layout::Nchw,
        kind: kiln_ir::ops::PoolKind::Avg,
        kernel_shape: vec![3, 3],
        strides: vec![1, 1],
        pads: vec![0; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
        count_include_pad: false,
    });
    let z = g.add_node("pool16", pool, &[Some(h)], &["z"]).unwrap()[0];
    g.outputs = vec![("y".into(), y), ("z".into(), z)];
    let err = compile(&g, &options("m", Arch::X86_64, WeightsMode::Embedded)).unwrap_err();
    let BackendError::Many(list) = &err else {
        panic!("expected several errors, got {err}")
    };
    assert_eq!(list.len(), 2);
    let text = err.to_string();
    assert!(
        text.contains("node \"t4\" (transpose): unsupported: transpose of i4"),
        "{text}"
    );
    assert!(text.contains("node \"pool16\" (avg_pool)"), "{text}");
}

#[test]
fn floor_compiles_without_sse41_and_names_are_checked() {
    let mut c = Case::new("floor");
    let x = c.x("x", &[4]);
    c.out("y", Op::Unary(UnaryOp::Floor), &[x]);
    let t = Target::parse("x86_64-unknown-linux-gnu", "x86-64", &[]).unwrap();
    let o = Options {
        winograd: kiln_backend::Winograd::Auto,
        name: "m".into(),
        target: t,
        weights: WeightsMode::Embedded,
        model_file: String::new(),
    };
    // Without SSE4.1 `floor` would be a libcall; the kernel rounds with a magic constant instead
    // (and the backend's undefined-symbol check would reject any call).
    if let Err(e) = compile(&c.g, &o) {
        panic!("floor on x86-64 without SSE4.1: {e}");
    }
    let mut o = options("m", Arch::X86_64, WeightsMode::Embedded);
    o.name = "not a name".into();
    assert!(matches!(compile(&c.g, &o), Err(BackendError::Options(_))));
}

#[test]
fn gather_clamps_out_of_range_runtime_indices() {
    let mut c = Case::new("clamp");
    let data = c.constant(
        "data",
        Tensor::from_f32(vec![3, 2], &[10.0, 11.0, 20.0, 21.0, 30.0, 31.0]),
    );
    let idx = c.input("idx", DType::I64, &[5], Gen::Ints(0, 0));
    c.inputs[0] = Tensor::from_i64(DType::I64, vec![5], &[-100, -1, 0, 2, 100]);
    c.out("rows", Op::Gather(Gather { axis: 0 }), &[data, idx]);
    // -100 wraps to -97 and clamps to row 0; -1 is row 2; 100 clamps to row 2.
    let want = Tensor::from_f32(
        vec![5, 2],
        &[10.0, 11.0, 30.0, 31.0, 10.0, 11.0, 30.0, 31.0, 30.0, 31.0],
    );
    for arch in ARCHES {
        if let Some(got) = run_compiled(&c, arch, WeightsMode::Embedded) {
            assert_eq!(got[0], want.bytes(), "{arch:?}");
        }
    }
}
