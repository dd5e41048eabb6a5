//! Reductions (`reduce_*` over any set of axes) and `argmax`/`argmin`.
//!
//! A reduction is a loop nest over the kept axes (the output points) around a nest over the reduced
//! axes. Both nests are coalesced, and then one of three shapes is emitted:
//! - the innermost reduced run is contiguous: each output point folds its rows with vectors
//!   (f32x4 / f64x2) and combines the lanes at the end;
//! - the innermost kept run is contiguous in input and output (reducing outer axes, e.g. axis 0 of
//!   a matrix): vectors of adjacent output points fold together down the reduced nest;
//! - otherwise scalar.
//!
//! Every kind is `finish(fold(combine, map(x)))`: `map` turns an element into a term (|x|, x^2,
//! exp(x - max)), `combine` folds terms (+, *, max, min), `finish` turns the fold into the result
//! (/n, sqrt, log). LogSumExp first folds the maximum, then the shifted exponentials. Floats fold in
//! their own precision; f64 evaluates `exp` and `log` in f32 (kiln's math emitters are f32), which
//! keeps about 7 significant digits in those two kinds. Integers fold in their own width (wrapping,
//! as the reference does) except the mean, which sums in 64 bits and truncates.

use super::{coalesce, dense_strides, loop_nest};
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, F64, F64X2, I16, I32, I64, I8};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value};
use kiln_ir::ops::{int_range, ReduceKind};
use kiln_ir::DType;
use kiln_runtime::math;

/// What a reduction kernel computes, with every shape decided at compile time.
#[derive(Clone, Debug)]
pub(crate) struct ReduceSpec {
    /// The reduction.
    pub kind: ReduceKind,
    /// Element type of input and output.
    pub dtype: DType,
    /// Input dims.
    pub dims: Vec<usize>,
    /// Reduced axes.
    pub axes: Vec<usize>,
}

/// Element types a reduction compiles for.
pub(crate) fn reduce_supported(kind: ReduceKind, d: DType) -> bool {
    match d {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => true,
        DType::Bool => matches!(kind, ReduceKind::Max | ReduceKind::Min),
        _ => d.is_int() && d.bits() >= 8 && kind.allows_int(),
    }
}

/// The CLIF type of one element in memory (bool is a byte; callers only pass whole-byte types).
fn clif(d: DType) -> Type {
    match d {
        DType::F32 => F32,
        DType::F64 => F64,
        DType::I32 | DType::U32 => I32,
        DType::I16 | DType::U16 => I16,
        DType::I8 | DType::U8 | DType::Bool => I8,
        _ => I64,
    }
}

/// The value types one reduction works with.
#[derive(Clone, Copy)]
struct Num {
    kind: ReduceKind,
    dtype: DType,
    /// Scalar CLIF type of an element.
    s: Type,
    /// Vector type and its lanes (`lanes == 1`: no vector path).
    v: Type,
    lanes: usize,
}

impl Num {
    fn new(kind: ReduceKind, dtype: DType) -> Num {
        let (v, lanes) = match dtype {
            DType::F32 => (F32X4, 4),
            // Halves widen to f32 scalars.
            DType::F16 | DType::BF16 => (F32, 1),
            // exp and log on f64 go through f32 scalars, so the log kinds stay scalar there.
            DType::F64 if !matches!(kind, ReduceKind::LogSumExp | ReduceKind::LogSum) => (F64X2, 2),
            _ => (clif(dtype), 1),
        };
        Num {
            kind,
            dtype,
            s: if dtype.bits() == 16 && dtype.is_float() {
                F32
            } else {
                clif(dtype)
            },
            v,
            lanes,
        }
    }

    fn float(&self) -> bool {
        self.dtype.is_float()
    }

    /// Element access for halves (widened to f32, rounded back on store).
    fn half(&self) -> Option<super::norm::Elem> {
        matches!(self.dtype, DType::F16 | DType::BF16)
            .then_some(super::norm::Elem { dtype: self.dtype })
    }

