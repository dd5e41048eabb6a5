//! The structural passes (fold-batchnorm, fold-pad, matmul-to-gemm, simplify-layout): before/after
//! snapshots on small graphs, hand-computed folded constants, and a numerical check that runs the
//! reference interpreter on the graph before and after each pass with the same pseudo-random inputs.

use kiln_ir::ops::{
    BatchNorm, BinaryOp, Conv, ConvTranspose, Flatten, Gemm, Movement, Pad, PadMode, Pool,
    PoolKind, Reshape, Squeeze, Transpose, UnaryOp, Unsqueeze,
};
use kiln_ir::{
    interpret, print, verify, DType, Graph, Op, PrintOptions, Tensor, TensorType, Value,
};
use kiln_passes::{
    pipeline, Driver, FoldBatchNorm, FoldPad, Fuel, MatMulToGemm, Pass, SimplifyLayout,
};

// ---- helpers ----

fn text(g: &Graph) -> String {
    print(g, PrintOptions::default())
}

/// Deterministic values in [-1, 1) from a 64-bit LCG (Knuth's MMIX constants).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn rand(seed: u64, shape: &[usize]) -> Tensor {
    Tensor::from_f32(shape.to_vec(), &values(seed, shape.iter().product()))
}

/// Values in [lo, lo + 1): for variances, which must stay positive.
fn rand_pos(seed: u64, shape: &[usize], lo: f32) -> Tensor {
    let v: Vec<f32> = values(seed, shape.iter().product())
        .iter()
        .map(|x| lo + (x + 1.0) / 2.0)
        .collect();
    Tensor::from_f32(shape.to_vec(), &v)
}

fn input(g: &mut Graph, name: &str, dims: &[usize]) -> Value {
    g.add_input(name, TensorType::new(DType::F32, dims))
}

fn node(g: &mut Graph, name: &str, op: Op, ins: &[Option<Value>]) -> Value {
    g.add_node(name, op, ins, &[name]).unwrap()[0]
}

fn conv(k: &[usize], pads: &[usize]) -> Op {
    Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: k.to_vec(),
        strides: vec![1; k.len()],
        dilations: vec![1; k.len()],
        pads: pads.to_vec(),
        group: 1,
        post: vec![],
    })
}

fn pool(kind: PoolKind, k: &[usize], strides: &[usize], pads: &[usize], cip: bool) -> Op {
    Op::Pool(Pool {
        layout: kiln_ir::ops::Layout::Nchw,
        kind,
        kernel_shape: k.to_vec(),
        strides: strides.to_vec(),
        pads: pads.to_vec(),
        dilations: vec![1; k.len()],
        ceil_mode: false,
        count_include_pad: cip,
    })
}

fn pad(pads: &[i64]) -> Op {
    Op::Movement(Movement::Pad(Pad {
        pads: pads.to_vec(),
        mode: PadMode::Constant,
    }))
}

fn gemm(alpha: f32, beta: f32, trans_b: bool) -> Op {
    Op::Gemm(Gemm {
        alpha,
        beta,
        trans_a: false,
        trans_b,
        post: vec![],
    })
}

fn reshape(shape: &[i64]) -> Op {
    Op::Reshape(Reshape {
        shape: shape.to_vec(),
        allowzero: false,
    })
}

fn transpose(perm: &[usize]) -> Op {
    Op::Transpose(Transpose {
        perm: perm.to_vec(),
    })
}

/// A batch norm over `c` channels with pseudo-random statistics (positive variance).
fn batch_norm(g: &mut Graph, name: &str, x: Value, c: usize, seed: u64) -> Value {
    let scale = g.add_const(format!("{name}.scale"), rand(seed, &[c]));
    let beta = g.add_const(format!("{name}.bias"), rand(seed + 1, &[c]));
    let mean = g.add_const(format!("{name}.mean"), rand(seed + 2, &[c]));
    let var = g.add_const(format!("{name}.var"), rand_pos(seed + 3, &[c], 0.25));
    node(
        g,
        name,
        Op::BatchNorm(BatchNorm { epsilon: 1e-5 }),
        &[Some(x), Some(scale), Some(beta), Some(mean), Some(var)],
    )
}

/// Pseudo-random inputs of the graph's input types.
fn inputs_for(g: &Graph) -> Vec<Tensor> {
    g.inputs
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let dims = g.node(id).outputs[0].ty.dims().unwrap();
            rand(1000 + i as u64, &dims)
        })
        .collect()
}

