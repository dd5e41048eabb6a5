//! Op mappings: each ONNX op imports to the expected IR op, attributes and output type.

mod common;

use common::*;
use kiln_frontend::builder::{attr, elem, tensor_f32, tensor_i64, ModelBuilder};
use kiln_ir::ops::{
    BatchNorm, BinaryOp, Cast, Concat, Conv, Flatten, Gather, Gemm, GlobalPool, Pool, PoolKind,
    Reshape, ShapeOf, Slice, Softmax, Squeeze, Transpose, UnaryOp, Unsqueeze,
};
use kiln_ir::{DType, Op};

#[test]
fn unary_ops_keep_shape_and_map_to_their_variant() {
    let cases = [
        ("Relu", UnaryOp::Relu),
        ("Sigmoid", UnaryOp::Sigmoid),
        ("Tanh", UnaryOp::Tanh),
        ("Exp", UnaryOp::Exp),
        ("Log", UnaryOp::Log),
        ("Sqrt", UnaryOp::Sqrt),
        ("Neg", UnaryOp::Neg),
        ("Abs", UnaryOp::Abs),
        ("Reciprocal", UnaryOp::Reciprocal),
        ("Erf", UnaryOp::Erf),
        ("Floor", UnaryOp::Floor),
        ("Ceil", UnaryOp::Ceil),
    ];
    for (name, want) in cases {
        let mut b = ModelBuilder::new("g");
        b.input("x", elem::FLOAT, &[2, 3])
            .node(name, &["x"], &["y"], vec![])
            .output("y", elem::FLOAT, &[2, 3]);
        let m = ok(&b);
        assert_eq!(out_op(&m, "y"), Op::Unary(want), "{name}");
        assert_eq!(out_ty(&m, "y"), f32t(&[2, 3]), "{name}");
        assert_eq!(out_node(&m, "y").name, format!("{name}_0"));
    }
}

#[test]
fn legacy_consumed_inputs_is_accepted() {
    let mut b = ModelBuilder::new("g").opset("", 5);
    b.input("x", elem::FLOAT, &[4])
        .node(
            "Relu",
            &["x"],
            &["y"],
            vec![attr::ints("consumed_inputs", &[0])],
        )
        .output("y", elem::FLOAT, &[4]);
    assert_eq!(out_op(&ok(&b), "y"), Op::Unary(UnaryOp::Relu));
}

#[test]
fn leaky_relu_alpha_defaults_to_one_hundredth() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node("LeakyRelu", &["x"], &["a"], vec![])
        .node("LeakyRelu", &["x"], &["b"], vec![attr::float("alpha", 0.2)])
        .output("a", elem::FLOAT, &[3])
        .output("b", elem::FLOAT, &[3]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "a"),
        Op::Unary(UnaryOp::LeakyRelu { alpha: 0.01 })
    );
    assert_eq!(
        out_op(&m, "b"),
        Op::Unary(UnaryOp::LeakyRelu { alpha: 0.2 })
    );
}

#[test]
fn clip_bounds_are_attributes_before_opset_11() {
    let mut b = ModelBuilder::new("g").opset("", 6);
    b.input("x", elem::FLOAT, &[3])
        .node(
            "Clip",
            &["x"],
            &["y"],
            vec![attr::float("min", -1.0), attr::float("max", 6.0)],
        )
        .node("Clip", &["x"], &["z"], vec![attr::float("max", 2.0)])
        .output("y", elem::FLOAT, &[3])
        .output("z", elem::FLOAT, &[3]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "y"),
        Op::Unary(UnaryOp::Clip {
            min: -1.0,
            max: 6.0
        })
    );
    assert_eq!(
        out_op(&m, "z"),
        Op::Unary(UnaryOp::Clip {
            min: f32::NEG_INFINITY,
            max: 2.0
        })
    );
}

#[test]
fn clip_bounds_are_constant_inputs_from_opset_11() {
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[3])
        .initializer(tensor_f32("lo", &[], &[0.0]))
        .initializer(tensor_f32("hi", &[], &[6.0]))
        .node("Clip", &["x", "lo", "hi"], &["y"], vec![])
        .node("Clip", &["x", "", "hi"], &["z"], vec![])
        .node("Clip", &["x"], &["w"], vec![])
        .output("y", elem::FLOAT, &[3])
        .output("z", elem::FLOAT, &[3])
        .output("w", elem::FLOAT, &[3]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "y"),
        Op::Unary(UnaryOp::Clip { min: 0.0, max: 6.0 })
    );
    assert_eq!(
        out_op(&m, "z"),
        Op::Unary(UnaryOp::Clip {
            min: f32::NEG_INFINITY,
            max: 6.0
        })
    );
    assert_eq!(
        out_op(&m, "w"),
        Op::Unary(UnaryOp::Clip {
            min: f32::NEG_INFINITY,
            max: f32::INFINITY
        })
    );
}

#[test]
fn clip_bound_computed_at_run_time_becomes_max() {
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[3])
        .input("lo", elem::FLOAT, &[])
        .node("Clip", &["x", "lo"], &["y"], vec![])
        .output("y", elem::FLOAT, &[3]);
    let m = ok(&b);
    assert_eq!(out_op(&m, "y"), Op::Binary(BinaryOp::Max));
    assert_eq!(out_node(&m, "y").name, "Clip_0");
}

