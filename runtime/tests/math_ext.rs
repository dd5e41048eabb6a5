//! Numerical tests of the trigonometric emitters (`sin`, `cos`, `tan`) and the half-precision
//! conversions (`f16`/`bf16` <-> `f32`, `f64` -> `f32` rounding to odd). Every emitter is
//! JIT-compiled for the host as a scalar and as a 4-lane vector function and compared with
//! references computed independently here (Rust's `f64` trig, and conversions defined from the
//! formats' definitions); an object built from all of them must have no undefined symbols.

mod common;

use common::isa;
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use kiln_runtime::math::{self, MathOpts};
use object::{Object, ObjectSymbol};
use std::sync::OnceLock;

/// What one test function computes: `out[i] = f(in[i])` for one element of `ty_in` (or 4 lanes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fun {
    Sin,
    Cos,
    Tan,
    F16ToF32,
    F32ToF16,
    Bf16ToF32,
    F32ToBf16,
    F64ToF32Odd,
}

const ALL: [Fun; 8] = [
    Fun::Sin,
    Fun::Cos,
    Fun::Tan,
    Fun::F16ToF32,
    Fun::F32ToF16,
    Fun::Bf16ToF32,
    Fun::F32ToBf16,
    Fun::F64ToF32Odd,
];

impl Fun {
    fn name(self) -> &'static str {
        match self {
            Fun::Sin => "sin",
            Fun::Cos => "cos",
            Fun::Tan => "tan",
            Fun::F16ToF32 => "f16_to_f32",
            Fun::F32ToF16 => "f32_to_f16",
            Fun::Bf16ToF32 => "bf16_to_f32",
            Fun::F32ToBf16 => "f32_to_bf16",
            Fun::F64ToF32Odd => "f64_to_f32_odd",
        }
    }

    /// Input and output types of the scalar form (`None` for the vector form: scalar only).
    fn types(self, vector: bool) -> Option<(Type, Type)> {
        let (f, i) = if vector {
            (types::F32X4, types::I32X4)
        } else {
            (types::F32, types::I32)
        };
        Some(match self {
            Fun::Sin | Fun::Cos | Fun::Tan => (f, f),
            Fun::F16ToF32 | Fun::Bf16ToF32 => (i, f),
            Fun::F32ToF16 | Fun::F32ToBf16 => (f, i),
            Fun::F64ToF32Odd if !vector => (types::F64, types::F32),
            Fun::F64ToF32Odd => return None,
        })
    }

    fn emit(self, b: &mut FunctionBuilder, x: Value) -> Value {
        let o = MathOpts::default();
        match self {
            Fun::Sin => math::sin_with(b, x, &o),
            Fun::Cos => math::cos_with(b, x, &o),
            Fun::Tan => math::tan_with(b, x, &o),
            Fun::F16ToF32 => math::f16_bits_to_f32(b, x),
            Fun::F32ToF16 => math::f32_to_f16_bits(b, x),
            Fun::Bf16ToF32 => math::bf16_bits_to_f32(b, x),
            Fun::F32ToBf16 => math::f32_to_bf16_bits(b, x),
            Fun::F64ToF32Odd => math::f64_to_f32_round_odd(b, x),
        }
    }
}

/// Defines `name(x: *const _, out: *mut _)` applying `f` to one value of its input type.
fn define<M: Module>(module: &mut M, name: &str, f: Fun, vector: bool) -> Option<FuncId> {
    let (ti, _) = f.types(vector)?;
    let ptr = module.target_config().pointer_type();
    let mut ctx = module.make_context();
    ctx.func.signature.params.push(AbiParam::new(ptr));
    ctx.func.signature.params.push(AbiParam::new(ptr));
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let block = b.create_block();
        b.append_block_params_for_function_params(block);
        b.switch_to_block(block);
        b.seal_block(block);
        let p = b.block_params(block).to_vec();
        let flags = MemFlagsData::trusted();
        let x = b.ins().load(ti, flags, p[0], 0);
        let r = f.emit(&mut b, x);
        b.ins().store(flags, r, p[1], 0);
        b.ins().return_(&[]);
        b.finalize(module.target_config());
    }
    let id = module
        .declare_function(name, Linkage::Export, &ctx.func.signature)
        .unwrap();
    module
        .define_function(id, &mut ctx)
        .unwrap_or_else(|e| panic!("defining {name}: {e:?}\n{}", ctx.func.display()));
    module.clear_context(&mut ctx);
    Some(id)
}

