//! Inference errors, verifier failures and parser errors: typed errors with useful messages, never a
//! panic.

mod common;

use common::f32t;
use kiln_ir::ops::{BinaryOp, Gather, Pool, PoolKind, Reshape, Slice, Softmax, UnaryOp};
use kiln_ir::{
    parse, print, verify, DType, Graph, GraphError, Op, OpError, PrintOptions, TensorType,
    ValueInfo,
};

const FULL: PrintOptions = PrintOptions {
    max_const_elems: usize::MAX,
};

/// Adds a node expected to fail inference; returns the op's message after checking the error names
/// the node and the op.
fn infer_fails(g: &mut Graph, name: &str, op: Op, ins: &[Option<kiln_ir::Value>]) -> String {
    let op_name = op.name();
    match g.add_node(name, op, ins, &[]) {
        Err(GraphError::Op {
            node,
            op,
            source: OpError::Invalid(msg),
        }) => {
            assert_eq!(node, name);
            assert_eq!(op, op_name);
            msg
        }
        other => panic!("expected an Invalid op error, got {other:?}"),
    }
}

#[test]
fn conv_channel_mismatch() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::new(DType::F32, &[1, 3, 8, 8]));
    let w = g.add_const("w", f32t(&[4, 2, 3, 3], &[0.0; 72]));
    let msg = infer_fails(
        &mut g,
        "/conv",
        common::conv(3, 1, 1, 1),
        &[Some(x), Some(w)],
    );
    assert!(
        msg.contains("3 channels") && msg.contains("group 1"),
        "{msg}"
    );
    // The full error names the node and op too.
    let full = g
        .add_node("/conv", common::conv(3, 1, 1, 1), &[Some(x), Some(w)], &[])
        .unwrap_err()
        .to_string();
    assert!(
        full.starts_with("node \"/conv\" (conv): channels do not match groups"),
        "{full}"
    );
}

#[test]
fn reshape_wrong_element_count() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::new(DType::F32, &[2, 3]));
    let msg = infer_fails(
        &mut g,
        "r",
        Op::Reshape(Reshape {
            shape: vec![4, 2],
            allowzero: false,
        }),
        &[Some(x)],
    );
    assert!(
        msg.contains("cannot reshape [2, 3] (6 elements) to [4, 2]"),
        "{msg}"
    );
    let msg = infer_fails(
        &mut g,
        "r",
        Op::Reshape(Reshape {
            shape: vec![4, -1],
            allowzero: false,
        }),
        &[Some(x)],
    );
    assert!(msg.contains("cannot reshape"), "{msg}");
}

#[test]
fn broadcast_failure() {
    let mut g = Graph::new("t");
    let a = g.add_input("a", TensorType::new(DType::F32, &[2, 3]));
    let b = g.add_input("b", TensorType::new(DType::F32, &[4]));
    let msg = infer_fails(
        &mut g,
        "add",
        Op::Binary(BinaryOp::Add),
        &[Some(a), Some(b)],
    );
    assert!(
        msg.contains("do not broadcast") && msg.contains("3 vs 4"),
        "{msg}"
    );
    let msg = infer_fails(&mut g, "mm", Op::MatMul, &[Some(a), Some(a)]);
    assert!(msg.contains("inner dimensions differ"), "{msg}");
}

