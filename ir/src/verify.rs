//! The verifier: run after every pass in tests and debug builds.

use crate::print::print_node;
use crate::{Graph, NodeId, Op};

/// A broken invariant. Compiler bug when it follows a pass; bad input when it follows the parser.
#[derive(Debug, thiserror::Error)]
#[error("verifier: {msg}\n  at: {line}")]
pub struct VerifyError {
    /// What is wrong.
    pub msg: String,
    /// The offending node's textual line (empty for graph-level problems).
    pub line: String,
    /// The offending node, if any.
    pub node: Option<NodeId>,
}

/// Checks the graph's invariants: acyclic; every edge names an existing output slot; input nodes are
/// exactly the graph's inputs; every node's output types are what inference says for its inputs; graph
/// outputs name live values.
pub fn verify(g: &Graph) -> Result<(), VerifyError> {
    let fail = |id: Option<NodeId>, msg: String| VerifyError {
        line: id.map(|id| print_node(g, id)).unwrap_or_default(),
        msg,
        node: id,
    };
    g.topo_order().map_err(|e| fail(None, e.to_string()))?;
    for (i, &id) in g.inputs.iter().enumerate() {
        if !g.contains(id) || g.node(id).op != Op::Input(i) {
            return Err(fail(
                g.contains(id).then_some(id),
                format!("graph input {i} is not an input node"),
            ));
        }
    }
    for id in g.node_ids() {
        let node = g.node(id);
        let ins = g.inputs(id);
        for v in ins.iter().flatten() {
            if v.slot as usize >= g.node(v.node).outputs.len() {
                return Err(fail(
                    Some(id),
                    format!(
                        "reads slot {} of a node with {} outputs",
                        v.slot,
                        g.node(v.node).outputs.len()
                    ),
                ));
            }
        }
        match &node.op {
            Op::Input(i) => {
                if g.inputs.get(*i) != Some(&id) {
                    return Err(fail(
                        Some(id),
                        format!("input node claims index {i} but is not that graph input"),
                    ));
                }
                if !ins.is_empty() {
                    return Err(fail(Some(id), "input node has inputs".into()));
                }
            }
            op => {
                let inferred = g
                    .infer(&node.name, op, &ins)
                    .map_err(|e| fail(Some(id), e.to_string()))?;
                let have: Vec<_> = node.outputs.iter().map(|o| o.ty.clone()).collect();
                if inferred != have {
                    let show = |v: &[crate::TensorType]| {
                        v.iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(fail(
                        Some(id),
                        format!(
                            "output types are [{}] but inference says [{}]",
                            show(&have),
                            show(&inferred)
                        ),
                    ));
                }
            }
        }
    }
    for (name, v) in &g.outputs {
        if !g.contains(v.node) || v.slot as usize >= g.node(v.node).outputs.len() {
            return Err(fail(
                None,
                format!("graph output {name:?} names a value that does not exist"),
            ));
        }
    }
    Ok(())
}
