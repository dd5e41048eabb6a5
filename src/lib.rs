//! kiln: ONNX to native static libraries.
