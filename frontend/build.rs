//! Generates the Rust types for `proto/onnx.proto`.
//!
//! `protox` parses the schema in pure Rust, so building kiln needs no `protoc`; `prost-build` turns the
//! resulting file descriptor set into `$OUT_DIR/onnx.rs`. Both are deterministic: the same schema gives
//! the same file, and prost-build leaves an unchanged file untouched.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR unset")?);
    let include = manifest_dir.join("proto");
    let schema = include.join("onnx.proto");

    // Only the schema (and this script, which Cargo tracks itself) can change the output.
    println!("cargo:rerun-if-changed={}", schema.display());
    println!("cargo:rerun-if-changed=build.rs");

    let fds = protox::compile([&schema], [&include])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
