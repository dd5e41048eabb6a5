//! Elementwise ops of every dtype: unary functions and activations, broadcasting binary arithmetic,
//! comparisons and logic, `where`, and casts.
//!
//! One kernel shape serves them all: the output's loop nest, coalesced, with every input walking it
//! by its broadcast strides, so the innermost dim of each input steps by one element or not at all.
//! Inside, each element is loaded into its *compute domain*, the op is applied there, and the result
//! is stored converted to the output dtype:
//!
//! | dtype | domain |
//! |---|---|
//! | f32, f16, bf16 | f32 (halves are widened exactly and rounded back to nearest even) |
//! | f64 | f64 (transcendentals go through the f32 emitters: about 7 significant digits) |
//! | i8 ... i64, u8 ... u64 | i64, sign- or zero-extended; results wrap to the width on store |
//! | bool | one byte, 0 or 1 |
//!
//! Lanewise float ops (unary functions, arithmetic but the remainders) run four f32 lanes at a time
//! when every operand is f32 (`map_f32`) or f32/f16/bf16 (halves converted on load and store as
//! `i32x4` bit patterns); the rest is scalar. Integer division and remainder by zero give 0 instead
//! of trapping (ONNX leaves them undefined), as does the overflowing `i64::MIN / -1`. `where` never
//! converts: it selects whole elements as raw bits. Casts from and to the packed 4-bit integers
//! have a kernel of their own (nibbles, two to a byte).

use super::{coalesce, dense_strides, loop_nest, map_f32};
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, F64, I16, I16X8, I32, I32X4, I64, I64X2, I8};
use cranelift_codegen::ir::{BlockArg, Endianness, InstBuilder, MemFlagsData, Type, Value};
use kiln_ir::ops::{BinaryOp, UnaryOp};
use kiln_ir::DType;
use kiln_runtime::math::{self, MathOpts};

/// The Cranelift scalar type that holds one element of `d` in memory (bool is a byte; halves are
/// `None`: they are stored as 16-bit patterns and computed in f32).
pub(crate) fn clif_type(d: DType) -> Option<Type> {
    Some(match d {
        DType::F32 => F32,
        DType::F64 => F64,
        DType::I64 | DType::U64 => I64,
        DType::I32 | DType::U32 => I32,
        DType::I16 | DType::U16 => I16,
        DType::I8 | DType::U8 | DType::Bool => I8,
        DType::F16 | DType::BF16 | DType::I4 | DType::U4 => return None,
    })
}

/// What an elementwise kernel computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum EwKind {
    /// One input.
    Unary(UnaryOp),
    /// Two inputs, broadcast together.
    Binary(BinaryOp),
    /// Conversion to the output dtype.
    Cast,
    /// `cond ? x : y`, three inputs broadcast together.
    Where,
}

/// An elementwise kernel with every shape and dtype fixed.
#[derive(Clone, Debug)]
pub(crate) struct EwSpec {
    /// The computation.
    pub kind: EwKind,
    /// Dtype and dims of each input, in operand order.
    pub ins: Vec<(DType, Vec<usize>)>,
    /// Dtype and dims of the output.
    pub out: (DType, Vec<usize>),
}

impl EwSpec {
    /// Kernel name stem.
    pub(crate) fn name(&self) -> &'static str {
        match self.kind {
            EwKind::Unary(u) => u.name(),
            EwKind::Binary(b) => b.name(),
            EwKind::Cast => "cast",
            EwKind::Where => "where",
        }
    }

    /// Why the kernel cannot be compiled, if it cannot. Types the IR accepts are all compiled;
    /// the packed 4-bit integers only by casts.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.kind == EwKind::Cast {
            return Ok(());
        }
        let packed = |d: DType| d.bits() < 8;
        if let Some((d, _)) = self.ins.iter().find(|(d, _)| packed(*d)) {
            return Err(format!("{} on {d}", self.name()));
        }
        if packed(self.out.0) {
            return Err(format!("{} to {}", self.name(), self.out.0));
        }
        Ok(())
    }
}

/// The domain values are computed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dom {
    F32,
    F64,
    /// i64 holding an integer of any width; `unsigned` picks the unsigned division, remainder,
    /// order and conversions.
    Int {
        unsigned: bool,
    },
    Bool,
}

fn dom(d: DType) -> Dom {
    match d {
        DType::F32 | DType::F16 | DType::BF16 => Dom::F32,
        DType::F64 => Dom::F64,
        DType::Bool => Dom::Bool,
        _ => Dom::Int {
            unsigned: !d.is_signed_int(),
        },
    }
}

fn esize(d: DType) -> i64 {
    d.bits() as i64 / 8
}

/// Loads an element of `d` into its domain's type (f32, f64, i64, or i8 for bool).
fn load(kb: &mut Kb, d: DType, p: Ptr) -> Value {
    match d {
        DType::F16 | DType::BF16 => {
            let h = kb.load(I16, p, 0);
            let h = kb.b.ins().uextend(I32, h);
            if d == DType::F16 {
                math::f16_bits_to_f32(&mut kb.b, h)
            } else {
                math::bf16_bits_to_f32(&mut kb.b, h)
            }
        }
        DType::F32 | DType::F64 | DType::Bool => kb.load(clif_type(d).unwrap(), p, 0),
        _ => load_int_i64(kb, d, p),
    }
}

/// Loads an integer element of `d` widened to i64 (sign- or zero-extended as the dtype says).
pub(crate) fn load_int_i64(kb: &mut Kb, d: DType, p: Ptr) -> Value {
    let ty = clif_type(d).unwrap_or(I64);
    let v = kb.load(ty, p, 0);
    if ty == I64 {
        v
    } else if d.is_signed_int() {
        kb.b.ins().sextend(I64, v)
    } else {
        kb.b.ins().uextend(I64, v)
    }
}

/// Converts a domain value to the domain `to` (the value's own domain is told by its type;
/// `unsigned` says how to read an i64).
fn convert(kb: &mut Kb, v: Value, unsigned: bool, to: Dom) -> Value {
    let ty = kb.b.func.dfg.value_type(v);
    match (ty, to) {
        (F32, Dom::F32) | (F64, Dom::F64) | (I64, Dom::Int { .. }) | (I8, Dom::Bool) => v,
        (F32, Dom::F64) => kb.b.ins().fpromote(F64, v),
        (F64, Dom::F32) => kb.b.ins().fdemote(F32, v),
        (F32 | F64, Dom::Int { unsigned: u }) => {
            // Truncation toward zero, saturating (NaN gives 0); the store wraps to the width.
            if u {
                kb.b.ins().fcvt_to_uint_sat(I64, v)
            } else {
                kb.b.ins().fcvt_to_sint_sat(I64, v)
            }
        }
        (F32 | F64, Dom::Bool) => {
            let z = fk(kb, ty, 0.0);
            kb.b.ins().fcmp(FloatCC::NotEqual, v, z)
        }
        (I64, Dom::F32 | Dom::F64) => {
            let ft = if to == Dom::F32 { F32 } else { F64 };
            if unsigned {
                kb.b.ins().fcvt_from_uint(ft, v)
            } else {
                kb.b.ins().fcvt_from_sint(ft, v)
            }
        }
        (I64, Dom::Bool) => kb.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0),
        (I8, _) => {
            let w = kb.b.ins().uextend(I64, v);
            convert(kb, w, false, to)
        }
        _ => unreachable!("elementwise: no conversion from {ty} to {to:?}"),
    }
}

