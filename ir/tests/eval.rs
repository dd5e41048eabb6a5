//! Reference evaluators against hand-computed values. Each expected value is worked out in the comment
//! next to it (or by a formula that does not share code with the evaluator).

mod common;

use common::f32t;
use half::f16;
use kiln_ir::ops::{
    BatchNorm, Concat, Conv, Gather, Gemm, GlobalPool, Pool, PoolKind, Reshape, ShapeOf, Slice,
    Softmax, Transpose,
};
use kiln_ir::{DType, Graph, Op, OpError, Tensor, Value};
use std::collections::HashMap;

fn eval(op: &Op, ins: &[&Tensor]) -> Tensor {
    let ins: Vec<Option<&Tensor>> = ins.iter().map(|&t| Some(t)).collect();
    let mut out = op
        .eval(&ins)
        .unwrap_or_else(|e| panic!("{} failed: {e}", op.name()));
    assert_eq!(out.len(), 1);
    out.remove(0)
}

#[track_caller]
fn assert_close(t: &Tensor, shape: &[usize], want: &[f64], tol: f64) {
    assert_eq!(t.shape(), shape, "shape");
    let got = t.to_f64_vec();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol || (g.is_nan() && w.is_nan()),
            "element {i}: got {g}, want {w} (all: {got:?})"
        );
    }
}

#[track_caller]
fn assert_exact(t: &Tensor, shape: &[usize], want: &[f64]) {
    assert_close(t, shape, want, 0.0);
}

fn conv_op(
    k: &[usize],
    strides: &[usize],
    pads: &[usize],
    dilations: &[usize],
    group: usize,
) -> Op {
    Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: k.to_vec(),
        strides: strides.to_vec(),
        dilations: dilations.to_vec(),
        pads: pads.to_vec(),
        group,
        post: vec![],
    })
}

fn pool_op(
    kind: PoolKind,
    k: &[usize],
    strides: &[usize],
    pads: &[usize],
    ceil_mode: bool,
    count_include_pad: bool,
) -> Op {
    Op::Pool(Pool {
        layout: kiln_ir::ops::Layout::Nchw,
        kind,
        kernel_shape: k.to_vec(),
        strides: strides.to_vec(),
        pads: pads.to_vec(),
        dilations: vec![1; k.len()],
        ceil_mode,
        count_include_pad,
    })
}

fn seq(n: usize, from: f32) -> Vec<f32> {
    (0..n).map(|i| from + i as f32).collect()
}

// ---- Conv ----

#[test]
fn conv_1x1_with_bias() {
    // x: ch0 = [1,2,3,4], ch1 = [10,20,30,40]; out_m = w_m0 * ch0 + w_m1 * ch1 + b_m.
    let x = f32t(&[1, 2, 2, 2], &[1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]);
    let w = f32t(&[3, 2, 1, 1], &[1.0, 0.0, 0.0, 1.0, 2.0, -1.0]);
    let b = f32t(&[3], &[0.5, 0.0, -1.0]);
    let y = eval(
        &conv_op(&[1, 1], &[1, 1], &[0; 4], &[1, 1], 1),
        &[&x, &w, &b],
    );
    // m0 = ch0 + 0.5; m1 = ch1; m2 = 2*ch0 - ch1 - 1 = [2-10-1, 4-20-1, 6-30-1, 8-40-1].
    assert_exact(
        &y,
        &[1, 3, 2, 2],
        &[
            1.5, 2.5, 3.5, 4.5, 10.0, 20.0, 30.0, 40.0, -9.0, -17.0, -25.0, -33.0,
        ],
    );
}

#[test]
fn conv_3x3_pad1_stride2() {
    // x = 1..16 as 4x4, all-ones 3x3 kernel, pads 1, stride 2: out 2x2 = (4 + 2 - 3) / 2 + 1.
    //  1  2  3  4
    //  5  6  7  8
    //  9 10 11 12
    // 13 14 15 16
    // (0,0): rows 0-1, cols 0-1 = 1+2+5+6 = 14
    // (0,1): rows 0-1, cols 1-3 = 2+3+4+6+7+8 = 30
    // (1,0): rows 1-3, cols 0-1 = 5+6+9+10+13+14 = 57
    // (1,1): rows 1-3, cols 1-3 = 6+7+8+10+11+12+14+15+16 = 99
    let x = f32t(&[1, 1, 4, 4], &seq(16, 1.0));
    let w = f32t(&[1, 1, 3, 3], &[1.0; 9]);
    let y = eval(
        &conv_op(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1], 1),
        &[&x, &w],
    );
    assert_exact(&y, &[1, 1, 2, 2], &[14.0, 30.0, 57.0, 99.0]);
}

#[test]
fn conv_3x3_same_padding_all_positions() {
    // 3x3 input 1..9, ones kernel, pads 1, stride 1: each output is the sum of its 3x3 neighbourhood.
    let x = f32t(&[1, 1, 3, 3], &seq(9, 1.0));
    let w = f32t(&[1, 1, 3, 3], &[1.0; 9]);
    let y = eval(
        &conv_op(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1], 1),
        &[&x, &w],
    );
    // corners: 1+2+4+5=12, 2+3+5+6=16, 4+5+7+8=24, 5+6+8+9=28; edges: 1+..+6=21, 1+2+4+5+7+8=27,
    // 2+3+5+6+8+9=33, 4+..+9=39; centre: 45.
    assert_exact(
        &y,
        &[1, 1, 3, 3],
        &[12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0],
    );
}

#[test]
fn conv_grouped_with_batch() {
    // 4 input channels, group 2, 4 output channels: m0, m1 read ch0, ch1; m2, m3 read ch2, ch3.
    // w: m0 = [1,1], m1 = [2,0], m2 = [1,-1], m3 = [0,3].
    let x = f32t(&[2, 4, 1, 1], &[1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]);
    let w = f32t(&[4, 2, 1, 1], &[1.0, 1.0, 2.0, 0.0, 1.0, -1.0, 0.0, 3.0]);
    let y = eval(&conv_op(&[1, 1], &[1, 1], &[0; 4], &[1, 1], 2), &[&x, &w]);
    // n0: m0 = 1+2 = 3, m1 = 2*1 = 2, m2 = 3-4 = -1, m3 = 3*4 = 12; n1 is ten times that.
    assert_exact(
        &y,
        &[2, 4, 1, 1],
        &[3.0, 2.0, -1.0, 12.0, 30.0, 20.0, -10.0, 120.0],
    );
}