/// Interprets both graphs on the same inputs and checks every output matches: same type, and each
/// element within 1e-5 of the reference relative to the output's magnitude (folding constants rounds
/// them to f32 once, an error of about 6e-8 relative per weight).
fn assert_same_results(before: &Graph, after: &Graph) {
    let ins = inputs_for(before);
    let want = interpret(before, &ins).unwrap();
    let got = interpret(after, &ins).unwrap();
    assert_eq!(want.len(), got.len());
    for (o, (w, h)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w.ty(), h.ty(), "output {o} type");
        let (wv, hv) = (w.to_f64_vec(), h.to_f64_vec());
        let scale = wv
            .iter()
            .filter(|v| v.is_finite())
            .fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (a, b)) in wv.iter().zip(&hv).enumerate() {
            // Equal covers infinities (max pools of -inf padding); NaN must stay NaN.
            let same = a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-5 * scale;
            assert!(same, "output {o} element {i}: before {a}, after {b}");
        }
    }
}

/// Runs one pass with unlimited fuel on a copy of `g`; checks the result verifies and computes the same
/// outputs. Returns the rewritten graph and whether the pass reported a change.
fn run(pass: &dyn Pass, g: &Graph) -> (Graph, bool) {
    let mut after = g.clone();
    let changed = pass.run(&mut after, &mut Fuel::unlimited()).unwrap();
    verify(&after).unwrap_or_else(|e| panic!("{e}\n{}", text(&after)));
    assert_same_results(g, &after);
    (after, changed)
}

/// Op names of the live non-constant, non-input nodes, in topological order.
fn ops(g: &Graph) -> Vec<&'static str> {
    g.topo_order()
        .unwrap()
        .into_iter()
        .map(|id| g.node(id).op.name())
        .filter(|n| *n != "const" && *n != "input")
        .collect()
}

/// The ops a graph computes once dead nodes are gone (what `dce` would leave).
fn live_ops(g: &Graph) -> Vec<&'static str> {
    let mut g = g.clone();
    kiln_passes::DeadNodes
        .run(&mut g, &mut Fuel::unlimited())
        .unwrap();
    ops(&g)
}

fn find(g: &Graph, name: &str) -> kiln_ir::NodeId {
    g.node_ids()
        .into_iter()
        .find(|&id| g.node(id).name == name)
        .unwrap_or_else(|| panic!("no node {name:?} in\n{}", text(g)))
}

fn const_input(g: &Graph, node: &str, slot: usize) -> Vec<f32> {
    let id = find(g, node);
    g.const_value(g.input(id, slot).unwrap())
        .unwrap()
        .to_f32_vec()
}

// ---- fold-batchnorm ----

/// 1x1 conv with weights [2, 3] and no bias, then a batch norm whose folded constants are exact:
/// eps = 1, var = [3, 0] give s = [1/2, 2]; W' = [2 * 1/2, 3 * 2] = [1, 6];
/// b' = beta - mean * s = [0.5 - 1 * 0.5, -1 - 0] = [0, -1].
fn tiny_conv_bn() -> Graph {
    let mut g = Graph::new("conv_bn");
    let x = input(&mut g, "x", &[1, 1, 2, 2]);
    let w = g.add_const("w", Tensor::from_f32(vec![2, 1, 1, 1], &[2.0, 3.0]));
    let y = node(
        &mut g,
        "conv",
        conv(&[1, 1], &[0, 0, 0, 0]),
        &[Some(x), Some(w)],
    );
    let scale = g.add_const("bn.scale", Tensor::from_f32(vec![2], &[1.0, 2.0]));
    let beta = g.add_const("bn.bias", Tensor::from_f32(vec![2], &[0.5, -1.0]));
    let mean = g.add_const("bn.mean", Tensor::from_f32(vec![2], &[1.0, 0.0]));
    let var = g.add_const("bn.var", Tensor::from_f32(vec![2], &[3.0, 0.0]));
    let z = node(
        &mut g,
        "bn",
        Op::BatchNorm(BatchNorm { epsilon: 1.0 }),
        &[Some(y), Some(scale), Some(beta), Some(mean), Some(var)],
    );
    g.outputs.push(("z".into(), z));
    g
}

#[test]
fn fold_batchnorm_into_conv_hand_computed() {
    let g = tiny_conv_bn();
    let (after, changed) = run(&FoldBatchNorm, &g);
    assert!(changed);
    insta::assert_snapshot!("fold_bn_conv_before", text(&g));
    insta::assert_snapshot!("fold_bn_conv_after", text(&after));
    assert_eq!(live_ops(&after), ["conv"]);
    // The conv carries the batch norm's name.
    assert_eq!(const_input(&after, "bn", 1), [1.0, 6.0]);
    assert_eq!(const_input(&after, "bn", 2), [0.0, -1.0]);
    // And computes, for x = [1, 2, 3, 4]: channel 0 = x, channel 1 = 6x - 1.
    let out = interpret(
        &after,
        &[Tensor::from_f32(vec![1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0])],
    )
    .unwrap();
    assert_eq!(
        out[0].to_f32_vec(),
        [1.0, 2.0, 3.0, 4.0, 5.0, 11.0, 17.0, 23.0]
    );
}