/// Stores a domain value as an element of `d`, converting (float to integer truncates toward zero,
/// to halves rounds to nearest even once, integers wrap).
fn store(kb: &mut Kb, v: Value, unsigned: bool, d: DType, p: Ptr) {
    let ty = kb.b.func.dfg.value_type(v);
    let x = match d {
        DType::F16 | DType::BF16 => {
            // From f64 (or an integer, through f64), round to odd first so the final rounding
            // to the half is the only one that counts.
            let f = if ty == F32 {
                v
            } else {
                let w = convert(kb, v, unsigned, Dom::F64);
                math::f64_to_f32_round_odd(&mut kb.b, w)
            };
            let bits = if d == DType::F16 {
                math::f32_to_f16_bits(&mut kb.b, f)
            } else {
                math::f32_to_bf16_bits(&mut kb.b, f)
            };
            kb.b.ins().ireduce(I16, bits)
        }
        _ => {
            // A float goes to a narrow unsigned type through i64 (truncate, then wrap: -1.0 to
            // u8 is 255, as in the reference); only u64 saturates in its own range.
            let to = match dom(d) {
                Dom::Int { .. } => Dom::Int {
                    unsigned: d == DType::U64,
                },
                other => other,
            };
            let w = convert(kb, v, unsigned, to);
            let tt = clif_type(d).unwrap();
            if kb.b.func.dfg.value_type(w) == I64 && tt != I64 {
                kb.b.ins().ireduce(tt, w)
            } else {
                w
            }
        }
    };
    kb.store(x, p, 0);
}

// ---- floats (f32, f32x4, f64) ----

/// A float constant of type `ty` (F32, F32X4 or F64).
fn fk(kb: &mut Kb, ty: Type, v: f64) -> Value {
    match ty {
        F64 => kb.b.ins().f64const(v),
        _ => kb.fconst_ty(ty, v as f32),
    }
}

/// `m ? a : c` for float operands, `m` as `fcmp` returned it.
fn fsel(kb: &mut Kb, m: Value, a: Value, c: Value) -> Value {
    let ty = kb.b.func.dfg.value_type(a);
    if ty.is_vector() {
        let m = kb.b.ins().bitcast(ty, MemFlagsData::new(), m);
        kb.b.ins().bitselect(m, a, c)
    } else {
        kb.b.ins().select(m, a, c)
    }
}

/// `x cc k` for a float constant `k`.
fn fcmpk(kb: &mut Kb, cc: FloatCC, x: Value, k: f64) -> Value {
    let ty = kb.b.func.dfg.value_type(x);
    let k = fk(kb, ty, k);
    kb.b.ins().fcmp(cc, x, k)
}

/// Applies an f32 math emitter to `x`; an f64 goes through f32 (demote, emit, promote).
fn via_f32(
    kb: &mut Kb,
    x: Value,
    f: fn(&mut cranelift_frontend::FunctionBuilder, Value, &MathOpts) -> Value,
) -> Value {
    let o = kb.math();
    if kb.b.func.dfg.value_type(x) == F64 {
        let s = kb.b.ins().fdemote(F32, x);
        let r = f(&mut kb.b, s, &o);
        kb.b.ins().fpromote(F64, r)
    } else {
        f(&mut kb.b, x, &o)
    }
}

fn fexp(kb: &mut Kb, x: Value) -> Value {
    via_f32(kb, x, math::exp_with)
}

fn flog(kb: &mut Kb, x: Value) -> Value {
    via_f32(kb, x, math::log_with)
}

fn ftanh(kb: &mut Kb, x: Value) -> Value {
    via_f32(kb, x, math::tanh_with)
}

fn ferf(kb: &mut Kb, x: Value) -> Value {
    via_f32(kb, x, math::erf_with)
}

/// `max(x, 0) + ln(1 + e^-|x|)`: never overflows.
fn softplus(kb: &mut Kb, x: Value) -> Value {
    let ty = kb.b.func.dfg.value_type(x);
    let z = fk(kb, ty, 0.0);
    let pos = kb.b.ins().fmax(x, z);
    let a = kb.b.ins().fabs(x);
    let na = kb.b.ins().fneg(a);
    let e = fexp(kb, na);
    let one = fk(kb, ty, 1.0);
    let s = kb.b.ins().fadd(one, e);
    let l = flog(kb, s);
    kb.b.ins().fadd(pos, l)
}

/// `alpha * (e^x - 1)`.
fn expm1_scaled(kb: &mut Kb, x: Value, alpha: f64) -> Value {
    let ty = kb.b.func.dfg.value_type(x);
    let e = fexp(kb, x);
    let one = fk(kb, ty, 1.0);
    let d = kb.b.ins().fsub(e, one);
    let a = fk(kb, ty, alpha);
    kb.b.ins().fmul(d, a)
}

/// `max(lo, min(hi, x))` (NaN propagates).
fn fclamp(kb: &mut Kb, x: Value, lo: f64, hi: f64) -> Value {
    let ty = kb.b.func.dfg.value_type(x);
    let h = fk(kb, ty, hi);
    let l = fk(kb, ty, lo);
    let m = kb.b.ins().fmin(x, h);
    kb.b.ins().fmax(m, l)
}

/// `|a|` with the sign of `b`. Cranelift has no x86 lowering of `fcopysign` on vectors, so those
/// go through the bits.
fn copysign(kb: &mut Kb, a: Value, b: Value) -> Value {
    let ty = kb.b.func.dfg.value_type(a);
    if !ty.is_vector() {
        return kb.b.ins().fcopysign(a, b);
    }
    let ity = ty.as_int();
    let flags = MemFlagsData::new();
    let ab = kb.b.ins().bitcast(ity, flags, a);
    let bb = kb.b.ins().bitcast(ity, flags, b);
    let min = if ity.lane_bits() == 32 {
        i64::from(i32::MIN)
    } else {
        i64::MIN
    };
    let sign = kb.b.ins().iconst(ity.lane_type(), min);
    let sign = kb.b.ins().splat(ity, sign);
    let mag = kb.b.ins().band_not(ab, sign);
    let sb = kb.b.ins().band(bb, sign);
    let r = kb.b.ins().bor(mag, sb);
    kb.b.ins().bitcast(ty, flags, r)
}

/// Largest float below which `(|x| + M) - M` rounds `|x|` to an integer: `2^23` (f32), `2^52` (f64).
fn round_magic(ty: Type) -> f64 {
    if ty.lane_type() == F64 {
        4_503_599_627_370_496.0
    } else {
        8_388_608.0
    }
}

/// Round to nearest, ties to even: `nearest` where the target has it natively, else the magic
/// constant trick (values at or above `M` are integers already; the sign, `-0` included, is kept).
fn fround(kb: &mut Kb, x: Value) -> Value {
    if kb.cfg.round {
        return kb.b.ins().nearest(x);
    }
    let ty = kb.b.func.dfg.value_type(x);
    let m = round_magic(ty);
    let a = kb.b.ins().fabs(x);
    let mk = fk(kb, ty, m);
    let s = kb.b.ins().fadd(a, mk);
    let r = kb.b.ins().fsub(s, mk);
    let r = copysign(kb, r, x);
    let small = fcmpk(kb, FloatCC::LessThan, a, m);
    fsel(kb, small, r, x)
}

