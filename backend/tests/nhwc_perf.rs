//! Throughput probe: the same layer compiled channels-first (NCHW) and channels-last (NHWC) for
//! the host CPU, timed one graph per layer and layout: MobileNetV2's depthwise and pointwise
//! layers, EfficientNet-B0's 5x5 depthwise layers, ResNet's 3x3 convolutions and stem, the stem
//! max pool, global pools. Prints a table
//! (ms per run, single thread, best of five rounds) and asserts nothing about time. Run with
//! `cargo test --release -p kiln-backend --test nhwc_perf -- --ignored --nocapture` (x86_64).

mod common;
use common::*;
use kiln_backend::{compile, Options, Target, WeightsMode};
use kiln_ir::ops::*;
use kiln_ir::Op;

/// Times `m_run` of the case (thread CPU time) and returns milliseconds per run.
fn time_ms(c: &Case) -> f64 {
    let opts = Options {
        winograd: kiln_backend::Winograd::Auto,
        name: "m".into(),
        target: Target::parse("x86_64-unknown-linux-gnu", "native", &[]).unwrap(),
        weights: WeightsMode::Embedded,
        model_file: "bench.onnx".into(),
    };
    let art = compile(&c.g, &opts).unwrap();
    let timer = Timer::build(c, &art);
    if let Ok(keep) = std::env::var("NHWC_KEEP") {
        // Keep the object of the last timed graph, to read its machine code.
        let dir = timer.dir();
        let _ = std::fs::copy(dir.join("m.o"), format!("{keep}.o"));
        let _ = std::fs::copy(dir.join("prog"), format!("{keep}.prog"));
        for i in 0..c.inputs.len() {
            let _ = std::fs::copy(
                dir.join(format!("m_in{i}.bin")),
                format!("{keep}_in{i}.bin"),
            );
        }
    }
    timer.ms()
}

/// A square layer: input channels, side, output channels, kernel, stride, group, activations.
#[derive(Clone)]
struct Layer {
    name: &'static str,
    c: usize,
    side: usize,
    m: usize,
    k: usize,
    s: usize,
    group: usize,
    post: Vec<UnaryOp>,
}

/// The layer as one graph in `layout` (input and output in that layout).
fn conv_case(l: &Layer, layout: Layout) -> Case {
    let mut c = Case::new("layer");
    let xd = match layout {
        Layout::Nchw => vec![1, l.c, l.side, l.side],
        Layout::Nhwc => vec![1, l.side, l.side, l.c],
    };
    let x = c.x("x", &xd);
    let w = c.weight("w", &[l.m, l.c / l.group, l.k, l.k]);
    let b = c.weight("b", &[l.m]);
    c.out(
        "conv",
        Op::Conv(Conv {
            kernel_shape: vec![l.k, l.k],
            strides: vec![l.s, l.s],
            dilations: vec![1, 1],
            pads: vec![l.k / 2; 4],
            group: l.group,
            post: l.post.clone(),
            layout,
        }),
        &[x, w, b],
    );
    c
}

fn relu6() -> Vec<UnaryOp> {
    vec![UnaryOp::Clip { min: 0.0, max: 6.0 }]
}

fn dw(c: usize, side: usize, s: usize) -> Layer {
    Layer {
        name: "mbv2 dw 3x3",
        c,
        side,
        m: c,
        k: 3,
        s,
        group: c,
        post: relu6(),
    }
}

fn dw5(c: usize, side: usize, s: usize) -> Layer {
    Layer {
        name: "effnet dw 5x5",
        k: 5,
        ..dw(c, side, s)
    }
}

fn pw(c: usize, side: usize, m: usize, post: Vec<UnaryOp>) -> Layer {
    Layer {
        name: "mbv2 pw 1x1",
        c,
        side,
        m,
        k: 1,
        s: 1,
        group: 1,
        post,
    }
}

fn conv(name: &'static str, c: usize, side: usize, m: usize, k: usize, s: usize) -> Layer {
    Layer {
        name,
        c,
        side,
        m,
        k,
        s,
        group: 1,
        post: vec![UnaryOp::Relu],
    }
}

