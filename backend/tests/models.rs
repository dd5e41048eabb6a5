//! Small whole models, end to end on both targets.

mod common;
use common::*;
use kiln_backend::WeightsMode;
use kiln_ir::ops::*;
use kiln_ir::{DType, Op, Tensor, Value};

fn relu(c: &mut Case, name: &str, x: Value) -> Value {
    c.node(name, Op::Unary(UnaryOp::Relu), &[x])
}

/// 784 -> 64 -> 32 -> 10 with ReLU and softmax, batch 3: Gemm layers with transposed constant
/// weights, then a MatMul + Add layer.
fn mlp() -> Case {
    let mut c = Case::new("mlp");
    let x = c.input("x", DType::F32, &[3, 784], Gen::Uniform(0.0, 1.0));
    let w1 = c.random(DType::F32, &[64, 784], Gen::Uniform(-0.05, 0.05));
    let w1 = c.constant("w1", w1);
    let b1 = c.weight("b1", &[64]);
    let h = c.node(
        "fc1",
        Op::Gemm(Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
            post: vec![],
        }),
        &[x, w1, b1],
    );
    let h = relu(&mut c, "relu1", h);
    let w2 = c.random(DType::F32, &[32, 64], Gen::Uniform(-0.2, 0.2));
    let w2 = c.constant("w2", w2);
    let b2 = c.weight("b2", &[32]);
    let h = c.node(
        "fc2",
        Op::Gemm(Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
            post: vec![],
        }),
        &[h, w2, b2],
    );
    let h = relu(&mut c, "relu2", h);
    let w3 = c.weight("w3", &[32, 10]);
    let b3 = c.weight("b3", &[10]);
    let h = c.node("fc3", Op::MatMul, &[h, w3]);
    let h = c.node("fc3_bias", Op::Binary(BinaryOp::Add), &[h, b3]);
    c.out(
        "probs",
        Op::Softmax(Softmax {
            axis: 1,
            flatten: false,
        }),
        &[h],
    );
    c
}

/// conv -> batch_norm -> relu -> max_pool -> conv (grouped, strided) -> relu -> global_avg_pool ->
/// flatten -> gemm -> softmax, on a 1x3x17x15 image.
fn cnn() -> Case {
    let mut c = Case::new("cnn");
    let x = c.x("image", &[1, 3, 17, 15]);
    let w = c.weight("conv1.w", &[8, 3, 3, 3]);
    let b = c.weight("conv1.b", &[8]);
    let conv1 = Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        group: 1,
        post: vec![],
    });
    let h = c.node("conv1", conv1, &[x, w, b]);
    let scale = c.weight("bn.scale", &[8]);
    let bias = c.weight("bn.bias", &[8]);
    let mean = c.weight("bn.mean", &[8]);
    let var = c.random(DType::F32, &[8], Gen::Uniform(0.5, 1.5));
    let var = c.constant("bn.var", var);
    let h = c.node(
        "bn",
        Op::BatchNorm(BatchNorm { epsilon: 1e-5 }),
        &[h, scale, bias, mean, var],
    );
    let h = relu(&mut c, "relu1", h);
    let pool = Op::Pool(Pool {
        layout: kiln_ir::ops::Layout::Nchw,
        kind: PoolKind::Max,
        kernel_shape: vec![2, 2],
        strides: vec![2, 2],
        pads: vec![0, 0, 0, 0],
        dilations: vec![1, 1],
        ceil_mode: true,
        count_include_pad: false,
    });
    let h = c.node("pool", pool, &[h]);
    let w = c.weight("conv2.w", &[16, 4, 3, 3]);
    let conv2 = Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: vec![3, 3],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        group: 2,
        post: vec![],
    });
    let h = c.node("conv2", conv2, &[h, w]);
    let h = relu(&mut c, "relu2", h);
    let h = c.node(
        "gap",
        Op::GlobalPool(GlobalPool {
            layout: kiln_ir::ops::Layout::Nchw,
            kind: PoolKind::Avg,
        }),
        &[h],
    );
    let h = c.node("flatten", Op::Flatten(Flatten { axis: 1 }), &[h]);
    let w = c.weight("fc.w", &[5, 16]);
    let b = c.weight("fc.b", &[5]);
    let h = c.node(
        "fc",
        Op::Gemm(Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
            post: vec![],
        }),
        &[h, w, b],
    );
    c.out(
        "probs",
        Op::Softmax(Softmax {
            axis: 1,
            flatten: false,
        }),
        &[h],
    );
    c
}

#[test]
fn mlp_end_to_end() {
    check(&mlp());
}

#[test]
fn cnn_end_to_end() {
    let c = cnn();
    check(&c);
    check_mode(&c, WeightsMode::External);
}

/// Integer index plumbing feeding float compute: gather rows by computed indices.
#[test]
fn embedding_bag() {
    let mut c = Case::new("embedding_bag");
    let ids = c.input("ids", DType::I64, &[2, 4], Gen::Ints(0, 9));
    let table = c.weight("table", &[10, 8]);
    let one = c.constant("one", Tensor::from_i64(DType::I64, vec![], &[1]));
    let shifted = c.node("shift", Op::Binary(BinaryOp::Sub), &[ids, one]);
    let e = c.node("lookup", Op::Gather(Gather { axis: 0 }), &[table, shifted]);
    let t = c.node(
        "t",
        Op::Transpose(Transpose {
            perm: vec![0, 2, 1],
        }),
        &[e],
    );
    let r = c.node(
        "r",
        Op::Reshape(Reshape {
            shape: vec![2, 8, 2, 2],
            allowzero: false,
        }),
        &[t],
    );
    let p = c.node(
        "p",
        Op::GlobalPool(GlobalPool {
            layout: kiln_ir::ops::Layout::Nchw,
            kind: PoolKind::Max,
        }),
        &[r],
    );
    c.out("pooled", Op::Squeeze(Squeeze { axes: vec![2, 3] }), &[p]);
    check(&c);
}

/// The FMA/AVX variants of the kernels (x86-64-v3, and whatever `native` finds), run natively when
/// this machine has those features.
#[test]
fn cnn_and_mlp_with_x86_64_v3_and_native() {
    #[cfg(target_arch = "x86_64")]
    {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            println!("skipping: this x86_64 host has no AVX2+FMA");
            return;
        }
        for cpu in ["x86-64-v3", "native"] {
            for case in [cnn(), mlp()] {
                let mut o = options("m", Arch::X86_64, WeightsMode::Embedded);
                o.target = kiln_backend::Target::parse(Arch::X86_64.triple(), cpu, &[]).unwrap();
                let want = reference(&case.g, &case.inputs);
                if let Some(got) = run_with(&case, Arch::X86_64, &o) {
                    compare(&case, Arch::X86_64, &got, &want);
                }
            }
        }
    }
}
