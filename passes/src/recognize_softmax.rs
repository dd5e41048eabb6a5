//! Recognizes the decomposed softmax exporters write and replaces it by `softmax`.
//!
//! ```text
//! s = Sub(x, ReduceMax(x, axes, keepdims=1))   (or s = x: no max subtraction)
//! e = Exp(s)
//! y = Div(e, ReduceSum(e, axes, keepdims=1))   (or Mul(e, Reciprocal(sum)) in either order)
//! ```
//!
//! With one axis `a` that is the opset-13 softmax along `a` (`softmax {axis=a}`). With several axes
//! they must be the trailing axes `a..`: a softmax over the flattened trailing dims, which is the
//! legacy (opset < 13) coercion `softmax {axis=a, flatten=1}`.
//!
//! Subtracting the maximum does not change the result (softmax is invariant to a shift that is
//! constant along the reduced axes) and the `softmax` kernel does it anyway, so a pattern without it
//! is replaced too, as is one whose maximum runs over more axes than the sum; one whose maximum
//! misses a summed axis becomes a softmax of `s`.

use crate::recognize::{
    binary, fused_name, has_type, is_private, only_user, other_operand, out0, replace, unary,
};
use crate::{Fuel, Pass, PassError};
use kiln_ir::ops::{BinaryOp, Reduce, ReduceKind, Softmax, UnaryOp};
use kiln_ir::{DType, Graph, NodeId, Op, Value};

/// Replaces decomposed softmax subgraphs by `softmax`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecognizeSoftmax;

impl Pass for RecognizeSoftmax {
    fn name(&self) -> &'static str {
        "recognize-softmax"
    }

    fn run(&self, g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError> {
        let mut changed = false;
        for id in g.topo_order()? {
            if !g.contains(id) {
                continue;
            }
            let Some(m) = match_softmax(g, id) else {
                continue;
            };
            if !fuel.take() {
                return Ok(changed);
            }
            let name = fused_name(g, &m.region, m.root, "Softmax");
            changed |=
                replace(g, &m.region, m.root, name, Op::Softmax(m.op), &[Some(m.x)]).is_some();
        }
        Ok(changed)
    }
}

/// A matched softmax.
struct Match {
    x: Value,
    op: Softmax,
    region: Vec<NodeId>,
    root: NodeId,
}

/// The axes of a keepdims reduction of kind `kind`.
fn keepdims_axes(g: &Graph, id: NodeId, kind: ReduceKind) -> Option<&[usize]> {
    match &g.node(id).op {
        Op::Reduce(Reduce {
            kind: k,
            axes,
            keepdims: true,
        }) if *k == kind => Some(axes),
        _ => None,
    }
}

/// The softmax reducing over `axes` of a rank-`rank` input: one axis, or the trailing axes.
fn softmax_for(axes: &[usize], rank: usize) -> Option<Softmax> {
    match *axes {
        [] => None,
        [a] => Some(Softmax {
            axis: a,
            flatten: false,
        }),
        // Sorted and distinct, so the count tells whether they run contiguously to the end.
        [a, ..] => (axes.len() == rank - a).then_some(Softmax {
            axis: a,
            flatten: true,
        }),
    }
}

/// Softmax anchored at its `Exp`.
fn match_softmax(g: &Graph, exp: NodeId) -> Option<Match> {
    let s = unary(g, exp, UnaryOp::Exp)?;
    let ty = g.ty(s).clone();
    if ty.dtype != DType::F32 {
        return None;
    }
    let e = out0(exp);
    // `e` feeds the sum and the normalization, nothing else.
    let users = g.users(e);
    let sum = users
        .iter()
        .map(|&(u, _)| u)
        .find(|&u| keepdims_axes(g, u, ReduceKind::Sum).is_some())?;
    let axes = keepdims_axes(g, sum, ReduceKind::Sum)?.to_vec();
    let op = softmax_for(&axes, ty.rank())?;
    let next = only_user(g, out0(sum))?;
    let (norm, mut region) = if binary(g, next, BinaryOp::Div) == Some((e, out0(sum))) {
        (next, vec![exp, sum, next])
    } else {
        unary(g, next, UnaryOp::Reciprocal).filter(|&v| v == out0(sum))?;
        let mul = only_user(g, out0(next))?;
        other_operand(binary(g, mul, BinaryOp::Mul)?, out0(next)).filter(|&o| o == e)?;
        (mul, vec![exp, sum, next, mul])
    };
    let others: Vec<NodeId> = users
        .iter()
        .map(|&(u, _)| u)
        .filter(|&u| u != sum)
        .collect();
    if others != [norm] || !has_type(g, out0(norm), &ty) {
        return None;
    }
    // Absorb `s = x - ReduceMax(x)` when the maximum runs over (at least) the summed axes: it is then
    // the same along each softmax row, a shift the softmax ignores.
    let mut x = s;
    if let Some((x0, mx)) = binary(g, s.node, BinaryOp::Sub) {
        let covers = keepdims_axes(g, mx.node, ReduceKind::Max)
            .is_some_and(|m| axes.iter().all(|a| m.contains(a)));
        if covers && g.input(mx.node, 0) == Some(x0) && has_type(g, x0, &ty) {
            let with_max = [region.as_slice(), &[s.node, mx.node]].concat();
            if is_private(g, &with_max, norm) {
                x = x0;
                region = with_max;
            }
        }
    }
    is_private(g, &region, norm).then_some(Match {
        x,
        op,
        region,
        root: norm,
    })
}