#[test]
fn fold_batchnorm_into_conv_with_bias_random() {
    let mut g = Graph::new("conv_bn");
    let x = input(&mut g, "x", &[2, 3, 6, 5]);
    let w = g.add_const("w", rand(1, &[4, 3, 3, 3]));
    let b = g.add_const("b", rand(2, &[4]));
    let y = node(
        &mut g,
        "conv",
        conv(&[3, 3], &[1, 1, 1, 1]),
        &[Some(x), Some(w), Some(b)],
    );
    let z = batch_norm(&mut g, "bn", y, 4, 10);
    let r = node(&mut g, "relu", Op::Unary(UnaryOp::Relu), &[Some(z)]);
    g.outputs.push(("r".into(), r));
    let (after, changed) = run(&FoldBatchNorm, &g);
    assert!(changed);
    assert_eq!(live_ops(&after), ["conv", "relu"]);
}

#[test]
fn fold_batchnorm_into_grouped_conv_transpose() {
    // Weights [C=4, M/g=3, 2, 2] with 2 groups: 6 output channels.
    let mut g = Graph::new("convt_bn");
    let x = input(&mut g, "x", &[1, 4, 3, 3]);
    let w = g.add_const("w", rand(3, &[4, 3, 2, 2]));
    let y = node(
        &mut g,
        "convt",
        Op::ConvTranspose(ConvTranspose {
            kernel_shape: vec![2, 2],
            strides: vec![2, 2],
            dilations: vec![1, 1],
            pads_begin: vec![0, 0],
            output: vec![6, 6],
            group: 2,
        }),
        &[Some(x), Some(w)],
    );
    let z = batch_norm(&mut g, "bn", y, 6, 20);
    g.outputs.push(("z".into(), z));
    let (after, changed) = run(&FoldBatchNorm, &g);
    assert!(changed);
    assert_eq!(live_ops(&after), ["conv_transpose"]);
}

#[test]
fn fold_batchnorm_into_gemm() {
    // Every C layout (absent, scalar, [N], [M, 1], [M, N]), B stored both ways, alpha and beta not 1.
    let cs: [Option<Vec<usize>>; 5] = [
        None,
        Some(vec![]),
        Some(vec![4]),
        Some(vec![3, 1]),
        Some(vec![3, 4]),
    ];
    for (ci, c_shape) in cs.iter().enumerate() {
        for trans_b in [false, true] {
            let mut g = Graph::new("gemm_bn");
            let a = input(&mut g, "a", &[3, 5]);
            let b_dims = if trans_b { [4, 5] } else { [5, 4] };
            let b = g.add_const("b", rand(4, &b_dims));
            let c = c_shape
                .as_ref()
                .map(|s| g.add_const("c", rand(5 + ci as u64, s)));
            let y = node(
                &mut g,
                "gemm",
                gemm(0.5, 2.0, trans_b),
                &[Some(a), Some(b), c],
            );
            let z = batch_norm(&mut g, "bn", y, 4, 30);
            g.outputs.push(("z".into(), z));
            let (after, changed) = run(&FoldBatchNorm, &g);
            assert!(changed, "C {c_shape:?}, trans_b {trans_b}");
            assert_eq!(live_ops(&after), ["gemm"]);
            if ci == 2 && trans_b {
                insta::assert_snapshot!("fold_bn_gemm_after", text(&after));
            }
        }
    }
}

#[test]
fn fold_batchnorm_leaves_what_it_cannot_fold() {
    // Conv output read twice; conv weights not constant; batch norm after a relu; an f32 conv whose
    // folded scale would be infinite (var + eps = 0).
    let mut g = Graph::new("no_fold");
    let x = input(&mut g, "x", &[1, 2, 4, 4]);
    let wx = input(&mut g, "wx", &[2, 2, 1, 1]);
    let w = g.add_const("w", rand(6, &[2, 2, 1, 1]));
    let y1 = node(&mut g, "conv1", conv(&[1, 1], &[0; 4]), &[Some(x), Some(w)]);
    let z1 = batch_norm(&mut g, "bn1", y1, 2, 40);
    let y2 = node(
        &mut g,
        "conv2",
        conv(&[1, 1], &[0; 4]),
        &[Some(x), Some(wx)],
    );
    let z2 = batch_norm(&mut g, "bn2", y2, 2, 50);
    let r = node(&mut g, "relu", Op::Unary(UnaryOp::Relu), &[Some(x)]);
    let z3 = batch_norm(&mut g, "bn3", r, 2, 60);
    let y4 = node(&mut g, "conv4", conv(&[1, 1], &[0; 4]), &[Some(x), Some(w)]);
    let ones = g.add_const("ones", Tensor::from_f32(vec![2], &[1.0, 1.0]));
    let zeros = g.add_const("zeros", Tensor::from_f32(vec![2], &[0.0, 0.0]));
    let z4 = node(
        &mut g,
        "bn4",
        Op::BatchNorm(BatchNorm { epsilon: 0.0 }),
        &[Some(y4), Some(ones), Some(zeros), Some(zeros), Some(zeros)],
    );
    for (n, v) in [("y1", y1), ("z1", z1), ("z2", z2), ("z3", z3), ("z4", z4)] {
        g.outputs.push((n.into(), v));
    }
    let mut after = g.clone();
    let changed = FoldBatchNorm
        .run(&mut after, &mut Fuel::unlimited())
        .unwrap();
    assert!(!changed);
    assert_eq!(text(&after), text(&g));
}

