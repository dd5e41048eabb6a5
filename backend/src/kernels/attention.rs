//! Scaled dot-product attention and rotary position embedding (f32).
//!
//! Attention walks one query row at a time: the scores of every key (dot product, scale, soft cap,
//! plus the bias of the mask and of the causal, window and padding rules) go to a scratch row and
//! their maximum and the bias maximum are tracked on the way; then the shifted exponentials replace
//! the scores and are summed; then `Y += p * V` accumulates the output row. The bias maximum tells a
//! row that attends to nothing (all -inf), whose probabilities are 0.

use super::reduce::fselect;
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I16, I32, I64, I8};
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use kiln_ir::DType;
use kiln_runtime::math;

/// The mask operand of an attention kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MaskSpec {
    /// Bool (true attends) rather than additive f32.
    pub boolean: bool,
    /// Byte strides along `[B, Hq, Sq, M]` (0 where the mask broadcasts).
    pub strides: [i64; 4],
    /// Keys the mask covers; later keys are masked.
    pub len: usize,
    /// Elements of the mask.
    pub count: usize,
}

/// Everything an attention kernel is specialized on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttnSpec {
    /// `[B, Hq, Hkv, Sq, Skv, D, Dv]`.
    pub sizes: [usize; 7],
    /// Multiplies `q.k`.
    pub scale: f32,
    /// Soft cap (0 = none).
    pub softcap: f32,
    /// Causal masking.
    pub causal: bool,
    /// Query block offset without `nonpad_kv_seqlen`.
    pub past_len: usize,
    /// Window bounds (-1 = none).
    pub left: i64,
    /// Window bounds (-1 = none).
    pub right: i64,
    /// Which scores the second output holds, if there is one.
    pub qk_mode: Option<u8>,
    /// The mask operand.
    pub mask: Option<MaskSpec>,
    /// A `nonpad_kv_seqlen` operand, with its element size in bytes.
    pub nonpad: Option<usize>,
    /// Q, K, V, a float mask, Y and the scores are f16 or bf16 rather than f32: they are widened
    /// to f32 in scratch, and the intermediate results the ONNX reference rounds to the input
    /// type (the scaled Q and K, the scores, the probabilities) are rounded the same way.
    pub half: Option<DType>,
    /// The softmax runs in f32 even for half inputs.
    pub wide_softmax: bool,
}

/// f32 element counts of the widened operands of a half-precision attention:
/// `[q, k, v, mask, y, qk]`.
fn half_sizes(s: &AttnSpec) -> [usize; 6] {
    let [b, hq, hkv, sq, skv, d, dv] = s.sizes;
    let mask = match s.mask {
        Some(m) if !m.boolean => m.count,
        _ => 0,
    };
    let qk = if s.qk_mode.is_some() {
        b * hq * sq * skv
    } else {
        0
    };
    [
        b * hq * sq * d,
        b * hkv * skv * d,
        b * hkv * skv * dv,
        mask,
        b * hq * sq * dv,
        qk,
    ]
}

impl AttnSpec {
    /// Scratch bytes: one row of scores, and the widened operands of a half-precision attention.
    pub fn scratch_bytes(&self) -> usize {
        let widened: usize = if self.half.is_some() {
            half_sizes(self).iter().sum()
        } else {
            0
        };
        (self.sizes[4] + widened) * 4
    }
}

/// The f32 value of a half element at `p`.
fn load_half(kb: &mut Kb, d: DType, p: Ptr) -> Value {
    let h = kb.load(I16, p, 0);
    let h = kb.b.ins().uextend(I32, h);
    if d == DType::F16 {
        math::f16_bits_to_f32(&mut kb.b, h)
    } else {
        math::bf16_bits_to_f32(&mut kb.b, h)
    }
}

/// The half bits (i16) of an f32, rounded to nearest even.
fn half_bits(kb: &mut Kb, d: DType, v: Value) -> Value {
    let bits = if d == DType::F16 {
        math::f32_to_f16_bits(&mut kb.b, v)
    } else {
        math::f32_to_bf16_bits(&mut kb.b, v)
    };
    kb.b.ins().ireduce(I16, bits)
}

