//! Helpers shared by the frontend's integration tests.
#![allow(dead_code)]

use kiln_frontend::builder::ModelBuilder;
use kiln_frontend::{import_bytes, ImportError, ImportOptions, Model, UnsupportedNode};
use kiln_ir::{DType, Graph, Node, Op, Tensor, TensorType, Value};

/// Imports the builder's model from memory with default options.
pub fn import(b: &ModelBuilder) -> Result<Model, ImportError> {
    import_bytes(&b.to_bytes(), None, &ImportOptions::default())
}

/// Imports with options.
pub fn import_with(b: &ModelBuilder, opts: &ImportOptions) -> Result<Model, ImportError> {
    import_bytes(&b.to_bytes(), None, opts)
}

/// Imports and panics with the error's message on failure.
pub fn ok(b: &ModelBuilder) -> Model {
    import(b).unwrap_or_else(|e| panic!("import failed: {e}"))
}

/// The error of an import that must fail.
pub fn err(b: &ModelBuilder) -> ImportError {
    match import(b) {
        Ok(m) => panic!(
            "import succeeded:\n{}",
            kiln_ir::print(&m.graph, Default::default())
        ),
        Err(e) => e,
    }
}

/// The unsupported list of an import that must fail with `ImportError::Unsupported`.
pub fn unsupported(b: &ModelBuilder) -> Vec<UnsupportedNode> {
    match err(b) {
        ImportError::Unsupported(list) => list,
        e => panic!("expected Unsupported, got: {e}"),
    }
}

/// The value of graph output `name`.
pub fn output(m: &Model, name: &str) -> Value {
    m.graph
        .outputs
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no graph output {name:?}"))
        .1
}

/// Type of graph output `name`.
pub fn out_ty(m: &Model, name: &str) -> TensorType {
    m.graph.ty(output(m, name)).clone()
}

/// The node producing graph output `name`.
pub fn out_node<'a>(m: &'a Model, name: &str) -> &'a Node {
    m.graph.node(output(m, name).node)
}

/// The op producing graph output `name`.
pub fn out_op(m: &Model, name: &str) -> Op {
    out_node(m, name).op.clone()
}

/// The constant data of graph output `name`.
pub fn out_const(m: &Model, name: &str) -> Tensor {
    m.graph
        .const_value(output(m, name))
        .unwrap_or_else(|| panic!("output {name:?} is not a constant"))
        .clone()
}

/// A static f32 type.
pub fn f32t(dims: &[usize]) -> TensorType {
    TensorType::new(DType::F32, dims)
}

/// A static type.
pub fn ty(dtype: DType, dims: &[usize]) -> TensorType {
    TensorType::new(dtype, dims)
}

/// Names of the ops of every node, in id order (inputs and constants included).
pub fn op_names(g: &Graph) -> Vec<&'static str> {
    g.node_ids()
        .into_iter()
        .map(|id| g.node(id).op.name())
        .collect()
}

/// Options with symbolic dims bound.
pub fn dims(pairs: &[(&str, usize)]) -> ImportOptions {
    ImportOptions {
        dims: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        ..Default::default()
    }
}
