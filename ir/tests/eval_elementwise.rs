//! Reference evaluators of the elementwise family (activations, math functions, comparisons,
//! logic, remainders, `where`, casts) against hand-computed values; every expected value is worked
//! out in a comment or comes from a textbook identity. Also the inference rules (dtypes, bool
//! outputs, three-way broadcasting) and the textual round trip of every new op.

use half::{bf16, f16};
use kiln_ir::ops::{BinaryOp, Cast, UnaryOp};
use kiln_ir::{parse, print, verify, DType, Graph, Op, OpError, PrintOptions, Tensor, TensorType};

fn eval_all(op: &Op, ins: &[&Tensor]) -> Result<Tensor, OpError> {
    let ins: Vec<Option<&Tensor>> = ins.iter().map(|&t| Some(t)).collect();
    op.eval(&ins).map(|mut v| v.remove(0))
}

fn eval(op: &Op, ins: &[&Tensor]) -> Tensor {
    eval_all(op, ins).unwrap_or_else(|e| panic!("{} failed: {e}", op.name()))
}

fn f32s(v: &[f32]) -> Tensor {
    Tensor::from_f32(vec![v.len()], v)
}

fn ints(d: DType, v: &[i64]) -> Tensor {
    Tensor::from_i64(d, vec![v.len()], v)
}

fn bools(v: &[bool]) -> Tensor {
    let v: Vec<i64> = v.iter().map(|&b| b as i64).collect();
    Tensor::from_i64(DType::Bool, vec![v.len()], &v)
}

#[track_caller]
fn close(t: &Tensor, want: &[f64], tol: f64) {
    let got = t.to_f64_vec();
    assert_eq!(got.len(), want.len(), "length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= tol * w.abs().max(1.0);
        assert!(ok, "element {i}: got {g}, want {w} (all: {got:?})");
    }
}

fn un(u: UnaryOp, x: &Tensor) -> Tensor {
    eval(&Op::Unary(u), &[x])
}

fn bin(b: BinaryOp, x: &Tensor, y: &Tensor) -> Tensor {
    eval(&Op::Binary(b), &[x, y])
}

#[test]
fn round_is_half_to_even_and_sign_keeps_zeros_and_nan() {
    let x = f32s(&[-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.499_99, 3.7]);
    close(
        &un(UnaryOp::Round, &x),
        &[-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 0.0, 4.0],
        0.0,
    );
    let s = un(UnaryOp::Sign, &f32s(&[-3.0, 0.0, 2.5, f32::NAN, -0.0]));
    close(&s, &[-1.0, 0.0, 1.0, f64::NAN, 0.0], 0.0);
    assert!(s.to_f64_vec()[4].is_sign_negative(), "sign(-0) is -0");
    let si = un(UnaryOp::Sign, &ints(DType::I32, &[-5, 0, 7]));
    assert_eq!(si.to_i64_vec(), vec![-1, 0, 1]);
    assert_eq!(si.dtype(), DType::I32);
    let su = un(UnaryOp::Sign, &ints(DType::U8, &[0, 200]));
    assert_eq!(su.to_i64_vec(), vec![0, 1]);
}

#[test]
fn trig_at_known_angles() {
    let pi = std::f64::consts::PI;
    let x = Tensor::from_f64(DType::F64, vec![4], &[0.0, pi / 6.0, pi / 2.0, pi]);
    close(&un(UnaryOp::Sin, &x), &[0.0, 0.5, 1.0, 0.0], 1e-15);
    close(
        &un(UnaryOp::Cos, &x),
        &[1.0, 0.866_025_403_784_438_6, 0.0, -1.0],
        1e-15,
    );
    let t = Tensor::from_f64(DType::F64, vec![2], &[pi / 4.0, -pi / 4.0]);
    close(&un(UnaryOp::Tan, &t), &[1.0, -1.0], 1e-15);
}

