//! Batch normalization (as a per-channel affine map), layer and RMS normalization, LRN, and the
//! softmax family (softmax, log-softmax, hardmax).

use super::{map_f32, Src};
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, F64, I16, I32, I64};
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use kiln_ir::DType;
use kiln_runtime::math;

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
    softmax_like(kb, outer, axis, inner, false)
}

/// Log-softmax over the middle axis of `[outer, axis, inner]`: `x - max - log(sum(exp(x - max)))`.
/// Operands: x, y.
pub(crate) fn log_softmax_kernel(kb: &mut Kb, outer: usize, axis: usize, inner: usize) {
    softmax_like(kb, outer, axis, inner, true)
}

fn softmax_like(kb: &mut Kb, outer: usize, axis: usize, inner: usize, log: bool) {
    let (x, y) = (kb.args[0], kb.args[1]);
    if axis == 0 {
        return;
    }
    let plane = (axis * inner * 4) as i64;
    if inner == 1 {
        kb.for_n(outer, |kb, o| {
            let xp = kb.index(x, o, plane);
            let yp = kb.index(y, o, plane);
            softmax_row(kb, xp, yp, axis, log);
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
                softmax_cols(kb, F32X4, xc, yc, axis, inner, log);
            });
        }
        if inner > main {
            kb.for_range(main as i64, inner as i64, 1, |kb, i| {
                let xc = kb.index(xp, i, 4);
                let yc = kb.index(yp, i, 4);
                softmax_cols(kb, F32, xc, yc, axis, inner, log);
            });
        }
    });
}

/// Softmax of `n` contiguous elements: max, then `exp(x - max)` stored and summed, then scaled by
/// the reciprocal of the sum. With `log`, nothing is stored until the end: `y = x - (max + log(sum))`.
fn softmax_row(kb: &mut Kb, x: Ptr, y: Ptr, n: usize, log: bool) {
    let m = super::pool::reduce(kb, kiln_ir::ops::PoolKind::Max, x, n);
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
            let e = kb.exp_small(d);
            if !log {
                let yp = kb.at(y, off);
                kb.store(e, yp, 0);
            }
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
        let e = kb.exp_small(d);
        if !log {
            kb.store(e, y, (i * 4) as i32);
        }
        sum = kb.b.ins().fadd(sum, e);
    }
    if log {
        let l = log_f32(kb, sum);
        let shift = kb.b.ins().fadd(m, l);
        map_f32(kb, n, &[Src::Ptr(x), Src::Splat(shift)], y, &|kb, v| {
            kb.b.ins().fsub(v[0], v[1])
        });
        return;
    }
    let one = kb.fconst(1.0);
    let inv = kb.b.ins().fdiv(one, sum);
    map_f32(kb, n, &[Src::Ptr(y), Src::Splat(inv)], y, &|kb, v| {
        kb.b.ins().fmul(v[0], v[1])
    });
}

/// Softmax (or log-softmax) down a column (stride `inner` elements) of `axis` elements, for one
/// (`F32`) or four (`F32X4`) adjacent columns at once.
fn softmax_cols(kb: &mut Kb, ty: Type, x: Ptr, y: Ptr, axis: usize, inner: usize, log: bool) {
    let stride = (inner * 4) as i64;
    let ninf = kb.fconst_ty(ty, f32::NEG_INFINITY);
    let mx = kb.var(ty, ninf);
    kb.for_n(axis, |kb, a| {
        let p = kb.index(x, a, stride);
        let v = kb.load(ty, p, 0);
        let cur = kb.get(mx);
        let nx = super::depthwise::vmax(kb, cur, v);
        kb.set(mx, nx);
    });
    let m = kb.get(mx);
    let z = kb.fconst_ty(ty, 0.0);
    let sum = kb.var(ty, z);
    kb.for_n(axis, |kb, a| {
        let p = kb.index(x, a, stride);
        let v = kb.load(ty, p, 0);
        let d = kb.b.ins().fsub(v, m);
        let e = kb.exp_small(d);
        if !log {
            let q = kb.index(y, a, stride);
            kb.store(e, q, 0);
        }
        let cur = kb.get(sum);
        let nx = kb.b.ins().fadd(cur, e);
        kb.set(sum, nx);
    });
    let s = kb.get(sum);
    if log {
        let l = log_f32(kb, s);
        let shift = kb.b.ins().fadd(m, l);
        kb.for_n(axis, |kb, a| {
            let p = kb.index(x, a, stride);
            let v = kb.load(ty, p, 0);
            let r = kb.b.ins().fsub(v, shift);
            let q = kb.index(y, a, stride);
            kb.store(r, q, 0);
        });
        return;
    }
    let one = kb.fconst_ty(ty, 1.0);
    let inv = kb.b.ins().fdiv(one, s);
    kb.for_n(axis, |kb, a| {
        let q = kb.index(y, a, stride);
        let v = kb.load(ty, q, 0);
        let r = kb.b.ins().fmul(v, inv);
        kb.store(r, q, 0);
    });
}

