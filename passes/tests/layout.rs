//! `choose-layout`: before/after snapshots of small CNN shapes switched to channels-last, the graphs
//! that must stay channels-first or keep their transposes, the results before and after through the
//! reference interpreter (the channels-last ops' reference semantics are transposes around the
//! channels-first op, so the results must be bitwise the same), and the real models of
//! build/families through the whole pipeline (with `KILN_LONG=1`).

use kiln_ir::ops::{
    BinaryOp, Concat, Conv, Flatten, FusedArg, FusedEw, FusedInst, Gemm, GlobalPool, Layout, Pool,
    PoolKind, Reshape, UnaryOp,
};
use kiln_ir::{
    interpret, print, verify, DType, Graph, Op, PrintOptions, Tensor, TensorType, Value,
};
use kiln_passes::{
    pipeline, pipeline_with, ChooseLayout, Driver, Fuel, LayoutPolicy, Pass, PipelineOptions,
};

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

fn binary(g: &mut Graph, name: &str, op: BinaryOp, a: Value, b: Value) -> Value {
    node(g, name, Op::Binary(op), &[a, b])
}

fn f32c(g: &mut Graph, name: &str, shape: &[usize], v: &[f32]) -> Value {
    g.add_const(name, Tensor::from_f32(shape.to_vec(), v))
}

/// Small deterministic values in [-1, 1) (weights and inputs; exact in f32).
fn pattern(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 + seed * 11) % 29) as f32 / 14.5 - 1.0)
        .collect()
}

/// A constant of the given shape filled with [`pattern`].
fn weights(g: &mut Graph, name: &str, shape: &[usize], seed: usize) -> Value {
    let n = shape.iter().product();
    f32c(g, name, shape, &pattern(n, seed))
}

/// A 2-D conv with square kernel `k`, stride 1, "same" padding, and `group` groups.
fn conv2d(k: usize, group: usize) -> Op {
    Op::Conv(Conv {
        kernel_shape: vec![k, k],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![k / 2; 4],
        group,
        post: vec![],
        layout: Layout::Nchw,
    })
}

/// `conv2d` of `x` with fresh weights `[m, c / group, k, k]` and a bias.
fn conv(g: &mut Graph, name: &str, x: Value, m: usize, k: usize, group: usize) -> Value {
    let c = g.ty(x).dims().unwrap()[1];
    let w = weights(g, &format!("{name}.w"), &[m, c / group, k, k], m + k);
    let b = weights(g, &format!("{name}.b"), &[m], m);
    node(g, name, conv2d(k, group), &[x, w, b])
}

/// `conv` with an activation already in its `post` chain (as `fuse-activation` leaves depthwise
/// convs).
fn conv_post(g: &mut Graph, name: &str, x: Value, m: usize, k: usize, group: usize) -> Value {
    let y = conv(g, name, x, m, k, group);
    if let Op::Conv(c) = &mut g.node_mut(y.node).op {
        c.post.push(UnaryOp::Clip { min: 0.0, max: 6.0 });
    }
    y
}

fn max_pool_2x2() -> Op {
    Op::Pool(Pool {
        kind: PoolKind::Max,
        kernel_shape: vec![2, 2],
        strides: vec![2, 2],
        pads: vec![0; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
        count_include_pad: false,
        layout: Layout::Nchw,
    })
}

fn global_avg_pool() -> Op {
    Op::GlobalPool(GlobalPool {
        kind: PoolKind::Avg,
        layout: Layout::Nchw,
    })
}

/// Runs `choose-layout` with `policy`, verifying the result; returns whether it changed anything.
fn choose(g: &mut Graph, policy: LayoutPolicy) -> bool {
    let changed = ChooseLayout {
        policy,
        ..ChooseLayout::default()
    }
    .run(g, &mut Fuel::unlimited())
    .unwrap();
    verify(g).unwrap_or_else(|e| panic!("{e}\n{}", text(g)));
    changed
}

/// The graph's inputs filled with [`pattern`].
fn sample_inputs(g: &Graph) -> Vec<Tensor> {
    g.inputs
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let dims = g.node(id).outputs[0].ty.dims().unwrap();
            let n = dims.iter().product();
            Tensor::from_f32(dims, &pattern(n, i + 3))
        })
        .collect()
}

