//! Reference evaluators of the data-movement family, Resize, ConvTranspose, max pooling with indices
//! and Einsum against hand-computed values (worked out in the comments).

use kiln_ir::ops::{
    ConvTranspose, CoordMode, CumSum, Einsum, Expand, GatherElements, GatherNd, MaxPoolIndices,
    Movement, NearestMode, OneHot, Pad, PadMode, Pool, PoolKind, Reduction, Resize, ResizeMode,
    ScatterElements, ScatterNd, Tile, TopK, Trilu,
};
use kiln_ir::{DType, Op, Tensor};

fn run(op: &Op, ins: &[Option<&Tensor>]) -> Vec<Tensor> {
    op.eval(ins)
        .unwrap_or_else(|e| panic!("{} failed: {e}", op.name()))
}

fn eval(op: &Op, ins: &[&Tensor]) -> Tensor {
    let ins: Vec<Option<&Tensor>> = ins.iter().map(|&t| Some(t)).collect();
    run(op, &ins).remove(0)
}

fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(shape.to_vec(), v)
}

fn i64t(shape: &[usize], v: &[i64]) -> Tensor {
    Tensor::from_i64(DType::I64, shape.to_vec(), v)
}

#[track_caller]
fn close(t: &Tensor, shape: &[usize], want: &[f64], tol: f64) {
    assert_eq!(t.shape(), shape, "shape");
    let got = t.to_f64_vec();
    assert_eq!(got.len(), want.len(), "count: {got:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "element {i}: got {g}, want {w} (all {got:?})"
        );
    }
}

#[track_caller]
fn exact(t: &Tensor, shape: &[usize], want: &[f64]) {
    close(t, shape, want, 0.0)
}

fn mv(m: Movement) -> Op {
    Op::Movement(m)
}

#[test]
fn expand_and_tile() {
    // [3,1] -> [2,3,2]: rows 1,2,3 each repeated along the last axis, the whole twice.
    let x = f32t(&[3, 1], &[1.0, 2.0, 3.0]);
    let y = eval(
        &mv(Movement::Expand(Expand {
            shape: vec![2, 3, 2],
        })),
        &[&x],
    );
    exact(
        &y,
        &[2, 3, 2],
        &[1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3.],
    );
    // Tile [[1,2],[3,4]] by (2,1): the rows again below.
    let x = i64t(&[2, 2], &[1, 2, 3, 4]);
    let y = eval(
        &mv(Movement::Tile(Tile {
            repeats: vec![2, 1],
        })),
        &[&x],
    );
    assert_eq!(y.dtype(), DType::I64);
    exact(&y, &[4, 2], &[1., 2., 3., 4., 1., 2., 3., 4.]);
    // Tile a row by 3: 1 2 1 2 1 2.
    let x = f32t(&[1, 2], &[1.0, 2.0]);
    let y = eval(
        &mv(Movement::Tile(Tile {
            repeats: vec![1, 3],
        })),
        &[&x],
    );
    exact(&y, &[1, 6], &[1., 2., 1., 2., 1., 2.]);
}

