//! Recognizes the decomposed layer normalization exporters write (PyTorch before opset 17, Keras,
//! hand-written RMSNorm modules) and replaces it by `layer_norm` or `rms_norm`.
//!
//! LayerNorm, over trailing axes `a..`:
//!
//! ```text
//! m = ReduceMean(x, axes=[a..], keepdims=1)      d = Sub(x, m)
//! v = ReduceMean(Pow(d, 2) | Mul(d, d), same axes, keepdims=1)
//! s = Sqrt(Add(v, eps))                          (eps on either side)
//! n = Div(d, s) | Mul(d, Reciprocal(s)) | Mul(d, Div(1, s))
//! y = [Mul(n, gamma)] [Add(·, beta)]             (either operand order)
//! ```
//!
//! RMSNorm is the same without the mean: `n = x / sqrt(mean(x^2) + eps)`, `y = [n * gamma]`.
//! Same-type `Cast`s between `n` and the gamma multiply (HF's `.to(input_dtype)`) join the pattern.
//!
//! Not matched: the variance as `E[x^2] - E[x]^2` (ONNX's own function body), and tf2onnx's form
//! that folds gamma into the reciprocal (`x * (gamma * rsqrt) + (beta - mean * gamma * rsqrt)`).

use crate::recognize::{
    binary, fused_name, has_type, is_param_source, is_private, only_user, other_operand, out0,
    replace, scalar_f32, scalar_is, unary,
};
use crate::{Fuel, Pass, PassError};
use kiln_ir::ops::{BinaryOp, LayerNorm, Reduce, ReduceKind, UnaryOp};
use kiln_ir::{DType, Graph, NodeId, Op, Tensor, TensorType, Value};

/// Replaces decomposed LayerNorm and RMSNorm subgraphs by `layer_norm` / `rms_norm`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecognizeLayerNorm;

impl Pass for RecognizeLayerNorm {
    fn name(&self) -> &'static str {
        "recognize-layernorm"
    }

    fn run(&self, g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError> {
        let mut changed = false;
        // Topological order visits a LayerNorm's first ReduceMean before its Pow, so the whole
        // LayerNorm is matched before its tail (an RMSNorm of `x - mean`) could be.
        for id in g.topo_order()? {
            if !g.contains(id) {
                continue;
            }
            let Some(m) = match_layer_norm(g, id).or_else(|| match_rms_norm(g, id)) else {
                continue;
            };
            if !fuel.take() {
                return Ok(changed);
            }
            changed |= m.apply(g);
        }
        Ok(changed)
    }
}

/// A matched normalization, ready to be applied.
struct Match {
    /// The normalized input.
    x: Value,
    /// First normalized axis.
    axis: usize,
    /// Added to the variance.
    epsilon: f32,
    /// RMSNorm (no mean, no bias).
    rms: bool,
    /// Scale, already of shape `x.dims[axis..]` unless it must be made so from a constant.
    gamma: Option<Param>,
    /// Bias, likewise.
    beta: Option<Param>,
    /// Every op node of the pattern.
    region: Vec<NodeId>,
    /// The node whose output the fused op replaces.
    root: NodeId,
}

/// A scale or bias operand.
enum Param {
    /// Used as is: it already has the normalized shape.
    Value(Value),
    /// A constant broadcast to the normalized shape (for example a `[1,1,C]` weight).
    Const(Tensor),
}

impl Match {
    fn apply(self, g: &mut Graph) -> bool {
        let what = if self.rms {
            "RMSNormalization"
        } else {
            "LayerNormalization"
        };
        let name = fused_name(g, &self.region, self.root, what);
        let mut param = |p: Option<Param>, suffix: &str| match p {
            None => None,
            Some(Param::Value(v)) => Some(v),
            Some(Param::Const(t)) => Some(g.add_const(format!("{name}/{suffix}"), t)),
        };
        let gamma = param(self.gamma, "scale");
        let beta = param(self.beta, "bias");
        let ln = LayerNorm {
            axis: self.axis,
            epsilon: self.epsilon,
        };
        let (op, inputs) = if self.rms {
            (Op::RmsNorm(ln), vec![Some(self.x), gamma])
        } else {
            (Op::LayerNorm(ln), vec![Some(self.x), gamma, beta])
        };
        replace(g, &self.region, self.root, name, op, &inputs).is_some()
    }
}

