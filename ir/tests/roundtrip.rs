//! print -> parse -> print reproduces the text, and the parsed graph verifies.

mod common;

use kiln_ir::{parse, print, verify, DType, Graph, Op, PrintOptions, Tensor};

const FULL: PrintOptions = PrintOptions {
    max_const_elems: usize::MAX,
};

/// Round-trips `g` and returns the parsed graph.
fn round_trip(g: &Graph) -> Graph {
    verify(g).unwrap_or_else(|e| panic!("built graph does not verify: {e}"));
    let text = print(g, FULL);
    let parsed = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    verify(&parsed).unwrap_or_else(|e| panic!("parsed graph does not verify: {e}\n{text}"));
    assert_eq!(print(&parsed, FULL), text);
    // The parts of the graph the text carries.
    assert_eq!(parsed.name, g.name);
    assert_eq!(parsed.node_count(), g.node_count());
    let names = |g: &Graph| {
        g.inputs
            .iter()
            .map(|&i| g.node(i).name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&parsed), names(g));
    let outs = |g: &Graph| {
        g.outputs
            .iter()
            .map(|(n, v)| (n.clone(), g.ty(*v).clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(outs(&parsed), outs(g));
    parsed
}

#[test]
fn mlp_round_trips() {
    round_trip(&common::mlp());
}

#[test]
fn cnn_round_trips() {
    round_trip(&common::cnn());
}

#[test]
fn every_op_round_trips() {
    let g = common::every_op();
    let parsed = round_trip(&g);
    // Every Op variant is present (the enum is closed, so list them by name).
    let text = print(&g, FULL);
    for name in [
        "input",
        "const",
        "identity",
        "relu",
        "add",
        "cast",
        "conv",
        "max_pool",
        "avg_pool",
        "global_max_pool",
        "global_avg_pool",
        "gemm",
        "matmul",
        "batch_norm",
        "softmax",
        "reshape",
        "flatten",
        "transpose",
        "concat",
        "squeeze",
        "unsqueeze",
        "slice",
        "gather",
        "shape",
    ] {
        assert!(text.contains(&format!("= {name}")), "missing op {name}");
    }
    // Constants come back bit for bit, NaN included (Tensor equality compares bytes).
    let consts = |g: &Graph| -> Vec<(String, Tensor)> {
        let mut v: Vec<_> = g
            .node_ids()
            .into_iter()
            .filter_map(|id| match &g.node(id).op {
                Op::Const(t) => Some((g.node(id).name.clone(), t.clone())),
                _ => None,
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (a, b) = (consts(&g), consts(&parsed));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(ta.ty(), tb.ty(), "{na}");
        assert_eq!(ta.bytes(), tb.bytes(), "{na}");
    }
}

#[test]
fn constant_values_print_as_expected() {
    // Spot checks that the text holds the values themselves, in the dtype's own terms.
    let text = print(&common::every_op(), FULL);
    for want in [
        "f16[2] = const [0.099975586, -65504.0]",
        "bf16[2] = const [1.5, -inf]",
        "f64[3] = const [0.1, -1e300, NaN]",
        "f32[1] = const [nan]",
        "i8[2] = const [-128, 127]",
        "u64[1] = const [18446744073709551615]",
        "i4[3] = const [-8, 7, -1]",
        "i32[] = const [-7]",
        "f32[0,3] = const []",
        "f32[batch,len<=128] = input {index=2}",
        "clip(%",
        "{min=-inf, max=6.0}",
    ] {
        assert!(text.contains(want), "missing `{want}` in\n{text}");
    }
}

#[test]
fn inputs_out_of_index_order_in_text() {
    // Input 1 appears before input 0; the graph inputs still follow the declared indices and the text
    // comes back unchanged.
    let text = "graph \"g\" {\n  %0: f32[2] = input {index=1}  # \"b\"\n  %1: f32[2] = input {index=0}  # \"a\"\n  %2: f32[2] = sub(%1, %0)  # \"d\"\n  output %2 \"d\"\n}\n";
    let g = parse(text).unwrap();
    verify(&g).unwrap();
    assert_eq!(g.node(g.inputs[0]).name, "a");
    assert_eq!(g.node(g.inputs[1]).name, "b");
    assert_eq!(print(&g, FULL), text);
}

#[test]
fn multi_output_and_absent_operands_parse() {
    // No op in the set has two outputs or an absent input before a present one, so this text does not
    // verify; the parser must still read it, and the printer write it back the same.
    let text = "graph \"m\" {\n  %0: f32[2] = input {index=0}  # \"x\"\n  %1: f32[2], %1.1: f32[2] = relu(%0)  # \"two\"\n  %2: f32[2] = add(%1.1, %1)  # \"use\"\n  %3: f32[2] = gemm(%0, _, %2) {alpha=1.0, beta=1.0, trans_a=0, trans_b=0}  # \"gap\"\n  output %1.1 \"second\"\n}\n";
    let g = parse(text).unwrap();
    assert_eq!(print(&g, FULL), text);
    assert_eq!(g.outputs[0].1.slot, 1);
    let err = verify(&g).unwrap_err().to_string();
    assert!(err.contains("two") || err.contains("gap"), "{err}");
}

#[test]
fn escaped_names_round_trip() {
    let mut g = Graph::new("tab\there \"quoted\" back\\slash");
    let x = g.add_input(
        "x \"1\"\n\u{7f} é ✓",
        kiln_ir::TensorType::new(DType::F32, &[1]),
    );
    let y = common::node(
        &mut g,
        "\0null\r",
        Op::Unary(kiln_ir::ops::UnaryOp::Neg),
        &[Some(x)],
    );
    g.outputs.push(("out \\ \"y\"".into(), y));
    let parsed = round_trip(&g);
    assert_eq!(parsed.node(parsed.inputs[0]).name, "x \"1\"\n\u{7f} é ✓");
    assert_eq!(parsed.outputs[0].0, "out \\ \"y\"");
}

#[test]
fn hand_written_text_is_accepted() {
    // Extra blank lines and spaces, no name comments, non-canonical attribute spellings.
    let text = "\ngraph \"h\"   {\n\n   %0 : f32[ 2 , 3 ] = input { index = 0 }\n  %1: f32[2,3] = leaky_relu( %0 ) {alpha=1}\n  %2: f32[2,3] = softmax(%1) {axis=1, flatten=0}\n  output %2   \"y\"\n}\n\n";
    let g = parse(text).unwrap();
    verify(&g).unwrap();
    assert_eq!(g.node(g.inputs[0]).name, "v0");
    let printed = print(&g, FULL);
    assert!(
        printed.contains("leaky_relu(%0) {alpha=1.0}  # \"v1\""),
        "{printed}"
    );
}

#[test]
fn fused_activation_chains_round_trip() {
    use kiln_ir::ops::{Conv, Gemm, UnaryOp};
    let mut g = Graph::new("post");
    let x = g.add_input("x", kiln_ir::TensorType::new(DType::F32, &[1, 2, 3, 3]));
    let w = g.add_const(
        "w",
        Tensor::from_f32(vec![2, 2, 1, 1], &[1.0, 0.0, 0.0, 1.0]),
    );
    let conv = Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: vec![1, 1],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![0; 4],
        group: 1,
        post: vec![
            UnaryOp::Clip { min: 0.0, max: 6.0 },
            UnaryOp::Gelu { tanh: true },
            UnaryOp::Silu,
        ],
    });
    let y = g.add_node("conv", conv, &[Some(x), Some(w)], &[]).unwrap()[0];
    g.outputs.push(("y".into(), y));
    let a = g.add_input("a", kiln_ir::TensorType::new(DType::F32, &[2, 3]));
    let b = g.add_const("b", Tensor::from_f32(vec![3, 2], &[1.0; 6]));
    let gemm = Op::Gemm(Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: false,
        post: vec![UnaryOp::Relu],
    });
    let z = g.add_node("gemm", gemm, &[Some(a), Some(b)], &[]).unwrap()[0];
    g.outputs.push(("z".into(), z));
    let parsed = round_trip(&g);
    let text = print(&g, FULL);
    // The chain is one string attribute; the inner quotes of gelu's attribute are escaped.
    assert!(
        text.contains(r#"post="clip{min=0.0, max=6.0}, gelu{approximate=\"tanh\"}, silu"}"#),
        "{text}"
    );
    assert!(text.contains(r#"trans_b=0, post="relu"}"#), "{text}");
    let conv_ops: Vec<&Op> = parsed
        .node_ids()
        .into_iter()
        .map(|id| &parsed.node(id).op)
        .filter(|op| matches!(op, Op::Conv(_) | Op::Gemm(_)))
        .collect();
    assert_eq!(conv_ops.len(), 2);
    assert!(conv_ops.contains(&&g.node(y.node).op));
    assert!(conv_ops.contains(&&g.node(z.node).op));
}

#[test]
fn empty_chain_is_not_printed_and_bad_chains_are_rejected() {
    let g = common::cnn();
    assert!(!print(&g, FULL).contains("post"));
    let base = "graph \"p\" {\n  %0: f32[2,3] = input {index=0}\n  %1: f32[3,2] = const [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]\n  %2: f32[2,2] = gemm(%0, %1) {alpha=1.0, beta=1.0, trans_a=0, trans_b=0, post=POST}\n  output %2 \"y\"\n}\n";
    // An explicitly empty chain is the default.
    let ok = parse(&base.replace("POST", "\"\"")).unwrap();
    verify(&ok).unwrap();
    assert!(!print(&ok, FULL).contains("post"));
    for (post, why) in [
        ("\"relu,\"", "expected an op name"),
        ("\"add\"", "not an elementwise op"),
        ("\"relu{alpha=1.0}\"", "no attribute"),
        ("\"leaky_relu\"", "alpha"),
        ("\"relu clip\"", "expected `,`"),
        ("1", "expected a string"),
    ] {
        let err = match parse(&base.replace("POST", post)) {
            Ok(g) => verify(&g).map(|_| ()).unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(why), "post={post}: {err}");
    }
    // A predicate would make the output bool: the verifier refuses it.
    let g = parse(&base.replace("POST", "\"is_nan\"")).unwrap();
    assert!(verify(&g).unwrap_err().to_string().contains("is_nan"));
}

/// The `layout="nhwc"` attribute of channels-last conv and pooling survives the text form.
#[test]
fn channels_last_ops_round_trip() {
    use kiln_ir::ops::{GlobalPool, Layout, PoolKind};
    let mut g = Graph::new("nhwc");
    let x = g.add_input("x", kiln_ir::TensorType::new(DType::F32, &[1, 6, 6, 4]));
    let w = g.add_const("w", Tensor::from_f32(vec![8, 4, 3, 3], &[0.5; 288]));
    let Op::Conv(mut c) = common::conv(3, 1, 2, 1) else {
        unreachable!()
    };
    c.layout = Layout::Nhwc;
    let y = common::node(&mut g, "c", Op::Conv(c), &[Some(x), Some(w)]);
    assert_eq!(g.ty(y).dims(), Some(vec![1, 3, 3, 8]));
    let p = common::node(
        &mut g,
        "p",
        Op::GlobalPool(GlobalPool {
            kind: PoolKind::Avg,
            layout: Layout::Nhwc,
        }),
        &[Some(y)],
    );
    g.outputs.push(("out".into(), p));
    let parsed = round_trip(&g);
    assert!(print(&parsed, FULL).contains("layout=\"nhwc\""));
}
