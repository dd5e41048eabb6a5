//! Inline CLIF emitters for the transcendental functions kernels need (`exp`, `log`, `tanh`,
//! `sigmoid`, `erf`, `pow`, `sin`, `cos`, `tan`), and the conversions between `f32` and the half
//! formats (binary16, bfloat16) as bit manipulation.
//!
//! Every emitter works on an `f32` scalar or an `f32x4` vector (it dispatches on the type of its
//! argument) and expands to straight-line code: no calls, no branches, no libm. A generated library
//! must link against nothing, so the emitters only use instructions that every supported target
//! lowers natively (x86_64 from plain SSE2 up, aarch64): `fadd`/`fsub`/`fmul`/`fdiv`,
//! `fmin`/`fmax`, `fabs`, `fcmp`, `select`/`bitselect`, integer arithmetic and shifts on bit
//! patterns, `fcvt_{to,from}_sint` on 32-bit lanes, `f32`<->`f64` conversions, and two `shuffle`
//! patterns that are single SSE2 instructions (for `pow`). In particular they avoid `floor`/`nearest` (a libcall on x86 without
//! SSE4.1; rounding uses the `1.5 * 2^23` trick instead) and `fma` (a call to `fmaf` on x86 without
//! the FMA feature) unless [`MathOpts::fma`] says the target has it.
//!
//! Accuracy (checked against `f64` references in `tests/math.rs`):
//! - `exp`, `log`: a few ulp over the whole `f32` range, including subnormal inputs (`log`) and
//!   results (`exp`), overflow to `inf`, underflow to `0`, and NaN propagation. Range reduction is
//!   Cody–Waite with an exactly representable `ln 2` head, so reduction adds no error.
//! - `tanh`, `sigmoid`: absolute error below `1e-6` (in practice a few ulp relative), saturating to
//!   `±1` / `0`,`1` for large `|x|`.
//! - `erf`: absolute error below `1e-6`; odd Taylor series below `|x| = 1`, Abramowitz–Stegun 7.1.26
//!   above.
//! - `pow`: `2^(y · log2|x|)` evaluated in `f64` (vectors as two `f64x2` halves) and rounded once,
//!   so within 1 ulp everywhere, with the C99 special cases (Annex F.10.4.4) applied on top. In
//!   `f32` the error of `y · ln x` would be amplified by `|y · ln x|`: tens of ulp for large results.
//! - `sin`, `cos`: absolute error below `1e-6` for `|x|` up to about `1.6e6` (the argument is
//!   reduced modulo `π/2` in `f64`, exactly up to there), `tan` a few ulp relative (tested in
//!   `tests/math_ext.rs`).
//! - The half conversions are exact (widening) or correctly rounded to nearest even (narrowing,
//!   with `f64_to_f32_round_odd` first when the source is `f64`), NaN staying NaN. They use only
//!   32-bit integer lane operations, so they lower natively on both targets (no `f16` type, no
//!   F16C, no libcall) and vectorize as `i32x4`.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value,
};
use cranelift_frontend::FunctionBuilder;

/// Options for the `*_with` emitters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MathOpts {
    /// Use fused multiply-add for polynomial evaluation. Only set this when the target has a
    /// native FMA (x86 `fma` feature, always on aarch64): otherwise Cranelift lowers `fma` to a
    /// call to `fmaf`, which a self-contained library cannot have.
    pub fma: bool,
}

/// `e^x`. See the module docs for accuracy.
pub fn exp(b: &mut FunctionBuilder, x: Value) -> Value {
    exp_with(b, x, &MathOpts::default())
}

/// Natural logarithm: `log(±0) = -inf`, `log(x < 0) = NaN`, `log(inf) = inf`.
pub fn log(b: &mut FunctionBuilder, x: Value) -> Value {
    log_with(b, x, &MathOpts::default())
}

/// Hyperbolic tangent.
pub fn tanh(b: &mut FunctionBuilder, x: Value) -> Value {
    tanh_with(b, x, &MathOpts::default())
}

/// Logistic sigmoid `1 / (1 + e^-x)`.
pub fn sigmoid(b: &mut FunctionBuilder, x: Value) -> Value {
    sigmoid_with(b, x, &MathOpts::default())
}

/// Gauss error function.
pub fn erf(b: &mut FunctionBuilder, x: Value) -> Value {
    erf_with(b, x, &MathOpts::default())
}

/// `x^y` with the special cases of C `pow` (negative `x` with integral `y`, zeros, infinities,
/// `pow(x, 0) = pow(1, y) = 1` even for NaN).
pub fn pow(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    pow_with(b, x, y, &MathOpts::default())
}

/// A constant `v` of type `ty` (`F32`, or `F32X4` with `v` in every lane).
///
/// # Panics
/// If `ty` is neither `F32` nor `F32X4` (a compiler bug, not a user error).
pub fn splat_f32(b: &mut FunctionBuilder, ty: Type, v: f32) -> Value {
    Em::new(b, ty, &MathOpts::default()).f(v)
}

/// [`exp`] with options.
pub fn exp_with(b: &mut FunctionBuilder, x: Value, o: &MathOpts) -> Value {
    let ty = b.func.dfg.value_type(x);
    Em::new(b, ty, o).exp(x)
}

/// [`exp`] for arguments up to 43 (or NaN): softmax's `x - max`, `-|x|`, `-x^2`. The same bits as
/// [`exp_with`] there, in fewer instructions (one scaling step instead of two); undefined above.
pub fn exp_small_with(b: &mut FunctionBuilder, x: Value, o: &MathOpts) -> Value {
    let ty = b.func.dfg.value_type(x);
    Em::new(b, ty, o).exp_small(x)
}

/// [`log`] with options.
pub fn log_with(b: &mut FunctionBuilder, x: Value, o: &MathOpts) -> Value {
    let ty = b.func.dfg.value_type(x);
    Em::new(b, ty, o).log(x)
}

/// [`tanh`] with options.
pub fn tanh_with(b: &mut FunctionBuilder, x: Value, o: &MathOpts) -> Value {
    let ty = b.func.dfg.value_type(x);
    Em::new(b, ty, o).tanh(x)
}

/// [`sigmoid`] with options.
pub fn sigmoid_with(b: &mut FunctionBuilder, x: Value, o: &MathOpts) -> Value {
    let ty = b.func.dfg.value_type(x);
    Em::new(b, ty, o).sigmoid(x)
}

/// SiLU (swish) `x sigmoid(x)`, rounded once where `x * sigmoid(x)` rounds twice.
pub fn silu_with(b: &mut FunctionBuilder, x: Value, o: &MathOpts) -> Value {
    let ty = b.func.dfg.value_type(x);
    Em::new(b, ty, o).silu(x)
}

/// [`erf`] with options.
pub fn erf_with(b: &mut FunctionBuilder, x: Value, o: &MathOpts) -> Value {
    let ty = b.func.dfg.value_type(x);
    Em::new(b, ty, o).erf(x)
}

