//! Reductions, the softmax family, normalizations and transformer blocks, compiled, linked into a C
//! program, run on x86_64 and (under qemu) aarch64, and compared with the reference evaluator. Each
//! test builds one graph holding many sub-cases (every kernel shape: contiguous rows, vectors of
//! outputs, strided scalars, vector tails), so one C build covers them all.

mod common;
use common::*;
use kiln_ir::ops::*;
use kiln_ir::{DType, Op, Tensor, Value};

fn red(kind: ReduceKind, axes: &[usize], keepdims: bool) -> Op {
    Op::Reduce(Reduce {
        kind,
        axes: axes.to_vec(),
        keepdims,
    })
}

/// Shapes and axis sets that reach every path of the reduction kernel.
fn reduce_layouts() -> Vec<(Vec<usize>, Vec<usize>)> {
    vec![
        // Contiguous rows (with and without a vector tail), several reduced runs.
        (vec![3, 5, 7], vec![2]),
        (vec![3, 5, 8], vec![1, 2]),
        (vec![2, 3, 9], vec![0, 2]),
        (vec![6, 13], vec![0, 1]),
        // Reducing outer axes: vectors of adjacent outputs (and their scalar tail).
        (vec![9, 8], vec![0]),
        (vec![4, 3, 6], vec![0, 1]),
        (vec![5, 11], vec![0]),
        // Strided scalar reductions.
        (vec![3, 5, 3], vec![1]),
        (vec![4, 1, 3], vec![0]),
        // Nothing reduced, and a size-1 axis.
        (vec![2, 5], vec![]),
        (vec![7, 1], vec![1]),
    ]
}

#[test]
fn reduce_f32_every_kind_and_layout() {
    let mut c = Case::new("reduce_f32");
    for (li, (dims, axes)) in reduce_layouts().into_iter().enumerate() {
        for kind in ReduceKind::ALL {
            // The log kinds and the product want positive, moderate inputs.
            let gen = match kind {
                ReduceKind::LogSum | ReduceKind::Prod => Gen::Uniform(0.5, 1.5),
                _ => Gen::Uniform(-3.0, 3.0),
            };
            let x = c.input(&format!("x{li}_{}", kind.name()), DType::F32, &dims, gen);
            let keep = li % 2 == 0;
            c.out(
                &format!("{}_{li}", kind.name()),
                red(kind, &axes, keep),
                &[x],
            );
        }
    }
    check(&c);
}

#[test]
fn reduce_f64_integers_and_bools() {
    let mut c = Case::new("reduce_other_types");
    // f64 on integer-valued data, so every order of summation is exact.
    for (li, (dims, axes)) in reduce_layouts().into_iter().enumerate() {
        for kind in [
            ReduceKind::Sum,
            ReduceKind::Max,
            ReduceKind::Min,
            ReduceKind::L1,
            ReduceKind::SumSquare,
        ] {
            let x = c.input(
                &format!("d{li}_{}", kind.name()),
                DType::F64,
                &dims,
                Gen::Ints(-9, 9),
            );
            c.out(
                &format!("d_{}_{li}", kind.name()),
                red(kind, &axes, true),
                &[x],
            );
        }
    }
    let int_kinds = [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::Prod,
        ReduceKind::L1,
        ReduceKind::SumSquare,
    ];
    for d in [DType::I32, DType::I64, DType::I8, DType::U8, DType::U16] {
        for (li, axes) in [vec![1], vec![0], vec![0, 1]].into_iter().enumerate() {
            for kind in int_kinds {
                // Products of up to 12 values overflow and wrap, as the reference does.
                let lo = if d.is_signed_int() { -20 } else { 0 };
                let x = c.input(
                    &format!("{d}{li}_{}", kind.name()),
                    d,
                    &[3, 4],
                    Gen::Ints(lo, 40),
                );
                c.out(
                    &format!("{d}_{}_{li}", kind.name()),
                    red(kind, &axes, false),
                    &[x],
                );
            }
        }
    }
    for (li, axes) in [vec![1], vec![0]].into_iter().enumerate() {
        for kind in [ReduceKind::Max, ReduceKind::Min] {
            let x = c.input(
                &format!("b{li}_{}", kind.name()),
                DType::Bool,
                &[4, 3],
                Gen::Ints(0, 1),
            );
            c.out(
                &format!("bool_{}_{li}", kind.name()),
                red(kind, &axes, true),
                &[x],
            );
        }
    }
    check(&c);
}