type RawFn = extern "C" fn(*const u8, *mut u8);

struct Jit {
    fns: Vec<(Fun, RawFn, Option<RawFn>)>,
}

fn jit() -> &'static Jit {
    static JIT: OnceLock<Jit> = OnceLock::new();
    JIT.get_or_init(|| {
        let mut module =
            JITModule::new(JITBuilder::new(cranelift_module::default_libcall_names()).unwrap());
        let ids: Vec<_> = ALL
            .iter()
            .map(|&f| {
                let s = define(&mut module, &format!("{}_s", f.name()), f, false).unwrap();
                let v = define(&mut module, &format!("{}_v", f.name()), f, true);
                (f, s, v)
            })
            .collect();
        module.finalize_definitions().unwrap();
        let get = |id: FuncId| {
            // SAFETY: every function was defined with the two-pointer RawFn signature.
            unsafe { std::mem::transmute::<*const u8, RawFn>(module.get_finalized_function(id)) }
        };
        let fns = ids
            .into_iter()
            .map(|(f, s, v)| (f, get(s), v.map(get)))
            .collect();
        // The module owns the code: keep it alive for the whole test binary.
        std::mem::forget(module);
        Jit { fns }
    })
}

/// Runs `f` on every input, scalar and four at a time vectorized (when the vector form exists);
/// checks both agree bit for bit and returns the scalar results. Inputs and outputs are 32-bit
/// patterns (or 64-bit inputs for the f64 conversion).
fn run<I: Copy + Default, O: Copy + Default + PartialEq + std::fmt::Debug>(
    f: Fun,
    xs: &[I],
) -> Vec<O> {
    run_with(f, xs, |a: O, b: O| a == b)
}

/// [`run`] with `same` deciding whether a vector lane agrees with the scalar result.
fn run_with<I: Copy + Default, O: Copy + Default + std::fmt::Debug>(
    f: Fun,
    xs: &[I],
    same: impl Fn(O, O) -> bool,
) -> Vec<O> {
    let (_, s, v) = *jit().fns.iter().find(|(g, _, _)| *g == f).unwrap();
    let mut out = Vec::with_capacity(xs.len());
    for x in xs {
        let mut r = O::default();
        s(x as *const I as *const u8, &mut r as *mut O as *mut u8);
        out.push(r);
    }
    if let Some(v) = v {
        for (i, c) in xs.chunks(4).enumerate() {
            let mut x4 = [I::default(); 4];
            x4[..c.len()].copy_from_slice(c);
            let mut r4 = [O::default(); 4];
            v(x4.as_ptr() as *const u8, r4.as_mut_ptr() as *mut u8);
            for l in 0..c.len() {
                assert!(
                    same(r4[l], out[4 * i + l]),
                    "{}: vector lane {:?} differs from scalar {:?}",
                    f.name(),
                    r4[l],
                    out[4 * i + l]
                );
            }
        }
    }
    out
}

fn run_f32(f: Fun, xs: &[f32]) -> Vec<f32> {
    let bits: Vec<u32> = xs.iter().map(|x| x.to_bits()).collect();
    // NaN signs and payloads may differ between the scalar and vector forms of the trig functions.
    let nan = |b: u32| f32::from_bits(b).is_nan();
    run_with(f, &bits, |a: u32, b: u32| a == b || nan(a) && nan(b))
        .into_iter()
        .map(|b| {
            let v = f32::from_bits(b);
            if v.is_nan() {
                f32::NAN
            } else {
                v
            }
        })
        .collect()
}