/// [`pow`] with options.
///
/// # Panics
/// If `x` and `y` differ in type, or the type is neither `F32` nor `F32X4`.
pub fn pow_with(b: &mut FunctionBuilder, x: Value, y: Value, o: &MathOpts) -> Value {
    let ty = b.func.dfg.value_type(x);
    assert_eq!(
        ty,
        b.func.dfg.value_type(y),
        "pow: x and y must have the same type"
    );
    Em::new(b, ty, o).pow(x, y)
}

// ---------------------------------------------------------------------------------------------
// Constants. Polynomial coefficients are the classic single-precision minimax fits (Cephes), but
// exp's, fitted here (`scripts/fit_exp_poly.py`); each list is highest degree first, as
// `Em::horner` and `Em::estrin` want.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2 = LN2_HI + LN2_LO`; `LN2_HI` has 9 significant bits so `n * LN2_HI` is exact for
/// `|n| < 2^15`, which makes the first reduction step `x - n * LN2_HI` exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `exp(r) = 1 + r + r^2 * P(r)` on `|r| <= ln2 / 2`, relative error about `4e-9` before
/// rounding: fitted for this project by iteratively reweighted least squares on the relative
/// error (Lawson's algorithm), coefficients rounded to f32 (`python3 scripts/fit_exp_poly.py`).
const EXP_P: [f32; 5] = [
    1.381_461_3e-3,
    8.368_71e-3,
    4.166_839e-2,
    1.666_652_1e-1,
    4.999_999_4e-1,
];
/// `log(1 + f) = f - f^2/2 + f^3 * P(f)` on `sqrt(1/2) - 1 <= f < sqrt(2) - 1`.
const LOG_P: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461e-1,
    1.167_699_9e-1,
    -1.242_014_1e-1,
    1.424_932_3e-1,
    -1.666_805_8e-1,
    2.000_071_5e-1,
    -2.499_999_4e-1,
    3.333_333e-1,
];
/// `tanh(a) = a + a^3 * P(a^2)` on `0 <= a < 0.625`.
const TANH_P: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_909e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328e-1,
];
/// Below this `|x|` tanh uses its polynomial; above, `1 - 2 / (e^{2|x|} + 1)` loses nothing.
const TANH_SMALL: f32 = 0.625;
/// Abramowitz & Stegun 7.1.26: `erf(a) = 1 - t * P(t) * e^{-a^2}`, `t = 1 / (1 + ERF_AS_P * a)`,
/// absolute error below `1.5e-7`.
const ERF_AS_P: f32 = 0.327_591_1;
const ERF_AS: [f32; 5] = [
    1.061_405_4,
    -1.453_152,
    1.421_413_7,
    -0.284_496_72,
    0.254_829_6,
];
/// Adding and subtracting `1.5 * 2^23` rounds any `|t| < 2^22` to the nearest integer (ties to
/// even) in the current rounding mode, with no `nearest` instruction.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Taylor coefficients of `erf(a) / a` in powers of `a^2`, highest first:
/// `2/sqrt(pi) * (-1)^n / (n! (2n + 1))` for `n = 10..=0`. On `|a| < 1` the first omitted term is
/// below `1e-9`. Computed on the host at emission time (the generated code only sees constants).
fn erf_taylor() -> [f32; 11] {
    let mut c = [0f32; 11];
    let mut fact = 1f64;
    for n in 0..11 {
        if n > 0 {
            fact *= n as f64;
        }
        let sign = if n % 2 == 0 { 1.0 } else { -1.0 };
        let v = std::f64::consts::FRAC_2_SQRT_PI * sign / (fact * (2 * n + 1) as f64);
        c[10 - n] = v as f32;
    }
    c
}

// ---------------------------------------------------------------------------------------------

/// The emitter: one place that knows whether we are building scalar or vector code, so the
/// algorithms below read as plain arithmetic. Masks are whatever `fcmp`/`icmp` return (`i8` for
/// scalars, `i32x4` for vectors) and are only combined with `band`/`bor`/`bnot`.
struct Em<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    /// `F32` or `F32X4`.
    ty: Type,
    /// The same-shape integer type (`I32` or `I32X4`) for bit manipulation.
    ity: Type,
    fma: bool,
}

impl<'a, 'b> Em<'a, 'b> {
    fn new(b: &'a mut FunctionBuilder<'b>, ty: Type, o: &MathOpts) -> Self {
        let ity = match ty {
            types::F32 => types::I32,
            types::F32X4 => types::I32X4,
            other => panic!("kiln-runtime math: unsupported type {other} (want f32 or f32x4)"),
        };
        Em {
            b,
            ty,
            ity,
            fma: o.fma,
        }
    }

    /// The same builder, emitting `f64` (`F64` or `F64X2`) code.
    fn f64_em(&mut self) -> Em<'_, 'b> {
        let (ty, ity) = if self.vector() {
            (types::F64X2, types::I64X2)
        } else {
            (types::F64, types::I64)
        };
        Em {
            b: &mut *self.b,
            ty,
            ity,
            fma: self.fma,
        }
    }

    fn vector(&self) -> bool {
        self.ty.is_vector()
    }

    // -- constants ------------------------------------------------------------------------

    fn f(&mut self, v: f32) -> Value {
        let s = self.b.ins().f32const(v);
        if self.vector() {
            self.b.ins().splat(self.ty, s)
        } else {
            s
        }
    }

    /// An `f64` constant, for the `f64` emitter that `pow` uses.
    fn d(&mut self, v: f64) -> Value {
        let s = self.b.ins().f64const(v);
        if self.vector() {
            self.b.ins().splat(self.ty, s)
        } else {
            s
        }
    }

    fn i(&mut self, v: i64) -> Value {
        let s = self.b.ins().iconst(self.ity.lane_type(), v);
        if self.vector() {
            self.b.ins().splat(self.ity, s)
        } else {
            s
        }
    }

    // -- float arithmetic -----------------------------------------------------------------

