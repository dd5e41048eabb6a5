//! Snapshots of the CLIF a few small kernels lower to, per target (the CLIF as built, before
//! Cranelift optimizes it). They freeze loop structure, memory flags and the FMA choice: x86-64-v2
//! has no FMA, so products are `fmul` + `fadd`; aarch64 fuses them.

mod common;
use common::*;
use kiln_backend::{compile_clif, WeightsMode};
use kiln_ir::ops::{BinaryOp, UnaryOp};
use kiln_ir::Op;

fn clif(case: &Case, arch: Arch, with_entry: bool) -> String {
    let fs = compile_clif(&case.g, &options("m", arch, WeightsMode::Embedded)).unwrap();
    fs.iter()
        .filter(|f| with_entry || !f.nodes.is_empty())
        .map(|f| f.annotated())
        .collect::<Vec<_>>()
        .join("\n")
}

fn arch_name(a: Arch) -> &'static str {
    match a {
        Arch::X86_64 => "x86_64",
        Arch::Aarch64 => "aarch64",
    }
}

#[test]
fn relu_f32_8() {
    let mut c = Case::new("relu");
    let x = c.x("x", &[8]);
    c.out("y", Op::Unary(UnaryOp::Relu), &[x]);
    for a in ARCHES {
        insta::assert_snapshot!(format!("relu_f32_8_{}", arch_name(a)), clif(&c, a, true));
    }
}

#[test]
fn add_broadcast_2x5_plus_5() {
    let mut c = Case::new("add");
    let x = c.x("x", &[2, 5]);
    let b = c.x("b", &[5]);
    c.out("y", Op::Binary(BinaryOp::Add), &[x, b]);
    for a in ARCHES {
        insta::assert_snapshot!(
            format!("add_broadcast_{}", arch_name(a)),
            clif(&c, a, false)
        );
    }
}

#[test]
fn matmul_2x3_by_3x4() {
    let mut c = Case::new("gemm");
    let x = c.x("x", &[2, 3]);
    let w = c.weight("w", &[3, 4]);
    c.out("y", Op::MatMul, &[x, w]);
    for a in ARCHES {
        insta::assert_snapshot!(format!("matmul_2x3x4_{}", arch_name(a)), clif(&c, a, false));
    }
}

#[test]
fn identical_kernels_are_shared() {
    let mut c = Case::new("shared");
    let x = c.x("x", &[8]);
    let a = c.node("r1", Op::Unary(UnaryOp::Relu), &[x]);
    let b = c.node("r2", Op::Unary(UnaryOp::Relu), &[a]);
    c.output("y", b);
    let fs = compile_clif(&c.g, &options("m", Arch::X86_64, WeightsMode::Embedded)).unwrap();
    let kernels: Vec<_> = fs.iter().filter(|f| !f.nodes.is_empty()).collect();
    assert_eq!(kernels.len(), 1);
    assert_eq!(
        kernels[0].nodes,
        vec![
            "node \"r1\" (relu)".to_string(),
            "node \"r2\" (relu)".to_string()
        ]
    );
}