    /// Loads an element (scalar or vector `ty`).
    fn load(&self, kb: &mut Kb, ty: Type, p: Ptr) -> Value {
        match self.half() {
            Some(e) => e.load(kb, p),
            None => kb.load(ty, p, 0),
        }
    }

    /// Stores a result.
    fn store(&self, kb: &mut Kb, v: Value, p: Ptr) {
        match self.half() {
            Some(e) => e.store(kb, v, p),
            None => kb.store(v, p, 0),
        }
    }

    fn esize(&self) -> i64 {
        (self.dtype.bits() / 8) as i64
    }

    fn signed(&self) -> bool {
        self.dtype.is_signed_int()
    }

    /// A constant of type `ty` (scalar or vector of this element type).
    fn konst(&self, kb: &mut Kb, ty: Type, f: f64, i: i128) -> Value {
        let s = match self.s {
            F32 => kb.b.ins().f32const(f as f32),
            F64 => kb.b.ins().f64const(f),
            t => kb.b.ins().iconst(t, i as i64),
        };
        if ty.is_vector() {
            kb.b.ins().splat(ty, s)
        } else {
            s
        }
    }

    /// The identity of `combine` for this kind.
    fn init(&self, kb: &mut Kb, ty: Type, max_pass: bool) -> Value {
        let (lo, hi) = int_range(self.dtype);
        match (self.kind, max_pass) {
            (_, true) | (ReduceKind::Max, _) => self.konst(kb, ty, f64::NEG_INFINITY, lo),
            (ReduceKind::Min, _) => self.konst(kb, ty, f64::INFINITY, hi),
            (ReduceKind::Prod, _) => self.konst(kb, ty, 1.0, 1),
            _ => self.konst(kb, ty, 0.0, 0),
        }
    }

    /// The term of one element (`shift`: the maximum, for LogSumExp's second pass).
    fn map(&self, kb: &mut Kb, x: Value, shift: Option<Value>) -> Value {
        match self.kind {
            ReduceKind::L1 if self.float() => kb.b.ins().fabs(x),
            ReduceKind::L1 if self.signed() => {
                let ty = kb.b.func.dfg.value_type(x);
                let z = kb.b.ins().iconst(ty, 0);
                let neg = kb.b.ins().icmp(IntCC::SignedLessThan, x, z);
                let n = kb.b.ins().ineg(x);
                kb.b.ins().select(neg, n, x)
            }
            ReduceKind::L2 | ReduceKind::SumSquare if self.float() => kb.b.ins().fmul(x, x),
            ReduceKind::SumSquare => kb.b.ins().imul(x, x),
            ReduceKind::LogSumExp => match shift {
                Some(m) => {
                    let d = kb.b.ins().fsub(x, m);
                    f32_math(kb, d, |kb, v| kb.exp_small(v))
                }
                None => x,
            },
            _ => x,
        }
    }

    /// Folds a term into the accumulator.
    fn combine(&self, kb: &mut Kb, acc: Value, t: Value, max_pass: bool) -> Value {
        let kind = if max_pass { ReduceKind::Max } else { self.kind };
        if self.float() {
            return match kind {
                ReduceKind::Max => super::depthwise::vmax(kb, acc, t),
                ReduceKind::Min => super::depthwise::vmin(kb, acc, t),
                ReduceKind::Prod => kb.b.ins().fmul(acc, t),
                _ => kb.b.ins().fadd(acc, t),
            };
        }
        match kind {
            ReduceKind::Max | ReduceKind::Min => {
                let cc = match (kind == ReduceKind::Max, self.signed()) {
                    (true, true) => IntCC::SignedGreaterThan,
                    (true, false) => IntCC::UnsignedGreaterThan,
                    (false, true) => IntCC::SignedLessThan,
                    (false, false) => IntCC::UnsignedLessThan,
                };
                let c = kb.b.ins().icmp(cc, t, acc);
                kb.b.ins().select(c, t, acc)
            }
            ReduceKind::Prod => kb.b.ins().imul(acc, t),
            _ => kb.b.ins().iadd(acc, t),
        }
    }

