//! Conv and Gemm with a fused activation chain (`post`): compiled, linked into a C program and run on
//! x86_64 and (under qemu) aarch64, compared with the reference evaluator, which applies the chain
//! as separate elementwise ops would.

mod common;
use common::*;
use kiln_backend::{compile, BackendError, WeightsMode};
use kiln_ir::ops::{BinaryOp, Conv, Gemm, UnaryOp};
use kiln_ir::{DType, Op, Tensor};
use kiln_passes::{pipeline, Driver};

fn conv(k: usize, stride: usize, group: usize, post: Vec<UnaryOp>) -> Op {
    Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: vec![k, k],
        strides: vec![stride; 2],
        dilations: vec![1, 1],
        pads: vec![k / 2; 4],
        group,
        post,
    })
}

#[test]
fn conv_paths_apply_post() {
    let mut c = Case::new("conv_post");
    let x = c.x("x", &[1, 4, 7, 7]);
    // im2col path with relu6.
    let w = c.weight("w3", &[6, 4, 3, 3]);
    let b = c.weight("b3", &[6]);
    let relu6 = UnaryOp::Clip { min: 0.0, max: 6.0 };
    c.out("im2col", conv(3, 2, 1, vec![relu6]), &[x, w, b]);
    // Pointwise path (the input is the column matrix) with a two-op chain and no bias.
    let w = c.weight("w1", &[5, 4, 1, 1]);
    c.out(
        "pointwise",
        conv(1, 1, 1, vec![UnaryOp::HardSwish, UnaryOp::Silu]),
        &[x, w],
    );
    // Grouped.
    let w = c.weight("wg", &[4, 2, 3, 3]);
    let b = c.weight("bg", &[4]);
    c.out(
        "grouped",
        conv(
            3,
            1,
            2,
            vec![
                UnaryOp::Gelu { tanh: true },
                UnaryOp::LeakyRelu { alpha: 0.1 },
            ],
        ),
        &[x, w, b],
    );
    check(&c);
}

#[test]
fn depthwise_conv_applies_post() {
    let mut c = Case::new("dw_post");
    let x = c.x("x", &[1, 8, 9, 9]);
    let w = c.weight("w", &[8, 1, 3, 3]);
    let b = c.weight("b", &[8]);
    let post = vec![
        UnaryOp::Clip { min: 0.0, max: 6.0 },
        UnaryOp::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
    ];
    c.out("dw", conv(3, 1, 8, post.clone()), &[x, w, b]);
    c.out("dw_s2", conv(3, 2, 8, vec![UnaryOp::Silu]), &[x, w, b]);
    check(&c);
}

#[test]
fn gemm_applies_post() {
    let mut c = Case::new("gemm_post");
    let a = c.x("a", &[3, 10]);
    let bw = c.weight("b", &[7, 10]);
    let cb = c.weight("c", &[7]);
    let op = |post| {
        Op::Gemm(Gemm {
            alpha: 1.0,
            beta: 0.5,
            trans_a: false,
            trans_b: true,
            post,
        })
    };
    c.out(
        "sig_tanh",
        op(vec![UnaryOp::Sigmoid, UnaryOp::Tanh]),
        &[a, bw, cb],
    );
    c.out("relu", op(vec![UnaryOp::Relu]), &[a, bw]);
    check(&c);
}

fn gemm(alpha: f32, beta: f32, post: Vec<UnaryOp>) -> Op {
    Op::Gemm(Gemm {
        alpha,
        beta,
        trans_a: false,
        trans_b: false,
        post,
    })
}

#[test]
fn gemm_epilogue_forms_cover_partial_tiles() {
    // The two epilogue forms on shapes with every kind of partial tile: 13 rows (two row tiles of 6
    // on x86 plus one row, one tile of 8 plus 5 on aarch64), 11 columns (a full tile and 3 columns:
    // a 3-lane vector from packed B, three scalar columns from strided B), and k = 800 (two k
    // blocks: partial sums stored and reloaded before the epilogue). Relu and clip run on the
    // accumulators in registers, sigmoid and silu over the stored tile; both load their constants
    // and C from memory.
    let mut c = Case::new("gemm_epi_forms");
    let (m, k, n) = (13, 800, 11);
    let a = c.x("a", &[m, k]);
    let bw = c.weight("bw", &[k, n]);
    let bx = c.x("bx", &[k, n]);
    let c_full = c.x("c_full", &[m, n]);
    let c_row = c.weight("c_row", &[n]);
    let c_col = c.weight("c_col", &[m, 1]);
    let clip = UnaryOp::Clip {
        min: -0.5,
        max: 0.75,
    };
    c.out(
        "relu_w",
        gemm(0.5, -1.0, vec![UnaryOp::Relu]),
        &[a, bw, c_full],
    );
    c.out(
        "clip_x",
        gemm(1.0, 1.0, vec![clip, UnaryOp::Relu]),
        &[a, bx, c_row],
    );
    c.out(
        "silu_w",
        gemm(0.25, 2.0, vec![UnaryOp::Silu]),
        &[a, bw, c_col],
    );
    c.out(
        "sig_x",
        gemm(1.0, 0.5, vec![clip, UnaryOp::Sigmoid]),
        &[a, bx, c_full],
    );
    c.out("tanh_noc", gemm(0.5, 1.0, vec![UnaryOp::Tanh]), &[a, bx]);
    c.atol = 1e-4;
    check(&c);
}