// ---- fold-pad ----

#[test]
fn fold_pad_into_conv() {
    let mut g = Graph::new("pad_conv");
    let x = input(&mut g, "x", &[1, 2, 5, 5]);
    let p = node(&mut g, "pad", pad(&[0, 0, 1, 2, 0, 0, 2, 1]), &[Some(x)]);
    let w = g.add_const("w", rand(7, &[3, 2, 3, 3]));
    let y = node(
        &mut g,
        "conv",
        conv(&[3, 3], &[1, 1, 1, 1]),
        &[Some(p), Some(w)],
    );
    g.outputs.push(("y".into(), y));
    let (after, changed) = run(&FoldPad, &g);
    assert!(changed);
    insta::assert_snapshot!("fold_pad_conv_before", text(&g));
    insta::assert_snapshot!("fold_pad_conv_after", text(&after));
    assert_eq!(live_ops(&after), ["conv"]);
    let Op::Conv(c) = &after.node(find(&after, "conv")).op else {
        panic!()
    };
    // Begins [1 + 1, 1 + 2], ends [1 + 2, 1 + 1].
    assert_eq!(c.pads, [2, 3, 3, 2]);
}

#[test]
fn fold_pad_keeps_pad_for_other_readers() {
    // The pad also feeds a relu and is a graph output: both conv readers fold, the pad stays.
    let mut g = Graph::new("pad_shared");
    let x = input(&mut g, "x", &[1, 1, 4, 4]);
    let zero = g.add_const("zero", Tensor::from_f32(vec![], &[0.0]));
    let p = node(
        &mut g,
        "pad",
        pad(&[0, 0, 1, 1, 0, 0, 1, 1]),
        &[Some(x), Some(zero)],
    );
    let w = g.add_const("w", rand(8, &[2, 1, 3, 3]));
    let y1 = node(&mut g, "conv1", conv(&[3, 3], &[0; 4]), &[Some(p), Some(w)]);
    let y2 = node(&mut g, "conv2", conv(&[3, 3], &[0; 4]), &[Some(p), Some(w)]);
    let r = node(&mut g, "relu", Op::Unary(UnaryOp::Relu), &[Some(p)]);
    for (n, v) in [("y1", y1), ("y2", y2), ("r", r), ("p", p)] {
        g.outputs.push((n.into(), v));
    }
    let (after, changed) = run(&FoldPad, &g);
    assert!(changed);
    insta::assert_snapshot!("fold_pad_shared_after", text(&after));
    let conv1 = find(&after, "conv1");
    assert_eq!(after.input(conv1, 0).unwrap().node, after.inputs[0]);
    assert!(ops(&after).contains(&"pad"));
}

#[test]
fn fold_pad_into_pools() {
    let neg_inf = Tensor::from_f32(vec![1], &[f32::NEG_INFINITY]);
    let spatial = [0, 0, 1, 0, 0, 0, 1, 1];
    // (pool, fill, folds, pool pads after)
    let cases: Vec<(Op, Option<Tensor>, bool, Vec<usize>)> = vec![
        // Average counting padding: any own padding adds up.
        (
            pool(PoolKind::Avg, &[3, 3], &[1, 1], &[1, 1, 1, 1], true),
            None,
            true,
            vec![2, 1, 2, 2],
        ),
        // Average without own padding: becomes one that counts its (the pad's) padding.
        (
            pool(PoolKind::Avg, &[3, 3], &[2, 2], &[0; 4], false),
            None,
            true,
            vec![1, 0, 1, 1],
        ),
        // Average that does not count its own padding but would have to count the pad's: no.
        (
            pool(PoolKind::Avg, &[3, 3], &[1, 1], &[1, 1, 1, 1], false),
            None,
            false,
            vec![],
        ),
        // Max with -inf fill.
        (
            pool(PoolKind::Max, &[2, 2], &[1, 1], &[0; 4], false),
            Some(neg_inf.clone()),
            true,
            vec![1, 0, 1, 1],
        ),
        // Max with a zero fill: the zeros can win.
        (
            pool(PoolKind::Max, &[2, 2], &[1, 1], &[0; 4], false),
            None,
            false,
            vec![],
        ),
        // Max whose folded pads would reach the window size: a pool rejects that, the pad did not.
        (
            pool(PoolKind::Max, &[2, 2], &[1, 1], &[1, 1, 1, 1], false),
            Some(neg_inf.clone()),
            false,
            vec![],
        ),
    ];
    for (i, (op, fill, folds, pads_after)) in cases.into_iter().enumerate() {
        let mut g = Graph::new("pad_pool");
        let x = input(&mut g, "x", &[1, 2, 5, 6]);
        let fill = fill.map(|t| g.add_const("fill", t));
        let p = node(&mut g, "pad", pad(&spatial), &[Some(x), fill]);
        let y = node(&mut g, "pool", op, &[Some(p)]);
        g.outputs.push(("y".into(), y));
        let (after, changed) = run(&FoldPad, &g);
        assert_eq!(changed, folds, "case {i}:\n{}", text(&after));
        if folds {
            assert_eq!(
                live_ops(&after),
                [after.node(find(&after, "pool")).op.name()]
            );
            let Op::Pool(p) = &after.node(find(&after, "pool")).op else {
                panic!()
            };
            assert_eq!(p.pads, pads_after, "case {i}");
            assert!(p.kind == PoolKind::Max || p.count_include_pad, "case {i}");
        } else {
            assert_eq!(text(&after), text(&g), "case {i}");
        }
        if i == 1 {
            insta::assert_snapshot!("fold_pad_avg_pool_after", text(&after));
        }
    }
}