/// Floor, ceil or trunc (`dir` -1, 1, 0): native with SSE4.1 / on aarch64, else from [`fround`].
fn fround_dir(kb: &mut Kb, x: Value, dir: i32) -> Value {
    if kb.cfg.round {
        return match dir {
            -1 => kb.b.ins().floor(x),
            1 => kb.b.ins().ceil(x),
            _ => kb.b.ins().trunc(x),
        };
    }
    let ty = kb.b.func.dfg.value_type(x);
    let one = fk(kb, ty, 1.0);
    match dir {
        -1 => {
            let r = fround(kb, x);
            let over = kb.b.ins().fcmp(FloatCC::GreaterThan, r, x);
            let d = kb.b.ins().fsub(r, one);
            fsel(kb, over, d, r)
        }
        1 => {
            let r = fround(kb, x);
            let under = kb.b.ins().fcmp(FloatCC::LessThan, r, x);
            let u = kb.b.ins().fadd(r, one);
            fsel(kb, under, u, r)
        }
        _ => {
            // Truncation is the floor of |x| with x's sign.
            let a = kb.b.ins().fabs(x);
            let f = fround_dir(kb, a, -1);
            copysign(kb, f, x)
        }
    }
}

/// `op(x)` for a float op on F32, F32X4 or F64 values (not for the predicates).
pub(crate) fn unary_float(kb: &mut Kb, op: UnaryOp, x: Value) -> Value {
    let ty = kb.b.func.dfg.value_type(x);
    match op {
        UnaryOp::Relu => {
            let z = fk(kb, ty, 0.0);
            kb.b.ins().fmax(x, z)
        }
        UnaryOp::LeakyRelu { alpha } => {
            // max(x, 0) + alpha * min(x, 0): branch-free and exact (one of the terms is zero).
            let z = fk(kb, ty, 0.0);
            let pos = kb.b.ins().fmax(x, z);
            let neg = kb.b.ins().fmin(x, z);
            let a = fk(kb, ty, alpha as f64);
            kb.mul_add(neg, a, pos)
        }
        UnaryOp::Clip { min, max } => {
            let mut y = x;
            if min > f32::NEG_INFINITY {
                let m = fk(kb, ty, min as f64);
                y = kb.b.ins().fmax(y, m);
            }
            if max < f32::INFINITY {
                let m = fk(kb, ty, max as f64);
                y = kb.b.ins().fmin(y, m);
            }
            y
        }
        UnaryOp::Sigmoid => via_f32(kb, x, math::sigmoid_with),
        UnaryOp::Tanh => ftanh(kb, x),
        UnaryOp::Exp => fexp(kb, x),
        UnaryOp::Log => flog(kb, x),
        UnaryOp::Erf => ferf(kb, x),
        UnaryOp::Sin => via_f32(kb, x, math::sin_with),
        UnaryOp::Cos => via_f32(kb, x, math::cos_with),
        UnaryOp::Tan => via_f32(kb, x, math::tan_with),
        UnaryOp::Sqrt => kb.b.ins().sqrt(x),
        UnaryOp::Neg => kb.b.ins().fneg(x),
        UnaryOp::Abs => kb.b.ins().fabs(x),
        UnaryOp::Reciprocal => {
            let one = fk(kb, ty, 1.0);
            kb.b.ins().fdiv(one, x)
        }
        UnaryOp::Floor => fround_dir(kb, x, -1),
        UnaryOp::Ceil => fround_dir(kb, x, 1),
        UnaryOp::Round => fround(kb, x),
        UnaryOp::Sign => {
            // Zeros and NaN come through as themselves.
            let one = fk(kb, ty, 1.0);
            let mone = fk(kb, ty, -1.0);
            let neg = fcmpk(kb, FloatCC::LessThan, x, 0.0);
            let r = fsel(kb, neg, mone, x);
            let pos = fcmpk(kb, FloatCC::GreaterThan, x, 0.0);
            fsel(kb, pos, one, r)
        }
        UnaryOp::Elu { alpha } => {
            let n = expm1_scaled(kb, x, alpha as f64);
            let neg = fcmpk(kb, FloatCC::LessThan, x, 0.0);
            fsel(kb, neg, n, x)
        }
        UnaryOp::Selu { alpha, gamma } => {
            let n = expm1_scaled(kb, x, alpha as f64);
            let le = fcmpk(kb, FloatCC::LessThanOrEqual, x, 0.0);
            let y = fsel(kb, le, n, x);
            let g = fk(kb, ty, gamma as f64);
            kb.b.ins().fmul(y, g)
        }
        UnaryOp::Celu { alpha } => {
            let a = alpha as f64;
            let inv = fk(kb, ty, 1.0 / a);
            let xs = kb.b.ins().fmul(x, inv);
            let n = expm1_scaled(kb, xs, a);
            let z = fk(kb, ty, 0.0);
            let n = kb.b.ins().fmin(n, z);
            let p = kb.b.ins().fmax(x, z);
            kb.b.ins().fadd(p, n)
        }
        UnaryOp::HardSigmoid { alpha, beta } => {
            let a = fk(kb, ty, alpha as f64);
            let b = fk(kb, ty, beta as f64);
            let t = kb.mul_add(x, a, b);
            fclamp(kb, t, 0.0, 1.0)
        }
        UnaryOp::HardSwish => {
            let a = fk(kb, ty, 1.0 / 6.0);
            let b = fk(kb, ty, 0.5);
            let t = kb.mul_add(x, a, b);
            let t = fclamp(kb, t, 0.0, 1.0);
            kb.b.ins().fmul(x, t)
        }
        UnaryOp::Softplus => softplus(kb, x),
        UnaryOp::Softsign => {
            let a = kb.b.ins().fabs(x);
            let one = fk(kb, ty, 1.0);
            let d = kb.b.ins().fadd(a, one);
            kb.b.ins().fdiv(x, d)
        }
        UnaryOp::ThresholdedRelu { alpha } => {
            // NaN fails the comparison and gives 0, as numpy's `where(x > alpha, x, 0)` does.
            let gt = fcmpk(kb, FloatCC::GreaterThan, x, alpha as f64);
            let z = fk(kb, ty, 0.0);
            fsel(kb, gt, x, z)
        }
        UnaryOp::Gelu { tanh } => {
            let inner = if tanh {
                let x2 = kb.b.ins().fmul(x, x);
                let x3 = kb.b.ins().fmul(x2, x);
                let c = fk(kb, ty, 0.044715);
                let t = kb.mul_add(x3, c, x);
                let k = fk(kb, ty, (2.0 / std::f64::consts::PI).sqrt());
                let t = kb.b.ins().fmul(t, k);
                ftanh(kb, t)
            } else {
                let k = fk(kb, ty, std::f64::consts::FRAC_1_SQRT_2);
                let t = kb.b.ins().fmul(x, k);
                ferf(kb, t)
            };
            let one = fk(kb, ty, 1.0);
            let s = kb.b.ins().fadd(inner, one);
            let h = fk(kb, ty, 0.5);
            let hx = kb.b.ins().fmul(x, h);
            kb.b.ins().fmul(hx, s)
        }
        UnaryOp::Silu => via_f32(kb, x, math::silu_with),
        UnaryOp::Mish => {
            let sp = softplus(kb, x);
            let t = ftanh(kb, sp);
            kb.b.ins().fmul(x, t)
        }
        UnaryOp::Not | UnaryOp::IsNaN | UnaryOp::IsInf { .. } => {
            unreachable!("{} is not a float-valued op", op.name())
        }
    }
}

