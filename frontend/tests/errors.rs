//! Bad models: every one is a typed error naming the file, node and op, never a panic.

mod common;

use common::*;
use kiln_frontend::builder::{attr, elem, ModelBuilder};
use kiln_frontend::{import_bytes, import_file, ImportError, ImportOptions};

fn small_model() -> ModelBuilder {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[2, 3])
        .initializer_f32("w", &[3, 2], &[0.5; 6])
        .node("MatMul", &["x", "w"], &["y"], vec![])
        .output("y", elem::FLOAT, &[2, 2]);
    b
}

#[test]
fn truncated_file_is_a_decode_error_naming_the_file() {
    let bytes = small_model().to_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.onnx");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = import_file(&path, &ImportOptions::default()).unwrap_err();
    assert!(matches!(e, ImportError::Decode { .. }), "{e}");
    assert!(e.to_string().contains("cut.onnx"), "{e}");

    // Every prefix fails cleanly (some prefixes decode as protobuf but are not a model).
    for n in 0..bytes.len() {
        let r = import_bytes(&bytes[..n], None, &ImportOptions::default());
        assert!(r.is_err(), "prefix of {n} bytes imported");
    }
}

#[test]
fn random_bytes_are_a_decode_error() {
    // A fixed xorshift stream: deterministic "random" bytes.
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect();
    let e = import_bytes(&bytes, None, &ImportOptions::default()).unwrap_err();
    assert!(matches!(e, ImportError::Decode { .. }), "{e}");
    assert!(e.to_string().contains("<memory>"), "{e}");
    // Text and empty files are not models either.
    for junk in [&b""[..], b"hello, world\n", b"\x08\x07"] {
        let e = import_bytes(junk, None, &ImportOptions::default()).unwrap_err();
        assert!(matches!(e, ImportError::Decode { .. }), "{e}");
    }
}

#[test]
fn missing_file_is_an_io_error() {
    let e = import_file(
        std::path::Path::new("/nonexistent/m.onnx"),
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, ImportError::Io { .. }) && e.to_string().contains("/nonexistent/m.onnx"),
        "{e}"
    );
}

#[test]
fn cycle_names_a_node_on_it() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node_named("entry", "", "Relu", &["x"], &["e"], vec![])
        .node_named("a", "", "Add", &["e", "bb"], &["aa"], vec![])
        .node_named("b", "", "Neg", &["aa"], &["bb"], vec![])
        .node_named("after", "", "Neg", &["bb"], &["y"], vec![])
        .output("y", elem::FLOAT, &[3]);
    let e = err(&b);
    let ImportError::Cycle { node, op_type, .. } = &e else {
        panic!("expected a cycle, got: {e}")
    };
    assert!(
        (node == "a" && op_type == "Add") || (node == "b" && op_type == "Neg"),
        "{node} ({op_type}) is not on the cycle"
    );
    assert!(e.to_string().contains("cycle"), "{e}");
}

#[test]
fn self_loop_is_a_cycle() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node_named("loop", "", "Add", &["x", "y"], &["y"], vec![])
        .output("y", elem::FLOAT, &[3]);
    assert!(matches!(err(&b), ImportError::Cycle { ref node, .. } if node == "loop"));
}

#[test]
fn dangling_input_names_node_op_and_value() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node_named("adder", "", "Add", &["x", "nowhere"], &["y"], vec![])
        .output("y", elem::FLOAT, &[3]);
    let e = err(&b);
    assert!(matches!(e, ImportError::Dangling { .. }), "{e}");
    let m = e.to_string();
    assert!(
        m.contains("adder") && m.contains("Add") && m.contains("nowhere"),
        "{m}"
    );
}

