//! `fuse-elementwise`: before/after snapshots on small graphs, and the reference interpreter giving
//! the same numbers before and after.

use kiln_ir::ops::{BinaryOp, FusedEw, UnaryOp};
use kiln_ir::{
    interpret, print, verify, DType, Graph, Op, PrintOptions, Tensor, TensorType, Value,
};
use kiln_passes::{pipeline, Fuel, FuseElementwise, Pass};

fn text(g: &Graph) -> String {
    print(g, PrintOptions::default())
}

fn node(g: &mut Graph, name: &str, op: Op, ins: &[Value]) -> Value {
    let ins: Vec<Option<Value>> = ins.iter().map(|&v| Some(v)).collect();
    g.add_node(name, op, &ins, &[name]).unwrap()[0]
}

fn bin(g: &mut Graph, name: &str, op: BinaryOp, a: Value, b: Value) -> Value {
    node(g, name, Op::Binary(op), &[a, b])
}

fn un(g: &mut Graph, name: &str, op: UnaryOp, a: Value) -> Value {
    node(g, name, Op::Unary(op), &[a])
}

fn scalar(g: &mut Graph, name: &str, v: f32) -> Value {
    g.add_const(name, Tensor::from_f32(vec![], &[v]))
}

/// Deterministic test data in about [-2, 2].
fn data(dims: &[usize], seed: f32) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| 2.0 * ((i as f32 + 1.0) * 0.737 + seed).sin())
        .collect();
    Tensor::from_f32(dims.to_vec(), &v)
}

fn inputs_for(g: &Graph) -> Vec<Tensor> {
    g.inputs
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let dims = g.ty(Value { node: id, slot: 0 }).dims().unwrap();
            data(&dims, i as f32)
        })
        .collect()
}

/// Runs the pass; checks the graph verifies and that the interpreter gives the same bits before and
/// after (each instruction rounds to f32 exactly as its unfused node does). Returns the outputs.
fn fuse(g: &mut Graph) -> (bool, Vec<Tensor>) {
    let ins = inputs_for(g);
    let before = interpret(g, &ins).unwrap();
    let changed = FuseElementwise.run(g, &mut Fuel::unlimited()).unwrap();
    verify(g).unwrap_or_else(|e| panic!("{e}\n{}", text(g)));
    let after = interpret(g, &ins).unwrap();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.ty(), a.ty());
        assert_eq!(b.bytes(), a.bytes(), "fused result differs\n{}", text(g));
    }
    (changed, after)
}