/// `ReduceMean(x)` over trailing axes with keepdims: the first normalized axis.
fn trailing_mean(g: &Graph, id: NodeId, x_ty: &TensorType) -> Option<usize> {
    let Op::Reduce(Reduce {
        kind: ReduceKind::Mean,
        axes,
        keepdims: true,
    }) = &g.node(id).op
    else {
        return None;
    };
    let rank = x_ty.rank();
    let first = *axes.first()?;
    // Sorted, distinct and ending at the last axis: contiguous exactly when the count matches.
    (axes.len() == rank - first && axes.last() == Some(&(rank - 1))).then_some(first)
}

/// `ReduceMean(sq)` with the same axes and keepdims as the first reduction.
fn same_mean(g: &Graph, id: NodeId, axes_of: NodeId) -> bool {
    matches!((&g.node(id).op, &g.node(axes_of).op), (Op::Reduce(a), Op::Reduce(b)) if a == b)
}

/// `Pow(d, 2)` or `Mul(d, d)`.
fn is_square_of(g: &Graph, id: NodeId, d: Value) -> bool {
    if let Some((base, e)) = binary(g, id, BinaryOp::Pow) {
        return base == d && scalar_is(g, e, 2.0, 0.0);
    }
    binary(g, id, BinaryOp::Mul) == Some((d, d))
}

/// From the variance node `v`: `Add(v, eps)` then `Sqrt` then the division of `d` by it. Returns
/// `(epsilon, nodes, n)` where `n` is the node computing `d / sqrt(v + eps)`.
fn normalize_by(g: &Graph, v: NodeId, d: Value) -> Option<(f32, Vec<NodeId>, NodeId)> {
    let add = only_user(g, out0(v))?;
    let eps_v = other_operand(binary(g, add, BinaryOp::Add)?, out0(v))?;
    let eps = scalar_f32(g, eps_v)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return None;
    }
    let sqrt = only_user(g, out0(add))?;
    unary(g, sqrt, UnaryOp::Sqrt)?;
    let s = out0(sqrt);
    let next = only_user(g, s)?;
    if binary(g, next, BinaryOp::Div) == Some((d, s)) {
        return Some((eps as f32, vec![add, sqrt, next], next));
    }
    // `1 / s` as Reciprocal or as Div(1, s), then a Mul by `d` in either order.
    let is_recip = unary(g, next, UnaryOp::Reciprocal) == Some(s)
        || binary(g, next, BinaryOp::Div)
            .is_some_and(|(one, den)| den == s && scalar_is(g, one, 1.0, 0.0));
    if !is_recip {
        return None;
    }
    let mul = only_user(g, out0(next))?;
    other_operand(binary(g, mul, BinaryOp::Mul)?, out0(next)).filter(|&o| o == d)?;
    Some((eps as f32, vec![add, sqrt, next, mul], mul))
}

/// An operand `p` of the affine tail usable as the scale or bias of the fused op: a constant or
/// graph input that broadcasts along the normalized axes only.
fn param(g: &Graph, p: Value, x_ty: &TensorType, axis: usize) -> Option<Param> {
    if !is_param_source(g, p) || g.ty(p).dtype != DType::F32 {
        return None;
    }
    let xd = x_ty.dims()?;
    let pd = g.ty(p).dims()?;
    let tail = &xd[axis..];
    if pd == tail {
        return Some(Param::Value(p));
    }
    if pd.len() > xd.len() {
        return None;
    }
    // Right-align p's dims with x's: dims before `axis` must be 1, normalized dims 1 or equal.
    let pad = xd.len() - pd.len();
    let ok = (0..xd.len()).all(|i| {
        let pdim = if i < pad { 1 } else { pd[i - pad] };
        if i < axis {
            pdim == 1
        } else {
            pdim == 1 || pdim == xd[i]
        }
    });
    let t = g.const_value(p)?;
    if !ok {
        return None;
    }
    // Broadcast the constant to `tail`: source index from the aligned dims (size-1 dims repeat).
    let aligned: Vec<usize> = (axis..xd.len())
        .map(|i| if i < pad { 1 } else { pd[i - pad] })
        .collect();
    let vals = t.to_f64_vec();
    let n: usize = tail.iter().product();
    let mut out = Vec::with_capacity(n);
    for flat in 0..n {
        let (mut rem, mut src, mut stride) = (flat, 0, 1);
        for k in (0..tail.len()).rev() {
            let idx = rem % tail[k];
            rem /= tail[k];
            if aligned[k] != 1 {
                src += idx * stride;
            }
            stride *= aligned[k];
        }
        out.push(vals[src]);
    }
    Some(Param::Const(Tensor::from_f64(
        DType::F32,
        tail.to_vec(),
        &out,
    )))
}

