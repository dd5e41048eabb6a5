//! Numerical tests of the math emitters: every emitter is JIT-compiled for the host as an `f32`
//! scalar function and as an `f32x4` vector function, run on many points (sweeps, special values,
//! random bit patterns) and compared with `f64` references from Rust's std (and, for `erf`, a
//! series evaluated in `f64` here).

mod common;

use common::{define, Fun, ALL};
use cranelift_codegen::ir::types;
use cranelift_jit::{JITBuilder, JITModule};
use kiln_runtime::math::MathOpts;
use std::sync::OnceLock;

type RawFn = extern "C" fn(*const f32, *const f32, *mut f32);

/// Scalar and vector entry points of one emitter.
struct Compiled {
    scalar: RawFn,
    vector: RawFn,
}

struct Jit {
    fns: Vec<(Fun, Compiled)>,
}

// The JIT module owns the code; it is leaked in a OnceLock so the function pointers stay valid for
// the whole test binary.
fn jit() -> &'static Jit {
    static JIT: OnceLock<Jit> = OnceLock::new();
    JIT.get_or_init(|| {
        build_jit(
            JITBuilder::new(cranelift_module::default_libcall_names()).unwrap(),
            MathOpts::default(),
        )
    })
}

/// The emitters with fused multiply-add, as kernels for FMA targets use them (the host must have
/// FMA; without it Cranelift would call `fmaf`, which the JIT can still resolve, so the tests stay
/// valid). The accuracy checks (`worst_ulps`, `worst_abs`) hold both variants to the same bounds.
fn jit_fma() -> &'static Jit {
    static JIT: OnceLock<Jit> = OnceLock::new();
    JIT.get_or_init(|| {
        build_jit(
            JITBuilder::new(cranelift_module::default_libcall_names()).unwrap(),
            MathOpts { fma: true },
        )
    })
}

/// Compiles every emitter, scalar and vector, with `builder`'s ISA. Leaks the module (see `jit`).
fn build_jit(builder: JITBuilder, opts: MathOpts) -> Jit {
    let mut module = JITModule::new(builder);
    let ids: Vec<_> = ALL
        .iter()
        .map(|&f| {
            let s = define(
                &mut module,
                &format!("{}_s", f.name()),
                f,
                types::F32,
                &opts,
            );
            let v = define(
                &mut module,
                &format!("{}_v", f.name()),
                f,
                types::F32X4,
                &opts,
            );
            (f, s, v)
        })
        .collect();
    module.finalize_definitions().unwrap();
    let fns = ids
        .into_iter()
        .map(|(f, s, v)| {
            // SAFETY: both were defined by `define` with exactly the RawFn signature.
            let c = unsafe {
                Compiled {
                    scalar: std::mem::transmute::<*const u8, RawFn>(
                        module.get_finalized_function(s),
                    ),
                    vector: std::mem::transmute::<*const u8, RawFn>(
                        module.get_finalized_function(v),
                    ),
                }
            };
            (f, c)
        })
        .collect();
    std::mem::forget(module);
    Jit { fns }
}

/// Runs `f` on every `(x, y)` with the scalar function and, four at a time, with the vector one;
/// checks the two agree bit for bit (NaNs may differ in payload) and returns the results.
fn eval(f: Fun, xs: &[f32], ys: &[f32]) -> Vec<f32> {
    eval_in(jit(), f, xs, ys)
}

fn eval_in(jit: &Jit, f: Fun, xs: &[f32], ys: &[f32]) -> Vec<f32> {
    assert_eq!(xs.len(), ys.len());
    let c = &jit.fns.iter().find(|(g, _)| *g == f).unwrap().1;
    let mut out = Vec::with_capacity(xs.len());
    for (&x, &y) in xs.iter().zip(ys) {
        let mut r = 0f32;
        (c.scalar)(&x, &y, &mut r);
        out.push(r);
    }
    for (i, (cx, cy)) in xs.chunks(4).zip(ys.chunks(4)).enumerate() {
        let mut x4 = [1f32; 4];
        let mut y4 = [1f32; 4];
        x4[..cx.len()].copy_from_slice(cx);
        y4[..cy.len()].copy_from_slice(cy);
        let mut r4 = [0f32; 4];
        (c.vector)(x4.as_ptr(), y4.as_ptr(), r4.as_mut_ptr());
        for l in 0..cx.len() {
            let (s, v) = (out[4 * i + l], r4[l]);
            assert!(
                s.to_bits() == v.to_bits() || (s.is_nan() && v.is_nan()),
                "{}({}, {}): scalar {s:e} vs vector {v:e}",
                f.name(),
                cx[l],
                cy[l]
            );
        }
    }
    out
}