#[test]
fn more_inference_errors() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::new(DType::F32, &[1, 1, 3]));
    let s = g.add_input("s", TensorType::new(DType::F32, &[]));
    // Too many inputs: relu(x, x) would silently drop the second.
    let msg = infer_fails(
        &mut g,
        "relu",
        Op::Unary(UnaryOp::Relu),
        &[Some(x), Some(x)],
    );
    assert!(msg.contains("at most 1 inputs, got 2"), "{msg}");
    // Softmax has no axis on a scalar (norm_axis used to accept axis 0 at rank 0).
    let msg = infer_fails(
        &mut g,
        "sm",
        Op::Softmax(Softmax {
            axis: 0,
            flatten: false,
        }),
        &[Some(s)],
    );
    assert!(msg.contains("out of range for rank 0"), "{msg}");
    let msg = infer_fails(
        &mut g,
        "sm",
        Op::Softmax(Softmax {
            axis: usize::MAX,
            flatten: false,
        }),
        &[Some(x)],
    );
    assert!(msg.contains("out of range"), "{msg}");
    // A dilated pooling window made only of padding has no maximum: taps at -1 and 2 on an input of 1.
    let y = g.add_input("y", TensorType::new(DType::F32, &[1, 1, 1]));
    let pool = Pool {
        layout: kiln_ir::ops::Layout::Nchw,
        kind: PoolKind::Max,
        kernel_shape: vec![2],
        strides: vec![1],
        pads: vec![1, 2],
        dilations: vec![3],
        ceil_mode: false,
        count_include_pad: false,
    };
    let msg = infer_fails(&mut g, "pool", Op::Pool(pool), &[Some(y)]);
    assert!(msg.contains("covers only padding"), "{msg}");
    // Slicing the same axis twice.
    let sl = Slice {
        starts: vec![0, 0],
        ends: vec![1, 1],
        axes: vec![2, 2],
        steps: vec![1, 1],
    };
    let msg = infer_fails(&mut g, "slice", Op::Slice(sl), &[Some(x)]);
    assert!(msg.contains("sliced twice"), "{msg}");
    // Huge steps do not overflow.
    let sl = Slice {
        starts: vec![i64::MAX],
        ends: vec![i64::MIN],
        axes: vec![2],
        steps: vec![i64::MIN],
    };
    let out = g.add_node("slice", Op::Slice(sl), &[Some(x)], &[]).unwrap();
    assert_eq!(g.ty(out[0]), &TensorType::new(DType::F32, &[1, 1, 1]));
    // Constant indices are range-checked at inference.
    let idx = g.add_const("idx", kiln_ir::Tensor::from_i64(DType::I64, vec![1], &[3]));
    let msg = infer_fails(
        &mut g,
        "gather",
        Op::Gather(Gather { axis: 2 }),
        &[Some(x), Some(idx)],
    );
    assert!(
        msg.contains("index 3 is out of range for axis 2 of size 3"),
        "{msg}"
    );
}

#[test]
fn eval_rejects_bad_inputs_without_panicking() {
    // The evaluator runs inference first, so mismatched tensors are an error, not an index panic.
    let x = f32t(&[1, 3, 4, 4], &[0.0; 48]);
    let w = f32t(&[2, 2, 3, 3], &[0.0; 36]);
    assert!(matches!(
        common::conv(3, 1, 1, 1).eval(&[Some(&x), Some(&w)]),
        Err(OpError::Invalid(_))
    ));
    assert!(matches!(
        Op::MatMul.eval(&[Some(&x)]),
        Err(OpError::Invalid(_))
    ));
    assert!(matches!(Op::Input(0).eval(&[]), Err(OpError::Invalid(_))));
}

#[test]
fn verifier_catches_wrong_declared_type() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::new(DType::F32, &[2, 3]));
    let wrong = ValueInfo {
        name: "y".into(),
        ty: TensorType::new(DType::F32, &[3, 2]),
    };
    let y = g.add_node_typed(
        "/bad/Relu".into(),
        Op::Unary(UnaryOp::Relu),
        &[Some(x)],
        vec![wrong],
    );
    g.outputs.push(("y".into(), y[0]));
    let err = verify(&g).unwrap_err();
    assert_eq!(err.node, Some(y[0].node));
    assert!(
        err.msg
            .contains("output types are [f32[3,2]] but inference says [f32[2,3]]"),
        "{}",
        err.msg
    );
    assert!(
        err.line.contains("relu(%0)") && err.line.contains("/bad/Relu"),
        "{}",
        err.line
    );
}

