//! End to end, on both targets: the data-movement family, Resize, ConvTranspose, max pooling of any
//! dtype with indices, and Einsum, compiled, linked into a C driver, run and compared with the IR's
//! reference evaluator on pseudo-random data.

mod common;

use common::{check, Case, Gen};
use kiln_ir::ops::{
    ConvTranspose, CoordMode, CumSum, Einsum, Expand, GatherElements, GatherNd, MaxPoolIndices,
    Movement, NearestMode, OneHot, Pad, PadMode, Pool, PoolKind, Reduction, Resize, ResizeMode,
    ScatterElements, ScatterNd, Tile, TopK, Trilu,
};
use kiln_ir::{DType, Op, Tensor, Value};

fn mv(m: Movement) -> Op {
    Op::Movement(m)
}

/// Adds a node with two outputs and makes both graph outputs.
fn out2(c: &mut Case, name: &str, op: Op, ins: &[Value]) {
    let ins: Vec<Option<Value>> = ins.iter().map(|&v| Some(v)).collect();
    let names = [format!("{name}_0"), format!("{name}_1")];
    let v =
        c.g.add_node(name, op, &ins, &[names[0].as_str(), names[1].as_str()])
            .unwrap_or_else(|e| panic!("building {name}: {e}"));
    c.output(&names[0], v[0]);
    c.output(&names[1], v[1]);
}

#[test]
fn expand_tile_pad() {
    let mut c = Case::new("expand_tile_pad");
    let x = c.x("x", &[3, 1, 2]);
    c.out(
        "expand",
        mv(Movement::Expand(Expand {
            shape: vec![2, 3, 4, 2],
        })),
        &[x],
    );
    let xi = c.input("xi", DType::I64, &[2, 3], Gen::Ints(-50, 50));
    c.out(
        "tile",
        mv(Movement::Tile(Tile {
            repeats: vec![3, 2],
        })),
        &[xi],
    );
    let xb = c.input("xb", DType::Bool, &[2, 3], Gen::Ints(0, 1));
    c.out(
        "tile_bool",
        mv(Movement::Tile(Tile {
            repeats: vec![1, 3],
        })),
        &[xb],
    );
    for (i, mode) in [
        PadMode::Constant,
        PadMode::Reflect,
        PadMode::Edge,
        PadMode::Wrap,
    ]
    .into_iter()
    .enumerate()
    {
        let p = mv(Movement::Pad(Pad {
            pads: vec![1, 2, 0, 2, 1, 3],
            mode,
        }));
        c.out(&format!("pad{i}"), p, &[x]);
        let p = mv(Movement::Pad(Pad {
            pads: vec![0, 2, 1, 2],
            mode,
        }));
        c.out(&format!("pad_i{i}"), p, &[xi]);
    }
    // A run-time fill value, and negative pads (cropping) on f16 data.
    let fill = c.x("fill", &[]);
    let p = mv(Movement::Pad(Pad {
        pads: vec![0, -1, 2, 2, 1, -1],
        mode: PadMode::Constant,
    }));
    c.out("pad_fill", p, &[x, fill]);
    let xh = c.input("xh", DType::F16, &[4, 5], Gen::Uniform(-3.0, 3.0));
    let p = mv(Movement::Pad(Pad {
        pads: vec![-1, 1, 0, -2],
        mode: PadMode::Edge,
    }));
    c.out("pad_f16", p, &[xh]);
    check(&c);
}

#[test]
fn trilu_and_one_hot() {
    let mut c = Case::new("trilu_one_hot");
    let x = c.input("x", DType::I64, &[2, 3, 5], Gen::Ints(-9, 9));
    let k = c.input("k", DType::I64, &[], Gen::Ints(-2, 2));
    c.out("triu", mv(Movement::Trilu(Trilu { upper: true })), &[x]);
    c.out(
        "tril_k",
        mv(Movement::Trilu(Trilu { upper: false })),
        &[x, k],
    );
    let xf = c.x("xf", &[5, 3]);
    c.out(
        "triu_k",
        mv(Movement::Trilu(Trilu { upper: true })),
        &[xf, k],
    );
    let idx = c.input("idx", DType::I64, &[2, 3], Gen::Ints(-5, 6));
    let vals = c.input("vals", DType::F32, &[2], Gen::Uniform(-2.0, 2.0));
    c.out(
        "one_hot",
        mv(Movement::OneHot(OneHot { axis: 1, depth: 4 })),
        &[idx, vals],
    );
    let fidx = c.input("fidx", DType::F32, &[3], Gen::Ints(-3, 3));
    let bv = c.input("bv", DType::BF16, &[2], Gen::Uniform(-2.0, 2.0));
    c.out(
        "one_hot_f",
        mv(Movement::OneHot(OneHot { axis: 0, depth: 3 })),
        &[fidx, bv],
    );
    check(&c);
}

