//! The graph: nodes on a petgraph backbone, edges that name producer and consumer slots.

use crate::ops::{Fact, Op, OpError};
use crate::{Tensor, TensorType};
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::HashMap;
use std::fmt;

/// Identifies a node. Stable across removals of other nodes.
pub type NodeId = NodeIndex<u32>;

/// One output of one node: the unit that has a type and (later) an arena slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value {
    /// Producing node.
    pub node: NodeId,
    /// Output slot of the producer.
    pub slot: u32,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.slot == 0 {
            write!(f, "%{}", self.node.index())
        } else {
            write!(f, "%{}.{}", self.node.index(), self.slot)
        }
    }
}

/// An edge: output `src_slot` of the source node feeds input `dst_slot` of the target node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    /// Output slot of the producer.
    pub src_slot: u32,
    /// Input slot of the consumer.
    pub dst_slot: u32,
}

/// Name and type of one node output.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    /// The ONNX value name (kept for debugging and for the C header).
    pub name: String,
    /// Type and shape.
    pub ty: TensorType,
}

/// A node: an operation with named, typed outputs. Its inputs are the incoming edges.
#[derive(Clone, Debug)]
pub struct Node {
    /// The ONNX node name (or a generated one); users debug with it.
    pub name: String,
    /// The operation.
    pub op: Op,
    /// One entry per output slot.
    pub outputs: Vec<ValueInfo>,
}

/// A graph-level error: names the node and op it is about.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// An op rejected its inputs.
    #[error("node \"{node}\" ({op}): {source}")]
    Op {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// What the op said.
        #[source]
        source: OpError,
    },
    /// The graph contains a cycle through the named node.
    #[error("graph has a cycle through node \"{0}\"")]
    Cycle(String),
}

