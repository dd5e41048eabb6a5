//! The elementwise family compiled for every dtype, linked into a C program, run on x86_64 and
//! (under qemu) aarch64, and compared with the reference evaluator: every unary op and activation
//! on f32/f64/f16/bf16, integer unary ops, binary arithmetic with broadcasting on every dtype,
//! comparisons and logic, `where`, every cast pair (special values included), and the rounding
//! fallbacks of an x86 without SSE4.1.
//!
//! Floats are compared with tolerances that follow from how kiln computes them: halves go through
//! f32 and round once at the end (one half-ulp more than the reference, which rounds from f64);
//! f64 transcendentals go through the f32 emitters. Integers, bools and casts must match exactly.

mod common;
use common::*;
use kiln_backend::{Options, Target, WeightsMode};
use kiln_ir::ops::*;
use kiln_ir::{DType, Op, Tensor, Value};

const FLOATS: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::BF16];
const INTS: [DType; 8] = [
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U16,
    DType::U32,
    DType::U64,
];

/// `(rtol, atol)` for a float output of `d` produced by an op whose f64 form goes through f32
/// (`via_f32`).
fn tol(d: DType, via_f32: bool) -> (f64, f64) {
    match d {
        DType::F16 => (2e-3, 1e-4),
        DType::BF16 => (1.6e-2, 1e-3),
        DType::F64 if via_f32 => (2e-6, 1e-6),
        DType::F64 => (1e-12, 1e-12),
        _ => (2e-5, 1e-6),
    }
}

/// A graph input holding exactly `t`.
fn fixed(c: &mut Case, name: &str, t: Tensor) -> Value {
    let ty = t.ty();
    c.inputs.push(t);
    c.g.add_input(name, ty)
}

/// Runs the case on every arch and compares with the reference: floats within `tol_of(output
/// name, dtype)`, everything else bit-exact (NaN matches NaN).
fn check_tol(c: &Case, tol_of: &dyn Fn(&str, DType) -> (f64, f64)) {
    kiln_ir::verify(&c.g).unwrap_or_else(|e| panic!("{} does not verify: {e}", c.g.name));
    let want = reference(&c.g, &c.inputs);
    for arch in ARCHES {
        if let Some(got) = run_compiled(c, arch, WeightsMode::Embedded) {
            compare_tol(c, arch, &got, &want, tol_of);
        }
    }
}