    fn add(&mut self, a: Value, c: Value) -> Value {
        self.b.ins().fadd(a, c)
    }
    fn sub(&mut self, a: Value, c: Value) -> Value {
        self.b.ins().fsub(a, c)
    }
    fn mul(&mut self, a: Value, c: Value) -> Value {
        self.b.ins().fmul(a, c)
    }
    fn div(&mut self, a: Value, c: Value) -> Value {
        self.b.ins().fdiv(a, c)
    }
    fn abs(&mut self, a: Value) -> Value {
        self.b.ins().fabs(a)
    }
    fn addk(&mut self, a: Value, k: f32) -> Value {
        let k = self.f(k);
        self.add(a, k)
    }
    fn mulk(&mut self, a: Value, k: f32) -> Value {
        let k = self.f(k);
        self.mul(a, k)
    }
    /// `a * k + c`, fused when the target has FMA.
    fn maddk(&mut self, a: Value, k: f32, c: Value) -> Value {
        let k = self.f(k);
        self.madd(a, k, c)
    }
    /// `a * m + c`, fused when the target has FMA.
    fn madd(&mut self, a: Value, m: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, m, c)
        } else {
            let p = self.mul(a, m);
            self.add(p, c)
        }
    }
    /// Horner evaluation of `coeffs` (highest degree first) at `x`.
    fn horner(&mut self, x: Value, coeffs: &[f32]) -> Value {
        let mut acc = self.f(coeffs[0]);
        for &c in &coeffs[1..] {
            let c = self.f(c);
            acc = self.madd(acc, x, c);
        }
        acc
    }
    /// Estrin evaluation of `coeffs` (highest degree first) at `x`: the same polynomial as
    /// [`Self::horner`], in `ceil(log2(len))` dependent multiply-add steps instead of `len - 1`,
    /// for loops whose speed is the latency of one element's chain.
    fn estrin(&mut self, x: Value, coeffs: &[f32]) -> Value {
        // Lowest degree first: level by level, pair terms (a, b) into a + b * x^(2^level).
        let mut terms: Vec<Value> = coeffs.iter().rev().map(|&c| self.f(c)).collect();
        let mut xp = x;
        while terms.len() > 1 {
            let mut next = Vec::with_capacity(terms.len().div_ceil(2));
            for pair in terms.chunks(2) {
                next.push(match *pair {
                    [a, b] => self.madd(b, xp, a),
                    [a] => a,
                    _ => unreachable!(),
                });
            }
            terms = next;
            if terms.len() > 1 {
                xp = self.mul(xp, xp);
            }
        }
        terms[0]
    }
    /// `x` clamped to `[lo, hi]`; NaN stays NaN.
    ///
    /// Scalars use `fmin`/`fmax`, which propagate NaN in Cranelift (both operands are checked).
    /// Vectors use compare-and-select with `x` second (`hi < x ? hi : x`, then
    /// `y < lo ? lo : y`): a NaN fails both compares and passes through, and x86 lowers each to
    /// one `minps`/`maxps` where its `fmin`/`fmax` take eight instructions to order NaNs and
    /// signed zeros (which a clamp to non-zero bounds does not need).
    fn clamp(&mut self, x: Value, lo: f32, hi: f32) -> Value {
        let hi = self.f(hi);
        let lo = self.f(lo);
        if self.vector() {
            let above = self.b.ins().fcmp(FloatCC::LessThan, hi, x);
            let y = self.sel(above, hi, x);
            let below = self.b.ins().fcmp(FloatCC::LessThan, y, lo);
            self.sel(below, lo, y)
        } else {
            let x = self.b.ins().fmin(x, hi);
            self.b.ins().fmax(x, lo)
        }
    }
    /// `max(x, lo)`, NaN staying NaN (see [`Self::clamp`]).
    fn clamp_lo(&mut self, x: Value, lo: f32) -> Value {
        let lo = self.f(lo);
        if self.vector() {
            let below = self.b.ins().fcmp(FloatCC::LessThan, x, lo);
            self.sel(below, lo, x)
        } else {
            self.b.ins().fmax(x, lo)
        }
    }
    /// Nearest integer `n` to `t = x * scale` for `|t| < 2^21`, as a float, and the bit
    /// pattern of `M + n` for the integer: `M = 1.5 * 2^23 + k` (`0 <= k < 2^21`) and
    /// `t + M` lies in `[2^23, 2^24)`, where the float spacing is 1, so the rounded sum is
    /// exactly `M + n` and its mantissa bits count the units above `1.5 * 2^23`. The low
    /// nine bits of `1.5 * 2^23`'s pattern are zero, so the pattern shifted left by 23 is
    /// `(n + k) << 23`: an exponent field with the bias `k` already added.
    fn round_magic(&mut self, x: Value, scale: f32, k: i32) -> (Value, Value) {
        debug_assert!((0..1 << 21).contains(&k));
        let m = self.f(ROUND_MAGIC + k as f32);
        let sc = self.f(scale);
        let s = self.madd(x, sc, m);
        let nf = self.sub(s, m);
        (nf, self.bits_of(s))
    }

    // -- bits and conversions -------------------------------------------------------------

    fn bits_of(&mut self, x: Value) -> Value {
        self.b.ins().bitcast(self.ity, MemFlagsData::new(), x)
    }
    fn float_of_bits(&mut self, x: Value) -> Value {
        self.b.ins().bitcast(self.ty, MemFlagsData::new(), x)
    }
    fn trunc_int(&mut self, x: Value) -> Value {
        self.b.ins().fcvt_to_sint_sat(self.ity, x)
    }
    fn float_of_int(&mut self, x: Value) -> Value {
        self.b.ins().fcvt_from_sint(self.ty, x)
    }
    /// `-|x|`: the sign bit set (one `or`, where `fabs` then `fneg` are two masks).
    fn neg_abs(&mut self, x: Value) -> Value {
        let b = self.bits_of(x);
        let m = self.i(i64::from(i32::MIN));
        let o = self.or(b, m);
        self.float_of_bits(o)
    }
    /// `2^n` for integer `n` in `[-126, 127]`, built from its exponent field.
    fn pow2i(&mut self, n: Value) -> Value {
        let bias = self.i(127);
        let e = self.b.ins().iadd(n, bias);
        let bits = self.b.ins().ishl_imm_u(e, 23);
        self.float_of_bits(bits)
    }
    /// `r` with the sign bit of `s` or-ed in (`r` must be non-negative): `copysign` for results
    /// of odd functions computed on `|x|`, which also keeps `f(-0) = -0`.
    fn or_sign(&mut self, r: Value, s: Value) -> Value {
        let rb = self.bits_of(r);
        let sb = self.bits_of(s);
        let m = self.i(i64::from(i32::MIN));
        let sign = self.b.ins().band(sb, m);
        let o = self.b.ins().bor(rb, sign);
        self.float_of_bits(o)
    }

    // -- masks and selects ----------------------------------------------------------------

    fn fcmp(&mut self, cc: FloatCC, a: Value, c: Value) -> Value {
        self.b.ins().fcmp(cc, a, c)
    }
    fn fcmpk(&mut self, cc: FloatCC, a: Value, k: f32) -> Value {
        let k = self.f(k);
        self.fcmp(cc, a, k)
    }
    fn icmp(&mut self, cc: IntCC, a: Value, c: Value) -> Value {
        self.b.ins().icmp(cc, a, c)
    }
    fn and(&mut self, a: Value, c: Value) -> Value {
        self.b.ins().band(a, c)
    }
    fn or(&mut self, a: Value, c: Value) -> Value {
        self.b.ins().bor(a, c)
    }
    fn not(&mut self, a: Value) -> Value {
        self.b.ins().bnot(a)
    }
    /// `m ? a : c` lane-wise for floats.
    fn sel(&mut self, m: Value, a: Value, c: Value) -> Value {
        if self.vector() {
            // bitselect wants the mask in the operands' type; lane counts match, so no
            // byte-order question arises.
            let m = self.b.ins().bitcast(self.ty, MemFlagsData::new(), m);
            self.b.ins().bitselect(m, a, c)
        } else {
            self.b.ins().select(m, a, c)
        }
    }
    fn selk(&mut self, m: Value, a: f32, c: Value) -> Value {
        let a = self.f(a);
        self.sel(m, a, c)
    }

    // -- the functions --------------------------------------------------------------------

    fn exp(&mut self, x: Value) -> Value {
        // Beyond these bounds the result is inf / 0 anyway; clamping keeps n within [-150, 128]
        // so the two-step scaling below cannot wrap the exponent field.
        let x = self.clamp(x, -104.0, 89.0);
        let (p, n) = self.exp_reduced(x);
        // Scale by 2^n as 2^(n/2) * 2^(n - n/2): each factor is a normal number, so overflow
        // gives inf and subnormal results are rounded once, by the final multiply.
        let n1 = self.b.ins().sshr_imm_u(n, 1);
        let n2 = self.b.ins().isub(n, n1);
        let s1 = self.pow2i(n1);
        let s2 = self.pow2i(n2);
        let p = self.mul(p, s1);
        self.mul(p, s2)
    }

    /// `exp` for `x <= 43` (or NaN): n stays within [-150, 62], so `2^(n + 64)` is one normal
    /// number and the scaling is `(2^-64 e^r) 2^(n + 64)`, exact but for the one rounding of a
    /// subnormal result, as in `exp`'s two steps. Only the lower clamp is needed: every caller's
    /// argument is bounded above (`x - max`, `-|x|`, `-x^2`), and larger ones give garbage.
    fn exp_small(&mut self, x: Value) -> Value {
        let x = self.clamp_lo(x, -104.0);
        // The exponent field of 2^(n + 64), n + 64 + 127, comes out of the rounding (see
        // `round_magic`), and 2^-64 is folded into the polynomial's coefficients.
        let (p, sb) = self.exp_reduced_plus(x, 64 + 127, f32::from_bits(0x1f80_0000));
        let bits = self.b.ins().ishl_imm_u(sb, 23);
        let s = self.float_of_bits(bits);
        self.mul(p, s)
    }

    /// `(e^r, n)` with `x = n ln2 + r`, `|r| <= ln2 / 2`: `e^x = e^r 2^n`.
    fn exp_reduced(&mut self, x: Value) -> (Value, Value) {
        let (p, sb) = self.exp_reduced_plus(x, 0, 1.0);
        let mb = self.i(i64::from(ROUND_MAGIC.to_bits()));
        (p, self.b.ins().isub(sb, mb))
    }

    /// `e^r` multiplied by `scale`, a power of two (exact: the coefficients are scaled instead,
    /// which takes the multiply off the chain), and the rounding's bits for `n` plus `k` (see
    /// [`Self::round_magic`]).
    fn exp_reduced_plus(&mut self, x: Value, k: i32, scale: f32) -> (Value, Value) {
        // With FMA, `x log2(e)` is not rounded before the rounding to an integer, and each
        // reduction step is one fused operation; without, the same formulas as two.
        let (nf, n) = self.round_magic(x, LOG2E, k);
        // r = x - n ln2, exact first step (see LN2_HI).
        let r = self.maddk(nf, -LN2_HI, x);
        let r = self.maddk(nf, -LN2_LO, r);
        let coeffs = EXP_P.map(|c| c * scale);
        let p = self.estrin(r, &coeffs);
        let r2 = self.mul(r, r);
        let q = if scale == 1.0 {
            let one = self.f(1.0);
            self.add(r, one)
        } else {
            let s = self.f(scale);
            self.madd(r, s, s)
        };
        (self.madd(r2, p, q), n)
    }

    fn log(&mut self, x: Value) -> Value {
        // Subnormals: scale into the normal range first and remember the 23.
        let sub = self.fcmpk(FloatCC::LessThan, x, f32::MIN_POSITIVE);
        let xs = self.mulk(x, 8_388_608.0);
        let xs = self.sel(sub, xs, x);
        let bits = self.bits_of(xs);
        let eb = self.b.ins().ushr_imm_u(bits, 23);
        let bias = self.i(126);
        let e = self.b.ins().isub(eb, bias);
        // Mantissa in [0.5, 1).
        let mmask = self.i(0x007f_ffff);
        let mb = self.and(bits, mmask);
        let half = self.i(0x3f00_0000);
        let mb = self.or(mb, half);
        let m = self.float_of_bits(mb);
        let ef = self.float_of_int(e);
        let adj = self.f(23.0);
        let zero = self.f(0.0);
        let adj = self.sel(sub, adj, zero);
        let ef = self.sub(ef, adj);
        // Fold m into [sqrt(1/2), sqrt(2)) so f = m - 1 is small; both forms are exact.
        let small = self.fcmpk(FloatCC::LessThan, m, std::f32::consts::FRAC_1_SQRT_2);
        let one = self.f(1.0);
        let two_m = self.add(m, m);
        let fa = self.sub(two_m, one);
        let fb = self.sub(m, one);
        let f = self.sel(small, fa, fb);
        let onef = self.f(1.0);
        let zerof = self.f(0.0);
        let dec = self.sel(small, onef, zerof);
        let ef = self.sub(ef, dec);
        // log(1 + f) + e ln2, adding the small terms first.
        let z = self.mul(f, f);
        let p = self.estrin(f, &LOG_P);
        let fz = self.mul(f, z);
        let y = self.mul(fz, p);
        let lo = self.f(LN2_LO);
        let y = self.madd(ef, lo, y);
        let mhalf = self.f(-0.5);
        let y = self.madd(z, mhalf, y);
        let r = self.add(f, y);
        let hi = self.f(LN2_HI);
        let r = self.madd(ef, hi, r);
        // Special values, later rules winning.
        let is_inf = self.fcmpk(FloatCC::Equal, x, f32::INFINITY);
        let r = self.selk(is_inf, f32::INFINITY, r);
        let is_zero = self.fcmpk(FloatCC::Equal, x, 0.0);
        let r = self.selk(is_zero, f32::NEG_INFINITY, r);
        let neg = self.fcmpk(FloatCC::LessThan, x, 0.0);
        let nan = self.fcmp(FloatCC::Unordered, x, x);
        let bad = self.or(neg, nan);
        self.selk(bad, f32::NAN, r)
    }

    fn tanh(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        // Small: a + a^3 P(a^2).
        let z = self.mul(a, a);
        let p = self.horner(z, &TANH_P);
        let az = self.mul(a, z);
        let small = self.madd(az, p, a);
        // Large: (1 - e) / (1 + e) with e = e^{-2a} in (0, 0.29] (no cancellation there, no
        // overflow; e = 0 for large a gives exactly 1).
        let a2 = self.add(a, a);
        let na2 = self.b.ins().fneg(a2);
        let e = self.exp_small(na2);
        let one = self.f(1.0);
        let n = self.sub(one, e);
        let d = self.add(one, e);
        let large = self.div(n, d);
        let is_small = self.fcmpk(FloatCC::LessThan, a, TANH_SMALL);
        let r = self.sel(is_small, small, large);
        self.or_sign(r, x)
    }

    fn sigmoid(&mut self, x: Value) -> Value {
        let (n, d) = self.sigmoid_fraction(x);
        self.div(n, d)
    }

    fn silu(&mut self, x: Value) -> Value {
        // x sigmoid(x), with sigmoid's numerator multiplied by x before its one division.
        let (n, d) = self.sigmoid_fraction(x);
        let n = self.mul(x, n);
        self.div(n, d)
    }

    /// `sigmoid(x)` as a numerator and denominator. With e = e^{-|x|} in (0, 1]:
    /// sigmoid(|x|) = 1 / (1 + e) and sigmoid(-|x|) = e / (1 + e). Never overflows, and keeps
    /// relative accuracy for very negative x.
    fn sigmoid_fraction(&mut self, x: Value) -> (Value, Value) {
        let na = self.neg_abs(x);
        let e = self.exp_small(na);
        let one = self.f(1.0);
        let d = self.add(one, e);
        // x <= 0 exactly when x = -|x| (a compare without a constant; at 0 both forms agree).
        let neg = self.fcmp(FloatCC::Equal, x, na);
        (self.sel(neg, e, one), d)
    }

    fn erf(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        // |x| < 1: a * T(a^2), Taylor.
        let z = self.mul(a, a);
        let taylor = erf_taylor();
        let t = self.horner(z, &taylor);
        let small = self.mul(a, t);
        // |x| >= 1: 1 - t P(t) e^{-a^2}. For huge a, a^2 = inf and e^{-inf} = 0 gives exactly 1.
        let pa = self.mulk(a, ERF_AS_P);
        let d = self.addk(pa, 1.0);
        let one = self.f(1.0);
        let tt = self.div(one, d);
        let p = self.horner(tt, &ERF_AS);
        let tp = self.mul(tt, p);
        let nz = self.b.ins().fneg(z);
        let e = self.exp_small(nz);
        let tpe = self.mul(tp, e);
        let large = self.sub(one, tpe);
        let is_small = self.fcmpk(FloatCC::LessThan, a, 1.0);
        let r = self.sel(is_small, small, large);
        self.or_sign(r, x)
    }

    fn pow(&mut self, x: Value, y: Value) -> Value {
        let ax = self.abs(x);
        let r = self.pow_core(ax, y);

        // Classify y. |y| >= 2^31 is always an (even) integer; below that, fcvt is exact for
        // integers, so "converts back to itself" means integral.
        let ay = self.abs(y);
        let yi = self.trunc_int(y);
        let back = self.float_of_int(yi);
        let exact = self.fcmp(FloatCC::Equal, back, y);
        let huge = self.fcmpk(FloatCC::GreaterThanOrEqual, ay, 2_147_483_648.0);
        let is_int = self.or(exact, huge);
        let one_i = self.i(1);
        let low = self.and(yi, one_i);
        let odd_bit = self.icmp(IntCC::Equal, low, one_i);
        let odd = self.and(exact, odd_bit);

        // |x| = 0 or inf, where the core's exponent extraction does not apply:
        // 0^(y<0) = inf^(y>0) = inf, 0^(y>0) = inf^(y<0) = 0, NaN y gives NaN.
        let x0 = self.fcmpk(FloatCC::Equal, ax, 0.0);
        let xinf = self.fcmpk(FloatCC::Equal, ax, f32::INFINITY);
        let yneg = self.fcmpk(FloatCC::LessThan, y, 0.0);
        let ypos = self.fcmpk(FloatCC::GreaterThan, y, 0.0);
        let edge = self.or(x0, xinf);
        let r = self.selk(edge, f32::NAN, r);
        let a = self.and(x0, yneg);
        let c = self.and(xinf, ypos);
        let to_inf = self.or(a, c);
        let r = self.selk(to_inf, f32::INFINITY, r);
        let a = self.and(x0, ypos);
        let c = self.and(xinf, yneg);
        let to_zero = self.or(a, c);
        let r = self.selk(to_zero, 0.0, r);
        let xnan = self.fcmp(FloatCC::Unordered, x, x);
        let r = self.selk(xnan, f32::NAN, r);

        // Negative x (including -0 and -inf) with odd y: odd function of x.
        let xb = self.bits_of(x);
        let zi = self.i(0);
        let xneg = self.icmp(IntCC::SignedLessThan, xb, zi);
        let flip = self.and(xneg, odd);
        let nr = self.b.ins().fneg(r);
        let r = self.sel(flip, nr, r);
        // Finite negative x with non-integral y: NaN (-inf is excluded: pow(-inf, 0.5) = inf).
        let lt0 = self.fcmpk(FloatCC::LessThan, x, 0.0);
        let fin = self.fcmpk(FloatCC::GreaterThan, x, f32::NEG_INFINITY);
        let not_int = self.not(is_int);
        let bad = self.and(lt0, fin);
        let bad = self.and(bad, not_int);
        let r = self.selk(bad, f32::NAN, r);
        // pow(-1, ±inf) = 1 (ln 1 * inf would give NaN).
        let m1 = self.fcmpk(FloatCC::Equal, x, -1.0);
        let yinf = self.fcmpk(FloatCC::Equal, ay, f32::INFINITY);
        let m1inf = self.and(m1, yinf);
        let r = self.selk(m1inf, 1.0, r);
        // pow(1, y) = 1 and pow(x, ±0) = 1, even for NaN.
        let x1 = self.fcmpk(FloatCC::Equal, x, 1.0);
        let y0 = self.fcmpk(FloatCC::Equal, y, 0.0);
        let one = self.or(x1, y0);
        self.selk(one, 1.0, r)
    }

    /// `ax^y` for finite positive `ax` (other inputs give garbage that `pow` overrides), computed
    /// in `f64` so the result is correctly rounded to `f32` in almost all cases: in `f32`, the
    /// error of `y * log(ax)` would grow with `|y log ax|` and reach tens of ulp for large results.
    /// Vectors are split into two `f64x2` halves.
    fn pow_core(&mut self, ax: Value, y: Value) -> Value {
        if !self.vector() {
            let ax = self.b.ins().fpromote(types::F64, ax);
            let y = self.b.ins().fpromote(types::F64, y);
            let r = self.f64_em().pow64(ax, y);
            return self.b.ins().fdemote(types::F32, r);
        }
        let (ax_lo, ax_hi) = self.split(ax);
        let (y_lo, y_hi) = self.split(y);
        let r_lo = self.f64_em().pow64(ax_lo, y_lo);
        let r_hi = self.f64_em().pow64(ax_hi, y_hi);
        let r_lo = self.b.ins().fvdemote(r_lo);
        let r_hi = self.b.ins().fvdemote(r_hi);
        // [lo0, lo1, hi0, hi1]: the 64-bit interleave (punpcklqdq on x86, plain SSE2).
        self.shuffle_f32x4(r_lo, r_hi, [0, 1, 4, 5])
    }

    /// Lanes 0-1 and 2-3 of an f32x4, each widened to f64x2.
    fn split(&mut self, v: Value) -> (Value, Value) {
        let lo = self.b.ins().fvpromote_low(v);
        // Lanes [2, 3, 2, 3]: a single-source 32-bit permutation, i.e. pshufd (SSE2) on x86.
        let hi = self.shuffle_f32x4(v, v, [2, 3, 2, 3]);
        let hi = self.b.ins().fvpromote_low(hi);
        (lo, hi)
    }

    /// `shuffle` on 32-bit lanes (indices 0-3 pick from `a`, 4-7 from `c`).
    fn shuffle_f32x4(&mut self, a: Value, c: Value, lanes: [u8; 4]) -> Value {
        let le = MemFlagsData::new().with_endianness(Endianness::Little);
        let a = self.b.ins().bitcast(types::I8X16, le, a);
        let c = self.b.ins().bitcast(types::I8X16, le, c);
        let bytes: Vec<u8> = lanes
            .iter()
            .flat_map(|&l| (0..4).map(move |k| 4 * l + k))
            .collect();
        let mask = self.b.func.dfg.immediates.push(ConstantData::from(bytes));
        let r = self.b.ins().shuffle(a, c, mask);
        self.b.ins().bitcast(types::F32X4, le, r)
    }

    /// `ax^y = 2^(y log2 ax)` in `f64`, for finite positive `ax` (f32 subnormals are normal
    /// here). Only integer operations SSE2 has on 64-bit lanes are used (add, sub, shifts,
    /// and/or); integer <-> float conversions go through the `2^52` exponent trick instead of
    /// `fcvt`, which x86 lacks for 64-bit lanes before AVX-512.
    fn pow64(&mut self, ax: Value, y: Value) -> Value {
        const TWO52: f64 = 4_503_599_627_370_496.0;
        let bits = self.bits_of(ax);
        // Biased exponent as a float: OR it into the mantissa of 2^52 and subtract 2^52.
        let eb = self.b.ins().ushr_imm_u(bits, 52);
        let two52 = self.d(TWO52);
        let two52_bits = self.bits_of(two52);
        let eb = self.or(eb, two52_bits);
        let eb = self.float_of_bits(eb);
        let ef = self.sub(eb, two52);
        let ef = self.addd(ef, -1023.0);
        // Mantissa m in [1, 2), folded into [sqrt(1/2), sqrt(2)) (halving is exact).
        let mmask = self.i(0x000f_ffff_ffff_ffff);
        let mb = self.and(bits, mmask);
        let one_bits = self.i(0x3ff0_0000_0000_0000);
        let mb = self.or(mb, one_bits);
        let m = self.float_of_bits(mb);
        let big = self.fcmpd(FloatCC::GreaterThan, m, std::f64::consts::SQRT_2);
        let mh = self.muld(m, 0.5);
        let m = self.sel(big, mh, m);
        let one = self.d(1.0);
        let zero = self.d(0.0);
        let inc = self.sel(big, one, zero);
        let ef = self.add(ef, inc);
        // ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716: the series to s^15 leaves a
        // relative error below 2^-45.
        let num = self.sub(m, one);
        let den = self.add(m, one);
        let s = self.div(num, den);
        let s2 = self.mul(s, s);
        let atanh: Vec<f64> = (0..8).rev().map(|k| 1.0 / f64::from(2 * k + 1)).collect();
        let p = self.hornerd(s2, &atanh);
        let sp = self.mul(s, p);
        let ln_m = self.add(sp, sp);
        // t = y log2(ax); y * e is exact (24 x 9 bits).
        let l2m = self.muld(ln_m, std::f64::consts::LOG2_E);
        let log2x = self.add(ef, l2m);
        let t = self.mul(y, log2x);
        // Results outside 2^±200 are 0 / inf in f32 anyway; clamping keeps the exponent field
        // arithmetic below in range. fmin/fmax propagate NaN.
        let hi = self.d(200.0);
        let lo = self.d(-200.0);
        let t = self.b.ins().fmin(t, hi);
        let t = self.b.ins().fmax(t, lo);
        // t = n + f with n = nearest integer (1.5 * 2^52 rounding trick), |f| <= 1/2.
        let magic = self.d(1.5 * TWO52);
        let k = self.add(t, magic);
        let nf = self.sub(k, magic);
        let f = self.sub(t, nf);
        let r = self.muld(f, std::f64::consts::LN_2);
        // e^r on |r| <= 0.35: Taylor to r^12 (next term below 2e-16).
        let mut taylor = [0f64; 13];
        let mut fact = 1f64;
        for (i, c) in taylor.iter_mut().rev().enumerate() {
            if i > 0 {
                fact *= i as f64;
            }
            *c = 1.0 / fact;
        }
        let p = self.hornerd(r, &taylor);
        // 2^n from n's bits: k's low mantissa bits hold n (two's complement) plus magic's.
        let kb = self.bits_of(k);
        let mb = self.bits_of(magic);
        let n = self.b.ins().isub(kb, mb);
        let bias = self.i(1023);
        let e = self.b.ins().iadd(n, bias);
        let sb = self.b.ins().ishl_imm_u(e, 52);
        let scale = self.float_of_bits(sb);
        self.mul(p, scale)
    }

    fn addd(&mut self, a: Value, k: f64) -> Value {
        let k = self.d(k);
        self.add(a, k)
    }
    fn muld(&mut self, a: Value, k: f64) -> Value {
        let k = self.d(k);
        self.mul(a, k)
    }
    fn fcmpd(&mut self, cc: FloatCC, a: Value, k: f64) -> Value {
        let k = self.d(k);
        self.fcmp(cc, a, k)
    }
    fn hornerd(&mut self, x: Value, coeffs: &[f64]) -> Value {
        let mut acc = self.d(coeffs[0]);
        for &c in &coeffs[1..] {
            let c = self.d(c);
            acc = self.madd(acc, x, c);
        }
        acc
    }
}

