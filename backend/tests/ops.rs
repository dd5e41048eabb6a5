//! Every op, compiled, linked into a C program, run on x86_64 and (under qemu) aarch64, and compared
//! with the reference evaluator. Each test builds one graph holding many independent sub-cases (odd
//! sizes, broadcasting variants, every attribute), so one C build covers them all.

mod common;
use common::*;
use kiln_backend::WeightsMode;
use kiln_ir::ops::*;
use kiln_ir::{DType, Op, Tensor};

#[test]
fn unary_f32() {
    let mut c = Case::new("unary_f32");
    let ops = [
        UnaryOp::Relu,
        UnaryOp::LeakyRelu { alpha: 0.1 },
        UnaryOp::Clip {
            min: -0.5,
            max: 0.75,
        },
        UnaryOp::Clip {
            min: f32::NEG_INFINITY,
            max: 1.0,
        },
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Exp,
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Erf,
        UnaryOp::Floor,
        UnaryOp::Ceil,
    ];
    for (i, op) in ops.into_iter().enumerate() {
        for (j, dims) in [vec![7], vec![2, 3, 5], vec![16], vec![]]
            .into_iter()
            .enumerate()
        {
            let x = c.input(
                &format!("x{i}_{j}"),
                DType::F32,
                &dims,
                Gen::Uniform(-4.0, 4.0),
            );
            c.out(&format!("{}{i}_{j}", op.name()), Op::Unary(op), &[x]);
        }
    }
    // Positive domains.
    for (i, op) in [UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Reciprocal]
        .into_iter()
        .enumerate()
    {
        for (j, dims) in [vec![9], vec![4, 4]].into_iter().enumerate() {
            let x = c.input(
                &format!("p{i}_{j}"),
                DType::F32,
                &dims,
                Gen::Uniform(0.05, 8.0),
            );
            c.out(&format!("{}_p{i}_{j}", op.name()), Op::Unary(op), &[x]);
        }
    }
    check(&c);
}

#[test]
fn unary_int() {
    let mut c = Case::new("unary_int");
    let ops = [
        UnaryOp::Relu,
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Clip {
            min: -3.5,
            max: 4.2,
        },
    ];
    for (i, op) in ops.into_iter().enumerate() {
        for d in [DType::I32, DType::I64, DType::I8, DType::U8] {
            let x = c.input(&format!("x{i}{d}"), d, &[11], Gen::Ints(-9, 9));
            c.out(&format!("{}{i}{d}", op.name()), Op::Unary(op), &[x]);
        }
    }
    check(&c);
}

#[test]
fn binary_f32_broadcasting() {
    let mut c = Case::new("binary_f32");
    let shapes: [(&[usize], &[usize]); 8] = [
        (&[2, 3, 5], &[2, 3, 5]),
        (&[2, 3, 5], &[]),
        (&[], &[7]),
        (&[1, 3, 4, 5], &[3, 1, 1]),
        (&[4, 1], &[1, 5]),
        (&[5], &[2, 3, 5]),
        (&[2, 1, 6], &[3, 1]),
        (&[13], &[13]),
    ];
    let ops = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
    ];
    for (i, op) in ops.into_iter().enumerate() {
        for (j, (sa, sb)) in shapes.iter().enumerate() {
            let a = c.input(
                &format!("a{i}_{j}"),
                DType::F32,
                sa,
                Gen::Uniform(-3.0, 3.0),
            );
            let gen = if op == BinaryOp::Div {
                Gen::Uniform(0.5, 3.0)
            } else {
                Gen::Uniform(-3.0, 3.0)
            };
            let b = c.input(&format!("b{i}_{j}"), DType::F32, sb, gen);
            c.out(&format!("{}{i}_{j}", op.name()), Op::Binary(op), &[a, b]);
        }
    }
    // Pow: positive bases, small exponents; and an integer constant exponent.
    for (j, (sa, sb)) in shapes.iter().enumerate().take(4) {
        let a = c.input(&format!("pa{j}"), DType::F32, sa, Gen::Uniform(0.1, 3.0));
        let b = c.input(&format!("pb{j}"), DType::F32, sb, Gen::Uniform(-2.0, 2.0));
        c.out(&format!("pow{j}"), Op::Binary(BinaryOp::Pow), &[a, b]);
    }
    let a = c.input("pa_int", DType::F32, &[6], Gen::Uniform(-3.0, 3.0));
    let e = c.constant("two", Tensor::from_i64(DType::I64, vec![], &[2]));
    c.out("pow_int_exp", Op::Binary(BinaryOp::Pow), &[a, e]);
    // A constant operand.
    let a = c.x("ca", &[3, 4]);
    let w = c.weight("cw", &[4]);
    c.out("add_const", Op::Binary(BinaryOp::Add), &[a, w]);
    c.rtol = 2e-4;
    check(&c);
}

