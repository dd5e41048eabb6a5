//! Layout simplification: fewer transposes, and shape changes as single reshapes.
//!
//! In the backend a reshape (or flatten, squeeze, unsqueeze) is a free view of its input's bytes, while a
//! transpose copies. Exporters leave transpose pairs that cancel, transposes that only move size-1 axes
//! (same bytes in the same order: a view in disguise), and chains of shape ops; this pass reduces each
//! to at most one node, and to none where it does nothing.

use crate::{Fuel, Pass, PassError};
use kiln_ir::ops::{Reshape, Transpose};
use kiln_ir::{Graph, NodeId, Op, Value};

/// Rewrites, repeated until none applies:
///
/// - `transpose(transpose(x))` -> one `transpose(x)` with the composed permutation, or `x` when it is
///   the identity;
/// - a `transpose` by the identity permutation -> its input;
/// - a `transpose` that only moves size-1 axes -> `reshape`;
/// - a `reshape`, `flatten`, `squeeze` or `unsqueeze` of one of those -> one `reshape` of the first
///   one's input;
/// - a `reshape`, `flatten`, `squeeze` or `unsqueeze` to its input's own shape -> its input.
///
/// Every rewritten node keeps its name and output type. Nodes left without readers are removed.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimplifyLayout;

/// Sweeps before giving up on reaching a fixed point. One sweep in topological order already
/// collapses every chain; a second finds what the first exposed, and more never happen in practice.
const MAX_SWEEPS: usize = 8;

impl Pass for SimplifyLayout {
    fn name(&self) -> &'static str {
        "simplify-layout"
    }

    fn run(&self, g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError> {
        let mut changed = false;
        for _ in 0..MAX_SWEEPS {
            let (swept, out_of_fuel) = sweep(g, fuel)?;
            changed |= swept;
            if !swept || out_of_fuel {
                break;
            }
        }
        Ok(changed)
    }
}

/// One rewrite of one node.
enum Rewrite {
    /// Readers of the node read this value instead.
    Bypass(Value),
    /// The node becomes this op, reading this value.
    Replace(Op, Value),
}

/// One pass over the graph in topological order; returns (changed, ran out of fuel).
fn sweep(g: &mut Graph, fuel: &mut Fuel) -> Result<(bool, bool), PassError> {
    let mut changed = false;
    for id in g.topo_order()? {
        if !g.contains(id) {
            continue;
        }
        let out = Value { node: id, slot: 0 };
        // Dead nodes are `dce`'s business; rewriting them would only burn fuel.
        if g.users(out).is_empty() && !g.is_output(out) {
            continue;
        }
        let Some(rewrite) = rewrite(g, id) else {
            continue;
        };
        if !fuel.take() {
            return Ok((changed, true));
        }
        let old_input = g.input(id, 0);
        match rewrite {
            Rewrite::Bypass(v) => {
                g.replace_all_uses(out, v);
                g.remove_node(id);
            }
            Rewrite::Replace(op, v) => {
                g.node_mut(id).op = op;
                g.set_input(id, 0, Some(v));
            }
        }
        // The producer we looked through may have lost its last reader.
        if let Some(p) = old_input {
            if g.contains(p.node)
                && is_layout(&g.node(p.node).op)
                && g.users(p).is_empty()
                && !g.is_output(p)
            {
                g.remove_node(p.node);
            }
        }
        changed = true;
    }
    Ok((changed, false))
}

/// A shape op: its output is its input's bytes under another shape.
fn is_view(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape(_) | Op::Flatten(_) | Op::Squeeze(_) | Op::Unsqueeze(_)
    )
}

/// An op this pass rewrites (and so may leave dead).
fn is_layout(op: &Op) -> bool {
    is_view(op) || matches!(op, Op::Transpose(_))
}

fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| i == p)
}

/// A reshape to these static dims. `allowzero` keeps a 0 meaning "empty" rather than "copy".
fn reshape_to(dims: &[usize]) -> Op {
    Op::Reshape(Reshape {
        shape: dims.iter().map(|&d| d as i64).collect(),
        allowzero: dims.contains(&0),
    })
}

/// The rewrite that applies to node `id`, if any.
fn rewrite(g: &Graph, id: NodeId) -> Option<Rewrite> {
    let x = g.input(id, 0)?;
    let out = Value { node: id, slot: 0 };
    let producer = (x.slot == 0).then(|| &g.node(x.node).op);
    match &g.node(id).op {
        Op::Transpose(t) => {
            if is_identity(&t.perm) {
                return Some(Rewrite::Bypass(x));
            }
            if let Some(Op::Transpose(inner)) = producer {
                // Output axis i is the inner output's axis perm[i], which is x's axis inner[perm[i]].
                let perm: Vec<usize> = t.perm.iter().map(|&p| inner.perm[p]).collect();
                let src = g.input(x.node, 0)?;
                return Some(if is_identity(&perm) {
                    Rewrite::Bypass(src)
                } else {
                    Rewrite::Replace(Op::Transpose(Transpose { perm }), src)
                });
            }
            // Same bytes in the same order when the axes larger than 1 keep their relative order.
            let in_dims = g.ty(x).dims()?;
            let moved: Vec<usize> = t
                .perm
                .iter()
                .copied()
                .filter(|&p| in_dims[p] != 1)
                .collect();
            if moved.windows(2).all(|w| w[0] < w[1]) {
                let out_dims = g.ty(out).dims()?;
                return Some(Rewrite::Replace(reshape_to(&out_dims), x));
            }
            None
        }
        op if is_view(op) => {
            if g.ty(x) == g.ty(out) {
                return Some(Rewrite::Bypass(x));
            }
            if producer.is_some_and(is_view) {
                let src = g.input(x.node, 0)?;
                let out_dims = g.ty(out).dims()?;
                if g.ty(src) == g.ty(out) {
                    return Some(Rewrite::Bypass(src));
                }
                return Some(Rewrite::Replace(reshape_to(&out_dims), src));
            }
            None
        }
        _ => None,
    }
}
