//! Mappings of the data-movement family, Resize/Upsample, the convolution extras and Einsum: each
//! ONNX op imports to the expected IR op (or decomposition, or constant) with the expected type.

mod common;

use common::*;
use kiln_frontend::builder::{attr, elem, tensor_f32, ModelBuilder};
use kiln_ir::ops::{
    ConvTranspose, CoordMode, CumSum, Movement, NearestMode, OneHot, Pad, PadMode, Reduction,
    ResizeMode, Slice, TopK, Trilu,
};
use kiln_ir::{DType, Op};

#[test]
fn split_becomes_slices() {
    // Opset 18, num_outputs 3 over 7 elements: ceil(7/3) = 3, so parts 3, 3, 1.
    let mut b = ModelBuilder::new("g").opset("", 18);
    b.input("x", elem::FLOAT, &[7])
        .node(
            "Split",
            &["x"],
            &["a", "b", "c"],
            vec![attr::int("num_outputs", 3)],
        )
        .output("a", elem::FLOAT, &[3])
        .output("b", elem::FLOAT, &[3])
        .output("c", elem::FLOAT, &[1]);
    let m = ok(&b);
    let slice = |s: i64, e: i64| {
        Op::Slice(Slice {
            starts: vec![s],
            ends: vec![e],
            axes: vec![0],
            steps: vec![1],
        })
    };
    assert_eq!(out_op(&m, "a"), slice(0, 3));
    assert_eq!(out_op(&m, "b"), slice(3, 6));
    assert_eq!(out_op(&m, "c"), slice(6, 7));
    // Opset 13 with a constant `split` input on axis 1.
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[2, 5])
        .initializer_i64("split", &[2], &[2, 3])
        .node(
            "Split",
            &["x", "split"],
            &["a", "b"],
            vec![attr::int("axis", 1)],
        )
        .output("a", elem::FLOAT, &[2, 2])
        .output("b", elem::FLOAT, &[2, 3]);
    let m = ok(&b);
    assert_eq!(out_ty(&m, "b"), f32t(&[2, 3]));
    // Opset 11: the `split` attribute; equal parts need a divisible axis.
    let mut b = ModelBuilder::new("g").opset("", 11);
    b.input("x", elem::FLOAT, &[5])
        .node("Split", &["x"], &["a", "b"], vec![])
        .output("a", elem::FLOAT, &[2])
        .output("b", elem::FLOAT, &[3]);
    assert!(err(&b).to_string().contains("equal parts"));
}

#[test]
fn pad_forms() {
    // Opset 18: pads for the listed axes only, reflect mode.
    let mut b = ModelBuilder::new("g").opset("", 18);
    b.input("x", elem::INT32, &[2, 3])
        .initializer_i64("pads", &[2], &[1, 2])
        .initializer_i64("axes", &[1], &[-1])
        .node(
            "Pad",
            &["x", "pads", "", "axes"],
            &["y"],
            vec![attr::string("mode", "reflect")],
        )
        .output("y", elem::INT32, &[2, 6]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "y"),
        Op::Movement(Movement::Pad(Pad {
            pads: vec![0, 1, 0, 2],
            mode: PadMode::Reflect,
        }))
    );
    // Opset 2: attributes, with a non-zero fill becoming a constant input.
    let mut b = ModelBuilder::new("g").opset("", 2);
    b.input("x", elem::FLOAT, &[2])
        .node(
            "Pad",
            &["x"],
            &["y"],
            vec![attr::ints("pads", &[1, 0]), attr::float("value", 1.5)],
        )
        .output("y", elem::FLOAT, &[3]);
    let m = ok(&b);
    let y = output(&m, "y");
    let fill = m.graph.input(y.node, 1).expect("fill input");
    assert_eq!(m.graph.const_value(fill).unwrap().to_f64_vec(), vec![1.5]);
}

