//! Folding inference batch normalization into the linear op that feeds it.
//!
//! `batch_norm(y)` with constant statistics is `s[c] * y + t[c]` per channel, with
//! `s = scale / sqrt(var + eps)` and `t = beta - mean * s`. When `y` comes from a Conv, ConvTranspose or
//! Gemm with constant weights, scaling the weights of output channel `c` by `s[c]` and replacing the
//! bias by `b * s + t` computes the same thing with one op less (and one pass over the activation less).

use crate::{Fuel, Pass, PassError};
use kiln_ir::ops::{BatchNorm, Fact, Gemm};
use kiln_ir::{DType, Graph, NodeId, Op, Tensor, Value};

/// Folds `batch_norm` into a preceding f32 `conv`, `conv_transpose` or `gemm` whose weights (and bias,
/// if any) are constants and whose output only the batch norm reads. The result takes the batch
/// norm's node name and output name, so the ONNX names users debug with still point at it.
#[derive(Clone, Copy, Debug, Default)]
pub struct FoldBatchNorm;

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batchnorm"
    }

    fn run(&self, g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError> {
        let mut changed = false;
        for bn in g.topo_order()? {
            if !g.contains(bn) {
                continue;
            }
            let Op::BatchNorm(op) = &g.node(bn).op else {
                continue;
            };
            let Some(plan) = plan(g, bn, *op) else {
                continue;
            };
            if !fuel.take() {
                break;
            }
            apply(g, bn, plan);
            changed = true;
        }
        Ok(changed)
    }
}

/// A checked fold: the node that replaces the producer + batch norm pair.
struct Plan {
    producer: NodeId,
    op: Op,
    x: Value,
    weights: Tensor,
    bias: Tensor,
}

/// The only reader of `v`: exactly one consumer slot, and `v` is not a graph output.
fn sole_user(g: &Graph, v: Value) -> Option<NodeId> {
    match g.users(v).as_slice() {
        [(id, _)] if !g.is_output(v) => Some(*id),
        _ => None,
    }
}

/// The constant f32 data of input `slot` of `id`, if it is one.
fn const_f32(g: &Graph, id: NodeId, slot: usize) -> Option<&Tensor> {
    let t = g.const_value(g.input(id, slot)?)?;
    (t.dtype() == DType::F32).then_some(t)
}

