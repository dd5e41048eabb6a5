//! Graph builders shared by the integration tests.
#![allow(dead_code)]

use half::f16;
use kiln_ir::ops::{
    BatchNorm, Cast, Concat, Conv, Flatten, Gather, Gemm, GlobalPool, Pool, PoolKind, Reshape,
    ShapeOf,
};
use kiln_ir::ops::{BinaryOp, Slice, Softmax, Squeeze, Transpose, UnaryOp, Unsqueeze};
use kiln_ir::{DType, Dim, Graph, Op, Tensor, TensorType, Value};

/// `n` deterministic, varied f32 values (negatives, fractions) for weights.
pub fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) * scale)
        .collect()
}

pub fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(shape.to_vec(), v)
}

/// Adds a node, panicking with the error (tests only).
pub fn node(g: &mut Graph, name: &str, op: Op, ins: &[Option<Value>]) -> Value {
    g.add_node(name, op, ins, &[])
        .unwrap_or_else(|e| panic!("{e}"))[0]
}

pub fn conv(k: usize, pad: usize, stride: usize, group: usize) -> Op {
    Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: vec![k, k],
        strides: vec![stride; 2],
        dilations: vec![1, 1],
        pads: vec![pad; 4],
        group,
        post: vec![],
    })
}

pub fn gemm(trans_b: bool) -> Op {
    Op::Gemm(Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b,
        post: vec![],
    })
}

/// x[1,4] -> matmul -> add -> relu -> gemm -> softmax.
pub fn mlp() -> Graph {
    let mut g = Graph::new("mlp");
    let x = g.add_input("x", TensorType::new(DType::F32, &[1, 4]));
    let w1 = g.add_const("fc1.weight", f32t(&[4, 3], &ramp(12, 0.25)));
    let b1 = g.add_const("fc1.bias", f32t(&[3], &[0.5, -0.25, 1e-3]));
    let w2 = g.add_const("fc2.weight", f32t(&[2, 3], &ramp(6, 0.5)));
    let b2 = g.add_const("fc2.bias", f32t(&[2], &[0.0, -1.5]));
    let h = node(&mut g, "/fc1/MatMul", Op::MatMul, &[Some(x), Some(w1)]);
    let h = node(
        &mut g,
        "/fc1/Add",
        Op::Binary(BinaryOp::Add),
        &[Some(h), Some(b1)],
    );
    let h = node(&mut g, "/act/Relu", Op::Unary(UnaryOp::Relu), &[Some(h)]);
    let y = node(
        &mut g,
        "/fc2/Gemm",
        gemm(true),
        &[Some(h), Some(w2), Some(b2)],
    );
    let p = node(
        &mut g,
        "/Softmax",
        Op::Softmax(Softmax {
            axis: 1,
            flatten: false,
        }),
        &[Some(y)],
    );
    g.outputs.push(("probs".into(), p));
    g
}