/// The float predicates (`is_nan`, `is_inf`) on a scalar: a bool byte.
fn float_predicate(kb: &mut Kb, op: UnaryOp, x: Value) -> Value {
    match op {
        UnaryOp::IsNaN => kb.b.ins().fcmp(FloatCC::Unordered, x, x),
        UnaryOp::IsInf { negative, positive } => {
            let p = fcmpk(kb, FloatCC::Equal, x, f64::INFINITY);
            let n = fcmpk(kb, FloatCC::Equal, x, f64::NEG_INFINITY);
            match (negative, positive) {
                (true, true) => kb.b.ins().bor(p, n),
                (false, true) => p,
                (true, false) => n,
                (false, false) => kb.b.ins().iconst(I8, 0),
            }
        }
        _ => unreachable!("{} is not a predicate", op.name()),
    }
}

/// C's `fmod` on f64 scalars: `a - trunc(a / b) * b`, corrected when the quotient rounded up to
/// the next integer, with the sign of `a`. Exact whenever `trunc(a / b) * b` is (always for
/// f32 operands with `|a / b| < 2^29`); `fmod(x, ±inf) = x` for finite `x`.
fn fmod64(kb: &mut Kb, a: Value, b: Value) -> Value {
    let q = kb.b.ins().fdiv(a, b);
    let q = fround_dir(kb, q, 0);
    let qb = kb.b.ins().fmul(q, b);
    let r = kb.b.ins().fsub(a, qb);
    // A quotient rounded up past the true one leaves r with the opposite sign of a.
    let z = fk(kb, F64, 0.0);
    let rneg = kb.b.ins().fcmp(FloatCC::LessThan, r, z);
    let aneg = kb.b.ins().fcmp(FloatCC::LessThan, a, z);
    let rnz = kb.b.ins().fcmp(FloatCC::OrderedNotEqual, r, z);
    let differ = kb.b.ins().bxor(rneg, aneg);
    let fix = kb.b.ins().band(differ, rnz);
    let ab = kb.b.ins().fabs(b);
    let step = kb.b.ins().fcopysign(ab, a);
    let rf = kb.b.ins().fadd(r, step);
    let r = kb.b.ins().select(fix, rf, r);
    let r = kb.b.ins().fcopysign(r, a);
    // a / ±inf is 0 and 0 * inf is NaN: a finite a is its own remainder.
    let binf = fcmpk(kb, FloatCC::Equal, ab, f64::INFINITY);
    let aa = kb.b.ins().fabs(a);
    let afin = fcmpk(kb, FloatCC::LessThan, aa, f64::INFINITY);
    let keep = kb.b.ins().band(binf, afin);
    kb.b.ins().select(keep, a, r)
}

/// Python's `%` (sign of the divisor) on f64 scalars, from [`fmod64`].
fn pymod64(kb: &mut Kb, a: Value, b: Value) -> Value {
    let r = fmod64(kb, a, b);
    let z = fk(kb, F64, 0.0);
    let rneg = kb.b.ins().fcmp(FloatCC::LessThan, r, z);
    let bneg = kb.b.ins().fcmp(FloatCC::LessThan, b, z);
    let rnz = kb.b.ins().fcmp(FloatCC::OrderedNotEqual, r, z);
    let differ = kb.b.ins().bxor(rneg, bneg);
    let fix = kb.b.ins().band(differ, rnz);
    let rb = kb.b.ins().fadd(r, b);
    let r2 = kb.b.ins().select(fix, rb, r);
    // A zero remainder takes the divisor's sign, as numpy's does.
    let is0 = kb.b.ins().fcmp(FloatCC::Equal, r, z);
    let signed0 = kb.b.ins().fcopysign(z, b);
    kb.b.ins().select(is0, signed0, r2)
}

/// Whether [`binary_float`] works on f32x4 (the remainders are scalar-only).
fn vectorizes(op: BinaryOp) -> bool {
    !matches!(op, BinaryOp::Mod | BinaryOp::Fmod) && !op.is_comparison() && !op.is_logical()
}

/// `op(a, b)` for a float-valued op on F32, F32X4 or F64 values (remainders: scalars only).
pub(crate) fn binary_float(kb: &mut Kb, op: BinaryOp, a: Value, b: Value) -> Value {
    let ty = kb.b.func.dfg.value_type(a);
    match op {
        BinaryOp::Add => kb.b.ins().fadd(a, b),
        BinaryOp::Sub => kb.b.ins().fsub(a, b),
        BinaryOp::Mul => kb.b.ins().fmul(a, b),
        BinaryOp::Div => kb.b.ins().fdiv(a, b),
        BinaryOp::Max => kb.b.ins().fmax(a, b),
        BinaryOp::Min => kb.b.ins().fmin(a, b),
        BinaryOp::Pow => {
            let o = kb.math();
            if ty == F64 {
                let (sa, sb) = (kb.b.ins().fdemote(F32, a), kb.b.ins().fdemote(F32, b));
                let r = math::pow_with(&mut kb.b, sa, sb, &o);
                kb.b.ins().fpromote(F64, r)
            } else {
                math::pow_with(&mut kb.b, a, b, &o)
            }
        }
        BinaryOp::PRelu => {
            let neg = fcmpk(kb, FloatCC::LessThan, a, 0.0);
            let p = kb.b.ins().fmul(a, b);
            fsel(kb, neg, p, a)
        }
        BinaryOp::Mod | BinaryOp::Fmod => {
            // f32 operands are exact in f64, where the remainder is computed exactly.
            let wide = ty != F64;
            let (a, b) = if wide {
                (kb.b.ins().fpromote(F64, a), kb.b.ins().fpromote(F64, b))
            } else {
                (a, b)
            };
            let r = if op == BinaryOp::Mod {
                pymod64(kb, a, b)
            } else {
                fmod64(kb, a, b)
            };
            if wide {
                kb.b.ins().fdemote(F32, r)
            } else {
                r
            }
        }
        _ => unreachable!("{} is not a float-valued op", op.name()),
    }
}

/// `f32`/`f64` comparison to a bool byte (ordered: NaN compares false, and unequal).
fn float_compare(kb: &mut Kb, op: BinaryOp, a: Value, b: Value) -> Value {
    let cc = match op {
        BinaryOp::Equal => FloatCC::Equal,
        BinaryOp::Less => FloatCC::LessThan,
        BinaryOp::LessOrEqual => FloatCC::LessThanOrEqual,
        BinaryOp::Greater => FloatCC::GreaterThan,
        BinaryOp::GreaterOrEqual => FloatCC::GreaterThanOrEqual,
        _ => unreachable!("{} is not a comparison", op.name()),
    };
    kb.b.ins().fcmp(cc, a, b)
}

