//! The printed form of a small CNN, frozen. Large weights print as a hash (default options).

mod common;

#[test]
fn small_cnn_text() {
    let g = common::cnn();
    kiln_ir::verify(&g).unwrap();
    insta::assert_snapshot!(kiln_ir::print(&g, kiln_ir::PrintOptions::default()));
}
