//! Graph inputs (initializer-backed, symbolic dims), model metadata, and `inspect`.

mod common;

use common::*;
use kiln_frontend::builder::{attr, elem, DimSpec, ModelBuilder};
use kiln_frontend::{
    import_bytes, inspect_bytes, inspect_file, ImportError, ImportOptions, TensorInfo,
};
use kiln_ir::Op;

fn with_default_input() -> ModelBuilder {
    // "w" is both a graph input and an initializer, as older exporters wrote every weight.
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[2])
        .input("w", elem::FLOAT, &[2])
        .initializer_f32("w", &[2], &[3.0, 4.0])
        .node("Mul", &["x", "w"], &["y"], vec![])
        .output("y", elem::FLOAT, &[2]);
    b
}

#[test]
fn inputs_with_an_initializer_are_constants_by_default() {
    let m = ok(&with_default_input());
    assert_eq!(m.graph.inputs.len(), 1);
    assert_eq!(m.graph.node(m.graph.inputs[0]).name, "x");
    let w = m.graph.input(output(&m, "y").node, 1).unwrap();
    assert_eq!(m.graph.const_value(w).unwrap().to_f32_vec(), [3.0, 4.0]);
}

#[test]
fn inputs_with_an_initializer_can_stay_inputs() {
    let opts = ImportOptions {
        inputs_with_initializer_are_constants: false,
        ..Default::default()
    };
    let m = import_with(&with_default_input(), &opts).unwrap();
    let names: Vec<&str> = m
        .graph
        .inputs
        .iter()
        .map(|&id| m.graph.node(id).name.as_str())
        .collect();
    assert_eq!(names, ["x", "w"]);
    assert_eq!(m.graph.node(m.graph.inputs[1]).op, Op::Input(1));
}

fn symbolic() -> ModelBuilder {
    let mut b = ModelBuilder::new("g");
    b.input_sym("x", elem::FLOAT, &[DimSpec::Param("N"), DimSpec::Value(4)])
        .node("Relu", &["x"], &["y"], vec![])
        .output_sym("y", elem::FLOAT, &[DimSpec::Param("N"), DimSpec::Value(4)]);
    b
}

#[test]
fn symbolic_dims_are_bound_from_options() {
    let m = import_with(&symbolic(), &dims(&[("N", 3)])).unwrap();
    assert_eq!(
        m.graph.ty(kiln_ir::Value {
            node: m.graph.inputs[0],
            slot: 0
        }),
        &f32t(&[3, 4])
    );
    assert_eq!(out_ty(&m, "y"), f32t(&[3, 4]));
}

#[test]
fn unbound_symbolic_dim_is_an_error_telling_how_to_bind_it() {
    let e = import(&symbolic()).unwrap_err();
    assert!(
        matches!(e, ImportError::UnboundDim { ref dim, ref input, .. } if dim == "N" && input == "x")
    );
    assert_eq!(
        e.to_string(),
        "<memory>: unbound symbolic dimension \"N\" of input \"x\"; pass --dim N=VALUE"
    );
}

#[test]
fn dims_with_neither_size_nor_name_bind_by_input_and_axis() {
    let mut b = ModelBuilder::new("g");
    b.input_sym("x", elem::FLOAT, &[DimSpec::Unknown, DimSpec::Value(2)])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y", elem::FLOAT, &[-1, 2]);
    let e = import(&b).unwrap_err();
    assert!(matches!(e, ImportError::UnknownDim { axis: 0, .. }), "{e}");
    assert!(e.to_string().contains("--dim x:0=VALUE"), "{e}");
    let m = import_with(&b, &dims(&[("x:0", 5)])).unwrap();
    assert_eq!(out_ty(&m, "y"), f32t(&[5, 2]));
}

#[test]
fn declared_output_dims_bound_by_options_are_checked() {
    // y is declared [M, 4] with M bound to 2 but computed [3, 4].
    let mut b = ModelBuilder::new("g");
    b.input_sym("x", elem::FLOAT, &[DimSpec::Param("N"), DimSpec::Value(4)])
        .node("Relu", &["x"], &["y"], vec![])
        .output_sym("y", elem::FLOAT, &[DimSpec::Param("M"), DimSpec::Value(4)]);
    assert!(import_with(&b, &dims(&[("N", 3)])).is_ok());
    let e = import_with(&b, &dims(&[("N", 3), ("M", 2)])).unwrap_err();
    assert!(matches!(e, ImportError::Output { .. }), "{e}");
}

#[test]
fn model_metadata_is_recorded() {
    let mut b = ModelBuilder::new("meta")
        .opset("", 13)
        .opset("com.example", 2)
        .ir_version(8);
    b.input("x", elem::FLOAT, &[1])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y", elem::FLOAT, &[1]);
    let m = ok(&b);
    assert_eq!(m.ir_version, 8);
    assert_eq!(
        m.opsets,
        [("".to_string(), 13), ("com.example".to_string(), 2)]
    );
    assert_eq!(m.producer, "kiln-frontend builder");
    assert_eq!(m.graph.name, "meta");
    assert!(m.unsupported.is_empty());
    assert_eq!(m.graph.outputs, [("y".to_string(), output(&m, "y"))]);
}