#[test]
fn verifier_catches_wrong_dtype_and_output_count() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::new(DType::F32, &[2]));
    let i = ValueInfo {
        name: "y".into(),
        ty: TensorType::new(DType::I64, &[2]),
    };
    g.add_node_typed(
        "neg".into(),
        Op::Unary(UnaryOp::Neg),
        &[Some(x)],
        vec![i.clone()],
    );
    assert!(verify(&g)
        .unwrap_err()
        .msg
        .contains("inference says [f32[2]]"));
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::new(DType::F32, &[2]));
    let f = ValueInfo {
        name: "y".into(),
        ty: TensorType::new(DType::F32, &[2]),
    };
    g.add_node_typed(
        "two".into(),
        Op::Unary(UnaryOp::Neg),
        &[Some(x)],
        vec![f.clone(), f],
    );
    assert!(verify(&g).is_err());
}

// ---- Parser errors ----

fn parse_err(text: &str) -> (usize, String) {
    match parse(text) {
        Ok(_) => panic!("parsed:\n{text}"),
        Err(e) => (e.line, e.msg),
    }
}

fn wrap(body: &str) -> String {
    format!("graph \"g\" {{\n  %0: f32[2,3] = input {{index=0}}  # \"x\"\n{body}\n}}\n")
}

#[test]
fn parse_errors_have_lines_and_messages() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 1, "empty input"),
        ("graf \"g\" {\n}", 1, "expected `graph"),
        ("graph \"g {\n}", 1, "unterminated string"),
        ("graph \"g\" {\n", 1, "missing closing `}`"),
        (
            "graph \"g\" {\n}\n  %0: f32[1] = input {index=0}",
            3,
            "text after the closing",
        ),
        (
            &wrap("  %1: f32[2,3] = relu(%7)  # \"r\""),
            3,
            "%7 is not defined on an earlier line",
        ),
        (
            &wrap("  %1: f32[2,3] = relu(%0.1)  # \"r\""),
            3,
            "%0.1 names output 1, but %0 has 1 output(s)",
        ),
        (
            &wrap("  %0: f32[2,3] = relu(%0)  # \"r\""),
            3,
            "%0 is defined twice",
        ),
        (
            &wrap("  %1: f32[2,3] = frobnicate(%0)  # \"r\""),
            3,
            "unknown op `frobnicate`",
        ),
        (
            &wrap("  %1: f32[2,3] = relu(%0) {alpha=1.0}  # \"r\""),
            3,
            "`relu` has no attribute `alpha`",
        ),
        (
            &wrap("  %1: f32[2,3] = leaky_relu(%0)  # \"r\""),
            3,
            "attribute `alpha`: missing",
        ),
        (
            &wrap("  %1: f32[2,3] = leaky_relu(%0) {alpha=1.0, alpha=2.0}"),
            3,
            "given twice",
        ),
        (
            &wrap("  %1: f32[2,3] = softmax(%0) {axis=-1}"),
            3,
            "expected a non-negative integer",
        ),
        (
            &wrap("  %1: f32[2,3] = cast(%0) {to=f33}"),
            3,
            "`f33` is not a number or dtype",
        ),
        (
            &wrap("  %1: f32[2,3] = relu(%0)  # \"r\" trailing"),
            3,
            "unexpected `trailing`",
        ),
        (&wrap("  %1: q32[2,3] = relu(%0)"), 3, "unknown dtype `q32`"),
        (&wrap("  %1: f32[2,3 = relu(%0)"), 3, "expected `,`"),
        (
            &wrap("  %1: f32[99999999999999999999999] = relu(%0)"),
            3,
            "too large",
        ),
        (
            &wrap("  %1: f32[4294967296,4294967296] = relu(%0)"),
            3,
            "too many elements",
        ),
        (
            &wrap("  %1: f32[2,3], %2: f32[2,3] = relu(%0)"),
            3,
            "must be written `%1.1`",
        ),
        (
            &wrap("  %1: f32[2] = const <2 values, hash=0123456789abcdef>  # \"c\""),
            3,
            "elided by the printer",
        ),
        (
            &wrap("  %1: f32[2] = const [1.0]  # \"c\""),
            3,
            "holds 2 values, but 1 are given",
        ),
        (
            &wrap("  %1: f32[1] = const [1.0, 2.0]  # \"c\""),
            3,
            "but more are given",
        ),
        (
            &wrap("  %1: u8[1] = const [256]  # \"c\""),
            3,
            "256 is out of range for u8",
        ),
        (
            &wrap("  %1: i4[1] = const [-9]  # \"c\""),
            3,
            "out of range for i4",
        ),
        (
            &wrap("  %1: f32[1] = const [one]  # \"c\""),
            3,
            "`one` is not a valid f32 value",
        ),
        (
            &wrap("  %1: f32[n] = const [1.0]  # \"c\""),
            3,
            "constant dims",
        ),
        (
            &wrap("  %1: f32[1] = const [1.0] {x=1}  # \"c\""),
            3,
            "const has no attributes",
        ),
        (
            &wrap("  %1: f32[2,3] = input {index=0}  # \"y\""),
            3,
            "input index 0 is used twice",
        ),
        (
            &wrap("  %1: f32[2,3] = input {index=5}  # \"y\""),
            3,
            "out of range: the graph has 2 inputs",
        ),
        (
            &wrap("  %1: f32[2,3] = input {index=1, x=2}"),
            3,
            "expected exactly the attribute `index`",
        ),
        (
            &wrap("  %1: f32[2,3] = relu(%0)  # \"bad \\q escape\""),
            3,
            "unknown escape `\\q`",
        ),
        (
            &wrap("  %1: f32[2,3] = relu(%0)  # \"\\u{d800}\""),
            3,
            "bad unicode escape",
        ),
        (&wrap("  output %9 \"y\""), 3, "%9 is not defined"),
        (&wrap("  output %0"), 3, "expected `\"`"),
        (&wrap("  bogus"), 3, "found `bogus`"),
        (&wrap("  ???"), 3, "found `???`"),
        (
            &wrap("  %1: f32[2,3] = conv(%0) {kernel_shape=[3,3], strides=[1,f32]}"),
            3,
            "lists hold numbers only",
        ),
        (
            &wrap("  %1: f32[2,3] = conv(%0) {kernel_shape=[3,3], strides=[1,\"a\"]}"),
            3,
            "expected a value, found `\"a\"]}`",
        ),
        (
            &wrap("  %1: f32[2,3] = relu(%0) {group=99999999999999999999}"),
            3,
            "integer `99999999999999999999` is out of range",
        ),
    ];
    for (text, line, want) in cases {
        let (l, msg) = parse_err(text);
        assert!(
            msg.contains(want),
            "for\n{text}\nwanted `{want}`, got: {msg}"
        );
        assert_eq!(l, *line, "line for `{want}` ({msg})");
    }
}

