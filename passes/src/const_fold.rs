//! Constant folding with the reference evaluator.

use crate::{Fuel, Pass, PassError};
use kiln_ir::{Graph, Op, OpError, Tensor, Value};

/// Replaces every node whose inputs are all constants (and every `shape` of a statically shaped
/// value) by constants computed with the op's reference evaluator.
///
/// A fold that would make the weights much larger (say an `Expand` of a scalar to a big tensor) is
/// skipped: the result may be at most `max(total input bytes, max_growth_bytes)`.
#[derive(Clone, Copy, Debug)]
pub struct ConstFold {
    /// Results up to this size are always folded.
    pub max_growth_bytes: usize,
}

impl Default for ConstFold {
    fn default() -> Self {
        ConstFold {
            max_growth_bytes: 1 << 16,
        }
    }
}

impl Pass for ConstFold {
    fn name(&self) -> &'static str {
        "const-fold"
    }

    fn run(&self, g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError> {
        let mut changed = false;
        for id in g.topo_order()? {
            let node = g.node(id);
            if matches!(node.op, Op::Input(_) | Op::Const(_)) {
                continue;
            }
            let ins = g.inputs(id);
            let results = match &node.op {
                Op::Shape(shape) => {
                    let Some(dims) = ins.first().copied().flatten().and_then(|x| g.ty(x).dims())
                    else {
                        continue;
                    };
                    vec![shape.value_for(&dims)]
                }
                op => {
                    let consts: Option<Vec<Option<&Tensor>>> = ins
                        .iter()
                        .map(|v| v.map(|v| g.const_value(v).ok_or(())))
                        .map(|r| r.transpose().ok())
                        .collect();
                    let Some(consts) = consts else { continue };
                    let in_bytes: usize = consts.iter().flatten().map(|t| t.bytes().len()).sum();
                    let out_bytes: usize = node
                        .outputs
                        .iter()
                        .map(|o| o.ty.byte_size().unwrap_or(usize::MAX))
                        .sum();
                    if out_bytes > in_bytes.max(self.max_growth_bytes) {
                        continue;
                    }
                    match op.eval(&consts) {
                        Ok(r) => r,
                        // An op without a reference evaluator for these types stays in the graph.
                        Err(OpError::Unsupported(_)) => continue,
                        Err(source) => {
                            return Err(PassError::Graph(kiln_ir::GraphError::Op {
                                node: node.name.clone(),
                                op: op.name().to_string(),
                                source,
                            }))
                        }
                    }
                }
            };
            if !fuel.take() {
                return Ok(changed);
            }
            let name = g.node(id).name.clone();
            let outs = g.node(id).outputs.clone();
            for (slot, t) in results.into_iter().enumerate() {
                assert_eq!(
                    t.ty(),
                    outs[slot].ty,
                    "const-fold: evaluator of node {name:?} changed its type"
                );
                let c = g.add_const(outs[slot].name.clone(), t);
                g.replace_all_uses(
                    Value {
                        node: id,
                        slot: slot as u32,
                    },
                    c,
                );
            }
            changed = true;
        }
        Ok(changed)
    }
}