/// `v` rounded to the half type and back (a no-op without one).
fn round_to(kb: &mut Kb, half: Option<DType>, v: Value) -> Value {
    let Some(d) = half else {
        return v;
    };
    let bits = if d == DType::F16 {
        math::f32_to_f16_bits(&mut kb.b, v)
    } else {
        math::f32_to_bf16_bits(&mut kb.b, v)
    };
    if d == DType::F16 {
        math::f16_bits_to_f32(&mut kb.b, bits)
    } else {
        math::bf16_bits_to_f32(&mut kb.b, bits)
    }
}

/// Widens `n` halves at `src` to f32 at `dst`, times `k` (rounded back to the half type) unless
/// `k` is 1.
fn widen(kb: &mut Kb, d: DType, src: Ptr, dst: Ptr, n: usize, k: f32) {
    kb.for_n(n, |kb, i| {
        let sp = kb.index(src, i, 2);
        let mut v = load_half(kb, d, sp);
        if k != 1.0 {
            let kk = kb.fconst(k);
            v = kb.b.ins().fmul(v, kk);
            v = round_to(kb, Some(d), v);
        }
        let dp = kb.index(dst, i, 4);
        kb.store(v, dp, 0);
    });
}

/// Narrows `n` f32 at `src` to halves at `dst`.
fn narrow(kb: &mut Kb, d: DType, src: Ptr, dst: Ptr, n: usize) {
    kb.for_n(n, |kb, i| {
        let sp = kb.index(src, i, 4);
        let v = kb.load(F32, sp, 0);
        let h = half_bits(kb, d, v);
        let dp = kb.index(dst, i, 2);
        kb.store(h, dp, 0);
    });
}

/// `sum(a[k] * b[k])` over `n` contiguous f32.
fn dot(kb: &mut Kb, a: Ptr, b: Ptr, n: usize) -> Value {
    let main = n / 4 * 4;
    let mut r = kb.fconst(0.0);
    if main > 0 {
        let z = kb.fsplat(0.0);
        let acc = kb.var(F32X4, z);
        kb.for_range(0, main as i64, 4, |kb, i| {
            let pa = kb.index(a, i, 4);
            let pb = kb.index(b, i, 4);
            let va = kb.load(F32X4, pa, 0);
            let vb = kb.load(F32X4, pb, 0);
            let cur = kb.get(acc);
            let nx = kb.mul_add(va, vb, cur);
            kb.set(acc, nx);
        });
        let v = kb.get(acc);
        r = kb.hsum(v);
    }
    for i in main..n {
        let va = kb.load(F32, a, (i * 4) as i32);
        let vb = kb.load(F32, b, (i * 4) as i32);
        r = kb.mul_add(va, vb, r);
    }
    r
}

/// `y[k] += p * v[k]` over `n` contiguous f32.
fn axpy(kb: &mut Kb, p: Value, v: Ptr, y: Ptr, n: usize) {
    let main = n / 4 * 4;
    if main > 0 {
        let ps = kb.splat(p);
        kb.for_range(0, main as i64, 4, |kb, i| {
            let pv = kb.index(v, i, 4);
            let py = kb.index(y, i, 4);
            let a = kb.load(F32X4, pv, 0);
            let c = kb.load(F32X4, py, 0);
            let r = kb.mul_add(a, ps, c);
            kb.store(r, py, 0);
        });
    }
    for i in main..n {
        let a = kb.load(F32, v, (i * 4) as i32);
        let c = kb.load(F32, y, (i * 4) as i32);
        let r = kb.mul_add(a, p, c);
        kb.store(r, y, (i * 4) as i32);
    }
}

/// Loads an integer element of `size` bytes at `p` as i64.
fn load_i64(kb: &mut Kb, p: Ptr, size: usize) -> Value {
    match size {
        8 => kb.load(I64, p, 0),
        _ => {
            let v = kb.load(I32, p, 0);
            kb.b.ins().sextend(I64, v)
        }
    }
}

