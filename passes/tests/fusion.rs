//! The activation fusion pass: before/after snapshots on small graphs, the graph's results before and
//! after through the reference interpreter, and hand-computed values for the folded biases.

use kiln_ir::ops::{BinaryOp, Conv, Gemm, UnaryOp};
use kiln_ir::{
    interpret, print, verify, DType, Graph, Op, PrintOptions, Tensor, TensorType, Value,
};
use kiln_passes::{pipeline, DeadNodes, Fuel, FuseActivation, Pass};

fn text(g: &Graph) -> String {
    print(g, PrintOptions::default())
}

fn node(g: &mut Graph, name: &str, op: Op, ins: &[Value]) -> Value {
    let ins: Vec<Option<Value>> = ins.iter().map(|&v| Some(v)).collect();
    g.add_node(name, op, &ins, &[])
        .unwrap_or_else(|e| panic!("{e}"))[0]
}

fn unary(g: &mut Graph, name: &str, op: UnaryOp, x: Value) -> Value {
    node(g, name, Op::Unary(op), &[x])
}

fn f32c(g: &mut Graph, name: &str, shape: &[usize], v: &[f32]) -> Value {
    g.add_const(name, Tensor::from_f32(shape.to_vec(), v))
}

fn conv1x1() -> Op {
    Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: vec![1, 1],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![0; 4],
        group: 1,
        post: vec![],
    })
}

/// A depthwise 1x1 conv over 2 channels (weights `[2, 1, 1, 1]`).
fn dwconv() -> Op {
    Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: vec![1, 1],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![0; 4],
        group: 2,
        post: vec![],
    })
}

fn gemm(beta: f32) -> Op {
    Op::Gemm(Gemm {
        alpha: 1.0,
        beta,
        trans_a: false,
        trans_b: false,
        post: vec![],
    })
}

/// Runs the pass as the pipeline does (every activation into depthwise convs, relu and clip into
/// the others and gemms), then dead-node elimination, verifying after each.
fn fuse(g: &mut Graph) -> bool {
    run_fuse(g, FuseActivation::default())
}

/// [`fuse`] with every activation fused into gemms and every conv.
fn fuse_all(g: &mut Graph) -> bool {
    run_fuse(
        g,
        FuseActivation {
            gemm_epilogue: true,
        },
    )
}

fn run_fuse(g: &mut Graph, pass: FuseActivation) -> bool {
    let changed = pass.run(g, &mut Fuel::unlimited()).unwrap();
    verify(g).unwrap_or_else(|e| panic!("{e}\n{}", text(g)));
    DeadNodes.run(g, &mut Fuel::unlimited()).unwrap();
    verify(g).unwrap();
    changed
}

/// Deterministic inputs with negatives, zeros and values past the clip bounds.
fn sample(ty: &TensorType) -> Tensor {
    let dims = ty.dims().unwrap();
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.75)
        .collect();
    Tensor::from_f32(dims, &v)
}

/// Every output of `after` matches `before` on the same inputs, to within `tol` (relative to 1).
#[track_caller]
fn same_results(before: &Graph, after: &Graph, tol: f64) -> Vec<Tensor> {
    let ins: Vec<Tensor> = before
        .inputs
        .iter()
        .map(|&id| sample(&before.node(id).outputs[0].ty))
        .collect();
    let want = interpret(before, &ins).unwrap();
    let got = interpret(after, &ins).unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.ty(), w.ty());
        for (i, (a, b)) in g.to_f64_vec().iter().zip(w.to_f64_vec()).enumerate() {
            assert!(
                (a - b).abs() <= tol * b.abs().max(1.0),
                "element {i}: {a} after, {b} before"
            );
        }
    }
    got
}

fn ops(g: &Graph) -> Vec<Op> {
    g.topo_order()
        .unwrap()
        .into_iter()
        .map(|id| g.node(id).op.clone())
        .collect()
}

/// x[1,2,2,2] -> conv 1x1 (bias) -> add [1,2,1,1] -> relu -> clip(0, 6) -> y.
fn conv_chain() -> Graph {
    let mut g = Graph::new("conv_chain");
    let x = g.add_input("x", TensorType::new(DType::F32, &[1, 2, 2, 2]));
    // out0 = x0 + x1, out1 = 2 x0 - x1.
    let w = f32c(&mut g, "w", &[2, 2, 1, 1], &[1.0, 1.0, 2.0, -1.0]);
    let b = f32c(&mut g, "b", &[2], &[0.5, -1.0]);
    let y = node(&mut g, "conv", conv1x1(), &[x, w, b]);
    let c = f32c(&mut g, "shift", &[1, 2, 1, 1], &[1.0, 0.25]);
    let y = node(&mut g, "add", Op::Binary(BinaryOp::Add), &[y, c]);
    let y = unary(&mut g, "relu", UnaryOp::Relu, y);
    let y = unary(&mut g, "clip", UnaryOp::Clip { min: 0.0, max: 6.0 }, y);
    g.outputs.push(("y".into(), y));
    g
}