#[test]
fn binary_int() {
    let mut c = Case::new("binary_int");
    let ops = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
    ];
    for (i, op) in ops.into_iter().enumerate() {
        for d in [DType::I32, DType::I64, DType::I16, DType::U8] {
            let a = c.input(&format!("a{i}{d}"), d, &[3, 5], Gen::Ints(-100, 100));
            // Includes zeros: integer division by zero is defined as 0.
            let b = c.input(&format!("b{i}{d}"), d, &[5], Gen::Ints(-3, 3));
            c.out(&format!("{}{i}{d}", op.name()), Op::Binary(op), &[a, b]);
        }
    }
    // The one division that overflows.
    let a = c.constant("min", Tensor::from_i64(DType::I64, vec![2], &[i64::MIN, 7]));
    let b = c.input("m1", DType::I64, &[2], Gen::Ints(-1, -1));
    c.out("div_overflow", Op::Binary(BinaryOp::Div), &[a, b]);
    check(&c);
}

#[test]
fn cast() {
    let mut c = Case::new("cast");
    let pairs = [
        (DType::F32, DType::I32, Gen::Uniform(-100.0, 100.0)),
        (DType::F32, DType::I64, Gen::Uniform(-1e6, 1e6)),
        (DType::F32, DType::U8, Gen::Uniform(0.0, 255.0)),
        (DType::F32, DType::I8, Gen::Uniform(-120.0, 120.0)),
        (DType::F32, DType::Bool, Gen::Ints(-1, 1)),
        (DType::F32, DType::F64, Gen::Uniform(-5.0, 5.0)),
        (DType::F64, DType::F32, Gen::Uniform(-5.0, 5.0)),
        (DType::I32, DType::F32, Gen::Ints(-100000, 100000)),
        (DType::I64, DType::F32, Gen::Ints(-(1 << 40), 1 << 40)),
        (DType::I64, DType::I32, Gen::Ints(-(1 << 40), 1 << 40)),
        (DType::I32, DType::I64, Gen::Ints(-100000, 100000)),
        (DType::U8, DType::F32, Gen::Ints(0, 255)),
        (DType::Bool, DType::F32, Gen::Ints(0, 1)),
        (DType::I32, DType::Bool, Gen::Ints(-2, 2)),
        (DType::I8, DType::U16, Gen::Ints(-128, 127)),
        (DType::F32, DType::F32, Gen::Uniform(-1.0, 1.0)),
    ];
    for (i, (from, to, gen)) in pairs.into_iter().enumerate() {
        let x = c.input(&format!("x{i}"), from, &[13], gen);
        c.out(&format!("cast{i}_{from}_{to}"), Op::Cast(Cast { to }), &[x]);
    }
    check(&c);
}

fn conv(k: &[usize], s: &[usize], d: &[usize], p: &[usize], group: usize) -> Op {
    Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: k.to_vec(),
        strides: s.to_vec(),
        dilations: d.to_vec(),
        pads: p.to_vec(),
        group,
        post: vec![],
    })
}

