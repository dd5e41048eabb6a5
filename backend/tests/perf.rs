//! Throughput and compile-time probes, not tests: they print numbers and assert nothing about time.
//! Run with `cargo test -p kiln-backend --test perf -- --ignored --nocapture` (x86_64 host).

mod common;
use common::*;
use kiln_backend::{compile, WeightsMode};
use kiln_ir::ops::*;
use kiln_ir::Op;

fn timeit(name: &str, c: &Case, flops: f64) {
    let art = compile(&c.g, &options("m", Arch::X86_64, WeightsMode::Embedded)).unwrap();
    let ms = Timer::build(c, &art).ms();
    println!("{name}: {ms:.3} ms  {:.2} GFLOP/s", flops / ms * 1e-6);
}

#[test]
#[ignore]
fn bench() {
    let mut c = Case::new("conv");
    let x = c.x("x", &[1, 64, 56, 56]);
    let w = c.weight("w", &[64, 64, 3, 3]);
    let b = c.weight("b", &[64]);
    let conv = Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        group: 1,
        post: vec![],
    });
    c.out("conv", conv, &[x, w, b]);
    timeit("conv3x3", &c, 2.0 * 64.0 * 64.0 * 9.0 * 56.0 * 56.0);
    let mut c = Case::new("mm");
    let a = c.x("a", &[256, 512]);
    let bw = c.weight("bw", &[512, 512]);
    c.out("mm", Op::MatMul, &[a, bw]);
    timeit("matmul", &c, 2.0 * 256.0 * 512.0 * 512.0);
    let mut c = Case::new("dw");
    let dx = c.x("dx", &[1, 128, 56, 56]);
    let dw = c.weight("dw", &[128, 1, 3, 3]);
    let dconv = Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        group: 128,
        post: vec![],
    });
    c.out("dconv", dconv, &[dx, dw]);
    timeit("depthwise", &c, 2.0 * 128.0 * 9.0 * 56.0 * 56.0);
    let mut c = Case::new("pw");
    let dx = c.x("dx", &[1, 128, 28, 28]);
    let dw = c.weight("dw", &[256, 128, 1, 1]);
    let dconv = Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: vec![1, 1],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![0, 0, 0, 0],
        group: 1,
        post: vec![],
    });
    c.out("pconv", dconv, &[dx, dw]);
    timeit("pointwise", &c, 2.0 * 128.0 * 256.0 * 28.0 * 28.0);
    let mut c = Case::new("sm");
    let sx = c.x("sx", &[64, 1000]);
    c.out(
        "sm",
        Op::Softmax(Softmax {
            axis: 1,
            flatten: false,
        }),
        &[sx],
    );
    timeit("softmax", &c, 64000.0);
    let mut c = Case::new("pool");
    let px = c.x("px", &[1, 64, 112, 112]);
    c.out(
        "pool",
        Op::Pool(Pool {
            layout: kiln_ir::ops::Layout::Nchw,
            kind: PoolKind::Max,
            kernel_shape: vec![3, 3],
            strides: vec![2, 2],
            pads: vec![1, 1, 1, 1],
            dilations: vec![1, 1],
            ceil_mode: false,
            count_include_pad: false,
        }),
        &[px],
    );
    timeit("maxpool", &c, 64.0 * 56.0 * 56.0 * 9.0);
    let mut c = Case::new("tr");
    let px = c.x("px", &[1, 64, 112, 112]);
    c.out(
        "tr",
        Op::Transpose(Transpose {
            perm: vec![0, 2, 3, 1],
        }),
        &[px],
    );
    timeit("transpose", &c, 64.0 * 112.0 * 112.0);
}

#[test]
#[ignore]
fn compile_time_many_layers() {
    let mut c = Case::new("deep");
    let mut h = c.x("x", &[1, 16, 64, 64]);
    for i in 0..120 {
        let ch = 16 + (i % 7);
        let cin = c.g.ty(h).dims().unwrap()[1];
        let w = c.weight(&format!("w{i}"), &[ch, cin, 3, 3]);
        let b = c.weight(&format!("b{i}"), &[ch]);
        let conv = Op::Conv(Conv {
            layout: kiln_ir::ops::Layout::Nchw,
            kernel_shape: vec![3, 3],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            group: 1,
            post: vec![],
        });
        h = c.node(&format!("conv{i}"), conv, &[h, w, b]);
        h = c.node(&format!("relu{i}"), Op::Unary(UnaryOp::Relu), &[h]);
        let e = c.node(&format!("sig{i}"), Op::Unary(UnaryOp::Sigmoid), &[h]);
        h = c.node(&format!("mul{i}"), Op::Binary(BinaryOp::Mul), &[h, e]);
    }
    c.output("y", h);
    for arch in ARCHES {
        let t = std::time::Instant::now();
        let art = compile(&c.g, &options("m", arch, WeightsMode::Embedded)).unwrap();
        println!(
            "{arch:?}: compile {:?}, code {} bytes, arena {}, weights {}",
            t.elapsed(),
            art.report.code_bytes,
            art.report.arena_bytes,
            art.report.weight_bytes
        );
    }
}