fn row(what: String, nchw: f64, nhwc: f64) {
    println!(
        "| {what:<42} | {nchw:>9.4} | {nhwc:>9.4} | {:>6.2}x |",
        nchw / nhwc
    );
}

#[test]
#[ignore]
fn layers_nchw_vs_nhwc() {
    println!("| layer | NCHW ms | NHWC ms | NCHW/NHWC |");
    println!("|---|---:|---:|---:|");
    let only = std::env::var("NHWC_ONLY").ok();
    let layers = vec![
        dw(32, 112, 1),
        dw(96, 112, 2),
        dw(144, 56, 1),
        dw(144, 56, 2),
        dw(192, 28, 1),
        dw(192, 28, 2),
        dw(384, 14, 1),
        dw(576, 14, 1),
        dw(576, 14, 2),
        dw(960, 7, 1),
        dw5(144, 56, 2),
        dw5(240, 28, 1),
        dw5(672, 14, 1),
        dw5(1152, 7, 1),
        pw(32, 112, 16, vec![]),
        pw(96, 56, 24, vec![]),
        pw(24, 56, 144, relu6()),
        pw(144, 28, 32, vec![]),
        pw(384, 14, 64, vec![]),
        pw(576, 14, 96, vec![]),
        pw(960, 7, 160, vec![]),
        pw(160, 7, 960, relu6()),
        pw(320, 7, 1280, relu6()),
        conv("resnet stem 7x7 s2", 3, 224, 64, 7, 2),
        conv("resnet 3x3", 64, 56, 64, 3, 1),
        conv("resnet 3x3 s2", 64, 56, 128, 3, 2),
        conv("resnet 3x3", 128, 28, 128, 3, 1),
        conv("resnet 3x3", 256, 14, 256, 3, 1),
        conv("resnet 3x3", 512, 7, 512, 3, 1),
        conv("mbv2 stem 3x3 s2", 3, 224, 32, 3, 2),
    ];
    for l in &layers {
        let what = format!("{} {}->{} {}x{} s{}", l.name, l.c, l.m, l.side, l.side, l.s);
        if only.as_ref().is_some_and(|o| !what.contains(o.as_str())) {
            continue;
        }
        let a = time_ms(&conv_case(l, Layout::Nchw));
        let b = time_ms(&conv_case(l, Layout::Nhwc));
        row(what, a, b);
    }
    if only.is_some() {
        return;
    }
    let pool = |layout: Layout, kind: PoolKind, ch: usize, side: usize| {
        let mut c = Case::new("pool");
        let xd = match layout {
            Layout::Nchw => vec![1, ch, side, side],
            Layout::Nhwc => vec![1, side, side, ch],
        };
        let x = c.x("x", &xd);
        c.out(
            "pool",
            Op::Pool(Pool {
                kind,
                kernel_shape: vec![3, 3],
                strides: vec![2, 2],
                pads: vec![1; 4],
                dilations: vec![1, 1],
                ceil_mode: false,
                count_include_pad: false,
                layout,
            }),
            &[x],
        );
        c
    };
    for (kind, ch, side) in [(PoolKind::Max, 64, 112), (PoolKind::Avg, 64, 56)] {
        let a = time_ms(&pool(Layout::Nchw, kind, ch, side));
        let b = time_ms(&pool(Layout::Nhwc, kind, ch, side));
        row(
            format!("{kind:?} pool 3x3 s2 p1 {ch}ch {side}x{side}"),
            a,
            b,
        );
    }
    let global = |layout: Layout, ch: usize, side: usize| {
        let mut c = Case::new("global");
        let xd = match layout {
            Layout::Nchw => vec![1, ch, side, side],
            Layout::Nhwc => vec![1, side, side, ch],
        };
        let x = c.x("x", &xd);
        c.out(
            "gp",
            Op::GlobalPool(GlobalPool {
                kind: PoolKind::Avg,
                layout,
            }),
            &[x],
        );
        c
    };
    for (ch, side) in [(512, 7), (1280, 7), (32, 112)] {
        let a = time_ms(&global(Layout::Nchw, ch, side));
        let b = time_ms(&global(Layout::Nhwc, ch, side));
        row(format!("global avg pool {ch}ch {side}x{side}"), a, b);
    }
}
