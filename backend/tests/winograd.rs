//! Winograd convolution (3x3, stride 1): shapes that reach every edge of the kernel (odd sizes,
//! outputs that are not a multiple of the tile, tile rows narrower than four tiles, several tile
//! blocks, batches, zero and asymmetric padding, bias, fused Relu and Clip), for both tile sizes,
//! compiled for x86_64 (portable and FMA builds) and aarch64 (under qemu), compared with a direct
//! convolution computed here in f64. The report's derived weights show that Winograd (and which
//! tile size) was used. A last test checks that splitting the kernel into parts gives bitwise
//! the serial result.

mod common;
use common::*;
use kiln_backend::Winograd;
use kiln_backend::{compile, Options, Target, WeightsMode};
use kiln_ir::ops::*;
use kiln_ir::{DType, Op};

/// Runs `f` with the `Options::winograd` that forces tile size `m` (`"0"`: Winograd off).
fn with_tile<R>(m: &str, f: impl FnOnce(Winograd) -> R) -> R {
    f(match m {
        "0" => Winograd::Off,
        "2" => Winograd::F2,
        "4" => Winograd::F4,
        other => panic!("no Winograd tile size {other}"),
    })
}

/// One convolution under test.
#[derive(Clone, Copy, Debug)]
struct Shape {
    n: usize,
    c: usize,
    m: usize,
    h: usize,
    w: usize,
    /// top, left, bottom, right
    pads: [usize; 4],
    bias: bool,
    post: Post,
}

#[derive(Clone, Copy, Debug)]
enum Post {
    None,
    Relu,
    Clip,
}

impl Shape {
    fn out(&self) -> (usize, usize) {
        (
            self.h + self.pads[0] + self.pads[2] - 2,
            self.w + self.pads[1] + self.pads[3] - 2,
        )
    }
}

/// `y[n, mo, i, j] = b[mo] + sum_{c, k, l} x[n, c, i + k - pt, j + l - pl] w[mo, c, k, l]`, then
/// the activation, in f64; also the largest `sum |x w|` of an output (the scale of rounding).
fn direct(s: &Shape, x: &[f64], w: &[f64], b: &[f64]) -> (Vec<f64>, f64) {
    let (oh, ow) = s.out();
    let mut y = vec![0f64; s.n * s.m * oh * ow];
    let mut scale = 0f64;
    for n in 0..s.n {
        for mo in 0..s.m {
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = if s.bias { b[mo] } else { 0.0 };
                    let mut mag = acc.abs();
                    for c in 0..s.c {
                        for k in 0..3 {
                            for l in 0..3 {
                                let (yi, xj) = (i + k, j + l);
                                if yi < s.pads[0] || xj < s.pads[1] {
                                    continue;
                                }
                                let (yi, xj) = (yi - s.pads[0], xj - s.pads[1]);
                                if yi >= s.h || xj >= s.w {
                                    continue;
                                }
                                let p = x[((n * s.c + c) * s.h + yi) * s.w + xj]
                                    * w[((mo * s.c + c) * 3 + k) * 3 + l];
                                acc += p;
                                mag += p.abs();
                            }
                        }
                    }
                    scale = scale.max(mag);
                    y[((n * s.m + mo) * oh + i) * ow + j] = match s.post {
                        Post::None => acc,
                        Post::Relu => acc.max(0.0),
                        Post::Clip => acc.clamp(-1.0, 2.5),
                    };
                }
            }
        }
    }
    (y, scale)
}

/// The graph of one convolution, its input data, and the expected output with its scale.
fn case(name: &str, s: &Shape) -> (Case, Vec<f64>, f64) {
    let mut c = Case::new(name);
    let x = c.x("x", &[s.n, s.c, s.h, s.w]);
    let wt = c.random(DType::F32, &[s.m, s.c, 3, 3], Gen::Uniform(-1.0, 1.0));
    let bt = c.random(DType::F32, &[s.m], Gen::Uniform(-1.0, 1.0));
    let w = c.constant("w", wt.clone());
    let b = c.constant("b", bt.clone());
    let post = match s.post {
        Post::None => vec![],
        Post::Relu => vec![UnaryOp::Relu],
        Post::Clip => vec![UnaryOp::Clip {
            min: -1.0,
            max: 2.5,
        }],
    };
    let op = Op::Conv(Conv {
        layout: Layout::Nchw,
        kernel_shape: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![s.pads[0], s.pads[1], s.pads[2], s.pads[3]],
        group: 1,
        post,
    });
    let ins: Vec<kiln_ir::Value> = if s.bias { vec![x, w, b] } else { vec![x, w] };
    c.out("y", op, &ins);
    let (want, scale) = direct(
        s,
        &c.inputs[0].to_f64_vec(),
        &wt.to_f64_vec(),
        &bt.to_f64_vec(),
    );
    (c, want, scale)
}

/// Every build to run: (arch, options, the micro-kernel's row tile `mr`).
fn builds(wm: Winograd) -> Vec<(Arch, Options, usize)> {
    let mut v = builds_default();
    for b in &mut v {
        b.1.winograd = wm;
    }
    v
}