#[test]
fn parse_elided_print_gives_clear_error() {
    let text = print(&common::cnn(), PrintOptions::default());
    let (line, msg) = parse_err(&text);
    assert_eq!(line, 3);
    assert!(msg.contains("max_const_elems: usize::MAX"), "{msg}");
}

/// Parses arbitrary text; when that succeeds, verifying (and printing a verified graph) must not panic
/// either.
fn parse_verify_print(text: &str) {
    if let Ok(g) = parse(text) {
        if verify(&g).is_ok() {
            let _ = print(&g, FULL);
        }
    }
}

#[test]
fn truncated_text_never_panics() {
    let text = print(&common::every_op(), FULL);
    let mut ends: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    ends.push(text.len());
    for &end in &ends {
        let t = &text[..end];
        parse_verify_print(t);
        // Anything shorter than the whole text lacks the closing brace.
        if end + 2 < text.len() {
            assert!(parse(t).is_err(), "truncated at {end} parsed");
        }
    }
    // Whole lines dropped one at a time.
    let lines: Vec<&str> = text.lines().collect();
    for skip in 0..lines.len() {
        let t: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != skip)
            .map(|(_, l)| *l)
            .collect();
        parse_verify_print(&t.join("\n"));
    }
}

#[test]
fn mutated_text_never_panics() {
    // Every single-character deletion, and at every position one replacement drawn (by a fixed LCG, so
    // the test is deterministic) from characters that matter to the grammar, in a graph with every op.
    const REPL: [char; 16] = [
        '%', '[', ']', '"', '\\', '9', '0', '-', ',', '{', '}', ' ', '.', 'x', '\n', '_',
    ];
    let text = print(&common::every_op(), FULL);
    let chars: Vec<char> = text.chars().collect();
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..chars.len() {
        let mut del = chars.clone();
        del.remove(i);
        parse_verify_print(&del.iter().collect::<String>());
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let mut m = chars.clone();
        m[i] = REPL[(rng >> 33) as usize % REPL.len()];
        parse_verify_print(&m.iter().collect::<String>());
    }
}

