//! Reference evaluators of the reduction, softmax-family, normalization and transformer-block ops
//! against hand-computed values (each worked out next to it), and their textual round trip.

use kiln_ir::ops::{ArgReduce, Attention, LayerNorm, Lrn, Reduce, ReduceKind, Rotary, Softmax};
use kiln_ir::{parse, print, verify, DType, Graph, Op, PrintOptions, Tensor, TensorType};

fn eval_all(op: &Op, ins: &[Option<&Tensor>]) -> Vec<Tensor> {
    op.eval(ins)
        .unwrap_or_else(|e| panic!("{} failed: {e}", op.name()))
}

fn eval(op: &Op, ins: &[&Tensor]) -> Tensor {
    let ins: Vec<Option<&Tensor>> = ins.iter().map(|&t| Some(t)).collect();
    eval_all(op, &ins).remove(0)
}

#[track_caller]
fn close(t: &Tensor, shape: &[usize], want: &[f64]) {
    assert_eq!(t.shape(), shape, "shape");
    let got = t.to_f64_vec();
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= 1e-6 * w.abs().max(1.0) || (g.is_nan() && w.is_nan()) || g == w;
        assert!(ok, "element {i}: got {g}, want {w} (all: {got:?})");
    }
}

fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(shape.to_vec(), v)
}

fn red(kind: ReduceKind, axes: &[usize], keepdims: bool) -> Op {
    Op::Reduce(Reduce {
        kind,
        axes: axes.to_vec(),
        keepdims,
    })
}

#[test]
fn reduce_kinds_by_hand() {
    // [[1, 2], [3, 4]]
    let x = f32t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    close(
        &eval(&red(ReduceKind::Sum, &[1], true), &[&x]),
        &[2, 1],
        &[3.0, 7.0],
    );
    close(
        &eval(&red(ReduceKind::Sum, &[0], false), &[&x]),
        &[2],
        &[4.0, 6.0],
    );
    close(
        &eval(&red(ReduceKind::Mean, &[0, 1], false), &[&x]),
        &[],
        &[2.5],
    );
    close(
        &eval(&red(ReduceKind::Max, &[0], true), &[&x]),
        &[1, 2],
        &[3.0, 4.0],
    );
    close(
        &eval(&red(ReduceKind::Min, &[1], false), &[&x]),
        &[2],
        &[1.0, 3.0],
    );
    close(
        &eval(&red(ReduceKind::Prod, &[0, 1], true), &[&x]),
        &[1, 1],
        &[24.0],
    );
    // sqrt(1 + 4 + 9 + 16) = sqrt(30); ln(1 + 2 + 3 + 4) = ln 10.
    close(
        &eval(&red(ReduceKind::L2, &[0, 1], false), &[&x]),
        &[],
        &[30f64.sqrt()],
    );
    close(
        &eval(&red(ReduceKind::LogSum, &[0, 1], false), &[&x]),
        &[],
        &[10f64.ln()],
    );
    close(
        &eval(&red(ReduceKind::SumSquare, &[1], false), &[&x]),
        &[2],
        &[5.0, 25.0],
    );
    let neg = f32t(&[3], &[-1.0, 2.0, -3.0]);
    close(
        &eval(&red(ReduceKind::L1, &[0], false), &[&neg]),
        &[],
        &[6.0],
    );
    // log(e^0 + e^(ln 3)) = ln 4, also for huge inputs (1000 + ln 4) where exp overflows.
    let l = f32t(&[2], &[0.0, 3f32.ln()]);
    close(
        &eval(&red(ReduceKind::LogSumExp, &[0], false), &[&l]),
        &[],
        &[4f64.ln()],
    );
    let big = Tensor::from_f64(DType::F64, vec![2], &[1000.0, 1000.0 + 3f64.ln()]);
    close(
        &eval(&red(ReduceKind::LogSumExp, &[0], false), &[&big]),
        &[],
        &[1000.0 + 4f64.ln()],
    );
}

#[test]
fn reduce_over_no_axes_maps_each_element() {
    // noop_with_empty_axes: every element is its own group, so sum_square squares.
    let x = f32t(&[3], &[-1.0, 2.0, 3.0]);
    close(
        &eval(&red(ReduceKind::SumSquare, &[], true), &[&x]),
        &[3],
        &[1.0, 4.0, 9.0],
    );
    close(
        &eval(&red(ReduceKind::Sum, &[], false), &[&x]),
        &[3],
        &[-1.0, 2.0, 3.0],
    );
}