#[test]
fn binary_ops_broadcast() {
    let cases = [
        ("Add", BinaryOp::Add),
        ("Sub", BinaryOp::Sub),
        ("Mul", BinaryOp::Mul),
        ("Div", BinaryOp::Div),
        ("Pow", BinaryOp::Pow),
        ("Max", BinaryOp::Max),
        ("Min", BinaryOp::Min),
        ("Sum", BinaryOp::Add),
    ];
    for (name, want) in cases {
        let mut b = ModelBuilder::new("g");
        b.input("a", elem::FLOAT, &[2, 1, 3])
            .input("b", elem::FLOAT, &[4, 1])
            .node(name, &["a", "b"], &["y"], vec![])
            .output("y", elem::FLOAT, &[2, 4, 3]);
        let m = ok(&b);
        assert_eq!(out_op(&m, "y"), Op::Binary(want), "{name}");
        assert_eq!(out_ty(&m, "y"), f32t(&[2, 4, 3]), "{name}");
    }
}

#[test]
fn variadic_ops_become_a_chain() {
    let mut b = ModelBuilder::new("g");
    b.input("a", elem::FLOAT, &[3])
        .input("b", elem::FLOAT, &[3])
        .input("c", elem::FLOAT, &[3])
        .node_named("total", "", "Sum", &["a", "b", "c"], &["s"], vec![])
        .node_named("only", "", "Max", &["a"], &["m"], vec![])
        .output("s", elem::FLOAT, &[3])
        .output("m", elem::FLOAT, &[3]);
    let m = ok(&b);
    let g = &m.graph;
    let last = output(&m, "s");
    assert_eq!(g.node(last.node).op, Op::Binary(BinaryOp::Add));
    assert_eq!(g.node(last.node).name, "total");
    // (a + b) + c: the first input of the last add is a helper add of a and b.
    let first = g.input(last.node, 0).unwrap();
    assert_eq!(g.node(first.node).op, Op::Binary(BinaryOp::Add));
    assert_eq!(g.node(first.node).name, "total/0");
    assert_eq!(g.value_name(g.input(first.node, 0).unwrap()), "a");
    assert_eq!(g.value_name(g.input(first.node, 1).unwrap()), "b");
    assert_eq!(g.value_name(g.input(last.node, 1).unwrap()), "c");
    assert_eq!(out_op(&m, "m"), Op::Identity);
}

#[test]
fn legacy_broadcast_attribute() {
    // Opset 6: broadcast=1 aligning B with the trailing axes of A is numpy broadcasting.
    let mut b = ModelBuilder::new("g").opset("", 6);
    b.input("a", elem::FLOAT, &[2, 3])
        .input("b", elem::FLOAT, &[3])
        .node(
            "Add",
            &["a", "b"],
            &["y"],
            vec![attr::int("broadcast", 1), attr::int("axis", 1)],
        )
        .output("y", elem::FLOAT, &[2, 3]);
    assert_eq!(out_ty(&ok(&b), "y"), f32t(&[2, 3]));

    // B aligned at axis 0 of A is not numpy broadcasting.
    let mut b = ModelBuilder::new("g").opset("", 6);
    b.input("a", elem::FLOAT, &[2, 3])
        .input("b", elem::FLOAT, &[2])
        .node(
            "Mul",
            &["a", "b"],
            &["y"],
            vec![attr::int("broadcast", 1), attr::int("axis", 0)],
        )
        .output("y", elem::FLOAT, &[2, 3]);
    let list = unsupported(&b);
    assert!(
        list[0].reason.contains("legacy broadcasting"),
        "{}",
        list[0].reason
    );
}

#[test]
fn softmax_before_opset_13_is_the_flattening_form() {
    let cases: [(i64, Option<i64>, Softmax); 5] = [
        (
            11,
            Some(1),
            Softmax {
                axis: 1,
                flatten: true,
            },
        ),
        (
            11,
            None,
            Softmax {
                axis: 1,
                flatten: true,
            },
        ),
        (
            11,
            Some(-1),
            Softmax {
                axis: 2,
                flatten: false,
            },
        ),
        (
            11,
            Some(2),
            Softmax {
                axis: 2,
                flatten: false,
            },
        ),
        (
            13,
            None,
            Softmax {
                axis: 2,
                flatten: false,
            },
        ),
    ];
    for (opset, axis, want) in cases {
        let attrs = axis.map(|a| vec![attr::int("axis", a)]).unwrap_or_default();
        let mut b = ModelBuilder::new("g").opset("", opset);
        b.input("x", elem::FLOAT, &[2, 3, 4])
            .node("Softmax", &["x"], &["y"], attrs)
            .output("y", elem::FLOAT, &[2, 3, 4]);
        assert_eq!(
            out_op(&ok(&b), "y"),
            Op::Softmax(want),
            "opset {opset} axis {axis:?}"
        );
    }
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[2, 3, 4])
        .node("Softmax", &["x"], &["y"], vec![attr::int("axis", 1)])
        .output("y", elem::FLOAT, &[2, 3, 4]);
    assert_eq!(
        out_op(&ok(&b), "y"),
        Op::Softmax(Softmax {
            axis: 1,
            flatten: false
        })
    );
}

