//! Mappings of the elementwise family: activations and math functions with their ONNX attribute
//! defaults, comparisons and logic (bool outputs), Mod's two semantics, PRelu's one-way
//! broadcasting, Where, Mean, CastLike, Clip with integer and run-time bounds, Dropout's mask.

mod common;

use common::*;
use kiln_frontend::builder::{attr, elem, tensor_raw, ModelBuilder};
use kiln_ir::ops::{BinaryOp, Cast, UnaryOp};
use kiln_ir::{DType, Op, TensorType};

fn unary_model(
    op: &str,
    attrs: Vec<kiln_frontend::onnx::AttributeProto>,
    opset: i64,
) -> ModelBuilder {
    let mut b = ModelBuilder::new("g").opset("", opset);
    b.input("x", elem::FLOAT, &[2, 3])
        .node(op, &["x"], &["y"], attrs)
        .output("y", elem::FLOAT, &[2, 3]);
    b
}

#[test]
fn activations_take_the_onnx_defaults() {
    let cases: [(&str, UnaryOp); 16] = [
        ("Sin", UnaryOp::Sin),
        ("Cos", UnaryOp::Cos),
        ("Tan", UnaryOp::Tan),
        ("Round", UnaryOp::Round),
        ("Sign", UnaryOp::Sign),
        ("HardSwish", UnaryOp::HardSwish),
        ("Softplus", UnaryOp::Softplus),
        ("Softsign", UnaryOp::Softsign),
        ("Mish", UnaryOp::Mish),
        ("Elu", UnaryOp::Elu { alpha: 1.0 }),
        (
            "Selu",
            UnaryOp::Selu {
                alpha: 1.673_263_2,
                gamma: 1.050_701,
            },
        ),
        ("Celu", UnaryOp::Celu { alpha: 1.0 }),
        (
            "HardSigmoid",
            UnaryOp::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
        ),
        ("ThresholdedRelu", UnaryOp::ThresholdedRelu { alpha: 1.0 }),
        ("Gelu", UnaryOp::Gelu { tanh: false }),
        ("Mish", UnaryOp::Mish),
    ];
    for (name, want) in cases {
        let m = ok(&unary_model(name, vec![], 22));
        assert_eq!(out_op(&m, "y"), Op::Unary(want), "{name}");
        assert_eq!(out_ty(&m, "y"), f32t(&[2, 3]), "{name}");
        assert_eq!(out_node(&m, "y").name, format!("{name}_0"));
    }
}

#[test]
fn activation_attributes() {
    let m = ok(&unary_model(
        "Selu",
        vec![attr::float("alpha", 2.0), attr::float("gamma", 3.0)],
        22,
    ));
    assert_eq!(
        out_op(&m, "y"),
        Op::Unary(UnaryOp::Selu {
            alpha: 2.0,
            gamma: 3.0
        })
    );
    let m = ok(&unary_model(
        "HardSigmoid",
        vec![attr::float("alpha", 0.25), attr::float("beta", 0.125)],
        22,
    ));
    assert_eq!(
        out_op(&m, "y"),
        Op::Unary(UnaryOp::HardSigmoid {
            alpha: 0.25,
            beta: 0.125
        })
    );
    let m = ok(&unary_model(
        "Gelu",
        vec![attr::string("approximate", "tanh")],
        20,
    ));
    assert_eq!(out_op(&m, "y"), Op::Unary(UnaryOp::Gelu { tanh: true }));
    assert!(matches!(
        err(&unary_model(
            "Gelu",
            vec![attr::string("approximate", "erf")],
            20
        )),
        kiln_frontend::ImportError::Node { .. }
    ));
    // Elu-1 had `consumed_inputs`, ignored.
    let m = ok(&unary_model(
        "Elu",
        vec![
            attr::float("alpha", 0.5),
            attr::ints("consumed_inputs", &[0]),
        ],
        1,
    ));
    assert_eq!(out_op(&m, "y"), Op::Unary(UnaryOp::Elu { alpha: 0.5 }));
}

#[test]
fn predicates_output_bool() {
    let mut b = ModelBuilder::new("g").opset("", 20);
    b.input("x", elem::FLOAT16, &[4])
        .input("c", elem::BOOL, &[4])
        .node("IsNaN", &["x"], &["n"], vec![])
        .node(
            "IsInf",
            &["x"],
            &["i"],
            vec![attr::int("detect_positive", 0)],
        )
        .node("Not", &["c"], &["t"], vec![])
        .output("n", elem::BOOL, &[4])
        .output("i", elem::BOOL, &[4])
        .output("t", elem::BOOL, &[4]);
    let m = ok(&b);
    let bool4 = TensorType::new(DType::Bool, &[4]);
    assert_eq!(out_op(&m, "n"), Op::Unary(UnaryOp::IsNaN));
    assert_eq!(
        out_op(&m, "i"),
        Op::Unary(UnaryOp::IsInf {
            negative: true,
            positive: false
        })
    );
    assert_eq!(out_op(&m, "t"), Op::Unary(UnaryOp::Not));
    for o in ["n", "i", "t"] {
        assert_eq!(out_ty(&m, o), bool4, "{o}");
    }
}