    /// Combines the lanes of a vector accumulator.
    fn lanes(&self, kb: &mut Kb, v: Value, max_pass: bool) -> Value {
        let mut r = kb.b.ins().extractlane(v, 0);
        for l in 1..self.lanes as u8 {
            let x = kb.b.ins().extractlane(v, l);
            r = self.combine(kb, r, x, max_pass);
        }
        r
    }

    /// The result from the fold of `count` terms (`shift`: LogSumExp's maximum).
    fn finish(&self, kb: &mut Kb, acc: Value, count: usize, shift: Option<Value>) -> Value {
        let ty = kb.b.func.dfg.value_type(acc);
        match self.kind {
            ReduceKind::Mean if self.float() => {
                let n = self.konst(kb, ty, count as f64, 0);
                kb.b.ins().fdiv(acc, n)
            }
            ReduceKind::L2 => kb.b.ins().sqrt(acc),
            ReduceKind::LogSum => f32_math(kb, acc, log),
            ReduceKind::LogSumExp => {
                let l = f32_math(kb, acc, log);
                match shift {
                    Some(m) => kb.b.ins().fadd(m, l),
                    None => l,
                }
            }
            _ => acc,
        }
    }
}

fn log(kb: &mut Kb, v: Value) -> Value {
    let o = kb.math();
    math::log_with(&mut kb.b, v, &o)
}

/// `f` (an f32 / f32x4 math emitter) applied to an f32, f32x4 or f64 (through f32) value.
fn f32_math(kb: &mut Kb, x: Value, f: impl Fn(&mut Kb, Value) -> Value) -> Value {
    if kb.b.func.dfg.value_type(x) == F64 {
        let s = kb.b.ins().fdemote(F32, x);
        let r = f(kb, s);
        kb.b.ins().fpromote(F64, r)
    } else {
        f(kb, x)
    }
}

/// LogSumExp's shift: the maximum, or 0 when it is -inf (an all -inf or empty group), so that
/// `exp(x - shift)` never computes `-inf - -inf`.
fn safe_shift(kb: &mut Kb, m: Value) -> Value {
    let ty = kb.b.func.dfg.value_type(m);
    let (ninf, zero) = if ty.lane_type() == F64 {
        (
            kb.b.ins().f64const(f64::NEG_INFINITY),
            kb.b.ins().f64const(0.0),
        )
    } else {
        (kb.fconst(f32::NEG_INFINITY), kb.fconst(0.0))
    };
    let (ninf, zero) = if ty.is_vector() {
        (kb.b.ins().splat(ty, ninf), kb.b.ins().splat(ty, zero))
    } else {
        (ninf, zero)
    };
    let c = kb.b.ins().fcmp(FloatCC::Equal, m, ninf);
    fselect(kb, c, zero, m)
}

/// `c ? a : b` for float scalars (`c` from a scalar `fcmp`/`icmp`) or vectors (`c` a lane mask
/// from a vector `fcmp`).
pub(crate) fn fselect(kb: &mut Kb, c: Value, a: Value, b: Value) -> Value {
    let ty = kb.b.func.dfg.value_type(a);
    if ty.is_vector() {
        // bitselect wants the mask in the operands' type; the lane counts match.
        let m = kb.b.ins().bitcast(ty, MemFlagsData::new(), c);
        kb.b.ins().bitselect(m, a, b)
    } else {
        kb.b.ins().select(c, a, b)
    }
}