/// Both graphs give bitwise the same outputs on the same inputs.
#[track_caller]
fn same_results(before: &Graph, after: &Graph) -> Vec<Tensor> {
    let ins = sample_inputs(before);
    let want = interpret(before, &ins).unwrap();
    let got = interpret(after, &ins).unwrap();
    assert_eq!(got, want);
    got
}

fn count(g: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.node_ids()
        .into_iter()
        .filter(|&id| pred(&g.node(id).op))
        .count()
}

fn transposes(g: &Graph) -> usize {
    count(g, |op| matches!(op, Op::Transpose(_)))
}

/// Conv and pooling nodes still channels-first.
fn nchw_ops(g: &Graph) -> usize {
    count(g, |op| match op {
        Op::Conv(c) => c.layout == Layout::Nchw,
        Op::Pool(p) => p.layout == Layout::Nchw,
        Op::GlobalPool(p) => p.layout == Layout::Nchw,
        _ => false,
    })
}

/// x[1,3,8,8] -> conv 3x3 -> relu -> max pool 2x2 -> conv 3x3 -> add(pool output) -> global avg
/// pool -> flatten -> gemm -> y[1,3].
fn small_cnn() -> Graph {
    let mut g = Graph::new("small_cnn");
    let x = g.add_input("x", TensorType::new(DType::F32, &[1, 3, 8, 8]));
    let y = conv(&mut g, "conv1", x, 4, 3, 1);
    let y = unary(&mut g, "relu1", UnaryOp::Relu, y);
    let p = node(&mut g, "pool", max_pool_2x2(), &[y]);
    let y = conv(&mut g, "conv2", p, 4, 3, 1);
    let y = binary(&mut g, "residual", BinaryOp::Add, y, p);
    let y = node(&mut g, "gap", global_avg_pool(), &[y]);
    let y = node(&mut g, "flatten", Op::Flatten(Flatten { axis: 1 }), &[y]);
    let w = weights(&mut g, "fc.w", &[4, 3], 7);
    let b = weights(&mut g, "fc.b", &[3], 8);
    let gemm = Op::Gemm(Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: false,
        post: vec![],
    });
    let y = node(&mut g, "fc", gemm, &[y, w, b]);
    g.outputs.push(("y".into(), y));
    g
}

#[test]
fn small_cnn_goes_channels_last_between_input_and_classifier() {
    let before = small_cnn();
    let mut g = before.clone();
    assert!(choose(&mut g, LayoutPolicy::Nhwc));
    insta::assert_snapshot!("small_cnn_before", text(&before));
    insta::assert_snapshot!("small_cnn_nhwc", text(&g));
    // Everything channels-last: one transpose at the input, and the global pool's [1,1,1,4] back
    // to [1,4,1,1] as a reshape (a view) before the flatten.
    assert_eq!(nchw_ops(&g), 0);
    assert_eq!(transposes(&g), 1);
    assert_eq!(count(&g, |op| matches!(op, Op::Reshape(_))), 1);
    let relu = g
        .node_ids()
        .into_iter()
        .find(|&id| g.node(id).name == "relu1")
        .unwrap();
    assert_eq!(
        g.node(relu).outputs[0].ty,
        TensorType::new(DType::F32, &[1, 8, 8, 4])
    );
    same_results(&before, &g);
}

#[test]
fn nchw_and_auto_leave_the_graph_alone() {
    let before = small_cnn();
    for policy in [LayoutPolicy::Nchw, LayoutPolicy::Auto] {
        let mut g = before.clone();
        assert!(!choose(&mut g, policy), "{policy}");
        assert_eq!(text(&g), text(&before), "{policy}");
    }
}

#[test]
fn every_partial_rewrite_is_correct() {
    // With fuel running out after each rewrite in turn, the graph is valid and computes the same.
    for before in [
        small_cnn(),
        mobilenet_block(),
        fire(),
        per_channel(),
        hoist(),
    ] {
        let mut full = before.clone();
        let mut fuel = Fuel::unlimited();
        ChooseLayout {
            policy: LayoutPolicy::Nhwc,
            ..ChooseLayout::default()
        }
        .run(&mut full, &mut fuel)
        .unwrap();
        let total = fuel.used();
        assert!(total >= 3, "{}: {total} rewrites", before.name);
        for n in 0..total {
            let mut g = before.clone();
            let mut fuel = Fuel::limited(n);
            ChooseLayout {
                policy: LayoutPolicy::Nhwc,
                ..ChooseLayout::default()
            }
            .run(&mut g, &mut fuel)
            .unwrap();
            assert_eq!(fuel.used(), n);
            verify(&g).unwrap_or_else(|e| panic!("{} fuel {n}: {e}\n{}", before.name, text(&g)));
            same_results(&before, &g);
        }
    }
}