#[test]
fn conv2d() {
    let mut c = Case::new("conv2d");
    // (name, input, out channels, kernel, strides, dilations, pads, group, bias)
    #[allow(clippy::type_complexity)]
    let cases: &[(
        &str,
        [usize; 4],
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 4],
        usize,
        bool,
    )] = &[
        (
            "basic3x3",
            [1, 3, 7, 9],
            5,
            [3, 3],
            [1, 1],
            [1, 1],
            [1, 1, 1, 1],
            1,
            true,
        ),
        (
            "valid",
            [2, 2, 6, 5],
            3,
            [3, 2],
            [1, 1],
            [1, 1],
            [0, 0, 0, 0],
            1,
            false,
        ),
        (
            "stride2",
            [1, 4, 11, 10],
            6,
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1, 1, 1],
            1,
            true,
        ),
        (
            "dilated",
            [1, 2, 9, 9],
            4,
            [3, 3],
            [1, 1],
            [2, 2],
            [2, 2, 2, 2],
            1,
            true,
        ),
        (
            "asym_pads",
            [1, 3, 5, 7],
            2,
            [2, 3],
            [1, 2],
            [1, 1],
            [0, 1, 2, 0],
            1,
            true,
        ),
        (
            "grouped",
            [1, 4, 6, 6],
            6,
            [3, 3],
            [1, 1],
            [1, 1],
            [1, 1, 1, 1],
            2,
            true,
        ),
        (
            "depthwise",
            [2, 5, 7, 6],
            5,
            [3, 3],
            [1, 1],
            [1, 1],
            [1, 1, 1, 1],
            5,
            true,
        ),
        (
            "depthwise_s2",
            [1, 8, 9, 9],
            8,
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1, 1, 1],
            8,
            false,
        ),
        (
            "pointwise",
            [2, 6, 5, 5],
            9,
            [1, 1],
            [1, 1],
            [1, 1],
            [0, 0, 0, 0],
            1,
            true,
        ),
        (
            "pointwise_grouped",
            [1, 4, 3, 5],
            4,
            [1, 1],
            [1, 1],
            [1, 1],
            [0, 0, 0, 0],
            2,
            false,
        ),
        (
            "pointwise_strided",
            [1, 3, 7, 7],
            4,
            [1, 1],
            [2, 2],
            [1, 1],
            [0, 0, 0, 0],
            1,
            true,
        ),
        (
            "big_kernel",
            [1, 2, 10, 12],
            3,
            [5, 5],
            [1, 1],
            [1, 1],
            [2, 2, 2, 2],
            1,
            true,
        ),
        (
            "wide_stride",
            [1, 1, 9, 13],
            2,
            [3, 3],
            [3, 2],
            [1, 1],
            [0, 0, 0, 0],
            1,
            false,
        ),
    ];
    for (name, x, m, k, s, d, p, g, bias) in cases {
        let xi = c.x(&format!("{name}_x"), x);
        let w = c.weight(&format!("{name}_w"), &[*m, x[1] / g, k[0], k[1]]);
        let b = bias.then(|| c.weight(&format!("{name}_b"), &[*m]));
        let y = c.node_opt(name, conv(k, s, d, p, *g), &[Some(xi), Some(w), b]);
        c.output(name, y);
    }
    c.rtol = 2e-4;
    check(&c);
}

#[test]
fn conv_1d_3d_and_runtime_weights() {
    let mut c = Case::new("conv_nd");
    let x = c.x("x1", &[2, 3, 17]);
    let w = c.weight("w1", &[4, 3, 3]);
    let b = c.weight("b1", &[4]);
    c.out("conv1d", conv(&[3], &[2], &[1], &[1, 1], 1), &[x, w, b]);
    let x = c.x("x1g", &[1, 4, 10]);
    let w = c.weight("w1g", &[4, 1, 5]);
    c.out("conv1d_dw_dil", conv(&[5], &[1], &[2], &[4, 4], 4), &[x, w]);
    let x = c.x("x3", &[1, 2, 4, 5, 6]);
    let w = c.weight("w3", &[3, 2, 2, 3, 3]);
    c.out(
        "conv3d",
        conv(&[2, 3, 3], &[1, 2, 1], &[1, 1, 1], &[0, 1, 1, 1, 0, 1], 1),
        &[x, w],
    );
    // Weights as a graph input.
    let x = c.x("xr", &[1, 2, 5, 5]);
    let w = c.x("wr", &[3, 2, 3, 3]);
    let b = c.x("br", &[3]);
    c.out(
        "conv_rt",
        conv(&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], 1),
        &[x, w, b],
    );
    c.rtol = 2e-4;
    check(&c);
}