#[test]
fn fold_pad_leaves_channel_padding_and_crops() {
    // (pads, channels after padding)
    for (pads, c) in [
        ([0, 1, 0, 0, 0, 0, 0, 0], 3),
        ([0, 0, -1, 0, 0, 0, 1, 0], 2),
    ] {
        let mut g = Graph::new("pad_no");
        let x = input(&mut g, "x", &[1, 2, 4, 4]);
        let p = node(&mut g, "pad", pad(&pads), &[Some(x)]);
        let w = g.add_const("w", rand(9, &[2, c, 1, 1]));
        let y = node(&mut g, "conv", conv(&[1, 1], &[0; 4]), &[Some(p), Some(w)]);
        g.outputs.push(("y".into(), y));
        let mut after = g.clone();
        assert!(!FoldPad.run(&mut after, &mut Fuel::unlimited()).unwrap());
    }
}

#[test]
fn fold_pad_drops_empty_pad() {
    // The opset-9 legacy exporter emits a constant pad of all zeros before an average pool.
    let mut g = Graph::new("pad_empty");
    let x = input(&mut g, "x", &[1, 2, 4, 4]);
    let p = node(&mut g, "pad", pad(&[0; 8]), &[Some(x)]);
    let y = node(
        &mut g,
        "pool",
        pool(PoolKind::Avg, &[2, 2], &[2, 2], &[0; 4], false),
        &[Some(p)],
    );
    g.outputs.push(("y".into(), y));
    let (after, changed) = run(&FoldPad, &g);
    assert!(changed);
    assert_eq!(ops(&after), ["avg_pool"]);
}

// ---- matmul-to-gemm ----

/// `x[2,3,4] @ W[4,5] + b[5]`, with the bias as the add's first operand (as PyTorch exports it).
fn linear_3d() -> Graph {
    let mut g = Graph::new("linear");
    let x = input(&mut g, "x", &[2, 3, 4]);
    let w = g.add_const("w", rand(11, &[4, 5]));
    let b = g.add_const("b", Tensor::from_f32(vec![5], &[0.5, -1.0, 2.0, 0.0, 1.5]));
    let y = node(&mut g, "/fc/MatMul", Op::MatMul, &[Some(x), Some(w)]);
    let z = node(
        &mut g,
        "/fc/Add",
        Op::Binary(BinaryOp::Add),
        &[Some(b), Some(y)],
    );
    g.outputs.push(("z".into(), z));
    g
}

#[test]
fn matmul_to_gemm_3d_with_bias() {
    let g = linear_3d();
    let (after, changed) = run(&MatMulToGemm::default(), &g);
    assert!(changed);
    insta::assert_snapshot!("matmul_gemm_3d_before", text(&g));
    insta::assert_snapshot!("matmul_gemm_3d_after", text(&after));
    assert_eq!(live_ops(&after), ["reshape", "gemm", "reshape"]);
    // The bias is the gemm's C, unchanged.
    assert_eq!(
        const_input(&after, "/fc/MatMul", 2),
        [0.5, -1.0, 2.0, 0.0, 1.5]
    );
}