#[test]
fn ai_onnx_is_the_default_domain() {
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[1])
        .node_named("r", "ai.onnx", "Relu", &["x"], &["y"], vec![])
        .output("y", elem::FLOAT, &[1]);
    assert_eq!(out_op(&ok(&b), "y"), Op::Unary(kiln_ir::ops::UnaryOp::Relu));
}

/// A model with a symbolic batch, an unsupported node, weights in an initializer and a Constant.
fn inspect_model() -> ModelBuilder {
    let mut b = ModelBuilder::new("net").opset("com.microsoft", 1);
    b.input_sym(
        "x",
        elem::FLOAT,
        &[DimSpec::Param("batch"), DimSpec::Value(4)],
    )
    .input("w", elem::FLOAT, &[4, 3])
    .initializer_f32("w", &[4, 3], &[0.0; 12])
    .node("MatMul", &["x", "w"], &["h"], vec![])
    .node(
        "Constant",
        &[],
        &["c"],
        vec![attr::floats("value_floats", &[1.0, 2.0, 3.0])],
    )
    .node("Add", &["h", "c"], &["h2"], vec![])
    .node_named("gelu", "com.microsoft", "Gelu", &["h2"], &["g"], vec![])
    .node("Relu", &["g"], &["y"], vec![])
    .node("Relu", &["h2"], &["z"], vec![])
    .output_sym(
        "y",
        elem::FLOAT,
        &[DimSpec::Param("batch"), DimSpec::Value(3)],
    )
    .output_sym(
        "z",
        elem::FLOAT,
        &[DimSpec::Param("batch"), DimSpec::Unknown],
    );
    b
}

#[test]
fn inspect_works_when_import_does_not() {
    let b = inspect_model();
    assert!(matches!(import(&b), Err(ImportError::UnboundDim { .. })));
    let ins = inspect_bytes(&b.to_bytes(), None, &ImportOptions::default()).unwrap();
    assert_eq!(ins.ir_version, 9);
    assert_eq!(ins.producer, "kiln-frontend builder");
    assert_eq!(
        ins.opsets,
        [("".to_string(), 17), ("com.microsoft".to_string(), 1)]
    );
    assert_eq!(ins.graph_name, "net");
    assert_eq!(
        ins.inputs,
        [TensorInfo {
            name: "x".into(),
            dtype: "f32".into(),
            dims: Some(vec!["batch".into(), "4".into()])
        }]
    );
    assert_eq!(
        ins.outputs[1].dims,
        Some(vec!["batch".to_string(), "?".to_string()])
    );
    let hist: Vec<(&str, usize)> = ins
        .op_histogram
        .iter()
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    assert_eq!(
        hist,
        [
            ("Add", 1),
            ("Constant", 1),
            ("MatMul", 1),
            ("Relu", 2),
            ("com.microsoft::Gelu", 1)
        ]
    );
    // 12 weights + 3 constant floats, 4 bytes each.
    assert_eq!((ins.param_count, ins.param_bytes), (15, 60));
    assert_eq!(ins.unsupported.len(), 1);
    assert_eq!(
        (
            ins.unsupported[0].node.as_str(),
            ins.unsupported[0].op_type.as_str(),
            ins.unsupported[0].opset
        ),
        ("gelu", "Gelu", 1)
    );
    assert_eq!(ins.problem, None);

    let text = ins.to_string();
    for needle in [
        "x: f32[batch,4]",
        "com.microsoft::Gelu",
        "unsupported: 1",
        "\"gelu\" (Gelu",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}

#[test]
fn inspect_finds_unsupported_parameters_too() {
    // Only a trial import can tell that the shape is computed at run time.
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[2, 3])
        .input("s", elem::INT64, &[2])
        .node("Reshape", &["x", "s"], &["y"], vec![])
        .output("y", elem::FLOAT, &[3, 2]);
    let ins = inspect_bytes(&b.to_bytes(), None, &ImportOptions::default()).unwrap();
    assert_eq!(ins.unsupported.len(), 1);
    assert!(ins.unsupported[0].reason.contains("computed at run time"));
}

#[test]
fn inspect_reports_other_problems_and_falls_back_to_the_static_check() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[2])
        .node_named("bad", "", "Add", &["x", "nope"], &["y"], vec![])
        .node_named("odd", "", "Frobnicate", &["x"], &["z"], vec![])
        .output("y", elem::FLOAT, &[2]);
    let ins = inspect_bytes(&b.to_bytes(), None, &ImportOptions::default()).unwrap();
    assert!(
        ins.problem.as_deref().unwrap_or_default().contains("nope"),
        "{:?}",
        ins.problem
    );
    assert_eq!(ins.unsupported.len(), 1);
    assert_eq!(ins.unsupported[0].node, "odd");
}

#[test]
fn inspect_file_and_decode_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, with_default_input().to_bytes()).unwrap();
    let ins = inspect_file(&path, &ImportOptions::default()).unwrap();
    assert_eq!(
        ins.inputs.len(),
        1,
        "the initializer-backed input is a constant"
    );
    assert!(ins.unsupported.is_empty());
    assert_eq!(ins.file, path.display().to_string());

    std::fs::write(&path, b"not a model").unwrap();
    assert!(matches!(
        inspect_file(&path, &ImportOptions::default()),
        Err(ImportError::Decode { .. })
    ));
    assert!(import_bytes(b"", None, &ImportOptions::default()).is_err());
}