#[test]
fn conv_depthwise() {
    // ch0 = 1..9 with a ones kernel (neighbourhood sums, as above); ch1 = ones with a kernel that is 2
    // at the centre only, plus bias 1 -> 3 everywhere.
    let mut xv = seq(9, 1.0);
    xv.extend([1.0; 9]);
    let x = f32t(&[1, 2, 3, 3], &xv);
    let mut wv = vec![1.0; 9];
    wv.extend([0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
    let w = f32t(&[2, 1, 3, 3], &wv);
    let b = f32t(&[2], &[0.0, 1.0]);
    let y = eval(
        &conv_op(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1], 2),
        &[&x, &w, &b],
    );
    let mut want = vec![12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0];
    want.extend([3.0; 9]);
    assert_exact(&y, &[1, 2, 3, 3], &want);
}

#[test]
fn conv_dilated_2d() {
    // 2x2 kernel [[1,0],[0,1]] with dilation 2 reads x[i][j] + x[i+2][j+2] on the 4x4 input 1..16.
    let x = f32t(&[1, 1, 4, 4], &seq(16, 1.0));
    let w = f32t(&[1, 1, 2, 2], &[1.0, 0.0, 0.0, 1.0]);
    let y = eval(&conv_op(&[2, 2], &[1, 1], &[0; 4], &[2, 2], 1), &[&x, &w]);
    // (0,0): 1+11, (0,1): 2+12, (1,0): 5+15, (1,1): 6+16.
    assert_exact(&y, &[1, 1, 2, 2], &[12.0, 14.0, 20.0, 22.0]);
}

#[test]
fn conv_1d_dilated_asymmetric_pads() {
    // x = [1,2,3,4,5], w = [1,-1], dilation 2 (window of 3), pads begin 2, end 0: 5 outputs.
    // Output o reads input o-2 (weight 1) and o (weight -1); index -2, -1 is padding.
    // o=0: 0-1 = -1; o=1: 0-2 = -2; o=2: 1-3; o=3: 2-4; o=4: 3-5.
    let x = f32t(&[1, 1, 5], &seq(5, 1.0));
    let w = f32t(&[1, 1, 2], &[1.0, -1.0]);
    let y = eval(&conv_op(&[2], &[1], &[2, 0], &[2], 1), &[&x, &w]);
    assert_exact(&y, &[1, 1, 5], &[-1.0, -2.0, -2.0, -2.0, -2.0]);
}

#[test]
fn conv_3d() {
    // 2x2x2 ones kernel over 2x2x2 input 1..8: one output, 1+...+8 = 36; bias 0.5.
    let x = f32t(&[1, 1, 2, 2, 2], &seq(8, 1.0));
    let w = f32t(&[1, 1, 2, 2, 2], &[1.0; 8]);
    let b = f32t(&[1], &[0.5]);
    let y = eval(
        &conv_op(&[2, 2, 2], &[1, 1, 1], &[0; 6], &[1, 1, 1], 1),
        &[&x, &w, &b],
    );
    assert_exact(&y, &[1, 1, 1, 1, 1], &[36.5]);
}

#[test]
fn conv_f16_keeps_dtype() {
    let x = Tensor::from_f64(DType::F16, vec![1, 1, 1, 2], &[1.5, 2.0]);
    let w = Tensor::from_f64(DType::F16, vec![1, 1, 1, 2], &[2.0, 0.25]);
    let y = eval(&conv_op(&[1, 2], &[1, 1], &[0; 4], &[1, 1], 1), &[&x, &w]);
    assert_eq!(y.dtype(), DType::F16);
    // 1.5*2 + 2*0.25 = 3.5
    assert_exact(&y, &[1, 1, 1, 1], &[3.5]);
}

// ---- Pooling ----

#[test]
fn maxpool_padding_never_wins() {
    // All inputs negative, so a zero from the padding would win if padding took part.
    // -1 -2 -3
    // -4 -5 -6
    // -7 -8 -9
    // kernel 2, stride 2, pads 1: windows cover rows {-1,0},{1,2} x cols {-1,0},{1,2}.
    let x = f32t(
        &[1, 1, 3, 3],
        &seq(9, 1.0).iter().map(|v| -v).collect::<Vec<_>>(),
    );
    let y = eval(
        &pool_op(PoolKind::Max, &[2, 2], &[2, 2], &[1, 1, 1, 1], false, false),
        &[&x],
    );
    // (0,0): {-1}; (0,1): {-2,-3}; (1,0): {-4,-7}; (1,1): {-5,-6,-8,-9}.
    assert_exact(&y, &[1, 1, 2, 2], &[-1.0, -2.0, -4.0, -5.0]);
}

#[test]
fn maxpool_ceil_mode_partial_window() {
    // x = [1,5,2,4,3], kernel 2, stride 2. Floor: 2 outputs; ceil: 3, the last window [4,5] holding
    // only x[4] = 3.
    let x = f32t(&[1, 1, 1, 5], &[1.0, 5.0, 2.0, 4.0, 3.0]);
    let floor = eval(
        &pool_op(PoolKind::Max, &[1, 2], &[1, 2], &[0; 4], false, false),
        &[&x],
    );
    assert_exact(&floor, &[1, 1, 1, 2], &[5.0, 4.0]);
    let ceil = eval(
        &pool_op(PoolKind::Max, &[1, 2], &[1, 2], &[0; 4], true, false),
        &[&x],
    );
    assert_exact(&ceil, &[1, 1, 1, 3], &[5.0, 4.0, 3.0]);
}

#[test]
fn maxpool_ceil_mode_drops_window_in_end_padding() {
    // x = [1,2,3,4], kernel 2, stride 2, end pad 1: ceil((4+1-2)/2)+1 = 3 windows, but the third would
    // start at index 4, inside the end padding, so it is dropped: [max(1,2), max(3,4)].
    let x = f32t(&[1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
    let y = eval(
        &pool_op(PoolKind::Max, &[2], &[2], &[0, 1], true, false),
        &[&x],
    );
    assert_exact(&y, &[1, 1, 2], &[2.0, 4.0]);
}

#[test]
fn maxpool_dilated() {
    // x = [3,1,4,1,5], kernel 2 with dilation 2 reads x[o] and x[o+2]: max(3,4), max(1,1), max(4,5).
    let x = f32t(&[1, 1, 5], &[3.0, 1.0, 4.0, 1.0, 5.0]);
    let op = Op::Pool(Pool {
        layout: kiln_ir::ops::Layout::Nchw,
        kind: PoolKind::Max,
        kernel_shape: vec![2],
        strides: vec![1],
        pads: vec![0, 0],
        dilations: vec![2],
        ceil_mode: false,
        count_include_pad: false,
    });
    assert_exact(&eval(&op, &[&x]), &[1, 1, 3], &[4.0, 1.0, 5.0]);
}

#[test]
fn avgpool_count_include_pad_on_and_off() {
    // x = 1..9 as 3x3, kernel 2, stride 2, pads 1 (same windows as the max pool test):
    // (0,0): {1} of 4 taps; (0,1): {2,3} of 4; (1,0): {4,7} of 4; (1,1): {5,6,8,9} of 4.
    let x = f32t(&[1, 1, 3, 3], &seq(9, 1.0));
    let with = eval(
        &pool_op(PoolKind::Avg, &[2, 2], &[2, 2], &[1, 1, 1, 1], false, true),
        &[&x],
    );
    assert_exact(
        &with,
        &[1, 1, 2, 2],
        &[1.0 / 4.0, 5.0 / 4.0, 11.0 / 4.0, 28.0 / 4.0],
    );
    let without = eval(
        &pool_op(PoolKind::Avg, &[2, 2], &[2, 2], &[1, 1, 1, 1], false, false),
        &[&x],
    );
    assert_exact(
        &without,
        &[1, 1, 2, 2],
        &[1.0, 5.0 / 2.0, 11.0 / 2.0, 28.0 / 4.0],
    );
}

#[test]
fn avgpool_ceil_mode_overhang_is_not_padding() {
    // x = [1..6], kernel 3, stride 2, pads 1+1, ceil: 4 windows starting at padded 0, 2, 4, 6.
    // Last window: padded 6, 7, 8 = x[5], end pad, beyond the padded input. With count_include_pad the
    // divisor is 2 (x[5] and the pad, not the overhang), as in PyTorch; without, 1.
    // w0 = pad,1,2  w1 = 2,3,4  w2 = 4,5,6  w3 = 6,pad,-
    let x = f32t(&[1, 1, 6], &seq(6, 1.0));
    let with = eval(
        &pool_op(PoolKind::Avg, &[3], &[2], &[1, 1], true, true),
        &[&x],
    );
    assert_exact(
        &with,
        &[1, 1, 4],
        &[3.0 / 3.0, 9.0 / 3.0, 15.0 / 3.0, 6.0 / 2.0],
    );
    let without = eval(
        &pool_op(PoolKind::Avg, &[3], &[2], &[1, 1], true, false),
        &[&x],
    );
    assert_exact(
        &without,
        &[1, 1, 4],
        &[3.0 / 2.0, 9.0 / 3.0, 15.0 / 3.0, 6.0],
    );
}

#[test]
fn global_pools() {
    // ch0 = [1,2,3,4]: mean 2.5, max 4; ch1 = [-1,-5,2,0]: mean -1, max 2.
    let x = f32t(&[1, 2, 2, 2], &[1.0, 2.0, 3.0, 4.0, -1.0, -5.0, 2.0, 0.0]);
    let avg = eval(
        &Op::GlobalPool(GlobalPool {
            layout: kiln_ir::ops::Layout::Nchw,
            kind: PoolKind::Avg,
        }),
        &[&x],
    );
    assert_exact(&avg, &[1, 2, 1, 1], &[2.5, -1.0]);
    let max = eval(
        &Op::GlobalPool(GlobalPool {
            layout: kiln_ir::ops::Layout::Nchw,
            kind: PoolKind::Max,
        }),
        &[&x],
    );
    assert_exact(&max, &[1, 2, 1, 1], &[4.0, 2.0]);
}

// ---- Gemm / MatMul ----

fn gemm(alpha: f32, beta: f32, trans_a: bool, trans_b: bool) -> Op {
    Op::Gemm(Gemm {
        alpha,
        beta,
        trans_a,
        trans_b,
        post: vec![],
    })
}

// A = [[1,2,3],[4,5,6]], B = [[1,0],[0,1],[1,1]]: A*B = [[1+3, 2+3], [4+6, 5+6]] = [[4,5],[10,11]].
fn gemm_ab() -> (Tensor, Tensor) {
    (
        f32t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        f32t(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
    )
}

#[test]
fn gemm_plain_and_without_c() {
    let (a, b) = gemm_ab();
    assert_exact(
        &eval(&gemm(1.0, 1.0, false, false), &[&a, &b]),
        &[2, 2],
        &[4.0, 5.0, 10.0, 11.0],
    );
}

#[test]
fn gemm_alpha_beta_row_c() {
    // 2 * [[4,5],[10,11]] + 0.5 * [10,20] (broadcast along rows) = [[13,20],[25,32]].
    let (a, b) = gemm_ab();
    let c = f32t(&[2], &[10.0, 20.0]);
    assert_exact(
        &eval(&gemm(2.0, 0.5, false, false), &[&a, &b, &c]),
        &[2, 2],
        &[13.0, 20.0, 25.0, 32.0],
    );
}

#[test]
fn gemm_transposes() {
    // The same product with A and B stored transposed.
    let at = f32t(&[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    let bt = f32t(&[2, 3], &[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]);
    let (a, b) = gemm_ab();
    let c = f32t(&[2], &[10.0, 20.0]);
    let want = [13.0, 20.0, 25.0, 32.0];
    assert_exact(
        &eval(&gemm(2.0, 0.5, true, false), &[&at, &b, &c]),
        &[2, 2],
        &want,
    );
    assert_exact(
        &eval(&gemm(2.0, 0.5, false, true), &[&a, &bt, &c]),
        &[2, 2],
        &want,
    );
    assert_exact(
        &eval(&gemm(2.0, 0.5, true, true), &[&at, &bt, &c]),
        &[2, 2],
        &want,
    );
}

#[test]
fn gemm_column_and_scalar_c() {
    let (a, b) = gemm_ab();
    // C = [[1],[2]] broadcasts along columns: [[4+1, 5+1], [10+2, 11+2]].
    let col = f32t(&[2, 1], &[1.0, 2.0]);
    assert_exact(
        &eval(&gemm(1.0, 1.0, false, false), &[&a, &b, &col]),
        &[2, 2],
        &[5.0, 6.0, 12.0, 13.0],
    );
    // Scalar C = 100 with beta -1: A*B - 100.
    let s = f32t(&[], &[100.0]);
    assert_exact(
        &eval(&gemm(1.0, -1.0, false, false), &[&a, &b, &s]),
        &[2, 2],
        &[-96.0, -95.0, -90.0, -89.0],
    );
    // Full [2,2] C.
    let full = f32t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    assert_exact(
        &eval(&gemm(1.0, 1.0, false, false), &[&a, &b, &full]),
        &[2, 2],
        &[5.0, 7.0, 13.0, 15.0],
    );
}

#[test]
fn matmul_batched_against_2d() {
    // A0 = [[1,2],[3,4]], A1 = [[0,1],[1,0]], B = [[5,6],[7,8]].
    // A0*B = [[5+14, 6+16], [15+28, 18+32]] = [[19,22],[43,50]]; A1*B swaps B's rows: [[7,8],[5,6]].
    let a = f32t(&[2, 2, 2], &[1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 1.0, 0.0]);
    let b = f32t(&[2, 2], &[5.0, 6.0, 7.0, 8.0]);
    assert_exact(
        &eval(&Op::MatMul, &[&a, &b]),
        &[2, 2, 2],
        &[19.0, 22.0, 43.0, 50.0, 7.0, 8.0, 5.0, 6.0],
    );
}

#[test]
fn matmul_batch_broadcast_both_sides() {
    // A [2,1,1,2]: rows a0 = [1,2], a1 = [3,4]; B [1,3,2,1]: columns b0 = [1,1], b1 = [1,0], b2 = [0,1].
    // Output [2,3,1,1]: out[i][j] = a_i . b_j = [3,1,2], [7,3,4].
    let a = f32t(&[2, 1, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = f32t(&[1, 3, 2, 1], &[1.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
    assert_exact(
        &eval(&Op::MatMul, &[&a, &b]),
        &[2, 3, 1, 1],
        &[3.0, 1.0, 2.0, 7.0, 3.0, 4.0],
    );
}

#[test]
fn matmul_one_dimensional() {
    // vector . vector = 4 + 10 + 18 = 32, a scalar.
    let u = f32t(&[3], &[1.0, 2.0, 3.0]);
    let v = f32t(&[3], &[4.0, 5.0, 6.0]);
    assert_exact(&eval(&Op::MatMul, &[&u, &v]), &[], &[32.0]);
    // [1,2] . [[1,2,3],[4,5,6]] = [1+8, 2+10, 3+12].
    let r = f32t(&[2], &[1.0, 2.0]);
    let m = f32t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_exact(&eval(&Op::MatMul, &[&r, &m]), &[3], &[9.0, 12.0, 15.0]);
    // [[1,2,3],[4,5,6]] . [1,0,-1] = [1-3, 4-6].
    let c = f32t(&[3], &[1.0, 0.0, -1.0]);
    assert_exact(&eval(&Op::MatMul, &[&m, &c]), &[2], &[-2.0, -2.0]);
    // Batched matrix . vector: A1 = [[1,1,1],[0,0,0]] gives [0, 0].
    let ab = f32t(
        &[2, 2, 3],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
    );
    assert_exact(
        &eval(&Op::MatMul, &[&ab, &c]),
        &[2, 2],
        &[-2.0, -2.0, 0.0, 0.0],
    );
    // vector . batched matrix: [1,1] . [[1,2],[3,4]] = [4,6]; [1,1] . [[0,1],[1,0]] = [1,1].
    let ones = f32t(&[2], &[1.0, 1.0]);
    let bb = f32t(&[2, 2, 2], &[1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 1.0, 0.0]);
    assert_exact(
        &eval(&Op::MatMul, &[&ones, &bb]),
        &[2, 2],
        &[4.0, 6.0, 1.0, 1.0],
    );
}

// ---- BatchNorm / Softmax ----

#[test]
fn batch_norm_exact() {
    // ch0: 2 * (x - 2) / sqrt(4) + 1 = x - 1 -> [0, 2]; ch1: (x - 3) / sqrt(0.25) = 2x - 6 -> [-2, 2].
    let x = f32t(&[1, 2, 1, 2], &[1.0, 3.0, 2.0, 4.0]);
    let p = |v: [f32; 2]| f32t(&[2], &v);
    let (scale, bias, mean, var) = (p([2.0, 1.0]), p([1.0, 0.0]), p([2.0, 3.0]), p([4.0, 0.25]));
    let y = eval(
        &Op::BatchNorm(BatchNorm { epsilon: 0.0 }),
        &[&x, &scale, &bias, &mean, &var],
    );
    assert_exact(&y, &[1, 2, 1, 2], &[0.0, 2.0, -2.0, 2.0]);
}

#[test]
fn batch_norm_epsilon_and_batch() {
    // var 1, eps 1e-5: (x - 0) / sqrt(1.00001) with x = 1 in both batch entries.
    let x = f32t(&[2, 1], &[1.0, -2.0]);
    let one = f32t(&[1], &[1.0]);
    let zero = f32t(&[1], &[0.0]);
    let y = eval(
        &Op::BatchNorm(BatchNorm { epsilon: 1e-5 }),
        &[&x, &one, &zero, &zero, &one],
    );
    let s = 1.0 / 1.00001f64.sqrt(); // 0.99999500004
    assert_close(&y, &[2, 1], &[s, -2.0 * s], 1e-6);
}

#[test]
fn softmax_last_axis_and_stability() {
    // softmax([1,2,3]) = [0.0900305732, 0.2447284711, 0.6652409558]; [0,0,0] -> 1/3 each;
    // [1000,1001,1002] must equal softmax([1,2,3]) (no overflow).
    let x = f32t(
        &[3, 3],
        &[1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1000.0, 1001.0, 1002.0],
    );
    let y = eval(
        &Op::Softmax(Softmax {
            axis: 1,
            flatten: false,
        }),
        &[&x],
    );
    let s = [0.090_030_573_2, 0.244_728_471_1, 0.665_240_955_8];
    let t = 1.0 / 3.0;
    assert_close(
        &y,
        &[3, 3],
        &[s[0], s[1], s[2], t, t, t, s[0], s[1], s[2]],
        1e-7,
    );
}

#[test]
fn softmax_first_axis() {
    // Columns: [0,0] -> [.5,.5]; [0, ln 3] -> [1/4, 3/4]; [1,2] -> [0.2689414214, 0.7310585786].
    let ln3 = 3f32.ln();
    let x = f32t(&[2, 3], &[0.0, 0.0, 1.0, 0.0, ln3, 2.0]);
    let y = eval(
        &Op::Softmax(Softmax {
            axis: 0,
            flatten: false,
        }),
        &[&x],
    );
    assert_close(
        &y,
        &[2, 3],
        &[0.5, 0.25, 0.268_941_421_4, 0.5, 0.75, 0.731_058_578_6],
        1e-7,
    );
}

#[test]
fn softmax_flatten_versus_axis() {
    // x[0] = zeros(2,2); x[1] = [[0, ln 3], [0, 0]].
    let ln3 = 3f32.ln();
    let x = f32t(&[2, 2, 2], &[0.0, 0.0, 0.0, 0.0, 0.0, ln3, 0.0, 0.0]);
    // flatten at axis 1: rows of 4. Row 0 -> 1/4 each; row 1: e^x = [1,3,1,1], sum 6.
    let flat = eval(
        &Op::Softmax(Softmax {
            axis: 1,
            flatten: true,
        }),
        &[&x],
    );
    assert_close(
        &flat,
        &[2, 2, 2],
        &[0.25, 0.25, 0.25, 0.25, 1.0 / 6.0, 0.5, 1.0 / 6.0, 1.0 / 6.0],
        1e-7,
    );
    // Along axis 1 only: pairs (x[b,0,i], x[b,1,i]). For b=1: i=0 -> [0,0] -> .5,.5; i=1 -> [ln3, 0] ->
    // [.75, .25]. Flat order: [b1: (0,0), (0,1), (1,0), (1,1)] = [.5, .75, .5, .25].
    let ax = eval(
        &Op::Softmax(Softmax {
            axis: 1,
            flatten: false,
        }),
        &[&x],
    );
    assert_close(
        &ax,
        &[2, 2, 2],
        &[0.5, 0.5, 0.5, 0.5, 0.5, 0.75, 0.5, 0.25],
        1e-7,
    );
}

// ---- Layout ----

#[test]
fn transpose_2d_and_dtypes() {
    // [[1,2,3],[4,5,6]]^T = [[1,4],[2,5],[3,6]].
    let op = Op::Transpose(Transpose { perm: vec![1, 0] });
    let want = [1.0, 4.0, 2.0, 5.0, 3.0, 6.0];
    for dtype in [DType::F32, DType::F16, DType::I64, DType::U8, DType::I4] {
        let x = Tensor::from_i64(dtype, vec![2, 3], &[1, 2, 3, 4, 5, 6]);
        let y = eval(&op, &[&x]);
        assert_eq!(y.dtype(), dtype);
        assert_exact(&y, &[3, 2], &want);
    }
    // Packed 4-bit with negative values: [[1,-2,3],[-4,5,-6]] -> [1,-4,-2,5,3,-6].
    let x = Tensor::from_i64(DType::I4, vec![2, 3], &[1, -2, 3, -4, 5, -6]);
    assert_eq!(eval(&op, &[&x]).to_i64_vec(), vec![1, -4, -2, 5, 3, -6]);
}

#[test]
fn transpose_3d_by_formula() {
    // x[j][k][i] = 12j + 4k + i (shape [2,3,4]); perm [2,0,1] gives out[i][j][k] = x[j][k][i].
    let x = Tensor::from_i64(DType::I32, vec![2, 3, 4], &(0..24).collect::<Vec<_>>());
    let y = eval(
        &Op::Transpose(Transpose {
            perm: vec![2, 0, 1],
        }),
        &[&x],
    );
    let mut want = Vec::new();
    for i in 0..4 {
        for j in 0..2 {
            for k in 0..3 {
                want.push((12 * j + 4 * k + i) as f64);
            }
        }
    }
    assert_exact(&y, &[4, 2, 3], &want);
}

#[test]
fn transpose_keeps_float_bits() {
    // Data movement copies bits: -0.0 and a NaN payload survive.
    let nan = f32::from_bits(0x7fc0_1234);
    let x = f32t(&[2, 1], &[-0.0, nan]);
    let y = eval(&Op::Transpose(Transpose { perm: vec![1, 0] }), &[&x]);
    assert_eq!(y.bytes(), x.bytes());
}

#[test]
fn concat_axes() {
    // axis 1: [[1],[2]] ++ [[3,4],[5,6]] = [[1,3,4],[2,5,6]].
    let a = Tensor::from_i64(DType::I64, vec![2, 1], &[1, 2]);
    let b = Tensor::from_i64(DType::I64, vec![2, 2], &[3, 4, 5, 6]);
    let y = eval(&Op::Concat(Concat { axis: 1 }), &[&a, &b]);
    assert_eq!(y.dtype(), DType::I64);
    assert_exact(&y, &[2, 3], &[1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
    // axis 0 with three inputs, one repeated: [1,2] ++ [[3,4],[5,6]] ++ [1,2].
    let a0 = f32t(&[1, 2], &[1.0, 2.0]);
    let b0 = f32t(&[2, 2], &[3.0, 4.0, 5.0, 6.0]);
    let y = eval(&Op::Concat(Concat { axis: 0 }), &[&a0, &b0, &a0]);
    assert_exact(&y, &[4, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0, 2.0]);
    // Packed 4-bit: [1,-2] ++ [3] = [1,-2,3].
    let p = Tensor::from_i64(DType::I4, vec![2], &[1, -2]);
    let q = Tensor::from_i64(DType::I4, vec![1], &[3]);
    assert_eq!(
        eval(&Op::Concat(Concat { axis: 0 }), &[&p, &q]).to_i64_vec(),
        vec![1, -2, 3]
    );
}

fn slice(starts: &[i64], ends: &[i64], axes: &[usize], steps: &[i64]) -> Op {
    Op::Slice(Slice {
        starts: starts.to_vec(),
        ends: ends.to_vec(),
        axes: axes.to_vec(),
        steps: steps.to_vec(),
    })
}

#[test]
fn slice_negative_steps() {
    let x = Tensor::from_i64(DType::I64, vec![5], &[0, 1, 2, 3, 4]);
    // Whole axis reversed: start -1 -> 4, end "minus infinity" clamps to -1.
    assert_eq!(
        eval(&slice(&[-1], &[i64::MIN], &[0], &[-1]), &[&x]).to_i64_vec(),
        vec![4, 3, 2, 1, 0]
    );
    // 4 down to (not including) 0, step -2: [4, 2].
    assert_eq!(
        eval(&slice(&[4], &[0], &[0], &[-2]), &[&x]).to_i64_vec(),
        vec![4, 2]
    );
    // Start past the end clamps to the last element: 100 -> 4, down to 1 exclusive: [4, 3, 2].
    assert_eq!(
        eval(&slice(&[100], &[1], &[0], &[-1]), &[&x]).to_i64_vec(),
        vec![4, 3, 2]
    );
    // Forward with clamped end and step 3: [0, 3].
    assert_eq!(
        eval(&slice(&[0], &[100], &[0], &[3]), &[&x]).to_i64_vec(),
        vec![0, 3]
    );
    // Empty result: start 1, end 3, step -1.
    assert_eq!(eval(&slice(&[1], &[3], &[0], &[-1]), &[&x]).shape(), &[0]);
}

#[test]
fn slice_2d_mixed() {
    // x = 0..12 as 3x4. Rows 2 down to (end -4 -> -1, i.e. through row 0): [2,1,0]; cols 0, 2.
    let x = Tensor::from_i64(DType::I32, vec![3, 4], &(0..12).collect::<Vec<_>>());
    let y = eval(&slice(&[2, 0], &[-4, 4], &[0, 1], &[-1, 2]), &[&x]);
    assert_exact(&y, &[3, 2], &[8.0, 10.0, 4.0, 6.0, 0.0, 2.0]);
}

#[test]
fn slice_empty_axis_negative_step() {
    // Used to panic in `clamp(0, -1)`: an empty axis walked backwards is empty.
    let x = f32t(&[0, 2], &[]);
    let y = eval(&slice(&[-1], &[-10], &[0], &[-1]), &[&x]);
    assert_eq!(y.shape(), &[0, 2]);
}

#[test]
fn gather_negative_indices_axis0() {
    // data [[1,2],[3,4],[5,6]], indices [-1, 0] -> rows 2 and 0.
    let data = Tensor::from_i64(DType::I64, vec![3, 2], &[1, 2, 3, 4, 5, 6]);
    let idx = Tensor::from_i64(DType::I64, vec![2], &[-1, 0]);
    let y = eval(&Op::Gather(Gather { axis: 0 }), &[&data, &idx]);
    assert_eq!(y.shape(), &[2, 2]);
    assert_eq!(y.to_i64_vec(), vec![5, 6, 1, 2]);
}

#[test]
fn gather_axis1_i32_indices_2d() {
    // indices [[1],[-2]] (i32) on axis 1 of [3,2]: out[i][j][0] = data[i][idx[j]] with idx = [1, 0].
    let data = f32t(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let idx = Tensor::from_i64(DType::I32, vec![2, 1], &[1, -2]);
    let y = eval(&Op::Gather(Gather { axis: 1 }), &[&data, &idx]);
    assert_exact(&y, &[3, 2, 1], &[2.0, 1.0, 4.0, 3.0, 6.0, 5.0]);
}

#[test]
fn gather_scalar_index_and_f16() {
    // A scalar index removes the axis: data[-2] = data[1] = [3,4].
    let data = Tensor::from_f64(DType::F16, vec![3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let idx = Tensor::from_i64(DType::I64, vec![], &[-2]);
    let y = eval(&Op::Gather(Gather { axis: 0 }), &[&data, &idx]);
    assert_eq!(y.dtype(), DType::F16);
    assert_exact(&y, &[2], &[3.0, 4.0]);
}

#[test]
fn gather_out_of_range_is_an_error() {
    let data = f32t(&[3], &[1.0, 2.0, 3.0]);
    let idx = Tensor::from_i64(DType::I64, vec![1], &[-4]);
    let err = Op::Gather(Gather { axis: 0 })
        .eval(&[Some(&data), Some(&idx)])
        .unwrap_err();
    assert!(
        matches!(&err, OpError::Invalid(m) if m.contains("index -4")),
        "{err}"
    );
}

#[test]
fn reshape_zero_and_minus_one() {
    let x = f32t(&[2, 3, 4], &seq(24, 0.0));
    // [0, -1]: keep dim 0 (2), infer 24 / 2 = 12.
    let y = eval(
        &Op::Reshape(Reshape {
            shape: vec![0, -1],
            allowzero: false,
        }),
        &[&x],
    );
    assert_eq!(y.shape(), &[2, 12]);
    assert_eq!(y.bytes(), x.bytes());
    // [-1, 0, 2]: dim 1 copies 3, so -1 = 24 / (3 * 2) = 4.
    let y = eval(
        &Op::Reshape(Reshape {
            shape: vec![-1, 0, 2],
            allowzero: false,
        }),
        &[&x],
    );
    assert_eq!(y.shape(), &[4, 3, 2]);
    // allowzero: a 0 is a real empty dimension.
    let e = f32t(&[0, 3], &[]);
    let y = eval(
        &Op::Reshape(Reshape {
            shape: vec![3, 0],
            allowzero: true,
        }),
        &[&e],
    );
    assert_eq!(y.shape(), &[3, 0]);
}

#[test]
fn shape_with_start_and_end() {
    let x = f32t(&[2, 3, 4, 5], &vec![0.0; 120]);
    let shape = |start, end| eval(&Op::Shape(ShapeOf { start, end }), &[&x]);
    let y = shape(1, Some(-1));
    assert_eq!(
        (y.dtype(), y.shape(), y.to_i64_vec()),
        (DType::I64, &[2][..], vec![3, 4])
    );
    assert_eq!(shape(-2, None).to_i64_vec(), vec![4, 5]);
    assert_eq!(shape(0, None).to_i64_vec(), vec![2, 3, 4, 5]);
    // Clamped: start beyond the rank, or end before start, gives an empty shape.
    assert_eq!(shape(3, Some(1)).shape(), &[0]);
    assert_eq!(shape(-100, Some(100)).to_i64_vec(), vec![2, 3, 4, 5]);
}

// ---- Elementwise fixes ----

#[test]
fn max_min_relu_propagate_nan() {
    let a = f32t(&[2], &[f32::NAN, 1.0]);
    let b = f32t(&[2], &[0.0, f32::NAN]);
    for op in [kiln_ir::ops::BinaryOp::Max, kiln_ir::ops::BinaryOp::Min] {
        let y = eval(&Op::Binary(op), &[&a, &b]);
        assert!(y.to_f64_vec().iter().all(|v| v.is_nan()), "{}", op.name());
    }
    let y = eval(&Op::Unary(kiln_ir::ops::UnaryOp::Relu), &[&a]);
    assert!(y.to_f64_vec()[0].is_nan());
}

#[test]
fn integer_unary_is_exact_in_i64() {
    // 2^53 + 1 is not an f64; neg and relu must keep it exact.
    let big = (1i64 << 53) + 1;
    let x = Tensor::from_i64(DType::I64, vec![2], &[big, -big]);
    assert_eq!(
        eval(&Op::Unary(kiln_ir::ops::UnaryOp::Neg), &[&x]).to_i64_vec(),
        vec![-big, big]
    );
    assert_eq!(
        eval(&Op::Unary(kiln_ir::ops::UnaryOp::Relu), &[&x]).to_i64_vec(),
        vec![big, 0]
    );
    let clip = kiln_ir::ops::UnaryOp::Clip {
        min: -3.0,
        max: f32::INFINITY,
    };
    assert_eq!(eval(&Op::Unary(clip), &[&x]).to_i64_vec(), vec![big, -3]);
}

#[test]
fn integer_pow_with_float_exponent() {
    // 9 ^ 0.5 = 3 (the exponent is not truncated to 0 first); 2 ^ 1.5 = 2.83 truncates to 2.
    let a = Tensor::from_i64(DType::I32, vec![2], &[9, 2]);
    let b = f32t(&[2], &[0.5, 1.5]);
    let y = eval(&Op::Binary(kiln_ir::ops::BinaryOp::Pow), &[&a, &b]);
    assert_eq!((y.dtype(), y.to_i64_vec()), (DType::I32, vec![3, 2]));
}

#[test]
fn f16_elementwise_output_dtype() {
    let a = Tensor::from_f64(DType::F16, vec![1], &[f16::from_f32(0.5).to_f64()]);
    let y = eval(&Op::Binary(kiln_ir::ops::BinaryOp::Add), &[&a, &a]);
    assert_eq!(y.dtype(), DType::F16);
    assert_exact(&y, &[1], &[1.0]);
}

// ---- Whole graphs ----

/// Evaluates every node in topological order from the given input tensors.
fn interpret(g: &Graph, inputs: &[Tensor]) -> HashMap<Value, Tensor> {
    let mut vals: HashMap<Value, Tensor> = HashMap::new();
    for id in g.topo_order().unwrap() {
        let node = g.node(id);
        let outs = match &node.op {
            Op::Input(i) => vec![inputs[*i].clone()],
            op => {
                let ins: Vec<Option<&Tensor>> =
                    g.inputs(id).iter().map(|v| v.map(|v| &vals[&v])).collect();
                op.eval(&ins)
                    .unwrap_or_else(|e| panic!("node {:?}: {e}", node.name))
            }
        };
        for (slot, t) in outs.into_iter().enumerate() {
            vals.insert(
                Value {
                    node: id,
                    slot: slot as u32,
                },
                t,
            );
        }
    }
    vals
}

#[test]
fn every_op_graph_evaluates_with_declared_types() {
    let g = common::every_op();
    let x = f32t(&[1, 2, 4, 4], &common::ramp(32, 0.25));
    let ids = Tensor::from_i64(DType::I64, vec![3], &[1, -1, 0]);
    let seq = f32t(&[2, 3], &[0.0; 6]);
    let vals = interpret(&g, &[x, ids, seq]);
    // Every value whose type is fully known has exactly that type.
    for (v, t) in &vals {
        if g.ty(*v).dims().is_some() {
            assert_eq!(&t.ty(), g.ty(*v), "{}", g.node(v.node).name);
        }
    }
}

#[test]
fn mlp_by_hand() {
    // ramp(n, s)[i] = ((7i mod 11) - 5) * s.
    // x = [1, 0, 0, 0] picks row 0 of fc1.weight, ramp(12, 0.25)[0..3] = [-1.25, 0.5, -0.5];
    // + bias [0.5, -0.25, 0.001] = [-0.75, 0.25, -0.499]; relu -> [0, 0.25, 0].
    // fc2 (trans_b, weight rows ramp(6, 0.5) = [-2.5, 1, -1] and [2.5, 0.5, -1.5]) + bias [0, -1.5]:
    // [0.25 * 1, 0.25 * 0.5 - 1.5] = [0.25, -1.375]; softmax: difference 1.625,
    // p1 = 1 / (1 + e^1.625) = 0.16451646, p0 = 0.83548354.
    let g = common::mlp();
    let vals = interpret(&g, &[f32t(&[1, 4], &[1.0, 0.0, 0.0, 0.0])]);
    let y = &vals[&g.outputs[0].1];
    assert_close(y, &[1, 2], &[0.835_483_54, 0.164_516_46], 1e-6);
}

// ---- Helpers other crates use ----

#[test]
fn shape_value_for_dims() {
    let s = ShapeOf {
        start: -3,
        end: None,
    };
    assert_eq!(s.value_for(&[7, 8, 9, 10]).to_i64_vec(), vec![8, 9, 10]);
    assert_eq!(s.value_for(&[]).shape(), &[0]);
}

#[test]
fn auto_pad_resolution() {
    use kiln_ir::ops::{resolve_auto_pad, AutoPad};
    // input 5, kernel 3, stride 2: out = ceil(5/2) = 3, total pad = (3-1)*2 + 3 - 5 = 2 -> 1 + 1.
    assert_eq!(
        resolve_auto_pad(AutoPad::SameUpper, &[5], &[3], &[2], &[1], &[]),
        vec![1, 1]
    );
    // input 4: out 2, total = 2 + 3 - 4 = 1; the odd pad goes at the end (upper) or beginning (lower).
    assert_eq!(
        resolve_auto_pad(AutoPad::SameUpper, &[4], &[3], &[2], &[1], &[]),
        vec![0, 1]
    );
    assert_eq!(
        resolve_auto_pad(AutoPad::SameLower, &[4], &[3], &[2], &[1], &[]),
        vec![1, 0]
    );
    // Dilation 2 makes the 3-tap kernel 5 wide: input 4, stride 1 -> total 4 - 1 + 5 - 4 = 4.
    assert_eq!(
        resolve_auto_pad(AutoPad::SameUpper, &[4], &[3], &[1], &[2], &[]),
        vec![2, 2]
    );
    assert_eq!(
        resolve_auto_pad(AutoPad::Valid, &[4, 4], &[3, 3], &[1, 1], &[1, 1], &[]),
        vec![0; 4]
    );
    assert_eq!(
        resolve_auto_pad(AutoPad::NotSet, &[4], &[3], &[1], &[1], &[2, 0]),
        vec![2, 0]
    );
    // Raw, invalid attributes must not panic (inference reports them later).
    let _ = resolve_auto_pad(AutoPad::SameUpper, &[0, 3], &[0], &[0, 0], &[], &[]);
}

#[test]
fn norm_axis_range() {
    use kiln_ir::ops::norm_axis;
    assert_eq!(norm_axis(-1, 3).unwrap(), 2);
    assert_eq!(norm_axis(-3, 3).unwrap(), 0);
    assert_eq!(norm_axis(2, 3).unwrap(), 2);
    assert!(norm_axis(3, 3).is_err());
    assert!(norm_axis(-4, 3).is_err());
    // A scalar has no axis (this used to return Ok(0)).
    assert!(norm_axis(0, 0).is_err());
    assert!(norm_axis(i64::MIN, 2).is_err());
}

// ---- Fused activation chains (`post`) ----

#[test]
fn conv_and_gemm_apply_their_post_chain_in_order() {
    use kiln_ir::ops::UnaryOp;
    // The conv_1x1_with_bias product: [1.5, 2.5, 3.5, 4.5, 10, 20, 30, 40, -9, -17, -25, -33].
    let x = f32t(&[1, 2, 2, 2], &[1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]);
    let w = f32t(&[3, 2, 1, 1], &[1.0, 0.0, 0.0, 1.0, 2.0, -1.0]);
    let b = f32t(&[3], &[0.5, 0.0, -1.0]);
    let Op::Conv(mut c) = conv_op(&[1, 1], &[1, 1], &[0; 4], &[1, 1], 1) else {
        unreachable!()
    };
    // Clip to [-10, 25] then leaky relu 0.5: order matters (-17 -> -10 -> -5, not -8.5 -> -8.5).
    c.post = vec![
        UnaryOp::Clip {
            min: -10.0,
            max: 25.0,
        },
        UnaryOp::LeakyRelu { alpha: 0.5 },
    ];
    assert_exact(
        &eval(&Op::Conv(c), &[&x, &w, &b]),
        &[1, 3, 2, 2],
        &[
            1.5, 2.5, 3.5, 4.5, 10.0, 20.0, 25.0, 25.0, -4.5, -5.0, -5.0, -5.0,
        ],
    );
    // gemm [[4,5],[10,11]] - [8, 8] = [[-4,-3],[2,3]], then relu.
    let (a, bm) = gemm_ab();
    let Op::Gemm(mut g) = gemm(1.0, 1.0, false, false) else {
        unreachable!()
    };
    g.post = vec![UnaryOp::Relu];
    let c8 = f32t(&[2], &[-8.0, -8.0]);
    assert_exact(
        &eval(&Op::Gemm(g), &[&a, &bm, &c8]),
        &[2, 2],
        &[0.0, 0.0, 2.0, 3.0],
    );
}

/// Channels-last conv: input [N=1, H=2, W=2, C=2] with position (h, w) holding channels
/// `[p, 10 p]` for p = 1..4 in row-major order; a 1x1 conv with weights [[1, 1], [2, 0]] (M=2, C=2)
/// and bias [0, 0.5] gives, per position, `[p + 10 p, 2 p + 0.5] = [11 p, 2 p + 0.5]`, also
/// channels-last. A 2x2 valid conv with all-ones weights (M=1) sums every input: 11 * (1+2+3+4).
#[test]
fn conv_channels_last() {
    let x = f32t(&[1, 2, 2, 2], &[1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0]);
    let nhwc = |k: usize| {
        let Op::Conv(mut c) = conv_op(&[k, k], &[1, 1], &[0, 0, 0, 0], &[1, 1], 1) else {
            unreachable!()
        };
        c.layout = kiln_ir::ops::Layout::Nhwc;
        Op::Conv(c)
    };
    let w = f32t(&[2, 2, 1, 1], &[1.0, 1.0, 2.0, 0.0]);
    let b = f32t(&[2], &[0.0, 0.5]);
    let y = eval(&nhwc(1), &[&x, &w, &b]);
    assert_exact(
        &y,
        &[1, 2, 2, 2],
        &[11.0, 2.5, 22.0, 4.5, 33.0, 6.5, 44.0, 8.5],
    );
    let w2 = f32t(&[1, 2, 2, 2], &[1.0; 8]);
    assert_exact(&eval(&nhwc(2), &[&x, &w2]), &[1, 1, 1, 1], &[110.0]);
    // Shape inference reads the channels from the last axis: C=2 against weights [2, 2, 1, 1].
    let xt = kiln_ir::TensorType::new(DType::F32, &[1, 5, 7, 2]);
    let wt = kiln_ir::TensorType::new(DType::F32, &[3, 2, 1, 1]);
    let facts = [
        Some(kiln_ir::ops::Fact {
            ty: &xt,
            value: None,
        }),
        Some(kiln_ir::ops::Fact {
            ty: &wt,
            value: None,
        }),
    ];
    let out = nhwc(1).infer(&facts).unwrap();
    assert_eq!(out[0], kiln_ir::TensorType::new(DType::F32, &[1, 5, 7, 3]));
}

/// Channels-last pooling on the same input: a 2x2 max pool takes, per channel, the max over the
/// four positions ([4, 40]); the global average is the mean per channel ([2.5, 25]).
#[test]
fn pool_channels_last() {
    let x = f32t(&[1, 2, 2, 2], &[1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0]);
    let Op::Pool(mut p) = pool_op(PoolKind::Max, &[2, 2], &[1, 1], &[0, 0, 0, 0], false, false)
    else {
        unreachable!()
    };
    p.layout = kiln_ir::ops::Layout::Nhwc;
    assert_exact(&eval(&Op::Pool(p), &[&x]), &[1, 1, 1, 2], &[4.0, 40.0]);
    let gp = Op::GlobalPool(GlobalPool {
        kind: PoolKind::Avg,
        layout: kiln_ir::ops::Layout::Nhwc,
    });
    assert_exact(&eval(&gp, &[&x]), &[1, 1, 1, 2], &[2.5, 25.0]);
}

/// The permutations between the layouts, written out for rank 4 and 3.
#[test]
fn layout_permutations() {
    use kiln_ir::ops::Layout;
    assert_eq!(Layout::Nhwc.from_nchw(4), vec![0, 2, 3, 1]);
    assert_eq!(Layout::Nhwc.to_nchw(4), vec![0, 3, 1, 2]);
    assert_eq!(Layout::Nhwc.from_nchw(3), vec![0, 2, 1]);
    assert_eq!(Layout::Nhwc.to_nchw(3), vec![0, 2, 1]);
    assert_eq!(Layout::Nchw.from_nchw(4), vec![0, 1, 2, 3]);
    assert_eq!(Layout::Nhwc.channel_axis(4), 3);
}
