//! Depthwise convolution and pooling (the sliding-window engine and the generic kernels it falls
//! back to) against the reference evaluator, over the shapes whose edges differ: widths below,
//! at and around the vector width, strides 1 and 2 (and 3, the generic path), asymmetric and
//! large pads, dilations, fused activations, 1-D windows. Each graph holds many independent
//! nodes so that one compile and one run (native, and under qemu for aarch64) checks them all.

mod common;
use common::*;
use kiln_ir::ops::*;
use kiln_ir::{DType, Op, Tensor, TensorType};

/// One depthwise convolution: input dims, kernel, strides, dilations, pads, bias, activations.
struct Dw {
    x: Vec<usize>,
    k: Vec<usize>,
    s: Vec<usize>,
    d: Vec<usize>,
    p: Vec<usize>,
    bias: bool,
    post: Vec<UnaryOp>,
}

fn dw(x: &[usize], k: &[usize], s: &[usize], p: &[usize]) -> Dw {
    Dw {
        x: x.to_vec(),
        k: k.to_vec(),
        s: s.to_vec(),
        d: vec![1; k.len()],
        p: p.to_vec(),
        bias: true,
        post: vec![],
    }
}

fn add_dw(c: &mut Case, i: usize, l: &Dw) {
    let ch = l.x[1];
    let x = c.x(&format!("x{i}"), &l.x);
    let mut wd = vec![ch, 1];
    wd.extend(&l.k);
    let w = c.weight(&format!("w{i}"), &wd);
    let mut ins = vec![x, w];
    if l.bias {
        ins.push(c.weight(&format!("b{i}"), &[ch]));
    }
    let op = Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: l.k.clone(),
        strides: l.s.clone(),
        dilations: l.d.clone(),
        pads: l.p.clone(),
        group: ch,
        post: l.post.clone(),
    });
    c.out(&format!("dw{i}"), op, &ins);
}

fn check_dws(name: &str, layers: &[Dw]) {
    let mut c = Case::new(name);
    for (i, l) in layers.iter().enumerate() {
        add_dw(&mut c, i, l);
    }
    check(&c);
}

#[test]
fn depthwise_3x3_stride1_widths() {
    // Every width from 1 to 18 (below, at and around the vector width and the loop's block of
    // eight), with heights that make 1, 2 and many rows.
    let layers: Vec<Dw> = (1..=18)
        .map(|w| dw(&[1, 3, 1 + w % 5, w], &[3, 3], &[1, 1], &[1, 1, 1, 1]))
        .collect();
    check_dws("dw3s1", &layers);
}

#[test]
fn depthwise_3x3_stride2_widths() {
    let layers: Vec<Dw> = (1..=20)
        .map(|w| dw(&[1, 2, 2 + w % 6, w], &[3, 3], &[2, 2], &[1, 1, 1, 1]))
        .collect();
    check_dws("dw3s2", &layers);
}

#[test]
fn depthwise_5x5() {
    let mut layers = Vec::new();
    for w in [3, 5, 6, 7, 9, 14, 15, 16, 28] {
        layers.push(dw(&[1, 2, w, w], &[5, 5], &[1, 1], &[2, 2, 2, 2]));
        layers.push(dw(&[1, 2, w + 1, w], &[5, 5], &[2, 2], &[2, 2, 2, 2]));
    }
    check_dws("dw5", &layers);
}