/// A MobileNetV2 inverted residual block after a stem conv: 1x1 expansion + clip (a separate node,
/// as the pipeline leaves pointwise convs), depthwise 3x3 with clip in its `post` chain, 1x1
/// projection, residual add of the block input.
fn mobilenet_block() -> Graph {
    let mut g = Graph::new("mobilenet_block");
    let x = g.add_input("x", TensorType::new(DType::F32, &[1, 3, 6, 6]));
    let stem = conv_post(&mut g, "stem", x, 4, 3, 1);
    let y = conv(&mut g, "expand", stem, 8, 1, 1);
    let y = unary(&mut g, "relu6", UnaryOp::Clip { min: 0.0, max: 6.0 }, y);
    let y = conv_post(&mut g, "dw", y, 8, 3, 8);
    let y = conv(&mut g, "project", y, 4, 1, 1);
    let y = binary(&mut g, "residual", BinaryOp::Add, stem, y);
    g.outputs.push(("y".into(), y));
    g
}

#[test]
fn mobilenet_block_keeps_transposes_only_at_the_graph_edges() {
    let before = mobilenet_block();
    let mut g = before.clone();
    assert!(choose(&mut g, LayoutPolicy::Nhwc));
    insta::assert_snapshot!("mobilenet_block_nhwc", text(&g));
    assert_eq!(nchw_ops(&g), 0);
    // In at the input, back at the output (the C API stays NCHW).
    assert_eq!(transposes(&g), 2);
    let out = g.outputs[0].1;
    assert!(matches!(g.node(out.node).op, Op::Transpose(_)));
    same_results(&before, &g);
}

#[test]
fn residual_on_the_graph_input_reads_its_channels_last_copy() {
    // add(x, conv(x)): x's T_fwd exists for the conv, so the add reads it rather than keeping the
    // conv's T_back.
    let mut before = Graph::new("input_residual");
    let x = before.add_input("x", TensorType::new(DType::F32, &[1, 2, 3, 3]));
    let y = conv(&mut before, "conv", x, 2, 3, 1);
    let y = binary(&mut before, "add", BinaryOp::Add, x, y);
    before.outputs.push(("y".into(), y));
    let mut g = before.clone();
    assert!(choose(&mut g, LayoutPolicy::Nhwc));
    assert_eq!(transposes(&g), 2);
    let add = g.outputs[0].1;
    let add = g.input(add.node, 0).unwrap().node;
    assert_eq!(g.node(add).name, "add");
    assert_eq!(
        g.node(add).outputs[0].ty,
        TensorType::new(DType::F32, &[1, 3, 3, 2])
    );
    same_results(&before, &g);
}

/// A SqueezeNet fire module: squeeze 1x1 + relu, then expand 1x1 + relu and expand 3x3 + relu
/// concatenated along the channels, then a 1x1 conv.
fn fire() -> Graph {
    let mut g = Graph::new("fire");
    let x = g.add_input("x", TensorType::new(DType::F32, &[1, 4, 5, 5]));
    let s = conv(&mut g, "squeeze", x, 2, 1, 1);
    let s = unary(&mut g, "squeeze_relu", UnaryOp::Relu, s);
    let a = conv(&mut g, "expand1x1", s, 3, 1, 1);
    let a = unary(&mut g, "expand1x1_relu", UnaryOp::Relu, a);
    let b = conv(&mut g, "expand3x3", s, 3, 3, 1);
    let b = unary(&mut g, "expand3x3_relu", UnaryOp::Relu, b);
    let y = node(&mut g, "concat", Op::Concat(Concat { axis: 1 }), &[a, b]);
    let y = conv(&mut g, "next", y, 2, 1, 1);
    g.outputs.push(("y".into(), y));
    g
}

#[test]
fn fire_module_concatenates_channels_last() {
    let before = fire();
    let mut g = before.clone();
    assert!(choose(&mut g, LayoutPolicy::Nhwc));
    insta::assert_snapshot!("fire_nhwc", text(&g));
    assert_eq!(nchw_ops(&g), 0);
    assert_eq!(transposes(&g), 2);
    let concat = g
        .node_ids()
        .into_iter()
        .find(|&id| g.node(id).name == "concat")
        .unwrap();
    assert_eq!(g.node(concat).op, Op::Concat(Concat { axis: 3 }));
    assert_eq!(
        g.node(concat).outputs[0].ty,
        TensorType::new(DType::F32, &[1, 5, 5, 6])
    );
    same_results(&before, &g);
}

