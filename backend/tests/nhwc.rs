//! Channels-last (NHWC) convolution, depthwise convolution, pooling and global pooling against
//! the reference evaluator (which computes them as transpose -> channels-first op -> transpose,
//! sharing no code with the kernels), compiled for x86_64 (baseline and, when the host has it,
//! AVX2 + FMA) and aarch64 (under qemu). Each graph holds many independent nodes so that one
//! compile and one run check them all. Parallel runs with several part counts must give the
//! serial bytes.

mod common;
use common::*;
use kiln_backend::{compile, WeightsMode};
use kiln_ir::ops::*;
use kiln_ir::{DType, Op, TensorType};

/// One channels-last convolution layer.
#[derive(Clone)]
struct L {
    /// N, H, W, C.
    x: [usize; 4],
    /// Output channels.
    m: usize,
    group: usize,
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    /// Top, left, bottom, right.
    p: [usize; 4],
    bias: bool,
    post: Vec<UnaryOp>,
    /// Weights are a graph input (read at run time) rather than a constant.
    runtime_w: bool,
}

fn layer(x: [usize; 4], m: usize, k: usize, s: usize, p: usize) -> L {
    L {
        x,
        m,
        group: 1,
        k: [k, k],
        s: [s, s],
        d: [1, 1],
        p: [p; 4],
        bias: true,
        post: vec![],
        runtime_w: false,
    }
}

fn dw(x: [usize; 4], k: usize, s: usize, p: usize) -> L {
    L {
        group: x[3],
        ..layer(x, x[3], k, s, p)
    }
}

fn relu6() -> Vec<UnaryOp> {
    vec![UnaryOp::Clip { min: 0.0, max: 6.0 }]
}

fn add_conv(c: &mut Case, i: usize, l: &L) {
    let x = c.x(&format!("x{i}"), &l.x);
    let wd = [l.m, l.x[3] / l.group, l.k[0], l.k[1]];
    let w = if l.runtime_w {
        c.input(&format!("w{i}"), DType::F32, &wd, Gen::Uniform(-1.0, 1.0))
    } else {
        c.weight(&format!("w{i}"), &wd)
    };
    let mut ins = vec![x, w];
    if l.bias {
        ins.push(c.weight(&format!("b{i}"), &[l.m]));
    }
    let op = Op::Conv(Conv {
        kernel_shape: l.k.to_vec(),
        strides: l.s.to_vec(),
        dilations: l.d.to_vec(),
        pads: l.p.to_vec(),
        group: l.group,
        post: l.post.clone(),
        layout: Layout::Nhwc,
    });
    c.out(&format!("conv{i}"), op, &ins);
}

fn check_convs(name: &str, layers: &[L]) {
    let mut c = Case::new(name);
    for (i, l) in layers.iter().enumerate() {
        add_conv(&mut c, i, l);
    }
    // Sums of up to a few hundred products of values in [-2, 2] x [-1, 1].
    c.atol = 2e-4;
    check_all(&c);
}

#[test]
fn conv_pointwise_and_strided_1x1() {
    check_convs(
        "nhwc_1x1",
        &[
            // Pointwise, read in place: M a multiple of 8, and not.
            layer([1, 9, 11, 16], 24, 1, 1, 0),
            layer([1, 7, 7, 13], 5, 1, 1, 0),
            // Batch of two, several row blocks and column groups.
            L {
                post: vec![UnaryOp::Relu],
                ..layer([2, 20, 20, 24], 40, 1, 1, 0)
            },
            // Stride 2: a copy of C floats per position.
            L {
                bias: false,
                post: vec![UnaryOp::Relu],
                ..layer([1, 10, 9, 8], 16, 1, 2, 0)
            },
            // One input channel.
            layer([1, 5, 6, 1], 9, 1, 1, 0),
        ],
    );
}

