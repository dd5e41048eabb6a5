//! The blocked GEMM and the GEMM-based convolution on shapes that reach every edge of the tiling:
//! partial row and column tiles (packed and strided B), several k blocks (first, middle, last),
//! several row blocks, convolutions whose column panels straddle output rows or run past the
//! last position, padding on every side, strides, dilations, groups, 1-D and 3-D kernels, and
//! the fused activation epilogue. Each case is compared with the reference evaluator on x86_64
//! (the portable SSE build and, when the host has it, the FMA build) and aarch64 (lane-indexed
//! FMAs, under qemu). A last test checks that splitting every kernel into parts gives bitwise
//! the serial result.

mod common;
use common::*;
use kiln_backend::{compile, WeightsMode};
use kiln_ir::ops::*;
use kiln_ir::Op;

fn gemm_op(alpha: f32, beta: f32, ta: bool, tb: bool, post: Vec<UnaryOp>) -> Op {
    Op::Gemm(Gemm {
        alpha,
        beta,
        trans_a: ta,
        trans_b: tb,
        post,
    })
}

fn conv_op(k: &[usize], s: &[usize], d: &[usize], p: &[usize], group: usize) -> Op {
    Op::Conv(Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: k.to_vec(),
        strides: s.to_vec(),
        dilations: d.to_vec(),
        pads: p.to_vec(),
        group,
        post: vec![],
    })
}

#[test]
fn matmul_tiles_and_blocks() {
    let mut c = Case::new("matmul_tiles");
    // (m, k, n): partial row tiles (m % 6, m % 8), partial column tiles (n % 8 in 1..7, n < 4),
    // k in one, two and four k blocks, more rows than one row block.
    let shapes: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (5, 3, 4),
        (6, 8, 8),
        (7, 9, 9),
        (13, 17, 12),
        (9, 300, 21),
        (14, 777, 10),
        (250, 20, 19),
        (3, 5, 30),
    ];
    for (i, &(m, k, n)) in shapes.iter().enumerate() {
        let a = c.x(&format!("a{i}"), &[m, k]);
        // Constant B: packed into column panels. Run-time B: read in place.
        let bw = c.weight(&format!("bw{i}"), &[k, n]);
        let bx = c.x(&format!("bx{i}"), &[k, n]);
        c.out(&format!("mm_packed{i}"), Op::MatMul, &[a, bw]);
        c.out(&format!("mm_rows{i}"), Op::MatMul, &[a, bx]);
    }
    // Batched A with a shared constant B, and a batch of constant B's.
    let a = c.x("ba", &[2, 7, 11]);
    let b = c.weight("bb", &[11, 13]);
    c.out("mm_batched_shared", Op::MatMul, &[a, b]);
    let a = c.x("ca", &[3, 5, 9]);
    let b = c.weight("cb", &[3, 9, 10]);
    c.out("mm_batched_const", Op::MatMul, &[a, b]);
    c.atol = 1e-4;
    check_all(&c);
}

