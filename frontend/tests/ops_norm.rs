//! Mappings of the reductions, the softmax family, the normalizations and the transformer blocks:
//! the IR op and attributes each imports to, and for the decomposed ones the values the imported
//! graph computes (through the reference interpreter) against hand-computed ones.

mod common;

use common::*;
use kiln_frontend::builder::{attr, elem, tensor_f32, tensor_i64, ModelBuilder};
use kiln_ir::ops::{ArgReduce, LayerNorm, Reduce, ReduceKind, Softmax};
use kiln_ir::{interpret, DType, Op, Tensor, TensorType};

fn run(m: &kiln_frontend::Model, inputs: &[Tensor]) -> Vec<Tensor> {
    interpret(&m.graph, inputs).unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn close(t: &Tensor, want: &[f64]) {
    let got = t.to_f64_vec();
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "got {got:?}, want {want:?}"
        );
    }
}

#[test]
fn reduce_axes_input_from_opset_13_for_sum_and_18_for_the_rest() {
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[2, 3, 4])
        .initializer(tensor_i64("axes", &[1], &[-1]))
        .node(
            "ReduceSum",
            &["x", "axes"],
            &["y"],
            vec![attr::int("keepdims", 0)],
        )
        // ReduceMean still takes an attribute at opset 13; no axes means all of them.
        .node("ReduceMean", &["x"], &["z"], vec![])
        .output("y", elem::FLOAT, &[2, 3])
        .output("z", elem::FLOAT, &[1, 1, 1]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "y"),
        Op::Reduce(Reduce {
            kind: ReduceKind::Sum,
            axes: vec![2],
            keepdims: false,
        })
    );
    assert_eq!(
        out_op(&m, "z"),
        Op::Reduce(Reduce {
            kind: ReduceKind::Mean,
            axes: vec![0, 1, 2],
            keepdims: true,
        })
    );

    // Opset 18: the axes are an input for every reduction; an empty list with
    // noop_with_empty_axes reduces nothing.
    let mut b = ModelBuilder::new("g").opset("", 18);
    b.input("x", elem::FLOAT, &[2, 3])
        .initializer(tensor_i64("none", &[0], &[]))
        .node(
            "ReduceSumSquare",
            &["x", "none"],
            &["y"],
            vec![attr::int("noop_with_empty_axes", 1)],
        )
        .node("ReduceLogSumExp", &["x", "none"], &["z"], vec![])
        .output("y", elem::FLOAT, &[2, 3])
        .output("z", elem::FLOAT, &[1, 1]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "y"),
        Op::Reduce(Reduce {
            kind: ReduceKind::SumSquare,
            axes: vec![],
            keepdims: true,
        })
    );
    assert_eq!(out_ty(&m, "z"), f32t(&[1, 1]));

    let mut b = ModelBuilder::new("g").opset("", 18);
    b.input("x", elem::FLOAT, &[2, 3])
        .node("ReduceMax", &["x"], &["y"], vec![attr::ints("axes", &[0])])
        .output("y", elem::FLOAT, &[1, 3]);
    assert!(
        err(&b).to_string().contains("input, not an attribute"),
        "{}",
        err(&b)
    );
}

#[test]
fn reduce_axes_computed_at_run_time_are_unsupported() {
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[2, 3])
        .input("axes", elem::INT64, &[1])
        .node("ReduceSum", &["x", "axes"], &["y"], vec![])
        .output("y", elem::FLOAT, &[2, 1]);
    let list = unsupported(&b);
    assert!(list[0].reason.contains("run time"), "{:?}", list);
}

#[test]
fn argmax_defaults_and_i64_output() {
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[2, 3])
        .node("ArgMax", &["x"], &["y"], vec![])
        .node(
            "ArgMin",
            &["x"],
            &["z"],
            vec![
                attr::int("axis", -1),
                attr::int("keepdims", 0),
                attr::int("select_last_index", 1),
            ],
        )
        .output("y", elem::INT64, &[1, 3])
        .output("z", elem::INT64, &[2]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "y"),
        Op::ArgReduce(ArgReduce {
            max: true,
            axis: 0,
            keepdims: true,
            select_last_index: false,
        })
    );
    assert_eq!(out_ty(&m, "z"), TensorType::new(DType::I64, &[2]));
    let Op::ArgReduce(a) = out_op(&m, "z") else {
        panic!("not an arg reduce")
    };
    assert!(!a.max && a.select_last_index && a.axis == 1);
}

