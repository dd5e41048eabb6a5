//! Batch normalization (as a per-channel affine map) and softmax.

use super::{map_f32, Src};
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// `y = x * s[c] + t[c]` over `n` images of `c` channels of `len` elements.
/// Operands: x, s, t, y (scale and shift precomputed at compile time).
pub(crate) fn affine_kernel(kb: &mut Kb, n: usize, c: usize, len: usize) {
    let (x, s, t, y) = (kb.args[0], kb.args[1], kb.args[2], kb.args[3]);
    affine(kb, n, c, len, x, y, &|kb, ch| {
        let sp = kb.index(s, ch, 4);
        let tp = kb.index(t, ch, 4);
        (kb.load(F32, sp, 0), kb.load(F32, tp, 0))
    });
}

/// Batch normalization with run-time parameters. Operands: x, scale, bias, mean, var, y.
pub(crate) fn batch_norm_kernel(kb: &mut Kb, n: usize, c: usize, len: usize, epsilon: f32) {
    let a = kb.args.clone();
    let (x, scale, bias, mean, var, y) = (a[0], a[1], a[2], a[3], a[4], a[5]);
    affine(kb, n, c, len, x, y, &|kb, ch| {
        let ld = |kb: &mut Kb, p: Ptr| {
            let q = kb.index(p, ch, 4);
            kb.load(F32, q, 0)
        };
        let (g, b, m, v) = (ld(kb, scale), ld(kb, bias), ld(kb, mean), ld(kb, var));
        let eps = kb.fconst(epsilon);
        let ve = kb.b.ins().fadd(v, eps);
        let sd = kb.b.ins().sqrt(ve);
        let s = kb.b.ins().fdiv(g, sd);
        let ms = kb.b.ins().fmul(m, s);
        let t = kb.b.ins().fsub(b, ms);
        (s, t)
    });
}

fn affine(
    kb: &mut Kb,
    n: usize,
    c: usize,
    len: usize,
    x: Ptr,
    y: Ptr,
    st: &dyn Fn(&mut Kb, Value) -> (Value, Value),
) {
    kb.for_n(n * c, |kb, plane| {
        let ch = if c == 1 {
            kb.iconst(0)
        } else {
            kb.b.ins().urem_imm_s(plane, c as i64)
        };
        let (s, t) = st(kb, ch);
        let xp = kb.index(x, plane, (len * 4) as i64);
        let yp = kb.index(y, plane, (len * 4) as i64);
        map_f32(
            kb,
            len,
            &[Src::Ptr(xp), Src::Splat(s), Src::Splat(t)],
            yp,
            &|kb, v| kb.mul_add(v[0], v[1], v[2]),
        );
    });
}

/// Softmax over the middle axis of `[outer, axis, inner]`. Operands: x, y.
pub(crate) fn softmax_kernel(kb: &mut Kb, outer: usize, axis: usize, inner: usize) {
    let (x, y) = (kb.args[0], kb.args[1]);
    if axis == 0 {
        return;
    }
    let plane = (axis * inner * 4) as i64;
    if inner == 1 {
        kb.for_n(outer, |kb, o| {
            let xp = kb.index(x, o, plane);
            let yp = kb.index(y, o, plane);
            softmax_row(kb, xp, yp, axis);
        });
        return;
    }
    // The axis is strided: vectorize across `inner` instead, four columns at a time.
    let main = inner / 4 * 4;
    kb.for_n(outer, |kb, o| {
        let xp = kb.index(x, o, plane);
        let yp = kb.index(y, o, plane);
        if main > 0 {
            kb.for_range(0, main as i64, 4, |kb, i| {
                let xc = kb.index(xp, i, 4);
                let yc = kb.index(yp, i, 4);
                softmax_cols(kb, F32X4, xc, yc, axis, inner);
            });
        }
        if inner > main {
            kb.for_range(main as i64, inner as i64, 1, |kb, i| {
                let xc = kb.index(xp, i, 4);
                let yc = kb.index(yp, i, 4);
                softmax_cols(kb, F32, xc, yc, axis, inner);
            });
        }
    });
}

/// Softmax of `n` contiguous elements: max, then `exp(x - max)` stored and summed, then scaled by
/// the reciprocal of the sum.
fn softmax_row(kb: &mut Kb, x: Ptr, y: Ptr, n: usize) {
    let m = super::conv::reduce(kb, kiln_ir::ops::PoolKind::Max, x, n);
    let main = n / 4 * 4;
    let mut sum = kb.fconst(0.0);
    if main > 0 {
        let mv = kb.splat(m);
        let z = kb.fsplat(0.0);
        let acc = kb.var(F32X4, z);
        kb.for_range(0, main as i64, 4, |kb, i| {
            let off = kb.scale(i, 4);
            let xp = kb.at(x, off);
            let v = kb.load(F32X4, xp, 0);
            let d = kb.b.ins().fsub(v, mv);
            let e = kb.exp(d);
            let yp = kb.at(y, off);
            kb.store(e, yp, 0);
            let cur = kb.get(acc);
            let nx = kb.b.ins().fadd(cur, e);
            kb.set(acc, nx);
        });
        let v = kb.get(acc);
        sum = kb.hsum(v);
    }
    for i in main..n {
        let v = kb.load(F32, x, (i * 4) as i32);
        let d = kb.b.ins().fsub(v, m);
        let e = kb.exp(d);
        kb.store(e, y, (i * 4) as i32);
        sum = kb.b.ins().fadd(sum, e);
    }
    let one = kb.fconst(1.0);
    let inv = kb.b.ins().fdiv(one, sum);
    map_f32(kb, n, &[Src::Ptr(y), Src::Splat(inv)], y, &|kb, v| {
        kb.b.ins().fmul(v[0], v[1])
    });
}

/// Softmax down a column (stride `inner` elements) of `axis` elements, for one (`F32`) or four
/// (`F32X4`) adjacent columns at once.
fn softmax_cols(kb: &mut Kb, ty: Type, x: Ptr, y: Ptr, axis: usize, inner: usize) {
    let stride = (inner * 4) as i64;
    let ninf = kb.fconst_ty(ty, f32::NEG_INFINITY);
    let mx = kb.var(ty, ninf);
    kb.for_n(axis, |kb, a| {
        let p = kb.index(x, a, stride);
        let v = kb.load(ty, p, 0);
        let cur = kb.get(mx);
        let nx = kb.fmax(cur, v);
        kb.set(mx, nx);
    });
    let m = kb.get(mx);
    let z = kb.fconst_ty(ty, 0.0);
    let sum = kb.var(ty, z);
    kb.for_n(axis, |kb, a| {
        let p = kb.index(x, a, stride);
        let v = kb.load(ty, p, 0);
        let d = kb.b.ins().fsub(v, m);
        let e = kb.exp(d);
        let q = kb.index(y, a, stride);
        kb.store(e, q, 0);
        let cur = kb.get(sum);
        let nx = kb.b.ins().fadd(cur, e);
        kb.set(sum, nx);
    });
    let s = kb.get(sum);
    let one = kb.fconst_ty(ty, 1.0);
    let inv = kb.b.ins().fdiv(one, s);
    kb.for_n(axis, |kb, a| {
        let q = kb.index(y, a, stride);
        let v = kb.load(ty, q, 0);
        let r = kb.b.ins().fmul(v, inv);
        kb.store(r, q, 0);
    });
}