#[test]
fn gemm_epilogue() {
    let mut c = Case::new("gemm_epilogue");
    let (m, k, n) = (7, 290, 11);
    for (i, (ta, tb)) in [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .enumerate()
    {
        let a = c.x(&format!("a{i}"), &if ta { [k, m] } else { [m, k] });
        let bw = c.weight(&format!("bw{i}"), &if tb { [n, k] } else { [k, n] });
        let bx = c.x(&format!("bx{i}"), &if tb { [n, k] } else { [k, n] });
        let cc = c.weight(&format!("c{i}"), &[m, n]);
        let post = vec![UnaryOp::Clip {
            min: -1.0,
            max: 1.5,
        }];
        c.out(
            &format!("gemm_w{i}"),
            gemm_op(0.75, -1.25, ta, tb, post.clone()),
            &[a, bw, cc],
        );
        c.out(
            &format!("gemm_x{i}"),
            gemm_op(1.0, 1.0, ta, tb, vec![UnaryOp::Relu]),
            &[a, bx, cc],
        );
    }
    // C as a row, a column and a scalar; no C.
    for (i, cd) in [vec![n], vec![m, 1], vec![]].into_iter().enumerate() {
        let a = c.x(&format!("ra{i}"), &[m, 20]);
        let b = c.weight(&format!("rb{i}"), &[20, n]);
        let cc = c.x(&format!("rc{i}"), &cd);
        c.out(
            &format!("gemm_c{i}"),
            gemm_op(1.0, 0.5, false, false, vec![]),
            &[a, b, cc],
        );
    }
    let a = c.x("na", &[4, 6]);
    let b = c.weight("nb", &[6, 9]);
    c.out(
        "gemm_noc",
        gemm_op(2.0, 1.0, false, false, vec![UnaryOp::Relu]),
        &[a, b],
    );
    c.atol = 1e-4;
    check_all(&c);
}

#[test]
fn conv_panels_and_borders() {
    let mut c = Case::new("conv_panels");
    // (name, input NCHW, out channels, kernel, strides, dilations, pads, group)
    #[allow(clippy::type_complexity)]
    let cases: &[(
        &str,
        [usize; 4],
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 4],
        usize,
    )] = &[
        // Output rows of 16: every panel inside a row; borders on all sides.
        (
            "rows16",
            [1, 5, 16, 16],
            7,
            [3, 3],
            [1, 1],
            [1, 1],
            [1, 1, 1, 1],
            1,
        ),
        // Width 14: panels straddle rows; 196 positions, the last panel partial.
        (
            "w14",
            [1, 3, 14, 14],
            13,
            [3, 3],
            [1, 1],
            [1, 1],
            [1, 1, 1, 1],
            1,
        ),
        // Width 7 (< nr): every panel straddles; 49 positions.
        (
            "w7",
            [1, 8, 7, 7],
            9,
            [3, 3],
            [1, 1],
            [1, 1],
            [1, 1, 1, 1],
            1,
        ),
        // Stride 2 (strided copies), odd sizes.
        (
            "s2",
            [1, 4, 17, 19],
            6,
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1, 1, 1],
            1,
        ),
        // Stride 2 with interior panels (vector pairs, even lanes), and a 1x1 stride 2 whose last
        // panels read up to the input's very last element.
        (
            "s2_wide",
            [1, 3, 9, 60],
            4,
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1, 1, 1],
            1,
        ),
        (
            "pw_s2_wide",
            [1, 5, 5, 64],
            7,
            [1, 1],
            [2, 2],
            [1, 1],
            [0, 0, 0, 0],
            1,
        ),
        // Big kernel, stride 2, wide padding (the stem of a ResNet, small).
        (
            "stem",
            [1, 3, 32, 32],
            8,
            [7, 7],
            [2, 2],
            [1, 1],
            [3, 3, 3, 3],
            1,
        ),
        // Dilation and asymmetric padding.
        (
            "dil",
            [2, 3, 12, 20],
            5,
            [3, 3],
            [1, 1],
            [2, 2],
            [2, 1, 0, 3],
            1,
        ),
        // Groups, k spanning two k blocks (32 * 9 = 288).
        (
            "grp",
            [1, 64, 10, 9],
            14,
            [3, 3],
            [1, 1],
            [1, 1],
            [1, 1, 1, 1],
            2,
        ),
        // 1x1 stride 2: a column copy, not the pointwise path.
        (
            "pw_s2",
            [1, 6, 9, 9],
            10,
            [1, 1],
            [2, 2],
            [1, 1],
            [0, 0, 0, 0],
            1,
        ),
        // Pointwise with 64, 49 and 20 positions (full, 1 and 4 leftover columns).
        (
            "pw64",
            [1, 11, 8, 8],
            13,
            [1, 1],
            [1, 1],
            [1, 1],
            [0, 0, 0, 0],
            1,
        ),
        (
            "pw49",
            [1, 300, 7, 7],
            8,
            [1, 1],
            [1, 1],
            [1, 1],
            [0, 0, 0, 0],
            1,
        ),
        (
            "pw20",
            [2, 5, 4, 5],
            250,
            [1, 1],
            [1, 1],
            [1, 1],
            [0, 0, 0, 0],
            1,
        ),
        // Kernel larger than the input: every tap of some lanes in the padding.
        (
            "tiny",
            [1, 2, 2, 3],
            3,
            [3, 5],
            [1, 1],
            [1, 1],
            [1, 2, 1, 2],
            1,
        ),
    ];
    for (i, &(name, xd, m, k, s, d, p, g)) in cases.iter().enumerate() {
        let x = c.x(&format!("x{i}"), &xd);
        let w = c.weight(&format!("w{i}"), &[m, xd[1] / g, k[0], k[1]]);
        let b = c.weight(&format!("b{i}"), &[m]);
        let bias = if i % 3 == 1 { None } else { Some(b) };
        let v = c.node_opt(name, conv_op(&k, &s, &d, &p, g), &[Some(x), Some(w), bias]);
        c.output(name, v);
    }
    c.atol = 1e-4;
    check_all(&c);
}