#[test]
fn reduce_empty_groups_and_log_sum_exp_extremes() {
    let mut c = Case::new("reduce_edges");
    // Reducing an empty axis gives the identities (sum 0, max -inf, log_sum -inf, mean NaN, ...).
    for kind in ReduceKind::ALL {
        let x = c.input(
            &format!("e_{}", kind.name()),
            DType::F32,
            &[2, 0, 3],
            Gen::Uniform(0.0, 1.0),
        );
        c.out(
            &format!("empty_{}", kind.name()),
            red(kind, &[1], true),
            &[x],
        );
    }
    let xi = c.input("ei", DType::I16, &[0, 5], Gen::Ints(0, 1));
    c.out("empty_i16_max", red(ReduceKind::Max, &[0], false), &[xi]);
    // LogSumExp of large values does not overflow; of all -inf is -inf.
    let big = c.constant(
        "big",
        Tensor::from_f32(
            vec![2, 5],
            &[
                80.0, 90.0, 88.5, 70.0, 89.0, -1e30, -1e30, -1e30, -1e30, -1e30,
            ],
        ),
    );
    let big = c.node("big_id", Op::Identity, &[big]);
    c.out("lse_big", red(ReduceKind::LogSumExp, &[1], false), &[big]);
    let ninf = c.constant(
        "ninf",
        Tensor::from_f32(vec![2, 2], &[f32::NEG_INFINITY; 4]),
    );
    let ninf = c.node("ninf_id", Op::Identity, &[ninf]);
    c.out("lse_ninf", red(ReduceKind::LogSumExp, &[0], false), &[ninf]);
    check(&c);
}

#[test]
fn argmax_argmin_ties_every_axis() {
    let mut c = Case::new("arg_reduce");
    for d in [DType::F32, DType::I32, DType::U8, DType::F64] {
        for axis in 0..3 {
            for (max, last) in [(true, false), (true, true), (false, false), (false, true)] {
                // Few distinct values: plenty of ties.
                let x = c.input(
                    &format!("x{d}{axis}{max}{last}"),
                    d,
                    &[3, 4, 5],
                    Gen::Ints(0, 3),
                );
                let op = Op::ArgReduce(ArgReduce {
                    max,
                    axis,
                    keepdims: axis == 1,
                    select_last_index: last,
                });
                c.out(&format!("arg_{d}_{axis}_{max}_{last}"), op, &[x]);
            }
        }
    }
    check(&c);
}

#[test]
fn log_softmax_and_hardmax_rows_and_columns() {
    let mut c = Case::new("softmax_family");
    // axis 2: contiguous rows (with a tail); axis 1: columns of 5 (one vector and a tail);
    // axis 0 of [3, 8, 1]: columns of 8; flatten at 1.
    let cases = [
        (vec![3, 4, 7], 2, false),
        (vec![3, 4, 5], 1, false),
        (vec![3, 8, 1], 0, false),
        (vec![2, 3, 4], 1, true),
        (vec![1, 16], 1, false),
    ];
    for (i, (dims, axis, flatten)) in cases.into_iter().enumerate() {
        let sm = Softmax { axis, flatten };
        let x = c.input(
            &format!("x{i}"),
            DType::F32,
            &dims,
            Gen::Uniform(-30.0, 30.0),
        );
        c.out(&format!("log_softmax{i}"), Op::LogSoftmax(sm), &[x]);
        let t = c.input(&format!("t{i}"), DType::F32, &dims, Gen::Ints(-2, 2));
        c.out(&format!("hardmax{i}"), Op::Hardmax(sm), &[t]);
    }
    check(&c);
}