/// Arguments for the trig tests: a dense sweep of [-10, 10], a sparser one out to 1e4, and the
/// neighbourhoods of multiples of π/2 (where reduction matters most).
fn trig_args() -> Vec<f32> {
    let mut xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 5e-4).collect();
    xs.extend((-100_000..=100_000).map(|i| i as f32 * 0.1));
    for k in -6000..=6000 {
        let c = (k as f64 * std::f64::consts::FRAC_PI_2) as f32;
        let mut x = c;
        for _ in 0..3 {
            xs.push(x);
            x = f32::from_bits(x.to_bits() + 1);
        }
    }
    xs
}

#[test]
fn sin_and_cos_are_accurate_to_1e4() {
    let xs = trig_args();
    for (f, r) in [(Fun::Sin, f64::sin as fn(f64) -> f64), (Fun::Cos, f64::cos)] {
        let got = run_f32(f, &xs);
        let mut worst = (0.0, 0.0);
        for (&x, &g) in xs.iter().zip(&got) {
            let err = (g as f64 - r(x as f64)).abs();
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(
            worst.0 < 1e-6,
            "{}: worst abs error {:e} at x = {}",
            f.name(),
            worst.0,
            worst.1
        );
    }
}

#[test]
fn tan_is_accurate_away_from_poles() {
    let xs = trig_args();
    let got = run_f32(Fun::Tan, &xs);
    for (&x, &g) in xs.iter().zip(&got) {
        let want = (x as f64).tan();
        // Near a pole the f32 argument itself decides the magnitude; compare relatively there.
        let tol = 2e-6 * want.abs().max(1.0);
        assert!(
            (g as f64 - want).abs() <= tol,
            "tan({x}) = {g}, want {want}"
        );
    }
}

#[test]
fn trig_special_values() {
    let xs = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e30,
        -3e38,
    ];
    let s = run_f32(Fun::Sin, &xs);
    let c = run_f32(Fun::Cos, &xs);
    let t = run_f32(Fun::Tan, &xs);
    assert_eq!((s[0], c[0], t[0]), (0.0, 1.0, 0.0));
    assert_eq!(c[1], 1.0);
    for i in 2..5 {
        assert!(s[i].is_nan() && c[i].is_nan() && t[i].is_nan(), "{}", xs[i]);
    }
    // Huge arguments: no accuracy promised, but the result stays bounded.
    for i in 5..7 {
        assert!(s[i].abs() <= 1.0 && c[i].abs() <= 1.0, "{}", xs[i]);
    }
    // Exact values at small multiples of π/6, from the definitions.
    let pi = std::f32::consts::PI;
    let s = run_f32(Fun::Sin, &[pi / 6.0, pi / 2.0, pi, -pi / 2.0]);
    assert!((s[0] - 0.5).abs() < 1e-7);
    assert!((s[1] - 1.0).abs() < 1e-7);
    assert!(s[2].abs() < 1e-6);
    assert!((s[3] + 1.0).abs() < 1e-7);
}

/// The value of a binary16 bit pattern, from the format's definition.
fn f16_value(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let e = ((h >> 10) & 0x1f) as i32;
    let m = (h & 0x3ff) as f64;
    sign * match e {
        0 => m * 2f64.powi(-24),
        31 if m == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + m / 1024.0) * 2f64.powi(e - 15),
    }
}

#[test]
fn f16_to_f32_is_exact_for_every_pattern() {
    let hs: Vec<u32> = (0..=0xffffu32).collect();
    let got: Vec<u32> = run(Fun::F16ToF32, &hs);
    for (&h, &g) in hs.iter().zip(&got) {
        let want = f16_value(h as u16);
        let g = f32::from_bits(g);
        if want.is_nan() {
            assert!(g.is_nan(), "{h:#06x} -> {g}");
            // The payload survives: the top mantissa bits are the half's.
            assert_eq!((g.to_bits() >> 13) & 0x3ff, h & 0x3ff, "{h:#06x} payload");
            assert_eq!(g.is_sign_negative(), h & 0x8000 != 0);
        } else {
            assert_eq!(g as f64, want, "{h:#06x}");
            assert_eq!(g.is_sign_negative(), h & 0x8000 != 0, "{h:#06x} sign");
        }
    }
}