#[test]
fn conv_other_ranks_weights_and_post() {
    let mut c = Case::new("conv_ranks");
    // 1-D, with the panels straddling rows of 5.
    let x = c.x("x1", &[1, 3, 11]);
    let w = c.weight("w1", &[4, 3, 3]);
    c.out("conv1d", conv_op(&[3], &[2], &[1], &[1, 1], 1), &[x, w]);
    // 3-D.
    let x = c.x("x3", &[1, 2, 5, 6, 7]);
    let w = c.weight("w3", &[3, 2, 3, 2, 3]);
    let b = c.weight("b3", &[3]);
    c.out(
        "conv3d",
        conv_op(&[3, 2, 3], &[1, 2, 1], &[1, 1, 2], &[1, 0, 1, 1, 1, 2], 1),
        &[x, w, b],
    );
    // Weights computed at run time: read in place, not packed.
    let x = c.x("xr", &[1, 4, 9, 10]);
    let w = c.x("wr", &[5, 4, 3, 3]);
    c.out(
        "conv_rt_w",
        conv_op(&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], 1),
        &[x, w],
    );
    // A fused activation in the epilogue.
    let x = c.x("xp", &[1, 6, 10, 11]);
    let w = c.weight("wp", &[7, 6, 3, 3]);
    let b = c.weight("bp", &[7]);
    c.out(
        "conv_post",
        Op::Conv(Conv {
            layout: kiln_ir::ops::Layout::Nchw,
            kernel_shape: vec![3, 3],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            group: 1,
            post: vec![UnaryOp::Clip { min: 0.0, max: 0.5 }],
        }),
        &[x, w, b],
    );
    c.atol = 1e-4;
    check_all(&c);
}

/// Runs the parts one after another, last first.
const SERIAL_BACKWARDS: &str =
    "static void parallel_for(void *user, uint32_t count, kiln_task_fn task, void *ctx) {\n\
    \x20   (void)user;\n\
    \x20   for (uint32_t i = count; i > 0; i--) task(ctx, i - 1);\n\
    }\n";

#[test]
fn split_parts_are_bitwise_serial() {
    let mut c = Case::new("split");
    // Big enough to be split (more than 1e5 multiply-adds each).
    let x = c.x("x", &[1, 16, 23, 21]);
    let w = c.weight("w", &[20, 16, 3, 3]);
    let b = c.weight("b", &[20]);
    let y = c.out(
        "conv",
        conv_op(&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], 1),
        &[x, w, b],
    );
    let w2 = c.weight("w2", &[13, 20, 1, 1]);
    c.out(
        "pointwise",
        conv_op(&[1, 1], &[1, 1], &[1, 1], &[0, 0, 0, 0], 1),
        &[y, w2],
    );
    let a = c.x("a", &[37, 300]);
    let bw = c.weight("bw", &[300, 45]);
    c.out("matmul", Op::MatMul, &[a, bw]);
    let cc = c.weight("cc", &[45]);
    c.out(
        "gemm",
        gemm_op(1.0, 1.0, false, false, vec![UnaryOp::Relu]),
        &[a, bw, cc],
    );
    let mut targets = vec![(
        Arch::X86_64,
        options("m", Arch::X86_64, WeightsMode::Embedded),
    )];
    if let Some(o) = fma_options() {
        targets.push((Arch::X86_64, o));
    }
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
        let dir = tempfile::tempdir().unwrap();
        write_artifact(dir.path(), "m", &art);
        for (i, t) in c.inputs.iter().enumerate() {
            std::fs::write(dir.path().join(format!("m_in{i}.bin")), t.bytes()).unwrap();
        }
        std::fs::write(
            dir.path().join("main.c"),
            split_driver(&c.g, SERIAL_BACKWARDS),
        )
        .unwrap();
        let (code, _, err) = build_and_run(dir.path(), arch, &["m.o"]);
        assert_eq!(code, 0, "{arch:?} ({}): {err}", opts.target.cpu);
    }
}