#[test]
fn layer_and_rms_norm() {
    let mut c = Case::new("layer_norm");
    let cases = [
        (vec![3, 10], 1, true, true),
        (vec![2, 3, 5], 1, false, false),
        (vec![4, 17], 1, true, false),
        (vec![2, 2, 8], 2, true, true),
        (vec![5, 1], 0, true, true),
    ];
    for (i, (dims, axis, scale, bias)) in cases.into_iter().enumerate() {
        let ln = LayerNorm {
            axis,
            epsilon: 1e-5,
        };
        // An offset mean tests the two-pass variance.
        let x = c.input(
            &format!("x{i}"),
            DType::F32,
            &dims,
            Gen::Uniform(10.0, 14.0),
        );
        let norm = &dims[axis..];
        let s = scale.then(|| c.weight(&format!("s{i}"), norm));
        let b = bias.then(|| c.weight(&format!("b{i}"), norm));
        let name = format!("ln{i}");
        let outs =
            c.g.add_node(&name, Op::LayerNorm(ln), &[Some(x), s, b], &[])
                .unwrap();
        for (k, v) in outs.into_iter().enumerate() {
            c.output(&format!("{name}_{k}"), v);
        }
        let r = c.node_opt(&format!("rms{i}"), Op::RmsNorm(ln), &[Some(x), s]);
        c.output(&format!("rms{i}"), r);
    }
    check(&c);
}

#[test]
fn lrn_windows() {
    let mut c = Case::new("lrn");
    for (i, (size, beta)) in [(3, 0.75), (4, 0.5), (1, 1.0), (7, 0.75)]
        .into_iter()
        .enumerate()
    {
        let x = c.input(
            &format!("x{i}"),
            DType::F32,
            &[2, 5, 3, 3],
            Gen::Uniform(-2.0, 2.0),
        );
        let op = Op::Lrn(Lrn {
            size,
            alpha: 1e-2,
            beta,
            bias: 1.5,
        });
        c.out(&format!("lrn{i}"), op, &[x]);
    }
    check(&c);
}

fn attn() -> Attention {
    Attention {
        scale: 0.35,
        causal: false,
        softcap: 0.0,
        past_len: 0,
        left_window: -1,
        right_window: -1,
        qk_mode: None,
        wide_softmax: false,
    }
}

/// Adds one attention sub-case: Q [b, hq, sq, d], K/V [b, hkv, skv, d/dv].
fn attention_case(
    c: &mut Case,
    name: &str,
    [b, hq, hkv, sq, skv, d, dv]: [usize; 7],
    op: Attention,
    mask: Option<(DType, Vec<usize>)>,
    nonpad: Option<Vec<i64>>,
) {
    let q = c.x(&format!("{name}_q"), &[b, hq, sq, d]);
    let k = c.x(&format!("{name}_k"), &[b, hkv, skv, d]);
    let v = c.x(&format!("{name}_v"), &[b, hkv, skv, dv]);
    let m = mask.map(|(dt, dims)| {
        let gen = if dt == DType::Bool {
            Gen::Ints(0, 1)
        } else {
            Gen::Uniform(-1.0, 1.0)
        };
        c.input(&format!("{name}_m"), dt, &dims, gen)
    });
    let n = nonpad.map(|np| {
        let t = Tensor::from_i64(DType::I64, vec![np.len()], &np);
        c.constant(&format!("{name}_np"), t)
    });
    let outs =
        c.g.add_node(
            name,
            Op::Attention(op),
            &[Some(q), Some(k), Some(v), m, n],
            &[],
        )
        .unwrap();
    for (i, o) in outs.into_iter().enumerate() {
        c.output(&format!("{name}_{i}"), o);
    }
}