// ---- integers (i64) and bools (i8) ----

/// The integer clip bounds the reference uses: bounds round inward (`ceil(min)`, `floor(max)`),
/// saturating to i64 (so infinite bounds disappear).
fn int_bounds(min: f32, max: f32) -> (Option<i64>, Option<i64>) {
    let lo = (min > f32::NEG_INFINITY).then(|| (min as f64).ceil() as i64);
    let hi = (max < f32::INFINITY).then(|| (max as f64).floor() as i64);
    (lo, hi)
}

/// `op(x)` on an i64 holding an integer element (relu, neg, abs, clip, sign).
fn unary_int(kb: &mut Kb, op: UnaryOp, x: Value, unsigned: bool) -> Value {
    let zero = kb.iconst(0);
    match op {
        UnaryOp::Relu if unsigned => x,
        UnaryOp::Relu => kb.b.ins().smax(x, zero),
        UnaryOp::Neg => kb.b.ins().ineg(x),
        UnaryOp::Abs if unsigned => x,
        UnaryOp::Abs => kb.b.ins().iabs(x),
        UnaryOp::Sign => {
            let one = kb.iconst(1);
            if unsigned {
                kb.b.ins().umin(x, one)
            } else {
                let m1 = kb.iconst(-1);
                let t = kb.b.ins().smin(x, one);
                kb.b.ins().smax(t, m1)
            }
        }
        UnaryOp::Clip { min, max } => {
            let (lo, hi) = int_bounds(min, max);
            let mut r = x;
            if unsigned {
                // As the reference: bounds below zero act as zero (nothing unsigned is below).
                if let Some(lo) = lo.filter(|&lo| lo > 0) {
                    let c = kb.iconst(lo);
                    r = kb.b.ins().umax(r, c);
                }
                if let Some(hi) = hi {
                    let c = kb.iconst(hi.max(0));
                    r = kb.b.ins().umin(r, c);
                }
                return r;
            }
            if let Some(lo) = lo {
                let c = kb.iconst(lo);
                r = kb.b.ins().smax(r, c);
            }
            if let Some(hi) = hi {
                let c = kb.iconst(hi);
                r = kb.b.ins().smin(r, c);
            }
            r
        }
        _ => unreachable!("{} has no integer form", op.name()),
    }
}

/// `a^b` on i64 by squaring (a run-time loop over the exponent's bits), wrapping. A negative
/// signed exponent gives `1 / a^-b` truncated: `1` for `a = 1`, `±1` for `a = -1`, else `0`.
fn int_pow(kb: &mut Kb, a: Value, b: Value, unsigned: bool) -> Value {
    let zero = kb.iconst(0);
    let one = kb.iconst(1);
    let e0 = if unsigned {
        b
    } else {
        let neg = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, b, 0);
        kb.b.ins().select(neg, zero, b)
    };
    let head = kb.b.create_block();
    let body = kb.b.create_block();
    let exit = kb.b.create_block();
    for _ in 0..3 {
        kb.b.append_block_param(head, I64);
    }
    kb.b.append_block_param(exit, I64);
    kb.b.ins().jump(
        head,
        &[
            BlockArg::Value(one),
            BlockArg::Value(a),
            BlockArg::Value(e0),
        ],
    );
    kb.b.switch_to_block(head);
    let p = kb.b.block_params(head).to_vec();
    let (r, base, e) = (p[0], p[1], p[2]);
    kb.b.ins().brif(e, body, &[], exit, &[BlockArg::Value(r)]);
    kb.b.switch_to_block(body);
    kb.b.seal_block(body);
    let bit = kb.b.ins().band_imm_s(e, 1);
    let rb = kb.b.ins().imul(r, base);
    let r2 = kb.b.ins().select(bit, rb, r);
    let base2 = kb.b.ins().imul(base, base);
    let e2 = kb.b.ins().ushr_imm_s(e, 1);
    kb.b.ins().jump(
        head,
        &[
            BlockArg::Value(r2),
            BlockArg::Value(base2),
            BlockArg::Value(e2),
        ],
    );
    kb.b.seal_block(head);
    kb.b.switch_to_block(exit);
    kb.b.seal_block(exit);
    let r = kb.b.block_params(exit)[0];
    if unsigned {
        return r;
    }
    let neg = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, b, 0);
    let a1 = kb.b.ins().icmp_imm_s(IntCC::Equal, a, 1);
    let am1 = kb.b.ins().icmp_imm_s(IntCC::Equal, a, -1);
    let odd = kb.b.ins().band_imm_s(b, 1);
    let m1 = kb.iconst(-1);
    let pm1 = kb.b.ins().select(odd, m1, one);
    let s = kb.b.ins().select(am1, pm1, zero);
    let s = kb.b.ins().select(a1, one, s);
    kb.b.ins().select(neg, s, r)
}