/// Attention. Operands: q, k, v, [mask], [nonpad_kv_seqlen], y, [qk], scratch.
pub(crate) fn attention_kernel(kb: &mut Kb, s: &AttnSpec) {
    let a = kb.args.clone();
    let (q, k, v) = (a[0], a[1], a[2]);
    let mut at = 3;
    let mask = s.mask.map(|_| {
        at += 1;
        a[at - 1]
    });
    let nonpad = s.nonpad.map(|_| {
        at += 1;
        a[at - 1]
    });
    let y = a[at];
    let qk = s.qk_mode.map(|_| a[at + 1]);
    let scratch = a[at + 1 + s.qk_mode.is_some() as usize];
    let Some(d) = s.half else {
        let ops = Operands {
            q,
            k,
            v,
            mask,
            nonpad,
            y,
            qk,
            scratch,
        };
        return attention_core(kb, s, &ops, s.scale);
    };
    // Half precision: widen into scratch after the score row, run in f32, narrow the results.
    // The reference scales Q and K by sqrt(scale) each, rounded to the input type.
    let n = half_sizes(s);
    let mut off = s.sizes[4] as i64 * 4;
    let mut next = |kb: &mut Kb, count: usize| {
        let p = kb.offset(scratch, off);
        off += count as i64 * 4;
        p
    };
    let (qf, kf, vf) = (next(kb, n[0]), next(kb, n[1]), next(kb, n[2]));
    let mf = next(kb, n[3]);
    let (yf, qkf) = (next(kb, n[4]), next(kb, n[5]));
    let root = round_f32(d, s.scale.sqrt());
    widen(kb, d, q, qf, n[0], root);
    widen(kb, d, k, kf, n[1], root);
    widen(kb, d, v, vf, n[2], 1.0);
    let mask_f = match (mask, s.mask) {
        (Some(p), Some(m)) if !m.boolean => {
            widen(kb, d, p, mf, n[3], 1.0);
            Some(mf)
        }
        _ => mask,
    };
    let ops = Operands {
        q: qf,
        k: kf,
        v: vf,
        mask: mask_f,
        nonpad,
        y: yf,
        qk: qk.map(|_| qkf),
        scratch,
    };
    let mut wide = *s;
    if let Some(m) = wide.mask.as_mut() {
        if !m.boolean {
            // The widened mask is dense f32 with the same broadcasting.
            for st in m.strides.iter_mut() {
                *st *= 2;
            }
        }
    }
    attention_core(kb, &wide, &ops, 1.0);
    narrow(kb, d, yf, y, n[4]);
    if let Some(p) = qk {
        narrow(kb, d, qkf, p, n[5]);
    }
}

/// `x` rounded to the half type `d`, as an f32.
fn round_f32(d: DType, x: f32) -> f32 {
    let t = kiln_ir::Tensor::from_f64(d, vec![], &[x as f64]);
    t.get_f64(0) as f32
}

/// The pointers an attention core works on (all f32 but the bool mask and nonpad).
struct Operands {
    q: Ptr,
    k: Ptr,
    v: Ptr,
    mask: Option<Ptr>,
    nonpad: Option<Ptr>,
    y: Ptr,
    qk: Option<Ptr>,
    scratch: Ptr,
}

