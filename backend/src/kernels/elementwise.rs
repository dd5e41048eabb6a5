//! Unary and binary elementwise ops, and casts.

use super::{coalesce, dense_strides, loop_nest, map_f32, Src};
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F64, I64, I8};
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use kiln_ir::ops::{BinaryOp, UnaryOp};
use kiln_ir::DType;
use kiln_runtime::math;

/// The Cranelift scalar type that holds one element of `d` in memory (bool is a byte).
pub(crate) fn clif_type(d: DType) -> Option<Type> {
    use cranelift_codegen::ir::types::{I16, I32};
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

/// `op(x)` for an f32 or f32x4 value.
pub(crate) fn unary_f32(kb: &mut Kb, op: UnaryOp, x: Value) -> Value {
    let ty = kb.b.func.dfg.value_type(x);
    let o = kb.math();
    match op {
        UnaryOp::Relu => {
            let z = kb.fconst_ty(ty, 0.0);
            kb.fmax(x, z)
        }
        UnaryOp::LeakyRelu { alpha } => {
            // max(x, 0) + alpha * min(x, 0): branch-free and exact (one of the terms is zero).
            let z = kb.fconst_ty(ty, 0.0);
            let pos = kb.fmax(x, z);
            let neg = kb.fmin(x, z);
            let a = kb.fconst_ty(ty, alpha);
            kb.mul_add(neg, a, pos)
        }
        UnaryOp::Clip { min, max } => {
            let mut y = x;
            if min > f32::NEG_INFINITY {
                let m = kb.fconst_ty(ty, min);
                y = kb.fmax(y, m);
            }
            if max < f32::INFINITY {
                let m = kb.fconst_ty(ty, max);
                y = kb.fmin(y, m);
            }
            y
        }
        UnaryOp::Sigmoid => math::sigmoid_with(&mut kb.b, x, &o),
        UnaryOp::Tanh => math::tanh_with(&mut kb.b, x, &o),
        UnaryOp::Exp => math::exp_with(&mut kb.b, x, &o),
        UnaryOp::Log => math::log_with(&mut kb.b, x, &o),
        UnaryOp::Erf => math::erf_with(&mut kb.b, x, &o),
        UnaryOp::Sqrt => kb.b.ins().sqrt(x),
        UnaryOp::Neg => kb.b.ins().fneg(x),
        UnaryOp::Abs => kb.b.ins().fabs(x),
        UnaryOp::Reciprocal => {
            let one = kb.fconst_ty(ty, 1.0);
            kb.b.ins().fdiv(one, x)
        }
        UnaryOp::Floor => kb.b.ins().floor(x),
        UnaryOp::Ceil => kb.b.ins().ceil(x),
    }
}

/// Elementwise unary op over `n` f32 elements.
pub(crate) fn unary_f32_kernel(kb: &mut Kb, op: UnaryOp, n: usize) {
    let (x, y) = (kb.args[0], kb.args[1]);
    map_f32(kb, n, &[Src::Ptr(x)], y, &|kb, v| unary_f32(kb, op, v[0]));
}

/// The integer clip bounds the reference uses: bounds round inward (`ceil(min)`, `floor(max)`),
/// saturating to i64 (so infinite bounds disappear).
fn int_bounds(min: f32, max: f32) -> (Option<i64>, Option<i64>) {
    let lo = (min > f32::NEG_INFINITY).then(|| (min as f64).ceil() as i64);
    let hi = (max < f32::INFINITY).then(|| (max as f64).floor() as i64);
    (lo, hi)
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

/// Stores an i64 as an element of `d` (wrapping, like a C cast).
pub(crate) fn store_int_i64(kb: &mut Kb, d: DType, v: Value, p: Ptr) {
    let ty = clif_type(d).unwrap_or(I64);
    let v = if ty == I64 {
        v
    } else {
        kb.b.ins().ireduce(ty, v)
    };
    kb.store(v, p, 0);
}

/// Elementwise unary op over `n` integer elements (relu, neg, abs, clip).
///
/// Integers are computed in i64 (sign- or zero-extended) and wrapped back to their width, exactly as
/// the reference evaluator does; as there, u64 is treated as two's-complement i64.
pub(crate) fn unary_int_kernel(kb: &mut Kb, op: UnaryOp, d: DType, n: usize) {
    let (x, y) = (kb.args[0], kb.args[1]);
    let es = d.bits() as i64 / 8;
    kb.for_n(n, |kb, i| {
        let xp = kb.index(x, i, es);
        let v = load_int_i64(kb, d, xp);
        let r = match op {
            UnaryOp::Relu => {
                let z = kb.iconst(0);
                kb.b.ins().smax(v, z)
            }
            UnaryOp::Neg => kb.b.ins().ineg(v),
            UnaryOp::Abs => kb.b.ins().iabs(v),
            UnaryOp::Clip { min, max } => {
                let (lo, hi) = int_bounds(min, max);
                let mut r = v;
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
            // Only the ops above admit integers (checked before lowering).
            _ => v,
        };
        let yp = kb.index(y, i, es);
        store_int_i64(kb, d, r, yp);
    });
}

/// `op(a, b)` for f32 or f32x4 values.
pub(crate) fn binary_f32(kb: &mut Kb, op: BinaryOp, a: Value, b: Value) -> Value {
    match op {
        BinaryOp::Add => kb.b.ins().fadd(a, b),
        BinaryOp::Sub => kb.b.ins().fsub(a, b),
        BinaryOp::Mul => kb.b.ins().fmul(a, b),
        BinaryOp::Div => kb.b.ins().fdiv(a, b),
        BinaryOp::Max => kb.fmax(a, b),
        BinaryOp::Min => kb.fmin(a, b),
        BinaryOp::Pow => {
            let o = kb.math();
            math::pow_with(&mut kb.b, a, b, &o)
        }
    }
}

/// `op(a, b)` on i64 values holding elements of `d`: wrapping, and division by zero gives 0 (as the
/// reference evaluator defines it) instead of trapping. Signed throughout, like the reference.
fn binary_int(kb: &mut Kb, op: BinaryOp, a: Value, b: Value) -> Value {
    match op {
        BinaryOp::Add => kb.b.ins().iadd(a, b),
        BinaryOp::Sub => kb.b.ins().isub(a, b),
        BinaryOp::Mul => kb.b.ins().imul(a, b),
        BinaryOp::Max => kb.b.ins().smax(a, b),
        BinaryOp::Min => kb.b.ins().smin(a, b),
        BinaryOp::Div | BinaryOp::Pow => {
            // Pow on integers is rejected before lowering. Div guards the two trapping cases:
            // b == 0, and i64::MIN / -1 (which faults on x86); x / -1 is -x.
            let zero = kb.iconst(0);
            let one = kb.iconst(1);
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
    }
}

/// Broadcasting binary op. `a_dims`/`b_dims` are the input shapes, `out` the output shape; the
/// operands are (a, b, out). The nest is coalesced, so after it the innermost dim of each input
/// steps by one element or not at all (broadcast), and that dim is vectorized for f32.
pub(crate) fn binary_kernel(
    kb: &mut Kb,
    op: BinaryOp,
    d: DType,
    a_dims: &[usize],
    b_dims: &[usize],
    out: &[usize],
) {
    let (pa, pb, py) = (kb.args[0], kb.args[1], kb.args[2]);
    if out.contains(&0) {
        return;
    }
    let bstrides = |dims: &[usize]| -> Vec<i64> {
        let off = out.len() - dims.len();
        let dense = dense_strides(dims, 1);
        (0..out.len())
            .map(|i| {
                if i < off || dims[i - off] == 1 {
                    0
                } else {
                    dense[i - off]
                }
            })
            .collect()
    };
    let sa = bstrides(a_dims);
    let sb = bstrides(b_dims);
    let sy = dense_strides(out, 1);
    let (dims, s) = coalesce(out, &[sa, sb, sy], 1);
    let r = dims.len();
    let es = d.bits() as i64 / 8;
    let outer: Vec<Vec<i64>> = s
        .iter()
        .map(|st| st[..r - 1].iter().map(|x| x * es).collect())
        .collect();
    let n = dims[r - 1];
    let (ia, ib) = (s[0][r - 1], s[1][r - 1]);
    loop_nest(kb, &dims[..r - 1], &outer, &[pa, pb, py], &mut |kb, p| {
        if d == DType::F32 {
            let src = |kb: &mut Kb, ptr: Ptr, step: i64| {
                if step == 0 {
                    Src::Splat(kb.load(F32, ptr, 0))
                } else {
                    Src::Ptr(ptr)
                }
            };
            let xa = src(kb, p[0], ia);
            let xb = src(kb, p[1], ib);
            map_f32(kb, n, &[xa, xb], p[2], &|kb, v| {
                binary_f32(kb, op, v[0], v[1])
            });
        } else {
            kb.for_n(n, |kb, i| {
                let ap = kb.index(p[0], i, ia * es);
                let bp = kb.index(p[1], i, ib * es);
                let x = load_int_i64(kb, d, ap);
                let y = load_int_i64(kb, d, bp);
                let z = binary_int(kb, op, x, y);
                let yp = kb.index(p[2], i, es);
                store_int_i64(kb, d, z, yp);
            });
        }
    });
}

/// Whether [`cast_kernel`] handles `from -> to`.
pub(crate) fn cast_supported(from: DType, to: DType) -> bool {
    let ok = |d: DType| {
        matches!(d, DType::F32 | DType::F64)
            || d.is_int() && clif_type(d).is_some()
            || d == DType::Bool
    };
    ok(from) && ok(to)
}

/// Elementwise conversion of `n` elements, with the reference evaluator's semantics: float to
/// integer truncates toward zero and saturates to i64 (NaN is 0) before wrapping to the width; to
/// bool is `x != 0`; integer to float goes through f64 (exact up to 2^53).
pub(crate) fn cast_kernel(kb: &mut Kb, from: DType, to: DType, n: usize) {
    let (x, y) = (kb.args[0], kb.args[1]);
    let (fs, ts) = (from.bits() as i64 / 8, to.bits() as i64 / 8);
    let from = if from == DType::Bool { DType::U8 } else { from };
    kb.for_n(n, |kb, i| {
        let xp = kb.index(x, i, fs);
        let yp = kb.index(y, i, ts);
        let r = if from.is_float() {
            let v = kb.load(clif_type(from).unwrap(), xp, 0);
            match to {
                DType::F32 | DType::F64 => {
                    let tt = clif_type(to).unwrap();
                    if tt == clif_type(from).unwrap() {
                        v
                    } else if tt == F32 {
                        kb.b.ins().fdemote(F32, v)
                    } else {
                        kb.b.ins().fpromote(F64, v)
                    }
                }
                DType::Bool => {
                    let z = if from == DType::F32 {
                        kb.fconst(0.0)
                    } else {
                        kb.b.ins().f64const(0.0)
                    };
                    kb.b.ins().fcmp(FloatCC::NotEqual, v, z)
                }
                _ => {
                    let w = if to == DType::U64 {
                        kb.b.ins().fcvt_to_uint_sat(I64, v)
                    } else {
                        kb.b.ins().fcvt_to_sint_sat(I64, v)
                    };
                    let tt = clif_type(to).unwrap();
                    if tt == I64 {
                        w
                    } else {
                        kb.b.ins().ireduce(tt, w)
                    }
                }
            }
        } else {
            let v = load_int_i64(kb, from, xp);
            match to {
                DType::F32 | DType::F64 => {
                    let f = if from == DType::U64 {
                        kb.b.ins().fcvt_from_uint(F64, v)
                    } else {
                        kb.b.ins().fcvt_from_sint(F64, v)
                    };
                    if to == DType::F32 {
                        kb.b.ins().fdemote(F32, f)
                    } else {
                        f
                    }
                }
                DType::Bool => kb.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0),
                _ => {
                    let tt = clif_type(to).unwrap();
                    if tt == I64 {
                        v
                    } else {
                        kb.b.ins().ireduce(tt, v)
                    }
                }
            }
        };
        debug_assert!(to != DType::Bool || kb.b.func.dfg.value_type(r) == I8);
        kb.store(r, yp, 0);
    });
}
