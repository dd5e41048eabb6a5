//! Rust types for the ONNX protobuf schema.
//!
//! The schema lives in `proto/onnx.proto`; `build.rs` generates these types from it with prost. The
//! schema is proto2, so scalar fields are `Option`s with getters that return the default when absent
//! (`node.op_type()`, `attr.r#type()`), and enum fields are stored as `i32`.

/// The generated ONNX messages (`ModelProto`, `GraphProto`, `NodeProto`, `TensorProto`, ...).
///
/// Nested messages and enums live in snake_case submodules named after their parent, as prost lays
/// them out: `tensor_proto::DataType`, `attribute_proto::AttributeType`, `type_proto::Value`,
/// `tensor_shape_proto::dimension::Value`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