fn attention_core(kb: &mut Kb, s: &AttnSpec, o: &Operands, scale: f32) {
    let [b, hq, hkv, sq, skv, d, dv] = s.sizes;
    let (q, k, v, mask, nonpad, y, qk, scratch) =
        (o.q, o.k, o.v, o.mask, o.nonpad, o.y, o.qk, o.scratch);
    let group = hq / hkv;
    let f = 4i64;
    // The softmax of half inputs runs in the input type unless softmax_precision widens it.
    let narrow_softmax = s.half.filter(|_| !s.wide_softmax);
    let seq_sum = narrow_softmax.filter(|&d| d == DType::BF16);
    let windowed = s.causal || s.left >= 0 || s.right >= 0;
    kb.for_n(b, |kb, bi| {
        let np = nonpad.map(|p| {
            let pp = kb.index(p, bi, s.nonpad.unwrap_or(8) as i64);
            load_i64(kb, pp, s.nonpad.unwrap_or(8))
        });
        let offset = match np {
            Some(n) => kb.b.ins().iadd_imm_s(n, -(sq as i64)),
            None => kb.iconst(s.past_len as i64),
        };
        kb.for_n(hq, |kb, h| {
            let kh = if group == 1 {
                h
            } else {
                kb.b.ins().udiv_imm_s(h, group as i64)
            };
            let bh = kb.b.ins().imul_imm_s(bi, hq as i64);
            let bh = kb.b.ins().iadd(bh, h);
            let bkh = kb.b.ins().imul_imm_s(bi, hkv as i64);
            let bkh = kb.b.ins().iadd(bkh, kh);
            let qh = kb.index(q, bh, (sq * d) as i64 * f);
            let yh = kb.index(y, bh, (sq * dv) as i64 * f);
            let kp = kb.index(k, bkh, (skv * d) as i64 * f);
            let vp = kb.index(v, bkh, (skv * dv) as i64 * f);
            let qkh = qk.map(|p| kb.index(p, bh, (sq * skv) as i64 * f));
            let mh = mask.zip(s.mask).map(|(p, m)| {
                let p = kb.index(p, bi, m.strides[0]);
                kb.index(p, h, m.strides[1])
            });
            kb.for_n(sq, |kb, i| {
                let qrow = kb.index(qh, i, d as i64 * f);
                let yrow = kb.index(yh, i, dv as i64 * f);
                let qkrow = qkh.map(|p| kb.index(p, i, skv as i64 * f));
                let mrow = mh.zip(s.mask).map(|(p, m)| kb.index(p, i, m.strides[2]));
                let ninf = kb.fconst(f32::NEG_INFINITY);
                let bmax = kb.var(F32, ninf);
                let tmax = kb.var(F32, ninf);
                // Keys the mask covers, then the ones past it (always masked).
                let covered = s.mask.map_or(skv, |m| m.len.min(skv));
                for (lo, hi, in_mask) in [(0, covered, true), (covered, skv, false)] {
                    kb.for_range(lo as i64, hi as i64, 1, |kb, j| {
                        let krow = kb.index(kp, j, d as i64 * f);
                        let dp = dot(kb, qrow, krow, d);
                        let mut sv = if scale == 1.0 {
                            dp
                        } else {
                            let sc = kb.fconst(scale);
                            kb.b.ins().fmul(dp, sc)
                        };
                        sv = round_to(kb, s.half, sv);
                        if s.softcap > 0.0 {
                            let c = kb.fconst(s.softcap);
                            let u = kb.b.ins().fdiv(sv, c);
                            let u = round_to(kb, s.half, u);
                            let o = kb.math();
                            let t = math::tanh_with(&mut kb.b, u, &o);
                            let t = round_to(kb, s.half, t);
                            sv = kb.b.ins().fmul(t, c);
                            sv = round_to(kb, s.half, sv);
                        }
                        let mut bias = match (in_mask, mrow.zip(s.mask)) {
                            (false, _) => kb.fconst(f32::NEG_INFINITY),
                            (true, None) => kb.fconst(0.0),
                            (true, Some((p, m))) => {
                                let mp = kb.index(p, j, m.strides[3]);
                                if m.boolean {
                                    let bv = kb.load(I8, mp, 0);
                                    let on = kb.b.ins().icmp_imm_s(IntCC::NotEqual, bv, 0);
                                    let z = kb.fconst(0.0);
                                    kb.b.ins().select(on, z, ninf)
                                } else {
                                    kb.load(F32, mp, 0)
                                }
                            }
                        };
                        if windowed || np.is_some() {
                            let vis = visible(kb, s, i, j, offset, np);
                            bias = kb.b.ins().select(vis, bias, ninf);
                        }
                        let t = kb.b.ins().fadd(sv, bias);
                        let t = round_to(kb, s.half, t);
                        let sp = kb.index(scratch, j, f);
                        kb.store(t, sp, 0);
                        if let Some(p) = qkrow {
                            let stage = match s.qk_mode {
                                Some(2) => Some(t),
                                Some(3) => None,
                                _ => Some(sv),
                            };
                            if let Some(x) = stage {
                                let qp = kb.index(p, j, f);
                                kb.store(x, qp, 0);
                            }
                        }
                        let cur = kb.get(bmax);
                        let nb = kb.fmax(cur, bias);
                        kb.set(bmax, nb);
                        let cur = kb.get(tmax);
                        let nt = kb.fmax(cur, t);
                        kb.set(tmax, nt);
                    });
                }
                let m = kb.get(tmax);
                let is_ninf = kb.b.ins().fcmp(FloatCC::Equal, m, ninf);
                let zero = kb.fconst(0.0);
                let m = fselect(kb, is_ninf, zero, m);
                let z = kb.fconst(0.0);
                let sum = kb.var(F32, z);
                kb.for_n(skv, |kb, j| {
                    let sp = kb.index(scratch, j, f);
                    let t = kb.load(F32, sp, 0);
                    let dd = kb.b.ins().fsub(t, m);
                    let dd = round_to(kb, narrow_softmax, dd);
                    let e = kb.exp_small(dd);
                    let e = round_to(kb, narrow_softmax, e);
                    kb.store(e, sp, 0);
                    let cur = kb.get(sum);
                    let nx = kb.b.ins().fadd(cur, e);
                    // numpy sums bfloat16 (an ml_dtypes type) one element at a time in
                    // bfloat16, but float16 in f32.
                    let nx = round_to(kb, seq_sum, nx);
                    kb.set(sum, nx);
                });
                let total = kb.get(sum);
                let total = round_to(kb, narrow_softmax, total);
                let is_zero = kb.b.ins().fcmp(FloatCC::Equal, total, zero);
                let one = kb.fconst(1.0);
                let total = kb.b.ins().select(is_zero, one, total);
                let bm = kb.get(bmax);
                let masked = kb.b.ins().fcmp(FloatCC::Equal, bm, ninf);
                // Zero the output row, then accumulate p * V.
                super::map_f32(kb, dv, &[super::Src::Splat(zero)], yrow, &|_, v| v[0]);
                kb.for_n(skv, |kb, j| {
                    let sp = kb.index(scratch, j, f);
                    let e = kb.load(F32, sp, 0);
                    let p = kb.b.ins().fdiv(e, total);
                    let p = kb.b.ins().select(masked, zero, p);
                    let p = round_to(kb, s.half, p);
                    if let (Some(qp), Some(3)) = (qkrow, s.qk_mode) {
                        let qq = kb.index(qp, j, f);
                        kb.store(p, qq, 0);
                    }
                    let vrow = kb.index(vp, j, dv as i64 * f);
                    axpy(kb, p, vrow, yrow, dv);
                });
            });
        });
    });
}

