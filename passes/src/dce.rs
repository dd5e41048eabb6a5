//! Dead-node elimination.

use crate::{Fuel, Pass, PassError};
use kiln_ir::{Graph, NodeId};
use std::collections::HashSet;

/// Removes every node no graph output depends on. Graph inputs stay: they are part of the C API.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeadNodes;

impl Pass for DeadNodes {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError> {
        let mut live: HashSet<NodeId> = HashSet::new();
        let mut stack: Vec<NodeId> = g.outputs.iter().map(|(_, v)| v.node).collect();
        while let Some(id) = stack.pop() {
            if live.insert(id) {
                stack.extend(g.inputs(id).into_iter().flatten().map(|v| v.node));
            }
        }
        let mut changed = false;
        for id in g.node_ids() {
            if !live.contains(&id) && !g.inputs.contains(&id) && fuel.take() {
                g.remove_node(id);
                changed = true;
            }
        }
        Ok(changed)
    }
}