#[test]
fn exponential_activations() {
    let x = f32s(&[-1.0, 0.0, 3.0]);
    // 2 (e^-1 - 1) = 2 (0.36787944 - 1) = -1.26424112.
    close(
        &un(UnaryOp::Elu { alpha: 2.0 }, &x),
        &[-1.264_241_12, 0.0, 3.0],
        1e-7,
    );
    // gamma alpha (e^-1 - 1) = 1.050701 * 1.6732632 * -0.63212056 = -1.11133072; gamma * 3.
    let selu = UnaryOp::Selu {
        alpha: 1.673_263_2,
        gamma: 1.050_701,
    };
    close(&un(selu, &x), &[-1.111_330_72, 0.0, 3.152_103], 1e-6);
    // celu(-2; alpha 2) = 2 (e^(-2/2) - 1) = -1.26424112.
    close(
        &un(UnaryOp::Celu { alpha: 2.0 }, &f32s(&[-2.0, 1.0])),
        &[-1.264_241_12, 1.0],
        1e-7,
    );
    // softplus(0) = ln 2; softplus(100) = 100 (no overflow); softplus(-100) = e^-100.
    close(
        &un(UnaryOp::Softplus, &f32s(&[0.0, 100.0, -100.0])),
        &[std::f64::consts::LN_2, 100.0, 3.720_076e-44],
        1e-6,
    );
    // mish(1) = tanh(ln(1 + e)) = tanh(1.31326169) = 0.86509839; mish(-1) = -tanh(ln(1 + 1/e)).
    close(
        &un(UnaryOp::Mish, &f32s(&[1.0, -1.0])),
        &[0.865_098_39, -0.303_401_46],
        1e-7,
    );
    // silu(x) = x / (1 + e^-x): silu(0) = 0, silu(1) = 1 / 1.36787944 = 0.73105858,
    // silu(-2) = -2 / (1 + e^2) = -2 / 8.3890561 = -0.23840584; silu(-100) = -100 e^-100, about
    // -4e-42 (no overflow to NaN), zero within the tolerance.
    close(
        &un(UnaryOp::Silu, &f32s(&[0.0, 1.0, -2.0, -100.0])),
        &[0.0, 0.731_058_58, -0.238_405_84, 0.0],
        1e-7,
    );
}

#[test]
fn piecewise_activations() {
    let hs = UnaryOp::HardSigmoid {
        alpha: 0.2,
        beta: 0.5,
    };
    // 0.2 x + 0.5 clamped: -0.1 -> 0, 0.7, 1.1 -> 1.
    close(&un(hs, &f32s(&[-3.0, 1.0, 3.0])), &[0.0, 0.7, 1.0], 1e-7);
    // x * clamp(x / 6 + 1/2): -4 -> 0, 1 -> 1 * 2/3, 4 -> 4 * 1.
    close(
        &un(UnaryOp::HardSwish, &f32s(&[-4.0, 1.0, 4.0])),
        &[0.0, 2.0 / 3.0, 4.0],
        1e-7,
    );
    close(
        &un(UnaryOp::Softsign, &f32s(&[3.0, -1.0])),
        &[0.75, -0.5],
        0.0,
    );
    // Strictly above the threshold; NaN gives 0 (numpy's where(x > alpha, x, 0)).
    close(
        &un(
            UnaryOp::ThresholdedRelu { alpha: 1.0 },
            &f32s(&[0.5, 1.0, 2.0, f32::NAN]),
        ),
        &[0.0, 0.0, 2.0, 0.0],
        0.0,
    );
    // gelu(1) = Φ(1) = 0.5 (1 + erf(1/√2)) = 0.84134475; gelu(-1) = -(1 - Φ(1)).
    close(
        &un(UnaryOp::Gelu { tanh: false }, &f32s(&[1.0, -1.0, 0.0])),
        &[0.841_344_75, -0.158_655_25, 0.0],
        1e-7,
    );
    // 0.5 (1 + tanh(sqrt(2/π) (1 + 0.044715))) = 0.84119199.
    close(
        &un(UnaryOp::Gelu { tanh: true }, &f32s(&[1.0, -2.0])),
        &[0.841_191_99, -0.045_402_31],
        1e-7,
    );
}

