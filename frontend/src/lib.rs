//! kiln's ONNX frontend.
//!
//! - [`proto`]: the ONNX protobuf schema as Rust types ([`onnx`]), generated at build time without `protoc`.
//! - [`builder`]: a small builder that writes real ONNX model bytes, for tests and examples.
#![deny(missing_docs)]

pub mod builder;
pub mod proto;

pub use proto::onnx;