fn fused_nodes(g: &Graph) -> Vec<FusedEw> {
    g.node_ids()
        .into_iter()
        .filter_map(|id| match &g.node(id).op {
            Op::FusedEw(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

/// `tanh(x * 0.5 + 1) * y`, x [2,5], y [5].
fn chain() -> Graph {
    let mut g = Graph::new("chain");
    let x = g.add_input("x", TensorType::new(DType::F32, &[2, 5]));
    let y = g.add_input("y", TensorType::new(DType::F32, &[5]));
    let half = scalar(&mut g, "half", 0.5);
    let one = g.add_const("one", Tensor::from_f32(vec![1], &[1.0]));
    let a = bin(&mut g, "/scale/Mul", BinaryOp::Mul, x, half);
    let b = bin(&mut g, "/shift/Add", BinaryOp::Add, a, one);
    let c = un(&mut g, "/act/Tanh", UnaryOp::Tanh, b);
    let d = bin(&mut g, "/gate/Mul", BinaryOp::Mul, c, y);
    g.outputs.push(("out".into(), d));
    g
}

#[test]
fn chain_becomes_one_node() {
    let mut g = chain();
    insta::assert_snapshot!("chain_before", text(&g));
    let (changed, out) = fuse(&mut g);
    assert!(changed);
    insta::assert_snapshot!("chain_after", text(&g));
    let fused = fused_nodes(&g);
    assert_eq!(fused.len(), 1);
    assert_eq!(fused[0].program.len(), 4);
    // Only the inputs, the two constants and the fused node are left.
    assert_eq!(g.node_count(), 5);
    // The formula, by hand in f64, with each f32 rounding the unfused ops make.
    let (x, y) = (
        data(&[2, 5], 0.0).to_f32_vec(),
        data(&[5], 1.0).to_f32_vec(),
    );
    let want: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let t = ((v * 0.5 + 1.0) as f64).tanh() as f32;
            t * y[i % 5]
        })
        .collect();
    assert_eq!(out[0].to_f32_vec(), want);
    // Nothing is left to fuse.
    assert!(!FuseElementwise.run(&mut g, &mut Fuel::unlimited()).unwrap());
}

#[test]
fn tree_reading_one_input_twice() {
    // The erf form of GELU: x / sqrt(2) -> erf -> + 1 -> x * . -> * 0.5; x feeds two members.
    let mut g = Graph::new("gelu");
    let x = g.add_input("x", TensorType::new(DType::F32, &[3, 4]));
    let s2 = scalar(&mut g, "sqrt2", std::f32::consts::SQRT_2);
    let one = scalar(&mut g, "one", 1.0);
    let half = scalar(&mut g, "half", 0.5);
    let a = bin(&mut g, "div", BinaryOp::Div, x, s2);
    let b = un(&mut g, "erf", UnaryOp::Erf, a);
    let c = bin(&mut g, "add", BinaryOp::Add, b, one);
    let d = bin(&mut g, "mul", BinaryOp::Mul, x, c);
    let e = bin(&mut g, "mul_half", BinaryOp::Mul, d, half);
    g.outputs.push(("y".into(), e));
    let (changed, out) = fuse(&mut g);
    assert!(changed);
    insta::assert_snapshot!("gelu_tree_after", text(&g));
    let f = &fused_nodes(&g)[0];
    assert_eq!(f.num_inputs(), 4, "x once, three constants");
    // gelu(x) = x * Phi(x); at x = -2, 1 and 2 (Phi from tables: 0.0227501319, 0.8413447461,
    // 0.9772498681), up to f32 rounding.
    let xs = data(&[3, 4], 0.0).to_f32_vec();
    for (i, &v) in xs.iter().enumerate() {
        let phi = 0.5 * (1.0 + libm_erf(v as f64 / std::f64::consts::SQRT_2));
        let want = v as f64 * phi;
        let got = out[0].to_f32_vec()[i] as f64;
        assert!((got - want).abs() < 1e-5, "{v}: {got} vs {want}");
    }
    for (v, phi) in [
        (-2.0f64, 0.022_750_131_9),
        (1.0, 0.841_344_746_1),
        (2.0, 0.977_249_868_1),
    ] {
        let phi2 = 0.5 * (1.0 + libm_erf(v / std::f64::consts::SQRT_2));
        assert!(
            (phi - phi2).abs() < 1e-9,
            "the erf used by this test is off at {v}"
        );
    }
}

/// erf by its Maclaurin series (plenty for |x| <= 2 in f64), independent of the IR's.
fn libm_erf(x: f64) -> f64 {
    let mut sum = 0.0;
    let mut term = x;
    let mut n = 0.0;
    while term.abs() > 1e-17 {
        sum += term / (2.0 * n + 1.0);
        n += 1.0;
        term *= -x * x / n;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn value_with_two_readers_is_an_input() {
    // s = x + y feeds both the sigmoid and the mul: it stays, and the fused node reads it.
    let mut g = Graph::new("swish");
    let x = g.add_input("x", TensorType::new(DType::F32, &[8]));
    let y = g.add_input("y", TensorType::new(DType::F32, &[8]));
    let s = bin(&mut g, "sum", BinaryOp::Add, x, y);
    let t = un(&mut g, "sig", UnaryOp::Sigmoid, s);
    let u = bin(&mut g, "swish", BinaryOp::Mul, s, t);
    g.outputs.push(("u".into(), u));
    let (changed, _) = fuse(&mut g);
    assert!(changed);
    insta::assert_snapshot!("two_readers_after", text(&g));
}

#[test]
fn graph_outputs_and_predicates_end_groups() {
    let mut g = Graph::new("ends");
    let x = g.add_input("x", TensorType::new(DType::F32, &[4]));
    let two = scalar(&mut g, "two", 2.0);
    // `a` is a graph output: its reader cannot absorb it.
    let a = bin(&mut g, "a", BinaryOp::Mul, x, two);
    let b = un(&mut g, "b", UnaryOp::Exp, a);
    // A comparison is not fusable, so `c` is alone.
    let c = bin(&mut g, "c", BinaryOp::Less, b, x);
    let d = un(&mut g, "d", UnaryOp::Neg, x);
    let e = un(&mut g, "e", UnaryOp::IsNaN, d);
    g.outputs.push(("a".into(), a));
    g.outputs.push(("c".into(), c));
    g.outputs.push(("e".into(), e));
    let before = text(&g);
    let (changed, _) = fuse(&mut g);
    assert!(!changed);
    assert_eq!(text(&g), before);
}

#[test]
fn broadcast_grown_values_stay_separate() {
    // Squeeze-excitation: sigmoid of a per-channel [1,4,1,1] scales x [1,4,3,3]. Fusing the
    // sigmoid would recompute it 9 times per channel; it stays, and the mul joins the add after.
    let mut g = Graph::new("se");
    let x = g.add_input("x", TensorType::new(DType::F32, &[1, 4, 3, 3]));
    let s = g.add_input("s", TensorType::new(DType::F32, &[1, 4, 1, 1]));
    let bias = g.add_const(
        "bias",
        Tensor::from_f32(vec![4, 1, 1], &[0.5, -0.5, 1.0, 0.0]),
    );
    let sig = un(&mut g, "sig", UnaryOp::Sigmoid, s);
    let m = bin(&mut g, "scale", BinaryOp::Mul, x, sig);
    let r = bin(&mut g, "bias_add", BinaryOp::Add, m, bias);
    g.outputs.push(("y".into(), r));
    let (changed, _) = fuse(&mut g);
    assert!(changed);
    insta::assert_snapshot!("se_after", text(&g));
    let f = &fused_nodes(&g)[0];
    assert_eq!(f.program.len(), 2);
}

#[test]
fn single_ops_and_other_dtypes_stay() {
    let mut g = Graph::new("alone");
    let x = g.add_input("x", TensorType::new(DType::F32, &[4]));
    let a = un(&mut g, "relu", UnaryOp::Relu, x);
    g.outputs.push(("a".into(), a));
    // An f64 chain: fused_ew is f32 only.
    let w = g.add_input("w", TensorType::new(DType::F64, &[4]));
    let b = un(&mut g, "exp", UnaryOp::Exp, w);
    let c = un(&mut g, "neg", UnaryOp::Neg, b);
    g.outputs.push(("c".into(), c));
    let before = text(&g);
    assert!(!FuseElementwise.run(&mut g, &mut Fuel::unlimited()).unwrap());
    assert_eq!(text(&g), before);
}

#[test]
fn fuel_limits_groups() {
    // Two independent chains; one unit of fuel fuses the first only.
    let mut g = Graph::new("two");
    let x = g.add_input("x", TensorType::new(DType::F32, &[4]));
    let a = un(&mut g, "a1", UnaryOp::Exp, x);
    let a = un(&mut g, "a2", UnaryOp::Neg, a);
    let b = un(&mut g, "b1", UnaryOp::Sin, x);
    let b = un(&mut g, "b2", UnaryOp::Abs, b);
    g.outputs.push(("a".into(), a));
    g.outputs.push(("b".into(), b));
    let mut fuel = Fuel::limited(1);
    assert!(FuseElementwise.run(&mut g, &mut fuel).unwrap());
    verify(&g).unwrap();
    assert_eq!(fused_nodes(&g).len(), 1);
    let mut fuel = Fuel::limited(0);
    assert!(!FuseElementwise.run(&mut g, &mut fuel).unwrap());
    assert!(FuseElementwise.run(&mut g, &mut Fuel::unlimited()).unwrap());
    assert_eq!(fused_nodes(&g).len(), 2);
}

#[test]
fn runs_last_before_dce_and_after_fuse_activation() {
    let names: Vec<&str> = pipeline().iter().map(|p| p.name()).collect();
    let at = |n: &str| names.iter().position(|&x| x == n);
    let me = at("fuse-elementwise").expect("in the pipeline");
    assert_eq!(at("dce"), Some(me + 1), "{names:?}");
    if let Some(act) = at("fuse-activation") {
        assert!(act < me, "{names:?}");
    }
}