#[test]
fn depthwise_model_shapes_with_activations() {
    // MobileNetV2 / EfficientNet-like layers (scaled down in channels), ReLU6 and others fused.
    let relu6 = vec![UnaryOp::Clip { min: 0.0, max: 6.0 }];
    let mut layers = vec![
        dw(&[1, 4, 56, 56], &[3, 3], &[1, 1], &[1, 1, 1, 1]),
        dw(&[1, 3, 56, 56], &[3, 3], &[2, 2], &[1, 1, 1, 1]),
        dw(&[1, 5, 28, 28], &[5, 5], &[1, 1], &[2, 2, 2, 2]),
        dw(&[1, 3, 14, 14], &[5, 5], &[2, 2], &[2, 2, 2, 2]),
        dw(&[2, 6, 7, 7], &[3, 3], &[1, 1], &[1, 1, 1, 1]),
        dw(&[1, 7, 7, 7], &[5, 5], &[1, 1], &[2, 2, 2, 2]),
        dw(&[1, 2, 112, 112], &[3, 3], &[2, 2], &[1, 1, 1, 1]),
    ];
    let posts = [
        relu6.clone(),
        vec![UnaryOp::Relu],
        relu6.clone(),
        vec![UnaryOp::Sigmoid],
        vec![UnaryOp::Clip {
            min: -0.5,
            max: f32::INFINITY,
        }],
        vec![UnaryOp::Relu, UnaryOp::Neg],
        relu6,
    ];
    for (l, p) in layers.iter_mut().zip(posts) {
        l.post = p;
    }
    layers[4].bias = false;
    check_dws("dw_models", &layers);
}

#[test]
fn depthwise_odd_geometry() {
    let mut layers = vec![
        // No padding, asymmetric padding, padding larger than the kernel needs (more outputs).
        dw(&[1, 2, 9, 11], &[3, 3], &[1, 1], &[0, 0, 0, 0]),
        dw(&[1, 2, 9, 11], &[3, 3], &[1, 1], &[0, 1, 2, 0]),
        dw(&[1, 2, 8, 10], &[3, 3], &[2, 2], &[1, 2, 2, 3]),
        dw(&[1, 2, 6, 9], &[2, 2], &[1, 2], &[1, 0, 0, 1]),
        // Rectangular kernels, row stride 3, mixed strides.
        dw(&[1, 3, 10, 13], &[3, 1], &[1, 1], &[1, 0, 1, 0]),
        dw(&[1, 3, 10, 13], &[1, 3], &[1, 1], &[0, 1, 0, 1]),
        dw(&[1, 3, 17, 12], &[3, 3], &[3, 2], &[1, 1, 1, 1]),
        dw(&[1, 3, 12, 17], &[3, 3], &[2, 1], &[1, 1, 1, 1]),
        // 7x7 kernel on a 7x7 image, 1x1 kernel with stride 2.
        dw(&[1, 2, 7, 7], &[7, 7], &[1, 1], &[3, 3, 3, 3]),
        dw(&[1, 2, 9, 9], &[1, 1], &[2, 2], &[0, 0, 0, 0]),
        // Column stride 3: the generic kernel.
        dw(&[1, 2, 9, 14], &[3, 3], &[1, 3], &[1, 1, 1, 1]),
        // 1-D, and 3-D (the generic kernel).
        dw(&[2, 3, 19], &[3], &[1], &[1, 1]),
        dw(&[1, 3, 23], &[5], &[2], &[2, 2]),
        dw(
            &[1, 2, 4, 5, 6],
            &[3, 3, 3],
            &[1, 1, 1],
            &[1, 1, 1, 1, 1, 1],
        ),
    ];
    // Dilations, stride 1 and 2.
    let mut d = dw(&[1, 2, 12, 15], &[3, 3], &[1, 1], &[2, 2, 2, 2]);
    d.d = vec![2, 2];
    layers.push(d);
    let mut d = dw(&[1, 2, 13, 17], &[3, 3], &[2, 2], &[2, 3, 2, 3]);
    d.d = vec![2, 3];
    layers.push(d);
    let mut d = dw(&[1, 2, 11, 11], &[3, 3], &[1, 2], &[3, 3, 3, 3]);
    d.d = vec![3, 3];
    d.post = vec![UnaryOp::Relu];
    layers.push(d);
    layers[1].bias = false;
    layers[11].post = vec![UnaryOp::Clip { min: 0.0, max: 6.0 }];
    layers[13].post = vec![UnaryOp::Relu];
    check_dws("dw_odd", &layers);
}

#[allow(clippy::too_many_arguments)]
fn pool(
    kind: PoolKind,
    k: &[usize],
    s: &[usize],
    p: &[usize],
    d: &[usize],
    ceil: bool,
    cip: bool,
) -> Op {
    Op::Pool(Pool {
        layout: kiln_ir::ops::Layout::Nchw,
        kind,
        kernel_shape: k.to_vec(),
        strides: s.to_vec(),
        pads: p.to_vec(),
        dilations: d.to_vec(),
        ceil_mode: ceil,
        count_include_pad: cip,
    })
}