#[test]
fn duplicate_value_names() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node_named("one", "", "Relu", &["x"], &["h"], vec![])
        .node_named("two", "", "Neg", &["x"], &["h"], vec![])
        .output("h", elem::FLOAT, &[3]);
    let e = err(&b);
    assert!(
        matches!(e, ImportError::DuplicateValue { ref value, .. } if value == "h"),
        "{e}"
    );
    let m = e.to_string();
    assert!(m.contains("one") && m.contains("two"), "{m}");

    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node_named("n", "", "Relu", &["x"], &["x"], vec![])
        .output("x", elem::FLOAT, &[3]);
    assert!(matches!(err(&b), ImportError::DuplicateValue { .. }));

    let mut b = ModelBuilder::new("g");
    b.initializer_f32("w", &[1], &[1.0])
        .initializer_f32("w", &[1], &[2.0])
        .output("w", elem::FLOAT, &[1]);
    assert!(matches!(err(&b), ImportError::DuplicateValue { .. }));
}

#[test]
fn every_unsupported_node_is_listed_at_once() {
    let mut b = ModelBuilder::new("g").opset("com.microsoft", 1);
    b.input("x", elem::FLOAT, &[2, 3])
        .node_named("weird", "", "FooBar", &["x"], &["a"], vec![])
        .node_named(
            "fused",
            "com.microsoft",
            "FusedGemm",
            &["x"],
            &["b"],
            vec![],
        )
        .node_named("mystery", "org.example", "Thing", &["x"], &["c"], vec![])
        // Downstream of unsupported nodes: skipped, not reported again.
        .node_named("join", "", "Add", &["a", "b"], &["d"], vec![])
        .node_named("fine", "", "Relu", &["x"], &["e"], vec![])
        // Downstream too, but unsupported in itself: reported.
        .node_named("lrn", "", "StringNormalizer", &["d"], &["f"], vec![])
        .output("f", elem::FLOAT, &[2, 3])
        .output("d", elem::FLOAT, &[2, 3])
        .output("c", elem::FLOAT, &[2, 3])
        .output("e", elem::FLOAT, &[2, 3]);
    let e = err(&b);
    let msg = e.to_string();
    let ImportError::Unsupported(list) = e else {
        panic!("expected Unsupported, got: {msg}")
    };
    let got: Vec<(&str, &str, &str, i64)> = list
        .iter()
        .map(|u| {
            (
                u.node.as_str(),
                u.op_type.as_str(),
                u.domain.as_str(),
                u.opset,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("weird", "FooBar", "", 17),
            ("fused", "FusedGemm", "com.microsoft", 1),
            ("mystery", "Thing", "org.example", 0),
            ("lrn", "StringNormalizer", "", 17),
        ]
    );
    assert!(list[0].reason.contains("no mapping"), "{}", list[0].reason);
    for needle in [
        "4 unsupported nodes",
        "\"weird\" (FooBar",
        "\"fused\" (FusedGemm, domain \"com.microsoft\"",
        "\"mystery\"",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in:\n{msg}");
    }
    assert!(!msg.contains("\"join\""), "{msg}");
}

#[test]
fn unknown_attribute_is_unsupported() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node("Relu", &["x"], &["y"], vec![attr::int("fancy", 1)])
        .output("y", elem::FLOAT, &[3]);
    let list = unsupported(&b);
    assert!(list[0].reason.contains("fancy"), "{}", list[0].reason);
}

fn node_error(e: ImportError) -> (String, String, i64, String) {
    let msg = e.to_string();
    match e {
        ImportError::Node {
            node,
            op_type,
            opset,
            ..
        } => (node, op_type, opset, msg),
        _ => panic!("expected a Node error, got: {msg}"),
    }
}

#[test]
fn shape_mismatch_names_node_op_and_opset() {
    let mut b = ModelBuilder::new("g");
    b.input("a", elem::FLOAT, &[2, 3])
        .input("b", elem::FLOAT, &[4])
        .node("Add", &["a", "b"], &["y"], vec![])
        .output("y", elem::FLOAT, &[2, 3]);
    let (node, op, opset, msg) = node_error(err(&b));
    assert_eq!((node.as_str(), op.as_str(), opset), ("Add_0", "Add", 17));
    assert!(
        msg.contains("\"Add_0\" (Add, opset 17)") && msg.contains("broadcast"),
        "{msg}"
    );
}