#[test]
fn predicates_give_bools() {
    let x = f32s(&[1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0]);
    let n = un(UnaryOp::IsNaN, &x);
    assert_eq!(n.dtype(), DType::Bool);
    assert_eq!(n.to_i64_vec(), vec![0, 1, 0, 0, 0]);
    let both = UnaryOp::IsInf {
        negative: true,
        positive: true,
    };
    assert_eq!(un(both, &x).to_i64_vec(), vec![0, 0, 1, 1, 0]);
    let neg = UnaryOp::IsInf {
        negative: true,
        positive: false,
    };
    assert_eq!(un(neg, &x).to_i64_vec(), vec![0, 0, 0, 1, 0]);
    let h = Tensor::from_f64(DType::F16, vec![2], &[f64::INFINITY, 1.0]);
    assert_eq!(un(both, &h).to_i64_vec(), vec![1, 0]);
    let not = un(UnaryOp::Not, &bools(&[true, false]));
    assert_eq!((not.dtype(), not.to_i64_vec()), (DType::Bool, vec![0, 1]));
}

#[test]
fn unary_dtype_rules() {
    let infer = |u: UnaryOp, d: DType| {
        let ty = TensorType::new(d, &[3]);
        Op::Unary(u).infer(&[Some(kiln_ir::ops::Fact {
            ty: &ty,
            value: None,
        })])
    };
    assert!(matches!(
        infer(UnaryOp::Not, DType::F32),
        Err(OpError::Unsupported(_))
    ));
    assert!(matches!(
        infer(UnaryOp::Sin, DType::I32),
        Err(OpError::Unsupported(_))
    ));
    assert_eq!(
        infer(UnaryOp::IsNaN, DType::F16).unwrap()[0].dtype,
        DType::Bool
    );
    assert_eq!(
        infer(UnaryOp::Mish, DType::BF16).unwrap()[0].dtype,
        DType::BF16
    );
    assert_eq!(
        infer(UnaryOp::Sign, DType::U16).unwrap()[0].dtype,
        DType::U16
    );
}

#[test]
fn remainders_follow_python_and_c() {
    let a = ints(DType::I32, &[-7, 7, -7, 7, 5, 6]);
    let b = ints(DType::I32, &[3, -3, -3, 3, 0, 3]);
    // Python: -7 % 3 = 2, 7 % -3 = -2, -7 % -3 = -1, 7 % 3 = 1; by zero: 0 (kiln's choice).
    assert_eq!(
        bin(BinaryOp::Mod, &a, &b).to_i64_vec(),
        vec![2, -2, -1, 1, 0, 0]
    );
    // C: the sign of the dividend.
    assert_eq!(
        bin(BinaryOp::Fmod, &a, &b).to_i64_vec(),
        vec![-1, 1, -1, 1, 0, 0]
    );
    // i64::MIN % -1 would overflow in the hardware: 0.
    let m = ints(DType::I64, &[i64::MIN]);
    let m1 = ints(DType::I64, &[-1]);
    assert_eq!(bin(BinaryOp::Mod, &m, &m1).to_i64_vec(), vec![0]);
    // Floats: numpy's mod and fmod, edge cases of the ONNX tests.
    let x = f32s(&[
        -4.5,
        4.5,
        0.0,
        -0.0,
        -3.0,
        3.0,
        1.0,
        -1.0,
        f32::INFINITY,
        1.0,
    ]);
    let y = f32s(&[
        2.0,
        -2.0,
        -2.0,
        2.0,
        f32::INFINITY,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        2.0,
        0.0,
    ]);
    let m = bin(BinaryOp::Mod, &x, &y).to_f64_vec();
    let want = [
        1.5,
        -1.5,
        -0.0,
        0.0,
        f64::INFINITY,
        3.0,
        f64::NEG_INFINITY,
        -1.0,
        f64::NAN,
        f64::NAN,
    ];
    for (i, (g, w)) in m.iter().zip(want).enumerate() {
        assert!(
            g == &w && g.is_sign_negative() == w.is_sign_negative() || g.is_nan() && w.is_nan(),
            "mod element {i}: got {g}, want {w}"
        );
    }
    let f = bin(
        BinaryOp::Fmod,
        &f32s(&[-4.5, 4.5, 5.0]),
        &f32s(&[2.0, -2.0, f32::INFINITY]),
    );
    close(&f, &[-0.5, 0.5, 5.0], 0.0);
}