fn log_f32(kb: &mut Kb, v: Value) -> Value {
    let o = kb.math();
    kiln_runtime::math::log_with(&mut kb.b, v, &o)
}

/// The f32 sum of `n` contiguous terms `f(x)` at `p`: f32x4 vectors in four accumulators (see
/// [`super::pool::fold_vectors`]), then across lanes, then the scalar tail.
fn row_sum(kb: &mut Kb, p: Ptr, n: usize, f: &dyn Fn(&mut Kb, Value) -> Value) -> Value {
    let main = n / 4;
    let mut sum = kb.fconst(0.0);
    if main > 0 {
        let z = kb.fsplat(0.0);
        let v = super::pool::fold_vectors(
            kb,
            F32X4,
            main,
            z,
            &|kb, i, j| {
                let a = kb.index(p, i, 16);
                let v = kb.load(F32X4, a, (j * 16) as i32);
                f(kb, v)
            },
            &|kb, a, b| kb.b.ins().fadd(a, b),
        );
        sum = kb.hsum(v);
    }
    for i in main * 4..n {
        let v = kb.load(F32, p, (i * 4) as i32);
        let t = f(kb, v);
        sum = kb.b.ins().fadd(sum, t);
    }
    sum
}

/// Which operands a layer-norm kernel has.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NormSpec {
    /// Rows.
    pub rows: usize,
    /// Elements per row.
    pub n: usize,
    /// Added to the variance.
    pub epsilon: f32,
    /// RMS normalization (no centering, no bias, no statistics outputs).
    pub rms: bool,
    /// A scale operand follows x.
    pub scale: bool,
    /// A bias operand follows.
    pub bias: bool,
}