/// Emits the reduction. Operands: x, y.
pub(crate) fn reduce_kernel(kb: &mut Kb, s: &ReduceSpec) {
    let (x, y) = (kb.args[0], kb.args[1]);
    let num = Num::new(s.kind, s.dtype);
    let e = num.esize();
    let in_str = dense_strides(&s.dims, e);
    let keep: Vec<usize> = (0..s.dims.len())
        .map(|i| if s.axes.contains(&i) { 1 } else { s.dims[i] })
        .collect();
    let out_str = dense_strides(&keep, e);
    let kept: Vec<usize> = (0..s.dims.len()).filter(|i| !s.axes.contains(i)).collect();
    let (od, os) = coalesce(
        &kept.iter().map(|&i| s.dims[i]).collect::<Vec<_>>(),
        &[
            kept.iter().map(|&i| in_str[i]).collect(),
            kept.iter().map(|&i| out_str[i]).collect(),
        ],
        e,
    );
    let (rd, rs) = coalesce(
        &s.axes.iter().map(|&i| s.dims[i]).collect::<Vec<_>>(),
        &[s.axes.iter().map(|&i| in_str[i]).collect()],
        e,
    );
    let count: usize = s.axes.iter().map(|&i| s.dims[i]).product();
    let rs = &rs[0];
    if count == 0 {
        // Empty groups: every output is the finished identity.
        let n_out: usize = od.iter().product();
        kb.for_n(n_out, |kb, i| {
            let a = num.init(kb, num.s, false);
            let shift = (num.kind == ReduceKind::LogSumExp).then(|| num.konst(kb, num.s, 0.0, 0));
            let r = finish_scalar(kb, &num, a, 0, shift);
            let p = kb.index(y, i, e);
            num.store(kb, r, p);
        });
        return;
    }
    let r = rd.len();
    let o = od.len();
    if num.lanes > 1 && rs[r - 1] == e && rd[r - 1] >= num.lanes {
        // Contiguous rows.
        let (row, outer_d, outer_s) = (rd[r - 1], rd[..r - 1].to_vec(), rs[..r - 1].to_vec());
        loop_nest(kb, &od, &os, &[x, y], &mut |kb, p| {
            let fold = |kb: &mut Kb, max_pass: bool, shift: Option<Value>| -> Value {
                let init = num.init(kb, num.s, max_pass);
                let acc = kb.var(num.s, init);
                loop_nest(
                    kb,
                    &outer_d,
                    std::slice::from_ref(&outer_s),
                    &[p[0]],
                    &mut |kb, q| {
                        let part = fold_row(kb, &num, q[0], row, max_pass, shift);
                        let cur = kb.get(acc);
                        let nx = num.combine(kb, cur, part, max_pass);
                        kb.set(acc, nx);
                    },
                );
                kb.get(acc)
            };
            let res = if num.kind == ReduceKind::LogSumExp {
                let m = fold(kb, true, None);
                let m = safe_shift(kb, m);
                let acc = fold(kb, false, Some(m));
                num.finish(kb, acc, count, Some(m))
            } else {
                let acc = fold(kb, false, None);
                num.finish(kb, acc, count, None)
            };
            num.store(kb, res, p[1]);
        });
        return;
    }
    let lanes = num.lanes;
    if lanes > 1 && o > 0 && os[0][o - 1] == e && os[1][o - 1] == e && od[o - 1] >= lanes {
        // Adjacent outputs read adjacent inputs: fold vectors of them down the reduced nest.
        let n = od[o - 1];
        let main = n / lanes * lanes;
        let outer: Vec<Vec<i64>> = os.iter().map(|v| v[..o - 1].to_vec()).collect();
        loop_nest(kb, &od[..o - 1], &outer, &[x, y], &mut |kb, p| {
            let (px, py) = (p[0], p[1]);
            kb.for_range(0, main as i64, lanes as i64, |kb, i| {
                let xi = kb.index(px, i, e);
                let yi = kb.index(py, i, e);
                let res = fold_nest(kb, &num, num.v, xi, &rd, rs, count);
                num.store(kb, res, yi);
            });
            if n > main {
                kb.for_range(main as i64, n as i64, 1, |kb, i| {
                    let xi = kb.index(px, i, e);
                    let yi = kb.index(py, i, e);
                    let res = fold_nest(kb, &num, num.s, xi, &rd, rs, count);
                    num.store(kb, res, yi);
                });
            }
        });
        return;
    }
    loop_nest(kb, &od, &os, &[x, y], &mut |kb, p| {
        let res = fold_nest(kb, &num, num.s, p[0], &rd, rs, count);
        num.store(kb, res, p[1]);
    });
}