/// A computation graph with typed values.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    g: StableDiGraph<Node, Edge, u32>,
    /// Graph inputs in ONNX order; each is a node whose op is [`Op::Input`].
    pub inputs: Vec<NodeId>,
    /// Graph outputs in ONNX order, with their ONNX names.
    pub outputs: Vec<(String, Value)>,
    /// Graph name.
    pub name: String,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds a graph input.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> Value {
        let name = name.into();
        let index = self.inputs.len();
        let id = self.g.add_node(Node {
            name: name.clone(),
            op: Op::Input(index),
            outputs: vec![ValueInfo { name, ty }],
        });
        self.inputs.push(id);
        Value { node: id, slot: 0 }
    }

    /// Adds a constant.
    pub fn add_const(&mut self, name: impl Into<String>, t: Tensor) -> Value {
        let name = name.into();
        let ty = t.ty();
        let id = self.g.add_node(Node {
            name: name.clone(),
            op: Op::Const(t),
            outputs: vec![ValueInfo { name, ty }],
        });
        Value { node: id, slot: 0 }
    }

    /// Adds a node, inferring its output types. `inputs[i] = None` is an absent optional input.
    /// Output names are `output_names` where given, else `"{name}:{slot}"`.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[Option<Value>],
        output_names: &[&str],
    ) -> Result<Vec<Value>, GraphError> {
        let name = name.into();
        let types = self.infer(&name, &op, inputs)?;
        let outputs = types
            .into_iter()
            .enumerate()
            .map(|(i, ty)| ValueInfo {
                name: output_names
                    .get(i)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| format!("{name}:{i}")),
                ty,
            })
            .collect();
        Ok(self.add_node_typed(name, op, inputs, outputs))
    }

    /// Adds a node whose output types are already known (the parser, and passes that build a node
    /// of the same type as the one it replaces). The verifier checks them.
    pub fn add_node_typed(
        &mut self,
        name: String,
        op: Op,
        inputs: &[Option<Value>],
        outputs: Vec<ValueInfo>,
    ) -> Vec<Value> {
        let n = outputs.len();
        let id = self.g.add_node(Node { name, op, outputs });
        for (dst_slot, v) in inputs.iter().enumerate() {
            if let Some(v) = v {
                self.g.add_edge(
                    v.node,
                    id,
                    Edge {
                        src_slot: v.slot,
                        dst_slot: dst_slot as u32,
                    },
                );
            }
        }
        (0..n as u32).map(|slot| Value { node: id, slot }).collect()
    }

    /// Runs `op`'s type inference on the given inputs.
    pub fn infer(
        &self,
        name: &str,
        op: &Op,
        inputs: &[Option<Value>],
    ) -> Result<Vec<TensorType>, GraphError> {
        let facts: Vec<Option<Fact>> = inputs.iter().map(|v| v.map(|v| self.fact(v))).collect();
        op.infer(&facts).map_err(|source| GraphError::Op {
            node: name.to_string(),
            op: op.name().to_string(),
            source,
        })
    }

    /// What is known about a value: its type, and its data if it is a constant.
    pub fn fact(&self, v: Value) -> Fact<'_> {
        Fact {
            ty: self.ty(v),
            value: self.const_value(v),
        }
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    /// The node with this id, mutably. Changing its op must keep its output types.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id]
    }

    /// Whether the id names a live node.
    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id)
    }

    /// Type of a value.
    pub fn ty(&self, v: Value) -> &TensorType {
        &self.g[v.node].outputs[v.slot as usize].ty
    }

    /// Name of a value.
    pub fn value_name(&self, v: Value) -> &str {
        &self.g[v.node].outputs[v.slot as usize].name
    }

    /// The constant data of a value, if its producer is [`Op::Const`].
    pub fn const_value(&self, v: Value) -> Option<&Tensor> {
        match &self.g[v.node].op {
            Op::Const(t) => Some(t),
            _ => None,
        }
    }

    /// The inputs of a node, by input slot; `None` where an optional input is absent.
    pub fn inputs(&self, id: NodeId) -> Vec<Option<Value>> {
        let mut ins: Vec<Option<Value>> = Vec::new();
        for e in self.g.edges_directed(id, Direction::Incoming) {
            let w = e.weight();
            let slot = w.dst_slot as usize;
            if ins.len() <= slot {
                ins.resize(slot + 1, None);
            }
            ins[slot] = Some(Value {
                node: e.source(),
                slot: w.src_slot,
            });
        }
        ins
    }

    /// Input `slot` of a node.
    pub fn input(&self, id: NodeId, slot: usize) -> Option<Value> {
        self.inputs(id).get(slot).copied().flatten()
    }

    /// Every (consumer node, input slot) that reads `v`, sorted.
    pub fn users(&self, v: Value) -> Vec<(NodeId, u32)> {
        let mut u: Vec<(NodeId, u32)> = self
            .g
            .edges_directed(v.node, Direction::Outgoing)
            .filter(|e| e.weight().src_slot == v.slot)
            .map(|e| (e.target(), e.weight().dst_slot))
            .collect();
        u.sort();
        u
    }

    /// Whether `v` is a graph output.
    pub fn is_output(&self, v: Value) -> bool {
        self.outputs.iter().any(|(_, o)| *o == v)
    }

    /// Makes every reader of `old` (nodes and graph outputs) read `new` instead.
    pub fn replace_all_uses(&mut self, old: Value, new: Value) {
        let edges: Vec<(EdgeIndex<u32>, NodeId, Edge)> = self
            .g
            .edges_directed(old.node, Direction::Outgoing)
            .filter(|e| e.weight().src_slot == old.slot)
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (eid, target, w) in edges {
            self.g.remove_edge(eid);
            self.g.add_edge(
                new.node,
                target,
                Edge {
                    src_slot: new.slot,
                    dst_slot: w.dst_slot,
                },
            );
        }
        for (_, o) in self.outputs.iter_mut() {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Points input `slot` of `node` at `v`, replacing what was there.
    pub fn set_input(&mut self, node: NodeId, slot: usize, v: Option<Value>) {
        let old: Vec<EdgeIndex<u32>> = self
            .g
            .edges_directed(node, Direction::Incoming)
            .filter(|e| e.weight().dst_slot as usize == slot)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        if let Some(v) = v {
            self.g.add_edge(
                v.node,
                node,
                Edge {
                    src_slot: v.slot,
                    dst_slot: slot as u32,
                },
            );
        }
    }

    /// Removes a node and its edges. Graph inputs cannot be removed.
    pub fn remove_node(&mut self, id: NodeId) {
        assert!(
            !self.inputs.contains(&id),
            "remove_node: {} is a graph input",
            self.g[id].name
        );
        self.g.remove_node(id);
    }

    /// Live node ids, in insertion order (not necessarily topological).
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.g.node_indices().collect()
    }

    /// Number of live nodes.
    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Nodes in a deterministic topological order: among ready nodes, the lowest id first.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, GraphError> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut indeg: HashMap<NodeId, usize> = HashMap::new();
        let mut ready = BinaryHeap::new();
        for id in self.g.node_indices() {
            let d = self.g.edges_directed(id, Direction::Incoming).count();
            indeg.insert(id, d);
            if d == 0 {
                ready.push(Reverse(id));
            }
        }
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(Reverse(id)) = ready.pop() {
            order.push(id);
            for e in self.g.edges_directed(id, Direction::Outgoing) {
                let d = indeg.get_mut(&e.target()).expect("edge to a live node");
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(e.target()));
                }
            }
        }
        if order.len() != self.g.node_count() {
            let stuck = self
                .g
                .node_indices()
                .find(|id| indeg[id] > 0)
                .expect("a node left with inputs");
            return Err(GraphError::Cycle(self.g[stuck].name.clone()));
        }
        Ok(order)
    }

    /// The underlying petgraph, for analyses (dominators, reachability).
    pub fn petgraph(&self) -> &StableDiGraph<Node, Edge, u32> {
        &self.g
    }
}