#[test]
fn comparisons_and_logic_broadcast_to_bool() {
    let cmp = [
        ("Equal", BinaryOp::Equal),
        ("Less", BinaryOp::Less),
        ("LessOrEqual", BinaryOp::LessOrEqual),
        ("Greater", BinaryOp::Greater),
        ("GreaterOrEqual", BinaryOp::GreaterOrEqual),
    ];
    for (name, op) in cmp {
        let mut b = ModelBuilder::new("g").opset("", 16);
        b.input("a", elem::INT32, &[2, 3])
            .input("b", elem::INT32, &[3])
            .node(name, &["a", "b"], &["y"], vec![])
            .output("y", elem::BOOL, &[2, 3]);
        let m = ok(&b);
        assert_eq!(out_op(&m, "y"), Op::Binary(op), "{name}");
        assert_eq!(out_ty(&m, "y"), TensorType::new(DType::Bool, &[2, 3]));
    }
    for (name, op) in [
        ("And", BinaryOp::And),
        ("Or", BinaryOp::Or),
        ("Xor", BinaryOp::Xor),
    ] {
        let mut b = ModelBuilder::new("g").opset("", 7);
        b.input("a", elem::BOOL, &[4, 1])
            .input("b", elem::BOOL, &[5])
            .node(name, &["a", "b"], &["y"], vec![])
            .output("y", elem::BOOL, &[4, 5]);
        let m = ok(&b);
        assert_eq!(out_op(&m, "y"), Op::Binary(op), "{name}");
        assert_eq!(out_ty(&m, "y"), TensorType::new(DType::Bool, &[4, 5]));
    }
    // Opset 1 needs `broadcast` for different shapes.
    let mut b = ModelBuilder::new("g").opset("", 1);
    b.input("a", elem::BOOL, &[4, 5])
        .input("b", elem::BOOL, &[5])
        .node("And", &["a", "b"], &["y"], vec![])
        .output("y", elem::BOOL, &[4, 5]);
    assert!(matches!(err(&b), kiln_frontend::ImportError::Node { .. }));
    let mut b = ModelBuilder::new("g").opset("", 1);
    b.input("a", elem::BOOL, &[4, 5])
        .input("b", elem::BOOL, &[5])
        .node("And", &["a", "b"], &["y"], vec![attr::int("broadcast", 1)])
        .output("y", elem::BOOL, &[4, 5]);
    assert_eq!(out_op(&ok(&b), "y"), Op::Binary(BinaryOp::And));
}

#[test]
fn mod_picks_its_semantics_from_fmod() {
    for (fmod, want) in [
        (None, BinaryOp::Mod),
        (Some(0), BinaryOp::Mod),
        (Some(1), BinaryOp::Fmod),
    ] {
        let attrs = fmod.map(|f| vec![attr::int("fmod", f)]).unwrap_or_default();
        let mut b = ModelBuilder::new("g").opset("", 13);
        b.input("a", elem::INT64, &[3])
            .input("b", elem::INT64, &[3])
            .node("Mod", &["a", "b"], &["y"], attrs)
            .output("y", elem::INT64, &[3]);
        assert_eq!(out_op(&ok(&b), "y"), Op::Binary(want));
    }
}

#[test]
fn prelu_slope_broadcasts_one_way() {
    let mut b = ModelBuilder::new("g").opset("", 16);
    b.input("x", elem::FLOAT, &[2, 3, 4])
        .input("s", elem::FLOAT, &[3, 1])
        .node("PRelu", &["x", "s"], &["y"], vec![])
        .output("y", elem::FLOAT, &[2, 3, 4]);
    let m = ok(&b);
    assert_eq!(out_op(&m, "y"), Op::Binary(BinaryOp::PRelu));
    assert_eq!(out_ty(&m, "y"), f32t(&[2, 3, 4]));
    // A slope that would grow X is invalid.
    let mut b = ModelBuilder::new("g").opset("", 16);
    b.input("x", elem::FLOAT, &[3])
        .input("s", elem::FLOAT, &[2, 3])
        .node("PRelu", &["x", "s"], &["y"], vec![])
        .output("y", elem::FLOAT, &[2, 3]);
    assert!(matches!(err(&b), kiln_frontend::ImportError::Node { .. }));
}