#[test]
fn integer_division_and_order_by_signedness() {
    // Truncation toward zero; division by zero gives 0.
    let q = bin(
        BinaryOp::Div,
        &ints(DType::I8, &[-7, 7, 5, -128]),
        &ints(DType::I8, &[2, -2, 0, -1]),
    );
    // -128 / -1 = 128 wraps to -128 in i8, as numpy does.
    assert_eq!(q.to_i64_vec(), vec![-3, -3, 0, -128]);
    // u64 above 2^63: unsigned order and division.
    let big = u64::MAX - 1;
    let a = ints(DType::U64, &[big as i64, 10]);
    let b = ints(DType::U64, &[3, big as i64]);
    assert_eq!(
        bin(BinaryOp::Max, &a, &b).to_i64_vec(),
        vec![big as i64, big as i64]
    );
    assert_eq!(
        bin(BinaryOp::Div, &a, &b).to_i64_vec(),
        vec![(big / 3) as i64, 0]
    );
    assert_eq!(bin(BinaryOp::Greater, &a, &b).to_i64_vec(), vec![1, 0]);
    assert_eq!(
        bin(BinaryOp::Mod, &a, &b).to_i64_vec(),
        vec![(big % 3) as i64, 10]
    );
}

#[test]
fn integer_pow() {
    let p = bin(
        BinaryOp::Pow,
        &ints(DType::I64, &[3, 2, -1, 1, -2, 2]),
        &ints(DType::I64, &[4, -1, -3, -5, 3, 62]),
    );
    // 3^4, 1/2 -> 0, (-1)^-3 = -1, 1^-5 = 1, (-2)^3, 2^62.
    assert_eq!(p.to_i64_vec(), vec![81, 0, -1, 1, -8, 1 << 62]);
    // An int base with a float exponent truncates: 2^0.5 = 1.414 -> 1, 9^0.5 = 3.
    let q = bin(
        BinaryOp::Pow,
        &ints(DType::I32, &[2, 9]),
        &f32s(&[0.5, 0.5]),
    );
    assert_eq!((q.dtype(), q.to_i64_vec()), (DType::I32, vec![1, 3]));
    // A float base with an integer exponent.
    let r = bin(
        BinaryOp::Pow,
        &f32s(&[1.5, -2.0]),
        &ints(DType::I64, &[2, 3]),
    );
    close(&r, &[2.25, -8.0], 0.0);
}

