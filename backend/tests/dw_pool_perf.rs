//! Throughput probes for the depthwise convolution, pooling and softmax kernels: the layer shapes of
//! MobileNetV2, ShuffleNetV2 and EfficientNet-B0, timed one graph per shape and one graph per model
//! (every depthwise layer of the model side by side), compiled for the host CPU. They print numbers
//! and assert nothing about time. Run with
//! `cargo test --release -p kiln-backend --test dw_pool_perf -- --ignored --nocapture` (x86_64 host).

mod common;
use common::*;
use kiln_backend::{compile, Options, Target, WeightsMode};
use kiln_ir::ops::*;
use kiln_ir::Op;

/// Times `m_run` of the case (CPU time) and returns milliseconds per run.
fn time_ms(c: &Case) -> f64 {
    let opts = Options {
        winograd: kiln_backend::Winograd::Auto,
        name: "m".into(),
        target: Target::parse("x86_64-unknown-linux-gnu", "native", &[]).unwrap(),
        weights: WeightsMode::Embedded,
        model_file: "bench.onnx".into(),
    };
    let art = compile(&c.g, &opts).unwrap();
    Timer::build(c, &art).ms()
}

/// A depthwise layer: channels, input side, kernel, stride (square, pad k/2).
type Dw = (usize, usize, usize, usize);

const MOBILENET_V2: &[(Dw, usize)] = &[
    ((32, 112, 3, 1), 1),
    ((96, 112, 3, 2), 1),
    ((144, 56, 3, 1), 1),
    ((144, 56, 3, 2), 1),
    ((192, 28, 3, 1), 2),
    ((192, 28, 3, 2), 1),
    ((384, 14, 3, 1), 4),
    ((576, 14, 3, 1), 2),
    ((576, 14, 3, 2), 1),
    ((960, 7, 3, 1), 3),
];

const SHUFFLENET_V2: &[(Dw, usize)] = &[
    ((24, 56, 3, 2), 1),
    ((58, 56, 3, 2), 1),
    ((58, 28, 3, 1), 3),
    ((116, 28, 3, 2), 2),
    ((116, 14, 3, 1), 7),
    ((232, 14, 3, 2), 2),
    ((232, 7, 3, 1), 3),
];

const EFFICIENTNET_B0: &[(Dw, usize)] = &[
    ((32, 112, 3, 1), 1),
    ((96, 112, 3, 2), 1),
    ((144, 56, 3, 1), 1),
    ((144, 56, 5, 2), 1),
    ((240, 28, 5, 1), 1),
    ((240, 28, 3, 2), 1),
    ((480, 14, 3, 1), 2),
    ((480, 14, 5, 1), 1),
    ((672, 14, 5, 1), 2),
    ((672, 14, 5, 2), 1),
    ((1152, 7, 5, 1), 3),
    ((1152, 7, 3, 1), 1),
];

fn add_dw(c: &mut Case, i: usize, (ch, side, k, s): Dw, post: Vec<UnaryOp>) {
    let x = c.x(&format!("x{i}"), &[1, ch, side, side]);
    let w = c.weight(&format!("w{i}"), &[ch, 1, k, k]);
    let b = c.weight(&format!("b{i}"), &[ch]);
    let p = k / 2;
    let op = Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: vec![k, k],
        strides: vec![s, s],
        dilations: vec![1, 1],
        pads: vec![p; 4],
        group: ch,
        post,
    });
    c.out(&format!("dw{i}"), op, &[x, w, b]);
}

fn relu6() -> Vec<UnaryOp> {
    vec![UnaryOp::Clip { min: 0.0, max: 6.0 }]
}

#[test]
#[ignore]
fn depthwise_layers() {
    for (name, layers) in [
        ("mobilenet_v2", MOBILENET_V2),
        ("shufflenet_v2", SHUFFLENET_V2),
        ("efficientnet_b0", EFFICIENTNET_B0),
    ] {
        let mut total = 0.0;
        let mut model = Case::new(name);
        for (i, &(l, count)) in layers.iter().enumerate() {
            let mut c = Case::new("dw");
            add_dw(&mut c, 0, l, relu6());
            let ms = time_ms(&c);
            let flops = 2.0 * (l.0 * (l.1 / l.3) * (l.1 / l.3) * l.2 * l.2) as f64;
            println!(
                "{name} dw c{} {}x{} k{} s{} (x{count}): {:.4} ms  {:.2} GFLOP/s",
                l.0,
                l.1,
                l.1,
                l.2,
                l.3,
                ms,
                flops / ms * 1e-6
            );
            total += ms * count as f64;
            add_dw(&mut model, i, l, relu6());
        }
        println!("{name}: depthwise total (sum of layers x count) {total:.3} ms");
        let _ = model;
    }
}