fn eval1(f: Fun, xs: &[f32]) -> Vec<f32> {
    eval(f, xs, &vec![0.0; xs.len()])
}

/// Position of `x` on the line of all floats, so that the difference of two positions counts ulps
/// (across zero and into the subnormals).
fn ord(x: f32) -> i64 {
    let b = i64::from(x.to_bits());
    if b & 0x8000_0000 != 0 {
        -(b & 0x7fff_ffff)
    } else {
        b
    }
}

/// Distance in ulps between `got` and the reference `want` rounded to f32; 0 when both are NaN
/// or the same infinity, huge for a NaN/non-NaN mismatch.
fn ulps(got: f32, want: f64) -> i64 {
    let w = want as f32;
    if w.is_nan() || got.is_nan() {
        return if w.is_nan() && got.is_nan() {
            0
        } else {
            i64::MAX
        };
    }
    if w.is_infinite() || got.is_infinite() {
        return if w == got { 0 } else { i64::MAX };
    }
    (ord(got) - ord(w)).abs()
}

/// Deterministic pseudo-random numbers (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    fn bits(&mut self) -> f32 {
        f32::from_bits(self.next() as u32)
    }
}

fn sweep(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..=n)
        .map(|i| lo + (hi - lo) * (i as f32 / n as f32))
        .collect()
}

const SPECIALS: [f32; 16] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -0.5,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    1e-45,
    -1e-45,
    f32::MAX,
    f32::MIN,
    f32::EPSILON,
];

