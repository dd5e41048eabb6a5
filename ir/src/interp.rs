//! Whole-graph reference evaluation: every node through its op's reference evaluator.
//!
//! Slow and simple on purpose: it is the oracle the compiled code is compared against.

use crate::{Graph, GraphError, Op, Tensor, Value};
use std::collections::HashMap;

/// Evaluates `g` on `inputs` (one per graph input, ONNX order) and returns its outputs in order.
pub fn interpret(g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, GraphError> {
    let mut values: HashMap<Value, Tensor> = HashMap::new();
    let op_err = |g: &Graph, id, msg: String| GraphError::Op {
        node: g.node(id).name.clone(),
        op: g.node(id).op.name().to_string(),
        source: crate::OpError::Invalid(msg),
    };
    for id in g.topo_order()? {
        let node = g.node(id);
        let outs = match &node.op {
            Op::Input(i) => {
                let t = inputs
                    .get(*i)
                    .ok_or_else(|| op_err(g, id, format!("no value given for input {i}")))?;
                if t.ty() != node.outputs[0].ty {
                    return Err(op_err(
                        g,
                        id,
                        format!(
                            "input {i} is {} but the graph takes {}",
                            t.ty(),
                            node.outputs[0].ty
                        ),
                    ));
                }
                vec![t.clone()]
            }
            op => {
                let ins: Vec<Option<&Tensor>> = g
                    .inputs(id)
                    .iter()
                    .map(|v| v.map(|v| &values[&v]))
                    .collect();
                op.eval(&ins).map_err(|source| GraphError::Op {
                    node: node.name.clone(),
                    op: op.name().to_string(),
                    source,
                })?
            }
        };
        for (slot, t) in outs.into_iter().enumerate() {
            values.insert(
                Value {
                    node: id,
                    slot: slot as u32,
                },
                t,
            );
        }
    }
    Ok(g.outputs.iter().map(|(_, v)| values[v].clone()).collect())
}
