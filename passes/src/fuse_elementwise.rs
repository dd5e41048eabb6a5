//! Fusing chains and trees of f32 elementwise ops into one `fused_ew` node.
//!
//! Every unfused elementwise node is a full pass over memory: it loads its inputs and stores its
//! output for a few instructions of work per element. A `fused_ew` runs the whole group per
//! element in registers, so the intermediates never reach memory.
//!
//! A group is a tree of f32 float-valued `unary`/`binary` nodes (arithmetic, activations and math;
//! not predicates, comparisons or logic) in which every value but the root's is read by exactly one
//! node of the group (possibly through both of its inputs) and is not a graph output. A producer
//! joins its reader's group only if its output has as many elements as the reader's: a value that
//! broadcasting then grows (a per-channel `sigmoid` scaling a whole feature map) stays its own node,
//! computed once, rather than once per output element. Groups of one node are left alone (there is
//! nothing to save). Every operand from outside the group (graph inputs, other nodes, constants:
//! scalars, per-channel vectors, whole weights) becomes an input of the fused node, once each.
//!
//! The groups follow from the graph's structure alone, not from the order nodes are visited, so
//! the result does not depend on it. The fused node takes the root's node name and output, and the
//! group's nodes are removed.
//!
//! Runs after `fuse-activation`, so that activations that can ride in a conv or gemm epilogue are
//! already there rather than in a fused group.

use crate::{Fuel, Pass, PassError};
use kiln_ir::ops::{FusedArg, FusedEw, FusedInst};
use kiln_ir::{DType, Graph, NodeId, Op, TensorType, Value};
use std::collections::HashMap;

/// Replaces each group of two or more f32 elementwise nodes (see the module docs) by one
/// `fused_ew` node.
#[derive(Clone, Copy, Debug, Default)]
pub struct FuseElementwise;

impl Pass for FuseElementwise {
    fn name(&self) -> &'static str {
        "fuse-elementwise"
    }

    fn run(&self, g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError> {
        let order = g.topo_order()?;
        let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        // The reader each fusable node joins, if it joins one.
        let mut joins: HashMap<NodeId, NodeId> = HashMap::new();
        for &id in &order {
            if !fusable(g, id) {
                continue;
            }
            let out = Value { node: id, slot: 0 };
            if g.is_output(out) {
                continue;
            }
            let users = g.users(out);
            let Some(&(reader, _)) = users.first() else {
                continue;
            };
            if users.iter().all(|&(u, _)| u == reader)
                && fusable(g, reader)
                && same_size(g.ty(out), &g.node(reader).outputs[0].ty)
            {
                joins.insert(id, reader);
            }
        }
        // Group members by root (the member whose output leaves the group), in topological order;
        // every member precedes its reader, so the root comes last.
        let mut groups: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for &id in &order {
            if !fusable(g, id) {
                continue;
            }
            let mut root = id;
            while let Some(&r) = joins.get(&root) {
                root = r;
            }
            groups.entry(root).or_default().push(id);
        }
        let mut roots: Vec<NodeId> = groups
            .iter()
            .filter(|(_, m)| m.len() >= 2)
            .map(|(&r, _)| r)
            .collect();
        roots.sort_by_key(|r| pos[r]);
        let mut changed = false;
        for root in roots {
            if !fuel.take() {
                break;
            }
            fuse(g, &groups[&root]);
            changed = true;
        }
        Ok(changed)
    }
}

/// Whether a node may be part of a group: an f32 float-valued unary or binary op with all its
/// inputs present and f32.
fn fusable(g: &Graph, id: NodeId) -> bool {
    let n = g.node(id);
    let (op_ok, arity) = match n.op {
        Op::Unary(u) => (FusedEw::allows_unary(u), 1),
        Op::Binary(b) => (FusedEw::allows_binary(b), 2),
        _ => return false,
    };
    let ins = g.inputs(id);
    op_ok
        && n.outputs.len() == 1
        && n.outputs[0].ty.dtype == DType::F32
        && ins.len() == arity
        && ins
            .iter()
            .all(|v| v.is_some_and(|v| g.ty(v).dtype == DType::F32))
}

/// Whether two values have the same number of elements (so no broadcasting grows one into the
/// other). Symbolic shapes must match exactly.
fn same_size(a: &TensorType, b: &TensorType) -> bool {
    match (a.num_elements(), b.num_elements()) {
        (Some(x), Some(y)) => x == y,
        _ => a.shape == b.shape,
    }
}

/// Replaces the group `members` (topological order, root last) by one `fused_ew` node.
fn fuse(g: &mut Graph, members: &[NodeId]) {
    let index: HashMap<NodeId, usize> = members.iter().enumerate().map(|(k, &n)| (n, k)).collect();
    let mut inputs: Vec<Value> = Vec::new();
    let mut arg = |v: Value| -> FusedArg {
        if let Some(&k) = index.get(&v.node) {
            return FusedArg::Inst(k);
        }
        match inputs.iter().position(|&x| x == v) {
            Some(i) => FusedArg::Input(i),
            None => {
                inputs.push(v);
                FusedArg::Input(inputs.len() - 1)
            }
        }
    };
    let mut program = Vec::with_capacity(members.len());
    for &m in members {
        // `fusable` checked that every input is present.
        let ins: Vec<Value> = g.inputs(m).into_iter().flatten().collect();
        program.push(match g.node(m).op {
            Op::Unary(u) => FusedInst::Unary(u, arg(ins[0])),
            Op::Binary(b) => FusedInst::Binary(b, arg(ins[0]), arg(ins[1])),
            ref other => unreachable!("{} is not fusable", other.name()),
        });
    }
    let root = *members.last().expect("a group has members");
    let node = g.node(root);
    let (name, outputs) = (node.name.clone(), node.outputs.clone());
    let operands: Vec<Option<Value>> = inputs.iter().map(|&v| Some(v)).collect();
    let op = Op::FusedEw(FusedEw { program });
    debug_assert_eq!(
        g.infer(&name, &op, &operands)
            .map_err(|e| e.to_string())
            .map(|t| t[0].clone()),
        Ok(outputs[0].ty.clone()),
        "fuse-elementwise: the fused node of {name:?} changes its type"
    );
    let fused = g.add_node_typed(name, op, &operands, outputs)[0];
    g.replace_all_uses(
        Value {
            node: root,
            slot: 0,
        },
        fused,
    );
    // Nothing outside the group reads a member other than the root, which now has no readers.
    for &m in members {
        g.remove_node(m);
    }
}