#[test]
fn wrong_attribute_type_and_missing_input() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[2, 3])
        .node("Softmax", &["x"], &["y"], vec![attr::float("axis", 1.0)])
        .output("y", elem::FLOAT, &[2, 3]);
    let (node, op, _, msg) = node_error(err(&b));
    assert_eq!((node.as_str(), op.as_str()), ("Softmax_0", "Softmax"));
    assert!(msg.contains("`axis` must be INT, got FLOAT"), "{msg}");

    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[1, 1, 3, 3])
        .node("Conv", &["x"], &["y"], vec![])
        .output("y", elem::FLOAT, &[1, 1, 3, 3]);
    let (node, op, _, msg) = node_error(err(&b));
    assert_eq!((node.as_str(), op.as_str()), ("Conv_0", "Conv"));
    assert!(msg.contains("input 1 (`W`)"), "{msg}");

    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[2, 3])
        .node("Concat", &["x", ""], &["y"], vec![attr::int("axis", 0)])
        .output("y", elem::FLOAT, &[2, 3]);
    assert!(node_error(err(&b)).3.contains("missing"));
}

#[test]
fn bad_attribute_values() {
    // A zero stride, an out-of-range axis, a non-permutation, a huge group: errors, not panics.
    let conv = |attrs| {
        let mut b = ModelBuilder::new("g");
        b.input("x", elem::FLOAT, &[1, 2, 4, 4])
            .initializer_f32("w", &[2, 1, 3, 3], &[0.0; 18])
            .node("Conv", &["x", "w"], &["y"], attrs)
            .output("y", elem::FLOAT, &[1, 2, 2, 2]);
        b
    };
    assert!(node_error(err(&conv(vec![attr::ints("strides", &[0, 1])])))
        .3
        .contains("strides"));
    assert!(node_error(err(&conv(vec![attr::int("group", i64::MAX)])))
        .3
        .contains("group"));
    assert!(
        node_error(err(&conv(vec![attr::ints("kernel_shape", &[3])])))
            .3
            .contains("kernel_shape")
    );
    assert!(
        node_error(err(&conv(vec![attr::string("auto_pad", "SAME_SIDEWAYS")])))
            .3
            .contains("auto_pad")
    );
    assert!(
        node_error(err(&conv(vec![attr::ints("pads", &[-1, 0, 0, 0])])))
            .3
            .contains("pads")
    );

    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[2, 3])
        .node(
            "Transpose",
            &["x"],
            &["t"],
            vec![attr::ints("perm", &[0, 0])],
        )
        .output("t", elem::FLOAT, &[2, 3]);
    assert!(node_error(err(&b)).3.contains("perm"));

    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[2, 3])
        .node("Gather", &["x", "x"], &["t"], vec![attr::int("axis", 5)])
        .output("t", elem::FLOAT, &[2, 3]);
    assert!(node_error(err(&b)).3.contains("axis 5"));

    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[2, 3])
        .initializer_i64("s", &[2], &[5, 5])
        .node("Reshape", &["x", "s"], &["t"], vec![])
        .output("t", elem::FLOAT, &[5, 5]);
    assert!(node_error(err(&b)).3.contains("reshape"));
}

#[test]
fn negative_and_absurd_input_dims() {
    let mut b = ModelBuilder::new("g");
    b.input_sym(
        "x",
        elem::FLOAT,
        &[kiln_frontend::builder::DimSpec::Value(-2)],
    )
    .node("Relu", &["x"], &["y"], vec![])
    .output("y", elem::FLOAT, &[2]);
    let e = err(&b);
    assert!(
        matches!(e, ImportError::Model { .. })
            && e.to_string().contains("negative")
            && e.to_string().contains("\"x\""),
        "{e}"
    );

    // 10^12 elements: refused by size before anything is allocated.
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[1_000_000_000_000])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y", elem::FLOAT, &[1_000_000_000_000]);
    let e = err(&b);
    assert!(
        e.to_string().contains("limit") && e.to_string().contains("\"x\""),
        "{e}"
    );

    // Dims that overflow 64 bits.
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[1 << 40, 1 << 40, 1 << 40])
        .output("x", elem::FLOAT, &[1 << 40, 1 << 40, 1 << 40]);
    assert!(err(&b).to_string().contains("overflow"));
}