#[test]
fn element_gathers_and_scatters() {
    let mut c = Case::new("gather_scatter");
    let x = c.x("x", &[3, 4, 2]);
    let i = c.input("i", DType::I64, &[3, 2, 2], Gen::Ints(-4, 3));
    c.out(
        "gather_elements",
        mv(Movement::GatherElements(GatherElements { axis: 1 })),
        &[x, i],
    );
    let i32i = c.input("i32", DType::I32, &[2, 4, 1], Gen::Ints(0, 2));
    c.out(
        "gather_elements0",
        mv(Movement::GatherElements(GatherElements { axis: 0 })),
        &[x, i32i],
    );
    let nd = c.input("nd", DType::I64, &[2, 2], Gen::Ints(-2, 2));
    c.out(
        "gather_nd",
        mv(Movement::GatherNd(GatherNd { batch_dims: 0 })),
        &[x, nd],
    );
    let bnd = c.input("bnd", DType::I64, &[3, 2, 1], Gen::Ints(0, 3));
    c.out(
        "gather_nd_batch",
        mv(Movement::GatherNd(GatherNd { batch_dims: 1 })),
        &[x, bnd],
    );
    for (k, red) in [
        Reduction::None,
        Reduction::Add,
        Reduction::Mul,
        Reduction::Max,
        Reduction::Min,
    ]
    .into_iter()
    .enumerate()
    {
        let u = c.x(&format!("u{k}"), &[3, 2, 2]);
        c.out(
            &format!("scatter_elements{k}"),
            mv(Movement::ScatterElements(ScatterElements {
                axis: 1,
                reduction: red,
            })),
            &[x, i, u],
        );
        let un = c.x(&format!("un{k}"), &[2, 2]);
        c.out(
            &format!("scatter_nd{k}"),
            mv(Movement::ScatterNd(ScatterNd { reduction: red })),
            &[x, nd, un],
        );
        let xi = c.input(&format!("xi{k}"), DType::I32, &[5], Gen::Ints(-20, 20));
        let ii = c.input(&format!("ii{k}"), DType::I64, &[3, 1], Gen::Ints(0, 4));
        let ui = c.input(&format!("ui{k}"), DType::I32, &[3], Gen::Ints(-20, 20));
        c.out(
            &format!("scatter_nd_i32_{k}"),
            mv(Movement::ScatterNd(ScatterNd { reduction: red })),
            &[xi, ii, ui],
        );
    }
    check(&c);
}