/// `finish` for scalars, with the integer mean (64-bit sum, truncating division) handled here.
fn finish_scalar(kb: &mut Kb, num: &Num, acc: Value, count: usize, shift: Option<Value>) -> Value {
    if num.kind == ReduceKind::Mean && !num.float() {
        if count == 0 {
            return kb.b.ins().iconst(num.s, 0);
        }
        let n = kb.b.ins().iconst(I64, count as i64);
        let q = if num.signed() {
            kb.b.ins().sdiv(acc, n)
        } else {
            kb.b.ins().udiv(acc, n)
        };
        return if num.s == I64 {
            q
        } else {
            kb.b.ins().ireduce(num.s, q)
        };
    }
    num.finish(kb, acc, count, shift)
}

/// Loads an element as the accumulator type: integers of the mean widen to i64.
fn load_term(kb: &mut Kb, num: &Num, ty: Type, p: Ptr) -> Value {
    let v = num.load(kb, ty, p);
    if num.kind == ReduceKind::Mean && !num.float() && ty != I64 {
        if num.signed() {
            kb.b.ins().sextend(I64, v)
        } else {
            kb.b.ins().uextend(I64, v)
        }
    } else {
        v
    }
}

/// Folds the reduced nest at `p` into one result of type `ty` (a scalar, or a vector of adjacent
/// output points), finished.
fn fold_nest(
    kb: &mut Kb,
    num: &Num,
    ty: Type,
    p: Ptr,
    rd: &[usize],
    rs: &[i64],
    count: usize,
) -> Value {
    let acc_ty = if num.kind == ReduceKind::Mean && !num.float() {
        I64
    } else {
        ty
    };
    let fold = |kb: &mut Kb, max_pass: bool, shift: Option<Value>| -> Value {
        let init = if acc_ty == I64 && num.s != I64 {
            kb.b.ins().iconst(I64, 0)
        } else {
            num.init(kb, acc_ty, max_pass)
        };
        let acc = kb.var(acc_ty, init);
        loop_nest(kb, rd, &[rs.to_vec()], &[p], &mut |kb, q| {
            let v = load_term(kb, num, ty, q[0]);
            let t = if max_pass { v } else { num.map(kb, v, shift) };
            let cur = kb.get(acc);
            let mut nx = num.combine(kb, cur, t, max_pass);
            if num.dtype == DType::BF16 {
                // numpy adds bfloat16 (an ml_dtypes type) one element at a time, rounding each
                // partial result; float16 it accumulates in f32.
                if let Some(e) = num.half() {
                    nx = e.round(kb, nx);
                }
            }
            kb.set(acc, nx);
        });
        kb.get(acc)
    };
    if num.kind == ReduceKind::LogSumExp {
        let m = fold(kb, true, None);
        let m = safe_shift(kb, m);
        let acc = fold(kb, false, Some(m));
        return num.finish(kb, acc, count, Some(m));
    }
    let acc = fold(kb, false, None);
    if ty.is_vector() {
        num.finish(kb, acc, count, None)
    } else {
        finish_scalar(kb, num, acc, count, None)
    }
}