#[test]
fn gemm_attributes() {
    let mut b = ModelBuilder::new("g");
    b.input("a", elem::FLOAT, &[2, 3])
        .initializer_f32("w", &[4, 3], &[0.0; 12])
        .initializer_f32("c", &[4], &[0.0; 4])
        .node(
            "Gemm",
            &["a", "w", "c"],
            &["y"],
            vec![attr::float("alpha", 0.5), attr::int("transB", 1)],
        )
        .output("y", elem::FLOAT, &[2, 4]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "y"),
        Op::Gemm(Gemm {
            alpha: 0.5,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
            post: vec![],
        })
    );
    assert_eq!(out_ty(&m, "y"), f32t(&[2, 4]));
}

#[test]
fn matmul_batches() {
    let mut b = ModelBuilder::new("g");
    b.input("a", elem::FLOAT, &[2, 3, 4])
        .initializer_f32("w", &[4, 5], &[0.0; 20])
        .node("MatMul", &["a", "w"], &["y"], vec![])
        .output("y", elem::FLOAT, &[2, 3, 5]);
    let m = ok(&b);
    assert_eq!(out_op(&m, "y"), Op::MatMul);
    assert_eq!(out_ty(&m, "y"), f32t(&[2, 3, 5]));
}

fn conv_model(
    x: &[i64],
    w: &[i64],
    attrs: Vec<kiln_frontend::onnx::AttributeProto>,
    with_bias: bool,
) -> ModelBuilder {
    let mut b = ModelBuilder::new("g");
    let wn: i64 = w.iter().product();
    b.input("x", elem::FLOAT, x)
        .initializer_f32("w", w, &vec![0.0; wn as usize]);
    if with_bias {
        b.initializer_f32("b", &[w[0]], &vec![0.0; w[0] as usize]);
        b.node("Conv", &["x", "w", "b"], &["y"], attrs);
    } else {
        b.node("Conv", &["x", "w"], &["y"], attrs);
    }
    b
}

#[test]
fn conv_with_explicit_pads_and_default_kernel_shape() {
    // (8 + 1 + 1 - 3) / 2 + 1 = 4 (floor).
    let mut b = conv_model(
        &[1, 3, 8, 8],
        &[4, 3, 3, 3],
        vec![
            attr::ints("pads", &[1, 1, 1, 1]),
            attr::ints("strides", &[2, 2]),
        ],
        true,
    );
    b.output("y", elem::FLOAT, &[1, 4, 4, 4]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "y"),
        Op::Conv(Conv {
            layout: kiln_ir::ops::Layout::Nchw,
            kernel_shape: vec![3, 3],
            strides: vec![2, 2],
            dilations: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            group: 1,
            post: vec![],
        })
    );
    assert_eq!(out_ty(&m, "y"), f32t(&[1, 4, 4, 4]));
}

#[test]
fn conv_auto_pad_is_resolved_from_the_static_input_shape() {
    // Input 5, kernel 2, stride 2: SAME output ceil(5/2) = 3 needs (3-1)*2 + 2 - 5 = 1 pad in total.
    let cases = [
        ("SAME_UPPER", vec![0, 0, 1, 1], 3),
        ("SAME_LOWER", vec![1, 1, 0, 0], 3),
        ("VALID", vec![0, 0, 0, 0], 2),
        ("NOTSET", vec![0, 0, 0, 0], 2),
    ];
    for (mode, pads, out) in cases {
        let mut b = conv_model(
            &[1, 1, 5, 5],
            &[1, 1, 2, 2],
            vec![
                attr::string("auto_pad", mode),
                attr::ints("strides", &[2, 2]),
            ],
            false,
        );
        b.output("y", elem::FLOAT, &[1, 1, out, out]);
        let m = ok(&b);
        let Op::Conv(c) = out_op(&m, "y") else {
            panic!("not a conv")
        };
        assert_eq!(c.pads, pads, "{mode}");
        assert_eq!(
            out_ty(&m, "y"),
            f32t(&[1, 1, out as usize, out as usize]),
            "{mode}"
        );
    }
}

#[test]
fn depthwise_conv_with_dilation() {
    // Dilation 2 makes the 3-wide kernel span 5: 6 - 5 + 1 = 2.
    let mut b = conv_model(
        &[1, 4, 6, 6],
        &[4, 1, 3, 3],
        vec![
            attr::int("group", 4),
            attr::ints("dilations", &[2, 2]),
            attr::ints("kernel_shape", &[3, 3]),
        ],
        false,
    );
    b.output("y", elem::FLOAT, &[1, 4, 2, 2]);
    let m = ok(&b);
    let Op::Conv(c) = out_op(&m, "y") else {
        panic!("not a conv")
    };
    assert_eq!((c.group, c.dilations.clone()), (4, vec![2, 2]));
    assert_eq!(out_ty(&m, "y"), f32t(&[1, 4, 2, 2]));
}