#[test]
fn garbage_never_panics() {
    for text in [
        "\u{0}\u{1}\u{2}",
        "graph",
        "graph \"",
        "graph \"\\",
        "graph \"\\u{",
        "graph \"\\u{110000}\" {",
        "graph \"x\" {\n %",
        "graph \"x\" {\n %0",
        "graph \"x\" {\n %0:",
        "graph \"x\" {\n %0: f32[",
        "graph \"x\" {\n %0: f32[a<=",
        "graph \"x\" {\n %0: f32[a<=b] = input {index=0}\n}",
        "graph \"x\" {\n %0: f32[] =",
        "graph \"x\" {\n %0: f32[] = input {",
        "graph \"x\" {\n %0: f32[] = input {index=",
        "graph \"x\" {\n %0: f32[] = const [",
        "graph \"x\" {\n %0: f32[] = relu(",
        "graph \"x\" {\n %0: f32[] = relu(%",
        "graph \"x\" {\n %0: f32[] = relu() {",
        "graph \"x\" {\n %0: f32[] = relu() #",
        "graph \"x\" {\n %0: f32[] = relu()\n}",
        "graph \"x\" {\n %0.5: f32[] = input {index=0}\n}",
        "graph \"x\" {\n %0: f32[] = input {index=-1}\n}",
        "graph \"x\" {\n %0: f32[] = input {index=\"0\"}\n}",
        "graph \"x\" {\n %0: f32[] = concat() {axis=0}\n}",
        "graph \"x\" {\n %0: f32[2] = input {index=0}\n %1: f32[2] = conv(%0, %0) {kernel_shape=[0], strides=[0], pads=[99999999999999999,99999999999999999], dilations=[9999999999], group=0}\n}",
        "graph \"x\" {\n %0: f32[1,1,4] = input {index=0}\n %1: f32[1,1,4] = max_pool(%0) {kernel_shape=[2], strides=[1], pads=[18446744073709551615,1], dilations=[9223372036854775807], ceil_mode=1}\n}",
        "graph \"x\" {\n %0: f32[1,1,4] = input {index=0}\n %1: f32[1,1,4] = max_pool(%0) {kernel_shape=[9223372036854775807], strides=[1], pads=[9223372036854775806,0], dilations=[2], ceil_mode=1}\n}",
        "graph \"x\" {\n %0: f32[9223372036854775807] = input {index=0}\n %1: f32[1] = reshape(%0) {shape=[-1,0]}\n %2: f32[1] = slice(%0) {starts=[-9223372036854775808], ends=[9223372036854775807], axes=[0], steps=[9223372036854775807]}\n}",
        "graph \"x\" {\n %0: f32[3] = input {index=0}\n %1: f32[3] = concat(%0, %0, %0) {axis=0}\n %2: f32[3] = unsqueeze(%0) {axes=[0,0,5]}\n %3: f32[3] = squeeze(%0) {axes=[7]}\n %4: i64[1] = shape(%0) {start=-9223372036854775808, end=9223372036854775807}\n}",
    ] {
        parse_verify_print(text);
    }
}
