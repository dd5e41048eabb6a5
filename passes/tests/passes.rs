//! Before/after snapshots of each pass on small targeted graphs.

use kiln_ir::ops::{BinaryOp, Reshape, ShapeOf, UnaryOp};
use kiln_ir::{print, verify, DType, Graph, Op, PrintOptions, Tensor, TensorType};
use kiln_passes::{pipeline, ConstFold, DeadNodes, Driver, Fuel, Pass, RemoveIdentity};

fn text(g: &Graph) -> String {
    print(g, PrintOptions::default())
}

/// y = relu(x + (a * b)) where a*b is constant, plus a dead branch and an identity.
fn sample() -> Graph {
    let mut g = Graph::new("sample");
    let x = g.add_input("x", TensorType::new(DType::F32, &[2, 3]));
    let a = g.add_const("a", Tensor::from_f32(vec![3], &[1.0, 2.0, 3.0]));
    let b = g.add_const("b", Tensor::from_f32(vec![3], &[0.5, 0.5, -2.0]));
    let ab = g
        .add_node(
            "ab",
            Op::Binary(BinaryOp::Mul),
            &[Some(a), Some(b)],
            &["ab"],
        )
        .unwrap()[0];
    let sum = g
        .add_node(
            "sum",
            Op::Binary(BinaryOp::Add),
            &[Some(x), Some(ab)],
            &["sum"],
        )
        .unwrap()[0];
    let id = g
        .add_node("id", Op::Identity, &[Some(sum)], &["id"])
        .unwrap()[0];
    let y = g
        .add_node("act", Op::Unary(UnaryOp::Relu), &[Some(id)], &["y"])
        .unwrap()[0];
    g.add_node("unused", Op::Unary(UnaryOp::Tanh), &[Some(x)], &["unused"])
        .unwrap();
    g.outputs.push(("y".into(), y));
    g
}

#[test]
fn const_fold_replaces_constant_subgraph() {
    let mut g = sample();
    let before = text(&g);
    let changed = ConstFold::default()
        .run(&mut g, &mut Fuel::unlimited())
        .unwrap();
    assert!(changed);
    verify(&g).unwrap();
    insta::assert_snapshot!("const_fold_before", before);
    insta::assert_snapshot!("const_fold_after", text(&g));
    // The folded constant holds a*b computed by hand: [0.5, 1.0, -6.0].
    let sum = g
        .node_ids()
        .into_iter()
        .find(|&id| g.node(id).name == "sum")
        .unwrap();
    let folded = g.input(sum, 1).unwrap();
    assert_eq!(
        g.const_value(folded).unwrap().to_f32_vec(),
        vec![0.5, 1.0, -6.0]
    );
}

#[test]
fn shape_of_static_value_folds() {
    let mut g = Graph::new("shape");
    let x = g.add_input("x", TensorType::new(DType::F32, &[2, 3, 4]));
    let s = g
        .add_node(
            "s",
            Op::Shape(ShapeOf {
                start: 1,
                end: None,
            }),
            &[Some(x)],
            &["s"],
        )
        .unwrap()[0];
    g.outputs.push(("s".into(), s));
    ConstFold::default()
        .run(&mut g, &mut Fuel::unlimited())
        .unwrap();
    let out = g.outputs[0].1;
    assert_eq!(g.const_value(out).unwrap().to_i64_vec(), vec![3, 4]);
}

#[test]
fn identity_and_dce() {
    let mut g = sample();
    let mut fuel = Fuel::unlimited();
    assert!(RemoveIdentity.run(&mut g, &mut fuel).unwrap());
    assert!(DeadNodes.run(&mut g, &mut fuel).unwrap());
    verify(&g).unwrap();
    insta::assert_snapshot!("identity_dce_after", text(&g));
    let names: Vec<String> = g
        .node_ids()
        .into_iter()
        .map(|id| g.node(id).name.clone())
        .collect();
    assert!(!names.contains(&"unused".to_string()));
    assert!(!names.contains(&"id".to_string()));
    // Graph inputs survive even when nothing reads them.
    assert!(names.contains(&"x".to_string()));
}

#[test]
fn fuel_limits_rewrites() {
    let mut g = sample();
    let driver = Driver {
        fuel: Some(1),
        verify: true,
        ..Driver::default()
    };
    let report = driver.run(&mut g, &pipeline()).unwrap();
    assert_eq!(report.rewrites, 1);
    // Only the first rewrite (folding a*b) happened: the identity and the dead branch remain.
    let names: Vec<String> = g
        .node_ids()
        .into_iter()
        .map(|id| g.node(id).name.clone())
        .collect();
    assert!(names.contains(&"id".to_string()) && names.contains(&"unused".to_string()));
}

#[test]
fn driver_prints_after_named_pass_and_rejects_unknown() {
    let mut g = sample();
    let driver = Driver {
        print_after: Some("const-fold".into()),
        verify: true,
        ..Driver::default()
    };
    let report = driver.run(&mut g, &pipeline()).unwrap();
    let printed = report.printed.unwrap();
    assert!(
        printed.contains("\"unused\""),
        "dce has not run yet after const-fold:\n{printed}"
    );
    // Every pass reports, in pipeline order: const-fold first, dce last (the list in between grows).
    let names: Vec<&str> = report.passes.iter().map(|p| p.name).collect();
    assert_eq!(names.len(), pipeline().len());
    assert_eq!(names.first(), Some(&"const-fold"));
    assert_eq!(names.last(), Some(&"dce"));

    let bad = Driver {
        print_after: Some("fuse".into()),
        ..Driver::default()
    };
    let err = bad.run(&mut sample(), &pipeline()).unwrap_err().to_string();
    assert!(err.contains("fuse") && err.contains("const-fold"), "{err}");
}

#[test]
fn const_fold_skips_large_growth() {
    // reshape of a constant keeps its size: folded. The guard only blocks results far larger than inputs.
    let mut g = Graph::new("growth");
    let c = g.add_const("c", Tensor::from_f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]));
    let r = g
        .add_node(
            "r",
            Op::Reshape(Reshape {
                shape: vec![4],
                allowzero: false,
            }),
            &[Some(c)],
            &["r"],
        )
        .unwrap()[0];
    g.outputs.push(("r".into(), r));
    let pass = ConstFold {
        max_growth_bytes: 0,
    };
    assert!(pass.run(&mut g, &mut Fuel::unlimited()).unwrap());
    let out = g.outputs[0].1;
    assert_eq!(g.const_value(out).unwrap().shape(), &[4]);
}