#[test]
fn conv_3x3_stem_and_dilation() {
    check_convs(
        "nhwc_kxk",
        &[
            L {
                post: relu6(),
                ..layer([1, 13, 12, 16], 32, 3, 1, 1)
            },
            L {
                post: vec![UnaryOp::HardSwish],
                ..layer([1, 15, 14, 12], 20, 3, 2, 1)
            },
            // The 7x7 stride-2 stem on three channels.
            L {
                post: vec![UnaryOp::Relu],
                ..layer([1, 23, 21, 3], 16, 7, 2, 3)
            },
            // Dilation 2.
            L {
                d: [2, 2],
                ..layer([1, 11, 10, 8], 8, 3, 1, 2)
            },
            // M = 5, batch 2, no bias.
            L {
                bias: false,
                ..layer([2, 5, 6, 7], 5, 3, 1, 1)
            },
            // Rectangular kernel, mixed strides and asymmetric pads.
            L {
                k: [2, 3],
                s: [2, 1],
                p: [1, 0, 0, 2],
                ..layer([1, 8, 9, 6], 11, 3, 1, 1)
            },
            // Several row blocks with column groups: P = 900, K = 288.
            layer([1, 30, 30, 32], 24, 3, 1, 1),
            // Output narrower than the kernel's reach, padding on every side.
            layer([1, 3, 2, 4], 8, 3, 1, 2),
            // Weights computed at run time: transposed in scratch.
            L {
                runtime_w: true,
                ..layer([1, 9, 8, 5], 12, 3, 1, 1)
            },
        ],
    );
}

#[test]
fn depthwise_windows() {
    check_convs(
        "nhwc_dw",
        &[
            L {
                post: relu6(),
                ..dw([1, 9, 10, 32], 3, 1, 1)
            },
            L {
                post: relu6(),
                ..dw([1, 11, 12, 24], 3, 2, 1)
            },
            // 5x5, five vectors of channels (a step of four and one more).
            dw([1, 7, 7, 20], 5, 1, 2),
            // 5x5 stride 2, 13 channels (the last vector overlaps).
            L {
                bias: false,
                post: vec![UnaryOp::HardSwish],
                ..dw([1, 9, 9, 13], 5, 2, 2)
            },
            // Three channels: scalars. Batch of two.
            dw([2, 6, 5, 3], 3, 1, 1),
            // Dilation 2, asymmetric pads.
            L {
                d: [2, 2],
                p: [2, 1, 1, 2],
                ..dw([1, 10, 11, 8], 3, 1, 2)
            },
            // 81 taps: the tap loops instead of the unrolled taps.
            dw([1, 12, 12, 8], 9, 1, 4),
            // Run-time weights: the table is written in scratch.
            L {
                runtime_w: true,
                ..dw([1, 6, 7, 12], 3, 1, 1)
            },
            // Windows entirely in the padding (bias only).
            dw([1, 2, 2, 4], 3, 1, 3),
        ],
    );
}

/// One channels-last pool.
#[allow(clippy::too_many_arguments)]
fn add_pool(
    c: &mut Case,
    i: usize,
    x: [usize; 4],
    kind: PoolKind,
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    p: [usize; 4],
    ceil_mode: bool,
    count_include_pad: bool,
) {
    let xv = c.x(&format!("x{i}"), &x);
    c.out(
        &format!("pool{i}"),
        Op::Pool(Pool {
            kind,
            kernel_shape: k.to_vec(),
            strides: s.to_vec(),
            pads: p.to_vec(),
            dilations: d.to_vec(),
            ceil_mode,
            count_include_pad,
            layout: Layout::Nhwc,
        }),
        &[xv],
    );
}