// ---------------------------------------------------------------------------------------------
// Trigonometric functions and half-precision conversions.

/// `sin x` for an `f32` scalar or `f32x4` vector. Absolute error below `1e-6` for `|x|` up to
/// about `1.6e6` (`2^20 · π/2`, where the `f64` range reduction stops being exact); beyond that the
/// result is still within `[-1, 1]` but carries no information. `sin(±inf) = sin(NaN) = NaN`.
pub fn sin_with(b: &mut FunctionBuilder, x: Value, o: &MathOpts) -> Value {
    let ty = b.func.dfg.value_type(x);
    Em::new(b, ty, o).trig(x, Trig::Sin)
}

/// `cos x`; same accuracy and special values as [`sin_with`].
pub fn cos_with(b: &mut FunctionBuilder, x: Value, o: &MathOpts) -> Value {
    let ty = b.func.dfg.value_type(x);
    Em::new(b, ty, o).trig(x, Trig::Cos)
}

/// `tan x` as `sin / cos` of the reduced argument: relative error of a few ulp away from the
/// poles (range as for [`sin_with`]).
pub fn tan_with(b: &mut FunctionBuilder, x: Value, o: &MathOpts) -> Value {
    let ty = b.func.dfg.value_type(x);
    Em::new(b, ty, o).trig(x, Trig::Tan)
}

