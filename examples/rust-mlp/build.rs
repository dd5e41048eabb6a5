//! Compiles the bundled MLP into `$OUT_DIR/libmlp.a` for the Cargo target and links it.

use std::fmt::Write;

fn main() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/models/mlp.onnx");
    let (compiled, _files) = kiln::Compiler::new(model)
        .name("mlp")
        .build_rs()
        .unwrap_or_else(|e| {
            // A build script reports errors by failing; the message names the node and op.
            panic!("kiln could not compile {model}: {e}")
        });
    // Sizes the wrapper needs, known at compile time.
    let mut consts = String::new();
    writeln!(
        consts,
        "pub const ARENA_SIZE: usize = {};",
        compiled.report.arena_bytes
    )
    .unwrap();
    writeln!(
        consts,
        "pub const INPUT_LEN: usize = {};",
        compiled.inputs[0].dims.iter().product::<usize>()
    )
    .unwrap();
    writeln!(
        consts,
        "pub const OUTPUT_LEN: usize = {};",
        compiled.outputs[0].dims.iter().product::<usize>()
    )
    .unwrap();
    let out = std::env::var("OUT_DIR").unwrap();
    std::fs::write(format!("{out}/mlp_sizes.rs"), consts).unwrap();
}