fn pool(
    kind: PoolKind,
    k: &[usize],
    s: &[usize],
    p: &[usize],
    d: &[usize],
    ceil: bool,
    cip: bool,
) -> Op {
    Op::Pool(Pool {
        layout: kiln_ir::ops::Layout::Nchw,
        kind,
        kernel_shape: k.to_vec(),
        strides: s.to_vec(),
        pads: p.to_vec(),
        dilations: d.to_vec(),
        ceil_mode: ceil,
        count_include_pad: cip,
    })
}

#[test]
fn pools() {
    let mut c = Case::new("pools");
    use PoolKind::{Avg, Max};
    #[allow(clippy::type_complexity)]
    let cases: &[(
        &str,
        PoolKind,
        &[usize],
        &[usize],
        &[usize],
        &[usize],
        &[usize],
        bool,
        bool,
    )] = &[
        (
            "max2",
            Max,
            &[1, 3, 8, 8],
            &[2, 2],
            &[2, 2],
            &[0, 0, 0, 0],
            &[1, 1],
            false,
            false,
        ),
        (
            "max3s2p1",
            Max,
            &[2, 2, 9, 7],
            &[3, 3],
            &[2, 2],
            &[1, 1, 1, 1],
            &[1, 1],
            false,
            false,
        ),
        (
            "max_ceil",
            Max,
            &[1, 2, 7, 7],
            &[2, 2],
            &[2, 2],
            &[0, 0, 0, 0],
            &[1, 1],
            true,
            false,
        ),
        (
            "max_dil",
            Max,
            &[1, 1, 9, 9],
            &[2, 2],
            &[1, 1],
            &[1, 1, 1, 1],
            &[2, 2],
            false,
            false,
        ),
        (
            "avg3p1",
            Avg,
            &[1, 3, 6, 5],
            &[3, 3],
            &[1, 1],
            &[1, 1, 1, 1],
            &[1, 1],
            false,
            false,
        ),
        (
            "avg3p1_incl",
            Avg,
            &[1, 3, 6, 5],
            &[3, 3],
            &[1, 1],
            &[1, 1, 1, 1],
            &[1, 1],
            false,
            true,
        ),
        (
            "avg_ceil",
            Avg,
            &[1, 2, 7, 8],
            &[3, 3],
            &[2, 2],
            &[0, 0, 0, 0],
            &[1, 1],
            true,
            false,
        ),
        (
            "avg_ceil_incl",
            Avg,
            &[1, 2, 7, 8],
            &[3, 3],
            &[2, 2],
            &[1, 1, 1, 1],
            &[1, 1],
            true,
            true,
        ),
        (
            "avg_plain",
            Avg,
            &[2, 3, 8, 6],
            &[2, 2],
            &[2, 2],
            &[0, 0, 0, 0],
            &[1, 1],
            false,
            false,
        ),
        (
            "max1d",
            Max,
            &[2, 3, 11],
            &[3],
            &[2],
            &[1, 0],
            &[1],
            true,
            false,
        ),
        (
            "avg1d",
            Avg,
            &[1, 2, 10],
            &[4],
            &[3],
            &[2, 2],
            &[1],
            false,
            false,
        ),
    ];
    for (name, kind, x, k, s, p, d, ceil, cip) in cases {
        let xi = c.x(&format!("{name}_x"), x);
        c.out(name, pool(*kind, k, s, p, d, *ceil, *cip), &[xi]);
    }
    for (i, dims) in [
        vec![2, 3, 5, 7],
        vec![1, 4, 9],
        vec![1, 2, 8, 8],
        vec![3, 2, 1, 1],
    ]
    .iter()
    .enumerate()
    {
        for kind in [Max, Avg] {
            let x = c.x(&format!("g{i}{kind:?}"), dims);
            c.out(
                &format!("global{i}{kind:?}"),
                Op::GlobalPool(GlobalPool {
                    kind,
                    layout: kiln_ir::ops::Layout::Nchw,
                }),
                &[x],
            );
        }
    }
    check(&c);
}

fn gemm(alpha: f32, beta: f32, ta: bool, tb: bool) -> Op {
    Op::Gemm(Gemm {
        alpha,
        beta,
        trans_a: ta,
        trans_b: tb,
        post: vec![],
    })
}