#[test]
fn matmul_to_gemm_2d_bias_shapes() {
    // A [1, N] bias folds; a scalar-like [1] folds; a bias that varies along M does not.
    for (bias_shape, folds) in [(vec![1, 5], true), (vec![1], true), (vec![3, 1], false)] {
        let mut g = Graph::new("linear2d");
        let x = input(&mut g, "x", &[3, 4]);
        let w = g.add_const("w", rand(12, &[4, 5]));
        let b = g.add_const("b", rand(13, &bias_shape));
        let y = node(&mut g, "mm", Op::MatMul, &[Some(x), Some(w)]);
        let z = node(
            &mut g,
            "add",
            Op::Binary(BinaryOp::Add),
            &[Some(y), Some(b)],
        );
        g.outputs.push(("z".into(), z));
        let (after, changed) = run(&MatMulToGemm::default(), &g);
        assert!(changed);
        let want: &[&str] = if folds { &["gemm"] } else { &["gemm", "add"] };
        assert_eq!(live_ops(&after), want, "bias {bias_shape:?}");
    }
}

#[test]
fn matmul_to_gemm_without_bias_folding_keeps_add() {
    let g = linear_3d();
    let (after, changed) = run(&MatMulToGemm { bias_as_c: false }, &g);
    assert!(changed);
    assert_eq!(live_ops(&after), ["reshape", "gemm", "reshape", "add"]);
}

#[test]
fn matmul_to_gemm_shared_output_keeps_add() {
    let mut g = Graph::new("shared");
    let x = input(&mut g, "x", &[1, 3, 4]);
    let w = g.add_const("w", rand(14, &[4, 2]));
    let b = g.add_const("b", rand(15, &[2]));
    let y = node(&mut g, "mm", Op::MatMul, &[Some(x), Some(w)]);
    let z = node(
        &mut g,
        "add",
        Op::Binary(BinaryOp::Add),
        &[Some(y), Some(b)],
    );
    let t = node(&mut g, "tanh", Op::Unary(UnaryOp::Tanh), &[Some(y)]);
    g.outputs.push(("z".into(), z));
    g.outputs.push(("t".into(), t));
    let (after, changed) = run(&MatMulToGemm::default(), &g);
    assert!(changed);
    assert_eq!(
        live_ops(&after),
        ["reshape", "gemm", "reshape", "add", "tanh"]
    );
}

#[test]
fn matmul_to_gemm_projections_share_flatten() {
    // Q, K, V of one activation: one flattening reshape, three gemms, three reshapes back.
    let mut g = Graph::new("qkv");
    let x = input(&mut g, "x", &[1, 4, 8]);
    for (i, name) in ["q", "k", "v"].into_iter().enumerate() {
        let w = g.add_const(format!("{name}.w"), rand(40 + i as u64, &[8, 8]));
        let y = node(&mut g, name, Op::MatMul, &[Some(x), Some(w)]);
        g.outputs.push((name.into(), y));
    }
    let (after, changed) = run(&MatMulToGemm::default(), &g);
    assert!(changed);
    insta::assert_snapshot!("matmul_gemm_qkv_after", text(&after));
    let mut got = ops(&after);
    got.sort();
    assert_eq!(
        got,
        ["gemm", "gemm", "gemm", "reshape", "reshape", "reshape", "reshape"]
    );
}

#[test]
fn matmul_to_gemm_leaves_other_matmuls() {
    // Activation x activation, a 3-D constant B, a 1-D A, an integer matmul.
    let mut g = Graph::new("no_gemm");
    let x = input(&mut g, "x", &[2, 3, 4]);
    let y = input(&mut g, "y", &[2, 4, 3]);
    let v = input(&mut g, "v", &[4]);
    let w3 = g.add_const("w3", rand(16, &[2, 4, 3]));
    let w2 = g.add_const("w2", rand(17, &[4, 3]));
    let i = g.add_const("i", Tensor::from_i64(DType::I32, vec![2, 2], &[1, 2, 3, 4]));
    let m1 = node(&mut g, "m1", Op::MatMul, &[Some(x), Some(y)]);
    let m2 = node(&mut g, "m2", Op::MatMul, &[Some(x), Some(w3)]);
    let m3 = node(&mut g, "m3", Op::MatMul, &[Some(v), Some(w2)]);
    let m4 = node(&mut g, "m4", Op::MatMul, &[Some(i), Some(i)]);
    for (n, val) in [("m1", m1), ("m2", m2), ("m3", m3), ("m4", m4)] {
        g.outputs.push((n.into(), val));
    }
    let mut after = g.clone();
    assert!(!MatMulToGemm::default()
        .run(&mut after, &mut Fuel::unlimited())
        .unwrap());
    assert_eq!(text(&after), text(&g));
}

// ---- simplify-layout ----