/// Layer (or RMS) normalization of `rows` contiguous rows of `n` f32 elements, two passes for the
/// statistics (the mean, then the mean square deviation, which stays accurate when the mean is
/// large), one for the output. Operands: x, [scale], [bias], y, and for layer norm the per-row
/// mean and inverse standard deviation.
pub(crate) fn layer_norm_kernel(kb: &mut Kb, s: &NormSpec) {
    let a = kb.args.clone();
    let x = a[0];
    let mut k = 1;
    let mut take = |on: bool| {
        on.then(|| {
            k += 1;
            a[k - 1]
        })
    };
    let scale = take(s.scale);
    let bias = take(s.bias);
    let y = a[k];
    let stats = (!s.rms).then(|| (a[k + 1], a[k + 2]));
    let n = s.n;
    let row = (n * 4) as i64;
    let inv_n = 1.0 / n as f32;
    kb.for_n(s.rows, |kb, r| {
        let xr = kb.index(x, r, row);
        let yr = kb.index(y, r, row);
        let mean = if s.rms {
            kb.fconst(0.0)
        } else {
            let sum = row_sum(kb, xr, n, &|_, v| v);
            let k = kb.fconst(inv_n);
            kb.b.ins().fmul(sum, k)
        };
        let ss = row_sum(kb, xr, n, &|kb, v| {
            let ty = kb.b.func.dfg.value_type(v);
            let m = if ty == F32X4 { kb.splat(mean) } else { mean };
            let d = if s.rms { v } else { kb.b.ins().fsub(v, m) };
            kb.b.ins().fmul(d, d)
        });
        let k = kb.fconst(inv_n);
        let var = kb.b.ins().fmul(ss, k);
        let eps = kb.fconst(s.epsilon);
        let ve = kb.b.ins().fadd(var, eps);
        let sd = kb.b.ins().sqrt(ve);
        let one = kb.fconst(1.0);
        let inv = kb.b.ins().fdiv(one, sd);
        let mut srcs = vec![Src::Ptr(xr), Src::Splat(mean), Src::Splat(inv)];
        if let Some(p) = scale {
            srcs.push(Src::Ptr(p));
        }
        if let Some(p) = bias {
            srcs.push(Src::Ptr(p));
        }
        let (has_s, has_b, rms) = (scale.is_some(), bias.is_some(), s.rms);
        map_f32(kb, n, &srcs, yr, &|kb, v| {
            let d = if rms {
                v[0]
            } else {
                kb.b.ins().fsub(v[0], v[1])
            };
            let mut t = kb.b.ins().fmul(d, v[2]);
            if has_s {
                t = kb.b.ins().fmul(t, v[3]);
            }
            if has_b {
                t = kb.b.ins().fadd(t, v[3 + has_s as usize]);
            }
            t
        });
        if let Some((mp, ip)) = stats {
            let mq = kb.index(mp, r, 4);
            kb.store(mean, mq, 0);
            let iq = kb.index(ip, r, 4);
            kb.store(inv, iq, 0);
        }
    });
}

/// Local response normalization of f32 `[n, c, len]` (`len`: the spatial size), the window running
/// `reach.0` channels back and `reach.1` forward. Operands: x, y.
pub(crate) fn lrn_kernel(
    kb: &mut Kb,
    (n, c, len): (usize, usize, usize),
    reach: (usize, usize),
    op: kiln_ir::ops::Lrn,
) {
    let (x, y) = (kb.args[0], kb.args[1]);
    let plane = (len * 4) as i64;
    let k = op.alpha / op.size as f32;
    let main = len / 4 * 4;
    kb.for_n(n * c, |kb, nc| {
        // Window [lo, hi) of channels around ch, clamped to the image.
        let ch = kb.b.ins().urem_imm_s(nc, c as i64);
        let img = kb.b.ins().isub(nc, ch);
        let back = kb.iconst(reach.0 as i64);
        let lo0 = kb.b.ins().isub(ch, back);
        let zero = kb.iconst(0);
        let neg = kb.b.ins().icmp(IntCC::SignedLessThan, lo0, zero);
        let lo = kb.b.ins().select(neg, zero, lo0);
        let hi0 = kb.b.ins().iadd_imm_s(ch, reach.1 as i64 + 1);
        let cc = kb.iconst(c as i64);
        let over = kb.b.ins().icmp(IntCC::SignedGreaterThan, hi0, cc);
        let hi = kb.b.ins().select(over, cc, hi0);
        let lo = kb.b.ins().iadd(img, lo);
        let hi = kb.b.ins().iadd(img, hi);
        let xp = kb.index(x, nc, plane);
        let yp = kb.index(y, nc, plane);
        let point = |kb: &mut Kb, ty: Type, i: Value| {
            let z = kb.fconst_ty(ty, 0.0);
            let acc = kb.var(ty, z);
            kb.for_dyn(lo, hi, |kb, j| {
                let p = kb.index(x, j, plane);
                let p = kb.index(p, i, 4);
                let v = kb.load(ty, p, 0);
                let sq = kb.b.ins().fmul(v, v);
                let cur = kb.get(acc);
                let nx = kb.b.ins().fadd(cur, sq);
                kb.set(acc, nx);
            });
            let sum = kb.get(acc);
            let kk = kb.fconst_ty(ty, k);
            let bias = kb.fconst_ty(ty, op.bias);
            let den = kb.mul_add(sum, kk, bias);
            // den^beta = exp(beta * log(den)); den > 0 for a positive bias.
            let l = log_f32(kb, den);
            let beta = kb.fconst_ty(ty, op.beta);
            let bl = kb.b.ins().fmul(l, beta);
            let pw = kb.exp(bl);
            let xq = kb.index(xp, i, 4);
            let xv = kb.load(ty, xq, 0);
            let r = kb.b.ins().fdiv(xv, pw);
            let yq = kb.index(yp, i, 4);
            kb.store(r, yq, 0);
        };
        if main > 0 {
            kb.for_range(0, main as i64, 4, |kb, i| point(kb, F32X4, i));
        }
        if len > main {
            kb.for_range(main as i64, len as i64, 1, |kb, i| point(kb, F32, i));
        }
    });
}