/// IEEE binary16 bits to `f32`, exactly (subnormals, infinities, NaN payloads kept). `h` is an
/// `i32` (or `i32x4`) whose low 16 bits hold the half; the upper bits must be zero.
pub fn f16_bits_to_f32(b: &mut FunctionBuilder, h: Value) -> Value {
    Em::for_bits(b, h).f16_to_f32(h)
}

/// `f32` (or `f32x4`) to IEEE binary16 bits, rounding to nearest even: overflow gives `±inf`,
/// tiny values become subnormals or `±0`, NaN stays NaN (quiet). The result is an `i32` (`i32x4`)
/// with the half in its low 16 bits and zeros above.
pub fn f32_to_f16_bits(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    Em::new(b, ty, &MathOpts::default()).f32_to_f16(x)
}

/// bfloat16 bits (low 16 bits of an `i32`/`i32x4`, upper bits zero) to `f32`, exactly.
pub fn bf16_bits_to_f32(b: &mut FunctionBuilder, h: Value) -> Value {
    let mut e = Em::for_bits(b, h);
    let bits = e.b.ins().ishl_imm_u(h, 16);
    e.float_of_bits(bits)
}

/// `f32` (or `f32x4`) to bfloat16 bits (low half of an `i32`/`i32x4`), rounding to nearest even;
/// NaN stays NaN (quiet).
pub fn f32_to_bf16_bits(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    Em::new(b, ty, &MathOpts::default()).f32_to_bf16(x)
}