#[test]
fn pad_modes() {
    let x = f32t(&[3], &[1.0, 2.0, 3.0]);
    let pad = |mode, b, e| {
        mv(Movement::Pad(Pad {
            pads: vec![b, e],
            mode,
        }))
    };
    // numpy.pad([1,2,3], (2,3), mode):
    exact(
        &eval(&pad(PadMode::Constant, 2, 3), &[&x]),
        &[8],
        &[0., 0., 1., 2., 3., 0., 0., 0.],
    );
    exact(
        &eval(&pad(PadMode::Edge, 2, 3), &[&x]),
        &[8],
        &[1., 1., 1., 2., 3., 3., 3., 3.],
    );
    // reflect: ... 3 2 | 1 2 3 | 2 1 2
    exact(
        &eval(&pad(PadMode::Reflect, 2, 3), &[&x]),
        &[8],
        &[3., 2., 1., 2., 3., 2., 1., 2.],
    );
    // wrap: 2 3 | 1 2 3 | 1 2 3
    exact(
        &eval(&pad(PadMode::Wrap, 2, 3), &[&x]),
        &[8],
        &[2., 3., 1., 2., 3., 1., 2., 3.],
    );
    // A fill value, and a negative pad that crops the first element.
    let v = f32t(&[], &[9.0]);
    let y = eval(&pad(PadMode::Constant, -1, 1), &[&x, &v]);
    exact(&y, &[3], &[2., 3., 9.]);
    // 2-D: one row above, one column right.
    let x = Tensor::from_i64(DType::I32, vec![2, 2], &[1, 2, 3, 4]);
    let p = mv(Movement::Pad(Pad {
        pads: vec![1, 0, 0, 1],
        mode: PadMode::Constant,
    }));
    exact(
        &eval(&p, &[&x]),
        &[3, 3],
        &[0., 0., 0., 1., 2., 0., 3., 4., 0.],
    );
}