#[test]
fn pools() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[1, 2, 5, 5])
        .node(
            "MaxPool",
            &["x"],
            &["mp"],
            vec![
                attr::ints("kernel_shape", &[2, 2]),
                attr::ints("strides", &[2, 2]),
            ],
        )
        .node(
            "MaxPool",
            &["x"],
            &["mpc"],
            vec![
                attr::ints("kernel_shape", &[2, 2]),
                attr::ints("strides", &[2, 2]),
                attr::int("ceil_mode", 1),
            ],
        )
        .node(
            "AveragePool",
            &["x"],
            &["ap"],
            vec![
                attr::ints("kernel_shape", &[3, 3]),
                attr::ints("pads", &[1, 1, 1, 1]),
                attr::int("count_include_pad", 1),
            ],
        )
        .node(
            "AveragePool",
            &["x"],
            &["aps"],
            vec![
                attr::ints("kernel_shape", &[2, 2]),
                attr::string("auto_pad", "SAME_UPPER"),
            ],
        )
        .node("GlobalAveragePool", &["x"], &["gap"], vec![])
        .node("GlobalMaxPool", &["x"], &["gmp"], vec![])
        // floor((5 - 2) / 2) + 1 = 2; ceil mode: ceil(3 / 2) + 1 = 3.
        .output("mp", elem::FLOAT, &[1, 2, 2, 2])
        .output("mpc", elem::FLOAT, &[1, 2, 3, 3])
        .output("ap", elem::FLOAT, &[1, 2, 5, 5])
        .output("aps", elem::FLOAT, &[1, 2, 5, 5])
        .output("gap", elem::FLOAT, &[1, 2, 1, 1])
        .output("gmp", elem::FLOAT, &[1, 2, 1, 1]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "mp"),
        Op::Pool(Pool {
            layout: kiln_ir::ops::Layout::Nchw,
            kind: PoolKind::Max,
            kernel_shape: vec![2, 2],
            strides: vec![2, 2],
            pads: vec![0, 0, 0, 0],
            dilations: vec![1, 1],
            ceil_mode: false,
            count_include_pad: false,
        })
    );
    let Op::Pool(mpc) = out_op(&m, "mpc") else {
        panic!()
    };
    assert!(mpc.ceil_mode);
    let Op::Pool(ap) = out_op(&m, "ap") else {
        panic!()
    };
    assert_eq!(
        (ap.kind, ap.count_include_pad, ap.pads.clone()),
        (PoolKind::Avg, true, vec![1, 1, 1, 1])
    );
    // SAME_UPPER, kernel 2, stride 1 on 5: total pad 1, at the end.
    let Op::Pool(aps) = out_op(&m, "aps") else {
        panic!()
    };
    assert_eq!(aps.pads, vec![0, 0, 1, 1]);
    assert_eq!(
        out_op(&m, "gap"),
        Op::GlobalPool(GlobalPool {
            layout: kiln_ir::ops::Layout::Nchw,
            kind: PoolKind::Avg
        })
    );
    assert_eq!(
        out_op(&m, "gmp"),
        Op::GlobalPool(GlobalPool {
            layout: kiln_ir::ops::Layout::Nchw,
            kind: PoolKind::Max
        })
    );
    assert_eq!(out_ty(&m, "mpc"), f32t(&[1, 2, 3, 3]));
    assert_eq!(out_ty(&m, "gap"), f32t(&[1, 2, 1, 1]));
}

#[test]
fn maxpool_indices_output_selects_the_indices_op() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[1, 1, 4, 4])
        .node(
            "MaxPool",
            &["x"],
            &["y"],
            vec![attr::ints("kernel_shape", &[2, 2])],
        )
        .output("y", elem::FLOAT, &[1, 1, 3, 3]);
    assert!(matches!(out_op(&ok(&b), "y"), Op::Pool(_)));

    // Naming the Indices output asks for them: the op that computes both.
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[1, 1, 4, 4])
        .node(
            "MaxPool",
            &["x"],
            &["y", "idx"],
            vec![
                attr::ints("kernel_shape", &[2, 2]),
                attr::int("storage_order", 1),
            ],
        )
        .output("y", elem::FLOAT, &[1, 1, 3, 3])
        .output("idx", elem::INT64, &[1, 1, 3, 3]);
    let m = ok(&b);
    match out_op(&m, "idx") {
        Op::MaxPoolIndices(p) => assert!(p.column_major),
        other => panic!("expected max_pool_indices, got {}", other.name()),
    }
    assert_eq!(out_ty(&m, "idx"), ty(DType::I64, &[1, 1, 3, 3]));
    assert_eq!(out_ty(&m, "y"), f32t(&[1, 1, 3, 3]));
}

fn bn_model(
    opset: i64,
    attrs: Vec<kiln_frontend::onnx::AttributeProto>,
    outputs: &[&str],
) -> ModelBuilder {
    let mut b = ModelBuilder::new("g").opset("", opset);
    b.input("x", elem::FLOAT, &[1, 2, 3, 3]);
    for p in ["s", "bias", "mean", "var"] {
        b.initializer_f32(p, &[2], &[1.0, 2.0]);
    }
    b.node(
        "BatchNormalization",
        &["x", "s", "bias", "mean", "var"],
        outputs,
        attrs,
    );
    b.output("y", elem::FLOAT, &[1, 2, 3, 3]);
    b
}