#[test]
fn log_softmax_and_hardmax_follow_softmax_axis_rules() {
    // Before opset 13 the input is coerced to 2-D at axis (default 1).
    let mut b = ModelBuilder::new("g").opset("", 11);
    b.input("x", elem::FLOAT, &[2, 3, 4])
        .node("LogSoftmax", &["x"], &["y"], vec![])
        .node("Hardmax", &["x"], &["z"], vec![attr::int("axis", 2)])
        .output("y", elem::FLOAT, &[2, 3, 4])
        .output("z", elem::FLOAT, &[2, 3, 4]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "y"),
        Op::LogSoftmax(Softmax {
            axis: 1,
            flatten: true,
        })
    );
    assert_eq!(
        out_op(&m, "z"),
        Op::Hardmax(Softmax {
            axis: 2,
            flatten: false,
        })
    );
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[2, 3, 4])
        .node("LogSoftmax", &["x"], &["y"], vec![])
        .output("y", elem::FLOAT, &[2, 3, 4]);
    assert_eq!(
        out_op(&ok(&b), "y"),
        Op::LogSoftmax(Softmax {
            axis: 2,
            flatten: false,
        })
    );
}

#[test]
fn layer_norm_fuses_scale_and_bias_and_returns_statistics() {
    let mut b = ModelBuilder::new("g").opset("", 17);
    b.input("x", elem::FLOAT, &[2, 3, 4])
        .initializer(tensor_f32("s", &[3, 4], &[1.0; 12]))
        .initializer(tensor_f32("b", &[1, 3, 4], &[0.5; 12]))
        .node(
            "LayerNormalization",
            &["x", "s", "b"],
            &["y", "mean", "inv"],
            vec![attr::int("axis", 1), attr::float("epsilon", 0.25)],
        )
        .output("y", elem::FLOAT, &[2, 3, 4])
        .output("mean", elem::FLOAT, &[2, 1, 1])
        .output("inv", elem::FLOAT, &[2, 1, 1]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "y"),
        Op::LayerNorm(LayerNorm {
            axis: 1,
            epsilon: 0.25,
        })
    );
    assert_eq!(output(&m, "mean").slot, 1);
    assert_eq!(out_ty(&m, "inv"), f32t(&[2, 1, 1]));
}

#[test]
fn layer_norm_with_a_row_broadcast_scale_applies_it_afterwards() {
    // Scale [2, 1] varies across rows, so it cannot be fused: y = norm(x) * s + b.
    let mut b = ModelBuilder::new("g").opset("", 17);
    b.input("x", elem::FLOAT, &[2, 2])
        .initializer(tensor_f32("s", &[2, 1], &[1.0, 3.0]))
        .initializer(tensor_f32("b", &[2], &[0.0, 1.0]))
        .node(
            "LayerNormalization",
            &["x", "s", "b"],
            &["y"],
            vec![attr::float("epsilon", 0.0)],
        )
        .output("y", elem::FLOAT, &[2, 2]);
    let m = ok(&b);
    assert_eq!(out_op(&m, "y"), Op::Binary(kiln_ir::ops::BinaryOp::Add));
    // Rows [1, 3] and [2, 6] both normalize to [-1, 1]; row 0 is scaled by 1, row 1 by 3.
    let x = Tensor::from_f32(vec![2, 2], &[1.0, 3.0, 2.0, 6.0]);
    let y = run(&m, &[x]).remove(0);
    close(&y, &[-1.0, 2.0, -3.0, 4.0]);
}

#[test]
fn instance_and_group_norm_decompose_to_layer_norm() {
    // Instance norm of one image with 2 channels of 2 pixels: channel 0, [1, 3], normalizes to
    // [-1, 1] and is scaled by 2 (bias 0).
    let mut b = ModelBuilder::new("g").opset("", 22);
    b.input("x", elem::FLOAT, &[1, 2, 2])
        .initializer(tensor_f32("s", &[2], &[2.0, 3.0]))
        .initializer(tensor_f32("b", &[2], &[0.0, 1.0]))
        .node(
            "InstanceNormalization",
            &["x", "s", "b"],
            &["y"],
            vec![attr::float("epsilon", 0.0)],
        )
        .output("y", elem::FLOAT, &[1, 2, 2]);
    let m = ok(&b);
    // Channel 1, [2, 6], normalizes to [-1, 1]: times 3 plus 1.
    let x = Tensor::from_f32(vec![1, 2, 2], &[1.0, 3.0, 2.0, 6.0]);
    close(&run(&m, &[x])[0], &[-2.0, 2.0, -2.0, 4.0]);

    // Group norm, 4 channels in 2 groups of one pixel each: groups [1, 3] and [2, 6] both
    // normalize to [-1, 1]. Opset 21 scales per channel, opset 18 per group.
    let x = Tensor::from_f32(vec![1, 4, 1], &[1.0, 3.0, 2.0, 6.0]);
    for (opset, scale, bias, want) in [
        (
            21,
            vec![1.0, 2.0, 3.0, 4.0],
            vec![0.0, 0.0, 0.0, 1.0],
            [-1.0, 2.0, -3.0, 5.0],
        ),
        (18, vec![2.0, 3.0], vec![1.0, 0.0], [-1.0, 3.0, -3.0, 3.0]),
    ] {
        let n = scale.len() as i64;
        let mut b = ModelBuilder::new("g").opset("", opset);
        b.input("x", elem::FLOAT, &[1, 4, 1])
            .initializer(tensor_f32("s", &[n], &scale))
            .initializer(tensor_f32("b", &[n], &bias))
            .node(
                "GroupNormalization",
                &["x", "s", "b"],
                &["y"],
                vec![attr::int("num_groups", 2), attr::float("epsilon", 0.0)],
            )
            .output("y", elem::FLOAT, &[1, 4, 1]);
        let m = ok(&b);
        close(&run(&m, std::slice::from_ref(&x))[0], &want);
    }
}

