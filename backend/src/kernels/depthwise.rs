//! Depthwise convolution (one input and one output channel per group), computed directly.

use super::conv::{index_nest, ConvSpec};
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Value};

/// Whether [`depthwise_kernel`] honours `Kb::share` for this convolution.
pub(crate) fn splits(_s: &ConvSpec) -> bool {
    false
}

/// Depthwise convolution, direct: every output row starts as the bias and each kernel tap adds
/// `w * x` over the range of output positions whose input is inside the image, vectorized along
/// the row when the stride is 1. The row stays in L1 across the taps.
pub(crate) fn depthwise_kernel(
    kb: &mut Kb,
    s: &ConvSpec,
    x: Ptr,
    w: Ptr,
    bias: Option<Ptr>,
    y: Ptr,
) {
    let r = s.input.len();
    let sin: usize = s.input.iter().product();
    let p: usize = s.output.iter().product();
    let ksz: usize = s.kernel.iter().product();
    let ow = s.output[r - 1];
    if p == 0 {
        return;
    }
    let in_strides = super::dense_strides(&s.input, 4);
    let k_strides = super::dense_strides(&s.kernel, 4);
    let (kl, st, d, pad, len) = (
        s.kernel[r - 1],
        s.strides[r - 1],
        s.dilations[r - 1],
        s.pads_begin[r - 1],
        s.input[r - 1],
    );
    kb.for_n(s.n * s.c, |kb, plane| {
        let ch = if s.c == 1 {
            kb.iconst(0)
        } else {
            kb.b.ins().urem_imm_s(plane, s.c as i64)
        };
        let xp = kb.index(x, plane, (sin * 4) as i64);
        let yp = kb.index(y, plane, (p * 4) as i64);
        let wc = kb.index(w, ch, (ksz * 4) as i64);
        let init = match bias {
            Some(b) => {
                let bp = kb.index(b, ch, 4);
                kb.load(F32, bp, 0)
            }
            None => kb.fconst(0.0),
        };
        index_nest(kb, &s.output[..r - 1], &mut |kb, os| {
            let os = os.to_vec();
            let mut flat = kb.iconst(0);
            for (&o, &size) in os.iter().zip(&s.output) {
                let t = kb.b.ins().imul_imm_s(flat, size as i64);
                flat = kb.b.ins().iadd(t, o);
            }
            let yrow = kb.index(yp, flat, (ow * 4) as i64);
            super::map_f32(kb, ow, &[super::Src::Splat(init)], yrow, &|_, v| v[0]);
            index_nest(kb, &s.kernel[..r - 1], &mut |kb, ks| {
                let mut src = xp;
                let mut wk = wc;
                let mut valid: Option<Value> = None;
                for j in 0..r - 1 {
                    let a = kb.b.ins().imul_imm_s(os[j], s.strides[j] as i64);
                    let b = kb.b.ins().imul_imm_s(ks[j], s.dilations[j] as i64);
                    let i = kb.b.ins().iadd(a, b);
                    let i = kb.b.ins().iadd_imm_s(i, -(s.pads_begin[j] as i64));
                    let ok =
                        kb.b.ins()
                            .icmp_imm_u(IntCC::UnsignedLessThan, i, s.input[j] as i64);
                    valid = Some(match valid {
                        None => ok,
                        Some(v) => kb.b.ins().band(v, ok),
                    });
                    src = kb.index(src, i, in_strides[j]);
                    wk = kb.index(wk, ks[j], k_strides[j]);
                }
                let body = |kb: &mut Kb| {
                    kb.for_n(kl, |kb, k| {
                        let wp = kb.index(wk, k, 4);
                        let wv = kb.load(F32, wp, 0);
                        let (lo, hi) = valid_range(kb, k, st, d, pad, len, ow);
                        let kd = kb.b.ins().imul_imm_s(k, d as i64);
                        let shift = kb.b.ins().iadd_imm_s(kd, -(pad as i64));
                        let base = kb.index(src, shift, 4);
                        let step =
                            |kb: &mut Kb, o: Value, ty: cranelift_codegen::ir::Type, wv: Value| {
                                let sp = kb.index(base, o, (st * 4) as i64);
                                let xv = kb.load(ty, sp, 0);
                                let dp = kb.index(yrow, o, 4);
                                let acc = kb.load(ty, dp, 0);
                                let nx = kb.mul_add(wv, xv, acc);
                                kb.store(nx, dp, 0);
                            };
                        let start = if st == 1 {
                            let wvv = kb.splat(wv);
                            let cnt = kb.b.ins().isub(hi, lo);
                            let nvec = kb.b.ins().ushr_imm_s(cnt, 2);
                            let zero = kb.iconst(0);
                            kb.for_dyn(zero, nvec, |kb, j| {
                                let j4 = kb.b.ins().ishl_imm_s(j, 2);
                                let o = kb.b.ins().iadd(lo, j4);
                                step(kb, o, F32X4, wvv);
                            });
                            let done = kb.b.ins().ishl_imm_s(nvec, 2);
                            kb.b.ins().iadd(lo, done)
                        } else {
                            lo
                        };
                        kb.for_dyn(start, hi, |kb, o| step(kb, o, F32, wv));
                    });
                };
                match valid {
                    None => body(kb),
                    Some(v) => kb.if_then(v, body),
                }
            });
        });
    });
}

/// Output positions `[lo, hi)` along an axis whose input `o*s + k*d - pad` is inside `[0, len)`,
/// for a run-time kernel offset `k`.
pub(crate) fn valid_range(
    kb: &mut Kb,
    k: Value,
    st: usize,
    d: usize,
    pad: usize,
    len: usize,
    ow: usize,
) -> (Value, Value) {
    let kd = kb.b.ins().imul_imm_s(k, d as i64);
    let padv = kb.iconst(pad as i64);
    let t_lo = kb.b.ins().isub(padv, kd);
    let lo = ceil_div_clamp(kb, t_lo, st, ow);
    let lp = kb.iconst((len + pad) as i64);
    let t_hi = kb.b.ins().isub(lp, kd);
    let hi = ceil_div_clamp(kb, t_hi, st, ow);
    let hi = kb.b.ins().smax(hi, lo);
    (lo, hi)
}

/// `ceil(max(t, 0) / s)` clamped to `[0, cap]`, for run-time `t`.
fn ceil_div_clamp(kb: &mut Kb, t: Value, s: usize, cap: usize) -> Value {
    let z = kb.iconst(0);
    let t = kb.b.ins().smax(t, z);
    let q = if s == 1 {
        t
    } else {
        let t = kb.b.ins().iadd_imm_s(t, s as i64 - 1);
        let sv = kb.iconst(s as i64);
        kb.b.ins().udiv(t, sv)
    };
    let c = kb.iconst(cap as i64);
    kb.b.ins().smin(q, c)
}