#[test]
fn reduce_empty_groups_give_the_identity() {
    let x = Tensor::zeros(DType::F32, vec![2, 0, 3]);
    let inf = f64::INFINITY;
    for (kind, want) in [
        (ReduceKind::Sum, 0.0),
        (ReduceKind::Prod, 1.0),
        (ReduceKind::Max, -inf),
        (ReduceKind::Min, inf),
        (ReduceKind::L1, 0.0),
        (ReduceKind::L2, 0.0),
        (ReduceKind::SumSquare, 0.0),
        (ReduceKind::LogSum, -inf),
        (ReduceKind::LogSumExp, -inf),
        (ReduceKind::Mean, f64::NAN),
    ] {
        close(&eval(&red(kind, &[1], true), &[&x]), &[2, 1, 3], &[want; 6]);
    }
    // Integers: the dtype's extremes; bools: false / true.
    let xi = Tensor::zeros(DType::I8, vec![0, 2]);
    close(
        &eval(&red(ReduceKind::Max, &[0], false), &[&xi]),
        &[2],
        &[-128.0; 2],
    );
    close(
        &eval(&red(ReduceKind::Min, &[0], false), &[&xi]),
        &[2],
        &[127.0; 2],
    );
    let xb = Tensor::zeros(DType::Bool, vec![0]);
    close(
        &eval(&red(ReduceKind::Max, &[0], false), &[&xb]),
        &[],
        &[0.0],
    );
    close(
        &eval(&red(ReduceKind::Min, &[0], false), &[&xb]),
        &[],
        &[1.0],
    );
}

#[test]
fn reduce_integers_wrap_and_mean_truncates() {
    // 100 + 100 = 200 wraps to -56 in i8.
    let x = Tensor::from_i64(DType::I8, vec![2], &[100, 100]);
    close(
        &eval(&red(ReduceKind::Sum, &[0], false), &[&x]),
        &[],
        &[-56.0],
    );
    // (-3 + -4) / 2 = -3.5 truncates to -3.
    let y = Tensor::from_i64(DType::I32, vec![2], &[-3, -4]);
    close(
        &eval(&red(ReduceKind::Mean, &[0], false), &[&y]),
        &[],
        &[-3.0],
    );
    // u8 max compares unsigned: 200 > 7.
    let u = Tensor::from_i64(DType::U8, vec![2], &[200, 7]);
    close(
        &eval(&red(ReduceKind::Max, &[0], false), &[&u]),
        &[],
        &[200.0],
    );
    let b = Tensor::from_i64(DType::Bool, vec![2, 2], &[1, 0, 0, 0]);
    close(
        &eval(&red(ReduceKind::Max, &[1], false), &[&b]),
        &[2],
        &[1.0, 0.0],
    );
    close(
        &eval(&red(ReduceKind::Min, &[1], false), &[&b]),
        &[2],
        &[0.0, 0.0],
    );
    // L2 has no integer form.
    let e = red(ReduceKind::L2, &[0], false).eval(&[Some(&y)]);
    assert!(e.is_err());
}

#[test]
fn argmax_argmin_ties_and_nan() {
    let arg = |max, axis, keepdims, last| {
        Op::ArgReduce(ArgReduce {
            max,
            axis,
            keepdims,
            select_last_index: last,
        })
    };
    // [[2, 5, 5], [7, 1, 1]]
    let x = f32t(&[2, 3], &[2.0, 5.0, 5.0, 7.0, 1.0, 1.0]);
    let t = eval(&arg(true, 1, true, false), &[&x]);
    assert_eq!(t.dtype(), DType::I64);
    close(&t, &[2, 1], &[1.0, 0.0]);
    close(&eval(&arg(true, 1, false, true), &[&x]), &[2], &[2.0, 0.0]);
    close(
        &eval(&arg(false, 1, false, false), &[&x]),
        &[2],
        &[0.0, 1.0],
    );
    close(&eval(&arg(false, 1, false, true), &[&x]), &[2], &[0.0, 2.0]);
    close(
        &eval(&arg(true, 0, false, false), &[&x]),
        &[3],
        &[1.0, 0.0, 0.0],
    );
    // The first NaN wins, as numpy's argmax and argmin.
    let n = f32t(&[4], &[1.0, f32::NAN, 9.0, f32::NAN]);
    close(&eval(&arg(true, 0, false, true), &[&n]), &[], &[1.0]);
    close(&eval(&arg(false, 0, false, false), &[&n]), &[], &[1.0]);
    let i = Tensor::from_i64(DType::I64, vec![3], &[i64::MIN, i64::MAX, i64::MAX]);
    close(&eval(&arg(true, 0, false, true), &[&i]), &[], &[2.0]);
}