#[test]
fn resize_sizes_scales_and_policies() {
    // Sizes with not_larger on axes (2, 3): 4x4 -> asked 2x3, scale min(2/4, 3/4) = 0.5, so 2x2.
    let mut b = ModelBuilder::new("g").opset("", 19);
    b.input("x", elem::FLOAT, &[1, 1, 4, 4])
        .initializer_i64("sizes", &[2], &[2, 3])
        .node(
            "Resize",
            &["x", "", "", "sizes"],
            &["y"],
            vec![
                attr::ints("axes", &[2, 3]),
                attr::string("keep_aspect_ratio_policy", "not_larger"),
                attr::string("mode", "nearest"),
                attr::string("nearest_mode", "floor"),
                attr::string("coordinate_transformation_mode", "asymmetric"),
            ],
        )
        .output("y", elem::FLOAT, &[1, 1, 2, 2]);
    let m = ok(&b);
    match out_op(&m, "y") {
        Op::Resize(r) => {
            assert_eq!(r.sizes, vec![1, 1, 2, 2]);
            assert_eq!(r.scales, vec![1.0, 1.0, 0.5, 0.5]);
            assert_eq!(r.mode, ResizeMode::Nearest(NearestMode::Floor));
            assert_eq!(r.coord, CoordMode::Asymmetric);
        }
        other => panic!("expected resize, got {}", other.name()),
    }
    // Scales 0.6 on 5 -> floor(3.0) = 3; cubic with its coefficient; half_pixel by default.
    let mut b = ModelBuilder::new("g").opset("", 19);
    b.input("x", elem::FLOAT, &[1, 5])
        .initializer(tensor_f32("scales", &[2], &[1.0, 0.6]))
        .node(
            "Resize",
            &["x", "", "scales"],
            &["y"],
            vec![
                attr::string("mode", "cubic"),
                attr::float("cubic_coeff_a", -0.5),
            ],
        )
        .output("y", elem::FLOAT, &[1, 3]);
    match out_op(&ok(&b), "y") {
        Op::Resize(r) => {
            assert_eq!(r.sizes, vec![1, 3]);
            assert_eq!(r.scales[1], 0.6f32 as f64);
            assert_eq!(r.mode, ResizeMode::Cubic { a: -0.5 });
            assert_eq!(r.coord, CoordMode::HalfPixel);
        }
        other => panic!("expected resize, got {}", other.name()),
    }
    // Upsample-9 is a nearest resize with asymmetric coordinates rounding down.
    let mut b = ModelBuilder::new("g").opset("", 9);
    b.input("x", elem::FLOAT, &[1, 2])
        .initializer(tensor_f32("scales", &[2], &[1.0, 3.0]))
        .node("Upsample", &["x", "scales"], &["y"], vec![])
        .output("y", elem::FLOAT, &[1, 6]);
    match out_op(&ok(&b), "y") {
        Op::Resize(r) => {
            assert_eq!(r.mode, ResizeMode::Nearest(NearestMode::Floor));
            assert_eq!(r.coord, CoordMode::Asymmetric);
        }
        other => panic!("expected resize, got {}", other.name()),
    }
}

#[test]
fn small_movement_ops() {
    let mut b = ModelBuilder::new("g").opset("", 18);
    b.input("x", elem::FLOAT, &[3, 4])
        .input("k", elem::INT64, &[])
        .input("idx", elem::INT64, &[2])
        .initializer_i64("axis", &[], &[-1])
        .initializer_i64("kk", &[1], &[2])
        .initializer_i64("depth", &[], &[5])
        .initializer(tensor_f32("vals", &[2], &[0.0, 1.0]))
        .node("Trilu", &["x", "k"], &["tri"], vec![attr::int("upper", 0)])
        .node(
            "CumSum",
            &["x", "axis"],
            &["cs"],
            vec![attr::int("reverse", 1)],
        )
        .node(
            "TopK",
            &["x", "kk"],
            &["tv", "ti"],
            vec![attr::int("axis", 0), attr::int("largest", 0)],
        )
        .node(
            "OneHot",
            &["idx", "depth", "vals"],
            &["oh"],
            vec![attr::int("axis", 0)],
        )
        .output("tri", elem::FLOAT, &[3, 4])
        .output("cs", elem::FLOAT, &[3, 4])
        .output("tv", elem::FLOAT, &[2, 4])
        .output("ti", elem::INT64, &[2, 4])
        .output("oh", elem::FLOAT, &[5, 2]);
    let m = ok(&b);
    // Trilu's k stays a run-time input.
    assert_eq!(
        out_op(&m, "tri"),
        Op::Movement(Movement::Trilu(Trilu { upper: false }))
    );
    assert!(m.graph.input(output(&m, "tri").node, 1).is_some());
    assert_eq!(
        out_op(&m, "cs"),
        Op::Movement(Movement::CumSum(CumSum {
            axis: 1,
            exclusive: false,
            reverse: true
        }))
    );
    assert_eq!(
        out_op(&m, "ti"),
        Op::Movement(Movement::TopK(TopK {
            axis: 0,
            k: 2,
            largest: false
        }))
    );
    assert_eq!(out_ty(&m, "ti"), ty(DType::I64, &[2, 4]));
    assert_eq!(
        out_op(&m, "oh"),
        Op::Movement(Movement::OneHot(OneHot { axis: 0, depth: 5 }))
    );
}

#[test]
fn constants_from_shapes() {
    let mut b = ModelBuilder::new("g").opset("", 22);
    b.input("x", elem::INT32, &[2, 3])
        .initializer_i64("start", &[], &[10])
        .initializer_i64("limit", &[], &[4])
        .initializer_i64("delta", &[], &[-3])
        .node("Size", &["x"], &["n"], vec![])
        .node(
            "EyeLike",
            &["x"],
            &["eye"],
            vec![attr::int("k", 1), attr::int("dtype", 1)],
        )
        .node("Range", &["start", "limit", "delta"], &["r"], vec![])
        .output("n", elem::INT64, &[])
        .output("eye", elem::FLOAT, &[2, 3])
        .output("r", elem::INT64, &[2]);
    let m = ok(&b);
    assert_eq!(out_const(&m, "n").to_i64_vec(), vec![6]);
    // Ones where j - i == 1.
    assert_eq!(
        out_const(&m, "eye").to_f64_vec(),
        vec![0., 1., 0., 0., 0., 1.]
    );
    assert_eq!(out_const(&m, "eye").dtype(), DType::F32);
    // range(10, 4, -3) = [10, 7].
    assert_eq!(out_const(&m, "r").to_i64_vec(), vec![10, 7]);
}