#[test]
fn conv_bias_add_and_activation_chain_fuse() {
    let before = conv_chain();
    // By default the bias folds into the (pointwise) conv and relu and clip join its epilogue.
    let mut g = before.clone();
    assert!(fuse(&mut g));
    assert!(ops(&g).iter().any(|op| matches!(op, Op::Conv(c)
        if c.post == [UnaryOp::Relu, UnaryOp::Clip { min: 0.0, max: 6.0 }])));
    assert!(!ops(&g).contains(&Op::Binary(BinaryOp::Add)));
    assert!(!ops(&g).contains(&Op::Unary(UnaryOp::Relu)));
    same_results(&before, &g, 1e-6);
    // With the gemm epilogue on for every activation, the same.
    let mut g = before.clone();
    assert!(fuse_all(&mut g));
    insta::assert_snapshot!("conv_chain_before", text(&before));
    insta::assert_snapshot!("conv_chain_after", text(&g));
    // Bias [0.5, -1] plus the shift [1, 0.25]: [1.5, -0.75].
    let conv = g
        .node_ids()
        .into_iter()
        .find(|&id| matches!(g.node(id).op, Op::Conv(_)))
        .unwrap();
    let bias = g.const_value(g.input(conv, 2).unwrap()).unwrap();
    assert_eq!(bias.to_f32_vec(), vec![1.5, -0.75]);
    let Op::Conv(c) = &g.node(conv).op else {
        unreachable!()
    };
    assert_eq!(
        c.post,
        vec![UnaryOp::Relu, UnaryOp::Clip { min: 0.0, max: 6.0 }]
    );
    // Only input, weights, bias and the conv are left.
    assert_eq!(g.node_count(), 4);
    let y = same_results(&before, &g, 1e-6);
    // By hand on the sample input x0 = [-8.25, 2.25, -4.5, 6], x1 = [-0.75, -7.5, 3, -3.75]:
    // out0 = x0 + x1 + 1.5 = [-7.5, -3.75, 0, 3.75] -> relu/clip [0, 0, 0, 3.75];
    // out1 = 2 x0 - x1 - 0.75 = [-16.5, 11.25, -12.75, 15] -> [0, 6, 0, 6].
    assert_eq!(
        y[0].to_f32_vec(),
        vec![0.0, 0.0, 0.0, 3.75, 0.0, 6.0, 0.0, 6.0]
    );
}

#[test]
fn mul_by_own_sigmoid_becomes_silu_and_fuses() {
    let mut before = Graph::new("silu");
    let x = before.add_input("x", TensorType::new(DType::F32, &[1, 2, 2, 2]));
    let w = f32c(&mut before, "w", &[2, 1, 1, 1], &[1.5, -0.5]);
    let y = node(&mut before, "dw", dwconv(), &[x, w]);
    let s = unary(&mut before, "sig", UnaryOp::Sigmoid, y);
    let y = node(&mut before, "mul", Op::Binary(BinaryOp::Mul), &[y, s]);
    before.outputs.push(("y".into(), y));
    // After a pointwise conv the silu forms but stays a node (see `exp_based_activations_...`).
    let w1 = f32c(&mut before, "w1", &[2, 2, 1, 1], &[1.0, 1.0, 2.0, -1.0]);
    let p = node(&mut before, "pw", conv1x1(), &[x, w1]);
    let s = unary(&mut before, "sig1", UnaryOp::Sigmoid, p);
    let q = node(&mut before, "mul1", Op::Binary(BinaryOp::Mul), &[s, p]);
    before.outputs.push(("q".into(), q));
    // A standalone one too, operands the other way round: sigmoid(x) * x.
    let s = unary(&mut before, "sig2", UnaryOp::Sigmoid, x);
    let z = node(&mut before, "mul2", Op::Binary(BinaryOp::Mul), &[s, x]);
    before.outputs.push(("z".into(), z));
    let mut g = before.clone();
    assert!(fuse(&mut g));
    insta::assert_snapshot!("silu_before", text(&before));
    insta::assert_snapshot!("silu_after", text(&g));
    let ops = ops(&g);
    assert!(ops
        .iter()
        .any(|op| matches!(op, Op::Conv(c) if c.post == [UnaryOp::Silu])));
    assert_eq!(
        ops.iter()
            .filter(|op| **op == Op::Unary(UnaryOp::Silu))
            .count(),
        2
    );
    assert!(!ops
        .iter()
        .any(|op| matches!(op, Op::Unary(UnaryOp::Sigmoid) | Op::Binary(BinaryOp::Mul))));
    let out = same_results(&before, &g, 1e-6);
    // z[0] = silu(-8.25) = -8.25 / (1 + e^8.25) = -8.25 / 3828.6258 = -0.00215482; z[1] =
    // silu(2.25) = 2.25 / (1 + e^-2.25) = 2.25 / 1.1053992 = 2.0354637.
    let z = out[2].to_f64_vec();
    assert!((z[0] + 0.002_154_82).abs() < 1e-7, "{z:?}");
    assert!((z[1] - 2.035_463_7).abs() < 1e-6, "{z:?}");
}