#[test]
fn trilu() {
    // 3x3 of 1..9.
    let x = i64t(&[3, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let up = mv(Movement::Trilu(Trilu { upper: true }));
    let lo = mv(Movement::Trilu(Trilu { upper: false }));
    exact(
        &eval(&up, &[&x]),
        &[3, 3],
        &[1., 2., 3., 0., 5., 6., 0., 0., 9.],
    );
    exact(
        &eval(&lo, &[&x]),
        &[3, 3],
        &[1., 0., 0., 4., 5., 0., 7., 8., 9.],
    );
    // k = 1 keeps j - i >= 1 (upper) / j - i <= -1 with k = -1 (lower).
    let k1 = i64t(&[], &[1]);
    exact(
        &eval(&up, &[&x, &k1]),
        &[3, 3],
        &[0., 2., 3., 0., 0., 6., 0., 0., 0.],
    );
    let km = i64t(&[], &[-1]);
    exact(
        &eval(&lo, &[&x, &km]),
        &[3, 3],
        &[0., 0., 0., 4., 0., 0., 7., 8., 0.],
    );
}

#[test]
fn gather_elements_and_nd() {
    // ONNX example: data [[1,2],[3,4]], indices [[0,0],[1,0]], axis 1 -> [[1,1],[4,3]].
    let x = f32t(&[2, 2], &[1., 2., 3., 4.]);
    let i = i64t(&[2, 2], &[0, 0, 1, 0]);
    let op = mv(Movement::GatherElements(GatherElements { axis: 1 }));
    exact(&eval(&op, &[&x, &i]), &[2, 2], &[1., 1., 4., 3.]);
    // Negative index -1 along axis 0 is the last row: [[3, 2]] for indices [[-1, 0]].
    let i = i64t(&[1, 2], &[-1, 0]);
    let op = mv(Movement::GatherElements(GatherElements { axis: 0 }));
    exact(&eval(&op, &[&x, &i]), &[1, 2], &[3., 2.]);
    // GatherND: data [[0,1],[2,3]], indices [[1],[0]] -> rows [[2,3],[0,1]].
    let x = Tensor::from_i64(DType::I32, vec![2, 2], &[0, 1, 2, 3]);
    let i = i64t(&[2, 1], &[1, 0]);
    let op = mv(Movement::GatherNd(GatherNd { batch_dims: 0 }));
    exact(&eval(&op, &[&x, &i]), &[2, 2], &[2., 3., 0., 1.]);
    // batch_dims 1: data [2,2,2] = 0..8, indices [[1],[0]] -> [[2,3],[4,5]].
    let x = Tensor::from_i64(DType::I32, vec![2, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7]);
    let op = mv(Movement::GatherNd(GatherNd { batch_dims: 1 }));
    exact(&eval(&op, &[&x, &i]), &[2, 2], &[2., 3., 4., 5.]);
}

#[test]
fn scatters() {
    // ScatterElements axis 1: data [[1,2,3,4,5]], indices [[1,3]], updates [[1.1, 2.1]].
    let x = f32t(&[1, 5], &[1., 2., 3., 4., 5.]);
    let i = i64t(&[1, 2], &[1, 3]);
    let u = f32t(&[1, 2], &[1.1, 2.1]);
    let op = |r| {
        mv(Movement::ScatterElements(ScatterElements {
            axis: 1,
            reduction: r,
        }))
    };
    close(
        &eval(&op(Reduction::None), &[&x, &i, &u]),
        &[1, 5],
        &[1., 1.1, 3., 2.1, 5.],
        1e-6,
    );
    // Duplicates add up: indices [[1,1]] with add -> 2 + 1.1 + 2.1 = 5.2.
    let i = i64t(&[1, 2], &[1, 1]);
    close(
        &eval(&op(Reduction::Add), &[&x, &i, &u]),
        &[1, 5],
        &[1., 5.2, 3., 4., 5.],
        1e-6,
    );
    // mul: 2 * 1.1 * 2.1 = 4.62; max: max(2, 1.1, 2.1) = 2.1; min: 1.1.
    close(
        &eval(&op(Reduction::Mul), &[&x, &i, &u]),
        &[1, 5],
        &[1., 4.62, 3., 4., 5.],
        1e-5,
    );
    close(
        &eval(&op(Reduction::Max), &[&x, &i, &u]),
        &[1, 5],
        &[1., 2.1, 3., 4., 5.],
        1e-6,
    );
    close(
        &eval(&op(Reduction::Min), &[&x, &i, &u]),
        &[1, 5],
        &[1., 1.1, 3., 4., 5.],
        1e-6,
    );
    // ScatterND: data 1..8, indices [[4],[3],[1],[7]], updates 9..12 -> [1,11,3,10,9,6,7,12].
    let x = f32t(&[8], &[1., 2., 3., 4., 5., 6., 7., 8.]);
    let i = i64t(&[4, 1], &[4, 3, 1, 7]);
    let u = f32t(&[4], &[9., 10., 11., 12.]);
    let op = mv(Movement::ScatterNd(ScatterNd {
        reduction: Reduction::None,
    }));
    exact(
        &eval(&op, &[&x, &i, &u]),
        &[8],
        &[1., 11., 3., 10., 9., 6., 7., 12.],
    );
    let op = mv(Movement::ScatterNd(ScatterNd {
        reduction: Reduction::Add,
    }));
    exact(
        &eval(&op, &[&x, &i, &u]),
        &[8],
        &[1., 13., 3., 14., 14., 6., 7., 20.],
    );
}

#[test]
fn one_hot_cumsum_top_k() {
    // Indices [1, -1, 5] with depth 3 on a new last axis: rows e1, e2 (from -1 + 3), none.
    let i = i64t(&[3], &[1, -1, 5]);
    let v = Tensor::from_i64(DType::I32, vec![2], &[0, 7]);
    let op = mv(Movement::OneHot(OneHot { axis: 1, depth: 3 }));
    exact(
        &eval(&op, &[&i, &v]),
        &[3, 3],
        &[0., 7., 0., 0., 0., 7., 0., 0., 0.],
    );
    // Axis 0: the transpose.
    let op = mv(Movement::OneHot(OneHot { axis: 0, depth: 3 }));
    exact(
        &eval(&op, &[&i, &v]),
        &[3, 3],
        &[0., 0., 0., 7., 0., 0., 0., 7., 0.],
    );
    // CumSum of 1..5: inclusive 1 3 6 10 15; exclusive 0 1 3 6 10; reverse 15 14 12 9 5.
    let x = Tensor::from_i64(DType::F64, vec![5], &[1, 2, 3, 4, 5]);
    let cs = |e, r| {
        mv(Movement::CumSum(CumSum {
            axis: 0,
            exclusive: e,
            reverse: r,
        }))
    };
    exact(
        &eval(&cs(false, false), &[&x]),
        &[5],
        &[1., 3., 6., 10., 15.],
    );
    exact(&eval(&cs(true, false), &[&x]), &[5], &[0., 1., 3., 6., 10.]);
    exact(
        &eval(&cs(false, true), &[&x]),
        &[5],
        &[15., 14., 12., 9., 5.],
    );
    exact(&eval(&cs(true, true), &[&x]), &[5], &[14., 12., 9., 5., 0.]);
    // TopK k=2 of [3, 1, 3, 2]: values 3, 3 at indices 0, 2 (ties keep order); smallest: 1, 2.
    let x = f32t(&[4], &[3., 1., 3., 2.]);
    let op = |largest| {
        mv(Movement::TopK(TopK {
            axis: 0,
            k: 2,
            largest,
        }))
    };
    let out = run(&op(true), &[Some(&x)]);
    exact(&out[0], &[2], &[3., 3.]);
    exact(&out[1], &[2], &[0., 2.]);
    let out = run(&op(false), &[Some(&x)]);
    exact(&out[0], &[2], &[1., 2.]);
    exact(&out[1], &[2], &[1., 3.]);
}

fn resize(mode: ResizeMode, coord: CoordMode, scales: &[f64], sizes: &[usize]) -> Op {
    Op::Resize(Resize {
        mode,
        coord,
        exclude_outside: false,
        antialias: false,
        extrapolation_value: 0.0,
        scales: scales.to_vec(),
        sizes: sizes.to_vec(),
        roi: vec![],
    })
}

#[test]
fn resize_modes() {
    // Nearest x2 (asymmetric, floor): 1 1 2 2.
    let x = f32t(&[1, 2], &[1.0, 2.0]);
    let op = resize(
        ResizeMode::Nearest(NearestMode::Floor),
        CoordMode::Asymmetric,
        &[1.0, 2.0],
        &[1, 4],
    );
    exact(&eval(&op, &[&x]), &[1, 4], &[1., 1., 2., 2.]);
    // Linear x2, half pixel: x_src = (o + 0.5)/2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped at the
    // edges: 1, 1 + 0.25, 1 + 0.75, 2.
    let op = resize(
        ResizeMode::Linear,
        CoordMode::HalfPixel,
        &[1.0, 2.0],
        &[1, 4],
    );
    close(&eval(&op, &[&x]), &[1, 4], &[1.0, 1.25, 1.75, 2.0], 1e-9);
    // Align corners, 3 outputs from [0, 4]: 0, 2, 4.
    let x = f32t(&[2], &[0.0, 4.0]);
    let op = resize(ResizeMode::Linear, CoordMode::AlignCorners, &[1.5], &[3]);
    close(&eval(&op, &[&x]), &[3], &[0.0, 2.0, 4.0], 1e-9);
    // Cubic on a linear ramp reproduces the ramp inside (a cubic kernel interpolates lines exactly
    // when all four taps are inside): asymmetric x2 of 0..4 at output 2 -> source 1.0 -> 1.
    let x = f32t(&[4], &[0.0, 1.0, 2.0, 3.0]);
    let op = resize(
        ResizeMode::Cubic { a: -0.75 },
        CoordMode::Asymmetric,
        &[2.0],
        &[8],
    );
    // Positions 2 and 3 read sources 1.0 and 1.5 with all four taps inside the input.
    let v = eval(&op, &[&x]).to_f64_vec();
    assert!(
        (v[2] - 1.0).abs() < 1e-9 && (v[3] - 1.5).abs() < 1e-9,
        "{v:?}"
    );
    // tf_crop_and_resize with roi [0.5, 1.5] on [0, 10]: coordinates 0.5 and 1.5 -> 5 and the
    // extrapolation value (1.5 > 1).
    let x = f32t(&[2], &[0.0, 10.0]);
    let op = Op::Resize(Resize {
        mode: ResizeMode::Linear,
        coord: CoordMode::TfCropAndResize,
        exclude_outside: false,
        antialias: false,
        extrapolation_value: -1.0,
        scales: vec![1.0],
        sizes: vec![2],
        roi: vec![0.5, 1.5],
    });
    close(&eval(&op, &[&x]), &[2], &[5.0, -1.0], 1e-9);
}

#[test]
fn conv_transpose_and_max_pool_indices() {
    // 1-D, one channel, x = [1, 2], w = [1, 10], stride 2: outputs 1 10 2 20.
    let x = f32t(&[1, 1, 2], &[1.0, 2.0]);
    let w = f32t(&[1, 1, 2], &[1.0, 10.0]);
    let op = Op::ConvTranspose(ConvTranspose {
        kernel_shape: vec![2],
        strides: vec![2],
        dilations: vec![1],
        pads_begin: vec![0],
        output: vec![4],
        group: 1,
    });
    exact(&eval(&op, &[&x, &w]), &[1, 1, 4], &[1., 10., 2., 20.]);
    // Stride 1 overlaps: [1, 10+2, 20]; a begin pad of 1 drops the first; bias 0.5 everywhere.
    let b = f32t(&[1], &[0.5]);
    let op = Op::ConvTranspose(ConvTranspose {
        kernel_shape: vec![2],
        strides: vec![1],
        dilations: vec![1],
        pads_begin: vec![1],
        output: vec![2],
        group: 1,
    });
    exact(&eval(&op, &[&x, &w, &b]), &[1, 1, 2], &[12.5, 20.5]);
    // Max pool 2x2 stride 2 over a 2x4 plane with indices (row-major and column-major numbering).
    let x = f32t(&[1, 1, 2, 4], &[1., 5., 2., 2., 3., 4., 8., 7.]);
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
    let op = Op::MaxPoolIndices(MaxPoolIndices {
        pool: pool.clone(),
        column_major: false,
    });
    let out = run(&op, &[Some(&x)]);
    exact(&out[0], &[1, 1, 1, 2], &[5., 8.]);
    exact(&out[1], &[1, 1, 1, 2], &[1., 6.]);
    // Column-major: (0,1) -> 0 + 1*2 = 2; (1,2) -> 1 + 2*2 = 5.
    let op = Op::MaxPoolIndices(MaxPoolIndices {
        pool,
        column_major: true,
    });
    let out = run(&op, &[Some(&x)]);
    exact(&out[1], &[1, 1, 1, 2], &[2., 5.]);
}

#[test]
fn einsum_forms() {
    let e = |eq: &str| {
        Op::Einsum(Einsum {
            equation: eq.into(),
        })
    };
    let a = f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let b = f32t(&[3, 2], &[1., 0., 0., 1., 1., 1.]);
    // Matrix product: [[1+3, 2+3], [4+6, 5+6]].
    exact(
        &eval(&e("ij,jk->ik"), &[&a, &b]),
        &[2, 2],
        &[4., 5., 10., 11.],
    );
    // Transpose, sum of all, implicit output (alphabetical: "ji" implicitly means "ji->ij", which
    // transposes, as numpy.einsum("ji", a) does).
    exact(
        &eval(&e("ij->ji"), &[&a]),
        &[3, 2],
        &[1., 4., 2., 5., 3., 6.],
    );
    exact(&eval(&e("ij->"), &[&a]), &[], &[21.]);
    exact(&eval(&e("ji"), &[&a]), &[3, 2], &[1., 4., 2., 5., 3., 6.]);
    // Diagonal with a batch ellipsis: [[1,2],[3,4]] and [[5,6],[7,8]] -> [[1,4],[5,8]].
    let x = f32t(&[2, 2, 2], &[1., 2., 3., 4., 5., 6., 7., 8.]);
    exact(&eval(&e("...ii ->...i"), &[&x]), &[2, 2], &[1., 4., 5., 8.]);
    // Inner product.
    let v = f32t(&[3], &[1., 2., 3.]);
    exact(&eval(&e("i,i"), &[&v, &v]), &[], &[14.]);
}

#[test]
fn textual_round_trip() {
    let ops = [
        mv(Movement::Pad(Pad {
            pads: vec![1, -1],
            mode: PadMode::Reflect,
        })),
        mv(Movement::TopK(TopK {
            axis: 1,
            k: 3,
            largest: false,
        })),
        mv(Movement::ScatterNd(ScatterNd {
            reduction: Reduction::Max,
        })),
        Op::Resize(Resize {
            mode: ResizeMode::Cubic { a: -0.5 },
            coord: CoordMode::HalfPixelSymmetric,
            exclude_outside: true,
            antialias: false,
            extrapolation_value: 0.0,
            scales: vec![1.0, 0.6, 1.0 / 3.0],
            sizes: vec![1, 3, 2],
            roi: vec![],
        }),
        Op::Einsum(Einsum {
            equation: "bij,bjk->bik".into(),
        }),
    ];
    for op in ops {
        let attrs = kiln_ir::Attrs(
            op.attrs()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
        let back =
            Op::from_text(op.name(), &attrs).unwrap_or_else(|e| panic!("{}: {e}", op.name()));
        assert_eq!(back, op);
    }
}

#[test]
fn graph_text_round_trips() {
    use kiln_ir::{parse, print, verify, Graph, PrintOptions, TensorType};
    let full = PrintOptions {
        max_const_elems: usize::MAX,
    };
    let mut g = Graph::new("family");
    let x = g.add_input("x", TensorType::new(DType::F32, &[1, 2, 4, 4]));
    let add = |g: &mut Graph, name: &str, op: Op, ins: &[kiln_ir::Value]| {
        let ins: Vec<Option<kiln_ir::Value>> = ins.iter().map(|&v| Some(v)).collect();
        g.add_node(name, op, &ins, &[])
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let top = add(
        &mut g,
        "top",
        mv(Movement::TopK(TopK {
            axis: 3,
            k: 2,
            largest: true,
        })),
        &[x],
    );
    let r = add(
        &mut g,
        "resize",
        Op::Resize(Resize {
            mode: ResizeMode::Linear,
            coord: CoordMode::TfCropAndResize,
            exclude_outside: false,
            antialias: true,
            extrapolation_value: -1.5,
            scales: vec![1.0, 1.0, 0.7, 1.0 / 3.0],
            sizes: vec![1, 2, 2, 1],
            roi: vec![0.0, 0.0, 0.1, 0.2, 1.0, 1.0, 0.9, 0.8],
        }),
        &[x],
    );
    let mp = add(
        &mut g,
        "mp",
        Op::MaxPoolIndices(MaxPoolIndices {
            pool: Pool {
                layout: kiln_ir::ops::Layout::Nchw,
                kind: PoolKind::Max,
                kernel_shape: vec![2, 2],
                strides: vec![2, 2],
                pads: vec![0; 4],
                dilations: vec![1, 1],
                ceil_mode: false,
                count_include_pad: false,
            },
            column_major: true,
        }),
        &[x],
    );
    let e = add(
        &mut g,
        "e",
        Op::Einsum(Einsum {
            equation: "nchw->nhwc".into(),
        }),
        &[x],
    );
    g.outputs.push(("v".into(), top[0]));
    g.outputs.push(("i".into(), top[1]));
    g.outputs.push(("r".into(), r[0]));
    g.outputs.push(("mi".into(), mp[1]));
    g.outputs.push(("e".into(), e[0]));
    verify(&g).unwrap_or_else(|e| panic!("{e}"));
    let text = print(&g, full);
    let parsed = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    verify(&parsed).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(print(&parsed, full), text);
}