#[test]
fn lp_norm_mvn_and_swiglu_values() {
    let mut b = ModelBuilder::new("g").opset("", 22);
    b.input("x", elem::FLOAT, &[2, 2])
        .input("a", elem::FLOAT, &[2])
        .input("c", elem::FLOAT, &[2])
        .node("LpNormalization", &["x"], &["l2"], vec![])
        .node("LpNormalization", &["x"], &["l1"], vec![attr::int("p", 1)])
        .output("l2", elem::FLOAT, &[2, 2])
        .output("l1", elem::FLOAT, &[2, 2]);
    let m = ok(&b);
    // Rows [3, 4] (norm 5, L1 7) and [0, 0] (zero norm gives 0, not NaN).
    let x = Tensor::from_f32(vec![2, 2], &[3.0, 4.0, 0.0, 0.0]);
    let a = Tensor::from_f32(vec![2], &[0.0; 2]);
    let out = run(&m, &[x, a.clone(), a]);
    close(&out[0], &[0.6, 0.8, 0.0, 0.0]);
    close(&out[1], &[3.0 / 7.0, 4.0 / 7.0, 0.0, 0.0]);

    // MVN over axis 1 of rows [1, 3] and [2, 6]: both [-1, 1] (up to the 1e-9 epsilon).
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[2, 2])
        .node(
            "MeanVarianceNormalization",
            &["x"],
            &["y"],
            vec![attr::ints("axes", &[1])],
        )
        .output("y", elem::FLOAT, &[2, 2]);
    let x = Tensor::from_f32(vec![2, 2], &[1.0, 3.0, 2.0, 6.0]);
    close(&run(&ok(&b), &[x])[0], &[-1.0, 1.0, -1.0, 1.0]);

    // SwiGLU(a, b) = a * sigmoid(alpha * a) * b; a = 0 gives 0, a = ln 3 with alpha 1 gives
    // sigmoid(ln 3) = 3/4.
    let mut b = ModelBuilder::new("g").opset("", 28);
    b.input("a", elem::FLOAT, &[2])
        .input("b", elem::FLOAT, &[2])
        .node("SwiGLU", &["a", "b"], &["y"], vec![])
        .output("y", elem::FLOAT, &[2]);
    let a = Tensor::from_f32(vec![2], &[0.0, 3f32.ln()]);
    let v = Tensor::from_f32(vec![2], &[5.0, 2.0]);
    close(&run(&ok(&b), &[a, v])[0], &[0.0, 3f64.ln() * 0.75 * 2.0]);
}

#[test]
fn batch_norm_training_mode_returns_running_statistics() {
    // One channel, batch [1, 3]: mean 2, population variance 1; epsilon 0 normalizes to [-1, 1].
    // Running mean 0.9 * 10 + 0.1 * 2 = 9.2; running var 0.9 * 5 + 0.1 * 1 = 4.6.
    let mut b = ModelBuilder::new("g").opset("", 15);
    b.input("x", elem::FLOAT, &[2, 1])
        .initializer(tensor_f32("s", &[1], &[2.0]))
        .initializer(tensor_f32("b", &[1], &[1.0]))
        .initializer(tensor_f32("m", &[1], &[10.0]))
        .initializer(tensor_f32("v", &[1], &[5.0]))
        .node(
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y", "rm", "rv"],
            vec![attr::int("training_mode", 1), attr::float("epsilon", 0.0)],
        )
        .output("y", elem::FLOAT, &[2, 1])
        .output("rm", elem::FLOAT, &[1])
        .output("rv", elem::FLOAT, &[1]);
    let m = ok(&b);
    let out = run(&m, &[Tensor::from_f32(vec![2, 1], &[1.0, 3.0])]);
    close(&out[0], &[-1.0, 3.0]);
    close(&out[1], &[9.2]);
    close(&out[2], &[4.6]);
}