#[test]
fn gemm_bias_and_activation_fuse() {
    let mut before = Graph::new("gemm");
    let a = before.add_input("a", TensorType::new(DType::F32, &[2, 3]));
    let b = f32c(&mut before, "b", &[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    let c = f32c(&mut before, "c", &[2], &[10.0, 20.0]);
    let y = node(&mut before, "gemm", gemm(0.5), &[a, b, c]);
    let shift = f32c(&mut before, "shift", &[1, 2], &[-6.0, 1.0]);
    let y = node(&mut before, "add", Op::Binary(BinaryOp::Add), &[shift, y]);
    let y = unary(&mut before, "leaky", UnaryOp::LeakyRelu { alpha: 0.5 }, y);
    let y = unary(&mut before, "gelu", UnaryOp::Gelu { tanh: true }, y);
    before.outputs.push(("y".into(), y));
    // By default only the bias folds.
    let mut g = before.clone();
    assert!(fuse(&mut g));
    assert!(ops(&g)
        .iter()
        .any(|op| matches!(op, Op::Gemm(gm) if gm.post.is_empty())));
    assert!(!ops(&g).contains(&Op::Binary(BinaryOp::Add)));
    assert!(ops(&g).contains(&Op::Unary(UnaryOp::LeakyRelu { alpha: 0.5 })));
    same_results(&before, &g, 1e-6);
    let mut g = before.clone();
    assert!(fuse_all(&mut g));
    insta::assert_snapshot!("gemm_before", text(&before));
    insta::assert_snapshot!("gemm_after", text(&g));
    let gm = g
        .node_ids()
        .into_iter()
        .find(|&id| matches!(g.node(id).op, Op::Gemm(_)))
        .unwrap();
    let Op::Gemm(op) = &g.node(gm).op else {
        unreachable!()
    };
    // C becomes 0.5 * [10, 20] + [-6, 1] = [-1, 11] with beta 1.
    assert_eq!(op.beta, 1.0);
    assert_eq!(
        op.post,
        vec![
            UnaryOp::LeakyRelu { alpha: 0.5 },
            UnaryOp::Gelu { tanh: true }
        ]
    );
    let c = g.const_value(g.input(gm, 2).unwrap()).unwrap();
    assert_eq!((c.shape(), c.to_f32_vec()), (&[1, 2][..], vec![-1.0, 11.0]));
    same_results(&before, &g, 1e-6);
}

#[test]
fn gemm_without_c_takes_the_bias_as_c() {
    let mut before = Graph::new("gemm_no_c");
    let a = before.add_input("a", TensorType::new(DType::F32, &[2, 3]));
    let b = f32c(&mut before, "b", &[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    let y = node(&mut before, "gemm", gemm(0.25), &[a, b]);
    let shift = f32c(&mut before, "shift", &[2], &[3.0, -3.0]);
    let y = node(&mut before, "add", Op::Binary(BinaryOp::Add), &[y, shift]);
    let y = unary(&mut before, "relu", UnaryOp::Relu, y);
    before.outputs.push(("y".into(), y));
    let mut g = before.clone();
    assert!(fuse(&mut g));
    let gm = g
        .node_ids()
        .into_iter()
        .find(|&id| matches!(g.node(id).op, Op::Gemm(_)))
        .unwrap();
    assert!(matches!(&g.node(gm).op, Op::Gemm(op) if op.beta == 1.0 && op.post == [UnaryOp::Relu]));
    assert!(!ops(&g).contains(&Op::Unary(UnaryOp::Relu)));
    let c = g.const_value(g.input(gm, 2).unwrap()).unwrap();
    assert_eq!(c.to_f32_vec(), vec![3.0, -3.0]);
    same_results(&before, &g, 1e-6);
}

#[test]
fn every_listed_activation_fuses_into_depthwise_convs_and_on_request_into_others() {
    let acts = [
        UnaryOp::Relu,
        UnaryOp::Clip {
            min: -1.0,
            max: 1.0,
        },
        UnaryOp::LeakyRelu { alpha: 0.1 },
        UnaryOp::Sigmoid,
        UnaryOp::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        UnaryOp::HardSwish,
        UnaryOp::Gelu { tanh: false },
        UnaryOp::Silu,
        UnaryOp::Tanh,
    ];
    for act in acts {
        let mut before = Graph::new("one");
        let x = before.add_input("x", TensorType::new(DType::F32, &[1, 2, 2, 2]));
        let w = f32c(&mut before, "w", &[2, 2, 1, 1], &[0.5, 0.25, -0.5, 1.0]);
        let y = node(&mut before, "conv", conv1x1(), &[x, w]);
        let y = unary(&mut before, "act", act, y);
        before.outputs.push(("y".into(), y));
        let wd = f32c(&mut before, "wd", &[2, 1, 1, 1], &[0.5, -2.0]);
        let z = node(&mut before, "dw", dwconv(), &[x, wd]);
        let z = unary(&mut before, "act_dw", act, z);
        before.outputs.push(("z".into(), z));
        // Groups of the convs that took the activation.
        let fused_groups = |g: &Graph| {
            let mut v: Vec<usize> = ops(g)
                .iter()
                .filter_map(|op| match op {
                    Op::Conv(c) if c.post == [act] => Some(c.group),
                    _ => None,
                })
                .collect();
            v.sort();
            v
        };
        // By default the gemm microkernel's epilogue (the pointwise conv) takes only the clamps.
        let by_default: &[usize] = match act {
            UnaryOp::Relu | UnaryOp::Clip { .. } => &[1, 2],
            _ => &[2],
        };
        let mut g = before.clone();
        assert!(fuse(&mut g), "{act:?}");
        assert_eq!(fused_groups(&g), by_default, "{act:?}");
        same_results(&before, &g, 0.0);
        let mut g = before.clone();
        assert!(fuse_all(&mut g), "{act:?}");
        assert_eq!(fused_groups(&g), [1, 2], "{act:?}");
        same_results(&before, &g, 0.0);
    }
}

#[test]
fn what_must_not_fuse_stays() {
    let mut g = Graph::new("no");
    let x = g.add_input("x", TensorType::new(DType::F32, &[1, 2, 2, 2]));
    let w = f32c(&mut g, "w", &[2, 2, 1, 1], &[1.0, 1.0, 2.0, -1.0]);
    // Two readers of the conv output.
    let y1 = node(&mut g, "conv1", conv1x1(), &[x, w]);
    let r1 = unary(&mut g, "relu1", UnaryOp::Relu, y1);
    let t1 = unary(&mut g, "tanh1", UnaryOp::Tanh, y1);
    // The conv output is a graph output itself.
    let y2 = node(&mut g, "conv2", conv1x1(), &[x, w]);
    let r2 = unary(&mut g, "relu2", UnaryOp::Relu, y2);
    // Not a listed activation.
    let y3 = node(&mut g, "conv3", conv1x1(), &[x, w]);
    let e3 = unary(&mut g, "exp3", UnaryOp::Exp, y3);
    // A bias that differs along a spatial axis, and an add of a non-constant.
    let y4 = node(&mut g, "conv4", conv1x1(), &[x, w]);
    let c4 = f32c(&mut g, "c4", &[1, 1, 1, 2], &[1.0, 2.0]);
    let a4 = node(&mut g, "add4", Op::Binary(BinaryOp::Add), &[y4, c4]);
    let y5 = node(&mut g, "conv5", conv1x1(), &[x, w]);
    let a5 = node(&mut g, "add5", Op::Binary(BinaryOp::Add), &[y5, x]);
    // Mul of a sigmoid of something else.
    let s6 = unary(&mut g, "sig6", UnaryOp::Sigmoid, x);
    let m6 = node(&mut g, "mul6", Op::Binary(BinaryOp::Mul), &[s6, y5]);
    for (k, v) in [r1, t1, y2, r2, e3, a4, a5, m6].into_iter().enumerate() {
        g.outputs.push((format!("o{k}"), v));
    }
    let before = text(&g);
    assert!(!fuse_all(&mut g));
    assert_eq!(text(&g), before);
}

#[test]
fn bias_after_an_activation_and_f16_convs_stay() {
    let mut before = Graph::new("late_bias");
    let x = before.add_input("x", TensorType::new(DType::F32, &[1, 2, 2, 2]));
    let w = f32c(&mut before, "w", &[2, 2, 1, 1], &[1.0, 1.0, 2.0, -1.0]);
    let y = node(&mut before, "conv", conv1x1(), &[x, w]);
    let y = unary(&mut before, "relu", UnaryOp::Relu, y);
    let c = f32c(&mut before, "c", &[2, 1, 1], &[1.0, 2.0]);
    let y = node(&mut before, "add", Op::Binary(BinaryOp::Add), &[y, c]);
    before.outputs.push(("y".into(), y));
    // An f16 conv: the backend's epilogue is f32 only.
    let xh = before.add_input("xh", TensorType::new(DType::F16, &[1, 2, 2, 2]));
    let wh = before.add_const(
        "wh",
        Tensor::from_f64(DType::F16, vec![2, 2, 1, 1], &[1.0, 1.0, 2.0, -1.0]),
    );
    let yh = node(&mut before, "convh", conv1x1(), &[xh, wh]);
    let yh = unary(&mut before, "reluh", UnaryOp::Relu, yh);
    before.outputs.push(("yh".into(), yh));
    let mut g = before.clone();
    assert!(fuse_all(&mut g));
    // The relu joins the f32 conv, but the add after it stays an add; the f16 chain is untouched.
    let ops = ops(&g);
    assert!(ops
        .iter()
        .any(|op| matches!(op, Op::Conv(c) if c.post == [UnaryOp::Relu])));
    assert!(ops.contains(&Op::Binary(BinaryOp::Add)));
    assert!(ops.contains(&Op::Unary(UnaryOp::Relu)));
    same_results_mixed(&before, &g);
}

/// [`same_results`] for graphs with an f16 input (the f32 sample cast to f16).
fn same_results_mixed(before: &Graph, after: &Graph) {
    let ins: Vec<Tensor> = before
        .inputs
        .iter()
        .map(|&id| {
            let ty = &before.node(id).outputs[0].ty;
            sample(&TensorType::new(DType::F32, &ty.dims().unwrap())).cast(ty.dtype)
        })
        .collect();
    assert_eq!(
        interpret(before, &ins).unwrap(),
        interpret(after, &ins).unwrap()
    );
}

#[test]
fn fuel_stops_fusion() {
    let mut g = conv_chain();
    let changed = FuseActivation::default()
        .run(&mut g, &mut Fuel::limited(1))
        .unwrap();
    assert!(changed);
    verify(&g).unwrap();
    // One rewrite: the bias add only; relu and clip remain nodes.
    let ops = ops(&g);
    assert!(!ops.contains(&Op::Binary(BinaryOp::Add)));
    assert!(ops.contains(&Op::Unary(UnaryOp::Relu)));
    assert!(ops
        .iter()
        .any(|op| matches!(op, Op::Conv(c) if c.post.is_empty())));
}

#[test]
fn pipeline_fuses_before_dce() {
    let names: Vec<&str> = pipeline().iter().map(|p| p.name()).collect();
    let fuse = names.iter().position(|&n| n == "fuse-activation").unwrap();
    let dce = names.iter().position(|&n| n == "dce").unwrap();
    assert!(fuse < dce, "{names:?}");
}

#[test]
fn activation_after_a_reshape_of_a_gemm_fuses() {
    use kiln_ir::ops::Reshape;
    // The PyTorch Linear-on-3-D shape: gemm [4, 2] -> reshape [1, 4, 2] -> hard swish -> reshape [8].
    let mut before = Graph::new("view");
    let a = before.add_input("a", TensorType::new(DType::F32, &[4, 3]));
    let b = f32c(&mut before, "b", &[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    let y = node(&mut before, "gemm", gemm(1.0), &[a, b]);
    let reshape = |shape: &[i64]| {
        Op::Reshape(Reshape {
            shape: shape.to_vec(),
            allowzero: false,
        })
    };
    let r = node(&mut before, "reshape", reshape(&[1, 4, 2]), &[y]);
    let act = unary(&mut before, "hswish", UnaryOp::HardSwish, r);
    let z = node(&mut before, "reshape2", reshape(&[8]), &[act]);
    before.outputs.push(("z".into(), z));
    let mut g = before.clone();
    assert!(fuse_all(&mut g));
    insta::assert_snapshot!("view_after", text(&g));
    let ops = ops(&g);
    assert!(ops
        .iter()
        .any(|op| matches!(op, Op::Gemm(gm) if gm.post == [UnaryOp::HardSwish])));
    assert!(!ops.iter().any(|op| matches!(op, Op::Unary(_))));
    same_results(&before, &g, 0.0);
}