/// Checks every condition and computes the folded weights; `None` leaves the graph alone.
fn plan(g: &Graph, bn: NodeId, op: BatchNorm) -> Option<Plan> {
    let y = g.input(bn, 0)?;
    if y.slot != 0 || g.ty(y).dtype != DType::F32 || sole_user(g, y) != Some(bn) {
        return None;
    }
    let producer = y.node;
    // y = s * x + t per channel.
    let p: Vec<Vec<f64>> = (1..5)
        .map(|i| const_f32(g, bn, i).map(Tensor::to_f64_vec))
        .collect::<Option<_>>()?;
    let (scale, beta, mean, var) = (&p[0], &p[1], &p[2], &p[3]);
    let eps = op.epsilon as f64;
    let s: Vec<f64> = (0..scale.len())
        .map(|c| scale[c] / (var[c] + eps).sqrt())
        .collect();
    let t: Vec<f64> = (0..s.len()).map(|c| beta[c] - mean[c] * s[c]).collect();
    // A zero or negative variance makes the batch norm itself produce inf or NaN; folding would
    // spread that over every output, so leave such a node as it is.
    if s.iter().chain(&t).any(|v| !v.is_finite()) {
        return None;
    }
    let x = g.input(producer, 0)?;
    let node_op = g.node(producer).op.clone();
    let w = const_f32(g, producer, 1)?;
    // An activation fused into the producer sits between it and the batch norm: no fold.
    let fused = match &node_op {
        Op::Conv(c) => !c.post.is_empty(),
        Op::Gemm(gm) => !gm.post.is_empty(),
        _ => false,
    };
    if fused {
        return None;
    }
    let (weights, bias, op) = match node_op {
        Op::Conv(_) | Op::ConvTranspose(_) => {
            let wd = w.shape();
            if wd.len() < 2 {
                return None;
            }
            let per_slice: usize = wd[2..].iter().product();
            let channel_of = |e: usize| match &node_op {
                // ConvTranspose weights are [C, M/g, k...]: input channel ci, of group ci / (C/g),
                // writes output channel group * M/g + j through slice [ci, j].
                Op::ConvTranspose(ct) => {
                    let (mg, cg) = (wd[1], (wd[0] / ct.group.max(1)).max(1));
                    let slice = e / per_slice.max(1);
                    (slice / mg / cg) * mg + slice % mg
                }
                // Conv weights are [M, C/g, k...]: the output channel is the leading index.
                _ => e / (wd[1] * per_slice).max(1),
            };
            let wv = w.to_f64_vec();
            let folded: Vec<f64> = wv
                .iter()
                .enumerate()
                .map(|(e, &v)| v * s[channel_of(e)])
                .collect();
            let b = match g.input(producer, 2) {
                Some(_) => const_f32(g, producer, 2)?.to_f64_vec(),
                None => vec![0.0; s.len()],
            };
            if b.len() != s.len() {
                return None;
            }
            let bias: Vec<f64> = (0..s.len()).map(|c| b[c] * s[c] + t[c]).collect();
            (
                Tensor::from_f64(DType::F32, wd.to_vec(), &folded),
                Tensor::from_f64(DType::F32, vec![s.len()], &bias),
                node_op,
            )
        }
        Op::Gemm(gm) => {
            let (m, n) = {
                let d = g.ty(y).dims()?;
                (d[0], d[1])
            };
            if n != s.len() {
                return None;
            }
            let wd = w.shape();
            // B' = B or its transpose is [K, N]; column j of B' gets s[j].
            let wv = w.to_f64_vec();
            let folded: Vec<f64> = wv
                .iter()
                .enumerate()
                .map(|(e, &v)| {
                    let j = if gm.trans_b { e / wd[1] } else { e % wd[1] };
                    v * s[j]
                })
                .collect();
            let c = match g.input(producer, 2) {
                Some(_) => Some(const_f32(g, producer, 2)?),
                None => None,
            };
            // With beta = 0 the reference evaluator still computes 0 * C (NaN for an infinite C) while
            // the backend skips C: only a finite C makes both agree with dropping it.
            let c = match c {
                Some(c) if gm.beta == 0.0 => {
                    if c.to_f64_vec().iter().any(|v| !v.is_finite()) {
                        return None;
                    }
                    None
                }
                c => c,
            };
            // C broadcasts to [M, N]; the folded C is [M, N] only when C varies along M.
            let (cdims, cv) = c.map_or((vec![], vec![]), |c| (c.shape().to_vec(), c.to_f64_vec()));
            let rows_vary = cdims.len() == 2 && cdims[0] != 1;
            let c_at = |i: usize, j: usize| -> f64 {
                match cdims.len() {
                    0 => cv[0],
                    1 => cv[if cdims[0] == 1 { 0 } else { j }],
                    _ => {
                        let ii = if cdims[0] == 1 { 0 } else { i };
                        let jj = if cdims[1] == 1 { 0 } else { j };
                        cv[ii * cdims[1] + jj]
                    }
                }
            };
            let rows = if rows_vary { m } else { 1 };
            let mut bias = Vec::with_capacity(rows * n);
            for i in 0..rows {
                for j in 0..n {
                    let from_c = if c.is_some() {
                        gm.beta as f64 * c_at(i, j) * s[j]
                    } else {
                        0.0
                    };
                    bias.push(from_c + t[j]);
                }
            }
            let bias_shape = if rows_vary { vec![m, n] } else { vec![n] };
            (
                Tensor::from_f64(DType::F32, wd.to_vec(), &folded),
                Tensor::from_f64(DType::F32, bias_shape, &bias),
                Op::Gemm(Gemm { beta: 1.0, ..gm }),
            )
        }
        _ => return None,
    };
    // Rounding to f32 can overflow where the f64 values did not.
    let finite = |t: &Tensor| t.to_f32_vec().iter().all(|v| v.is_finite());
    if !finite(&weights) || !finite(&bias) {
        return None;
    }
    // The folded node must have exactly the batch norm's type; anything else is a shape this pass does
    // not understand, so it keeps its hands off.
    let x_ty = g.ty(x).clone();
    let (w_ty, b_ty) = (weights.ty(), bias.ty());
    let facts = [
        Some(Fact {
            ty: &x_ty,
            value: None,
        }),
        Some(Fact {
            ty: &w_ty,
            value: Some(&weights),
        }),
        Some(Fact {
            ty: &b_ty,
            value: Some(&bias),
        }),
    ];
    let want = g
        .node(bn)
        .outputs
        .iter()
        .map(|o| o.ty.clone())
        .collect::<Vec<_>>();
    if op.infer(&facts).ok()? != want {
        return None;
    }
    Some(Plan {
        producer,
        op,
        x,
        weights,
        bias,
    })
}

/// Adds the folded node under the batch norm's names, moves the readers over, and removes the pair
/// (the old constants are left to `dce`).
fn apply(g: &mut Graph, bn: NodeId, plan: Plan) {
    let name = g.node(bn).name.clone();
    let outputs = g.node(bn).outputs.clone();
    let w = g.add_const(format!("{name}/folded_weight"), plan.weights);
    let b = g.add_const(format!("{name}/folded_bias"), plan.bias);
    let new = g.add_node_typed(name, plan.op, &[Some(plan.x), Some(w), Some(b)], outputs);
    g.replace_all_uses(Value { node: bn, slot: 0 }, new[0]);
    g.remove_node(bn);
    g.remove_node(plan.producer);
}