#[test]
fn max_pool_shapes() {
    use PoolKind::Max;
    let mut c = Case::new("maxpools");
    let mut i = 0;
    let mut add = |c: &mut Case, x: &[usize], op: Op| {
        let v = c.x(&format!("x{i}"), x);
        c.out(&format!("p{i}"), op, &[v]);
        i += 1;
    };
    // ResNet / ShuffleNet stem pool at many widths, SqueezeNet's unpadded one, ceil mode.
    for w in [1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 57] {
        let x = [1, 2, w.max(2), w];
        add(
            &mut c,
            &x,
            pool(Max, &[3, 3], &[2, 2], &[1; 4], &[1, 1], false, false),
        );
        if w >= 3 {
            add(
                &mut c,
                &x,
                pool(Max, &[3, 3], &[2, 2], &[0; 4], &[1, 1], true, false),
            );
        }
    }
    add(
        &mut c,
        &[1, 3, 10, 10],
        pool(Max, &[5, 5], &[1, 1], &[2; 4], &[1, 1], false, false),
    );
    add(
        &mut c,
        &[2, 3, 8, 8],
        pool(Max, &[2, 2], &[2, 2], &[0; 4], &[1, 1], false, false),
    );
    add(
        &mut c,
        &[1, 2, 11, 12],
        pool(Max, &[3, 3], &[1, 2], &[1, 0, 1, 2], &[2, 2], false, false),
    );
    add(
        &mut c,
        &[1, 2, 11, 12],
        pool(Max, &[2, 2], &[3, 3], &[0; 4], &[1, 1], false, false),
    );
    add(
        &mut c,
        &[1, 2, 25],
        pool(Max, &[3], &[2], &[1, 1], &[1], false, false),
    );
    add(
        &mut c,
        &[1, 2, 4, 5, 6],
        pool(
            Max,
            &[2, 2, 2],
            &[1, 2, 2],
            &[0; 6],
            &[1, 1, 1],
            false,
            false,
        ),
    );
    check(&c);
}

#[test]
fn avg_pool_shapes() {
    use PoolKind::Avg;
    let mut c = Case::new("avgpools");
    let mut i = 0;
    let mut add = |c: &mut Case, x: &[usize], op: Op| {
        let v = c.x(&format!("x{i}"), x);
        c.out(&format!("p{i}"), op, &[v]);
        i += 1;
    };
    for cip in [false, true] {
        for w in [3, 4, 6, 7, 9, 14, 19] {
            let x = [1, 2, w, w];
            add(
                &mut c,
                &x,
                pool(Avg, &[3, 3], &[1, 1], &[1; 4], &[1, 1], false, cip),
            );
            add(
                &mut c,
                &x,
                pool(Avg, &[3, 3], &[2, 2], &[1; 4], &[1, 1], true, cip),
            );
        }
        add(
            &mut c,
            &[1, 2, 12, 13],
            pool(Avg, &[2, 3], &[2, 1], &[0, 1, 1, 2], &[1, 1], false, cip),
        );
        add(
            &mut c,
            &[1, 2, 12, 13],
            pool(Avg, &[3, 3], &[1, 2], &[2, 2, 2, 2], &[2, 2], false, cip),
        );
        add(
            &mut c,
            &[1, 3, 22],
            pool(Avg, &[4], &[2], &[1, 2], &[1], true, cip),
        );
    }
    add(
        &mut c,
        &[2, 3, 8, 8],
        pool(Avg, &[2, 2], &[2, 2], &[0; 4], &[1, 1], false, false),
    );
    add(
        &mut c,
        &[1, 2, 13, 13],
        pool(Avg, &[3, 3], &[3, 3], &[1; 4], &[1, 1], false, false),
    );
    check(&c);
}