/// Whether key `j` is visible from query `i` (i64 values) by the causal, window and padding rules.
fn visible(
    kb: &mut Kb,
    s: &AttnSpec,
    i: Value,
    j: Value,
    offset: Value,
    np: Option<Value>,
) -> Value {
    let io = kb.b.ins().iadd(i, offset);
    let diff = kb.b.ins().isub(io, j);
    let mut ok = kb.b.ins().iconst(I8, 1);
    if s.causal {
        let c =
            kb.b.ins()
                .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, diff, 0);
        ok = kb.b.ins().band(ok, c);
    }
    if s.left >= 0 {
        let c =
            kb.b.ins()
                .icmp_imm_s(IntCC::SignedLessThanOrEqual, diff, s.left);
        ok = kb.b.ins().band(ok, c);
    }
    if s.right >= 0 {
        let c =
            kb.b.ins()
                .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, diff, -s.right);
        ok = kb.b.ins().band(ok, c);
    }
    if let Some(n) = np {
        let c = kb.b.ins().icmp(IntCC::SignedLessThan, j, n);
        ok = kb.b.ins().band(ok, c);
    }
    ok
}

/// Everything a rotary kernel is specialized on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RotarySpec {
    /// The geometry.
    pub dims: kiln_ir::ops::RotaryDims,
    /// Pairs are adjacent features.
    pub interleaved: bool,
    /// Rows of the caches (positions) when indexed by position ids.
    pub positions: usize,
    /// Position ids operand, with its element size in bytes.
    pub pos: Option<usize>,
}