#[test]
fn batch_norm_inference_form() {
    let m = ok(&bn_model(15, vec![attr::float("epsilon", 1e-3)], &["y"]));
    assert_eq!(out_op(&m, "y"), Op::BatchNorm(BatchNorm { epsilon: 1e-3 }));
    assert_eq!(out_ty(&m, "y"), f32t(&[1, 2, 3, 3]));

    // Legacy attributes that do not change inference output are accepted.
    let legacy = vec![
        attr::int("is_test", 1),
        attr::int("spatial", 1),
        attr::ints("consumed_inputs", &[0, 0, 0, 1, 1]),
    ];
    let m = ok(&bn_model(6, legacy, &["y"]));
    assert_eq!(out_op(&m, "y"), Op::BatchNorm(BatchNorm { epsilon: 1e-5 }));

    // Unused training outputs are fine.
    ok(&bn_model(
        9,
        vec![attr::float("momentum", 0.9)],
        &["y", "rm", "rv"],
    ));
}

#[test]
fn batch_norm_training_forms_are_unsupported() {
    let mut b = bn_model(9, vec![], &["y", "rm"]);
    b.output("rm", elem::FLOAT, &[2]);
    assert!(unsupported(&b)[0].reason.contains("training"));
    assert!(
        unsupported(&bn_model(7, vec![attr::int("spatial", 0)], &["y"]))[0]
            .reason
            .contains("spatial")
    );
    // training_mode = 1 (opset 14 on) is supported: see ops_norm.rs.
}

#[test]
fn flatten_axis() {
    let cases = [
        (None, 1, [2, 12]),
        (Some(-1), 2, [6, 4]),
        (Some(0), 0, [1, 24]),
        (Some(3), 3, [24, 1]),
    ];
    for (axis, want, dims) in cases {
        let attrs = axis.map(|a| vec![attr::int("axis", a)]).unwrap_or_default();
        let mut b = ModelBuilder::new("g");
        b.input("x", elem::FLOAT, &[2, 3, 4])
            .node("Flatten", &["x"], &["y"], attrs)
            .output("y", elem::FLOAT, &[dims[0] as i64, dims[1] as i64]);
        let m = ok(&b);
        assert_eq!(out_op(&m, "y"), Op::Flatten(Flatten { axis: want }));
        assert_eq!(out_ty(&m, "y"), f32t(&dims));
    }
}

#[test]
fn reshape_shape_from_initializer_and_legacy_attribute() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[2, 3, 4])
        .initializer_i64("shape", &[2], &[-1, 4])
        .node("Reshape", &["x", "shape"], &["y"], vec![])
        .output("y", elem::FLOAT, &[6, 4]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "y"),
        Op::Reshape(Reshape {
            shape: vec![-1, 4],
            allowzero: false
        })
    );
    assert_eq!(out_ty(&m, "y"), f32t(&[6, 4]));

    let mut b = ModelBuilder::new("g").opset("", 4);
    b.input("x", elem::FLOAT, &[2, 3, 4])
        .node(
            "Reshape",
            &["x"],
            &["y"],
            vec![attr::ints("shape", &[0, 12])],
        )
        .output("y", elem::FLOAT, &[2, 12]);
    assert_eq!(out_ty(&ok(&b), "y"), f32t(&[2, 12]));
}

#[test]
fn reshape_shape_computed_from_shape_of_a_static_value() {
    // The PyTorch idiom x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[2, 3, 4])
        .initializer_i64("zero", &[], &[0])
        .initializer_i64("axes0", &[1], &[0])
        .initializer_i64("minus1", &[1], &[-1])
        .node("Shape", &["x"], &["s"], vec![])
        .node("Gather", &["s", "zero"], &["n"], vec![attr::int("axis", 0)])
        .node("Unsqueeze", &["n", "axes0"], &["n1"], vec![])
        .node(
            "Concat",
            &["n1", "minus1"],
            &["shape"],
            vec![attr::int("axis", 0)],
        )
        .node("Reshape", &["x", "shape"], &["y"], vec![])
        .output("y", elem::FLOAT, &[2, 12]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "y"),
        Op::Reshape(Reshape {
            shape: vec![2, -1],
            allowzero: false
        })
    );
    assert_eq!(out_ty(&m, "y"), f32t(&[2, 12]));
    // The shape computation stays in the graph for the folding passes to remove.
    let names = op_names(&m.graph);
    for op in ["shape", "gather", "unsqueeze", "concat", "reshape"] {
        assert!(names.contains(&op), "{op} missing from {names:?}");
    }
}

#[test]
fn reshape_shape_computed_at_run_time_is_unsupported() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[2, 3, 4])
        .input("shape", elem::INT64, &[2])
        .node("Reshape", &["x", "shape"], &["y"], vec![])
        .output("y", elem::FLOAT, &[6, 4]);
    let list = unsupported(&b);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].node, "Reshape_0");
    assert_eq!(
        list[0].reason,
        "Reshape: `shape` input is computed at run time (dynamic shapes not supported yet)"
    );
}

#[test]
fn transpose_default_perm_reverses() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[2, 3, 4])
        .node("Transpose", &["x"], &["r"], vec![])
        .node(
            "Transpose",
            &["x"],
            &["p"],
            vec![attr::ints("perm", &[0, 2, 1])],
        )
        .output("r", elem::FLOAT, &[4, 3, 2])
        .output("p", elem::FLOAT, &[2, 4, 3]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "r"),
        Op::Transpose(Transpose {
            perm: vec![2, 1, 0]
        })
    );
    assert_eq!(
        out_op(&m, "p"),
        Op::Transpose(Transpose {
            perm: vec![0, 2, 1]
        })
    );
    assert_eq!(out_ty(&m, "r"), f32t(&[4, 3, 2]));
}