#[test]
fn simplify_transpose_pairs() {
    let mut g = Graph::new("transposes");
    let x = input(&mut g, "x", &[2, 3, 4]);
    // Composes to [1, 2, 0] applied after [2, 0, 1]: identity.
    let t1 = node(&mut g, "t1", transpose(&[2, 0, 1]), &[Some(x)]);
    let t2 = node(&mut g, "t2", transpose(&[1, 2, 0]), &[Some(t1)]);
    // Composes to a real permutation: out axis i = x axis [1, 0, 2][[0, 2, 1][i]] = [1, 2, 0].
    let t3 = node(&mut g, "t3", transpose(&[1, 0, 2]), &[Some(x)]);
    let t4 = node(&mut g, "t4", transpose(&[0, 2, 1]), &[Some(t3)]);
    let t5 = node(&mut g, "t5", transpose(&[0, 1, 2]), &[Some(x)]);
    let r = node(&mut g, "relu", Op::Unary(UnaryOp::Relu), &[Some(t2)]);
    for (n, v) in [("r", r), ("t4", t4), ("t5", t5)] {
        g.outputs.push((n.into(), v));
    }
    let (after, changed) = run(&SimplifyLayout, &g);
    assert!(changed);
    insta::assert_snapshot!("simplify_transposes_before", text(&g));
    insta::assert_snapshot!("simplify_transposes_after", text(&after));
    assert_eq!(ops(&after), ["transpose", "relu"]);
    let Op::Transpose(t) = &after.node(find(&after, "t4")).op else {
        panic!()
    };
    assert_eq!(t.perm, [1, 2, 0]);
}

#[test]
fn simplify_transpose_with_shared_inner() {
    // The inner transpose has another reader: it stays, the outer one reads x directly.
    let mut g = Graph::new("shared_transpose");
    let x = input(&mut g, "x", &[2, 3, 4, 5]);
    let t1 = node(&mut g, "t1", transpose(&[0, 2, 1, 3]), &[Some(x)]);
    let t2 = node(&mut g, "t2", transpose(&[0, 1, 3, 2]), &[Some(t1)]);
    let r = node(&mut g, "relu", Op::Unary(UnaryOp::Relu), &[Some(t1)]);
    g.outputs.push(("t2".into(), t2));
    g.outputs.push(("r".into(), r));
    let (after, changed) = run(&SimplifyLayout, &g);
    assert!(changed);
    let t2 = find(&after, "t2");
    assert_eq!(after.input(t2, 0).unwrap().node, after.inputs[0]);
    assert_eq!(ops(&after), ["transpose", "transpose", "relu"]);
}

#[test]
fn simplify_view_chains() {
    let mut g = Graph::new("views");
    let x = input(&mut g, "x", &[2, 3, 4]);
    let a = node(
        &mut g,
        "flatten",
        Op::Flatten(Flatten { axis: 1 }),
        &[Some(x)],
    );
    let b = node(
        &mut g,
        "unsqueeze",
        Op::Unsqueeze(Unsqueeze { axes: vec![0] }),
        &[Some(a)],
    );
    let c = node(&mut g, "reshape", reshape(&[1, 6, 4]), &[Some(b)]);
    let d = node(
        &mut g,
        "squeeze",
        Op::Squeeze(Squeeze { axes: vec![0] }),
        &[Some(c)],
    );
    // A reshape to its input's shape does nothing.
    let e = node(&mut g, "same", reshape(&[6, 4]), &[Some(d)]);
    let r = node(&mut g, "relu", Op::Unary(UnaryOp::Relu), &[Some(e)]);
    g.outputs.push(("r".into(), r));
    let (after, changed) = run(&SimplifyLayout, &g);
    assert!(changed);
    insta::assert_snapshot!("simplify_views_before", text(&g));
    insta::assert_snapshot!("simplify_views_after", text(&after));
    assert_eq!(ops(&after), ["reshape", "relu"]);
}

#[test]
fn simplify_chain_back_to_input_shape_vanishes() {
    let mut g = Graph::new("roundtrip");
    let x = input(&mut g, "x", &[2, 6]);
    let a = node(&mut g, "r1", reshape(&[3, 4]), &[Some(x)]);
    let b = node(&mut g, "r2", reshape(&[2, 6]), &[Some(a)]);
    let r = node(&mut g, "relu", Op::Unary(UnaryOp::Relu), &[Some(b)]);
    g.outputs.push(("r".into(), r));
    let (after, _) = run(&SimplifyLayout, &g);
    assert_eq!(ops(&after), ["relu"]);
}

#[test]
fn simplify_transpose_of_unit_axes_becomes_reshape() {
    let mut g = Graph::new("unit_axes");
    let x = input(&mut g, "x", &[2, 1, 3, 1]);
    // Moves only the size-1 axes: [2, 3] keep their order.
    let t = node(&mut g, "t", transpose(&[1, 0, 3, 2]), &[Some(x)]);
    // Swaps 2 and 3: a real transpose.
    let u = node(&mut g, "u", transpose(&[2, 1, 0, 3]), &[Some(x)]);
    g.outputs.push(("t".into(), t));
    g.outputs.push(("u".into(), u));
    let (after, changed) = run(&SimplifyLayout, &g);
    assert!(changed);
    insta::assert_snapshot!("simplify_unit_transpose_after", text(&after));
    assert_eq!(after.node(find(&after, "t")).op, reshape(&[1, 2, 1, 3]));
    assert_eq!(after.node(find(&after, "u")).op, transpose(&[2, 1, 0, 3]));
}