/// `op(a, b)` on i64 values holding integer elements: wrapping; division and remainder by zero
/// give 0 instead of trapping, and so does `i64::MIN / -1` (as the reference defines them).
fn binary_int(kb: &mut Kb, op: BinaryOp, a: Value, b: Value, unsigned: bool) -> Value {
    let zero = kb.iconst(0);
    let one = kb.iconst(1);
    match op {
        BinaryOp::Add => kb.b.ins().iadd(a, b),
        BinaryOp::Sub => kb.b.ins().isub(a, b),
        BinaryOp::Mul => kb.b.ins().imul(a, b),
        BinaryOp::Max if unsigned => kb.b.ins().umax(a, b),
        BinaryOp::Max => kb.b.ins().smax(a, b),
        BinaryOp::Min if unsigned => kb.b.ins().umin(a, b),
        BinaryOp::Min => kb.b.ins().smin(a, b),
        BinaryOp::Pow => int_pow(kb, a, b, unsigned),
        BinaryOp::PRelu if unsigned => a,
        BinaryOp::PRelu => {
            let neg = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, a, 0);
            let p = kb.b.ins().imul(a, b);
            kb.b.ins().select(neg, p, a)
        }
        BinaryOp::Div | BinaryOp::Mod | BinaryOp::Fmod if unsigned => {
            let is0 = kb.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
            let safe = kb.b.ins().select(is0, one, b);
            let r = if op == BinaryOp::Div {
                kb.b.ins().udiv(a, safe)
            } else {
                kb.b.ins().urem(a, safe)
            };
            kb.b.ins().select(is0, zero, r)
        }
        BinaryOp::Div => {
            // Guard the two trapping cases: b == 0, and i64::MIN / -1 (which faults on x86);
            // x / -1 is -x.
            let is0 = kb.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
            let ism1 = kb.b.ins().icmp_imm_s(IntCC::Equal, b, -1);
            let bad = kb.b.ins().bor(is0, ism1);
            let safe = kb.b.ins().select(bad, one, b);
            let q = kb.b.ins().sdiv(a, safe);
            let neg = kb.b.ins().ineg(a);
            let q = kb.b.ins().select(ism1, neg, q);
            // i64::MIN / -1 overflows; the reference (checked division) gives 0 there too.
            let amin = kb.b.ins().icmp_imm_s(IntCC::Equal, a, i64::MIN);
            let ovf = kb.b.ins().band(amin, ism1);
            let zero_out = kb.b.ins().bor(is0, ovf);
            kb.b.ins().select(zero_out, zero, q)
        }
        BinaryOp::Mod | BinaryOp::Fmod => {
            // x % -1 is 0 like x % 1, which keeps i64::MIN % -1 from faulting.
            let is0 = kb.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
            let ism1 = kb.b.ins().icmp_imm_s(IntCC::Equal, b, -1);
            let bad = kb.b.ins().bor(is0, ism1);
            let safe = kb.b.ins().select(bad, one, b);
            let r = kb.b.ins().srem(a, safe);
            let r = kb.b.ins().select(is0, zero, r);
            if op == BinaryOp::Fmod {
                return r;
            }
            // Python's sign: a non-zero remainder whose sign differs from b's moves by b.
            let x = kb.b.ins().bxor(r, b);
            let differ = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, x, 0);
            let nz = kb.b.ins().icmp_imm_s(IntCC::NotEqual, r, 0);
            let fix = kb.b.ins().band(differ, nz);
            let rb = kb.b.ins().iadd(r, b);
            kb.b.ins().select(fix, rb, r)
        }
        _ if op.is_comparison() => {
            let cc = match (op, unsigned) {
                (BinaryOp::Equal, _) => IntCC::Equal,
                (BinaryOp::Less, false) => IntCC::SignedLessThan,
                (BinaryOp::Less, true) => IntCC::UnsignedLessThan,
                (BinaryOp::LessOrEqual, false) => IntCC::SignedLessThanOrEqual,
                (BinaryOp::LessOrEqual, true) => IntCC::UnsignedLessThanOrEqual,
                (BinaryOp::Greater, false) => IntCC::SignedGreaterThan,
                (BinaryOp::Greater, true) => IntCC::UnsignedGreaterThan,
                (BinaryOp::GreaterOrEqual, false) => IntCC::SignedGreaterThanOrEqual,
                _ => IntCC::UnsignedGreaterThanOrEqual,
            };
            kb.b.ins().icmp(cc, a, b)
        }
        _ => unreachable!("{} has no integer form", op.name()),
    }
}

/// `op(a, b)` on bool bytes (logic and equality).
fn binary_bool(kb: &mut Kb, op: BinaryOp, a: Value, b: Value) -> Value {
    match op {
        BinaryOp::And => kb.b.ins().band(a, b),
        BinaryOp::Or => kb.b.ins().bor(a, b),
        BinaryOp::Xor => kb.b.ins().bxor(a, b),
        BinaryOp::Equal => kb.b.ins().icmp(IntCC::Equal, a, b),
        _ => unreachable!("{} has no bool form", op.name()),
    }
}

// ---- the kernel ----

/// The domain a binary op computes in for inputs of `da` and `db` (only Pow mixes them: any
/// float makes it float, f64 if either is).
fn binary_dom(op: BinaryOp, da: DType, db: DType) -> Dom {
    if op == BinaryOp::Pow && da != db {
        match (dom(da), dom(db)) {
            (Dom::F64, _) | (_, Dom::F64) => Dom::F64,
            (Dom::F32, _) | (_, Dom::F32) => Dom::F32,
            (d, _) => d,
        }
    } else {
        dom(da)
    }
}

/// One element: loads the inputs at `ptrs`, computes, stores at `out`.
fn element(kb: &mut Kb, spec: &EwSpec, ptrs: &[Ptr], out: Ptr) {
    let od = spec.out.0;
    // Only a u64 held in an i64 reads differently when converted to a float; every narrower
    // unsigned value is zero-extended and so non-negative.
    let unsigned_of = |d: DType| d == DType::U64;
    match spec.kind {
        EwKind::Where => {
            // Raw bits: no conversion can change a value.
            let ty = super::int_type(esize(od) as usize);
            let c = kb.load(I8, ptrs[0], 0);
            let x = kb.load(ty, ptrs[1], 0);
            let y = kb.load(ty, ptrs[2], 0);
            let v = kb.b.ins().select(c, x, y);
            kb.store(v, out, 0);
        }
        EwKind::Cast => {
            let d = spec.ins[0].0;
            let v = load(kb, d, ptrs[0]);
            store(kb, v, d == DType::U64, od, out);
        }
        EwKind::Unary(op) => {
            let d = spec.ins[0].0;
            let x = load(kb, d, ptrs[0]);
            let r = match dom(d) {
                Dom::F32 | Dom::F64 if op.is_predicate() => float_predicate(kb, op, x),
                Dom::F32 | Dom::F64 => unary_float(kb, op, x),
                Dom::Int { unsigned } => unary_int(kb, op, x, unsigned),
                Dom::Bool => kb.b.ins().bxor_imm_s(x, 1),
            };
            store(kb, r, unsigned_of(od), od, out);
        }
        EwKind::Binary(op) => {
            let (da, db) = (spec.ins[0].0, spec.ins[1].0);
            let dm = binary_dom(op, da, db);
            let a = load(kb, da, ptrs[0]);
            let b = load(kb, db, ptrs[1]);
            let a = convert(kb, a, da == DType::U64, dm);
            let b = convert(kb, b, db == DType::U64, dm);
            let r = match dm {
                Dom::F32 | Dom::F64 if op.is_comparison() => float_compare(kb, op, a, b),
                Dom::F32 | Dom::F64 => binary_float(kb, op, a, b),
                Dom::Int { unsigned } => binary_int(kb, op, a, b, unsigned),
                Dom::Bool => binary_bool(kb, op, a, b),
            };
            store(kb, r, unsigned_of(od), od, out);
        }
    }
}

/// Whether the op maps f32 lanes to f32 lanes (and so may run four at a time).
fn lanewise(kind: EwKind) -> bool {
    match kind {
        EwKind::Unary(u) => !u.is_predicate(),
        EwKind::Binary(b) => vectorizes(b),
        EwKind::Cast | EwKind::Where => false,
    }
}

/// Whether every element can be computed four f32 lanes at a time with plain f32 loads and stores.
fn f32_vector(spec: &EwSpec) -> bool {
    let all_f32 = spec.out.0 == DType::F32 && spec.ins.iter().all(|(d, _)| *d == DType::F32);
    all_f32 && lanewise(spec.kind)
}

/// Whether the operands mix f32 with the half formats (or are all halves) and the op is lanewise:
/// four lanes at a time, converting halves on load and store.
fn half_vector(spec: &EwSpec) -> bool {
    let f32ish = |d: DType| matches!(d, DType::F32 | DType::F16 | DType::BF16);
    f32ish(spec.out.0)
        && spec.ins.iter().all(|(d, _)| f32ish(*d))
        && !f32_vector(spec)
        && lanewise(spec.kind)
}

fn vec_flags(p: Ptr) -> MemFlagsData {
    let f = MemFlagsData::new().with_notrap();
    if p.ro {
        f.with_readonly().with_can_move()
    } else {
        f
    }
}