#[test]
fn log_softmax_and_hardmax_by_hand() {
    let sm = Softmax {
        axis: 1,
        flatten: false,
    };
    // softmax([0, ln 3]) = [1/4, 3/4].
    let x = f32t(&[1, 2], &[0.0, 3f32.ln()]);
    close(
        &eval(&Op::LogSoftmax(sm), &[&x]),
        &[1, 2],
        &[-(4f64.ln()), (0.75f64).ln()],
    );
    // Large inputs do not overflow: the same row shifted by 1000.
    let big = f32t(&[1, 2], &[1000.0, 1000.0 + 3f32.ln()]);
    let t = eval(&Op::LogSoftmax(sm), &[&big]);
    assert!(
        (t.get_f64(0) + 4f64.ln()).abs() < 1e-3,
        "{:?}",
        t.to_f64_vec()
    );
    // The first maximum gets the one.
    let h = f32t(&[2, 4], &[1.0, 3.0, 3.0, 2.0, -1.0, -5.0, -1.0, -2.0]);
    close(
        &eval(&Op::Hardmax(sm), &[&h]),
        &[2, 4],
        &[0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    );
    // Along axis 0 of [2, 2]: columns [1, 4] and [3, 2].
    let c = f32t(&[2, 2], &[1.0, 3.0, 4.0, 2.0]);
    let sm0 = Softmax {
        axis: 0,
        flatten: false,
    };
    close(
        &eval(&Op::Hardmax(sm0), &[&c]),
        &[2, 2],
        &[0.0, 1.0, 1.0, 0.0],
    );
}

#[test]
fn layer_and_rms_norm_by_hand() {
    let ln = LayerNorm {
        axis: 1,
        epsilon: 0.0,
    };
    // Row [1, 2, 3, 4]: mean 2.5, variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25.
    let x = f32t(&[1, 4], &[1.0, 2.0, 3.0, 4.0]);
    let s = f32t(&[4], &[1.0, 2.0, 1.0, 1.0]);
    let b = f32t(&[4], &[0.0, 0.0, 0.0, 10.0]);
    let out = eval_all(&Op::LayerNorm(ln), &[Some(&x), Some(&s), Some(&b)]);
    let r = 1.0 / 1.25f64.sqrt();
    close(&out[0], &[1, 4], &[-1.5 * r, -r, 0.5 * r, 1.5 * r + 10.0]);
    close(&out[1], &[1, 1], &[2.5]);
    close(&out[2], &[1, 1], &[r]);
    // Without scale and bias, over both axes of [2, 2]: rows of the whole tensor.
    let ln0 = LayerNorm {
        axis: 0,
        epsilon: 0.0,
    };
    let out = eval_all(&Op::LayerNorm(ln0), &[Some(&x.reshaped(vec![2, 2]))]);
    close(&out[0], &[2, 2], &[-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r]);
    // RMS of [3, 4] is sqrt((9 + 16) / 2) = sqrt(12.5); epsilon 0.5 makes it sqrt(13).
    let rms = LayerNorm {
        axis: 1,
        epsilon: 0.5,
    };
    let x2 = f32t(&[1, 2], &[3.0, 4.0]);
    let s2 = f32t(&[2], &[1.0, -1.0]);
    let out = eval_all(&Op::RmsNorm(rms), &[Some(&x2), Some(&s2)]);
    assert_eq!(out.len(), 1);
    let k = 1.0 / 13f64.sqrt();
    close(&out[0], &[1, 2], &[3.0 * k, -4.0 * k]);
}

#[test]
fn lrn_by_hand() {
    // Channels [1, 2, 3], size 3 (one back, one forward), alpha 3, beta 1, bias 1:
    // c0: 1 + 1 * (1 + 4) = 6; c1: 1 + (1 + 4 + 9) = 15; c2: 1 + (4 + 9) = 14.
    let op = Op::Lrn(Lrn {
        size: 3,
        alpha: 3.0,
        beta: 1.0,
        bias: 1.0,
    });
    let x = f32t(&[1, 3, 1, 1], &[1.0, 2.0, 3.0]);
    close(
        &eval(&op, &[&x]),
        &[1, 3, 1, 1],
        &[1.0 / 6.0, 2.0 / 15.0, 3.0 / 14.0],
    );
    // beta 0.5: square roots of the denominators.
    let op = Op::Lrn(Lrn {
        size: 3,
        alpha: 3.0,
        beta: 0.5,
        bias: 1.0,
    });
    close(
        &eval(&op, &[&x]),
        &[1, 3, 1, 1],
        &[1.0 / 6f64.sqrt(), 2.0 / 15f64.sqrt(), 3.0 / 14f64.sqrt()],
    );
}

fn attn(causal: bool, qk_mode: Option<u8>) -> Attention {
    Attention {
        scale: 1.0,
        causal,
        softcap: 0.0,
        past_len: 0,
        left_window: -1,
        right_window: -1,
        qk_mode,
        wide_softmax: false,
    }
}

#[test]
fn attention_by_hand() {
    // One query (1.0), two keys (0, ln 3): probabilities [1/4, 3/4]; values 4 and 8 give 7.
    let q = f32t(&[1, 1, 1, 1], &[1.0]);
    let k = f32t(&[1, 1, 2, 1], &[0.0, 3f32.ln()]);
    let v = f32t(&[1, 1, 2, 1], &[4.0, 8.0]);
    let out = eval_all(
        &Op::Attention(attn(false, Some(3))),
        &[Some(&q), Some(&k), Some(&v)],
    );
    close(&out[0], &[1, 1, 1, 1], &[7.0]);
    close(&out[1], &[1, 1, 1, 2], &[0.25, 0.75]);
    // Causal with the query at position 0: only key 0 is visible.
    let out = eval_all(
        &Op::Attention(attn(true, None)),
        &[Some(&q), Some(&k), Some(&v)],
    );
    assert_eq!(out.len(), 1);
    close(&out[0], &[1, 1, 1, 1], &[4.0]);
    // A cache of one key before the block makes key 1 visible again.
    let mut past = attn(true, None);
    past.past_len = 1;
    let out = eval_all(&Op::Attention(past), &[Some(&q), Some(&k), Some(&v)]);
    close(&out[0], &[1, 1, 1, 1], &[7.0]);
    // An additive mask of ln 3 on key 0 evens the scores: (4 + 8) / 2.
    let m = f32t(&[2], &[3f32.ln(), 0.0]);
    let out = eval_all(
        &Op::Attention(attn(false, Some(2))),
        &[Some(&q), Some(&k), Some(&v), Some(&m)],
    );
    close(&out[0], &[1, 1, 1, 1], &[6.0]);
    close(&out[1], &[1, 1, 1, 2], &[3f64.ln(), 3f64.ln()]);
    // A bool mask that hides everything: the row attends to nothing, Y = 0.
    let none = Tensor::from_i64(DType::Bool, vec![1, 2], &[0, 0]);
    let out = eval_all(
        &Op::Attention(attn(false, Some(3))),
        &[Some(&q), Some(&k), Some(&v), Some(&none)],
    );
    close(&out[0], &[1, 1, 1, 1], &[0.0]);
    close(&out[1], &[1, 1, 1, 2], &[0.0, 0.0]);
    // A mask covering only key 0 masks key 1; nonpad_kv_seqlen = 1 does the same.
    let short = f32t(&[1], &[0.0]);
    let out = eval_all(
        &Op::Attention(attn(false, None)),
        &[Some(&q), Some(&k), Some(&v), Some(&short)],
    );
    close(&out[0], &[1, 1, 1, 1], &[4.0]);
    let np = Tensor::from_i64(DType::I64, vec![1], &[1]);
    let out = eval_all(
        &Op::Attention(attn(false, None)),
        &[Some(&q), Some(&k), Some(&v), None, Some(&np)],
    );
    close(&out[0], &[1, 1, 1, 1], &[4.0]);
    // Soft cap 1: scores become tanh(0) = 0 and tanh(ln 3) = 0.8; weights e^0, e^0.8.
    let mut cap = attn(false, Some(0));
    cap.softcap = 1.0;
    let out = eval_all(&Op::Attention(cap), &[Some(&q), Some(&k), Some(&v)]);
    let (w0, w1) = (1.0, 0.8f64.exp());
    close(&out[0], &[1, 1, 1, 1], &[(4.0 * w0 + 8.0 * w1) / (w0 + w1)]);
    close(&out[1], &[1, 1, 1, 2], &[0.0, 0.8]);
}

#[test]
fn grouped_query_attention_shares_kv_heads() {
    // Two query heads, one KV head: both heads see the same keys and values.
    let q = f32t(&[1, 2, 1, 1], &[1.0, 0.0]);
    let k = f32t(&[1, 1, 2, 1], &[0.0, 3f32.ln()]);
    let v = f32t(&[1, 1, 2, 1], &[4.0, 8.0]);
    let out = eval_all(
        &Op::Attention(attn(false, None)),
        &[Some(&q), Some(&k), Some(&v)],
    );
    // Head 1 has q = 0: uniform weights, (4 + 8) / 2.
    close(&out[0], &[1, 2, 1, 1], &[7.0, 6.0]);
}

#[test]
fn rotary_by_hand() {
    // One head of 4 features, rotating the first 2 (halves [x0] and [x1]) by cos 0.6, sin 0.8:
    // (0.6 * 1 - 0.8 * 2, 0.8 * 1 + 0.6 * 2) = (-1.0, 2.0); features 2 and 3 pass through.
    let x = f32t(&[1, 1, 1, 4], &[1.0, 2.0, 5.0, 6.0]);
    let cos = f32t(&[3, 1], &[1.0, 0.6, 1.0]);
    let sin = f32t(&[3, 1], &[0.0, 0.8, 0.0]);
    let pos = Tensor::from_i64(DType::I64, vec![1, 1], &[1]);
    let op = Op::Rotary(Rotary {
        interleaved: false,
        rotary_dim: 2,
        num_heads: 0,
    });
    let y = eval_all(&op, &[Some(&x), Some(&cos), Some(&sin), Some(&pos)]).remove(0);
    close(&y, &[1, 1, 1, 4], &[-1.0, 2.0, 5.0, 6.0]);
    // Full rotation of 4 features, halves [x0, x1] and [x2, x3], caches per (batch, position),
    // as a packed 3-D input with one head.
    let op = Op::Rotary(Rotary {
        interleaved: false,
        rotary_dim: 0,
        num_heads: 1,
    });
    let x3 = f32t(&[1, 1, 4], &[1.0, 2.0, 5.0, 6.0]);
    let c = f32t(&[1, 1, 2], &[0.6, 0.0]);
    let s = f32t(&[1, 1, 2], &[0.8, 1.0]);
    // Pair (1, 5): (0.6 - 4, 0.8 + 3) = (-3.4, 3.8); pair (2, 6): (0 - 6, 2 + 0) = (-6, 2).
    let y = eval_all(&op, &[Some(&x3), Some(&c), Some(&s)]).remove(0);
    close(&y, &[1, 1, 4], &[-3.4, -6.0, 3.8, 2.0]);
    // Interleaved pairs are (x0, x1) and (x2, x3).
    let op = Op::Rotary(Rotary {
        interleaved: true,
        rotary_dim: 0,
        num_heads: 1,
    });
    // Pair (1, 2): (0.6 - 1.6, 0.8 + 1.2) = (-1, 2); pair (5, 6): (0 - 6, 5 + 0) = (-6, 5).
    let y = eval_all(&op, &[Some(&x3), Some(&c), Some(&s)]).remove(0);
    close(&y, &[1, 1, 4], &[-1.0, 2.0, -6.0, 5.0]);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let x = f32t(&[2, 2], &[1.0; 4]);
    assert!(red(ReduceKind::Sum, &[2], true).eval(&[Some(&x)]).is_err());
    assert!(red(ReduceKind::Sum, &[1, 0], true)
        .eval(&[Some(&x)])
        .is_err());
    let bad_scale = f32t(&[3], &[1.0; 3]);
    let ln = Op::LayerNorm(LayerNorm {
        axis: 1,
        epsilon: 1e-5,
    });
    assert!(ln.eval(&[Some(&x), Some(&bad_scale)]).is_err());
    // Three query heads cannot share two KV heads.
    let q = f32t(&[1, 3, 1, 1], &[1.0; 3]);
    let k = f32t(&[1, 2, 1, 1], &[1.0; 2]);
    assert!(Op::Attention(attn(false, None))
        .eval(&[Some(&q), Some(&k), Some(&k)])
        .is_err());
    // A position id outside the cache.
    let op = Op::Rotary(Rotary {
        interleaved: false,
        rotary_dim: 0,
        num_heads: 0,
    });
    let x = f32t(&[1, 1, 1, 2], &[1.0, 2.0]);
    let c = f32t(&[1, 1], &[1.0]);
    let pos = Tensor::from_i64(DType::I64, vec![1, 1], &[5]);
    assert!(op
        .eval(&[Some(&x), Some(&c), Some(&c), Some(&pos)])
        .is_err());
    // Integer attention is unsupported, not a panic.
    let qi = Tensor::from_i64(DType::I32, vec![1, 1, 1, 1], &[1]);
    assert!(Op::Attention(attn(false, None))
        .eval(&[Some(&qi), Some(&qi), Some(&qi)])
        .is_err());
}

#[test]
fn family_round_trips_through_text() {
    let mut g = Graph::new("family");
    let x = g.add_input("x", TensorType::new(DType::F32, &[2, 3, 4, 4]));
    let m = g.add_input("mask", TensorType::new(DType::Bool, &[4, 4]));
    let pos = g.add_input("pos", TensorType::new(DType::I64, &[2, 4]));
    // Rotary's caches index by position ids: [2, 4] ids into 8 rows of rotary_dim/2 = 2.
    let cos = g.add_const("cos", Tensor::zeros(DType::F32, vec![8, 2]));
    let mut ops: Vec<(Op, Vec<Option<kiln_ir::Value>>)> = ReduceKind::ALL
        .iter()
        .map(|&k| (red(k, &[1, 3], k == ReduceKind::Sum), vec![Some(x)]))
        .collect();
    let sm = Softmax {
        axis: 2,
        flatten: true,
    };
    ops.extend([
        (
            Op::ArgReduce(ArgReduce {
                max: true,
                axis: 1,
                keepdims: false,
                select_last_index: true,
            }),
            vec![Some(x)],
        ),
        (
            Op::ArgReduce(ArgReduce {
                max: false,
                axis: 0,
                keepdims: true,
                select_last_index: false,
            }),
            vec![Some(x)],
        ),
        (Op::LogSoftmax(sm), vec![Some(x)]),
        (Op::Hardmax(sm), vec![Some(x)]),
        (
            Op::LayerNorm(LayerNorm {
                axis: 2,
                epsilon: 1e-5,
            }),
            vec![Some(x)],
        ),
        (
            Op::RmsNorm(LayerNorm {
                axis: 3,
                epsilon: 0.25,
            }),
            vec![Some(x)],
        ),
        (
            Op::Lrn(Lrn {
                size: 3,
                alpha: 1e-4,
                beta: 0.75,
                bias: 2.0,
            }),
            vec![Some(x)],
        ),
        (
            Op::Attention(Attention {
                scale: 0.5,
                causal: true,
                softcap: 2.0,
                past_len: 1,
                left_window: 2,
                right_window: -1,
                qk_mode: Some(3),
                wide_softmax: true,
            }),
            vec![Some(x), Some(x), Some(x), Some(m)],
        ),
        (
            Op::Rotary(Rotary {
                interleaved: true,
                rotary_dim: 4,
                num_heads: 0,
            }),
            vec![Some(x), Some(cos), Some(cos), Some(pos)],
        ),
    ]);
    for (i, (op, ins)) in ops.into_iter().enumerate() {
        let name = format!("n{i}");
        let outs = g
            .add_node(&name, op, &ins, &[])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        g.outputs.push((name, outs[0]));
    }
    verify(&g).unwrap();
    let full = PrintOptions {
        max_const_elems: usize::MAX,
    };
    let text = print(&g, full);
    for name in [
        "reduce_log_sum_exp",
        "argmax",
        "argmin",
        "log_softmax",
        "hardmax",
        "layer_norm",
        "rms_norm",
        "lrn",
        "attention",
        "rotary",
    ] {
        assert!(
            text.contains(&format!("= {name}(")),
            "{name} missing:\n{text}"
        );
    }
    let parsed = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    verify(&parsed).unwrap();
    assert_eq!(print(&parsed, full), text);
}