#[test]
fn pools() {
    use PoolKind::{Avg, Max};
    let mut c = Case::new("nhwc_pool");
    let one = [1, 1];
    // Max: the ResNet stem pool, ceil mode (the last window overhangs the input), large windows
    // (tap loops), three channels.
    add_pool(
        &mut c,
        0,
        [1, 13, 13, 16],
        Max,
        [3, 3],
        [2, 2],
        one,
        [1; 4],
        false,
        false,
    );
    add_pool(
        &mut c,
        1,
        [1, 7, 7, 6],
        Max,
        [2, 2],
        [2, 2],
        one,
        [0; 4],
        true,
        false,
    );
    add_pool(
        &mut c,
        2,
        [1, 8, 8, 5],
        Max,
        [3, 3],
        [2, 2],
        one,
        [0; 4],
        true,
        false,
    );
    add_pool(
        &mut c,
        3,
        [1, 10, 10, 8],
        Max,
        [8, 8],
        [1, 1],
        one,
        [0; 4],
        false,
        false,
    );
    add_pool(
        &mut c,
        4,
        [2, 6, 7, 3],
        Max,
        [3, 3],
        [1, 2],
        one,
        [1, 1, 0, 1],
        false,
        false,
    );
    add_pool(
        &mut c,
        5,
        [1, 11, 9, 12],
        Max,
        [3, 3],
        [1, 1],
        [2, 2],
        [2; 4],
        false,
        false,
    );
    // Average, with and without the padding in the count, ceil mode, dilation.
    add_pool(
        &mut c,
        6,
        [1, 9, 10, 12],
        Avg,
        [3, 3],
        [1, 1],
        one,
        [1; 4],
        false,
        false,
    );
    add_pool(
        &mut c,
        7,
        [1, 9, 10, 12],
        Avg,
        [3, 3],
        [1, 1],
        one,
        [1; 4],
        false,
        true,
    );
    add_pool(
        &mut c,
        8,
        [1, 8, 8, 20],
        Avg,
        [3, 3],
        [2, 2],
        one,
        [1; 4],
        true,
        true,
    );
    add_pool(
        &mut c,
        9,
        [1, 8, 8, 20],
        Avg,
        [3, 3],
        [2, 2],
        one,
        [1; 4],
        true,
        false,
    );
    add_pool(
        &mut c,
        10,
        [1, 7, 9, 7],
        Avg,
        [2, 3],
        [1, 2],
        one,
        [1, 0, 0, 1],
        false,
        true,
    );
    add_pool(
        &mut c,
        11,
        [2, 5, 6, 2],
        Avg,
        [2, 2],
        [2, 2],
        [2, 1],
        [1; 4],
        true,
        false,
    );
    add_pool(
        &mut c,
        12,
        [1, 14, 14, 40],
        Avg,
        [7, 7],
        [7, 7],
        one,
        [0; 4],
        false,
        false,
    );
    check_all(&c);
}

#[test]
fn global_pools() {
    let mut c = Case::new("nhwc_global");
    // (N, H, W, C): vectors in one step and in several (the last takes the leftovers), an
    // overlapping last vector, scalars only, a big plane.
    let shapes = [
        [2, 7, 7, 40],
        [1, 5, 6, 37],
        [1, 3, 3, 3],
        [1, 3, 3, 100],
        [1, 30, 30, 64],
        [3, 1, 1, 5],
        // No positions.
        [2, 0, 3, 6],
    ];
    let mut i = 0;
    for kind in [PoolKind::Avg, PoolKind::Max] {
        for x in shapes {
            let xv = c.x(&format!("x{i}"), &x);
            c.out(
                &format!("gp{i}"),
                Op::GlobalPool(GlobalPool {
                    kind,
                    layout: Layout::Nhwc,
                }),
                &[xv],
            );
            i += 1;
        }
    }
    check_all(&c);
}

/// A conv + pointwise + depthwise + pool chain on a batch of two, a convolution of few positions
/// and many channels, and a global pool, each big enough to be split into parts (the windows:
/// more than 2^16 element reads).
fn split_model() -> Case {
    let mut c = Case::new("nhwc_split");
    let x = c.x("x", &[2, 33, 31, 16]);
    let nhwc_conv = |k: usize, s: usize, p: usize, group: usize| {
        Op::Conv(Conv {
            kernel_shape: vec![k, k],
            strides: vec![s, s],
            dilations: vec![1, 1],
            pads: vec![p; 4],
            group,
            post: vec![UnaryOp::Relu],
            layout: Layout::Nhwc,
        })
    };
    let w = c.weight("w", &[24, 16, 3, 3]);
    let b = c.weight("b", &[24]);
    let y = c.out("conv", nhwc_conv(3, 1, 1, 1), &[x, w, b]);
    let wp = c.weight("wp", &[40, 24, 1, 1]);
    let y = c.out("pointwise", nhwc_conv(1, 1, 0, 1), &[y, wp]);
    let wd = c.weight("wd", &[40, 1, 3, 3]);
    let y = c.out("depthwise", nhwc_conv(3, 2, 1, 40), &[y, wd]);
    c.out(
        "pool",
        Op::Pool(Pool {
            kind: PoolKind::Avg,
            kernel_shape: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![1; 4],
            dilations: vec![1, 1],
            ceil_mode: false,
            count_include_pad: false,
            layout: Layout::Nhwc,
        }),
        &[y],
    );
    // Few positions, many channels: 2 blocks of 18 and 12 positions, each in 4 column groups
    // (parts that share a block each copy it into their own slot).
    let xs = c.x("xs", &[1, 5, 6, 32]);
    let ws = c.weight("ws", &[64, 32, 3, 3]);
    c.out("small_map", nhwc_conv(3, 1, 1, 1), &[xs, ws]);
    let big = c.x("big", &[1, 40, 40, 96]);
    c.out(
        "global",
        Op::GlobalPool(GlobalPool {
            kind: PoolKind::Max,
            layout: Layout::Nhwc,
        }),
        &[big],
    );
    c.atol = 2e-4;
    c
}

