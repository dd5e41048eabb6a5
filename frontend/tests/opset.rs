//! An op used at an opset older than the one that introduced it is a bad model, named as such.

use kiln_frontend::builder::{elem, ModelBuilder};
use kiln_frontend::{import_bytes, ImportOptions};

fn one_node(op: &str, opset: i64) -> Result<(), String> {
    let mut b = ModelBuilder::new("g").opset("", opset);
    b.input("x", elem::FLOAT, &[2, 3])
        .output("y", elem::FLOAT, &[2, 3]);
    b.node_named("n", "", op, &["x"], &["y"], vec![]);
    import_bytes(&b.to_bytes(), None, &ImportOptions::default())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn ops_newer_than_the_model_opset_are_refused() {
    // Mish appeared in opset 18, Gelu in 20, HardSwish in 14.
    for (op, opset, since) in [("Mish", 9, 18), ("Gelu", 17, 20), ("HardSwish", 13, 14)] {
        let e = one_node(op, opset).unwrap_err();
        assert!(
            e.contains(op) && e.contains(&format!("opset {since}")) && e.contains("\"n\""),
            "{e}"
        );
    }
    for (op, opset) in [("Mish", 18), ("Gelu", 20), ("HardSwish", 14), ("Relu", 1)] {
        one_node(op, opset).unwrap_or_else(|e| panic!("{op} at opset {opset}: {e}"));
    }
}