/// `f64` to `f32` rounding to odd (truncate, and set the last bit when inexact). Rounding that
/// result once more to a format at least two bits narrower (binary16, bfloat16) gives the correctly
/// rounded narrow value, which rounding to nearest twice would not always.
pub fn f64_to_f32_round_odd(b: &mut FunctionBuilder, x: Value) -> Value {
    assert_eq!(
        b.func.dfg.value_type(x),
        types::F64,
        "f64_to_f32_round_odd takes an f64 scalar"
    );
    let r = b.ins().fdemote(types::F32, x);
    let back = b.ins().fpromote(types::F64, r);
    // NaN compares unordered, so it is never "inexact" and keeps its demoted bits.
    let inexact = b.ins().fcmp(FloatCC::OrderedNotEqual, back, x);
    let ab = b.ins().fabs(back);
    let ax = b.ins().fabs(x);
    let away = b.ins().fcmp(FloatCC::GreaterThan, ab, ax);
    let rb = b.ins().bitcast(types::I32, MemFlagsData::new(), r);
    // Bits are sign-magnitude, so one less is the next value toward zero (inf becomes f32::MAX).
    let dec = b.ins().iadd_imm_s(rb, -1);
    let t = b.ins().select(away, dec, rb);
    let odd = b.ins().bor_imm_u(t, 1);
    let rb = b.ins().select(inexact, odd, rb);
    b.ins().bitcast(types::F32, MemFlagsData::new(), rb)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Trig {
    Sin,
    Cos,
    Tan,
}

/// `π/2 = PIO2_HI + PIO2_LO` with `PIO2_HI` holding 33 significant bits, so `n · PIO2_HI` is exact
/// for `|n| < 2^20` and `x - n · PIO2_HI` loses nothing.
const PIO2_HI: f64 = 1.570_796_326_734_125_6;
const PIO2_LO: f64 = 6.077_100_506_506_192e-11;
/// `sin r = r + r^3 · S(r^2)` and `cos r = 1 - r^2 / 2 + r^4 · C(r^2)` on `|r| <= π/4` (Cephes
/// single-precision fits, highest degree first).
const SIN_P: [f32; 3] = [-1.951_529_6e-4, 8.332_161e-3, -1.666_665_5e-1];
const COS_P: [f32; 3] = [2.443_315_7e-5, -1.388_731_6e-3, 4.166_664_6e-2];

impl<'a, 'b> Em<'a, 'b> {
    /// An emitter for the float type whose bit pattern type is `h`'s (`i32` or `i32x4`).
    fn for_bits(b: &'a mut FunctionBuilder<'b>, h: Value) -> Self {
        let ty = match b.func.dfg.value_type(h) {
            types::I32 => types::F32,
            types::I32X4 => types::F32X4,
            other => panic!("kiln-runtime math: unsupported bits type {other} (want i32 or i32x4)"),
        };
        Em::new(b, ty, &MathOpts::default())
    }

    /// `m ? a : c` lane-wise for integer lanes (masks come from `icmp` on the same type).
    fn isel(&mut self, m: Value, a: Value, c: Value) -> Value {
        if self.vector() {
            self.b.ins().bitselect(m, a, c)
        } else {
            self.b.ins().select(m, a, c)
        }
    }

    fn icmpk(&mut self, cc: IntCC, a: Value, k: i64) -> Value {
        let k = self.i(k);
        self.icmp(cc, a, k)
    }

    fn iaddk(&mut self, a: Value, k: i64) -> Value {
        let k = self.i(k);
        self.b.ins().iadd(a, k)
    }

    fn iandk(&mut self, a: Value, k: i64) -> Value {
        let k = self.i(k);
        self.and(a, k)
    }

    fn f16_to_f32(&mut self, h: Value) -> Value {
        let sign = self.iandk(h, 0x8000);
        let sign = self.b.ins().ishl_imm_u(sign, 16);
        let em = self.iandk(h, 0x7fff);
        let shifted = self.b.ins().ishl_imm_u(em, 13);
        // Normal: rebias the exponent from 15 to 127.
        let normal = self.iaddk(shifted, 0x3800_0000);
        // Subnormal: 0.5 + em · 2^-24 is exact in f32, and subtracting 0.5 leaves em · 2^-24
        // exactly (no subnormal arithmetic involved).
        let half_bits = self.i(0x3f00_0000);
        let sb = self.or(em, half_bits);
        let sf = self.float_of_bits(sb);
        let sf = self.addk(sf, -0.5);
        let sub = self.bits_of(sf);
        // Infinity and NaN: all-ones exponent, mantissa (payload) kept.
        let top = self.i(0x7f80_0000);
        let infnan = self.or(shifted, top);
        let is_sub = self.icmpk(IntCC::SignedLessThan, em, 0x400);
        let is_infnan = self.icmpk(IntCC::SignedGreaterThanOrEqual, em, 0x7c00);
        let r = self.isel(is_sub, sub, normal);
        let r = self.isel(is_infnan, infnan, r);
        let r = self.or(r, sign);
        self.float_of_bits(r)
    }

    fn f32_to_f16(&mut self, x: Value) -> Value {
        let bits = self.bits_of(x);
        let sign_mask = self.i(i64::from(i32::MIN));
        let sign = self.and(bits, sign_mask);
        let a = self.b.ins().bxor(bits, sign);
        // |x| >= 2^16 (or inf/NaN): inf, or a quiet NaN.
        let is_big = self.icmpk(IntCC::SignedGreaterThanOrEqual, a, 0x4780_0000);
        let is_nan = self.icmpk(IntCC::SignedGreaterThan, a, 0x7f80_0000);
        let inf = self.i(0x7c00);
        let qnan = self.i(0x7e00);
        let big = self.isel(is_nan, qnan, inf);
        // |x| < 2^-14: a subnormal half (or zero). Adding 0.5, whose ulp is 2^-24 (the half
        // subnormal step), rounds |x| to that step to nearest even; the low bits are the result
        // (0x400 when it rounds up to the smallest normal, which is the right encoding).
        let is_sub = self.icmpk(IntCC::SignedLessThan, a, 0x3880_0000);
        let af = self.float_of_bits(a);
        let s = self.addk(af, 0.5);
        let sb = self.bits_of(s);
        let sub = self.iaddk(sb, -0x3f00_0000);
        // Normal: rebias the exponent and round the 13 dropped bits to nearest even; a carry
        // runs into the exponent (and up to inf) as it should.
        let odd = self.b.ins().ushr_imm_u(a, 13);
        let odd = self.iandk(odd, 1);
        let t = self.iaddk(a, 0xfff - 0x3800_0000);
        let t = self.b.ins().iadd(t, odd);
        let normal = self.b.ins().ushr_imm_u(t, 13);
        let r = self.isel(is_sub, sub, normal);
        let r = self.isel(is_big, big, r);
        let s16 = self.b.ins().ushr_imm_u(sign, 16);
        self.or(r, s16)
    }

    fn f32_to_bf16(&mut self, x: Value) -> Value {
        let bits = self.bits_of(x);
        let abs = self.iandk(bits, 0x7fff_ffff);
        let is_nan = self.icmpk(IntCC::SignedGreaterThan, abs, 0x7f80_0000);
        let hi = self.b.ins().ushr_imm_u(bits, 16);
        let quiet = self.i(0x40);
        let nan = self.or(hi, quiet);
        let odd = self.iandk(hi, 1);
        let t = self.iaddk(bits, 0x7fff);
        let t = self.b.ins().iadd(t, odd);
        let rounded = self.b.ins().ushr_imm_u(t, 16);
        self.isel(is_nan, nan, rounded)
    }

    /// Reduces `x` to `r = x - n π/2` with `|r| <= π/4` (in `f64`, exact for `|n| < 2^20`) and
    /// returns `(r, n)` as floats of the emitter's type (`n` exact below `2^24`). `|r|` is
    /// clamped to 1 so that garbage from huge arguments stays bounded.
    fn reduce_pio2(&mut self, x: Value) -> (Value, Value) {
        if !self.vector() {
            let xd = self.b.ins().fpromote(types::F64, x);
            let (r, n) = self.f64_em().reduce_pio2_64(xd);
            let r = self.b.ins().fdemote(types::F32, r);
            let n = self.b.ins().fdemote(types::F32, n);
            return (r, n);
        }
        let (lo, hi) = self.split(x);
        let (r_lo, n_lo) = self.f64_em().reduce_pio2_64(lo);
        let (r_hi, n_hi) = self.f64_em().reduce_pio2_64(hi);
        let r_lo = self.b.ins().fvdemote(r_lo);
        let r_hi = self.b.ins().fvdemote(r_hi);
        let n_lo = self.b.ins().fvdemote(n_lo);
        let n_hi = self.b.ins().fvdemote(n_hi);
        let r = self.shuffle_f32x4(r_lo, r_hi, [0, 1, 4, 5]);
        let n = self.shuffle_f32x4(n_lo, n_hi, [0, 1, 4, 5]);
        (r, n)
    }

    /// [`Em::reduce_pio2`] on `f64` lanes.
    fn reduce_pio2_64(&mut self, x: Value) -> (Value, Value) {
        const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: adding it rounds to an integer.
        let t = self.muld(x, std::f64::consts::FRAC_2_PI);
        let magic = self.d(MAGIC);
        let k = self.add(t, magic);
        let n = self.sub(k, magic);
        let hi = self.muld(n, PIO2_HI);
        let r = self.sub(x, hi);
        let lo = self.muld(n, PIO2_LO);
        let r = self.sub(r, lo);
        let one = self.d(1.0);
        let mone = self.d(-1.0);
        let r = self.b.ins().fmin(r, one);
        let r = self.b.ins().fmax(r, mone);
        (r, n)
    }

    fn trig(&mut self, x: Value, f: Trig) -> Value {
        let (r, n) = self.reduce_pio2(x);
        let q = self.trunc_int(n);
        // cos x = sin(x + π/2): one more quadrant.
        let q = if f == Trig::Cos { self.iaddk(q, 1) } else { q };
        let z = self.mul(r, r);
        let ps = self.horner(z, &SIN_P);
        let rz = self.mul(r, z);
        let s = self.madd(rz, ps, r);
        let pc = self.horner(z, &COS_P);
        let zz = self.mul(z, z);
        let mhalf = self.f(-0.5);
        let one = self.f(1.0);
        let c0 = self.madd(z, mhalf, one);
        let c = self.madd(zz, pc, c0);
        let q1 = self.iandk(q, 1);
        let odd = self.icmpk(IntCC::Equal, q1, 1);
        if f == Trig::Tan {
            // tan(r + π/2) = -cos r / sin r.
            let t = self.div(s, c);
            let nc = self.b.ins().fneg(c);
            let cot = self.div(nc, s);
            return self.sel(odd, cot, t);
        }
        // sin(r + k π/2) for k = 0..3: sin r, cos r, -sin r, -cos r.
        let v = self.sel(odd, c, s);
        let q2 = self.iandk(q, 2);
        let flip = self.b.ins().ishl_imm_u(q2, 30);
        let vb = self.bits_of(v);
        let vb = self.b.ins().bxor(vb, flip);
        self.float_of_bits(vb)
    }
}