#[test]
fn intermediate_values_above_the_limit_are_refused() {
    // Two 1-MiB inputs whose outer sum would be 2^36 floats.
    let mut b = ModelBuilder::new("g");
    b.input("a", elem::FLOAT, &[1 << 18, 1])
        .input("b", elem::FLOAT, &[1 << 18])
        .node("Add", &["a", "b"], &["y"], vec![])
        .output("y", elem::FLOAT, &[1 << 18, 1 << 18]);
    let (node, _, _, msg) = node_error(err(&b));
    assert_eq!(node, "Add_0");
    assert!(msg.contains("too large"), "{msg}");
}

#[test]
fn missing_default_opset_import() {
    let mut b = ModelBuilder::new("g").opset("com.example", 1);
    b.input("x", elem::FLOAT, &[3])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y", elem::FLOAT, &[3]);
    let mut m = b.build();
    m.opset_import.retain(|o| o.domain() != "");
    let bytes = prost::Message::encode_to_vec(&m);
    let e = import_bytes(&bytes, None, &ImportOptions::default()).unwrap_err();
    assert!(
        matches!(e, ImportError::Model { .. }) && e.to_string().contains("Relu_0"),
        "{e}"
    );
}

#[test]
fn graph_outputs_must_exist_and_match_their_declared_types() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .output("ghost", elem::FLOAT, &[3]);
    let e = err(&b);
    assert!(
        matches!(e, ImportError::Output { ref output, .. } if output == "ghost"),
        "{e}"
    );

    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y", elem::INT64, &[3]);
    let e = err(&b);
    assert!(
        matches!(e, ImportError::Output { .. }) && e.to_string().contains("INT64"),
        "{e}"
    );

    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y", elem::FLOAT, &[4]);
    let e = err(&b);
    assert!(
        matches!(e, ImportError::Output { .. }) && e.to_string().contains("size 4"),
        "{e}"
    );

    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y", elem::FLOAT, &[3, 1]);
    assert!(err(&b).to_string().contains("rank 2"));

    // Unknown declared dims are not checked.
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y", elem::FLOAT, &[-1]);
    ok(&b);
}

#[test]
fn unsupported_graph_input_types_are_listed() {
    let mut b = ModelBuilder::new("g");
    b.input("s", elem::STRING, &[2])
        .input("x", elem::FLOAT, &[2])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y", elem::FLOAT, &[2]);
    let list = unsupported(&b);
    assert_eq!(
        (list[0].node.as_str(), list[0].op_type.as_str()),
        ("s", "graph input")
    );
}

#[test]
fn sparse_initializers_and_local_functions_are_unsupported() {
    use kiln_frontend::onnx::{FunctionProto, SparseTensorProto};
    let mut b = ModelBuilder::new("g").opset("local", 1);
    b.input("x", elem::FLOAT, &[2])
        .node("Add", &["x", "sp"], &["a"], vec![])
        .node_named("call", "local", "MyFn", &["x"], &["b"], vec![])
        .output("a", elem::FLOAT, &[2])
        .output("b", elem::FLOAT, &[2]);
    let mut m = b.build();
    let g = m.graph.as_mut().unwrap();
    g.sparse_initializer.push(SparseTensorProto {
        values: Some(kiln_frontend::builder::tensor_f32("sp", &[1], &[1.0])),
        indices: Some(kiln_frontend::builder::tensor_i64("", &[1], &[0])),
        dims: vec![2],
    });
    m.functions.push(FunctionProto {
        name: Some("MyFn".into()),
        domain: Some("local".into()),
        ..Default::default()
    });
    let bytes = prost::Message::encode_to_vec(&m);
    let Err(ImportError::Unsupported(list)) = import_bytes(&bytes, None, &ImportOptions::default())
    else {
        panic!("expected Unsupported")
    };
    let got: Vec<(&str, &str)> = list
        .iter()
        .map(|u| (u.node.as_str(), u.op_type.as_str()))
        .collect();
    assert_eq!(got, [("sp", "initializer"), ("call", "MyFn")]);
    assert!(list[0].reason.contains("sparse"));
    assert!(list[1].reason.contains("model-local function"));
}