fn compare_tol(
    c: &Case,
    arch: Arch,
    got: &[Vec<u8>],
    want: &[Tensor],
    tol_of: &dyn Fn(&str, DType) -> (f64, f64),
) {
    let mut problems = Vec::new();
    for ((name, v), (g, w)) in c.g.outputs.iter().zip(got.iter().zip(want)) {
        let ty = c.g.ty(*v);
        let Ok(gt) = Tensor::from_bytes(ty.dtype, w.shape().to_vec(), g.clone()) else {
            problems.push(format!("{name}: {} bytes for {}", g.len(), ty));
            continue;
        };
        let bad: Vec<String> = if ty.dtype.is_float() {
            let (rtol, atol) = tol_of(name, ty.dtype);
            gt.to_f64_vec()
                .iter()
                .zip(w.to_f64_vec())
                .enumerate()
                .filter(|(_, (&a, b))| {
                    !((a.is_nan() && b.is_nan())
                        || a == *b
                        || (a - b).abs() <= atol + rtol * b.abs())
                })
                .map(|(j, (a, b))| format!("[{j}] got {a:e} want {b:e}"))
                .collect()
        } else {
            gt.to_i64_vec()
                .iter()
                .zip(w.to_i64_vec())
                .enumerate()
                .filter(|(_, (&a, b))| a != *b)
                .map(|(j, (a, b))| format!("[{j}] got {a} want {b}"))
                .collect()
        };
        if !bad.is_empty() {
            problems.push(format!(
                "{name} ({ty}): {} of {} differ: {}",
                bad.len(),
                gt.len(),
                bad[..bad.len().min(4)].join("; ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} on {arch:?}:\n  {}",
        c.g.name,
        problems.join("\n  ")
    );
}

/// Every float unary op, scalar-generic ones and activations.
fn float_unary_ops() -> Vec<UnaryOp> {
    vec![
        UnaryOp::Relu,
        UnaryOp::LeakyRelu { alpha: 0.1 },
        UnaryOp::Clip {
            min: -0.5,
            max: 0.75,
        },
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Exp,
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Erf,
        UnaryOp::Floor,
        UnaryOp::Ceil,
        UnaryOp::Round,
        UnaryOp::Sign,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Tan,
        UnaryOp::Elu { alpha: 1.5 },
        UnaryOp::Selu {
            alpha: 1.673_263_2,
            gamma: 1.050_701,
        },
        UnaryOp::Celu { alpha: 0.5 },
        UnaryOp::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        UnaryOp::HardSwish,
        UnaryOp::Softplus,
        UnaryOp::Softsign,
        UnaryOp::ThresholdedRelu { alpha: 0.5 },
        UnaryOp::Gelu { tanh: false },
        UnaryOp::Gelu { tanh: true },
        UnaryOp::Mish,
        UnaryOp::Silu,
    ]
}

/// Ops whose f64 form goes through the f32 math emitters.
fn transcendental(name: &str) -> bool {
    [
        "sigmoid", "tanh", "exp", "erf", "sin", "cos", "tan", "elu", "selu", "celu", "softplus",
        "gelu", "mish", "silu", "log", "pow",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

#[test]
fn unary_every_float_dtype() {
    let mut c = Case::new("unary_float");
    for d in FLOATS {
        for (i, op) in float_unary_ops().into_iter().enumerate() {
            // f32 also covers the vector loop, its tail, broadcasting-free 3-D and rank 0.
            let shapes: Vec<Vec<usize>> = if d == DType::F32 {
                vec![vec![7], vec![2, 3, 5], vec![]]
            } else {
                vec![vec![9]]
            };
            for (j, dims) in shapes.into_iter().enumerate() {
                let x = c.input(&format!("x{d}{i}_{j}"), d, &dims, Gen::Uniform(-4.0, 4.0));
                c.out(&format!("{}_{d}_{i}_{j}", op.name()), Op::Unary(op), &[x]);
            }
        }
        // Positive domains.
        for op in [UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Reciprocal] {
            let x = c.input(
                &format!("p{d}{}", op.name()),
                d,
                &[11],
                Gen::Uniform(0.05, 8.0),
            );
            c.out(&format!("{}_{d}_p", op.name()), Op::Unary(op), &[x]);
        }
    }
    check_tol(&c, &|name, d| {
        // tan has poles in [-4, 4]; its f64 form loses f32 input precision near them.
        if d == DType::F64 && name.starts_with("tan_") {
            return (1e-3, 1e-6);
        }
        tol(d, transcendental(name))
    });
}

#[test]
fn unary_special_values() {
    let mut c = Case::new("unary_special");
    let specials = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -2.5,
        2.5,
        1e-40,
        -7.499_999,
        8_388_609.0,
        -3e9,
        1e30,
    ];
    for d in [DType::F32, DType::F64, DType::F16] {
        let t = Tensor::from_f64(d, vec![specials.len()], &specials);
        let x = fixed(&mut c, &format!("s{d}"), t);
        let ops = [
            UnaryOp::Relu,
            UnaryOp::Floor,
            UnaryOp::Ceil,
            UnaryOp::Round,
            UnaryOp::Sign,
            UnaryOp::Abs,
            UnaryOp::Neg,
            UnaryOp::HardSwish,
            UnaryOp::Softsign,
            UnaryOp::ThresholdedRelu { alpha: 0.25 },
            UnaryOp::Softplus,
            UnaryOp::Sigmoid,
            UnaryOp::IsNaN,
            UnaryOp::IsInf {
                negative: true,
                positive: true,
            },
            UnaryOp::IsInf {
                negative: false,
                positive: true,
            },
            UnaryOp::IsInf {
                negative: true,
                positive: false,
            },
        ];
        for (i, op) in ops.into_iter().enumerate() {
            c.out(&format!("{}_{d}_{i}", op.name()), Op::Unary(op), &[x]);
        }
    }
    let b = fixed(
        &mut c,
        "b",
        Tensor::from_i64(DType::Bool, vec![5], &[1, 0, 0, 1, 1]),
    );
    c.out("not", Op::Unary(UnaryOp::Not), &[b]);
    check_tol(&c, &|name, d| tol(d, transcendental(name)));
}

#[test]
fn unary_every_int_dtype() {
    let mut c = Case::new("unary_int_all");
    for d in INTS {
        let ops = [
            UnaryOp::Relu,
            UnaryOp::Neg,
            UnaryOp::Abs,
            UnaryOp::Sign,
            UnaryOp::Clip {
                min: -3.5,
                max: 4.2,
            },
            UnaryOp::Clip {
                min: 2.0,
                max: f32::INFINITY,
            },
        ];
        for (i, op) in ops.into_iter().enumerate() {
            if d.is_signed_int() || !matches!(op, UnaryOp::Relu | UnaryOp::Neg) {
                let x = c.input(&format!("x{d}{i}"), d, &[13], Gen::Ints(-9, 9));
                c.out(&format!("{}_{d}_{i}", op.name()), Op::Unary(op), &[x]);
            }
        }
    }
    // u64 above 2^63 reads as unsigned.
    let big = Tensor::from_i64(DType::U64, vec![3], &[-2, 5, 0]);
    let x = fixed(&mut c, "big", big);
    for op in [UnaryOp::Abs, UnaryOp::Sign] {
        c.out(&format!("{}_big", op.name()), Op::Unary(op), &[x]);
    }
    check_tol(&c, &|_, d| tol(d, false));
}

/// Every arithmetic op on one dtype, with broadcasting on either side and both.
fn arith_ops() -> [BinaryOp; 9] {
    [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Mod,
        BinaryOp::Fmod,
        BinaryOp::PRelu,
    ]
}

#[test]
fn binary_every_dtype_with_broadcasting() {
    let mut c = Case::new("binary_all");
    let shapes: [(&[usize], &[usize]); 4] = [
        (&[2, 3, 5], &[2, 3, 5]),
        (&[2, 3, 5], &[3, 1]),
        (&[4, 1, 6], &[1, 5, 1]),
        (&[9], &[]),
    ];
    for d in FLOATS.into_iter().chain(INTS) {
        for op in arith_ops() {
            for (k, (sa, sb)) in shapes.iter().enumerate() {
                // PRelu's slope broadcasts one way only.
                if op == BinaryOp::PRelu && k == 2 {
                    continue;
                }
                let (ga, gb) = if d.is_float() {
                    (Gen::Uniform(-6.0, 6.0), Gen::Uniform(-3.0, 3.0))
                } else if d.is_signed_int() {
                    (Gen::Ints(-40, 40), Gen::Ints(-7, 7))
                } else {
                    (Gen::Ints(0, 250), Gen::Ints(0, 9))
                };
                let a = c.input(&format!("a{d}{}{k}", op.name()), d, sa, ga);
                let b = c.input(&format!("b{d}{}{k}", op.name()), d, sb, gb);
                c.out(&format!("{}_{d}_{k}", op.name()), Op::Binary(op), &[a, b]);
            }
        }
    }
    // Wrapping and the trapping corners of integer division and remainder.
    for d in [DType::I8, DType::I64] {
        let (lo, hi) = if d == DType::I8 {
            (-128, 127)
        } else {
            (i64::MIN, i64::MAX)
        };
        let a = fixed(
            &mut c,
            &format!("wa{d}"),
            Tensor::from_i64(d, vec![4], &[lo, hi, lo, 7]),
        );
        let b = fixed(
            &mut c,
            &format!("wb{d}"),
            Tensor::from_i64(d, vec![4], &[-1, 1, 0, 0]),
        );
        for op in [
            BinaryOp::Add,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Mod,
            BinaryOp::Fmod,
        ] {
            c.out(&format!("w{}_{d}", op.name()), Op::Binary(op), &[a, b]);
        }
    }
    let big = fixed(
        &mut c,
        "ubig",
        Tensor::from_i64(DType::U64, vec![3], &[-2, -3, 9]),
    );
    let small = fixed(
        &mut c,
        "usmall",
        Tensor::from_i64(DType::U64, vec![3], &[7, -1, 2]),
    );
    for op in [BinaryOp::Div, BinaryOp::Mod, BinaryOp::Max, BinaryOp::Min] {
        c.out(&format!("u{}", op.name()), Op::Binary(op), &[big, small]);
    }
    check_tol(&c, &|_, d| match d {
        // A half difference of two halves is exact; a product or quotient rounds once more
        // than the reference (through f32): one half-ulp, relative.
        DType::F16 | DType::BF16 => tol(d, false),
        // The f64 remainder is exact too for these magnitudes.
        _ => (1e-12, 1e-12),
    });
}

#[test]
fn float_remainder_edge_cases() {
    let mut c = Case::new("mod_edges");
    let inf = f64::INFINITY;
    let x = [
        0.0,
        -0.0,
        0.0,
        -0.0,
        -3.0,
        3.0,
        -1.0,
        1.0,
        inf,
        -inf,
        1.0,
        1.0,
        f64::NAN,
        5.5,
    ];
    let y = [
        -2.0,
        2.0,
        2.0,
        -2.0,
        inf,
        inf,
        -inf,
        -inf,
        2.0,
        2.0,
        0.0,
        -0.0,
        1.0,
        f64::NAN,
    ];
    // Quotients far from 1, and quotients just below an integer (where a rounded-up division
    // must be corrected).
    let qa = [1e7, -1e7, 0.3, 0.9, 7.0, 100.0];
    let qb = [0.1, 0.1, 0.1, 0.3, 0.7, 0.010_000_001];
    for d in [DType::F32, DType::F64, DType::F16] {
        let a = fixed(
            &mut c,
            &format!("x{d}"),
            Tensor::from_f64(d, vec![x.len()], &x),
        );
        let b = fixed(
            &mut c,
            &format!("y{d}"),
            Tensor::from_f64(d, vec![y.len()], &y),
        );
        let qa_t = fixed(&mut c, &format!("qa{d}"), Tensor::from_f64(d, vec![6], &qa));
        let qb_t = fixed(&mut c, &format!("qb{d}"), Tensor::from_f64(d, vec![6], &qb));
        for op in [BinaryOp::Mod, BinaryOp::Fmod] {
            c.out(&format!("{}_{d}", op.name()), Op::Binary(op), &[a, b]);
            if d == DType::F32 {
                c.out(
                    &format!("{}_q{d}", op.name()),
                    Op::Binary(op),
                    &[qa_t, qb_t],
                );
            }
        }
    }
    // Bit-exact: the remainder is exact, and the sign of a zero result matters.
    kiln_ir::verify(&c.g).unwrap();
    let want = reference(&c.g, &c.inputs);
    for arch in ARCHES {
        if let Some(got) = run_compiled(&c, arch, WeightsMode::Embedded) {
            for (((name, _), g), w) in c.g.outputs.iter().zip(&got).zip(&want) {
                let d = w.dtype();
                let gt = Tensor::from_bytes(d, w.shape().to_vec(), g.clone()).unwrap();
                for (j, (a, b)) in gt.to_f64_vec().iter().zip(w.to_f64_vec()).enumerate() {
                    let same = a.is_nan() && b.is_nan()
                        || *a == b && a.is_sign_negative() == b.is_sign_negative();
                    assert!(same, "{name}[{j}] on {arch:?}: got {a:e}, want {b:e}");
                }
            }
        }
    }
}

#[test]
fn pow_mixed_dtypes() {
    let mut c = Case::new("pow_mixed");
    let cases: [(DType, DType, Gen, Gen); 10] = [
        (
            DType::F16,
            DType::F32,
            Gen::Uniform(0.1, 3.0),
            Gen::Uniform(-2.0, 2.0),
        ),
        (
            DType::BF16,
            DType::F16,
            Gen::Uniform(0.1, 3.0),
            Gen::Uniform(-2.0, 2.0),
        ),
        (
            DType::F32,
            DType::F32,
            Gen::Uniform(0.1, 3.0),
            Gen::Uniform(-2.0, 2.0),
        ),
        (
            DType::F64,
            DType::F64,
            Gen::Uniform(0.1, 3.0),
            Gen::Uniform(-2.0, 2.0),
        ),
        (
            DType::F16,
            DType::F16,
            Gen::Uniform(0.1, 3.0),
            Gen::Uniform(-2.0, 2.0),
        ),
        (
            DType::F32,
            DType::I32,
            Gen::Uniform(-3.0, 3.0),
            Gen::Ints(-3, 4),
        ),
        (
            DType::F32,
            DType::U64,
            Gen::Uniform(-3.0, 3.0),
            Gen::Ints(0, 4),
        ),
        (DType::I32, DType::F32, Gen::Ints(0, 9), Gen::Ints(0, 3)),
        (DType::I64, DType::I64, Gen::Ints(-5, 5), Gen::Ints(-3, 9)),
        (DType::U8, DType::U8, Gen::Ints(0, 5), Gen::Ints(0, 9)),
    ];
    for (k, (da, db, ga, gb)) in cases.into_iter().enumerate() {
        let a = c.input(&format!("a{k}"), da, &[3, 4], ga);
        let b = c.input(&format!("b{k}"), db, &[4], gb);
        c.out(
            &format!("pow_{da}_{db}_{k}"),
            Op::Binary(BinaryOp::Pow),
            &[a, b],
        );
    }
    check_tol(&c, &|_, d| tol(d, true));
}

#[test]
fn comparisons_and_logic_every_dtype() {
    let mut c = Case::new("compare_all");
    let cmps = [
        BinaryOp::Equal,
        BinaryOp::Less,
        BinaryOp::LessOrEqual,
        BinaryOp::Greater,
        BinaryOp::GreaterOrEqual,
    ];
    for d in FLOATS.into_iter().chain(INTS) {
        // Few distinct values, so equality happens.
        let a = c.input(&format!("a{d}"), d, &[3, 5], Gen::Ints(0, 3));
        let b = c.input(&format!("b{d}"), d, &[5], Gen::Ints(0, 3));
        for op in cmps {
            c.out(&format!("{}_{d}", op.name()), Op::Binary(op), &[a, b]);
        }
    }
    // NaN compares false (and unequal).
    let n = fixed(
        &mut c,
        "nan",
        Tensor::from_f32(vec![3], &[f32::NAN, 1.0, f32::NAN]),
    );
    let m = fixed(
        &mut c,
        "one",
        Tensor::from_f32(vec![3], &[1.0, f32::NAN, f32::NAN]),
    );
    for op in cmps {
        c.out(&format!("{}_nan", op.name()), Op::Binary(op), &[n, m]);
    }
    let u = fixed(&mut c, "u", Tensor::from_i64(DType::U64, vec![2], &[-1, 3]));
    let v = fixed(&mut c, "v", Tensor::from_i64(DType::U64, vec![2], &[1, -1]));
    c.out("less_u64_big", Op::Binary(BinaryOp::Less), &[u, v]);
    let p = c.input("p", DType::Bool, &[2, 3, 4], Gen::Ints(0, 1));
    let q = c.input("q", DType::Bool, &[3, 1], Gen::Ints(0, 1));
    for op in [BinaryOp::And, BinaryOp::Or, BinaryOp::Xor, BinaryOp::Equal] {
        c.out(&format!("{}_bool", op.name()), Op::Binary(op), &[p, q]);
    }
    c.out("not_bool", Op::Unary(UnaryOp::Not), &[p]);
    check_tol(&c, &|_, d| tol(d, false));
}

#[test]
fn where_every_dtype() {
    let mut c = Case::new("where_all");
    for d in FLOATS.into_iter().chain(INTS).chain([DType::Bool]) {
        let cond = c.input(&format!("c{d}"), DType::Bool, &[2, 1, 4], Gen::Ints(0, 1));
        let gen = if d == DType::Bool {
            Gen::Ints(0, 1)
        } else {
            Gen::Ints(-50, 50)
        };
        let x = c.input(&format!("x{d}"), d, &[3, 1], gen);
        let y = c.input(&format!("y{d}"), d, &[], gen);
        c.out(&format!("where_{d}"), Op::Where, &[cond, x, y]);
        // No broadcasting: the f32 one can run in place.
        let cond2 = c.input(&format!("c2{d}"), DType::Bool, &[6], Gen::Ints(0, 1));
        let x2 = c.input(&format!("x2{d}"), d, &[6], gen);
        let y2 = c.input(&format!("y2{d}"), d, &[6], gen);
        c.out(&format!("where2_{d}"), Op::Where, &[cond2, x2, y2]);
    }
    check_tol(&c, &|_, _| (0.0, 0.0));
}

#[test]
fn casts_between_every_pair() {
    let mut c = Case::new("cast_all");
    let all = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
        DType::I4,
        DType::U4,
    ];
    // Ties of the half formats (2049 and 2051 for f16, 257 and 259 for bf16), values a double
    // rounding would get wrong, out-of-range and negative values for the integers, NaN and infinities.
    let specials = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        2.7,
        -2.7,
        2049.0,
        2051.0,
        257.0,
        259.0,
        1.0 + 2f64.powi(-11) + 2f64.powi(-40),
        65504.0,
        65520.0,
        1e-6,
        -1e-7,
        3e-8,
        200.7,
        -129.5,
        70000.0,
        4e9,
        -5e9,
        1e20,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    for from in all {
        let n = if from.bits() < 8 { 15 } else { 17 };
        let t = if from.is_float() {
            let v: Vec<f64> = (0..n).map(|i| specials[(i * 7) % specials.len()]).collect();
            let mut v = v;
            v.extend_from_slice(&specials);
            Tensor::from_f64(from, vec![v.len()], &v)
        } else {
            let v: Vec<i64> = (0..n as i64)
                .map(|i| {
                    [
                        0,
                        1,
                        -1,
                        7,
                        -8,
                        127,
                        -128,
                        255,
                        300,
                        -70000,
                        1 << 40,
                        i64::MIN,
                    ][i as usize % 12]
                        + i
                })
                .collect();
            Tensor::from_i64(from, vec![v.len()], &v)
        };
        let x = fixed(&mut c, &format!("x{from}"), t);
        for to in all {
            c.out(&format!("{from}_to_{to}"), Op::Cast(Cast { to }), &[x]);
        }
    }
    check_tol(&c, &|_, _| (0.0, 0.0));
}

/// An x86 without SSE4.1 has no native rounding: floor, ceil, round and the remainders use the
/// magic-constant fallbacks, which must agree with the reference exactly.
#[test]
fn rounding_without_sse41() {
    let mut c = Case::new("round_fallback");
    let vals = [
        -2.5,
        -1.5,
        -0.5,
        -0.49,
        0.5,
        1.5,
        2.5,
        3.7,
        -3.7,
        0.0,
        -0.0,
        8_388_607.5,
        -8_388_609.0,
        1e30,
        f64::NAN,
        f64::INFINITY,
    ];
    for d in [DType::F32, DType::F64] {
        let x = fixed(
            &mut c,
            &format!("x{d}"),
            Tensor::from_f64(d, vec![vals.len()], &vals),
        );
        for op in [UnaryOp::Floor, UnaryOp::Ceil, UnaryOp::Round] {
            c.out(&format!("{}_{d}", op.name()), Op::Unary(op), &[x]);
        }
        let a = c.input(&format!("a{d}"), d, &[20], Gen::Uniform(-50.0, 50.0));
        let b = c.input(&format!("b{d}"), d, &[20], Gen::Uniform(-7.0, 7.0));
        c.out(&format!("mod_{d}"), Op::Binary(BinaryOp::Mod), &[a, b]);
        c.out(&format!("fmod_{d}"), Op::Binary(BinaryOp::Fmod), &[a, b]);
    }
    // The vectorized half conversions use only SSE2 lane operations. Sums and products of halves
    // are exact in f32, so these match the reference bit for bit.
    for d in [DType::F16, DType::BF16] {
        let x = c.input(&format!("h{d}"), d, &[11], Gen::Uniform(-9.0, 9.0));
        let y = c.input(&format!("k{d}"), d, &[11], Gen::Uniform(-9.0, 9.0));
        c.out(&format!("round_{d}"), Op::Unary(UnaryOp::Round), &[x]);
        c.out(&format!("add_{d}"), Op::Binary(BinaryOp::Add), &[x, y]);
        c.out(&format!("mul_{d}"), Op::Binary(BinaryOp::Mul), &[x, y]);
    }
    kiln_ir::verify(&c.g).unwrap();
    let want = reference(&c.g, &c.inputs);
    let opts = Options {
        target: Target::parse("x86_64-unknown-linux-gnu", "x86-64", &[]).unwrap(),
        ..options("m", Arch::X86_64, WeightsMode::Embedded)
    };
    if let Some(got) = run_with(&c, Arch::X86_64, &opts) {
        compare_tol(&c, Arch::X86_64, &got, &want, &|_, _| (1e-12, 0.0));
    }
}