#[test]
fn pipeline_fuses_and_compiled_result_matches_unfused_reference() {
    // conv -> add per-channel constant -> clip; depthwise conv -> mul(x, sigmoid(x)); gemm -> add
    // -> hard swish. The adds fold into the biases, the clip joins the conv's epilogue and the silu
    // the depthwise conv; the hard swish after the gemm microkernel stays a separate loop (see
    // `FuseActivation`).
    let mut c = Case::new("fuse_e2e");
    let x = c.x("x", &[1, 3, 8, 8]);
    let w = c.weight("w", &[6, 3, 3, 3]);
    let y = c.node("conv", conv(3, 1, 1, vec![]), &[x, w]);
    let shift = c.weight("shift", &[1, 6, 1, 1]);
    let y = c.node("add", Op::Binary(BinaryOp::Add), &[y, shift]);
    let y = c.out(
        "relu6",
        Op::Unary(UnaryOp::Clip { min: 0.0, max: 6.0 }),
        &[y],
    );
    let wd = c.weight("wd", &[6, 1, 3, 3]);
    let d = c.node("dw", conv(3, 1, 6, vec![]), &[y, wd]);
    let s = c.node("dsig", Op::Unary(UnaryOp::Sigmoid), &[d]);
    c.out("dswish", Op::Binary(BinaryOp::Mul), &[s, d]);
    let a = c.x("a", &[2, 5]);
    let bw = c.weight("bw", &[5, 4]);
    let g = c.node(
        "gemm",
        Op::Gemm(Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
            post: vec![],
        }),
        &[a, bw],
    );
    let bias = c.weight("bias", &[4]);
    let g = c.node("gadd", Op::Binary(BinaryOp::Add), &[g, bias]);
    c.out("hswish", Op::Unary(UnaryOp::HardSwish), &[g]);
    let want = reference(&c.g, &c.inputs);
    let driver = Driver {
        verify: true,
        ..Driver::default()
    };
    driver.run(&mut c.g, &pipeline()).unwrap();
    let ops: Vec<Op> =
        c.g.node_ids()
            .into_iter()
            .map(|id| c.g.node(id).op.clone())
            .collect();
    let text = kiln_ir::print(&c.g, Default::default());
    assert!(
        !ops.contains(&Op::Binary(BinaryOp::Add)) && !ops.contains(&Op::Binary(BinaryOp::Mul)),
        "{text}"
    );
    assert!(
        ops.iter()
            .any(|op| matches!(op, Op::Conv(cv) if cv.group == 6 && cv.post == [UnaryOp::Silu])),
        "{text}"
    );
    assert!(
        ops.iter()
            .any(|op| matches!(op, Op::Conv(cv) if cv.group == 1
            && cv.post == [UnaryOp::Clip { min: 0.0, max: 6.0 }])),
        "{text}"
    );
    assert!(ops.contains(&Op::Unary(UnaryOp::HardSwish)), "{text}");
    for arch in ARCHES {
        if let Some(got) = run_compiled(&c, arch, WeightsMode::Embedded) {
            compare(&c, arch, &got, &want);
        }
    }
}

#[test]
fn non_f32_conv_with_post_is_refused() {
    let mut c = Case::new("f16_post");
    let x = c.input("x", DType::F16, &[1, 2, 4, 4], Gen::Uniform(-1.0, 1.0));
    let w = c.constant(
        "w",
        Tensor::from_f64(DType::F16, vec![2, 2, 1, 1], &[1.0, 0.5, -0.5, 1.0]),
    );
    c.out("conv", conv(1, 1, 1, vec![UnaryOp::Relu]), &[x, w]);
    let err = compile(&c.g, &options("m", Arch::X86_64, WeightsMode::Embedded)).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, BackendError::Unsupported { .. }) || text.contains("unsupported"),
        "{text}"
    );
    assert!(text.contains("post"), "{text}");
}