#[test]
fn max_pool_propagates_nan() {
    // One NaN in the middle of an 8x8 plane and one on its border: every window that covers
    // them is NaN, the others are not (the reference evaluator decides which).
    let mut c = Case::new("maxpool_nan");
    let mut v: Vec<f32> = (0..64).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
    v[2 * 8 + 3] = f32::NAN;
    v[7 * 8 + 7] = f32::NAN;
    c.inputs.push(Tensor::from_f32(vec![1, 1, 8, 8], &v));
    let x =
        c.g.add_input("x", TensorType::new(DType::F32, &[1, 1, 8, 8]));
    c.out(
        "p",
        pool(
            PoolKind::Max,
            &[3, 3],
            &[2, 2],
            &[1; 4],
            &[1, 1],
            false,
            false,
        ),
        &[x],
    );
    c.out(
        "q",
        pool(
            PoolKind::Max,
            &[3, 3],
            &[1, 1],
            &[1; 4],
            &[1, 1],
            false,
            false,
        ),
        &[x],
    );
    check(&c);
}

#[test]
fn global_pools() {
    let mut c = Case::new("gpools");
    for (i, (dims, kind)) in [
        (vec![1, 5, 7, 7], PoolKind::Avg),
        (vec![2, 3, 13, 13], PoolKind::Max),
        (vec![1, 6, 3], PoolKind::Avg),
        (vec![1, 4, 1, 1], PoolKind::Max),
    ]
    .into_iter()
    .enumerate()
    {
        let x = c.x(&format!("x{i}"), &dims);
        c.out(
            &format!("g{i}"),
            Op::GlobalPool(GlobalPool {
                kind,
                layout: kiln_ir::ops::Layout::Nchw,
            }),
            &[x],
        );
    }
    check(&c);
}

#[test]
fn split_parts_match_the_serial_run() {
    // The window kernels split their planes between parts (`Kb::share`): run every part count
    // from 2 to 9, tasks in reverse order, and compare each output bit for bit with `m_run`.
    let mut c = Case::new("split");
    let relu6 = vec![UnaryOp::Clip { min: 0.0, max: 6.0 }];
    let mut l = dw(&[1, 7, 20, 20], &[3, 3], &[1, 1], &[1, 1, 1, 1]);
    l.post = relu6;
    add_dw(&mut c, 0, &l);
    add_dw(
        &mut c,
        1,
        &dw(&[2, 5, 33, 31], &[5, 5], &[2, 2], &[2, 2, 2, 2]),
    );
    add_dw(
        &mut c,
        2,
        &dw(&[1, 6, 8, 9, 7], &[3, 3, 3], &[1, 1, 1], &[1; 6]),
    );
    let x = c.x("px", &[1, 9, 64, 64]);
    c.out(
        "mp",
        pool(
            PoolKind::Max,
            &[3, 3],
            &[2, 2],
            &[1; 4],
            &[1, 1],
            false,
            false,
        ),
        &[x],
    );
    let x = c.x("ax", &[1, 6, 8, 40, 40]);
    c.out(
        "ap",
        pool(
            PoolKind::Avg,
            &[2, 2, 2],
            &[2, 2, 2],
            &[0; 6],
            &[1, 1, 1],
            false,
            false,
        ),
        &[x],
    );
    let x = c.x("gx", &[1, 70, 40, 40]);
    c.out(
        "gp",
        Op::GlobalPool(GlobalPool {
            layout: kiln_ir::ops::Layout::Nchw,
            kind: PoolKind::Avg,
        }),
        &[x],
    );
    for arch in ARCHES {
        if let Err(why) = arch.toolchain() {
            println!("skipping {arch:?}: {why}");
            continue;
        }
        let art = kiln_backend::compile(
            &c.g,
            &options("m", arch, kiln_backend::WeightsMode::Embedded),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_artifact(dir.path(), "m", &art);
        for (i, t) in c.inputs.iter().enumerate() {
            std::fs::write(dir.path().join(format!("m_in{i}.bin")), t.bytes()).unwrap();
        }
        let main = parallel_driver(&c);
        std::fs::write(dir.path().join("main.c"), main).unwrap();
        let (code, _, err) = build_and_run(dir.path(), arch, &["m.o"]);
        assert_eq!(code, 0, "{arch:?}: {err}");
    }
    // And the serial run is right.
    check(&c);
}