/// Four elements of `d` (f32, f16 or bf16) at `p` as an f32x4.
fn load4(kb: &mut Kb, d: DType, p: Ptr) -> Value {
    match d {
        DType::F32 => kb.load(F32X4, p, 0),
        _ => {
            let h = kb.b.ins().uload16x4(vec_flags(p), p.v, 0);
            if d == DType::F16 {
                math::f16_bits_to_f32(&mut kb.b, h)
            } else {
                math::bf16_bits_to_f32(&mut kb.b, h)
            }
        }
    }
}

/// Stores an f32x4 as four elements of `d` (f32, f16 or bf16) at `p`.
fn store4(kb: &mut Kb, v: Value, d: DType, p: Ptr) {
    if d == DType::F32 {
        kb.store(v, p, 0);
        return;
    }
    let bits = if d == DType::F16 {
        math::f32_to_f16_bits(&mut kb.b, v)
    } else {
        math::f32_to_bf16_bits(&mut kb.b, v)
    };
    // Narrow the 32-bit lanes to 16 with the signed saturating narrow (SSE2 `packssdw`): biased by
    // 0x8000 into i16 range first, so no pattern saturates, and unbiased after.
    let bias = kb.b.ins().iconst(I32, 0x8000);
    let bias = kb.b.ins().splat(I32X4, bias);
    let biased = kb.b.ins().isub(bits, bias);
    let narrow = kb.b.ins().snarrow(biased, biased);
    let flip = kb.b.ins().iconst(I16, i64::from(i16::MIN));
    let flip = kb.b.ins().splat(I16X8, flip);
    let halves = kb.b.ins().bxor(narrow, flip);
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let pair = kb.b.ins().bitcast(I64X2, le, halves);
    let low = kb.b.ins().extractlane(pair, 0);
    kb.b.ins().store(vec_flags(p), low, p.v, 0);
}

/// [`map_f32`] for operands of f32, f16 and bf16: an f32x4 main loop converting on load and store,
/// and the scalar element code for the tail.
fn map_halves(kb: &mut Kb, spec: &EwSpec, n: usize, ins: &[Ptr], inner: &[i64], y: Ptr) {
    let main = n / 4 * 4;
    let od = spec.out.0;
    if main > 0 {
        // Broadcast inputs are loaded (and converted) once, outside the loop.
        let splats: Vec<Option<Value>> = ins
            .iter()
            .zip(&spec.ins)
            .zip(inner)
            .map(|((&p, (d, _)), &step)| {
                (step == 0).then(|| {
                    let x = load(kb, *d, p);
                    kb.splat(x)
                })
            })
            .collect();
        let kind = spec.kind;
        kb.for_range(0, main as i64, 4, |kb, i| {
            let vals: Vec<Value> = ins
                .iter()
                .zip(&spec.ins)
                .zip(&splats)
                .map(|((&p, (d, _)), sp)| match sp {
                    Some(v) => *v,
                    None => {
                        let a = kb.index(p, i, esize(*d));
                        load4(kb, *d, a)
                    }
                })
                .collect();
            let r = match kind {
                EwKind::Unary(u) => unary_float(kb, u, vals[0]),
                EwKind::Binary(b) => binary_float(kb, b, vals[0], vals[1]),
                _ => unreachable!("only unary and binary ops vectorize"),
            };
            let o = kb.index(y, i, esize(od));
            store4(kb, r, od, o);
        });
    }
    if n > main {
        kb.for_range(main as i64, n as i64, 1, |kb, i| {
            let ptrs: Vec<Ptr> = ins
                .iter()
                .zip(&spec.ins)
                .zip(inner)
                .map(|((&p, (d, _)), &step)| kb.index(p, i, step * esize(*d)))
                .collect();
            let yp = kb.index(y, i, esize(od));
            element(kb, spec, &ptrs, yp);
        });
    }
}

/// Loads element `i` (a run-time index) of a dense tensor of `d` into its domain; 4-bit types are
/// read from their nibble (low nibble first) and sign- or zero-extended.
fn load_at(kb: &mut Kb, d: DType, base: Ptr, i: Value) -> Value {
    if d.bits() >= 8 {
        let p = kb.index(base, i, esize(d));
        return load(kb, d, p);
    }
    let byte = kb.b.ins().ushr_imm_s(i, 1);
    let p = kb.at(base, byte);
    let v = kb.load(I8, p, 0);
    let v = kb.b.ins().uextend(I64, v);
    let odd = kb.b.ins().band_imm_s(i, 1);
    let sh = kb.b.ins().ishl_imm_s(odd, 2);
    let v = kb.b.ins().ushr(v, sh);
    if d.is_signed_int() {
        // The nibble's bit 3 is its sign.
        let v = kb.b.ins().ishl_imm_s(v, 60);
        kb.b.ins().sshr_imm_s(v, 60)
    } else {
        kb.b.ins().band_imm_s(v, 0xf)
    }
}

/// A cast from or to a packed 4-bit type (no broadcasting: the shapes are equal). A packed output
/// is written a byte (two elements) at a time; an odd count leaves the last high nibble zero.
fn packed_cast_kernel(kb: &mut Kb, from: DType, to: DType, n: usize) {
    let (x, y) = (kb.args[0], kb.args[1]);
    let src_unsigned = from == DType::U64;
    if to.bits() >= 8 {
        kb.for_n(n, |kb, i| {
            let v = load_at(kb, from, x, i);
            let yp = kb.index(y, i, esize(to));
            store(kb, v, src_unsigned, to, yp);
        });
        return;
    }
    let int = Dom::Int { unsigned: false };
    let nibble = |kb: &mut Kb, i: Value| {
        let v = load_at(kb, from, x, i);
        let v = convert(kb, v, src_unsigned, int);
        kb.b.ins().band_imm_s(v, 0xf)
    };
    kb.for_n(n / 2, |kb, j| {
        let i0 = kb.b.ins().ishl_imm_s(j, 1);
        let i1 = kb.b.ins().iadd_imm_s(i0, 1);
        let lo = nibble(kb, i0);
        let hi = nibble(kb, i1);
        let hi = kb.b.ins().ishl_imm_s(hi, 4);
        let byte = kb.b.ins().bor(lo, hi);
        let byte = kb.b.ins().ireduce(I8, byte);
        let p = kb.at(y, j);
        kb.store(byte, p, 0);
    });
    if n % 2 == 1 {
        let i = kb.iconst(n as i64 - 1);
        let lo = nibble(kb, i);
        let byte = kb.b.ins().ireduce(I8, lo);
        let p = kb.offset(y, (n / 2) as i64);
        kb.store(byte, p, 0);
    }
}