#[test]
fn attention_variants() {
    let mut c = Case::new("attention");
    let sizes = [2, 3, 3, 4, 6, 8, 5];
    attention_case(&mut c, "plain", sizes, attn(), None, None);
    attention_case(&mut c, "gqa", [2, 6, 2, 3, 5, 7, 9], attn(), None, None);
    let causal = Attention {
        causal: true,
        qk_mode: Some(3),
        ..attn()
    };
    attention_case(&mut c, "causal", sizes, causal, None, None);
    let cached = Attention {
        causal: true,
        past_len: 2,
        qk_mode: Some(0),
        ..attn()
    };
    attention_case(&mut c, "cached", sizes, cached, None, None);
    let capped = Attention {
        softcap: 1.5,
        qk_mode: Some(1),
        ..attn()
    };
    attention_case(
        &mut c,
        "softcap",
        sizes,
        capped,
        Some((DType::F32, vec![4, 6])),
        None,
    );
    let biased = Attention {
        qk_mode: Some(2),
        ..attn()
    };
    // A mask shorter than the keys (the rest is masked), broadcast over heads.
    attention_case(
        &mut c,
        "short_mask",
        sizes,
        biased,
        Some((DType::F32, vec![2, 1, 4, 4])),
        None,
    );
    // Bool masks: some rows attend to nothing and give 0.
    attention_case(
        &mut c,
        "bool_mask",
        sizes,
        causal,
        Some((DType::Bool, vec![2, 3, 4, 6])),
        None,
    );
    attention_case(
        &mut c,
        "bool_row",
        sizes,
        attn(),
        Some((DType::Bool, vec![6])),
        None,
    );
    let window = Attention {
        causal: true,
        left_window: 1,
        right_window: 0,
        ..attn()
    };
    attention_case(&mut c, "window", sizes, window, None, None);
    let both = Attention {
        left_window: 1,
        right_window: 2,
        ..attn()
    };
    attention_case(&mut c, "bidirectional", sizes, both, None, None);
    // Padding: batch 0 has 3 real keys, batch 1 has 6; causal relative to the real keys.
    let padded = Attention {
        causal: true,
        ..attn()
    };
    attention_case(&mut c, "nonpad", sizes, padded, None, Some(vec![3, 6]));
    check(&c);
}

#[test]
fn rotary_embeddings() {
    let mut c = Case::new("rotary");
    let cases: [(&[usize], Rotary, bool); 5] = [
        (
            &[2, 3, 4, 8],
            Rotary {
                interleaved: false,
                rotary_dim: 0,
                num_heads: 0,
            },
            true,
        ),
        (
            &[2, 3, 4, 8],
            Rotary {
                interleaved: true,
                rotary_dim: 0,
                num_heads: 0,
            },
            true,
        ),
        (
            &[2, 3, 4, 10],
            Rotary {
                interleaved: false,
                rotary_dim: 6,
                num_heads: 0,
            },
            false,
        ),
        (
            &[2, 4, 24],
            Rotary {
                interleaved: true,
                rotary_dim: 4,
                num_heads: 3,
            },
            true,
        ),
        (
            &[1, 2, 32],
            Rotary {
                interleaved: false,
                rotary_dim: 0,
                num_heads: 2,
            },
            false,
        ),
    ];
    for (i, (dims, op, with_pos)) in cases.into_iter().enumerate() {
        let g = op.dims(dims).unwrap();
        let half = g.r / 2;
        let (cache, pos): (Vec<usize>, Option<Value>) = if with_pos {
            let p = c.input(&format!("pos{i}"), DType::I64, &[g.b, g.s], Gen::Ints(0, 9));
            (vec![10, half], Some(p))
        } else {
            (vec![g.b, g.s, half], None)
        };
        let x = c.x(&format!("x{i}"), dims);
        let cs = c.input(
            &format!("cos{i}"),
            DType::F32,
            &cache,
            Gen::Uniform(-1.0, 1.0),
        );
        let sn = c.input(
            &format!("sin{i}"),
            DType::F32,
            &cache,
            Gen::Uniform(-1.0, 1.0),
        );
        let y = c.node_opt(
            &format!("rot{i}"),
            Op::Rotary(op),
            &[Some(x), Some(cs), Some(sn), pos],
        );
        c.output(&format!("rot{i}"), y);
    }
    check(&c);
}