#[test]
fn concat_normalizes_negative_axis() {
    let mut b = ModelBuilder::new("g");
    b.input("a", elem::FLOAT, &[2, 3])
        .input("b", elem::FLOAT, &[2, 5])
        .node("Concat", &["a", "b"], &["y"], vec![attr::int("axis", -1)])
        .output("y", elem::FLOAT, &[2, 8]);
    let m = ok(&b);
    assert_eq!(out_op(&m, "y"), Op::Concat(Concat { axis: 1 }));
    assert_eq!(out_ty(&m, "y"), f32t(&[2, 8]));
}

#[test]
fn identity_and_dropout() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .initializer(tensor_f32("ratio", &[], &[0.5]))
        .node("Identity", &["x"], &["i"], vec![])
        .node(
            "Dropout",
            &["x", "ratio"],
            &["d", "mask"],
            vec![attr::int("seed", 3)],
        )
        .output("i", elem::FLOAT, &[3])
        .output("d", elem::FLOAT, &[3]);
    let m = ok(&b);
    assert_eq!(out_op(&m, "i"), Op::Identity);
    assert_eq!(out_op(&m, "d"), Op::Identity);

    let mut b = ModelBuilder::new("g").opset("", 6);
    b.input("x", elem::FLOAT, &[3])
        .node(
            "Dropout",
            &["x"],
            &["d"],
            vec![attr::int("is_test", 1), attr::float("ratio", 0.1)],
        )
        .output("d", elem::FLOAT, &[3]);
    assert_eq!(out_op(&ok(&b), "d"), Op::Identity);
}

#[test]
fn dropout_mask_is_ones_and_training_mode_is_unsupported() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node("Dropout", &["x"], &["d", "mask"], vec![])
        .output("d", elem::FLOAT, &[3])
        .output("mask", elem::BOOL, &[3]);
    let m = ok(&b);
    let mask = out_const(&m, "mask");
    assert_eq!(
        (mask.dtype(), mask.to_i64_vec()),
        (DType::Bool, vec![1, 1, 1])
    );

    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .initializer(kiln_frontend::builder::tensor_raw(
            "train",
            elem::BOOL,
            &[],
            vec![1],
        ))
        .node("Dropout", &["x", "", "train"], &["d"], vec![])
        .output("d", elem::FLOAT, &[3]);
    assert!(unsupported(&b)[0].reason.contains("training_mode"));
}

#[test]
fn shape_and_gather() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[2, 3, 4])
        .initializer_i64("idx", &[2], &[0, -1])
        .initializer_i64("one", &[], &[1])
        .node("Shape", &["x"], &["s"], vec![])
        .node("Shape", &["x"], &["s1"], vec![attr::int("start", 1)])
        .node("Gather", &["x", "idx"], &["g"], vec![attr::int("axis", 1)])
        .node(
            "Gather",
            &["x", "one"],
            &["g0"],
            vec![attr::int("axis", -1)],
        )
        .output("s", elem::INT64, &[3])
        .output("s1", elem::INT64, &[2])
        .output("g", elem::FLOAT, &[2, 2, 4])
        .output("g0", elem::FLOAT, &[2, 3]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "s"),
        Op::Shape(ShapeOf {
            start: 0,
            end: None
        })
    );
    assert_eq!(
        out_op(&m, "s1"),
        Op::Shape(ShapeOf {
            start: 1,
            end: None
        })
    );
    assert_eq!(out_ty(&m, "s"), ty(DType::I64, &[3]));
    assert_eq!(out_op(&m, "g"), Op::Gather(Gather { axis: 1 }));
    assert_eq!(out_op(&m, "g0"), Op::Gather(Gather { axis: 2 }));
    assert_eq!(out_ty(&m, "g"), f32t(&[2, 2, 4]));
    assert_eq!(out_ty(&m, "g0"), f32t(&[2, 3]));
}