/// The elementwise kernel: operands are the inputs in order, then the output. Built as a part of a
/// split (`kb.part`, see [`ew_splits`]), it computes its share of the outermost loop, or of the
/// chunks of the single run a fully coalesced nest becomes.
pub(crate) fn ew_kernel(kb: &mut Kb, spec: &EwSpec) {
    let out = &spec.out.1;
    if out.contains(&0) {
        return;
    }
    let (from, to) = (spec.ins[0].0, spec.out.0);
    if spec.kind == EwKind::Cast && (from.bits() < 8 || to.bits() < 8) {
        packed_cast_kernel(kb, from, to, out.iter().product());
        return;
    }
    let mut strides: Vec<Vec<i64>> = spec
        .ins
        .iter()
        .map(|(_, d)| super::broadcast_strides(d, out))
        .collect();
    strides.push(dense_strides(out, 1));
    let (dims, s) = coalesce(out, &strides, 1);
    let r = dims.len();
    let sizes: Vec<i64> = spec
        .ins
        .iter()
        .map(|(d, _)| esize(*d))
        .chain([esize(spec.out.0)])
        .collect();
    let outer: Vec<Vec<i64>> = s
        .iter()
        .zip(&sizes)
        .map(|(st, &es)| st[..r - 1].iter().map(|x| x * es).collect())
        .collect();
    let inner: Vec<i64> = s.iter().map(|st| st[r - 1]).collect();
    let n = dims[r - 1];
    let bases: Vec<Ptr> = kb.args[..spec.ins.len() + 1].to_vec();
    let vector = f32_vector(spec);
    let halves = half_vector(spec);
    // One run of `n` elements along the innermost dim from the operand pointers `p`.
    let row = |kb: &mut Kb, p: &[Ptr], n: usize| {
        let (ins, y) = p.split_at(p.len() - 1);
        let y = y[0];
        if halves {
            map_halves(kb, spec, n, ins, &inner, y);
        } else if vector {
            let srcs = super::row_sources(kb, ins, &inner);
            let kind = spec.kind;
            map_f32(kb, n, &srcs, y, &|kb, v| match kind {
                EwKind::Unary(u) => unary_float(kb, u, v[0]),
                EwKind::Binary(b) => binary_float(kb, b, v[0], v[1]),
                _ => unreachable!("only unary and binary ops vectorize"),
            });
        } else {
            kb.for_n(n, |kb, i| {
                let ptrs: Vec<Ptr> = ins
                    .iter()
                    .zip(&inner)
                    .zip(&sizes)
                    .map(|((&ptr, &step), &es)| kb.index(ptr, i, step * es))
                    .collect();
                let yp = kb.index(y, i, sizes[sizes.len() - 1]);
                element(kb, spec, &ptrs, yp);
            });
        }
    };
    if kb.part.is_none() {
        loop_nest(kb, &dims[..r - 1], &outer, &bases, &mut |kb, p| {
            row(kb, p, n)
        });
        return;
    }
    if r >= 2 {
        // Split the outermost loop: its iterations write disjoint output rows.
        let (lo, hi) = kb.share(dims[0]);
        let rest: Vec<Vec<i64>> = outer.iter().map(|st| st[1..].to_vec()).collect();
        kb.for_dyn(lo, hi, |kb, i| {
            let ptrs: Vec<Ptr> = bases
                .iter()
                .zip(&outer)
                .map(|(&p, st)| kb.index(p, i, st[0]))
                .collect();
            loop_nest(kb, &dims[1..r - 1], &rest, &ptrs, &mut |kb, p| {
                row(kb, p, n)
            });
        });
        return;
    }
    // One long run: split it into chunks of EW_CHUNK elements (a multiple of four, so only the
    // last, shorter chunk has a scalar tail). The part that owns the last chunk runs it.
    let steps: Vec<i64> = inner.iter().zip(&sizes).map(|(&st, &es)| st * es).collect();
    let (full, rem) = (n / EW_CHUNK, n % EW_CHUNK);
    let (lo, hi) = kb.share(full + (rem > 0) as usize);
    let q = kb.iconst(full as i64);
    let full_hi = kb.b.ins().umin(hi, q);
    kb.for_dyn(lo, full_hi, |kb, u| {
        let ptrs: Vec<Ptr> = bases
            .iter()
            .zip(&steps)
            .map(|(&p, &st)| kb.index(p, u, st * EW_CHUNK as i64))
            .collect();
        row(kb, &ptrs, EW_CHUNK);
    });
    if rem > 0 {
        let last = kb.b.ins().icmp(IntCC::UnsignedGreaterThan, hi, q);
        kb.if_then(last, |kb| {
            let ptrs: Vec<Ptr> = bases
                .iter()
                .zip(&steps)
                .map(|(&p, &st)| kb.offset(p, st * (full * EW_CHUNK) as i64))
                .collect();
            row(kb, &ptrs, rem);
        });
    }
}

/// Elements per work unit when [`ew_kernel`] splits one long run.
const EW_CHUNK: usize = 1024;

/// Outputs of at least this many elements are worth splitting across threads: a part then has
/// tens of microseconds of work, well above the cost of handing it to another thread.
const EW_SPLIT_MIN: usize = 1 << 16;

/// The same for the unary ops of the inline math emitters ([`transcendental`]), whose elements
/// cost about ten times as much (SiLU: some fifty instructions per vector of four).
const EW_SPLIT_MIN_TRANSCENDENTAL: usize = EW_SPLIT_MIN / 8;

/// Unary ops computed with an exponential, logarithm or trigonometric polynomial of the inline
/// math emitters: tens of instructions per vector, where the others take one or a few.
fn transcendental(op: UnaryOp) -> bool {
    matches!(
        op,
        UnaryOp::Sigmoid
            | UnaryOp::Tanh
            | UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Erf
            | UnaryOp::Sin
            | UnaryOp::Cos
            | UnaryOp::Tan
            | UnaryOp::Elu { .. }
            | UnaryOp::Selu { .. }
            | UnaryOp::Celu { .. }
            | UnaryOp::Softplus
            | UnaryOp::Gelu { .. }
            | UnaryOp::Mish
            | UnaryOp::Silu
    )
}

/// Whether [`ew_kernel`] splits this op into parts (`Kb::share`): large outputs (a lower bound for
/// the [`transcendental`] ops), except the packed 4-bit casts (two elements per byte, a kernel of
/// their own).
pub(crate) fn ew_splits(spec: &EwSpec) -> bool {
    let (from, to) = (spec.ins[0].0, spec.out.0);
    let packed = spec.kind == EwKind::Cast && (from.bits() < 8 || to.bits() < 8);
    let min = match spec.kind {
        EwKind::Unary(op) if transcendental(op) => EW_SPLIT_MIN_TRANSCENDENTAL,
        _ => EW_SPLIT_MIN,
    };
    spec.out.1.iter().product::<usize>() >= min && !packed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unary(op: UnaryOp, n: usize) -> EwSpec {
        EwSpec {
            kind: EwKind::Unary(op),
            ins: vec![(DType::F32, vec![1, n])],
            out: (DType::F32, vec![1, n]),
        }
    }

    #[test]
    fn transcendental_ops_split_from_fewer_elements() {
        // 8192 elements: an eighth of the bound of the cheap ops.
        assert!(ew_splits(&unary(UnaryOp::Silu, 8192)));
        assert!(ew_splits(&unary(UnaryOp::Gelu { tanh: false }, 8192)));
        assert!(!ew_splits(&unary(UnaryOp::Silu, 8191)));
        assert!(!ew_splits(&unary(UnaryOp::Relu, 8192)));
        assert!(!ew_splits(&unary(UnaryOp::Relu, 65535)));
        assert!(ew_splits(&unary(UnaryOp::Relu, 65536)));
    }
}