/// `f` on `xs` by both variants, plain and with FMA: `(variant name, results)`.
fn eval_both(f: Fun, xs: &[f32]) -> [(&'static str, Vec<f32>); 2] {
    let ys = vec![0.0; xs.len()];
    [
        ("", eval_in(jit(), f, xs, &ys)),
        (" (fma)", eval_in(jit_fma(), f, xs, &ys)),
    ]
}

/// Worst ulp error of `f` (either variant) against `reference` over `xs`, with the point where it
/// happens.
fn worst_ulps(f: Fun, xs: &[f32], reference: impl Fn(f64) -> f64) -> (i64, f32) {
    worst_of_variants(f, xs, "ulp", |got| {
        let mut w = (0, 0.0);
        for (&x, &g) in xs.iter().zip(got) {
            let e = ulps(g, reference(f64::from(x)));
            if e > w.0 {
                w = (e, x);
            }
        }
        w
    })
}

/// Worst absolute error of either variant (NaN/inf mismatches count as infinite), with its point.
fn worst_abs(f: Fun, xs: &[f32], reference: impl Fn(f64) -> f64) -> (f64, f32) {
    worst_of_variants(f, xs, "abs error", |got| worst_abs_of(xs, got, &reference))
}

/// The larger of `measure` over the plain and the FMA variant's results, each printed.
fn worst_of_variants<E: PartialOrd + Copy + std::fmt::Display>(
    f: Fun,
    xs: &[f32],
    what: &str,
    measure: impl Fn(&[f32]) -> (E, f32),
) -> (E, f32) {
    let mut worst: Option<(E, f32)> = None;
    for (variant, got) in eval_both(f, xs) {
        let w = measure(&got);
        eprintln!(
            "{}{variant}: worst {what} {} at {:e} over {} points",
            f.name(),
            w.0,
            w.1,
            xs.len()
        );
        if worst.is_none_or(|cur| w.0 > cur.0) {
            worst = Some(w);
        }
    }
    worst.expect("two variants")
}

fn worst_abs_of(xs: &[f32], got: &[f32], reference: impl Fn(f64) -> f64) -> (f64, f32) {
    let mut worst = (0.0, 0.0);
    for (&x, &g) in xs.iter().zip(got) {
        let want = reference(f64::from(x));
        let e = if want.is_nan() || g.is_nan() {
            if want.is_nan() && g.is_nan() {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (f64::from(g) - want).abs()
        };
        if e > worst.0 {
            worst = (e, x);
        }
    }
    worst
}

#[test]
fn exp_is_accurate_over_the_whole_range() {
    let mut xs = sweep(-110.0, 95.0, 400_000);
    xs.extend(sweep(-1.0, 1.0, 50_000));
    xs.extend(SPECIALS);
    let mut rng = Rng(1);
    xs.extend((0..200_000).map(|_| rng.bits()));
    let (e, at) = worst_ulps(Fun::Exp, &xs, f64::exp);
    assert!(e <= 2, "exp: {e} ulp at {at:e}");
}

#[test]
fn exp_special_values() {
    let xs = [
        0.0,
        -0.0,
        88.72283,
        88.72284,
        89.0,
        1e10,
        f32::INFINITY,
        -103.972,
        -104.0,
        -1e10,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    let r = eval1(Fun::Exp, &xs);
    assert_eq!(r[0], 1.0);
    assert_eq!(r[1], 1.0);
    // exp(88.72283) = 3.40282e38 just below f32::MAX; one step up overflows.
    assert!(r[2].is_finite() && r[2] > 3.4e38, "{}", r[2]);
    assert_eq!(r[3], f32::INFINITY);
    assert_eq!(r[4], f32::INFINITY);
    assert_eq!(r[5], f32::INFINITY);
    assert_eq!(r[6], f32::INFINITY);
    // exp(-103.972) = 1.4e-45, the smallest subnormal; below that it underflows to +0.
    assert_eq!(r[7], f32::from_bits(1));
    assert_eq!(r[8].to_bits(), 0);
    assert_eq!(r[9].to_bits(), 0);
    assert_eq!(r[10].to_bits(), 0);
    assert!(r[11].is_nan());
}

#[test]
fn exp_small_is_exp_up_to_43() {
    // The one-step scaling must give exp's bits wherever it is used (x <= 43), subnormal and
    // underflowing results included, and be as accurate against f64.
    let mut xs = sweep(-110.0, 43.0, 400_000);
    xs.extend(sweep(-1.0, 0.0, 50_000));
    xs.extend([
        0.0,
        -0.0,
        43.0,
        -87.33655,
        -103.972,
        -104.0,
        -1e10,
        f32::NEG_INFINITY,
        f32::NAN,
    ]);
    let mut rng = Rng(7);
    xs.extend((0..200_000).map(|_| rng.bits()).filter(|x| !(*x > 43.0)));
    let ys = vec![0.0; xs.len()];
    for jit in [jit(), jit_fma()] {
        let small = eval_in(jit, Fun::ExpSmall, &xs, &ys);
        let full = eval_in(jit, Fun::Exp, &xs, &ys);
        for ((&x, s), f) in xs.iter().zip(&small).zip(&full) {
            assert!(
                s.to_bits() == f.to_bits() || (s.is_nan() && f.is_nan()),
                "exp_small({x:e}) = {s:e}, exp = {f:e}"
            );
        }
    }
    let (e, at) = worst_ulps(Fun::ExpSmall, &xs, f64::exp);
    assert!(e <= 2, "exp_small: {e} ulp at {at:e}");
}

#[test]
fn log_is_accurate_over_the_whole_range() {
    // Every 997th positive float from the smallest subnormal to f32::MAX, plus a dense walk
    // around 1 where the result is small and relative accuracy is hardest.
    let mut xs: Vec<f32> = (1..0x7f80_0000u32)
        .step_by(997)
        .map(f32::from_bits)
        .collect();
    xs.extend(sweep(0.5, 2.0, 200_000));
    let one = 1f32.to_bits();
    xs.extend((one - 20_000..one + 20_000).map(f32::from_bits));
    xs.extend(SPECIALS);
    let mut rng = Rng(2);
    xs.extend((0..200_000).map(|_| rng.bits()));
    let (e, at) = worst_ulps(Fun::Log, &xs, f64::ln);
    assert!(e <= 2, "log: {e} ulp at {at:e}");
}

#[test]
fn log_special_values() {
    let xs = [
        0.0,
        -0.0,
        -1.0,
        -1e-45,
        f32::NEG_INFINITY,
        f32::INFINITY,
        f32::NAN,
        1.0,
        1e-45,
        f32::MAX,
    ];
    let r = eval1(Fun::Log, &xs);
    assert_eq!(r[0], f32::NEG_INFINITY);
    assert_eq!(r[1], f32::NEG_INFINITY);
    assert!(r[2].is_nan());
    assert!(r[3].is_nan());
    assert!(r[4].is_nan());
    assert_eq!(r[5], f32::INFINITY);
    assert!(r[6].is_nan());
    assert_eq!(r[7], 0.0);
    // ln(2^-149) = -149 ln 2 = -103.27893; ln(f32::MAX) = 88.72284.
    assert!((r[8] - (-103.278_93)).abs() < 1e-4, "{}", r[8]);
    assert!((r[9] - 88.722_84).abs() < 1e-4, "{}", r[9]);
}

fn bounded_points(seed: u64) -> Vec<f32> {
    let mut xs = sweep(-20.0, 20.0, 400_000);
    xs.extend(sweep(-1e-3, 1e-3, 10_000));
    xs.extend(SPECIALS);
    xs.extend([100.0, -100.0, 1e30, -1e30, 45.0, -45.0, 89.0, -89.0]);
    let mut rng = Rng(seed);
    xs.extend((0..100_000).map(|_| rng.uniform(-30.0, 30.0)));
    xs.extend((0..100_000).map(|_| rng.bits()));
    xs
}

#[test]
fn tanh_is_accurate_and_saturates() {
    let xs = bounded_points(3);
    let (e, at) = worst_abs(Fun::Tanh, &xs, f64::tanh);
    assert!(e <= 1e-6, "tanh: abs error {e:e} at {at:e}");
    // Relative accuracy too, away from the saturated tails.
    let mid = sweep(-9.0, 9.0, 200_000);
    let (u, at) = worst_ulps(Fun::Tanh, &mid, f64::tanh);
    assert!(u <= 4, "tanh: {u} ulp at {at:e}");
    let r = eval1(
        Fun::Tanh,
        &[
            10.0,
            -10.0,
            1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            f32::NAN,
        ],
    );
    assert_eq!(&r[..5], &[1.0, -1.0, 1.0, 1.0, -1.0]);
    assert_eq!(r[5].to_bits(), (-0.0f32).to_bits(), "tanh(-0) = -0");
    assert!(r[6].is_nan());
}

fn sigmoid_ref(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn sigmoid_is_accurate_and_saturates() {
    let xs = bounded_points(4);
    let (e, at) = worst_abs(Fun::Sigmoid, &xs, sigmoid_ref);
    assert!(e <= 1e-6, "sigmoid: abs error {e:e} at {at:e}");
    // e^-|x| / (1 + e^-|x|) keeps relative accuracy deep into the negative tail.
    let tail = sweep(-85.0, 20.0, 200_000);
    let (u, at) = worst_ulps(Fun::Sigmoid, &tail, sigmoid_ref);
    assert!(u <= 4, "sigmoid: {u} ulp at {at:e}");
    let r = eval1(
        Fun::Sigmoid,
        &[
            0.0,
            100.0,
            -200.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ],
    );
    assert_eq!(&r[..5], &[0.5, 1.0, 0.0, 1.0, 0.0]);
    assert!(r[5].is_nan());
}

fn silu_ref(x: f64) -> f64 {
    x * sigmoid_ref(x)
}

#[test]
fn silu_is_accurate() {
    let xs = bounded_points(5);
    let (e, at) = worst_abs(Fun::Silu, &xs, silu_ref);
    assert!(e <= 2e-6, "silu: abs error {e:e} at {at:e}");
    // Relative: one division of two accurate terms, deep into the negative tail too.
    let mut tail = sweep(-85.0, 30.0, 200_000);
    tail.extend(sweep(-1e-3, 1e-3, 10_000));
    tail.extend([1e-30, -1e-30, 1e-40, -1e-40, 1e30, f32::MAX]);
    let (u, at) = worst_ulps(Fun::Silu, &tail, silu_ref);
    assert!(u <= 4, "silu: {u} ulp at {at:e}");
    let r = eval1(
        Fun::Silu,
        &[0.0, -0.0, 100.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN],
    );
    assert_eq!(r[0].to_bits(), 0.0f32.to_bits());
    assert_eq!(r[1], 0.0);
    assert_eq!(r[2], 100.0);
    assert_eq!(r[3], f32::INFINITY);
    // -inf * sigmoid(-inf) = -inf * 0, as IEEE has it.
    assert!(r[4].is_nan() && r[5].is_nan());
}

/// `erf` in f64, independent of the emitter: the Maclaurin series below 3 (cancellation costs at
/// most ~3 of f64's 16 digits there) and the classic continued fraction for `erfc` above.
fn erf_ref(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let a = x.abs();
    let r = if a < 3.0 {
        // erf(a) = 2/sqrt(pi) * sum (-1)^n a^(2n+1) / (n! (2n+1))
        let mut sum = 0.0;
        let mut term = a; // a^(2n+1) (-1)^n / n!
        let mut n = 0.0;
        while term.abs() > 1e-30 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -a * a / n;
        }
        std::f64::consts::FRAC_2_SQRT_PI * sum
    } else if a.is_infinite() {
        1.0
    } else {
        // erfc(a) = e^{-a^2}/sqrt(pi) * 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + ...)))), from the
        // inside out.
        let mut k = 0.0;
        for i in (1..200).rev() {
            k = (i as f64 / 2.0) / (a + k);
        }
        let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + k);
        1.0 - erfc
    };
    r.copysign(x)
}

#[test]
fn erf_reference_matches_tabulated_values() {
    // Abramowitz & Stegun table 7.1 (and its complement for large arguments).
    for (x, want) in [
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (3.0, 0.999_977_909_503_001_4),
        (2.9, 0.999_958_902_121_900_6),
        (-1.0, -0.842_700_792_949_714_9),
    ] {
        assert!(
            (erf_ref(x) - want).abs() < 1e-13,
            "erf_ref({x}) = {}",
            erf_ref(x)
        );
    }
}

#[test]
fn erf_is_accurate_and_saturates() {
    let xs = bounded_points(5);
    let (e, at) = worst_abs(Fun::Erf, &xs, erf_ref);
    assert!(e <= 1e-6, "erf: abs error {e:e} at {at:e}");
    let r = eval1(
        Fun::Erf,
        &[
            6.0,
            -6.0,
            1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            f32::NAN,
        ],
    );
    assert_eq!(&r[..5], &[1.0, -1.0, 1.0, 1.0, -1.0]);
    assert_eq!(r[5].to_bits(), (-0.0f32).to_bits(), "erf(-0) = -0");
    assert!(r[6].is_nan());
}

#[test]
fn pow_follows_c_special_cases() {
    let inf = f32::INFINITY;
    let nan = f32::NAN;
    // (x, y, expected) from C99 Annex F.10.4.4.
    let cases: &[(f32, f32, f32)] = &[
        (nan, 0.0, 1.0),
        (nan, -0.0, 1.0),
        (1.0, nan, 1.0),
        (1.0, inf, 1.0),
        (-1.0, inf, 1.0),
        (-1.0, -inf, 1.0),
        (0.0, 3.0, 0.0),
        (-0.0, 3.0, -0.0),
        (-0.0, 2.0, 0.0),
        (-0.0, 0.5, 0.0),
        (0.0, -3.0, inf),
        (-0.0, -3.0, -inf),
        (-0.0, -2.0, inf),
        (-0.0, -0.5, inf),
        (0.5, inf, 0.0),
        (0.5, -inf, inf),
        (2.0, inf, inf),
        (2.0, -inf, 0.0),
        (-2.0, inf, inf),
        (-0.5, -inf, inf),
        (-inf, 3.0, -inf),
        (-inf, -3.0, -0.0),
        (-inf, 2.0, inf),
        (-inf, 0.5, inf),
        (-inf, -0.5, 0.0),
        (inf, 0.5, inf),
        (inf, -0.5, 0.0),
        (-2.0, 3.0, -8.0),
        (-2.0, 2.0, 4.0),
        (-2.0, -1.0, -0.5),
        (-8.0, 1.0 / 3.0, nan),
        (-1.0, 0.5, nan),
        (2.0, nan, nan),
        (nan, 1.0, nan),
        (2.0, 10.0, 1024.0),
        (4.0, 0.5, 2.0),
        (10.0, 39.0, inf),          // overflow
        (10.0, -50.0, 0.0),         // underflow
        (-2.0, 16_777_216.0, inf),  // 2^24: even
        (-1.0, 16_777_215.0, -1.0), // 2^24 - 1: odd
        (-1.0, 3e9, 1.0),           // beyond i32: even
    ];
    let xs: Vec<f32> = cases.iter().map(|c| c.0).collect();
    let ys: Vec<f32> = cases.iter().map(|c| c.1).collect();
    let r = eval(Fun::Pow, &xs, &ys);
    for (i, &(x, y, _)) in cases.iter().enumerate() {
        // Checked against the table and against the platform's C pow (Rust's f64::powf).
        let want = f64::from(x).powf(f64::from(y)) as f32;
        let got = r[i];
        let ok = if want.is_nan() {
            got.is_nan()
        } else if want == 0.0 || want.is_infinite() {
            got.to_bits() == want.to_bits()
        } else {
            ulps(got, f64::from(want)) <= 2
        };
        assert!(ok, "pow({x:e}, {y:e}) = {got:e}, want {want:e}");
        let listed = cases[i].2;
        assert!(
            (listed.is_nan() && want.is_nan()) || listed.to_bits() == want.to_bits(),
            "table row {i} disagrees with C pow: {listed:e} vs {want:e}"
        );
    }
}

#[test]
fn pow_is_accurate_on_a_grid() {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    let mut rng = Rng(6);
    for _ in 0..200_000 {
        let x = rng.uniform(-20.0, 20.0);
        // Half the time an integer y, so negative x gets exercised.
        let y = if rng.next().is_multiple_of(2) {
            rng.uniform(-12.0, 12.0).round()
        } else {
            rng.uniform(-12.0, 12.0)
        };
        xs.push(x);
        ys.push(y);
    }
    for _ in 0..100_000 {
        xs.push(rng.uniform(0.0, 4.0));
        ys.push(rng.uniform(-60.0, 60.0));
    }
    // Every finite positive magnitude (subnormals included) to exponents that keep the result
    // in or near the f32 range, and raw bit patterns for both operands.
    for _ in 0..100_000 {
        let x = f32::from_bits(rng.next() as u32 & 0x7f7f_ffff);
        let span = 150.0 / x.log2().abs().max(1.0);
        xs.push(x);
        ys.push(rng.uniform(-span, span));
    }
    for _ in 0..100_000 {
        xs.push(rng.bits());
        ys.push(rng.bits());
    }
    let r = eval(Fun::Pow, &xs, &ys);
    for i in 0..xs.len() {
        let (x, y) = (f64::from(xs[i]), f64::from(ys[i]));
        let want = x.powf(y);
        // Computed in f64 and rounded once: within an ulp (often correctly rounded).
        let bound = 1;
        let e = ulps(r[i], want);
        assert!(
            e <= bound,
            "pow({x:e}, {y:e}) = {:e}, want {want:e}: {e} ulp > {bound}",
            r[i]
        );
    }
}

/// The FMA variants compute the same functions (the host must have FMA for the JIT; without it
/// Cranelift would call `fmaf`, which the JIT can still resolve, so the test stays valid).
#[test]
fn fma_variant_is_as_accurate() {
    let builder = JITBuilder::new(cranelift_module::default_libcall_names()).unwrap();
    let mut module = JITModule::new(builder);
    let opts = MathOpts { fma: true };
    let ids: Vec<_> = [Fun::Exp, Fun::Log]
        .iter()
        .map(|&f| {
            (
                f,
                define(
                    &mut module,
                    &format!("{}_fma", f.name()),
                    f,
                    types::F32X4,
                    &opts,
                ),
            )
        })
        .collect();
    module.finalize_definitions().unwrap();
    let mut xs = sweep(-100.0, 88.0, 100_000);
    xs.extend((1..0x7f80_0000u32).step_by(99_991).map(f32::from_bits));
    for (f, id) in ids {
        // SAFETY: defined by `define` with the RawFn signature.
        let func: RawFn = unsafe { std::mem::transmute(module.get_finalized_function(id)) };
        let reference: fn(f64) -> f64 = if f == Fun::Exp { f64::exp } else { f64::ln };
        for c in xs.chunks_exact(4) {
            let mut r = [0f32; 4];
            func(c.as_ptr(), c.as_ptr(), r.as_mut_ptr());
            for l in 0..4 {
                let e = ulps(r[l], reference(f64::from(c[l])));
                assert!(e <= 2, "{} (fma) at {:e}: {e} ulp", f.name(), c[l]);
            }
        }
    }
    // SAFETY: no function of this module is used after this point.
    unsafe { module.free_memory() };
}

/// The same emitters compiled for aarch64 and run under qemu give bit-identical results to the
/// host's: every instruction they use is exactly rounded IEEE arithmetic or exact bit
/// manipulation, so the two lowerings must agree (only NaN payloads may differ). Skipped when the
/// cross toolchain or qemu is missing (scripts/install-deps.sh installs both).
#[test]
fn aarch64_matches_host_bit_for_bit() {
    use cranelift_object::{ObjectBuilder, ObjectModule};
    use std::process::Command;

    let tools_present = ["aarch64-linux-gnu-gcc", "qemu-aarch64"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    if !tools_present {
        eprintln!("aarch64-linux-gnu-gcc or qemu-aarch64 missing: skipped");
        return;
    }

    let builder = ObjectBuilder::new(
        common::isa("aarch64-unknown-linux-gnu", &[]),
        "math",
        cranelift_module::default_libcall_names(),
    )
    .unwrap();
    let mut module = ObjectModule::new(builder);
    for f in ALL {
        for ty in common::TYPES {
            define(
                &mut module,
                &format!("kiln_{}_{}", f.name(), ty),
                f,
                ty,
                &MathOpts::default(),
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("math.o"), module.finish().emit().unwrap()).unwrap();

    let decls: String = ALL
        .iter()
        .flat_map(|f| {
            ["f32", "f32x4"].map(|t| {
                format!(
                    "void kiln_{}_{t}(const float *, const float *, float *);\n",
                    f.name()
                )
            })
        })
        .collect();
    let table = |t: &str| {
        ALL.iter()
            .map(|f| format!("kiln_{}_{t}", f.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let driver = format!(
        "#include <stdio.h>\n#include <stdlib.h>\n{decls}\
         typedef void (*fn)(const float *, const float *, float *);\n\
         static fn S[] = {{{}}};\nstatic fn V[] = {{{}}};\n\
         int main(int argc, char **argv) {{\n\
           unsigned n; FILE *f = fopen(argv[1], \"rb\"); FILE *o = fopen(argv[2], \"wb\");\n\
           if (!f || !o || fread(&n, 4, 1, f) != 1) return 1;\n\
           float *x = malloc(4 * n), *y = malloc(4 * n), *r = malloc(4 * n);\n\
           if (fread(x, 4, n, f) != n || fread(y, 4, n, f) != n) return 1;\n\
           for (unsigned k = 0; k < sizeof S / sizeof S[0]; k++) {{\n\
             for (unsigned i = 0; i < n; i++) S[k](&x[i], &y[i], &r[i]);\n\
             fwrite(r, 4, n, o);\n\
             for (unsigned i = 0; i < n; i += 4) V[k](&x[i], &y[i], &r[i]);\n\
             fwrite(r, 4, n, o);\n\
           }}\n\
           return fclose(o);\n\
         }}\n",
        table("f32"),
        table("f32x4")
    );
    std::fs::write(dir.path().join("driver.c"), driver).unwrap();
    let exe = dir.path().join("driver");
    let out = Command::new("aarch64-linux-gnu-gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&exe)
        .arg(dir.path().join("driver.c"))
        .arg(dir.path().join("math.o"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cross link failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Points: a sweep, special values and random bit patterns for x; y spans integers and
    // fractions so pow's sign logic runs.
    let mut rng = Rng(7);
    let mut xs = sweep(-110.0, 95.0, 40_000);
    xs.extend(SPECIALS);
    xs.extend((0..40_000).map(|_| rng.bits()));
    while !xs.len().is_multiple_of(4) {
        xs.push(0.25);
    }
    let ys: Vec<f32> = (0..xs.len())
        .map(|i| match i % 3 {
            0 => rng.uniform(-8.0, 8.0).round(),
            1 => rng.uniform(-8.0, 8.0),
            _ => SPECIALS[i % SPECIALS.len()],
        })
        .collect();
    let mut input = (xs.len() as u32).to_le_bytes().to_vec();
    for v in xs.iter().chain(&ys) {
        input.extend(v.to_le_bytes());
    }
    std::fs::write(dir.path().join("in.bin"), input).unwrap();
    let out = Command::new("qemu-aarch64")
        .arg(&exe)
        .arg(dir.path().join("in.bin"))
        .arg(dir.path().join("out.bin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "driver failed under qemu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(dir.path().join("out.bin")).unwrap();
    let results: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(results.len(), ALL.len() * 2 * xs.len());

    for (k, &f) in ALL.iter().enumerate() {
        let host = eval(f, &xs, &ys);
        for (variant, arm) in ["scalar", "vector"]
            .iter()
            .zip(results[2 * k * xs.len()..].chunks(xs.len()))
        {
            for i in 0..xs.len() {
                let (h, a) = (host[i], arm[i]);
                assert!(
                    h.to_bits() == a.to_bits() || (h.is_nan() && a.is_nan()),
                    "{}({:e}, {:e}) {variant}: host {h:e}, aarch64 {a:e}",
                    f.name(),
                    xs[i],
                    ys[i]
                );
            }
        }
    }
}

/// Plain x86_64 (SSE2 only) takes different lowerings for conversions, min/max and selects than
/// the host's native feature set; the results must not change.
#[cfg(target_arch = "x86_64")]
#[test]
fn x86_64_baseline_matches_native_bit_for_bit() {
    let isa = common::isa_with("x86_64-unknown-linux-gnu", &[], false);
    let baseline = build_jit(
        JITBuilder::with_isa(isa, cranelift_module::default_libcall_names()),
        MathOpts::default(),
    );
    let mut rng = Rng(8);
    let mut xs = sweep(-110.0, 95.0, 20_000);
    xs.extend(SPECIALS);
    xs.extend((0..20_000).map(|_| rng.bits()));
    let ys: Vec<f32> = (0..xs.len())
        .map(|i| {
            if i % 2 == 0 {
                rng.uniform(-8.0, 8.0).round()
            } else {
                SPECIALS[i % SPECIALS.len()]
            }
        })
        .collect();
    for f in ALL {
        let native = eval(f, &xs, &ys);
        let base = eval_in(&baseline, f, &xs, &ys);
        for i in 0..xs.len() {
            let (n, b) = (native[i], base[i]);
            assert!(
                n.to_bits() == b.to_bits() || (n.is_nan() && b.is_nan()),
                "{}({:e}, {:e}): native {n:e}, baseline {b:e}",
                f.name(),
                xs[i],
                ys[i]
            );
        }
    }
}