#[test]
fn gemms() {
    let mut c = Case::new("gemms");
    let (m, k, n) = (5, 7, 9);
    for (i, (ta, tb)) in [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .enumerate()
    {
        let a = c.x(&format!("a{i}"), &if ta { [k, m] } else { [m, k] });
        // Constant B (packed at compile time) and run-time B (transposed into scratch when needed).
        let bc = c.weight(&format!("bc{i}"), &if tb { [n, k] } else { [k, n] });
        let br = c.x(&format!("br{i}"), &if tb { [n, k] } else { [k, n] });
        let cc = c.weight(&format!("c{i}"), &[n]);
        c.out(&format!("gemm_c{i}"), gemm(1.0, 1.0, ta, tb), &[a, bc, cc]);
        c.out(&format!("gemm_r{i}"), gemm(0.5, 2.0, ta, tb), &[a, br, cc]);
    }
    // C broadcast variants and no C.
    for (i, cd) in [vec![], vec![1], vec![m, 1], vec![m, n], vec![1, n]]
        .into_iter()
        .enumerate()
    {
        let a = c.x(&format!("ca{i}"), &[m, k]);
        let b = c.weight(&format!("cb{i}"), &[k, n]);
        let cc = c.x(&format!("cc{i}"), &cd);
        c.out(
            &format!("gemm_bcast{i}"),
            gemm(1.5, -0.5, false, false),
            &[a, b, cc],
        );
    }
    let a = c.x("na", &[3, 16]);
    let b = c.weight("nb", &[10, 16]);
    c.out("gemm_noc", gemm(1.0, 1.0, false, true), &[a, b]);
    // Single row (a batch-1 fully connected layer) and wide N.
    let a = c.x("fa", &[1, 33]);
    let b = c.weight("fb", &[21, 33]);
    let cc = c.weight("fc", &[21]);
    c.out("gemm_fc", gemm(1.0, 1.0, false, true), &[a, b, cc]);
    check(&c);
}

#[test]
fn matmuls() {
    let mut c = Case::new("matmuls");
    let shapes: &[(&str, &[usize], &[usize])] = &[
        ("mm2d", &[5, 7], &[7, 9]),
        ("batched", &[2, 3, 4], &[2, 4, 5]),
        ("bcast", &[2, 1, 3, 4], &[3, 4, 6]),
        ("bcast_a", &[4, 5], &[3, 5, 2]),
        ("fold", &[2, 3, 4], &[4, 6]),
        ("vec_b", &[3, 4], &[4]),
        ("vec_a", &[4], &[4, 5]),
        ("vec_vec", &[6], &[6]),
        ("odd", &[1, 13], &[13, 11]),
    ];
    for (name, a, b) in shapes {
        let x = c.x(&format!("{name}_a"), a);
        let y = c.x(&format!("{name}_b"), b);
        c.out(name, Op::MatMul, &[x, y]);
    }
    let x = c.x("cw_a", &[2, 3, 8]);
    let w = c.weight("cw_b", &[8, 5]);
    c.out("const_b", Op::MatMul, &[x, w]);
    check(&c);
}

#[test]
fn batch_norm_and_softmax() {
    let mut c = Case::new("norm");
    for (i, dims) in [vec![2, 3, 4, 5], vec![4, 3], vec![1, 5, 7]]
        .into_iter()
        .enumerate()
    {
        let ch = dims[1];
        let x = c.x(&format!("bx{i}"), &dims);
        let scale = c.weight(&format!("scale{i}"), &[ch]);
        let bias = c.weight(&format!("bias{i}"), &[ch]);
        let mean = c.weight(&format!("mean{i}"), &[ch]);
        let var = c.random(DType::F32, &[ch], Gen::Uniform(0.5, 2.0));
        let var = c.constant(&format!("var{i}"), var);
        c.out(
            &format!("bn{i}"),
            Op::BatchNorm(BatchNorm { epsilon: 1e-5 }),
            &[x, scale, bias, mean, var],
        );
    }
    // Run-time parameters.
    let x = c.x("rx", &[2, 3, 3, 3]);
    let scale = c.x("rs", &[3]);
    let bias = c.x("rb", &[3]);
    let mean = c.x("rm", &[3]);
    let var = c.input("rv", DType::F32, &[3], Gen::Uniform(0.5, 2.0));
    c.out(
        "bn_rt",
        Op::BatchNorm(BatchNorm { epsilon: 1e-3 }),
        &[x, scale, bias, mean, var],
    );

    let cases: &[(&[usize], usize, bool)] = &[
        (&[3, 7], 1, false),
        (&[2, 5, 6], 1, false),
        (&[2, 3, 4], 1, true),
        (&[4, 9], 0, false),
        (&[2, 3, 4, 5], 2, false),
        (&[17], 0, false),
    ];
    for (i, (dims, axis, flatten)) in cases.iter().enumerate() {
        let x = c.input(&format!("sx{i}"), DType::F32, dims, Gen::Uniform(-6.0, 6.0));
        c.out(
            &format!("softmax{i}"),
            Op::Softmax(Softmax {
                axis: *axis,
                flatten: *flatten,
            }),
            &[x],
        );
    }
    check(&c);
}

#[test]
fn layout_ops() {
    let mut c = Case::new("layout");
    let perms: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4], &[2, 0, 1]),
        (&[2, 3, 4], &[0, 2, 1]),
        (&[5, 7], &[1, 0]),
        (&[1, 3, 4, 5], &[0, 2, 3, 1]),
        (&[3, 4], &[0, 1]),
    ];
    for (i, (dims, perm)) in perms.iter().enumerate() {
        let x = c.x(&format!("tx{i}"), dims);
        c.out(
            &format!("transpose{i}"),
            Op::Transpose(Transpose {
                perm: perm.to_vec(),
            }),
            &[x],
        );
    }
    let x = c.input("ti64", DType::I64, &[3, 5], Gen::Ints(-1000, 1000));
    c.out(
        "transpose_i64",
        Op::Transpose(Transpose { perm: vec![1, 0] }),
        &[x],
    );
    let x = c.input("tu8", DType::U8, &[2, 3, 5], Gen::Ints(0, 255));
    c.out(
        "transpose_u8",
        Op::Transpose(Transpose {
            perm: vec![2, 1, 0],
        }),
        &[x],
    );

    // Concat on every axis, with a constant piece and integer data.
    for axis in 0..3 {
        let mut dims = [2, 3, 4];
        let a = c.x(&format!("ca{axis}"), &dims);
        dims[axis] = 1;
        let b = c.x(&format!("cb{axis}"), &dims);
        dims[axis] = 3;
        let w = c.weight(&format!("cw{axis}"), &dims);
        c.out(
            &format!("concat{axis}"),
            Op::Concat(Concat { axis }),
            &[a, b, w],
        );
    }
    let a = c.input("ci_a", DType::I32, &[3, 2], Gen::Ints(-50, 50));
    let b = c.input("ci_b", DType::I32, &[3, 5], Gen::Ints(-50, 50));
    c.out("concat_i32", Op::Concat(Concat { axis: 1 }), &[a, b]);

    type SliceCase<'a> = (&'a [usize], &'a [i64], &'a [i64], &'a [usize], &'a [i64]);
    let slices: &[SliceCase] = &[
        (&[10], &[2], &[8], &[0], &[1]),
        (&[10], &[1], &[10], &[0], &[3]),
        (&[10], &[-1], &[-11], &[0], &[-1]),
        (&[10], &[8], &[1], &[0], &[-3]),
        (&[4, 6, 5], &[1, -4], &[3, 100], &[0, 1], &[1, 2]),
        (&[4, 6, 5], &[3, 4], &[0, 0], &[0, 2], &[-2, -1]),
        (&[3, 8], &[0], &[5], &[1], &[1]),
    ];
    for (i, (dims, starts, ends, axes, steps)) in slices.iter().enumerate() {
        let x = c.x(&format!("sx{i}"), dims);
        let op = Op::Slice(Slice {
            starts: starts.to_vec(),
            ends: ends.to_vec(),
            axes: axes.to_vec(),
            steps: steps.to_vec(),
        });
        c.out(&format!("slice{i}"), op, &[x]);
    }
    let x = c.input("si64", DType::I64, &[5, 4], Gen::Ints(-9, 9));
    let op = Op::Slice(Slice {
        starts: vec![4, 1],
        ends: vec![0, 4],
        axes: vec![0, 1],
        steps: vec![-2, 1],
    });
    c.out("slice_i64", op, &[x]);
    check(&c);
}