#[test]
#[ignore]
fn pools_and_softmax() {
    let maxpool = |c: &mut Case, ch: usize, side: usize, k: usize, s: usize, p: usize| {
        let x = c.x("x", &[1, ch, side, side]);
        c.out(
            "pool",
            Op::Pool(Pool {
                layout: kiln_ir::ops::Layout::Nchw,
                kind: PoolKind::Max,
                kernel_shape: vec![k, k],
                strides: vec![s, s],
                pads: vec![p; 4],
                dilations: vec![1, 1],
                ceil_mode: false,
                count_include_pad: false,
            }),
            &[x],
        );
    };
    for (ch, side, k, s, p) in [
        (64, 112, 3, 2, 1),
        (24, 112, 3, 2, 1),
        (64, 111, 3, 2, 0),
        (128, 55, 3, 2, 0),
        (128, 10, 5, 1, 2),
    ] {
        let mut c = Case::new("mp");
        maxpool(&mut c, ch, side, k, s, p);
        println!(
            "maxpool c{ch} {side}x{side} k{k} s{s} p{p}: {:.4} ms",
            time_ms(&c)
        );
    }
    let mut c = Case::new("ap");
    let x = c.x("x", &[1, 64, 56, 56]);
    c.out(
        "pool",
        Op::Pool(Pool {
            layout: kiln_ir::ops::Layout::Nchw,
            kind: PoolKind::Avg,
            kernel_shape: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![1; 4],
            dilations: vec![1, 1],
            ceil_mode: false,
            count_include_pad: false,
        }),
        &[x],
    );
    println!("avgpool c64 56x56 k3 s1 p1: {:.4} ms", time_ms(&c));
    for (ch, side) in [(1280, 7), (96, 56), (1000, 13), (32, 112)] {
        let mut c = Case::new("gap");
        let x = c.x("x", &[1, ch, side, side]);
        c.out(
            "gap",
            Op::GlobalPool(GlobalPool {
                layout: kiln_ir::ops::Layout::Nchw,
                kind: PoolKind::Avg,
            }),
            &[x],
        );
        println!("global_avg_pool c{ch} {side}x{side}: {:.4} ms", time_ms(&c));
    }
    for (rows, n, axis) in [(64, 1000, 1), (12 * 128, 128, 1)] {
        let mut c = Case::new("sm");
        let x = c.x("x", &[rows, n]);
        c.out(
            "sm",
            Op::Softmax(Softmax {
                axis,
                flatten: false,
            }),
            &[x],
        );
        println!("softmax {rows}x{n}: {:.4} ms", time_ms(&c));
    }
    let mut c = Case::new("rm");
    let x = c.x("x", &[1, 1024, 7, 7]);
    c.out(
        "rm",
        Op::Reduce(Reduce {
            kind: ReduceKind::Mean,
            axes: vec![2, 3],
            keepdims: false,
        }),
        &[x],
    );
    println!("reduce_mean 1024x49 axes 2,3: {:.4} ms", time_ms(&c));
    let mut c = Case::new("rm0");
    let x = c.x("x", &[64, 768]);
    c.out(
        "rm",
        Op::Reduce(Reduce {
            kind: ReduceKind::Sum,
            axes: vec![0],
            keepdims: false,
        }),
        &[x],
    );
    println!("reduce_sum 64x768 axis 0: {:.4} ms", time_ms(&c));
    let mut c = Case::new("ln");
    let x = c.x("x", &[128, 768]);
    let s = c.weight("s", &[768]);
    let b = c.weight("b", &[768]);
    c.out(
        "ln",
        Op::LayerNorm(LayerNorm {
            axis: 1,
            epsilon: 1e-5,
        }),
        &[x, s, b],
    );
    println!("layer_norm 128x768: {:.4} ms", time_ms(&c));
}

/// Prints the CLIF of the 3x3 depthwise kernel (set `KILN_DW` to `k,s` for another one).
#[test]
#[ignore]
fn print_depthwise_clif() {
    let (k, s) = std::env::var("KILN_DW")
        .ok()
        .and_then(|v| {
            let p: Vec<usize> = v.split(',').filter_map(|t| t.parse().ok()).collect();
            (p.len() == 2).then(|| (p[0], p[1]))
        })
        .unwrap_or((3, 1));
    let mut c = Case::new("dw");
    add_dw(&mut c, 0, (8, 20, k, s), relu6());
    let opts = Options {
        winograd: kiln_backend::Winograd::Auto,
        name: "m".into(),
        target: Target::parse("x86_64-unknown-linux-gnu", "native", &[]).unwrap(),
        weights: WeightsMode::Embedded,
        model_file: "bench.onnx".into(),
    };
    for kc in kiln_backend::compile_clif(&c.g, &opts).unwrap() {
        if kc.symbol.contains("conv") {
            println!("{}", kc.clif);
        }
    }
}