#[test]
fn unsqueeze_and_squeeze_axes_attribute_before_13_input_from_13() {
    let mut b = ModelBuilder::new("g").opset("", 11);
    b.input("x", elem::FLOAT, &[3, 1])
        .node(
            "Unsqueeze",
            &["x"],
            &["u"],
            vec![attr::ints("axes", &[-1, 0])],
        )
        .node("Squeeze", &["x"], &["s"], vec![attr::ints("axes", &[-1])])
        .node("Squeeze", &["x"], &["all"], vec![])
        .output("u", elem::FLOAT, &[1, 3, 1, 1])
        .output("s", elem::FLOAT, &[3])
        .output("all", elem::FLOAT, &[3]);
    let m = ok(&b);
    // Unsqueeze axes count in the output rank: 2 + 2 = 4, so -1 is 3.
    assert_eq!(
        out_op(&m, "u"),
        Op::Unsqueeze(Unsqueeze { axes: vec![0, 3] })
    );
    assert_eq!(out_op(&m, "s"), Op::Squeeze(Squeeze { axes: vec![1] }));
    assert_eq!(out_op(&m, "all"), Op::Squeeze(Squeeze { axes: vec![1] }));
    assert_eq!(out_ty(&m, "u"), f32t(&[1, 3, 1, 1]));

    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[3, 1])
        .initializer_i64("ax", &[1], &[1])
        .node("Unsqueeze", &["x", "ax"], &["u"], vec![])
        .node("Squeeze", &["x", "ax"], &["s"], vec![])
        .output("u", elem::FLOAT, &[3, 1, 1])
        .output("s", elem::FLOAT, &[3]);
    let m = ok(&b);
    assert_eq!(out_op(&m, "u"), Op::Unsqueeze(Unsqueeze { axes: vec![1] }));
    assert_eq!(out_op(&m, "s"), Op::Squeeze(Squeeze { axes: vec![1] }));

    // From 13 the attribute form is a model error.
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[3, 1])
        .node("Squeeze", &["x"], &["s"], vec![attr::ints("axes", &[1])])
        .output("s", elem::FLOAT, &[3]);
    let e = err(&b).to_string();
    assert!(e.contains("Squeeze_0") && e.contains("opset 13"), "{e}");
}

#[test]
fn slice_attributes_before_10_inputs_after() {
    let mut b = ModelBuilder::new("g").opset("", 9);
    b.input("x", elem::FLOAT, &[4, 6])
        .node(
            "Slice",
            &["x"],
            &["y"],
            vec![
                attr::ints("starts", &[1]),
                attr::ints("ends", &[1000]),
                attr::ints("axes", &[-1]),
            ],
        )
        .output("y", elem::FLOAT, &[4, 5]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "y"),
        Op::Slice(Slice {
            starts: vec![1],
            ends: vec![1000],
            axes: vec![1],
            steps: vec![1]
        })
    );
    assert_eq!(out_ty(&m, "y"), f32t(&[4, 5]));

    // Reverse axis 0 with the INT64_MIN end that exporters write, every other column of axis 1.
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[4, 6])
        .initializer_i64("starts", &[2], &[-1, 0])
        .initializer_i64("ends", &[2], &[i64::MIN, i64::MAX])
        .initializer_i64("axes", &[2], &[0, 1])
        .initializer_i64("steps", &[2], &[-1, 2])
        .node(
            "Slice",
            &["x", "starts", "ends", "axes", "steps"],
            &["y"],
            vec![],
        )
        .output("y", elem::FLOAT, &[4, 3]);
    let m = ok(&b);
    assert_eq!(out_ty(&m, "y"), f32t(&[4, 3]));

    // Default axes and steps; a huge step is clamped without changing the result.
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[4, 6])
        .initializer_i64("starts", &[1], &[1])
        .initializer_i64("ends", &[1], &[3])
        .initializer_i64("axes", &[1], &[0])
        .initializer_i64("steps", &[1], &[i64::MAX])
        .node("Slice", &["x", "starts", "ends"], &["a"], vec![])
        .node(
            "Slice",
            &["x", "starts", "ends", "axes", "steps"],
            &["b"],
            vec![],
        )
        .output("a", elem::FLOAT, &[2, 6])
        .output("b", elem::FLOAT, &[1, 6]);
    let m = ok(&b);
    assert_eq!(out_ty(&m, "a"), f32t(&[2, 6]));
    assert_eq!(out_ty(&m, "b"), f32t(&[1, 6]));
}

#[test]
fn cast_targets() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node(
            "Cast",
            &["x"],
            &["h"],
            vec![attr::int("to", elem::FLOAT16 as i64)],
        )
        .node(
            "Cast",
            &["x"],
            &["i"],
            vec![attr::int("to", elem::INT64 as i64)],
        )
        .output("h", elem::FLOAT16, &[3])
        .output("i", elem::INT64, &[3]);
    let m = ok(&b);
    assert_eq!(out_op(&m, "h"), Op::Cast(Cast { to: DType::F16 }));
    assert_eq!(out_ty(&m, "i"), ty(DType::I64, &[3]));

    // Cast-1 named the type with a string.
    let mut b = ModelBuilder::new("g").opset("", 1);
    b.input("x", elem::FLOAT, &[3])
        .node("Cast", &["x"], &["y"], vec![attr::string("to", "DOUBLE")])
        .output("y", elem::DOUBLE, &[3]);
    assert_eq!(out_op(&ok(&b), "y"), Op::Cast(Cast { to: DType::F64 }));

    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node(
            "Cast",
            &["x"],
            &["y"],
            vec![attr::int("to", elem::STRING as i64)],
        )
        .output("y", elem::STRING, &[3]);
    assert!(unsupported(&b)[0].reason.contains("STRING"));
}

#[test]
fn printed_ir_keeps_onnx_names() {
    let mut b = ModelBuilder::new("tiny");
    b.input("x", elem::FLOAT, &[2, 3])
        .initializer_f32("bias", &[3], &[1.0, 2.0, 3.0])
        .node_named("/fc/Add", "", "Add", &["x", "bias"], &["h"], vec![])
        .node("Relu", &["h"], &["y"], vec![])
        .output("y", elem::FLOAT, &[2, 3]);
    let m = ok(&b);
    let text = kiln_ir::print(&m.graph, Default::default());
    assert_eq!(
        text,
        r#"graph "tiny" {
  %0: f32[2,3] = input {index=0}  # "x"
  %1: f32[3] = const [1.0, 2.0, 3.0]  # "bias"
  %2: f32[2,3] = add(%0, %1)  # "/fc/Add"
  %3: f32[2,3] = relu(%2)  # "Relu_1"
  output %3 "y"
}
"#
    );
    // Value names are the ONNX ones.
    assert_eq!(m.graph.value_name(output(&m, "y")), "y");
    let add = m.graph.input(output(&m, "y").node, 0).unwrap();
    assert_eq!(m.graph.value_name(add), "h");
}