/// Which member of the softmax family a line kernel computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SoftKind {
    /// Softmax.
    Soft,
    /// Log-softmax.
    Log,
    /// Hardmax.
    Hard,
}

/// Element access for the dtype-generic kernels: f64 computes in f64, f16 and bf16 in f32 with
/// every step rounded back to the half type, as the ONNX reference (numpy) does.
#[derive(Clone, Copy)]
pub(crate) struct Elem {
    /// The element type in memory.
    pub dtype: DType,
}

impl Elem {
    fn esize(self) -> i64 {
        (self.dtype.bits() / 8) as i64
    }

    /// The compute type.
    fn ty(self) -> Type {
        if self.dtype == DType::F64 {
            F64
        } else {
            F32
        }
    }

    fn half(self) -> bool {
        matches!(self.dtype, DType::F16 | DType::BF16)
    }

    /// A constant of the compute type.
    fn konst(self, kb: &mut Kb, v: f64) -> Value {
        if self.dtype == DType::F64 {
            kb.b.ins().f64const(v)
        } else {
            kb.fconst(v as f32)
        }
    }

    pub(crate) fn load(self, kb: &mut Kb, p: Ptr) -> Value {
        match self.dtype {
            DType::F16 | DType::BF16 => {
                let h = kb.load(I16, p, 0);
                let h = kb.b.ins().uextend(I32, h);
                if self.dtype == DType::F16 {
                    math::f16_bits_to_f32(&mut kb.b, h)
                } else {
                    math::bf16_bits_to_f32(&mut kb.b, h)
                }
            }
            _ => kb.load(self.ty(), p, 0),
        }
    }

    fn bits(self, kb: &mut Kb, v: Value) -> Value {
        let b = if self.dtype == DType::F16 {
            math::f32_to_f16_bits(&mut kb.b, v)
        } else {
            math::f32_to_bf16_bits(&mut kb.b, v)
        };
        kb.b.ins().ireduce(I16, b)
    }

    pub(crate) fn store(self, kb: &mut Kb, v: Value, p: Ptr) {
        if self.half() {
            let b = self.bits(kb, v);
            kb.store(b, p, 0);
        } else {
            kb.store(v, p, 0);
        }
    }

    /// `v` rounded to the element type (halves only).
    pub(crate) fn round(self, kb: &mut Kb, v: Value) -> Value {
        if !self.half() {
            return v;
        }
        let b = if self.dtype == DType::F16 {
            math::f32_to_f16_bits(&mut kb.b, v)
        } else {
            math::f32_to_bf16_bits(&mut kb.b, v)
        };
        if self.dtype == DType::F16 {
            math::f16_bits_to_f32(&mut kb.b, b)
        } else {
            math::bf16_bits_to_f32(&mut kb.b, b)
        }
    }

    /// An f32 math emitter applied in the compute type (f64 goes through f32).
    fn math(self, kb: &mut Kb, v: Value, f: fn(&mut Kb, Value) -> Value) -> Value {
        if self.dtype == DType::F64 {
            let s = kb.b.ins().fdemote(F32, v);
            let r = f(kb, s);
            kb.b.ins().fpromote(F64, r)
        } else {
            f(kb, v)
        }
    }
}

fn exp_f32(kb: &mut Kb, v: Value) -> Value {
    kb.exp(v)
}