#[test]
fn simplify_leaves_attention_layout_alone() {
    // BERT's head split: reshape then a real transpose.
    let mut g = Graph::new("heads");
    let x = input(&mut g, "x", &[1, 8, 16]);
    let a = node(&mut g, "reshape", reshape(&[1, 8, 4, 4]), &[Some(x)]);
    let b = node(&mut g, "transpose", transpose(&[0, 2, 1, 3]), &[Some(a)]);
    g.outputs.push(("b".into(), b));
    let mut after = g.clone();
    assert!(!SimplifyLayout
        .run(&mut after, &mut Fuel::unlimited())
        .unwrap());
}

// ---- the passes together ----

/// The structural passes in pipeline order, then `dce`: what the snapshots below freeze (the fusion
/// passes that follow in the full pipeline have their own tests).
fn structural() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(FoldBatchNorm),
        Box::new(FoldPad),
        Box::new(MatMulToGemm::default()),
        Box::new(SimplifyLayout),
        Box::new(kiln_passes::DeadNodes),
    ]
}

/// Runs `passes` with verification after each and checks the results did not change.
fn run_all(g: &Graph, passes: &[Box<dyn Pass>]) -> Graph {
    let mut after = g.clone();
    let driver = Driver {
        verify: true,
        ..Driver::default()
    };
    driver.run(&mut after, passes).unwrap();
    assert_same_results(g, &after);
    after
}

/// A transformer-style linear layer on a 3-D activation followed by the head split: the matmul becomes
/// a gemm and its trailing reshape merges with the head-split reshape.
#[test]
fn pipeline_linear_then_head_split() {
    let mut g = Graph::new("block");
    let x = input(&mut g, "x", &[1, 8, 16]);
    let w = g.add_const("w", rand(21, &[16, 16]));
    let b = g.add_const("b", rand(22, &[16]));
    let y = node(&mut g, "/q/MatMul", Op::MatMul, &[Some(x), Some(w)]);
    let z = node(
        &mut g,
        "/q/Add",
        Op::Binary(BinaryOp::Add),
        &[Some(b), Some(y)],
    );
    let h = node(&mut g, "/Reshape", reshape(&[1, 8, 4, 4]), &[Some(z)]);
    let t = node(&mut g, "/Transpose", transpose(&[0, 2, 1, 3]), &[Some(h)]);
    g.outputs.push(("t".into(), t));
    let after = run_all(&g, &structural());
    insta::assert_snapshot!("pipeline_linear_after", text(&after));
    assert_eq!(ops(&after), ["reshape", "gemm", "reshape", "transpose"]);
    // The full pipeline computes the same too.
    let full = run_all(&g, &pipeline());
    assert!(ops(&full).contains(&"gemm"), "{}", text(&full));
}

#[test]
fn pipeline_conv_bn_with_padding() {
    // Pad -> conv -> batch norm -> relu: the pad and the batch norm fold away.
    let mut g = Graph::new("cnn");
    let x = input(&mut g, "x", &[1, 3, 8, 8]);
    let p = node(&mut g, "pad", pad(&[0, 0, 1, 1, 0, 0, 1, 1]), &[Some(x)]);
    let w = g.add_const("w", rand(31, &[4, 3, 3, 3]));
    let y = node(&mut g, "conv", conv(&[3, 3], &[0; 4]), &[Some(p), Some(w)]);
    let z = batch_norm(&mut g, "bn", y, 4, 70);
    let r = node(&mut g, "relu", Op::Unary(UnaryOp::Relu), &[Some(z)]);
    g.outputs.push(("r".into(), r));
    let after = run_all(&g, &structural());
    assert_eq!(ops(&after), ["conv", "relu"]);
    let full = run_all(&g, &pipeline());
    assert!(!ops(&full).contains(&"pad"), "{}", text(&full));
    assert!(!ops(&full).contains(&"batch_norm"), "{}", text(&full));
}

#[test]
fn structural_passes_respect_fuel() {
    let graphs = [tiny_conv_bn(), linear_3d()];
    let passes: [&dyn Pass; 4] = [
        &FoldBatchNorm,
        &FoldPad,
        &MatMulToGemm::default(),
        &SimplifyLayout,
    ];
    for g in &graphs {
        for p in passes {
            let mut after = g.clone();
            assert!(!p.run(&mut after, &mut Fuel::limited(0)).unwrap());
            assert_eq!(text(&after), text(g), "{}", p.name());
        }
    }
}
