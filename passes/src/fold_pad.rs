//! Folding explicit `pad` nodes into the padding of the window op that reads them.
//!
//! Exporters (and older opsets with asymmetric or "SAME" padding) often emit `Pad -> Conv`. A conv's own
//! padding reads zeros without materializing a padded copy of the activation, so moving a zero `Pad`
//! into the conv saves a full copy. Pooling works the same way when the padded values behave like the
//! pool's own padding: `-inf` for a max pool, zeros counted in the divisor for an average pool.

use crate::{Fuel, Pass, PassError};
use kiln_ir::ops::{Fact, Movement, Pad, PadMode, Pool, PoolKind};
use kiln_ir::{Graph, NodeId, Op, Value};

/// Moves a constant-mode `pad` of the spatial axes into the pads of each `conv`, `avg_pool` or
/// `max_pool` that reads it, where that is exact:
///
/// - conv: the fill value is zero;
/// - average pool: the fill value is zero and the pool counts padding in its divisor
///   (`count_include_pad=1`), or has no padding of its own (then the folded pool counts its padding,
///   which is exactly the zeros the `pad` added);
/// - max pool: the fill value is `-inf` (a max pool's padding never wins, and neither does `-inf`).
///
/// Only non-negative pads of the axes after N and C fold. The `pad` stays for readers it cannot fold
/// into (`dce` removes it once nothing reads it). A `pad` that pads nothing is bypassed outright.
#[derive(Clone, Copy, Debug, Default)]
pub struct FoldPad;

impl Pass for FoldPad {
    fn name(&self) -> &'static str {
        "fold-pad"
    }

    fn run(&self, g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError> {
        let mut changed = false;
        for id in g.topo_order()? {
            if !g.contains(id) {
                continue;
            }
            let Op::Movement(Movement::Pad(pad)) = &g.node(id).op else {
                continue;
            };
            let pad = pad.clone();
            let Some(x) = g.input(id, 0) else { continue };
            let out = Value { node: id, slot: 0 };
            if pad.pads.iter().all(|&p| p == 0) {
                // Padding nothing is the identity in every mode.
                if (g.users(out).is_empty() && !g.is_output(out)) || !fuel.take() {
                    continue;
                }
                g.replace_all_uses(out, x);
                drop_if_dead(g, id);
                changed = true;
                continue;
            }
            let Some(fill) = fill_value(g, id, &pad) else {
                continue;
            };
            let Some(spatial) = spatial_pads(&pad, g.ty(x).rank()) else {
                continue;
            };
            for (user, slot) in g.users(out) {
                if slot != 0 {
                    continue;
                }
                let Some(op) = folded(g, user, x, fill, &spatial) else {
                    continue;
                };
                if !fuel.take() {
                    return Ok(changed);
                }
                g.node_mut(user).op = op;
                g.set_input(user, 0, Some(x));
                changed = true;
            }
            drop_if_dead(g, id);
        }
        Ok(changed)
    }
}

/// Removes a node nothing reads any more (the readers were moved elsewhere).
fn drop_if_dead(g: &mut Graph, id: NodeId) {
    let out = Value { node: id, slot: 0 };
    if g.users(out).is_empty() && !g.is_output(out) {
        g.remove_node(id);
    }
}

/// The fill value of a constant-mode pad (zero when absent), if it is a known single float.
fn fill_value(g: &Graph, id: NodeId, pad: &Pad) -> Option<f64> {
    if pad.mode != PadMode::Constant {
        return None;
    }
    let x = g.input(id, 0)?;
    if !g.ty(x).dtype.is_float() {
        return None;
    }
    match g.input(id, 1) {
        None => Some(0.0),
        Some(v) => {
            let t = g.const_value(v)?;
            (t.len() == 1).then(|| t.get_f64(0))
        }
    }
}

/// The pads of the spatial axes as `[begin..., end...]`, when N and C are not padded and no spatial
/// pad crops.
fn spatial_pads(pad: &Pad, rank: usize) -> Option<Vec<usize>> {
    if rank < 3 || pad.pads.len() != 2 * rank {
        return None;
    }
    let (begin, end) = pad.pads.split_at(rank);
    if begin[..2] != [0, 0] || end[..2] != [0, 0] {
        return None;
    }
    begin[2..]
        .iter()
        .chain(&end[2..])
        .map(|&p| usize::try_from(p).ok())
        .collect()
}

/// The op `user` becomes when it reads the unpadded input `x`, if that is exact.
fn folded(g: &Graph, user: NodeId, x: Value, fill: f64, spatial: &[usize]) -> Option<Op> {
    let add = |own: &[usize]| -> Option<Vec<usize>> {
        if own.len() != spatial.len() {
            return None;
        }
        own.iter()
            .zip(spatial)
            .map(|(a, b)| a.checked_add(*b))
            .collect()
    };
    let op = match &g.node(user).op {
        Op::Conv(c) if fill == 0.0 => {
            let mut c = c.clone();
            c.pads = add(&c.pads)?;
            Op::Conv(c)
        }
        Op::Pool(p) if p.kind == PoolKind::Avg && fill == 0.0 => {
            let own_padding = p.pads.iter().any(|&v| v != 0);
            if !p.count_include_pad && own_padding {
                // Its own padding is not counted but the pad's zeros are: no single pool says that.
                return None;
            }
            Op::Pool(Pool {
                pads: add(&p.pads)?,
                count_include_pad: true,
                ..p.clone()
            })
        }
        Op::Pool(p) if p.kind == PoolKind::Max && fill == f64::NEG_INFINITY => Op::Pool(Pool {
            pads: add(&p.pads)?,
            ..p.clone()
        }),
        _ => return None,
    };
    // Same output type, or no fold: pools reject pads as large as the window and windows of padding
    // only, and ceil mode drops windows that start in the end padding; a pad node has none of these
    // limits, so the folded op must be checked, not assumed.
    let mut facts: Vec<Option<Fact>> = g
        .inputs(user)
        .iter()
        .map(|v| v.map(|v| g.fact(v)))
        .collect();
    facts[0] = Some(g.fact(x));
    let want: Vec<_> = g.node(user).outputs.iter().map(|o| o.ty.clone()).collect();
    (op.infer(&facts).ok()? == want).then_some(op)
}