/// x[1,2,3,2] -> conv 1x1 (3 channels) -> mul [3,1,1] -> add [1,3,1,2] -> sub scalar -> div [2]
/// -> y.
fn per_channel() -> Graph {
    let mut g = Graph::new("per_channel");
    let x = g.add_input("x", TensorType::new(DType::F32, &[1, 2, 3, 2]));
    let y = conv(&mut g, "conv", x, 3, 1, 1);
    let scale = f32c(&mut g, "scale", &[3, 1, 1], &[0.5, 2.0, -1.0]);
    let y = binary(&mut g, "mul", BinaryOp::Mul, y, scale);
    let shift = f32c(
        &mut g,
        "shift",
        &[1, 3, 1, 2],
        &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
    );
    let y = binary(&mut g, "add", BinaryOp::Add, shift, y);
    let one = f32c(&mut g, "one", &[], &[1.0]);
    let y = binary(&mut g, "sub", BinaryOp::Sub, y, one);
    // Rank 1: aligned with the last axis (W) of the NCHW activation.
    let per_w = f32c(&mut g, "per_w", &[2], &[2.0, 4.0]);
    let y = binary(&mut g, "div", BinaryOp::Div, y, per_w);
    g.outputs.push(("y".into(), y));
    g
}

#[test]
fn per_channel_constants_are_permuted_with_broadcasting() {
    let before = per_channel();
    let mut g = before.clone();
    assert!(choose(&mut g, LayoutPolicy::Nhwc));
    insta::assert_snapshot!("per_channel_nhwc", text(&g));
    assert_eq!(transposes(&g), 2);
    let operand = |name: &str, slot: usize| {
        let id = g
            .node_ids()
            .into_iter()
            .find(|&id| g.node(id).name == name)
            .unwrap();
        g.const_value(g.input(id, slot).unwrap()).unwrap().clone()
    };
    // [3,1,1] is [1,3,1,1] aligned: channels last, [1,1,1,3], then the added axis goes: [1,1,3].
    let scale = operand("mul", 1);
    assert_eq!(scale.shape(), [1, 1, 3]);
    assert_eq!(scale.to_f32_vec(), [0.5, 2.0, -1.0]);
    // [1,3,1,2] (c, w) -> [1,1,2,3] (w, c): element (c, w) = 2c + w moves to 3w + c.
    let shift = operand("add", 0);
    assert_eq!(shift.shape(), [1, 1, 2, 3]);
    assert_eq!(shift.to_f32_vec(), [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
    // A scalar stays as it is (the same constant node).
    let one = operand("sub", 1);
    assert_eq!(one.shape(), [] as [usize; 0]);
    // [2] is [1,1,1,2] aligned (along W) -> [1,1,2,1] -> [2,1]: still along W, now axis 2 of 4.
    let per_w = operand("div", 1);
    assert_eq!(per_w.shape(), [2, 1]);
    assert_eq!(per_w.to_f32_vec(), [2.0, 4.0]);
    same_results(&before, &g);
}

#[test]
fn fused_elementwise_with_constants_and_two_branches_sinks() {
    // fused_ew(conv_a, scale[1,2,1,1], conv_b) = conv_a * scale + conv_b.
    let mut before = Graph::new("fused");
    let x = before.add_input("x", TensorType::new(DType::F32, &[1, 2, 3, 3]));
    let a = conv(&mut before, "a", x, 2, 3, 1);
    let b = conv(&mut before, "b", x, 2, 1, 1);
    let scale = f32c(&mut before, "scale", &[1, 2, 1, 1], &[3.0, -2.0]);
    let f = Op::FusedEw(FusedEw {
        program: vec![
            FusedInst::Binary(BinaryOp::Mul, FusedArg::Input(0), FusedArg::Input(1)),
            FusedInst::Binary(BinaryOp::Add, FusedArg::Inst(0), FusedArg::Input(2)),
        ],
    });
    let y = node(&mut before, "fused", f, &[a, scale, b]);
    let y = unary(&mut before, "tanh", UnaryOp::Tanh, y);
    before.outputs.push(("y".into(), y));
    let mut g = before.clone();
    assert!(choose(&mut g, LayoutPolicy::Nhwc));
    // One T_fwd of x shared by both convs, one T_back at the output.
    assert_eq!(transposes(&g), 2);
    let out = g.outputs[0].1;
    let tanh = g.input(out.node, 0).unwrap();
    assert_eq!(g.node(tanh.node).name, "tanh");
    same_results(&before, &g);
}

#[test]
fn grouped_and_1d_convs_stay_channels_first() {
    // group 2 of 4 channels: neither dense nor depthwise.
    let mut before = Graph::new("stay");
    let x = before.add_input("x", TensorType::new(DType::F32, &[1, 4, 3, 3]));
    let y = conv(&mut before, "grouped", x, 4, 3, 2);
    before.outputs.push(("y".into(), y));
    // A 1-D conv (rank-3 input).
    let s = before.add_input("s", TensorType::new(DType::F32, &[1, 2, 5]));
    let w = weights(&mut before, "w1d", &[3, 2, 3], 1);
    let conv1d = Op::Conv(Conv {
        kernel_shape: vec![3],
        strides: vec![1],
        dilations: vec![1],
        pads: vec![1, 1],
        group: 1,
        post: vec![],
        layout: Layout::Nchw,
    });
    let z = node(&mut before, "conv1d", conv1d, &[s, w]);
    before.outputs.push(("z".into(), z));
    // A depthwise conv with a channel multiplier (M = 2C) is not depthwise for the backend.
    let m = conv(&mut before, "multiplier", x, 8, 3, 4);
    before.outputs.push(("m".into(), m));
    let mut g = before.clone();
    assert!(!choose(&mut g, LayoutPolicy::Nhwc));
    assert_eq!(text(&g), text(&before));
}

#[test]
fn conv_feeding_a_reshape_keeps_its_transpose_back() {
    // conv -> reshape [1, 18] (needs NCHW order) and conv -> relu -> conv -> y.
    let mut before = Graph::new("reshape");
    let x = before.add_input("x", TensorType::new(DType::F32, &[1, 2, 3, 3]));
    let y = conv(&mut before, "conv", x, 2, 3, 1);
    let flat = Op::Reshape(Reshape {
        shape: vec![1, 18],
        allowzero: false,
    });
    let r = node(&mut before, "reshape", flat, &[y]);
    before.outputs.push(("r".into(), r));
    let z = unary(&mut before, "relu", UnaryOp::Relu, y);
    let z = conv(&mut before, "conv2", z, 2, 1, 1);
    before.outputs.push(("z".into(), z));
    let mut g = before.clone();
    assert!(choose(&mut g, LayoutPolicy::Nhwc));
    insta::assert_snapshot!("reshape_nhwc", text(&g));
    // In at the input, back before the reshape, back at the output z. The conv's T_back stays for
    // the reshape, but the relu (whose result only goes on channels-last) still moves below it.
    assert_eq!(transposes(&g), 3);
    let relu = g
        .node_ids()
        .into_iter()
        .find(|&id| g.node(id).name == "relu")
        .unwrap();
    assert_eq!(
        g.node(relu).outputs[0].ty,
        TensorType::new(DType::F32, &[1, 3, 3, 2])
    );
    let reshape = g.outputs[0].1;
    let back = g.input(reshape.node, 0).unwrap();
    assert!(matches!(g.node(back.node).op, Op::Transpose(_)));
    assert_eq!(nchw_ops(&g), 0);
    same_results(&before, &g);
}

/// Node named `name`.
fn named(g: &Graph, name: &str) -> kiln_ir::NodeId {
    g.node_ids()
        .into_iter()
        .find(|&id| g.node(id).name == name)
        .unwrap_or_else(|| panic!("no node {name:?}"))
}

fn out_ty(g: &Graph, name: &str) -> TensorType {
    g.node(named(g, name)).outputs[0].ty.clone()
}

/// concat(skip, conv(x)) -> conv, with `skip` channels-first (here a graph input; in a detector,
/// an upsampled map).
fn hoist() -> Graph {
    let mut g = Graph::new("hoist");
    let x = g.add_input("x", TensorType::new(DType::F32, &[1, 2, 4, 4]));
    let skip = g.add_input("skip", TensorType::new(DType::F32, &[1, 3, 4, 4]));
    let a = conv(&mut g, "conv", x, 3, 3, 1);
    let y = node(&mut g, "concat", Op::Concat(Concat { axis: 1 }), &[skip, a]);
    let y = conv(&mut g, "next", y, 2, 1, 1);
    g.outputs.push(("y".into(), y));
    g
}

#[test]
fn concat_with_a_channels_first_branch_takes_the_transpose_above_it() {
    // One T_fwd of `skip` replaces the conv's T_back and the concat's T_fwd.
    let before = hoist();
    let mut g = before.clone();
    assert!(choose(&mut g, LayoutPolicy::Nhwc));
    insta::assert_snapshot!("hoist_nhwc", text(&g));
    assert_eq!(transposes(&g), 3);
    assert_eq!(
        g.node(named(&g, "concat")).op,
        Op::Concat(Concat { axis: 3 })
    );
    same_results(&before, &g);
}

#[test]
fn a_transpose_back_is_not_duplicated_or_grown() {
    // conv -> relu1 -> reshape -> r1 and conv -> relu2 -> reshape -> r2: moving the T_back below
    // both relus would make two of them; it stays, and the relus stay channels-first.
    let mut before = Graph::new("guards");
    let x = before.add_input("x", TensorType::new(DType::F32, &[1, 2, 3, 3]));
    let y = conv(&mut before, "conv", x, 2, 3, 1);
    for i in 1..=2 {
        let r = unary(&mut before, &format!("relu{i}"), UnaryOp::Relu, y);
        let flat = Op::Reshape(Reshape {
            shape: vec![1, 18],
            allowzero: false,
        });
        let r = node(&mut before, &format!("reshape{i}"), flat, &[r]);
        before.outputs.push((format!("r{i}"), r));
    }
    // gap [1,2,1,1] + a constant [1,2,3,3]: below the add the T_back would be 9 times larger.
    let p = node(&mut before, "gap", global_avg_pool(), &[y]);
    let big = weights(&mut before, "big", &[1, 2, 3, 3], 5);
    let q = binary(&mut before, "grow", BinaryOp::Add, p, big);
    before.outputs.push(("q".into(), q));
    let mut g = before.clone();
    assert!(choose(&mut g, LayoutPolicy::Nhwc));
    // The input's T_fwd and the conv's one T_back; the gap's T_back is a reshape.
    assert_eq!(transposes(&g), 2, "{}", text(&g));
    assert_eq!(
        out_ty(&g, "relu1"),
        TensorType::new(DType::F32, &[1, 2, 3, 3])
    );
    assert_eq!(
        out_ty(&g, "relu2"),
        TensorType::new(DType::F32, &[1, 2, 3, 3])
    );
    let grow = named(&g, "grow");
    assert!(matches!(
        g.node(g.input(grow, 0).unwrap().node).op,
        Op::Reshape(_)
    ));
    assert_eq!(g.input(grow, 1), Some(big));
    same_results(&before, &g);
}

#[test]
fn an_activation_chain_before_a_conv_moves_past_a_kept_transpose() {
    // conv -> reshape -> r, and conv -> relu -> sigmoid -> conv2 -> z: the T_back stays for the
    // reshape, and the chain, which only feeds conv2, goes channels-last with it.
    let mut before = Graph::new("chain");
    let x = before.add_input("x", TensorType::new(DType::F32, &[1, 2, 3, 3]));
    let y = conv(&mut before, "conv", x, 2, 3, 1);
    let flat = Op::Reshape(Reshape {
        shape: vec![1, 18],
        allowzero: false,
    });
    let r = node(&mut before, "reshape", flat, &[y]);
    before.outputs.push(("r".into(), r));
    let z = unary(&mut before, "relu", UnaryOp::Relu, y);
    let z = unary(&mut before, "sigmoid", UnaryOp::Sigmoid, z);
    let z = conv(&mut before, "conv2", z, 2, 1, 1);
    before.outputs.push(("z".into(), z));
    let mut g = before.clone();
    assert!(choose(&mut g, LayoutPolicy::Nhwc));
    assert_eq!(transposes(&g), 3, "{}", text(&g));
    let nhwc = TensorType::new(DType::F32, &[1, 3, 3, 2]);
    assert_eq!(out_ty(&g, "relu"), nhwc);
    assert_eq!(out_ty(&g, "sigmoid"), nhwc);
    same_results(&before, &g);
}

/// Two 3x3 convs of 64 channels on 56x56 after a 7x7 stem, as in ResNet-18's first stage.
fn resnet_stage() -> Graph {
    let mut g = Graph::new("resnet_stage");
    let x = g.add_input("x", TensorType::new(DType::F32, &[1, 3, 56, 56]));
    let s = conv_post(&mut g, "stem", x, 64, 7, 1);
    let a = conv_post(&mut g, "a", s, 64, 3, 1);
    let b = conv(&mut g, "b", a, 64, 3, 1);
    let y = binary(&mut g, "skip", BinaryOp::Add, b, s);
    let y = unary(&mut g, "relu", UnaryOp::Relu, y);
    g.outputs.push(("y".into(), y));
    g
}

#[test]
fn auto_weighs_winograd_only_when_the_backend_uses_it() {
    // With Winograd, the 3x3 convs run 2.5x faster channels-first (NHWC_SPEEDUP 0.4): stay NCHW.
    // Without it they are im2col GEMMs, 1.07x faster channels-last: the stage switches.
    let before = resnet_stage();
    let mut g = before.clone();
    let pass = ChooseLayout {
        policy: LayoutPolicy::Auto,
        winograd: true,
    };
    assert!(!pass.run(&mut g, &mut Fuel::unlimited()).unwrap());
    assert_eq!(text(&g), text(&before));
    let pass = ChooseLayout {
        policy: LayoutPolicy::Auto,
        winograd: false,
    };
    assert!(pass.run(&mut g, &mut Fuel::unlimited()).unwrap());
    verify(&g).unwrap_or_else(|e| panic!("{e}\n{}", text(&g)));
    assert_eq!(
        text(&g).matches("layout=\"nhwc\"").count(),
        3,
        "{}",
        text(&g)
    );
    // The pipeline passes its option through.
    let opts = PipelineOptions {
        winograd: false,
        ..PipelineOptions::default()
    };
    let mut p = before.clone();
    Driver::default()
        .run(&mut p, &pipeline_with(&opts))
        .unwrap();
    assert!(text(&p).contains("layout=\"nhwc\""), "{}", text(&p));
    let mut p = before.clone();
    Driver::default().run(&mut p, &pipeline()).unwrap();
    assert!(!text(&p).contains("layout=\"nhwc\""), "{}", text(&p));
}

#[test]
fn policy_names_parse() {
    for p in [LayoutPolicy::Auto, LayoutPolicy::Nchw, LayoutPolicy::Nhwc] {
        assert_eq!(p.name().parse::<LayoutPolicy>(), Ok(p));
        assert_eq!(p.to_string(), p.name());
    }
    assert_eq!("NHWC".parse::<LayoutPolicy>(), Ok(LayoutPolicy::Nhwc));
    assert!("blocked".parse::<LayoutPolicy>().is_err());
    assert_eq!(LayoutPolicy::default(), LayoutPolicy::Auto);
    assert_eq!(PipelineOptions::default().layout, LayoutPolicy::Auto);
    assert!(PipelineOptions::default().winograd);
}

#[test]
fn pipeline_runs_it_between_the_fusion_passes_for_every_policy() {
    let names = |p: Vec<Box<dyn Pass>>| p.iter().map(|p| p.name()).collect::<Vec<_>>();
    let default = names(pipeline());
    let at = |n: &str| default.iter().position(|&x| x == n).unwrap();
    assert!(at("fuse-activation") < at("choose-layout"), "{default:?}");
    assert!(at("choose-layout") < at("fuse-elementwise"), "{default:?}");
    for layout in [LayoutPolicy::Auto, LayoutPolicy::Nchw, LayoutPolicy::Nhwc] {
        assert_eq!(
            names(pipeline_with(&PipelineOptions {
                layout,
                ..PipelineOptions::default()
            })),
            default,
            "{layout}"
        );
    }
}

#[test]
fn whole_pipeline_fuses_the_moved_elementwise_ops() {
    // After the pipeline the per-channel mul/add/sub/div chain of `per_channel` is one fused_ew,
    // channels-last.
    let before = per_channel();
    let mut g = before.clone();
    let driver = Driver {
        verify: true,
        ..Driver::default()
    };
    let opts = PipelineOptions {
        layout: LayoutPolicy::Nhwc,
        ..PipelineOptions::default()
    };
    driver.run(&mut g, &pipeline_with(&opts)).unwrap();
    let fused: Vec<_> = g
        .node_ids()
        .into_iter()
        .filter(|&id| matches!(g.node(id).op, Op::FusedEw(_)))
        .collect();
    assert_eq!(fused.len(), 1, "{}", text(&g));
    assert_eq!(
        g.node(fused[0]).outputs[0].ty,
        TensorType::new(DType::F32, &[1, 3, 2, 3])
    );
    assert_eq!(transposes(&g), 2);
    same_results(&before, &g);
}

/// Imports `path` and runs the whole pipeline with `layout`, verifying after every pass.
fn optimized(path: &std::path::Path, layout: LayoutPolicy) -> Graph {
    let opts = kiln_frontend::ImportOptions::default();
    let mut g = kiln_frontend::import_file(path, &opts)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .graph;
    let driver = Driver {
        verify: true,
        ..Driver::default()
    };
    driver
        .run(
            &mut g,
            &pipeline_with(&PipelineOptions {
                layout,
                ..PipelineOptions::default()
            }),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    g
}

#[test]
fn small_test_models_compute_the_same_channels_last() {
    // The exporter-made models of tests/models through the frontend and the whole pipeline.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/models");
    for name in ["cnn", "legacy_cnn", "mlp", "ops_zoo", "mixed_encodings"] {
        let path = dir.join(format!("{name}.onnx"));
        let (nchw, nhwc) = (
            optimized(&path, LayoutPolicy::Nchw),
            optimized(&path, LayoutPolicy::Nhwc),
        );
        let ins = sample_inputs(&nchw);
        let want = interpret(&nchw, &ins).unwrap();
        assert_eq!(interpret(&nhwc, &ins).unwrap(), want, "{name}");
        if name == "cnn" {
            // A 1-channel input: its T_fwd is a reshape, and nothing is left to transpose.
            assert_eq!(nchw_ops(&nhwc), 0);
            assert_eq!(transposes(&nhwc), 0, "{}", text(&nhwc));
        }
    }
}

/// The CNNs of build/families through the frontend and the whole pipeline, channels-first and
/// channels-last: the same outputs on a pseudo-random input, and how many transposes are left.
/// Slow (the reference interpreter runs every conv): only with `KILN_LONG=1`, best in release:
///
/// `KILN_LONG=1 cargo test --release -p kiln-passes --test layout -- --nocapture families`
#[test]
fn families_compute_the_same_channels_last() {
    if std::env::var("KILN_LONG").as_deref() != Ok("1") {
        eprintln!("skipped: set KILN_LONG=1");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/families");
    let only = std::env::var("KILN_FAMILIES").ok();
    let mut ran = 0;
    for name in [
        "resnet18",
        "mobilenet_v2",
        "squeezenet1_1",
        "shufflenet_v2_x1_0",
        "efficientnet_b0",
        "yolo_style",
        "legacy_cnn_opset9",
        "legacy_cnn_opset11",
    ] {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|n| n == name))
        {
            continue;
        }
        let path = dir.join(format!("{name}.onnx"));
        if !path.exists() {
            eprintln!("{name}: {} missing, skipped", path.display());
            continue;
        }
        let (nchw, nhwc) = (
            optimized(&path, LayoutPolicy::Nchw),
            optimized(&path, LayoutPolicy::Nhwc),
        );
        let ins = sample_inputs(&nchw);
        let want = interpret(&nchw, &ins).unwrap();
        let got = interpret(&nhwc, &ins).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        for (a, b) in got.iter().zip(&want) {
            assert_eq!(a.ty(), b.ty(), "{name}");
            let worst = a
                .to_f64_vec()
                .iter()
                .zip(b.to_f64_vec())
                .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
                .fold(0.0, f64::max);
            assert!(worst <= 1e-5, "{name}: differs by {worst}");
        }
        let reshapes = |g: &Graph| count(g, |op| matches!(op, Op::Reshape(_)));
        eprintln!(
            "{name}: {} of {} conv/pool nodes channels-last; transposes {} -> {}, reshapes {} -> {}",
            count(&nhwc, |op| matches!(op, Op::Conv(_) | Op::Pool(_) | Op::GlobalPool(_)))
                - nchw_ops(&nhwc),
            count(&nchw, |op| matches!(op, Op::Conv(_) | Op::Pool(_) | Op::GlobalPool(_))),
            transposes(&nchw),
            transposes(&nhwc),
            reshapes(&nchw),
            reshapes(&nhwc),
        );
        ran += 1;
    }
    assert!(
        ran > 0 || only.is_some(),
        "no model of build/families found"
    );
}