#[test]
fn gathers() {
    let mut c = Case::new("gathers");
    // Embedding lookup: constant table, run-time i64 ids (negative ones count from the end).
    let table = c.weight("table", &[10, 6]);
    let ids = c.input("ids", DType::I64, &[2, 3], Gen::Ints(-10, 9));
    c.out("embed", Op::Gather(Gather { axis: 0 }), &[table, ids]);
    // Run-time data, constant i32 indices, middle axis.
    let x = c.x("gx", &[2, 5, 3]);
    let idx = c.constant(
        "gidx",
        Tensor::from_i64(DType::I32, vec![4], &[4, 0, -1, 2]),
    );
    c.out("gather_mid", Op::Gather(Gather { axis: 1 }), &[x, idx]);
    // Last axis, scalar index.
    let x = c.x("gl", &[3, 7]);
    let idx = c.constant("gs", Tensor::from_i64(DType::I64, vec![], &[5]));
    c.out("gather_last", Op::Gather(Gather { axis: 1 }), &[x, idx]);
    // Integer data.
    let x = c.input("gi", DType::I32, &[6], Gen::Ints(-100, 100));
    let idx = c.input("gii", DType::I32, &[8], Gen::Ints(-6, 5));
    c.out("gather_i32", Op::Gather(Gather { axis: 0 }), &[x, idx]);
    check(&c);
}