fn builds_default() -> Vec<(Arch, Options, usize)> {
    let mut v = vec![(
        Arch::X86_64,
        options("m", Arch::X86_64, WeightsMode::Embedded),
        6,
    )];
    if let Some(o) = fma_options() {
        v.push((Arch::X86_64, o, 6));
    }
    v.push((
        Arch::Aarch64,
        options("m", Arch::Aarch64, WeightsMode::Embedded),
        8,
    ));
    v
}

/// Compiles and runs every shape with tile size `m` on every build; the derived weights must
/// be Winograd's (`(m + 2)^2` packed points) and every output within `rel * scale` of the
/// direct convolution. Returns the largest error seen relative to the scale.
fn check_tile(m: usize, shapes: &[Shape], rel: f64) -> f64 {
    with_tile(&m.to_string(), |wm| {
        let mut worst = 0f64;
        for (i, s) in shapes.iter().enumerate() {
            let (c, want, scale) = case(&format!("wino{m}_{i}"), s);
            for (arch, opts, mr) in builds(wm) {
                let art = compile(&c.g, &opts).expect("compiles");
                let packed = art
                    .report
                    .tensors
                    .iter()
                    .find(|t| t.value.ends_with(":packed_w"))
                    .map(|t| t.bytes / 4);
                let points = (m + 2) * (m + 2);
                assert_eq!(
                    packed,
                    Some(points * s.m.div_ceil(mr) * mr * s.c),
                    "{s:?} on {arch:?}: not compiled as F({m}, 3)"
                );
                let Some(got) = run_with(&c, arch, &opts) else {
                    continue;
                };
                let got: Vec<f32> = got[0]
                    .chunks(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                assert_eq!(got.len(), want.len());
                let mut err = 0f64;
                let mut at = 0;
                for (j, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    let e = (g as f64 - w).abs();
                    if e > err || e.is_nan() {
                        err = if e.is_nan() { f64::INFINITY } else { e };
                        at = j;
                    }
                }
                let r = err / scale;
                assert!(
                    r <= rel,
                    "{s:?} on {arch:?} ({}): error {err:e} at [{at}] (got {}, want {}), \
                     {r:e} of the scale {scale}",
                    opts.target.cpu,
                    got[at],
                    want[at]
                );
                worst = worst.max(r);
            }
        }
        println!("F({m}, 3): largest error {worst:e} of sum |x w|");
        worst
    })
}

fn shapes() -> Vec<Shape> {
    let s = |n, c, m, h, w, pads, bias, post| Shape {
        n,
        c,
        m,
        h,
        w,
        pads,
        bias,
        post,
    };
    vec![
        // Exact multiples of both tile sizes, one block.
        s(1, 16, 16, 8, 8, [1, 1, 1, 1], true, Post::None),
        // Odd sizes: partial tiles at the right and bottom, groups wrapping tile rows.
        s(1, 17, 19, 9, 11, [1, 1, 1, 1], true, Post::Relu),
        // No padding, no bias, a tall narrow image (fewer than four tiles per row for F(4)).
        s(1, 16, 24, 13, 7, [0, 0, 0, 0], false, Post::Clip),
        // Asymmetric padding.
        s(1, 20, 16, 10, 12, [0, 1, 2, 0], true, Post::Relu),
        // A batch.
        s(2, 16, 17, 10, 10, [1, 1, 1, 1], true, Post::None),
        // Several tile blocks, the last one partial; more rows than one GEMM row tile.
        s(1, 64, 64, 30, 30, [1, 1, 1, 1], true, Post::Relu),
        // A small final feature map.
        s(1, 40, 36, 7, 7, [1, 1, 1, 1], false, Post::None),
        // One block with many output channels: cut into pieces for the parts (x86: four of 36
        // channels, the last 20, a partial row tile; aarch64: four of 32).
        one_block_many_channels(),
    ]
}

fn one_block_many_channels() -> Shape {
    Shape {
        n: 1,
        c: 32,
        m: 128,
        h: 7,
        w: 7,
        pads: [1, 1, 1, 1],
        bias: true,
        post: Post::Relu,
    }
}

#[test]
fn f2_matches_direct_convolution() {
    // F(2, 3) only scales by 1/2: errors stay near plain f32 summation's.
    let worst = check_tile(2, &shapes(), 1e-6);
    assert!(worst > 0.0);
}

#[test]
fn f4_matches_direct_convolution() {
    // F(4, 3)'s points (±2 and the 1/24 of G) amplify rounding by about an order of magnitude.
    check_tile(4, &shapes(), 1e-5);
}

/// Runs each part on its own thread.
const THREADED: &str = "struct job { kiln_task_fn task; void *ctx; uint32_t i; };\n\
         static void *run_job(void *p) { struct job *j = p; j->task(j->ctx, j->i); return NULL; }\n\
         static void parallel_for(void *user, uint32_t count, kiln_task_fn task, void *ctx) {\n\
         \x20   (void)user; pthread_t th[8]; struct job jobs[8];\n\
         \x20   for (uint32_t i = 0; i < count; i++) { jobs[i] = (struct job){task, ctx, i};\n\
         \x20       if (pthread_create(&th[i], NULL, run_job, &jobs[i])) exit(80); }\n\
         \x20   for (uint32_t i = 0; i < count; i++) pthread_join(th[i], NULL);\n\
         }\n";

#[test]
fn split_parts_are_bitwise_serial() {
    // Two images of 15 x 15 tiles (F(2)) or 8 x 8 (F(4)) in blocks of 64 and 32: 4 and 2 blocks
    // per image (F(4)'s output channels cut in two pieces), shared unevenly among 2, 3 and 5
    // parts; and one block whose output channels are cut in four pieces, more parts (5) than
    // units.
    let many_blocks = Shape {
        n: 2,
        c: 64,
        m: 64,
        h: 30,
        w: 30,
        pads: [1, 1, 1, 1],
        bias: true,
        post: Post::Relu,
    };
    for (m, s) in [
        ("2", many_blocks),
        ("4", many_blocks),
        ("2", one_block_many_channels()),
        ("4", one_block_many_channels()),
    ] {
        with_tile(m, |wm| {
            let (c, _, _) = case(&format!("split{m}_{}", s.m), &s);
            for (arch, opts, _) in builds(wm) {
                if let Err(why) = arch.toolchain() {
                    println!("skipping {arch:?}: {why}");
                    continue;
                }
                let art = compile(&c.g, &opts).expect("compiles");
                let dir = tempfile::tempdir().unwrap();
                write_artifact(dir.path(), "m", &art);
                std::fs::write(dir.path().join("m_in0.bin"), c.inputs[0].bytes()).unwrap();
                std::fs::write(dir.path().join("main.c"), split_driver(&c.g, THREADED)).unwrap();
                let (code, _, err) = build_and_run(dir.path(), arch, &["m.o", "-lpthread"]);
                assert_eq!(code, 0, "F({m}) on {arch:?} ({}): {err}", opts.target.cpu);
            }
        });
    }
}

/// Per-layer throughput probe, not a test: each 3x3 layer of ResNet-18 and SqueezeNet 1.1 (and a
/// few others) compiled for the host CPU with im2col (`Winograd::Off`), F(2, 3) and F(4, 3),
/// alternating, printing direct-convolution GFLOP/s (`2 C M 9 OH OW` per run / time).
/// `cargo test --release -p kiln-backend --test winograd -- --ignored --nocapture`.
#[test]
#[ignore]
fn probe_layers() {
    let target = Target::parse("x86_64-unknown-linux-gnu", "native", &[]).expect("native");
    let opts = Options {
        winograd: kiln_backend::Winograd::Auto,
        name: "m".into(),
        target,
        weights: WeightsMode::Embedded,
        model_file: "test.onnx".into(),
    };
    // (C, M, H = W)
    let layers: Vec<(usize, usize, usize)> = std::env::var("PROBE_LAYERS")
        .ok()
        .map(|v| {
            v.split(';')
                .map(|l| {
                    let n: Vec<usize> = l.split(',').map(|x| x.trim().parse().unwrap()).collect();
                    (n[0], n[1], n[2])
                })
                .collect()
        })
        .unwrap_or_else(|| {
            vec![
                (64, 64, 56),
                (128, 128, 28),
                (256, 256, 14),
                (512, 512, 7),
                (16, 64, 55),
                (32, 128, 27),
                (48, 192, 13),
                (64, 256, 13),
            ]
        });
    let rounds: usize = std::env::var("PROBE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    for &(ci, mo, hw) in &layers {
        let s = Shape {
            n: 1,
            c: ci,
            m: mo,
            h: hw,
            w: hw,
            pads: [1, 1, 1, 1],
            bias: true,
            post: Post::Relu,
        };
        let mut c = Case::new("probe");
        let x = c.x("x", &[1, ci, hw, hw]);
        let w = c.weight("w", &[mo, ci, 3, 3]);
        let b = c.weight("b", &[mo]);
        let op = Op::Conv(Conv {
            layout: Layout::Nchw,
            kernel_shape: vec![3, 3],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            group: 1,
            post: vec![UnaryOp::Relu],
        });
        c.out("y", op, &[x, w, b]);
        let (oh, ow) = s.out();
        let flops = 2.0 * (ci * mo * 9 * oh * ow) as f64;
        let mut timers = Vec::new();
        for mode in ["0", "2", "4"] {
            let art = with_tile(mode, |wm| {
                compile(
                    &c.g,
                    &Options {
                        winograd: wm,
                        ..opts.clone()
                    },
                )
                .expect("compiles")
            });
            timers.push((mode, Timer::build(&c, &art)));
        }
        for round in 0..rounds {
            let mut line = format!("C {ci:3} M {mo:3} {hw:3}x{hw:<3} r{round}:");
            for (mode, t) in &timers {
                let ms = t.ms();
                let name = match *mode {
                    "0" => "im2col",
                    "2" => "F2",
                    _ => "F4",
                };
                line.push_str(&format!(
                    "  [{name}] {ms:.3} ms {:.1} GFLOP/s",
                    flops / ms * 1e-6
                ));
            }
            println!("{line}");
        }
    }
}
