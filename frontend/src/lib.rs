//! kiln's ONNX frontend.
//!
//! - [`import_file`] / [`import_bytes`]: an ONNX model -> a [`kiln_ir::Graph`] ([`Model`]), with every
//!   unsupported node listed at once ([`ImportError::Unsupported`]).
//! - [`inspect_file`] / [`inspect_bytes`]: a summary (inputs, outputs, op histogram, parameters,
//!   unsupported nodes) read from the protobuf, which works even when the import does not.
//! - [`proto`]: the ONNX protobuf schema as Rust types ([`onnx`]), generated at build time without `protoc`.
//! - [`builder`]: a small builder that writes real ONNX model bytes, for tests and examples.
#![deny(missing_docs)]

pub mod builder;
pub mod proto;
mod since;

mod attrs;
mod error;
mod import;
mod inspect;
mod ops;
mod ops_elementwise;
mod ops_movement;
mod ops_norm;
mod tensor;

pub use error::{ImportError, UnsupportedNode};
pub use import::{import_bytes, import_file, ImportOptions, Model};
pub use inspect::{inspect_bytes, inspect_file, Inspection, TensorInfo};
pub use proto::onnx;
pub use tensor::decode_tensor_bytes;