#[test]
fn views_copies_and_shape() {
    let mut c = Case::new("views");
    let x = c.x("x", &[2, 3, 4]);
    let r = c.node(
        "r",
        Op::Reshape(Reshape {
            shape: vec![6, -1],
            allowzero: false,
        }),
        &[x],
    );
    let f = c.node("f", Op::Flatten(Flatten { axis: 0 }), &[r]);
    let u = c.node("u", Op::Unsqueeze(Unsqueeze { axes: vec![0, 3] }), &[f]);
    let s = c.node("s", Op::Squeeze(Squeeze { axes: vec![3] }), &[u]);
    let i = c.node("i", Op::Identity, &[s]);
    let y = c.node("relu", Op::Unary(UnaryOp::Relu), &[i]);
    // A view of a computed value as an output, and the computed value itself too.
    let yr = c.node(
        "yr",
        Op::Reshape(Reshape {
            shape: vec![4, 6],
            allowzero: false,
        }),
        &[y],
    );
    c.output("y_view", yr);
    c.output("y", y);
    // The same value twice.
    c.output("y_again", y);
    // An input passed through, and through a view.
    c.output("x_copy", x);
    let xv = c.node("xv", Op::Flatten(Flatten { axis: 1 }), &[x]);
    c.output("x_view", xv);
    // A constant as an output, and a shape (a constant once shapes are static).
    let w = c.weight("w", &[5]);
    c.output("w_out", w);
    let sh = c.node(
        "shape",
        Op::Shape(ShapeOf {
            start: 0,
            end: None,
        }),
        &[x],
    );
    c.output("shape_out", sh);
    let shf = c.node("shape_f", Op::Cast(Cast { to: DType::F32 }), &[sh]);
    c.out("shape_plus", Op::Binary(BinaryOp::Add), &[shf, shf]);
    // A chain where in-place reuse applies: exp(neg(tanh(x))) * 2.
    let a = c.x("chain", &[37]);
    let t = c.node("ct", Op::Unary(UnaryOp::Tanh), &[a]);
    let n = c.node("cn", Op::Unary(UnaryOp::Neg), &[t]);
    let e = c.node("ce", Op::Unary(UnaryOp::Exp), &[n]);
    let two = c.constant("ctwo", Tensor::from_f32(vec![], &[2.0]));
    c.out("chain_out", Op::Binary(BinaryOp::Mul), &[e, two]);
    check(&c);
    check_mode(&c, WeightsMode::External);
}