#[test]
fn attention_3d_splits_heads_and_concatenates_the_cache() {
    // Q [1, 1, 4] with 2 heads of 2, K/V [1, 1, 4] with 2 KV heads, a cache of one key per head.
    let mut b = ModelBuilder::new("g").opset("", 23);
    b.input("q", elem::FLOAT, &[1, 1, 4])
        .input("k", elem::FLOAT, &[1, 1, 4])
        .input("v", elem::FLOAT, &[1, 1, 4])
        .input("pk", elem::FLOAT, &[1, 2, 1, 2])
        .input("pv", elem::FLOAT, &[1, 2, 1, 2])
        .node(
            "Attention",
            &["q", "k", "v", "", "pk", "pv"],
            &["y", "present_k", "present_v", "qk"],
            vec![
                attr::int("q_num_heads", 2),
                attr::int("kv_num_heads", 2),
                attr::int("is_causal", 1),
                attr::int("qk_matmul_output_mode", 3),
            ],
        )
        .output("y", elem::FLOAT, &[1, 1, 4])
        .output("present_k", elem::FLOAT, &[1, 2, 2, 2])
        .output("present_v", elem::FLOAT, &[1, 2, 2, 2])
        .output("qk", elem::FLOAT, &[1, 2, 1, 2]);
    let m = ok(&b);
    assert!(matches!(out_op(&m, "present_k"), Op::Concat(_)));
    let z = |n: usize| Tensor::from_f32(vec![n], &vec![0.0; n]);
    // Zero queries: uniform weights over the cached key and the new one (causal offset 1 lets the
    // query see both), so Y is the mean of the two values per head.
    let q = z(4).reshaped(vec![1, 1, 4]);
    let k = z(4).reshaped(vec![1, 1, 4]);
    let v = Tensor::from_f32(vec![1, 1, 4], &[2.0, 4.0, 6.0, 8.0]);
    let pk = z(4).reshaped(vec![1, 2, 1, 2]);
    let pv = Tensor::from_f32(vec![1, 2, 1, 2], &[0.0, 0.0, 2.0, 2.0]);
    let out = run(&m, &[q, k, v, pk, pv]);
    close(&out[0], &[1.0, 2.0, 4.0, 5.0]);
    close(&out[3], &[0.5, 0.5, 0.5, 0.5]);
}

#[test]
fn rotary_3d_needs_num_heads() {
    let mut b = ModelBuilder::new("g").opset("", 23);
    b.input("x", elem::FLOAT, &[1, 2, 4])
        .input("c", elem::FLOAT, &[1, 2, 2])
        .input("s", elem::FLOAT, &[1, 2, 2])
        .node("RotaryEmbedding", &["x", "c", "s"], &["y"], vec![])
        .output("y", elem::FLOAT, &[1, 2, 4]);
    assert!(err(&b).to_string().contains("num_heads"), "{}", err(&b));
}

#[test]
fn half_layer_norm_returns_statistics_in_the_stash_type() {
    let mut b = ModelBuilder::new("g").opset("", 17);
    let one = half::f16::from_f32(1.0);
    b.input("x", elem::FLOAT16, &[2, 4])
        .initializer(kiln_frontend::builder::tensor_f16("s", &[4], &[one; 4]))
        .node(
            "LayerNormalization",
            &["x", "s"],
            &["y", "mean", "inv"],
            vec![],
        )
        .output("y", elem::FLOAT16, &[2, 4])
        .output("mean", elem::FLOAT, &[2, 1])
        .output("inv", elem::FLOAT, &[2, 1]);
    let m = ok(&b);
    assert_eq!(out_ty(&m, "y"), TensorType::new(DType::F16, &[2, 4]));
    assert_eq!(out_ty(&m, "mean"), f32t(&[2, 1]));
    assert!(matches!(out_op(&m, "inv"), Op::Cast(_)));
    // Row [1, 3, 1, 3]: mean 2, variance 1.
    let x = Tensor::from_f64(
        DType::F16,
        vec![2, 4],
        &[1.0, 3.0, 1.0, 3.0, 0.0, 0.0, 4.0, 4.0],
    );
    let out = run(&m, &[x]);
    close(&out[1], &[2.0, 2.0]);
}