/// Absorbs an optional `Mul(y, gamma)` and (for LayerNorm) `Add(·, beta)` after the normalized
/// value `n`, moving `m.root` past them.
fn affine_tail(g: &Graph, m: &mut Match, x_ty: &TensorType) {
    // Casts to the type the value already has sit between the two halves in HF's RMSNorm
    // (`weight * x.to(input_dtype)` exported in f32) and in ONNX's own function bodies. They change
    // nothing, so they join the pattern, but only if a scale follows (they are the root otherwise).
    let mut y = out0(m.root);
    let mut casts = Vec::new();
    while let Some(c) = only_user(g, y).filter(|&c| {
        matches!(g.node(c).op, Op::Cast(_)) && has_type(g, out0(c), x_ty) && has_type(g, y, x_ty)
    }) {
        casts.push(c);
        y = out0(c);
    }
    let Some(next) = only_user(g, y) else { return };
    let mut at = out0(m.root);
    if let Some(p) = binary(g, next, BinaryOp::Mul)
        .and_then(|ops| other_operand(ops, y))
        .and_then(|p| param(g, p, x_ty, m.axis))
    {
        if has_type(g, out0(next), x_ty) {
            m.gamma = Some(p);
            m.region.extend(casts);
            m.region.push(next);
            m.root = next;
            at = out0(next);
        }
    }
    if m.rms {
        return;
    }
    let Some(next) = only_user(g, at) else { return };
    if let Some(p) = binary(g, next, BinaryOp::Add)
        .and_then(|ops| other_operand(ops, at))
        .and_then(|p| param(g, p, x_ty, m.axis))
    {
        if has_type(g, out0(next), x_ty) {
            m.beta = Some(p);
            m.region.push(next);
            m.root = next;
        }
    }
}

/// LayerNorm anchored at its first `ReduceMean`.
fn match_layer_norm(g: &Graph, mean: NodeId) -> Option<Match> {
    let x = g.input(mean, 0)?;
    let x_ty = g.ty(x).clone();
    if x_ty.dtype != DType::F32 {
        return None;
    }
    let axis = trailing_mean(g, mean, &x_ty)?;
    let sub = only_user(g, out0(mean))?;
    if binary(g, sub, BinaryOp::Sub)? != (x, out0(mean)) {
        return None;
    }
    let d = out0(sub);
    if !has_type(g, d, &x_ty) {
        return None;
    }
    // `d` feeds the square (once or twice) and the division (once), nothing else.
    let users = g.users(d);
    let sq = users
        .iter()
        .map(|&(u, _)| u)
        .find(|&u| is_square_of(g, u, d))?;
    let others: Vec<NodeId> = users.iter().map(|&(u, _)| u).filter(|&u| u != sq).collect();
    let var = only_user(g, out0(sq))?;
    if !same_mean(g, var, mean) {
        return None;
    }
    let (eps, tail, n) = normalize_by(g, var, d)?;
    if others != [n] || g.is_output(d) || !has_type(g, out0(n), &x_ty) {
        return None;
    }
    let mut region = vec![mean, sub, sq, var];
    region.extend(tail);
    let mut m = Match {
        x,
        axis,
        epsilon: eps,
        rms: false,
        gamma: None,
        beta: None,
        region,
        root: n,
    };
    affine_tail(g, &mut m, &x_ty);
    is_private(g, &m.region, m.root).then_some(m)
}

/// RMSNorm anchored at its square.
fn match_rms_norm(g: &Graph, sq: NodeId) -> Option<Match> {
    let x = g.input(sq, 0)?;
    if !is_square_of(g, sq, x) {
        return None;
    }
    let x_ty = g.ty(x).clone();
    if x_ty.dtype != DType::F32 || !has_type(g, out0(sq), &x_ty) {
        return None;
    }
    let mean = only_user(g, out0(sq))?;
    let axis = trailing_mean(g, mean, &x_ty)?;
    let (eps, tail, n) = normalize_by(g, mean, x)?;
    if !has_type(g, out0(n), &x_ty) {
        return None;
    }
    let mut region = vec![sq, mean];
    region.extend(tail);
    let mut m = Match {
        x,
        axis,
        epsilon: eps,
        rms: true,
        gamma: None,
        beta: None,
        region,
        root: n,
    };
    affine_tail(g, &mut m, &x_ty);
    is_private(g, &m.region, m.root).then_some(m)
}