/// The binary16 nearest to `x` (ties to the even pattern), by search over every finite half;
/// values at or beyond 65520 (the midpoint between the largest half and 2^16) become infinity.
fn nearest_f16(x: f64, table: &[(f64, u16)]) -> u16 {
    let sign = if x.is_sign_negative() { 0x8000 } else { 0 };
    let a = x.abs();
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    let i = table.partition_point(|&(v, _)| v < a);
    let best = if i == 0 {
        table[0].1
    } else if i == table.len() {
        table[i - 1].1
    } else {
        let (lo, hi) = (table[i - 1], table[i]);
        let (dl, dh) = (a - lo.0, hi.0 - a);
        if dl < dh || dl == dh && lo.1 % 2 == 0 {
            lo.1
        } else {
            hi.1
        }
    };
    sign | best
}

fn f16_table() -> Vec<(f64, u16)> {
    (0..0x7c00u16).map(|h| (f16_value(h), h)).collect()
}

/// Values that exercise every rounding path: all halves and the midpoints between neighbours
/// (and one f32 ulp either side of them), subnormals, overflow, zeros, infinities.
fn f16_rounding_args(table: &[(f64, u16)]) -> Vec<f32> {
    let mut xs = Vec::new();
    for w in table.windows(2) {
        let mid = ((w[0].0 + w[1].0) / 2.0) as f32;
        for x in [w[0].0 as f32, mid, f32::from_bits(mid.to_bits() + 1)] {
            xs.push(x);
            xs.push(-x);
        }
        if mid > 0.0 {
            xs.push(f32::from_bits(mid.to_bits() - 1));
        }
    }
    xs.extend([
        65504.0,
        65519.0,
        65520.0,
        70000.0,
        1e10,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-10,
        -1e-10,
        f32::MIN_POSITIVE,
        1e-45,
    ]);
    xs
}

#[test]
fn f32_to_f16_rounds_to_nearest_even() {
    let table = f16_table();
    let xs = f16_rounding_args(&table);
    let bits: Vec<u32> = xs.iter().map(|x| x.to_bits()).collect();
    let got: Vec<u32> = run(Fun::F32ToF16, &bits);
    for (&x, &g) in xs.iter().zip(&got) {
        let want = nearest_f16(x as f64, &table);
        assert_eq!(g, want as u32, "{x:e}: got {g:#06x}, want {want:#06x}");
    }
    // NaN stays NaN (any payload), with its sign.
    let nans = [f32::NAN.to_bits(), 0xffc0_0001, 0x7f80_0001];
    let got: Vec<u32> = run(Fun::F32ToF16, &nans);
    for (&n, &g) in nans.iter().zip(&got) {
        assert!(g & 0x7c00 == 0x7c00 && g & 0x3ff != 0, "{n:#x} -> {g:#x}");
        assert_eq!(g & 0x8000 != 0, n >> 31 == 1);
        assert!(g <= 0xffff);
    }
}