/// x[1,3,8,8] -> conv -> batch_norm -> relu -> max_pool -> global_avg_pool -> flatten -> gemm.
pub fn cnn() -> Graph {
    let mut g = Graph::new("cnn");
    let x = g.add_input("image", TensorType::new(DType::F32, &[1, 3, 8, 8]));
    let w = g.add_const("conv.weight", f32t(&[4, 3, 3, 3], &ramp(108, 0.125)));
    let b = g.add_const("conv.bias", f32t(&[4], &[0.0, 0.5, -0.5, 1.0]));
    let scale = g.add_const("bn.scale", f32t(&[4], &[1.0, 2.0, 0.5, 1.5]));
    let bias = g.add_const("bn.bias", f32t(&[4], &[0.0, 0.1, -0.1, 0.2]));
    let mean = g.add_const("bn.mean", f32t(&[4], &[0.25, 0.0, -0.25, 1.0]));
    let var = g.add_const("bn.var", f32t(&[4], &[1.0, 0.5, 2.0, 0.25]));
    let fw = g.add_const("fc.weight", f32t(&[2, 4], &ramp(8, 0.5)));
    let fb = g.add_const("fc.bias", f32t(&[2], &[0.25, -0.25]));
    let h = node(
        &mut g,
        "/conv1/Conv",
        conv(3, 1, 1, 1),
        &[Some(x), Some(w), Some(b)],
    );
    let h = node(
        &mut g,
        "/bn1/BatchNormalization",
        Op::BatchNorm(BatchNorm { epsilon: 1e-5 }),
        &[Some(h), Some(scale), Some(bias), Some(mean), Some(var)],
    );
    let h = node(&mut g, "/relu/Relu", Op::Unary(UnaryOp::Relu), &[Some(h)]);
    let pool = Pool {
        layout: kiln_ir::ops::Layout::Nchw,
        kind: PoolKind::Max,
        kernel_shape: vec![2, 2],
        strides: vec![2, 2],
        pads: vec![0; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
        count_include_pad: false,
    };
    let h = node(&mut g, "/pool/MaxPool", Op::Pool(pool), &[Some(h)]);
    let h = node(
        &mut g,
        "/gap/GlobalAveragePool",
        Op::GlobalPool(GlobalPool {
            layout: kiln_ir::ops::Layout::Nchw,
            kind: PoolKind::Avg,
        }),
        &[Some(h)],
    );
    let h = node(
        &mut g,
        "/Flatten",
        Op::Flatten(Flatten { axis: 1 }),
        &[Some(h)],
    );
    let y = node(
        &mut g,
        "/fc/Gemm",
        gemm(true),
        &[Some(h), Some(fw), Some(fb)],
    );
    g.outputs.push(("logits".into(), y));
    g
}

/// A graph that uses every `Op` variant (and every unary and binary op), constants of many dtypes,
/// values used several times, absent optional inputs, a symbolic dim and awkward names.
pub fn every_op() -> Graph {
    let mut g = Graph::new("every \"op\"\n");
    let x = g.add_input("x", TensorType::new(DType::F32, &[1, 2, 4, 4]));
    let ids = g.add_input("ids", TensorType::new(DType::I64, &[3]));
    let sym = g.add_input(
        "seq",
        TensorType {
            dtype: DType::F32,
            shape: vec![
                Dim::Sym {
                    name: "batch".into(),
                    max: None,
                },
                Dim::Sym {
                    name: "len".into(),
                    max: Some(128),
                },
            ],
        },
    );
    let _ = node(&mut g, "sym relu", Op::Unary(UnaryOp::Relu), &[Some(sym)]);

    // Constants of several dtypes, with negative, infinite and NaN floats.
    let mut wv = ramp(36, 0.25);
    wv[3] = f32::INFINITY;
    wv[4] = f32::NEG_INFINITY;
    wv[5] = -0.0;
    wv[6] = 1e-30;
    wv[7] = 3.4e38;
    let w = g.add_const("w", f32t(&[2, 2, 3, 3], &wv));
    let h16 = g.add_const(
        "h16",
        Tensor::from_f64(
            DType::F16,
            vec![2],
            &[f16::from_f32(0.1).to_f64(), -65504.0],
        ),
    );
    let bf = g.add_const(
        "bf",
        Tensor::from_f64(DType::BF16, vec![2], &[1.5, f64::NEG_INFINITY]),
    );
    let f64c = g.add_const(
        "f64",
        Tensor::from_f64(DType::F64, vec![3], &[0.1, -1e300, f64::NAN]),
    );
    let nan32 = g.add_const("nan32", f32t(&[1], &[f32::NAN]));
    let i64c = g.add_const("idx", Tensor::from_i64(DType::I64, vec![2], &[-1, 0]));
    let i8c = g.add_const("i8", Tensor::from_i64(DType::I8, vec![2], &[-128, 127]));
    let u8c = g.add_const("u8", Tensor::from_i64(DType::U8, vec![2], &[0, 255]));
    let u64c = g.add_const("u64", Tensor::from_i64(DType::U64, vec![1], &[-1]));
    let boolc = g.add_const("bool", Tensor::from_i64(DType::Bool, vec![2], &[1, 0]));
    let i4c = g.add_const("i4", Tensor::from_i64(DType::I4, vec![3], &[-8, 7, -1]));
    let u4c = g.add_const("u4", Tensor::from_i64(DType::U4, vec![3], &[0, 15, 9]));
    let i32s = g.add_const("i32 scalar", Tensor::from_i64(DType::I32, vec![], &[-7]));
    let empty = g.add_const("empty", Tensor::from_f64(DType::F32, vec![0, 3], &[]));
    for c in [
        h16, bf, f64c, nan32, i8c, u8c, u64c, boolc, i4c, u4c, i32s, empty,
    ] {
        let name = format!("id {}", g.value_name(c));
        let v = node(&mut g, &name, Op::Identity, &[Some(c)]);
        g.outputs.push((name, v));
    }

    // Conv without bias (absent optional input), used by several consumers.
    let c = node(&mut g, "conv", conv(3, 1, 1, 1), &[Some(x), Some(w)]);
    let dw = g.add_const("dw", f32t(&[2, 1, 3, 3], &ramp(18, 0.5)));
    let cg = node(&mut g, "depthwise", conv(3, 0, 2, 2), &[Some(c), Some(dw)]);
    let mut pool = Pool {
        layout: kiln_ir::ops::Layout::Nchw,
        kind: PoolKind::Max,
        kernel_shape: vec![3, 3],
        strides: vec![2, 2],
        pads: vec![1, 1, 1, 1],
        dilations: vec![1, 1],
        ceil_mode: true,
        count_include_pad: false,
    };
    let mp = node(&mut g, "maxpool", Op::Pool(pool.clone()), &[Some(c)]);
    pool.kind = PoolKind::Avg;
    pool.count_include_pad = true;
    pool.ceil_mode = false;
    let ap = node(&mut g, "avgpool", Op::Pool(pool), &[Some(c)]);
    let gm = node(
        &mut g,
        "gmax",
        Op::GlobalPool(GlobalPool {
            layout: kiln_ir::ops::Layout::Nchw,
            kind: PoolKind::Max,
        }),
        &[Some(mp)],
    );
    let ga = node(
        &mut g,
        "gavg",
        Op::GlobalPool(GlobalPool {
            layout: kiln_ir::ops::Layout::Nchw,
            kind: PoolKind::Avg,
        }),
        &[Some(ap)],
    );
    let p = |v: &[f32]| f32t(&[2], v);
    let bn_in: Vec<Value> = [
        p(&[1.0, 2.0]),
        p(&[0.0, -0.5]),
        p(&[0.25, 0.0]),
        p(&[1.0, 4.0]),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, t)| g.add_const(format!("bn{i}"), t))
    .collect();
    let bn = node(
        &mut g,
        "bn",
        Op::BatchNorm(BatchNorm { epsilon: 1e-3 }),
        &[
            Some(c),
            Some(bn_in[0]),
            Some(bn_in[1]),
            Some(bn_in[2]),
            Some(bn_in[3]),
        ],
    );

    // Every unary op, chained, then every binary op against the conv output (multi-use).
    let unary = [
        UnaryOp::Relu,
        UnaryOp::LeakyRelu { alpha: 0.01 },
        UnaryOp::Clip {
            min: f32::NEG_INFINITY,
            max: 6.0,
        },
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Reciprocal,
        UnaryOp::Erf,
        UnaryOp::Floor,
        UnaryOp::Ceil,
    ];
    let mut u = bn;
    for op in unary {
        u = node(&mut g, op.name(), Op::Unary(op), &[Some(u)]);
    }
    let binary = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Max,
        BinaryOp::Min,
    ];
    let mut b = u;
    for op in binary {
        b = node(&mut g, op.name(), Op::Binary(op), &[Some(b), Some(c)]);
    }
    let half = node(
        &mut g,
        "to f16",
        Op::Cast(Cast { to: DType::F16 }),
        &[Some(b)],
    );
    g.outputs.push(("half".into(), half));

    // Linear algebra and softmax.
    let flat = node(
        &mut g,
        "flatten",
        Op::Flatten(Flatten { axis: 1 }),
        &[Some(cg)],
    );
    let fw = g.add_const("fw", f32t(&[2, 3], &ramp(6, 0.125)));
    let gm_ = node(
        &mut g,
        "gemm no C",
        Op::Gemm(Gemm {
            alpha: 0.5,
            beta: -1.5e-3,
            trans_a: false,
            trans_b: false,
            post: vec![],
        }),
        &[Some(flat), Some(fw)],
    );
    let fc = g.add_const("fc", f32t(&[3, 1], &[1.0, 2.0, 3.0]));
    let gt = node(
        &mut g,
        "gemm",
        Op::Gemm(Gemm {
            alpha: 1.0,
            beta: 2.0,
            trans_a: true,
            trans_b: true,
            post: vec![],
        }),
        &[Some(fw), Some(flat), Some(fc)],
    );
    let mm = node(&mut g, "matmul", Op::MatMul, &[Some(gm_), Some(gt)]);
    let sm = node(
        &mut g,
        "softmax flat",
        Op::Softmax(Softmax {
            axis: 0,
            flatten: true,
        }),
        &[Some(mm)],
    );
    g.outputs.push(("sm".into(), sm));
    let sm2 = node(
        &mut g,
        "softmax",
        Op::Softmax(Softmax {
            axis: 1,
            flatten: false,
        }),
        &[Some(gm)],
    );

    // Layout ops.
    let r = node(
        &mut g,
        "reshape",
        Op::Reshape(Reshape {
            shape: vec![0, -1],
            allowzero: false,
        }),
        &[Some(ga)],
    );
    let rz = node(
        &mut g,
        "reshape0",
        Op::Reshape(Reshape {
            shape: vec![2, 1],
            allowzero: true,
        }),
        &[Some(r)],
    );
    let t = node(
        &mut g,
        "transpose",
        Op::Transpose(Transpose { perm: vec![1, 0] }),
        &[Some(rz)],
    );
    let cat = node(
        &mut g,
        "concat",
        Op::Concat(Concat { axis: 1 }),
        &[Some(t), Some(t), Some(r)],
    );
    let sq = node(
        &mut g,
        "squeeze",
        Op::Squeeze(Squeeze { axes: vec![0] }),
        &[Some(cat)],
    );
    let us = node(
        &mut g,
        "unsqueeze",
        Op::Unsqueeze(Unsqueeze { axes: vec![0, 2] }),
        &[Some(sq)],
    );
    let sl = node(
        &mut g,
        "slice",
        Op::Slice(Slice {
            starts: vec![-1, 0],
            ends: vec![i64::MIN, 10],
            axes: vec![1, 2],
            steps: vec![-2, 1],
        }),
        &[Some(us)],
    );
    let ga1 = node(
        &mut g,
        "gather",
        Op::Gather(Gather { axis: 1 }),
        &[Some(sm2), Some(i64c)],
    );
    let ga2 = node(
        &mut g,
        "gather ids",
        Op::Gather(Gather { axis: 0 }),
        &[Some(w), Some(ids)],
    );
    let sh = node(
        &mut g,
        "shape",
        Op::Shape(ShapeOf {
            start: 1,
            end: Some(-1),
        }),
        &[Some(ga2)],
    );
    let sh2 = node(
        &mut g,
        "shape all",
        Op::Shape(ShapeOf {
            start: 0,
            end: None,
        }),
        &[Some(sh)],
    );
    for (name, v) in [("slice", sl), ("gather", ga1), ("shape", sh2), ("conv", c)] {
        g.outputs.push((name.into(), v));
    }
    // The same value under two output names.
    g.outputs.push(("conv again".into(), c));
    g
}