#[test]
fn cumsum_and_top_k() {
    let mut c = Case::new("cumsum_top_k");
    let x = c.x("x", &[3, 5, 2]);
    let xd = c.input("xd", DType::F64, &[7], Gen::Uniform(-5.0, 5.0));
    let xi = c.input("xi", DType::I32, &[4, 3], Gen::Ints(-100, 100));
    for (k, (e, r)) in [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .enumerate()
    {
        let op = |axis| {
            mv(Movement::CumSum(CumSum {
                axis,
                exclusive: e,
                reverse: r,
            }))
        };
        c.out(&format!("cs{k}"), op(1), &[x]);
        c.out(&format!("csd{k}"), op(0), &[xd]);
        c.out(&format!("csi{k}"), op(0), &[xi]);
    }
    // Ties: small integer ranges make equal values likely.
    let t = c.input("t", DType::I64, &[2, 9], Gen::Ints(-3, 3));
    let tu = c.input("tu", DType::U64, &[6], Gen::Ints(0, 4));
    for largest in [true, false] {
        let op = |axis, k| mv(Movement::TopK(TopK { axis, k, largest }));
        out2(&mut c, &format!("topf{largest}"), op(1, 3), &[x]);
        out2(&mut c, &format!("topi{largest}"), op(1, 4), &[t]);
        out2(&mut c, &format!("topu{largest}"), op(0, 6), &[tu]);
    }
    check(&c);
}

fn resize(mode: ResizeMode, coord: CoordMode, scales: &[f64], sizes: &[usize]) -> Resize {
    Resize {
        mode,
        coord,
        exclude_outside: false,
        antialias: false,
        extrapolation_value: 0.0,
        scales: scales.to_vec(),
        sizes: sizes.to_vec(),
        roi: vec![],
    }
}

#[test]
fn resizes() {
    let mut c = Case::new("resizes");
    let x = c.x("x", &[1, 2, 4, 5]);
    let nearest = resize(
        ResizeMode::Nearest(NearestMode::RoundPreferCeil),
        CoordMode::HalfPixel,
        &[1.0, 1.0, 2.0, 0.6],
        &[1, 2, 8, 3],
    );
    c.out("nearest", Op::Resize(nearest), &[x]);
    let xi = c.input("xi", DType::U8, &[2, 3], Gen::Ints(0, 255));
    let ni = resize(
        ResizeMode::Nearest(NearestMode::Floor),
        CoordMode::Asymmetric,
        &[2.0, 1.5],
        &[4, 4],
    );
    c.out("nearest_u8", Op::Resize(ni), &[xi]);
    let lin = resize(
        ResizeMode::Linear,
        CoordMode::AlignCorners,
        &[1.0, 1.0, 1.5, 1.4],
        &[1, 2, 6, 7],
    );
    c.out("linear", Op::Resize(lin), &[x]);
    let mut cubic = resize(
        ResizeMode::Cubic { a: -0.5 },
        CoordMode::HalfPixel,
        &[1.0, 1.0, 0.5, 0.8],
        &[1, 2, 2, 4],
    );
    cubic.exclude_outside = true;
    c.out("cubic", Op::Resize(cubic.clone()), &[x]);
    cubic.antialias = true;
    cubic.exclude_outside = false;
    c.out("cubic_aa", Op::Resize(cubic), &[x]);
    // Antialiased downsampling by 10: 20 taps per output, a looped kernel; vector and scalar columns.
    let wide = c.x("wide", &[40, 6]);
    let mut aa = resize(
        ResizeMode::Linear,
        CoordMode::HalfPixel,
        &[0.1, 1.0],
        &[4, 6],
    );
    aa.antialias = true;
    c.out("linear_aa_wide", Op::Resize(aa), &[wide]);
    let mut aa = resize(
        ResizeMode::Linear,
        CoordMode::HalfPixel,
        &[0.1, 0.5],
        &[4, 3],
    );
    aa.antialias = true;
    c.out("linear_aa_2d", Op::Resize(aa), &[wide]);
    let mut crop = resize(
        ResizeMode::Linear,
        CoordMode::TfCropAndResize,
        &[1.0, 1.0, 0.75, 0.6],
        &[1, 2, 3, 3],
    );
    crop.roi = vec![0.0, 0.0, 0.4, 0.6, 1.0, 1.0, 1.2, 0.7];
    crop.extrapolation_value = 10.0;
    c.out("crop", Op::Resize(crop.clone()), &[x]);
    crop.mode = ResizeMode::Nearest(NearestMode::RoundPreferFloor);
    c.out("crop_nearest", Op::Resize(crop), &[x]);
    check(&c);
}

#[test]
fn conv_transposes() {
    let mut c = Case::new("conv_transpose");
    c.rtol = 1e-4;
    let x = c.x("x", &[2, 4, 3, 3]);
    let w = c.weight("w", &[4, 3, 3, 2]);
    let b = c.weight("b", &[6]);
    let op = ConvTranspose {
        kernel_shape: vec![3, 2],
        strides: vec![2, 3],
        dilations: vec![1, 2],
        pads_begin: vec![1, -1],
        output: vec![6, 9],
        group: 2,
    };
    c.out("ct2d", Op::ConvTranspose(op), &[x, w, b]);
    // Run-time weights, 1-D and 3-D.
    let x1 = c.x("x1", &[1, 2, 5]);
    let w1 = c.x("w1", &[2, 3, 3]);
    let op = ConvTranspose {
        kernel_shape: vec![3],
        strides: vec![1],
        dilations: vec![1],
        pads_begin: vec![0],
        output: vec![7],
        group: 1,
    };
    c.out("ct1d", Op::ConvTranspose(op), &[x1, w1]);
    let x3 = c.x("x3", &[1, 1, 2, 3, 2]);
    let w3 = c.x("w3", &[1, 2, 2, 2, 2]);
    let op = ConvTranspose {
        kernel_shape: vec![2, 2, 2],
        strides: vec![2, 1, 2],
        dilations: vec![1, 1, 1],
        pads_begin: vec![0, 0, 1],
        output: vec![4, 4, 3],
        group: 1,
    };
    c.out("ct3d", Op::ConvTranspose(op), &[x3, w3]);
    // 75 taps: the direct form (the GEMM form unrolls at most 64).
    let w5 = c.x("w5", &[1, 1, 5, 5, 3]);
    let op = ConvTranspose {
        kernel_shape: vec![5, 5, 3],
        strides: vec![1, 2, 1],
        dilations: vec![1, 1, 2],
        pads_begin: vec![2, 1, 0],
        output: vec![3, 8, 4],
        group: 1,
    };
    c.out("ct3d_direct", Op::ConvTranspose(op), &[x3, w5]);
    check(&c);
}

#[test]
fn max_pools_of_any_dtype_with_indices() {
    let mut c = Case::new("max_pool_generic");
    let pool = Pool {
        layout: kiln_ir::ops::Layout::Nchw,
        kind: PoolKind::Max,
        kernel_shape: vec![3, 2],
        strides: vec![2, 1],
        pads: vec![1, 0, 1, 1],
        dilations: vec![1, 2],
        ceil_mode: false,
        count_include_pad: false,
    };
    let xu = c.input("xu", DType::U8, &[1, 2, 5, 6], Gen::Ints(0, 255));
    c.out("u8", Op::Pool(pool.clone()), &[xu]);
    let xi = c.input("xi", DType::I8, &[1, 2, 5, 6], Gen::Ints(-128, 127));
    c.out("i8", Op::Pool(pool.clone()), &[xi]);
    let x = c.x("x", &[2, 2, 5, 6]);
    for cm in [false, true] {
        let op = Op::MaxPoolIndices(MaxPoolIndices {
            pool: pool.clone(),
            column_major: cm,
        });
        out2(&mut c, &format!("idx{cm}"), op, &[x]);
    }
    check(&c);
}

#[test]
fn einsums() {
    let mut c = Case::new("einsums");
    let e = |eq: &str| {
        Op::Einsum(Einsum {
            equation: eq.into(),
        })
    };
    let a = c.x("a", &[2, 3, 4]);
    let b = c.x("b", &[2, 4, 5]);
    c.out("bmm", e("bij,bjk->bik"), &[a, b]);
    let d = c.x("d", &[3, 4, 4]);
    c.out("diag", e("...ii->...i"), &[d]);
    c.out("trace_sum", e("bii"), &[d]);
    let v = c.input("v", DType::F64, &[6], Gen::Uniform(-1.0, 1.0));
    c.out("dot", e("i,i"), &[v, v]);
    let h = c.input("h", DType::BF16, &[3, 4], Gen::Uniform(-1.0, 1.0));
    c.out("bf16_t", e("ij->ji"), &[h]);
    let k = c.input("k", DType::I32, &[3, 2], Gen::Ints(-5, 5));
    c.out("int_sum", e("ij->j"), &[k]);
    // MatMul of the dtypes the f32 GEMM does not take runs these loops, batch dims broadcast.
    let ma = c.input("ma", DType::F64, &[2, 1, 3, 4], Gen::Uniform(-1.0, 1.0));
    let mb = c.input("mb", DType::F64, &[3, 4, 2], Gen::Uniform(-1.0, 1.0));
    c.out("matmul_f64", Op::MatMul, &[ma, mb]);
    let ia = c.input("ia", DType::I64, &[4], Gen::Ints(-9, 9));
    let ib = c.input("ib", DType::I64, &[2, 4, 3], Gen::Ints(-9, 9));
    c.out("matmul_i64_vec", Op::MatMul, &[ia, ib]);
    let ua = c.input("ua", DType::U8, &[3, 4], Gen::Ints(0, 9));
    let ub = c.input("ub", DType::U8, &[4], Gen::Ints(0, 9));
    c.out("matmul_u8_vec", Op::MatMul, &[ua, ub]);
    check(&c);
}

/// Every finite and infinite f16 (NaNs left out: their payloads and signs are not canonical).
fn f16_patterns() -> Vec<u16> {
    (0..=u16::MAX)
        .filter(|&h| (h & 0x7c00) != 0x7c00 || (h & 0x3ff) == 0)
        .collect()
}

#[test]
fn f16_arithmetic_converts_exactly() {
    let mut c = Case::new("f16_convert");
    let bits = f16_patterns();
    let n = bits.len();
    let bytes = |v: &[u16]| v.iter().flat_map(|h| h.to_le_bytes()).collect::<Vec<u8>>();
    let a = c.constant(
        "a",
        Tensor::from_bytes(DType::F16, vec![n], bytes(&bits)).unwrap(),
    );
    // f16 -> f32 -> f16 is the identity (subnormals, -0 and infinities included).
    c.out(
        "identity",
        Op::Einsum(Einsum {
            equation: "i->i".into(),
        }),
        &[a],
    );
    // Products of two f16 are exact in f32, so the f32 -> f16 rounding alone decides the result:
    // subnormal results, ties to even and overflow to infinity all occur. Infinities times zero
    // would make NaNs, so the second operand stays finite.
    let finite: Vec<u16> = bits
        .iter()
        .rev()
        .map(|&h| if (h & 0x7c00) == 0x7c00 { 0x3c00 } else { h })
        .collect();
    let b = c.constant(
        "b",
        Tensor::from_bytes(DType::F16, vec![n], bytes(&finite)).unwrap(),
    );
    let zero_safe: Vec<u16> = bits
        .iter()
        .map(|&h| if (h & 0x7c00) == 0x7c00 { 0x4000 } else { h })
        .collect();
    let a2 = c.constant(
        "a2",
        Tensor::from_bytes(DType::F16, vec![n], bytes(&zero_safe)).unwrap(),
    );
    c.out(
        "product",
        Op::Einsum(Einsum {
            equation: "i,i->i".into(),
        }),
        &[a2, b],
    );
    // f16 max pooling and top-k compare through the same loads.
    let x = c.input("x", DType::F16, &[1, 1, 4, 6], Gen::Uniform(-100.0, 100.0));
    let pool = Pool {
        layout: kiln_ir::ops::Layout::Nchw,
        kind: PoolKind::Max,
        kernel_shape: vec![2, 3],
        strides: vec![2, 3],
        pads: vec![0; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
        count_include_pad: false,
    };
    c.out("max_pool_f16", Op::Pool(pool), &[x]);
    out2(
        &mut c,
        "top_f16",
        mv(Movement::TopK(TopK {
            axis: 3,
            k: 2,
            largest: true,
        })),
        &[x],
    );
    check(&c);
}

#[test]
fn convs_of_other_float_dtypes() {
    use kiln_ir::ops::Conv;
    let mut c = Case::new("conv_direct");
    // f64, 2-D, groups, bias, padding, strides, dilations.
    let x = c.input("x", DType::F64, &[2, 4, 5, 6], Gen::Uniform(-1.0, 1.0));
    let w = c.input("w", DType::F64, &[6, 2, 3, 2], Gen::Uniform(-1.0, 1.0));
    let b = c.input("b", DType::F64, &[6], Gen::Uniform(-1.0, 1.0));
    let op = Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: vec![3, 2],
        strides: vec![2, 1],
        dilations: vec![1, 2],
        pads: vec![1, 1, 1, 0],
        group: 2,
        post: vec![],
    });
    c.out("conv_f64", op, &[x, w, b]);
    // f16 and bf16, 1-D depthwise (a causal convolution's shape): products and sums in f32.
    for (name, dt) in [("conv_f16", DType::F16), ("conv_bf16", DType::BF16)] {
        let x = c.input(&format!("{name}_x"), dt, &[2, 4, 8], Gen::Ints(-4, 4));
        let w = c.input(&format!("{name}_w"), dt, &[4, 1, 3], Gen::Ints(-3, 3));
        let op = Op::Conv(Conv {
            layout: kiln_ir::ops::Layout::Nchw,
            kernel_shape: vec![3],
            strides: vec![1],
            dilations: vec![1],
            pads: vec![2, 0],
            group: 4,
            post: vec![],
        });
        c.out(name, op, &[x, w]);
    }
    check(&c);
}