#[test]
fn printed_ir_of_conv_and_legacy_softmax() {
    let mut b = ModelBuilder::new("net").opset("", 11);
    b.input("x", elem::FLOAT, &[1, 1, 3, 3])
        .initializer_f32("w", &[2, 1, 1, 1], &[0.5, -1.0])
        .node_named(
            "conv",
            "",
            "Conv",
            &["x", "w"],
            &["c"],
            vec![attr::string("auto_pad", "SAME_UPPER")],
        )
        .node_named("sm", "", "Softmax", &["c"], &["y"], vec![])
        .output("y", elem::FLOAT, &[1, 2, 3, 3]);
    let m = ok(&b);
    assert_eq!(
        kiln_ir::print(&m.graph, Default::default()),
        r#"graph "net" {
  %0: f32[1,1,3,3] = input {index=0}  # "x"
  %1: f32[2,1,1,1] = const [0.5, -1.0]  # "w"
  %2: f32[1,2,3,3] = conv(%0, %1) {kernel_shape=[1,1], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], group=1}  # "conv"
  %3: f32[1,2,3,3] = softmax(%2) {axis=1, flatten=1}  # "sm"
  output %3 "y"
}
"#
    );
    kiln_ir::verify(&m.graph).expect("imported graph verifies");
}

#[test]
fn nodes_in_any_file_order_are_sorted() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node_named("second", "", "Neg", &["h"], &["y"], vec![])
        .node_named("first", "", "Relu", &["x"], &["h"], vec![])
        .output("y", elem::FLOAT, &[3]);
    let m = ok(&b);
    assert_eq!(out_node(&m, "y").name, "second");
    assert_eq!(
        m.graph
            .node(m.graph.input(output(&m, "y").node, 0).unwrap().node)
            .name,
        "first"
    );
    kiln_ir::verify(&m.graph).unwrap();
}

#[test]
fn unnamed_nodes_get_generated_names() {
    let mut b = ModelBuilder::new("g");
    b.input("x", elem::FLOAT, &[3])
        .node_named("", "", "Relu", &["x"], &["h"], vec![])
        .node_named("", "", "Neg", &["h"], &["y"], vec![])
        .output("y", elem::FLOAT, &[3]);
    let m = ok(&b);
    assert_eq!(out_node(&m, "y").name, "Neg_1");
    assert_eq!(
        m.graph
            .node(m.graph.input(output(&m, "y").node, 0).unwrap().node)
            .name,
        "Relu_0"
    );
}

#[test]
fn constant_shape_parameters_evaluate_through_the_constant_subgraph() {
    // Unsqueeze axes from a Constant node, Squeeze axes from Identity(const): both evaluated.
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[3])
        .node(
            "Constant",
            &[],
            &["ax"],
            vec![attr::ints("value_ints", &[0])],
        )
        .node("Identity", &["ax"], &["ax2"], vec![])
        .node("Unsqueeze", &["x", "ax2"], &["u"], vec![])
        .initializer(tensor_i64("z", &[1], &[0]))
        .node("Squeeze", &["u", "z"], &["y"], vec![])
        .output("y", elem::FLOAT, &[3]);
    let m = ok(&b);
    assert_eq!(out_ty(&m, "y"), f32t(&[3]));
}

#[test]
fn constant_of_shape_becomes_a_constant() {
    let mut b = ModelBuilder::new("g");
    b.initializer_i64("shape", &[2], &[2, 3])
        .node("ConstantOfShape", &["shape"], &["zeros"], vec![])
        .node(
            "ConstantOfShape",
            &["shape"],
            &["sevens"],
            vec![attr::tensor("value", tensor_i64("", &[1], &[7]))],
        )
        .output("zeros", elem::FLOAT, &[2, 3])
        .output("sevens", elem::INT64, &[2, 3]);
    let m = ok(&b);
    assert_eq!(out_const(&m, "zeros").to_f32_vec(), [0.0; 6]);
    let sevens = out_const(&m, "sevens");
    assert_eq!(
        (sevens.dtype(), sevens.to_i64_vec()),
        (DType::I64, vec![7; 6])
    );
    assert_eq!(out_node(&m, "sevens").name, "ConstantOfShape_1");

    // An absurd shape fails on size before anything is allocated.
    let mut b = ModelBuilder::new("g");
    b.initializer_i64("shape", &[2], &[1 << 20, 1 << 20])
        .node("ConstantOfShape", &["shape"], &["y"], vec![])
        .output("y", elem::FLOAT, &[-1, -1]);
    let e = err(&b).to_string();
    assert!(
        e.contains("ConstantOfShape_0") && e.contains("limit"),
        "{e}"
    );
}