#[test]
fn where_broadcasts_three_ways() {
    let mut b = ModelBuilder::new("g").opset("", 16);
    b.input("c", elem::BOOL, &[2, 1])
        .input("x", elem::INT64, &[1, 3])
        .input("y", elem::INT64, &[])
        .node("Where", &["c", "x", "y"], &["z"], vec![])
        .output("z", elem::INT64, &[2, 3]);
    let m = ok(&b);
    assert_eq!(out_op(&m, "z"), Op::Where);
    assert_eq!(out_ty(&m, "z"), TensorType::new(DType::I64, &[2, 3]));
}

#[test]
fn mean_is_a_sum_divided_by_the_count() {
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("a", elem::FLOAT, &[3])
        .input("b", elem::FLOAT, &[3])
        .input("c", elem::FLOAT, &[1])
        .node("Mean", &["a", "b", "c"], &["y"], vec![])
        .output("y", elem::FLOAT, &[3]);
    let m = ok(&b);
    let y = output(&m, "y");
    assert_eq!(m.graph.node(y.node).op, Op::Binary(BinaryOp::Div));
    let n = m.graph.input(y.node, 1).unwrap();
    let count = m.graph.const_value(n).unwrap();
    assert_eq!(count.to_f64_vec(), vec![3.0]);
    let sum = m.graph.input(y.node, 0).unwrap();
    assert_eq!(m.graph.node(sum.node).op, Op::Binary(BinaryOp::Add));
    // One input: the identity.
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("a", elem::FLOAT, &[3])
        .node("Mean", &["a"], &["y"], vec![])
        .output("y", elem::FLOAT, &[3]);
    assert_eq!(out_op(&ok(&b), "y"), Op::Identity);
}

#[test]
fn castlike_takes_the_target_type() {
    let mut b = ModelBuilder::new("g").opset("", 21);
    b.input("x", elem::FLOAT, &[3])
        .input("like", elem::FLOAT16, &[1])
        .node("CastLike", &["x", "like"], &["y"], vec![])
        .output("y", elem::FLOAT16, &[3]);
    let m = ok(&b);
    assert_eq!(out_op(&m, "y"), Op::Cast(Cast { to: DType::F16 }));
    assert_eq!(out_ty(&m, "y"), TensorType::new(DType::F16, &[3]));
}

#[test]
fn clip_integer_and_run_time_bounds() {
    // Constant integer bounds that f32 holds exactly: one unary op.
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::INT8, &[4])
        .initializer(tensor_raw("lo", elem::INT8, &[], vec![0xfe]))
        .node("Clip", &["x", "lo"], &["y"], vec![])
        .output("y", elem::INT8, &[4]);
    assert_eq!(
        out_op(&ok(&b), "y"),
        Op::Unary(UnaryOp::Clip {
            min: -2.0,
            max: f32::INFINITY
        })
    );
    // An i64 bound beyond 2^24 is not an exact f32: max then min with the bound tensors.
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::INT64, &[4])
        .input("hi", elem::INT64, &[])
        .initializer_i64("lo", &[], &[(1 << 40) + 1])
        .node("Clip", &["x", "lo", "hi"], &["y"], vec![])
        .output("y", elem::INT64, &[4]);
    let m = ok(&b);
    let y = output(&m, "y");
    assert_eq!(m.graph.node(y.node).op, Op::Binary(BinaryOp::Min));
    let inner = m.graph.input(y.node, 0).unwrap();
    assert_eq!(m.graph.node(inner.node).op, Op::Binary(BinaryOp::Max));
    assert_eq!(out_ty(&m, "y"), TensorType::new(DType::I64, &[4]));
}

#[test]
fn dropout_training_with_zero_ratio_is_the_identity() {
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[3])
        .initializer(kiln_frontend::builder::tensor_f32("r", &[], &[0.0]))
        .initializer(tensor_raw("t", elem::BOOL, &[], vec![1]))
        .node("Dropout", &["x", "r", "t"], &["d", "m"], vec![])
        .output("d", elem::FLOAT, &[3])
        .output("m", elem::BOOL, &[3]);
    let m = ok(&b);
    assert_eq!(out_op(&m, "d"), Op::Identity);
    assert_eq!(out_const(&m, "m").to_i64_vec(), vec![1, 1, 1]);
    // Before opset 10 the mask has X's type.
    let mut b = ModelBuilder::new("g").opset("", 7);
    b.input("x", elem::FLOAT, &[2])
        .node("Dropout", &["x"], &["d", "m"], vec![])
        .output("d", elem::FLOAT, &[2])
        .output("m", elem::FLOAT, &[2]);
    let mask = out_const(&ok(&b), "m");
    assert_eq!(
        (mask.dtype(), mask.to_f64_vec()),
        (DType::F32, vec![1.0, 1.0])
    );
}
