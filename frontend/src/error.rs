//! Import errors.
//!
//! Every message names the model file (`<memory>` for [`crate::import_bytes`]) and, when the problem
//! belongs to a node, the node's name, op type and the opset in force, because that is what a user
//! can look up in Netron or in the exporter's code.

use std::fmt;

/// One node (or graph input or initializer) that kiln cannot import yet.
///
/// Legal ONNX that kiln does not handle, as opposed to a broken model. The importer collects all of
/// them before failing, so a user sees the whole list at once.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UnsupportedNode {
    /// The model file (`<memory>` when imported from bytes).
    pub file: String,
    /// The ONNX node name (or the generated `op_type_N` when the node has none). For an unsupported
    /// graph input or initializer, its value name.
    pub node: String,
    /// The ONNX op type, or `graph input` / `initializer`.
    pub op_type: String,
    /// The node's domain as written in the model (`""` is the default ONNX domain).
    pub domain: String,
    /// The version of the node's domain imported by the model; 0 when the domain is not imported or
    /// the entry is not a node.
    pub opset: i64,
    /// Why it is unsupported.
    pub reason: String,
}

impl fmt::Display for UnsupportedNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node \"{}\" ({}", self.node, self.op_type)?;
        if !self.domain.is_empty() && self.domain != "ai.onnx" {
            write!(f, ", domain \"{}\"", self.domain)?;
        }
        if self.opset > 0 {
            write!(f, ", opset {}", self.opset)?;
        }
        write!(f, "): {}", self.reason)
    }
}

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The model file could not be read.
    #[error("{file}: cannot read the model: {source}")]
    Io {
        /// The model file.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model (truncated, random, or some other protobuf).
    #[error("{file}: not a valid ONNX model: {msg}")]
    Decode {
        /// The model file.
        file: String,
        /// What the decoder said.
        msg: String,
    },
    /// A problem with the model as a whole (missing opset import, an invalid graph input type, ...).
    #[error("{file}: {msg}")]
    Model {
        /// The model file.
        file: String,
        /// What is wrong.
        msg: String,
    },
    /// A symbolic input dimension (`dim_param`) with no `--dim` binding.
    #[error(
        "{file}: unbound symbolic dimension \"{dim}\" of input \"{input}\"; pass --dim {dim}=VALUE"
    )]
    UnboundDim {
        /// The model file.
        file: String,
        /// The graph input.
        input: String,
        /// The dimension's symbol.
        dim: String,
    },
    /// An input dimension with neither a size nor a name. It can still be bound with `--dim`, under
    /// the key `input:axis`.
    #[error(
        "{file}: unbound symbolic dimension \"{key}\" of input \"{input}\" (axis {axis} has neither a size \
         nor a name); pass --dim {key}=VALUE"
    )]
    UnknownDim {
        /// The model file.
        file: String,
        /// The graph input.
        input: String,
        /// The axis.
        axis: usize,
        /// The `--dim` key that binds it: `input:axis`.
        key: String,
    },
    /// A broken initializer or tensor (bad dims, data that does not fit, too large).
    #[error("{file}: tensor \"{tensor}\": {msg}")]
    Tensor {
        /// The model file.
        file: String,
        /// The tensor (initializer name, or `node "name" (op)` for a tensor inside a node).
        tensor: String,
        /// What is wrong.
        msg: String,
    },
    /// External tensor data that cannot be read safely.
    #[error("{file}: tensor \"{tensor}\": external data: {msg}")]
    ExternalData {
        /// The model file.
        file: String,
        /// The tensor.
        tensor: String,
        /// What is wrong.
        msg: String,
    },
    /// Two definitions of one value name (SSA violated).
    #[error("{file}: value \"{value}\" is defined more than once: by {first} and by {second}")]
    DuplicateValue {
        /// The model file.
        file: String,
        /// The value name.
        value: String,
        /// The first definition (`graph input`, `initializer`, or `node "name" (op)`).
        first: String,
        /// The second definition.
        second: String,
    },
    /// A node reads a value name that nothing defines.
    #[error(
        "{file}: node \"{node}\" ({op_type}) reads \"{value}\", which no node, graph input or initializer \
         defines"
    )]
    Dangling {
        /// The model file.
        file: String,
        /// The reading node.
        node: String,
        /// Its op type.
        op_type: String,
        /// The undefined value name.
        value: String,
    },
    /// The nodes cannot be ordered: there is a cycle through the named node.
    #[error("{file}: the graph has a cycle through node \"{node}\" ({op_type})")]
    Cycle {
        /// The model file.
        file: String,
        /// A node on the cycle.
        node: String,
        /// Its op type.
        op_type: String,
    },
    /// A node breaks its op's rules: wrong attribute type, missing input, shapes that do not match.
    #[error("{file}: node \"{node}\" ({op_type}, opset {opset}): {msg}")]
    Node {
        /// The model file.
        file: String,
        /// The node name.
        node: String,
        /// The ONNX op type.
        op_type: String,
        /// The version of the node's domain in force.
        opset: i64,
        /// What is wrong.
        msg: String,
    },
    /// A graph output that is missing or whose declared type contradicts the computed one.
    #[error("{file}: graph output \"{output}\": {msg}")]
    Output {
        /// The model file.
        file: String,
        /// The output name.
        output: String,
        /// What is wrong.
        msg: String,
    },
    /// Legal ONNX that kiln does not handle yet: every such node in the model, in graph order.
    #[error("{}", unsupported_message(.0))]
    Unsupported(Vec<UnsupportedNode>),
}

fn unsupported_message(nodes: &[UnsupportedNode]) -> String {
    let file = nodes.first().map_or("<model>", |n| n.file.as_str());
    let mut s = format!(
        "{file}: {} unsupported node{}:",
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" }
    );
    for n in nodes {
        s.push_str("\n  ");
        s.push_str(&n.to_string());
    }
    s
}