#[test]
fn comparisons_and_logic() {
    let a = f32s(&[1.0, 2.0, f32::NAN, 3.0]);
    let b = f32s(&[2.0, 2.0, f32::NAN, 1.0]);
    let cases = [
        (BinaryOp::Equal, [0, 1, 0, 0]),
        (BinaryOp::Less, [1, 0, 0, 0]),
        (BinaryOp::LessOrEqual, [1, 1, 0, 0]),
        (BinaryOp::Greater, [0, 0, 0, 1]),
        (BinaryOp::GreaterOrEqual, [0, 1, 0, 1]),
    ];
    for (op, want) in cases {
        let t = bin(op, &a, &b);
        assert_eq!(t.dtype(), DType::Bool);
        assert_eq!(t.to_i64_vec(), want, "{}", op.name());
    }
    let p = bools(&[false, false, true, true]);
    let q = bools(&[false, true, false, true]);
    assert_eq!(bin(BinaryOp::And, &p, &q).to_i64_vec(), vec![0, 0, 0, 1]);
    assert_eq!(bin(BinaryOp::Or, &p, &q).to_i64_vec(), vec![0, 1, 1, 1]);
    assert_eq!(bin(BinaryOp::Xor, &p, &q).to_i64_vec(), vec![0, 1, 1, 0]);
    assert_eq!(bin(BinaryOp::Equal, &p, &q).to_i64_vec(), vec![1, 0, 0, 1]);
    // Logic wants bools, arithmetic refuses them.
    assert!(eval_all(&Op::Binary(BinaryOp::And), &[&a, &b]).is_err());
    assert!(eval_all(&Op::Binary(BinaryOp::Add), &[&p, &q]).is_err());
    assert!(eval_all(&Op::Binary(BinaryOp::Less), &[&p, &q]).is_err());
}

#[test]
fn prelu_broadcasts_the_slope() {
    let x = Tensor::from_f32(vec![2, 2], &[-1.0, 2.0, -3.0, 4.0]);
    let slope = f32s(&[0.5, 0.25]);
    let y = bin(BinaryOp::PRelu, &x, &slope);
    assert_eq!(y.shape(), &[2, 2]);
    // Rows share the slope per column: -1 * 0.5, -3 * 0.5.
    close(&y, &[-0.5, 2.0, -1.5, 4.0], 0.0);
}

#[test]
fn where_broadcasts_three_ways_and_keeps_bits() {
    let c = Tensor::from_i64(DType::Bool, vec![2, 1], &[1, 0]);
    let x = Tensor::from_i64(DType::I64, vec![1, 3], &[1, 2, 3]);
    let y = Tensor::from_i64(DType::I64, vec![], &[-9]);
    let w = eval(&Op::Where, &[&c, &x, &y]);
    assert_eq!(w.shape(), &[2, 3]);
    assert_eq!(w.to_i64_vec(), vec![1, 2, 3, -9, -9, -9]);
    // A NaN payload and -0.0 pass through untouched.
    let nan = f32::from_bits(0x7fc0_1234);
    let xf = f32s(&[nan, -0.0]);
    let yf = f32s(&[1.0, 1.0]);
    let wf = eval(&Op::Where, &[&bools(&[true, true]), &xf, &yf]);
    assert_eq!(wf.bytes(), xf.bytes());
    // The condition must be bool, x and y must agree.
    assert!(eval_all(&Op::Where, &[&x, &x, &x]).is_err());
    assert!(eval_all(&Op::Where, &[&c, &x, &f32s(&[1.0])]).is_err());
}

