//! Fused elementwise chains end to end: a graph of separate elementwise nodes goes through kiln's
//! pass pipeline (which fuses it into `fused_ew` nodes), is compiled, linked into a C program and
//! run on x86_64 and (under qemu) aarch64, and its outputs are compared with the reference
//! interpreter run on the *unfused* graph.

mod common;
use common::*;
use kiln_backend::WeightsMode;
use kiln_ir::ops::{BinaryOp, Transpose, UnaryOp};
use kiln_ir::{Op, Tensor};
use kiln_passes::{pipeline, Driver};

/// Computes the reference on the graph as built, runs the pipeline, checks that `fused` nodes
/// were formed, then compiles and compares on every arch.
fn check_fused(mut c: Case, fused: usize) {
    kiln_ir::verify(&c.g).unwrap_or_else(|e| panic!("{} does not verify: {e}", c.g.name));
    let want = reference(&c.g, &c.inputs);
    let driver = Driver {
        verify: true,
        ..Driver::default()
    };
    driver
        .run(&mut c.g, &pipeline())
        .unwrap_or_else(|e| panic!("pipeline on {}: {e}", c.g.name));
    let count =
        c.g.node_ids()
            .into_iter()
            .filter(|&id| matches!(c.g.node(id).op, Op::FusedEw(_)))
            .count();
    assert_eq!(
        count,
        fused,
        "fused_ew nodes in {}:\n{}",
        c.g.name,
        kiln_ir::print(&c.g, Default::default())
    );
    for arch in ARCHES {
        if let Some(got) = run_compiled(&c, arch, WeightsMode::Embedded) {
            compare(&c, arch, &got, &want);
        }
    }
}

fn scalar(c: &mut Case, name: &str, v: f32) -> kiln_ir::Value {
    c.constant(name, Tensor::from_f32(vec![], &[v]))
}

#[test]
fn chain_x_half_plus_one_tanh_times_y() {
    // tanh(x * 0.5 + 1) * y with y broadcast along rows; 3 * 37 elements leave a scalar tail.
    let mut c = Case::new("fused_chain");
    let x = c.x("x", &[3, 37]);
    let y = c.x("y", &[37]);
    let half = scalar(&mut c, "half", 0.5);
    let one = c.constant("one", Tensor::from_f32(vec![1], &[1.0]));
    let a = c.node("scale", Op::Binary(BinaryOp::Mul), &[x, half]);
    let b = c.node("shift", Op::Binary(BinaryOp::Add), &[a, one]);
    let t = c.node("tanh", Op::Unary(UnaryOp::Tanh), &[b]);
    c.out("out", Op::Binary(BinaryOp::Mul), &[t, y]);
    check_fused(c, 1);
}

#[test]
fn per_channel_operands_splat_in_the_inner_loop() {
    // (x * scale[c] + bias[c]) -> clip(0, 6) -> * x: the per-channel constants step by zero along
    // the inner (spatial) dim, and x is read by two members.
    let mut c = Case::new("fused_channels");
    let x = c.x("x", &[2, 3, 5, 7]);
    let scale = c.weight("scale", &[3, 1, 1]);
    let bias = c.weight("bias", &[1, 3, 1, 1]);
    let a = c.node("mul", Op::Binary(BinaryOp::Mul), &[x, scale]);
    let b = c.node("add", Op::Binary(BinaryOp::Add), &[a, bias]);
    let clip = UnaryOp::Clip { min: 0.0, max: 6.0 };
    let d = c.node("clip", Op::Unary(clip), &[b]);
    c.out("gate", Op::Binary(BinaryOp::Mul), &[d, x]);
    check_fused(c, 1);
}

#[test]
fn remainders_run_the_scalar_loop() {
    // fmod has no f32x4 form, so the whole program runs one element at a time.
    let mut c = Case::new("fused_fmod");
    let x = c.x("x", &[4, 9]);
    let three = scalar(&mut c, "three", 3.0);
    let m = scalar(&mut c, "m", 1.7);
    let a = c.node("mul", Op::Binary(BinaryOp::Mul), &[x, three]);
    let b = c.node("fmod", Op::Binary(BinaryOp::Fmod), &[a, m]);
    let d = c.node("abs", Op::Unary(UnaryOp::Abs), &[b]);
    c.out("y", Op::Unary(UnaryOp::Sqrt), &[d]);
    check_fused(c, 1);
}

#[test]
fn large_outputs_take_the_split_loops() {
    // Big enough to be split into parts: one dim (blocks, the last one short) and two dims (rows).
    let mut c = Case::new("fused_large");
    let x = c.x("x", &[40_003]);
    let neg = scalar(&mut c, "neg", -1.0);
    let one = scalar(&mut c, "one", 1.0);
    let a = c.node("mul", Op::Binary(BinaryOp::Mul), &[x, neg]);
    let e = c.node("exp", Op::Unary(UnaryOp::Exp), &[a]);
    let d = c.node("add", Op::Binary(BinaryOp::Add), &[e, one]);
    c.out("sig", Op::Unary(UnaryOp::Reciprocal), &[d]);
    let w = c.x("w", &[3, 12_001]);
    let v = c.x("v", &[12_001]);
    let s = c.node("sub", Op::Binary(BinaryOp::Sub), &[w, v]);
    let q = c.node("sq", Op::Binary(BinaryOp::Mul), &[s, s]);
    c.out("sq_err", Op::Unary(UnaryOp::Neg), &[q]);
    check_fused(c, 2);
}

#[test]
fn intermediate_input_may_share_storage() {
    // The fused node reads an arena value that dies there (the transpose's output), so the planner
    // may give the output the same storage; its result feeds another transpose.
    let mut c = Case::new("fused_inplace");
    let x = c.x("x", &[6, 10]);
    let perm = |p: Vec<usize>| Op::Transpose(Transpose { perm: p });
    let t = c.node("t1", perm(vec![1, 0]), &[x]);
    let k = scalar(&mut c, "k", 0.25);
    let a = c.node("mul", Op::Binary(BinaryOp::Mul), &[t, k]);
    let s = c.node("sin", Op::Unary(UnaryOp::Sin), &[a]);
    let m = c.node("max", Op::Binary(BinaryOp::Max), &[s, t]);
    c.out("y", perm(vec![1, 0]), &[m]);
    check_fused(c, 1);
}

#[test]
fn clif_of_a_small_fused_kernel() {
    // relu(x * k + b[c]) on [2, 3, 6]: the per-row b is splatted once per row, the rows are
    // vectorized with a two-element scalar tail, and the intermediates stay in registers.
    let mut c = Case::new("fused_clif");
    let x = c.x("x", &[2, 3, 6]);
    let b = c.x("b", &[3, 1]);
    let k = scalar(&mut c, "k", 0.5);
    let a = c.node("mul", Op::Binary(BinaryOp::Mul), &[x, k]);
    let s = c.node("add", Op::Binary(BinaryOp::Add), &[a, b]);
    c.out("y", Op::Unary(UnaryOp::Relu), &[s]);
    Driver::default().run(&mut c.g, &pipeline()).unwrap();
    for arch in ARCHES {
        let fs =
            kiln_backend::compile_clif(&c.g, &options("m", arch, WeightsMode::Embedded)).unwrap();
        let text: Vec<String> = fs
            .iter()
            .filter(|f| !f.nodes.is_empty())
            .map(|f| f.annotated())
            .collect();
        let name = match arch {
            Arch::X86_64 => "fused_clif_x86_64",
            Arch::Aarch64 => "fused_clif_aarch64",
        };
        insta::assert_snapshot!(name, text.join("\n"));
    }
}