/// The softmax family over the middle axis of `[outer, axis, inner]` for f64, f16 and bf16, one
/// line at a time. Softmax follows the reference's steps (`exp(x - max)`, their sum, the quotient),
/// each rounded to the element type; the sum of bf16 (an ml_dtypes type, which numpy adds one
/// element at a time) rounds after every addition. Log-softmax is `x - max - log(sum)` rounded
/// once. Operands: x, y.
pub(crate) fn softmax_generic_kernel(
    kb: &mut Kb,
    e: Elem,
    kind: SoftKind,
    (outer, axis, inner): (usize, usize, usize),
) {
    let (x, y) = (kb.args[0], kb.args[1]);
    if axis == 0 {
        return;
    }
    let es = e.esize();
    let stride = inner as i64 * es;
    let ty = e.ty();
    kb.for_n(outer * inner, |kb, pt| {
        let (o, i) = if inner == 1 {
            (pt, kb.iconst(0))
        } else {
            let o = kb.b.ins().udiv_imm_s(pt, inner as i64);
            let i = kb.b.ins().urem_imm_s(pt, inner as i64);
            (o, i)
        };
        let base = axis as i64 * stride;
        let xo = kb.index(x, o, base);
        let xp = kb.index(xo, i, es);
        let yo = kb.index(y, o, base);
        let yp = kb.index(yo, i, es);
        if kind == SoftKind::Hard {
            let first = e.load(kb, xp);
            let best = kb.var(ty, first);
            let zero = kb.iconst(0);
            let best_i = kb.var(I64, zero);
            if axis > 1 {
                kb.for_range(1, axis as i64, 1, |kb, a| {
                    let p = kb.index(xp, a, stride);
                    let v = e.load(kb, p);
                    let b = kb.get(best);
                    let gt = kb.b.ins().fcmp(FloatCC::GreaterThan, v, b);
                    let v_nan = kb.b.ins().fcmp(FloatCC::Unordered, v, v);
                    let b_ok = kb.b.ins().fcmp(FloatCC::Ordered, b, b);
                    let w = kb.b.ins().bor(gt, v_nan);
                    let better = kb.b.ins().band(w, b_ok);
                    let nb = kb.b.ins().select(better, v, b);
                    kb.set(best, nb);
                    let bi = kb.get(best_i);
                    let ni = kb.b.ins().select(better, a, bi);
                    kb.set(best_i, ni);
                });
            }
            let bi = kb.get(best_i);
            let (one, z) = (e.konst(kb, 1.0), e.konst(kb, 0.0));
            kb.for_n(axis, |kb, a| {
                let hit = kb.b.ins().icmp(IntCC::Equal, a, bi);
                let v = kb.b.ins().select(hit, one, z);
                let q = kb.index(yp, a, stride);
                e.store(kb, v, q);
            });
            return;
        }
        // Softmax rounds each step like the reference; log-softmax keeps the sum in the compute
        // type, since rounding it would cost the small results all their relative accuracy.
        let rnd = |kb: &mut Kb, v: Value| {
            if kind == SoftKind::Soft {
                e.round(kb, v)
            } else {
                v
            }
        };
        let ninf = e.konst(kb, f64::NEG_INFINITY);
        let mx = kb.var(ty, ninf);
        kb.for_n(axis, |kb, a| {
            let p = kb.index(xp, a, stride);
            let v = e.load(kb, p);
            let cur = kb.get(mx);
            let nx = kb.b.ins().fmax(cur, v);
            kb.set(mx, nx);
        });
        let m = kb.get(mx);
        let z = e.konst(kb, 0.0);
        let sum = kb.var(ty, z);
        kb.for_n(axis, |kb, a| {
            let p = kb.index(xp, a, stride);
            let v = e.load(kb, p);
            let d = kb.b.ins().fsub(v, m);
            let d = rnd(kb, d);
            let ex = e.math(kb, d, exp_f32);
            let ex = rnd(kb, ex);
            if kind == SoftKind::Soft {
                let q = kb.index(yp, a, stride);
                e.store(kb, ex, q);
            }
            let cur = kb.get(sum);
            let nx = kb.b.ins().fadd(cur, ex);
            let nx = if e.dtype == DType::BF16 {
                rnd(kb, nx)
            } else {
                nx
            };
            kb.set(sum, nx);
        });
        let s = kb.get(sum);
        let s = rnd(kb, s);
        if kind == SoftKind::Log {
            let l = e.math(kb, s, log_f32);
            let shift = kb.b.ins().fadd(m, l);
            kb.for_n(axis, |kb, a| {
                let p = kb.index(xp, a, stride);
                let v = e.load(kb, p);
                let r = kb.b.ins().fsub(v, shift);
                let q = kb.index(yp, a, stride);
                e.store(kb, r, q);
            });
            return;
        }
        kb.for_n(axis, |kb, a| {
            let q = kb.index(yp, a, stride);
            let v = e.load(kb, q);
            let r = kb.b.ins().fdiv(v, s);
            e.store(kb, r, q);
        });
    });
}