#[test]
fn casts_round_and_wrap() {
    let to = |d: DType| Op::Cast(Cast { to: d });
    // f16 has spacing 2 at 2048: 2049 is a tie (to even: 2048), 2051 one too (to 2052).
    let h = eval(&to(DType::F16), &[&f32s(&[2049.0, 2051.0, 70000.0, 1e-8])]);
    let hv: Vec<f32> = h
        .bytes()
        .chunks(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    assert_eq!(hv, vec![2048.0, 2052.0, f32::INFINITY, 0.0]);
    // bf16 keeps 8 significant bits: 1 + 2^-8 is a tie (to 1), 1 + 3 * 2^-8 rounds to 1 + 2^-6.
    let b = eval(&to(DType::BF16), &[&f32s(&[1.003_906_3, 1.011_718_8])]);
    let bv: Vec<f32> = b
        .bytes()
        .chunks(2)
        .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    assert_eq!(bv, vec![1.0, 1.015_625]);
    // f64 -> f16 rounds once: 1 + 2^-11 + 2^-40 is just above the midpoint of 1 and 1 + 2^-10.
    let d = Tensor::from_f64(
        DType::F64,
        vec![1],
        &[1.0 + 2f64.powi(-11) + 2f64.powi(-40)],
    );
    let dh = eval(&to(DType::F16), &[&d]);
    assert_eq!(dh.to_f64_vec(), vec![1.0 + 2f64.powi(-10)]);
    // Float to int truncates toward zero; out of the target's range it wraps (200 -> -56).
    let i = eval(&to(DType::I8), &[&f32s(&[200.7, -2.7, 2.7])]);
    assert_eq!(i.to_i64_vec(), vec![-56, -2, 2]);
    // To bool: zero is false, NaN is true.
    let bl = eval(&to(DType::Bool), &[&f32s(&[0.0, -0.0, f32::NAN, 0.5])]);
    assert_eq!(bl.to_i64_vec(), vec![0, 0, 1, 1]);
    // 4-bit: wraps to the nibble.
    let q = eval(&to(DType::I4), &[&f32s(&[-9.0, 7.0, -8.0])]);
    assert_eq!(q.to_i64_vec(), vec![7, 7, -8]);
}

#[test]
fn new_ops_round_trip_through_text() {
    let mut g = Graph::new("ew");
    let x = g.add_input("x", TensorType::new(DType::F32, &[2, 3]));
    let c = g.add_input("c", TensorType::new(DType::Bool, &[2, 1]));
    let i = g.add_input("i", TensorType::new(DType::I32, &[3]));
    let unary = [
        UnaryOp::Round,
        UnaryOp::Sign,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Tan,
        UnaryOp::Elu { alpha: 0.5 },
        UnaryOp::Selu {
            alpha: 1.5,
            gamma: 1.25,
        },
        UnaryOp::Celu { alpha: 2.0 },
        UnaryOp::HardSigmoid {
            alpha: 0.25,
            beta: 0.5,
        },
        UnaryOp::HardSwish,
        UnaryOp::Softplus,
        UnaryOp::Softsign,
        UnaryOp::ThresholdedRelu { alpha: 0.75 },
        UnaryOp::Gelu { tanh: true },
        UnaryOp::Gelu { tanh: false },
        UnaryOp::Mish,
        UnaryOp::Silu,
        UnaryOp::IsNaN,
        UnaryOp::IsInf {
            negative: false,
            positive: true,
        },
    ];
    for (k, u) in unary.into_iter().enumerate() {
        let v = g
            .add_node(format!("u{k}"), Op::Unary(u), &[Some(x)], &[])
            .unwrap()[0];
        g.outputs.push((format!("u{k}"), v));
    }
    let not = g
        .add_node("not", Op::Unary(UnaryOp::Not), &[Some(c)], &[])
        .unwrap()[0];
    g.outputs.push(("not".into(), not));
    for (k, b) in BinaryOp::ALL.into_iter().enumerate() {
        let (l, r) = if b.is_logical() { (c, c) } else { (i, i) };
        let v = g
            .add_node(format!("b{k}"), Op::Binary(b), &[Some(l), Some(r)], &[])
            .unwrap()[0];
        g.outputs.push((format!("b{k}"), v));
    }
    let w = g
        .add_node("w", Op::Where, &[Some(c), Some(x), Some(x)], &[])
        .unwrap()[0];
    g.outputs.push(("w".into(), w));
    verify(&g).unwrap();
    let full = PrintOptions {
        max_const_elems: usize::MAX,
    };
    let text = print(&g, full);
    let parsed = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    verify(&parsed).unwrap();
    assert_eq!(print(&parsed, full), text);
    for name in [
        "where(",
        "is_inf(",
        "approximate=\"tanh\"",
        "fmod(",
        "prelu(",
        "xor(",
    ] {
        assert!(text.contains(name), "{name} missing in\n{text}");
    }
}