/// Rotary embedding. Operands: x, cos, sin, [position_ids], y.
pub(crate) fn rotary_kernel(kb: &mut Kb, s: &RotarySpec) {
    let g = s.dims;
    let a = kb.args.clone();
    let (x, cos, sin) = (a[0], a[1], a[2]);
    let pos = s.pos.map(|_| a[3]);
    let y = a[3 + s.pos.is_some() as usize];
    let half = g.r / 2;
    let f = 4i64;
    kb.for_n(g.b * g.s, |kb, bs| {
        let row = match (pos, s.pos) {
            (Some(p), Some(size)) => {
                // Clamp the id so a bad one cannot read outside the cache.
                let pp = kb.index(p, bs, size as i64);
                let id = load_i64(kb, pp, size);
                let zero = kb.iconst(0);
                let neg = kb.b.ins().icmp(IntCC::SignedLessThan, id, zero);
                let id = kb.b.ins().select(neg, zero, id);
                let top = kb.iconst(s.positions.saturating_sub(1) as i64);
                let over = kb.b.ins().icmp(IntCC::SignedGreaterThan, id, top);
                kb.b.ins().select(over, top, id)
            }
            _ => bs,
        };
        let cp = kb.index(cos, row, half as i64 * f);
        let sp = kb.index(sin, row, half as i64 * f);
        // (b, s) -> b and s, for the 4-D layout.
        let (bi, si) = if g.s == 1 {
            (bs, kb.iconst(0))
        } else {
            let bi = kb.b.ins().udiv_imm_s(bs, g.s as i64);
            let si = kb.b.ins().urem_imm_s(bs, g.s as i64);
            (bi, si)
        };
        kb.for_n(g.h, |kb, h| {
            let off = if g.packed {
                let r = kb.b.ins().imul_imm_s(bs, (g.h * g.d) as i64);
                let hd = kb.b.ins().imul_imm_s(h, g.d as i64);
                kb.b.ins().iadd(r, hd)
            } else {
                let bh = kb.b.ins().imul_imm_s(bi, g.h as i64);
                let bh = kb.b.ins().iadd(bh, h);
                let r = kb.b.ins().imul_imm_s(bh, (g.s * g.d) as i64);
                let sd = kb.b.ins().imul_imm_s(si, g.d as i64);
                kb.b.ins().iadd(r, sd)
            };
            let xb = kb.index(x, off, f);
            let yb = kb.index(y, off, f);
            let rot = |kb: &mut Kb, ty: Type, k: Value, (i1, i2): (i64, i64), step: i64| {
                let x1p = kb.index(xb, k, step * f);
                let x1p = kb.offset(x1p, i1 * f);
                let x2p = kb.index(xb, k, step * f);
                let x2p = kb.offset(x2p, i2 * f);
                let cq = kb.index(cp, k, f);
                let sq = kb.index(sp, k, f);
                let (x1, x2) = (kb.load(ty, x1p, 0), kb.load(ty, x2p, 0));
                let (c, sn) = (kb.load(ty, cq, 0), kb.load(ty, sq, 0));
                let a1 = kb.b.ins().fmul(c, x1);
                let b1 = kb.b.ins().fmul(sn, x2);
                let re = kb.b.ins().fsub(a1, b1);
                let a2 = kb.b.ins().fmul(sn, x1);
                let b2 = kb.b.ins().fmul(c, x2);
                let im = kb.b.ins().fadd(a2, b2);
                let y1p = kb.index(yb, k, step * f);
                let y1p = kb.offset(y1p, i1 * f);
                let y2p = kb.index(yb, k, step * f);
                let y2p = kb.offset(y2p, i2 * f);
                kb.store(re, y1p, 0);
                kb.store(im, y2p, 0);
            };
            if s.interleaved {
                kb.for_n(half, |kb, k| rot(kb, F32, k, (0, 1), 2));
            } else {
                let main = half / 4 * 4;
                if main > 0 {
                    kb.for_range(0, main as i64, 4, |kb, k| {
                        rot(kb, F32X4, k, (0, half as i64), 1)
                    });
                }
                if half > main {
                    kb.for_range(main as i64, half as i64, 1, |kb, k| {
                        rot(kb, F32, k, (0, half as i64), 1)
                    });
                }
            }
            if g.d > g.r {
                let src = kb.offset(xb, g.r as i64 * f);
                let dst = kb.offset(yb, g.r as i64 * f);
                super::block_copy(kb, dst, src, (g.d - g.r) * 4);
            }
        });
    });
}