/// Runs `c` on every arch and compares every output with the reference within `rtol` relative
/// (plus `atol`) error, whatever its float type (the shared `check` compares non-f32 bytes exactly,
/// but f64 here evaluates `exp` in f32 and the halves round at every step as numpy does).
fn check_loose(c: &Case, rtol: f64, atol: f64) {
    kiln_ir::verify(&c.g).unwrap();
    let want = reference(&c.g, &c.inputs);
    for arch in ARCHES {
        let Some(got) = run_compiled(c, arch, kiln_backend::WeightsMode::Embedded) else {
            continue;
        };
        for (((name, v), g), w) in c.g.outputs.iter().zip(&got).zip(&want) {
            let t = Tensor::from_bytes(c.g.ty(*v).dtype, w.shape().to_vec(), g.clone()).unwrap();
            for (i, (a, b)) in t.to_f64_vec().iter().zip(w.to_f64_vec()).enumerate() {
                let ok = (a.is_nan() && b.is_nan()) || (a - b).abs() <= atol + rtol * b.abs();
                assert!(ok, "{name}[{i}] on {arch:?}: got {a}, want {b}");
            }
        }
    }
}

#[test]
fn softmax_family_f64_f16_bf16() {
    for (d, rtol) in [(DType::F64, 1e-6), (DType::F16, 4e-3), (DType::BF16, 3e-2)] {
        let mut c = Case::new(&format!("softmax_{d}"));
        for (i, (dims, axis)) in [(vec![3, 7], 1), (vec![4, 3, 2], 1), (vec![5, 2], 0)]
            .into_iter()
            .enumerate()
        {
            let sm = Softmax {
                axis,
                flatten: false,
            };
            let x = c.input(&format!("x{i}"), d, &dims, Gen::Uniform(-3.0, 3.0));
            c.out(&format!("softmax{i}"), Op::Softmax(sm), &[x]);
            c.out(&format!("log_softmax{i}"), Op::LogSoftmax(sm), &[x]);
            let t = c.input(&format!("t{i}"), d, &dims, Gen::Ints(-2, 2));
            c.out(&format!("hardmax{i}"), Op::Hardmax(sm), &[t]);
        }
        check_loose(&c, rtol, 1e-6);
    }
}

#[test]
fn reduce_halves() {
    for (d, rtol) in [(DType::F16, 4e-3), (DType::BF16, 3e-2)] {
        let mut c = Case::new(&format!("reduce_{d}"));
        for (li, (dims, axes)) in reduce_layouts().into_iter().enumerate() {
            for kind in ReduceKind::ALL {
                let gen = match kind {
                    ReduceKind::LogSum | ReduceKind::Prod => Gen::Uniform(0.5, 1.5),
                    _ => Gen::Uniform(-3.0, 3.0),
                };
                let x = c.input(&format!("x{li}_{}", kind.name()), d, &dims, gen);
                c.out(
                    &format!("{}_{li}", kind.name()),
                    red(kind, &axes, true),
                    &[x],
                );
            }
        }
        // Sums of up to 78 terms of either sign: allow a few units of the largest term.
        check_loose(&c, rtol, 0.2);
    }
}

#[test]
fn layer_norm_f64_and_halves() {
    for (d, rtol) in [(DType::F64, 1e-9), (DType::F16, 4e-3), (DType::BF16, 3e-2)] {
        let mut c = Case::new(&format!("layer_norm_{d}"));
        for (i, (dims, axis)) in [(vec![3, 10], 1), (vec![2, 3, 5], 1)]
            .into_iter()
            .enumerate()
        {
            let ln = LayerNorm {
                axis,
                epsilon: 1e-5,
            };
            let x = c.input(&format!("x{i}"), d, &dims, Gen::Uniform(-2.0, 2.0));
            let norm = &dims[axis..];
            let s = c.input(&format!("s{i}"), d, norm, Gen::Uniform(0.5, 1.5));
            let b = c.input(&format!("b{i}"), d, norm, Gen::Uniform(-1.0, 1.0));
            let name = format!("ln{i}");
            let outs =
                c.g.add_node(&name, Op::LayerNorm(ln), &[Some(x), Some(s), Some(b)], &[])
                    .unwrap();
            for (k, v) in outs.into_iter().enumerate() {
                c.output(&format!("{name}_{k}"), v);
            }
            let r = c.node(&format!("rms{i}"), Op::RmsNorm(ln), &[x, s]);
            c.output(&format!("rms{i}"), r);
        }
        check_loose(&c, rtol, 1e-5);
    }
}