#[test]
fn parallel_parts_are_bitwise_serial() {
    let c = split_model();
    let mut targets = vec![(
        Arch::X86_64,
        options("m", Arch::X86_64, WeightsMode::Embedded),
    )];
    targets.extend(fma_options().map(|o| (Arch::X86_64, o)));
    targets.push((
        Arch::Aarch64,
        options("m", Arch::Aarch64, WeightsMode::Embedded),
    ));
    for (arch, opts) in targets {
        if let Err(why) = arch.toolchain() {
            println!("skipping {arch:?}: {why}");
            continue;
        }
        let art = compile(&c.g, &opts).expect("compiles");
        // Every kernel is split: it has a trampoline, `m_k<N>_<kind>_task`, in the symbol table.
        for (kind, count) in [
            ("_conv_nhwc_task", 3),
            ("_depthwise_nhwc_task", 1),
            ("_avg_pool_nhwc_task", 1),
            ("_global_max_pool_nhwc_task", 1),
        ] {
            let k = kind.as_bytes();
            let found = art.object.windows(k.len()).filter(|w| *w == k).count();
            assert!(found >= count, "{arch:?}: {found} symbols end in {kind}");
        }
        let dir = tempfile::tempdir().unwrap();
        write_artifact(dir.path(), "m", &art);
        for (i, t) in c.inputs.iter().enumerate() {
            std::fs::write(dir.path().join(format!("m_in{i}.bin")), t.bytes()).unwrap();
        }
        std::fs::write(dir.path().join("main.c"), parallel_driver(&c)).unwrap();
        let (code, _, err) = build_and_run(dir.path(), arch, &["m.o"]);
        assert_eq!(code, 0, "{arch:?} ({}): {err}", opts.target.cpu);
    }
    // And the serial run is right.
    check(&c);
}

#[test]
fn unsupported_layouts_name_the_node() {
    let opts = options("m", Arch::X86_64, WeightsMode::Embedded);
    // A grouped (not depthwise) channels-last convolution.
    let mut c = Case::new("nhwc_grouped");
    let x = c.x("x", &[1, 5, 5, 8]);
    let w = c.weight("w", &[8, 4, 3, 3]);
    c.out(
        "grouped_conv",
        Op::Conv(Conv {
            kernel_shape: vec![3, 3],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![1; 4],
            group: 2,
            post: vec![],
            layout: Layout::Nhwc,
        }),
        &[x, w],
    );
    let Err(e) = compile(&c.g, &opts) else {
        panic!("grouped conv is refused")
    };
    let msg = e.to_string();
    assert!(
        msg.contains("grouped_conv") && msg.contains("group 2"),
        "{msg}"
    );
    // A 1-D channels-last pool (N x W x C), and an f64 one.
    let mut c = Case::new("nhwc_1d");
    let x = c.x("x", &[1, 9, 4]);
    let pool = |kernel: Vec<usize>| {
        let r = kernel.len();
        Op::Pool(Pool {
            kind: PoolKind::Max,
            strides: vec![1; r],
            pads: vec![0; 2 * r],
            dilations: vec![1; r],
            kernel_shape: kernel,
            ceil_mode: false,
            count_include_pad: false,
            layout: Layout::Nhwc,
        })
    };
    c.out("pool_1d", pool(vec![3]), &[x]);
    let xd =
        c.g.add_input("xd", TensorType::new(DType::F64, &[1, 4, 4, 2]));
    c.out("pool_f64", pool(vec![2, 2]), &[xd]);
    let Err(e) = compile(&c.g, &opts) else {
        panic!("1-D and f64 channels-last pools are refused")
    };
    let msg = e.to_string();
    assert!(msg.contains("pool_1d") && msg.contains("rank 3"), "{msg}");
    assert!(msg.contains("pool_f64") && msg.contains("f64"), "{msg}");
}