#[test]
fn bf16_round_trips_and_rounds_to_nearest_even() {
    // bf16 -> f32 is the top half of the f32 pattern.
    let hs: Vec<u32> = (0..=0xffffu32).step_by(7).collect();
    let got: Vec<u32> = run(Fun::Bf16ToF32, &hs);
    for (&h, &g) in hs.iter().zip(&got) {
        assert_eq!(g, h << 16);
    }
    // f32 -> bf16: exactly representable, just below / at / above a midpoint (ties to even).
    let cases: [(u32, u32); 8] = [
        (0x3f80_0000, 0x3f80), // 1.0
        (0x3f80_7fff, 0x3f80), // below the midpoint
        (0x3f80_8000, 0x3f80), // tie, 0x3f80 is even
        (0x3f81_8000, 0x3f82), // tie, 0x3f81 is odd: up
        (0x3f80_8001, 0x3f81), // above the midpoint
        (0x7f7f_ffff, 0x7f80), // f32::MAX rounds up to inf
        (0xbf80_8001, 0xbf81), // negative
        (0x0000_8000, 0x0000), // subnormal tie to even (zero)
    ];
    let xs: Vec<u32> = cases.iter().map(|c| c.0).collect();
    let got: Vec<u32> = run(Fun::F32ToBf16, &xs);
    for (c, g) in cases.iter().zip(got) {
        assert_eq!(g, c.1, "{:#010x}", c.0);
    }
    let got: Vec<u32> = run(Fun::F32ToBf16, &[0x7fc0_0000u32, 0x7f80_0001, 0xff80_0000]);
    assert!(got[0] & 0x7f80 == 0x7f80 && got[0] & 0x7f != 0);
    assert!(
        got[1] & 0x7f80 == 0x7f80 && got[1] & 0x7f != 0,
        "{:#x}",
        got[1]
    );
    assert_eq!(got[2], 0xff80);
}

#[test]
fn f64_to_f16_through_round_to_odd_is_correctly_rounded() {
    // Direct rounding of an f64 to f16 vs demote-to-odd then f32 -> f16: must agree. The
    // interesting values sit just off a half midpoint by less than an f32 ulp, where rounding to
    // nearest twice would land on the tie and then go to even.
    let table = f16_table();
    let mut xs = Vec::new();
    for w in table.windows(2).step_by(3) {
        let mid = (w[0].0 + w[1].0) / 2.0;
        for d in [-1e-12, 1e-12, 0.0] {
            xs.push(mid * (1.0 + d));
            xs.push(-mid * (1.0 + d));
        }
        xs.push(w[0].0);
    }
    xs.extend([
        1e300,
        -1e300,
        1e-300,
        f64::INFINITY,
        65_519.999_999,
        65520.0,
    ]);
    let odd: Vec<u32> = run(Fun::F64ToF32Odd, &xs);
    let halves: Vec<u32> = run(Fun::F32ToF16, &odd);
    for (&x, &h) in xs.iter().zip(&halves) {
        let want = nearest_f16(x, &table);
        assert_eq!(h, want as u32, "{x:e}: got {h:#06x}, want {want:#06x}");
    }
    // Exact values pass unchanged, NaN stays NaN.
    let got: Vec<u32> = run(Fun::F64ToF32Odd, &[0.5f64, -3.25, f64::NAN]);
    assert_eq!(f32::from_bits(got[0]), 0.5);
    assert_eq!(f32::from_bits(got[1]), -3.25);
    assert!(f32::from_bits(got[2]).is_nan());
}

/// An object with every function, for each target configuration: nothing undefined.
#[test]
fn no_libcalls_on_any_target() {
    let targets: [(&str, &[&str]); 3] = [
        ("x86_64-unknown-linux-gnu", &[]),
        ("x86_64-unknown-linux-gnu", &["has_sse41"]),
        ("aarch64-unknown-linux-gnu", &[]),
    ];
    for (triple, flags) in targets {
        let builder = ObjectBuilder::new(
            isa(triple, flags),
            "math_ext",
            cranelift_module::default_libcall_names(),
        )
        .unwrap();
        let mut module = ObjectModule::new(builder);
        for f in ALL {
            define(&mut module, &format!("kiln_{}_s", f.name()), f, false);
            define(&mut module, &format!("kiln_{}_v", f.name()), f, true);
        }
        let bytes = module.finish().emit().unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        let undefined: Vec<String> = file
            .symbols()
            .filter(|s| s.is_undefined() && !s.name().unwrap_or("").is_empty())
            .map(|s| s.name().unwrap().to_string())
            .collect();
        assert!(undefined.is_empty(), "{triple} {flags:?}: {undefined:?}");
    }
}
