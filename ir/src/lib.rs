//! kiln's graph IR.
//!
//! A [`Graph`] is a petgraph of [`Node`]s. Each node has an [`Op`] (a closed enum of plain data) and one
//! typed output per slot; each edge says which output slot of its source feeds which input slot of its
//! target. Every value carries a [`TensorType`] (dtype + shape of [`Dim`]s). Analyses that later stages
//! attach (quantization parameters, sparsity masks, arena offsets) live in side tables keyed by
//! [`Value`] or [`NodeId`], not on nodes.
//!
//! The textual form ([`print`], [`parse`]) is what snapshot tests freeze and what `kiln ir` shows:
//!
//! ```text
//! %3: f32[1,64,56,56] = conv(%0, %1, %2) {kernel_shape=[3,3], strides=[1,1], ...}  # "/layer1/conv"
//! ```
#![deny(missing_docs)]

pub mod attr;
mod dtype;
mod graph;
mod interp;
pub mod ops;
mod parse;
mod print;
mod shape;
mod tensor;
mod verify;

pub use attr::{Attr, Attrs};
pub use dtype::DType;
pub use graph::{Edge, Graph, GraphError, Node, NodeId, Value, ValueInfo};
pub use interp::interpret;
pub use ops::{Op, OpError};
pub use parse::{parse, ParseError};
pub use print::{print, print_node, PrintOptions};
pub use shape::{Dim, TensorType};
pub use tensor::{Tensor, TensorSizeError};
pub use verify::{verify, VerifyError};