/// [`layer_norm_kernel`] for f64, f16 and bf16: scalar loops in the compute type (f64, or f32 for
/// the halves, which round once on store), same operands and passes.
pub(crate) fn layer_norm_generic_kernel(kb: &mut Kb, e: Elem, s: &NormSpec) {
    let a = kb.args.clone();
    let x = a[0];
    let mut k = 1;
    let mut take = |on: bool| {
        on.then(|| {
            k += 1;
            a[k - 1]
        })
    };
    let scale = take(s.scale);
    let bias = take(s.bias);
    let y = a[k];
    let stats = (!s.rms).then(|| (a[k + 1], a[k + 2]));
    let (n, es, ty) = (s.n, e.esize(), e.ty());
    let row = n as i64 * es;
    kb.for_n(s.rows, |kb, r| {
        let xr = kb.index(x, r, row);
        let yr = kb.index(y, r, row);
        let sum_of = |kb: &mut Kb, f: &dyn Fn(&mut Kb, Value) -> Value| {
            let z = e.konst(kb, 0.0);
            let acc = kb.var(ty, z);
            kb.for_n(n, |kb, i| {
                let p = kb.index(xr, i, es);
                let v = e.load(kb, p);
                let t = f(kb, v);
                let cur = kb.get(acc);
                let nx = kb.b.ins().fadd(cur, t);
                kb.set(acc, nx);
            });
            kb.get(acc)
        };
        let inv_n = e.konst(kb, 1.0 / n as f64);
        let mean = if s.rms {
            e.konst(kb, 0.0)
        } else {
            let sum = sum_of(kb, &|_, v| v);
            kb.b.ins().fmul(sum, inv_n)
        };
        let rms = s.rms;
        let ss = sum_of(kb, &|kb, v| {
            let d = if rms { v } else { kb.b.ins().fsub(v, mean) };
            kb.b.ins().fmul(d, d)
        });
        let var = kb.b.ins().fmul(ss, inv_n);
        let eps = e.konst(kb, s.epsilon as f64);
        let ve = kb.b.ins().fadd(var, eps);
        let sd = kb.b.ins().sqrt(ve);
        let one = e.konst(kb, 1.0);
        let inv = kb.b.ins().fdiv(one, sd);
        kb.for_n(n, |kb, i| {
            let p = kb.index(xr, i, es);
            let v = e.load(kb, p);
            let d = if rms { v } else { kb.b.ins().fsub(v, mean) };
            let mut t = kb.b.ins().fmul(d, inv);
            if let Some(sp) = scale {
                let q = kb.index(sp, i, es);
                let sv = e.load(kb, q);
                t = kb.b.ins().fmul(t, sv);
            }
            if let Some(bp) = bias {
                let q = kb.index(bp, i, es);
                let bv = e.load(kb, q);
                t = kb.b.ins().fadd(t, bv);
            }
            let q = kb.index(yr, i, es);
            e.store(kb, t, q);
        });
        if let Some((mp, ip)) = stats {
            let mq = kb.index(mp, r, es);
            e.store(kb, mean, mq);
            let iq = kb.index(ip, r, es);
            e.store(kb, inv, iq);
        }
    });
}