#[test]
fn depth_to_space_is_reshape_transpose_reshape() {
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[1, 8, 2, 3])
        .node(
            "DepthToSpace",
            &["x"],
            &["y"],
            vec![attr::int("blocksize", 2), attr::string("mode", "CRD")],
        )
        .output("y", elem::FLOAT, &[1, 2, 4, 6]);
    let m = ok(&b);
    assert_eq!(out_ty(&m, "y"), f32t(&[1, 2, 4, 6]));
    let names = op_names(&m.graph);
    assert_eq!(
        names.iter().filter(|n| **n == "reshape").count(),
        2,
        "{names:?}"
    );
    assert!(names.contains(&"transpose"));
}

#[test]
fn conv_transpose_output_geometry() {
    // 3x3 input, 3x3 kernel, stride 2, output_padding 1: 2*2 + 1 + 3 = 8 per axis.
    let mut b = ModelBuilder::new("g").opset("", 22);
    b.input("x", elem::FLOAT, &[1, 1, 3, 3])
        .input("w", elem::FLOAT, &[1, 2, 3, 3])
        .node(
            "ConvTranspose",
            &["x", "w"],
            &["y"],
            vec![
                attr::ints("strides", &[2, 2]),
                attr::ints("output_padding", &[1, 1]),
            ],
        )
        .output("y", elem::FLOAT, &[1, 2, 8, 8]);
    let m = ok(&b);
    assert_eq!(
        out_op(&m, "y"),
        Op::ConvTranspose(ConvTranspose {
            kernel_shape: vec![3, 3],
            strides: vec![2, 2],
            dilations: vec![1, 1],
            pads_begin: vec![0, 0],
            output: vec![8, 8],
            group: 1,
        })
    );
    // output_shape 10x8 with strides 3x2: full extents 9 and 7, so totals -1 and -1; NOTSET puts
    // total - floor(total / 2) = 0 at the beginning.
    let mut b = ModelBuilder::new("g").opset("", 22);
    b.input("x", elem::FLOAT, &[1, 1, 3, 3])
        .input("w", elem::FLOAT, &[1, 2, 3, 3])
        .node(
            "ConvTranspose",
            &["x", "w"],
            &["y"],
            vec![
                attr::ints("strides", &[3, 2]),
                attr::ints("output_shape", &[10, 8]),
            ],
        )
        .output("y", elem::FLOAT, &[1, 2, 10, 8]);
    match out_op(&ok(&b), "y") {
        Op::ConvTranspose(c) => {
            assert_eq!(c.output, vec![10, 8]);
            assert_eq!(c.pads_begin, vec![0, 0]);
        }
        other => panic!("expected conv_transpose, got {}", other.name()),
    }
}

#[test]
fn lp_pool_decomposes_to_a_root_of_a_window_sum() {
    let mut b = ModelBuilder::new("g").opset("", 22);
    b.input("x", elem::FLOAT, &[1, 1, 4])
        .node(
            "LpPool",
            &["x"],
            &["y"],
            vec![attr::ints("kernel_shape", &[2]), attr::int("p", 3)],
        )
        .output("y", elem::FLOAT, &[1, 1, 3]);
    let m = ok(&b);
    assert_eq!(out_ty(&m, "y"), f32t(&[1, 1, 3]));
    let names = op_names(&m.graph);
    for want in ["abs", "pow", "avg_pool", "mul"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

#[test]
fn scatter_and_gather_variants() {
    let mut b = ModelBuilder::new("g").opset("", 18);
    b.input("x", elem::FLOAT, &[4, 3])
        .input("i", elem::INT64, &[2, 1])
        .input("u", elem::FLOAT, &[2, 3])
        .node(
            "ScatterND",
            &["x", "i", "u"],
            &["s"],
            vec![attr::string("reduction", "mul")],
        )
        .node("GatherND", &["x", "i"], &["g"], vec![])
        .output("s", elem::FLOAT, &[4, 3])
        .output("g", elem::FLOAT, &[2, 3]);
    let m = ok(&b);
    match out_op(&m, "s") {
        Op::Movement(Movement::ScatterNd(s)) => assert_eq!(s.reduction, Reduction::Mul),
        other => panic!("expected scatter_nd, got {}", other.name()),
    }
    assert_eq!(out_ty(&m, "g"), f32t(&[2, 3]));
    // Runtime shape parameters are reported, not guessed.
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[2])
        .input("r", elem::INT64, &[1])
        .node("Tile", &["x", "r"], &["y"], vec![])
        .output("y", elem::FLOAT, &[4]);
    let list = unsupported(&b);
    assert!(list[0].reason.contains("run time"), "{}", list[0].reason);
}