/// Folds `n` contiguous elements at `p` (vector main loop, lanes combined, scalar tail) into one
/// scalar, unfinished.
fn fold_row(
    kb: &mut Kb,
    num: &Num,
    p: Ptr,
    n: usize,
    max_pass: bool,
    shift: Option<Value>,
) -> Value {
    let (lanes, e) = (num.lanes, num.esize());
    let main = n / lanes * lanes;
    let mut r = num.init(kb, num.s, max_pass);
    if main > 0 {
        let init = num.init(kb, num.v, max_pass);
        let vshift = shift.map(|m| kb.b.ins().splat(num.v, m));
        let vbytes = lanes as i64 * e;
        // Several accumulators: one chain of vector adds would bound the loop by its latency.
        let v = super::pool::fold_vectors(
            kb,
            num.v,
            main / lanes,
            init,
            &|kb, i, j| {
                let a = kb.index(p, i, vbytes);
                let v = kb.load(num.v, a, (j as i64 * vbytes) as i32);
                if max_pass {
                    v
                } else {
                    num.map(kb, v, vshift)
                }
            },
            &|kb, a, b| num.combine(kb, a, b, max_pass),
        );
        r = num.lanes(kb, v, max_pass);
    }
    for i in main..n {
        let v = kb.load(num.s, p, (i as i64 * e) as i32);
        let t = if max_pass { v } else { num.map(kb, v, shift) };
        r = num.combine(kb, r, t, max_pass);
    }
    r
}

/// ArgMax / ArgMin over the middle axis of `[outer, len, inner]`, i64 indices. Operands: x, y.
pub(crate) fn arg_reduce_kernel(
    kb: &mut Kb,
    dtype: DType,
    max: bool,
    last: bool,
    (outer, len, inner): (usize, usize, usize),
) {
    let (x, y) = (kb.args[0], kb.args[1]);
    let ty = clif(dtype);
    let e = (dtype.bits() / 8) as i64;
    let float = dtype.is_float();
    let signed = dtype.is_signed_int();
    kb.for_n(outer * inner, |kb, pt| {
        let (o, i) = if inner == 1 {
            (pt, kb.iconst(0))
        } else {
            let o = kb.b.ins().udiv_imm_s(pt, inner as i64);
            let i = kb.b.ins().urem_imm_s(pt, inner as i64);
            (o, i)
        };
        let base = kb.index(x, o, len as i64 * inner as i64 * e);
        let base = kb.index(base, i, e);
        let first = kb.load(ty, base, 0);
        let best = kb.var(ty, first);
        let zero = kb.iconst(0);
        let best_i = kb.var(I64, zero);
        if len > 1 {
            kb.for_range(1, len as i64, 1, |kb, a| {
                let p = kb.index(base, a, inner as i64 * e);
                let v = kb.load(ty, p, 0);
                let b = kb.get(best);
                let better = if float {
                    // NaN wins over numbers, and the first NaN stays.
                    let (gt, ge) = if max {
                        (FloatCC::GreaterThan, FloatCC::GreaterThanOrEqual)
                    } else {
                        (FloatCC::LessThan, FloatCC::LessThanOrEqual)
                    };
                    let cmp = kb.b.ins().fcmp(if last { ge } else { gt }, v, b);
                    let v_nan = kb.b.ins().fcmp(FloatCC::Unordered, v, v);
                    let b_ok = kb.b.ins().fcmp(FloatCC::Ordered, b, b);
                    let w = kb.b.ins().bor(cmp, v_nan);
                    kb.b.ins().band(w, b_ok)
                } else {
                    let cc = match (max, signed, last) {
                        (true, true, false) => IntCC::SignedGreaterThan,
                        (true, true, true) => IntCC::SignedGreaterThanOrEqual,
                        (true, false, false) => IntCC::UnsignedGreaterThan,
                        (true, false, true) => IntCC::UnsignedGreaterThanOrEqual,
                        (false, true, false) => IntCC::SignedLessThan,
                        (false, true, true) => IntCC::SignedLessThanOrEqual,
                        (false, false, false) => IntCC::UnsignedLessThan,
                        (false, false, true) => IntCC::UnsignedLessThanOrEqual,
                    };
                    kb.b.ins().icmp(cc, v, b)
                };
                let nb = kb.b.ins().select(better, v, b);
                kb.set(best, nb);
                let bi = kb.get(best_i);
                let ni = kb.b.ins().select(better, a, bi);
                kb.set(best_i, ni);
            });
        }
        let r = kb.get(best_i);
        let yp = kb.index(y, pt, 8);
        kb.store(r, yp, 0);
    });
}
