//! Convolution (im2col + the shared GEMM), windowed pooling and global pooling, over any number of
//! spatial dims.
//!
//! Convolution copies each (image, group) into a column matrix `[C/g * prod(k), prod(out)]` in
//! scratch memory, then multiplies it by the group's weights `[M/g, C/g * prod(k)]` (the ONNX OIHW
//! layout already is that matrix). The product is vectorized over output positions, so strides,
//! dilations, padding and groups cost nothing in the inner loop: the column copy absorbs them, one
//! row at a time, split into a zero-padding head, a copied middle and a zero-padding tail whose
//! bounds are computed once per row. Pointwise convolutions (1x1, stride 1, no padding) skip the copy.

use super::gemm::{gemm, Addend, Gemm, Mat};
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{InstBuilder, Value};
use kiln_ir::ops::{PoolKind, UnaryOp};

/// Emits nested loops over `dims` and calls `body` with the induction variables.
pub(crate) fn index_nest(kb: &mut Kb, dims: &[usize], body: &mut dyn FnMut(&mut Kb, &[Value])) {
    fn rec(
        kb: &mut Kb,
        dims: &[usize],
        ivs: &mut Vec<Value>,
        body: &mut dyn FnMut(&mut Kb, &[Value]),
    ) {
        if dims.is_empty() {
            body(kb, ivs);
            return;
        }
        kb.for_n(dims[0], |kb, i| {
            ivs.push(i);
            rec(kb, &dims[1..], ivs, body);
            ivs.pop();
        });
    }
    rec(kb, dims, &mut Vec::new(), body)
}

/// Static description of a convolution.
#[derive(Clone, Debug)]
pub(crate) struct ConvSpec {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Output channels.
    pub m: usize,
    /// Groups.
    pub group: usize,
    /// Input spatial dims.
    pub input: Vec<usize>,
    /// Kernel spatial dims.
    pub kernel: Vec<usize>,
    /// Strides.
    pub strides: Vec<usize>,
    /// Dilations.
    pub dilations: Vec<usize>,
    /// Begin pads (end pads only bound the output size, which is given).
    pub pads_begin: Vec<usize>,
    /// Output spatial dims.
    pub output: Vec<usize>,
    /// A bias operand is present.
    pub bias: bool,
    /// Activations applied to every output element, in order, before it is stored.
    pub post: Vec<UnaryOp>,
}

impl ConvSpec {
    /// The spec of `conv` for input dims `xd`, weight dims `wd` and output dims `yd`.
    pub(crate) fn new(
        conv: &kiln_ir::ops::Conv,
        xd: &[usize],
        wd: &[usize],
        yd: &[usize],
        bias: bool,
    ) -> ConvSpec {
        let r = xd.len() - 2;
        ConvSpec {
            n: xd[0],
            c: xd[1],
            m: wd[0],
            group: conv.group,
            input: xd[2..].to_vec(),
            kernel: conv.kernel_shape.clone(),
            strides: conv.strides.clone(),
            dilations: conv.dilations.clone(),
            pads_begin: conv.pads[..r].to_vec(),
            output: yd[2..].to_vec(),
            bias,
            post: Vec::new(),
        }
    }
}

impl ConvSpec {
    /// 1x1 kernel, unit strides, no padding: the input already is the column matrix.
    pub fn pointwise(&self) -> bool {
        self.kernel.iter().all(|&k| k == 1)
            && self.strides.iter().all(|&s| s == 1)
            && self.pads_begin.iter().all(|&p| p == 0)
    }

    /// One input and one output channel per group: computed directly, without a column matrix.
    pub fn depthwise(&self) -> bool {
        self.c == self.group && self.m == self.group
    }

    /// Bytes of scratch the column matrix needs (0 when pointwise or depthwise).
    pub fn scratch_bytes(&self) -> usize {
        if self.pointwise() || self.depthwise() {
            0
        } else {
            4 * (self.c / self.group)
                * self.kernel.iter().product::<usize>()
                * self.output.iter().product::<usize>()
        }
    }
}

/// Convolution kernel. Operands: x, w, [bias], y, [scratch].
pub(crate) fn conv_kernel(kb: &mut Kb, s: &ConvSpec) {
    let x = kb.args[0];
    let w = kb.args[1];
    let (bias, y) = if s.bias {
        (Some(kb.args[2]), kb.args[3])
    } else {
        (None, kb.args[2])
    };
    if s.depthwise() {
        depthwise_kernel(kb, s, x, w, bias, y);
        return;
    }
    let scratch = if s.pointwise() {
        None
    } else {
        Some(kb.args[if s.bias { 4 } else { 3 }])
    };
    let (cg, mg) = (s.c / s.group, s.m / s.group);
    let ksz: usize = s.kernel.iter().product();
    let kk = cg * ksz;
    let p: usize = s.output.iter().product();
    let sin: usize = s.input.iter().product();
    if p == 0 || mg == 0 {
        return;
    }
    kb.for_n(s.n, |kb, n| {
        kb.for_n(s.group, |kb, g| {
            let xn = kb.index(x, n, (s.c * sin * 4) as i64);
            let xg = kb.index(xn, g, (cg * sin * 4) as i64);
            let yn = kb.index(y, n, (s.m * p * 4) as i64);
            let yg = kb.index(yn, g, (mg * p * 4) as i64);
            let wg = kb.index(w, g, (mg * kk * 4) as i64);
            let b = match scratch {
                None => Mat {
                    p: xg,
                    rs: (sin * 4) as i64,
                    cs: 4,
                },
                Some(col) => {
                    im2col(kb, s, xg, col);
                    Mat {
                        p: col,
                        rs: (p * 4) as i64,
                        cs: 4,
                    }
                }
            };
            let add = bias.map(|bp| {
                let bg = kb.index(bp, g, (mg * 4) as i64);
                Addend {
                    c: Mat {
                        p: bg,
                        rs: 4,
                        cs: 0,
                    },
                    beta: 1.0,
                }
            });
            let spec = Gemm {
                m: mg,
                n: p,
                k: kk,
                alpha: 1.0,
                a: Mat {
                    p: wg,
                    rs: (kk * 4) as i64,
                    cs: 4,
                },
                b,
                y: Mat {
                    p: yg,
                    rs: (p * 4) as i64,
                    cs: 4,
                },
                add,
                post: s.post.clone(),
            };
            gemm(kb, &spec);
        });
    });
}

/// Fills the column matrix of one (image, group): row `(ci, k...)`, column `(o...)` holds
/// `x[ci, o*s + k*d - pad]`, or 0 in the padding.
fn im2col(kb: &mut Kb, s: &ConvSpec, x: Ptr, col: Ptr) {
    let r = s.input.len();
    let cg = s.c / s.group;
    let sin: usize = s.input.iter().product();
    let p: usize = s.output.iter().product();
    let ow = s.output[r - 1];
    let in_strides = super::dense_strides(&s.input, 4);
    let mut dims = vec![cg];
    dims.extend(&s.kernel);
    index_nest(kb, &dims, &mut |kb, ivs| {
        let (ci, ks) = (ivs[0], &ivs[1..]);
        // Row index of (ci, k...) in the column matrix.
        let mut row = ci;
        for (j, &kj) in ks.iter().enumerate() {
            let t = kb.b.ins().imul_imm_s(row, s.kernel[j] as i64);
            row = kb.b.ins().iadd(t, kj);
        }
        let crow = kb.index(col, row, (p * 4) as i64);
        let xc = kb.index(x, ci, (sin * 4) as i64);
        let ks = ks.to_vec();
        // Loop over every output position but the last axis.
        index_nest(kb, &s.output[..r - 1], &mut |kb, os| {
            let mut flat = kb.iconst(0);
            let mut src = xc;
            let mut valid: Option<Value> = None;
            for j in 0..r - 1 {
                let t = kb.b.ins().imul_imm_s(flat, s.output[j] as i64);
                flat = kb.b.ins().iadd(t, os[j]);
                // i = o*s + k*d - pad
                let a = kb.b.ins().imul_imm_s(os[j], s.strides[j] as i64);
                let b = kb.b.ins().imul_imm_s(ks[j], s.dilations[j] as i64);
                let i = kb.b.ins().iadd(a, b);
                let i = kb.b.ins().iadd_imm_s(i, -(s.pads_begin[j] as i64));
                // Unsigned compare: negative i is out of range too.
                let ok =
                    kb.b.ins()
                        .icmp_imm_u(IntCC::UnsignedLessThan, i, s.input[j] as i64);
                valid = Some(match valid {
                    None => ok,
                    Some(v) => kb.b.ins().band(v, ok),
                });
                src = kb.index(src, i, in_strides[j]);
            }
            let dst = kb.index(crow, flat, (ow * 4) as i64);
            let last = r - 1;
            let kl = ks[last];
            match valid {
                None => copy_row(kb, s, last, kl, src, dst),
                Some(v) => kb.if_else(
                    v,
                    |kb| copy_row(kb, s, last, kl, src, dst),
                    |kb| zero_fill(kb, dst, ow),
                ),
            }
        });
    });
}

/// Depthwise convolution, direct: every output row starts as the bias and each kernel tap adds
/// `w * x` over the range of output positions whose input is inside the image, vectorized along
/// the row when the stride is 1. The row stays in L1 across the taps.
fn depthwise_kernel(kb: &mut Kb, s: &ConvSpec, x: Ptr, w: Ptr, bias: Option<Ptr>, y: Ptr) {
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
fn valid_range(
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

/// Stores `n` zeros (f32) at `dst`.
fn zero_fill(kb: &mut Kb, dst: Ptr, n: usize) {
    let zv = kb.fsplat(0.0);
    let z = kb.fconst(0.0);
    let main = n / 4 * 4;
    if main > 0 {
        kb.for_range(0, main as i64, 4, |kb, i| {
            let d = kb.index(dst, i, 4);
            kb.store(zv, d, 0);
        });
    }
    for i in main..n {
        kb.store(z, dst, (i * 4) as i32);
    }
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

/// One column-matrix row along the last spatial axis for kernel offset `k`: zeros where
/// `o*s + k*d - pad` falls outside the input, the input elsewhere.
fn copy_row(kb: &mut Kb, s: &ConvSpec, axis: usize, k: Value, src: Ptr, dst: Ptr) {
    let (st, d, pad, len, ow) = (
        s.strides[axis],
        s.dilations[axis],
        s.pads_begin[axis],
        s.input[axis],
        s.output[axis],
    );
    // Valid outputs: pad - k*d <= o*s < len + pad - k*d.
    let (lo, hi) = valid_range(kb, k, st, d, pad, len, ow);
    let kd = kb.b.ins().imul_imm_s(k, d as i64);
    let z = kb.fconst(0.0);
    let zero = kb.iconst(0);
    kb.for_dyn(zero, lo, |kb, o| {
        let p = kb.index(dst, o, 4);
        kb.store(z, p, 0);
    });
    // Element o reads src[o*s + k*d - pad].
    let shift = kb.b.ins().iadd_imm_s(kd, -(pad as i64));
    let base = kb.index(src, shift, 4);
    if st == 1 {
        let cnt = kb.b.ins().isub(hi, lo);
        let nvec = kb.b.ins().ushr_imm_s(cnt, 2);
        let zero = kb.iconst(0);
        kb.for_dyn(zero, nvec, |kb, j| {
            let j4 = kb.b.ins().ishl_imm_s(j, 2);
            let o = kb.b.ins().iadd(lo, j4);
            let sp = kb.index(base, o, 4);
            let v = kb.load(F32X4, sp, 0);
            let dp = kb.index(dst, o, 4);
            kb.store(v, dp, 0);
        });
        let done = kb.b.ins().ishl_imm_s(nvec, 2);
        let start = kb.b.ins().iadd(lo, done);
        kb.for_dyn(start, hi, |kb, o| {
            let sp = kb.index(base, o, 4);
            let v = kb.load(F32, sp, 0);
            let dp = kb.index(dst, o, 4);
            kb.store(v, dp, 0);
        });
    } else {
        kb.for_dyn(lo, hi, |kb, o| {
            let sp = kb.index(base, o, (st * 4) as i64);
            let v = kb.load(F32, sp, 0);
            let dp = kb.index(dst, o, 4);
            kb.store(v, dp, 0);
        });
    }
    let end = kb.iconst(ow as i64);
    kb.for_dyn(hi, end, |kb, o| {
        let p = kb.index(dst, o, 4);
        kb.store(z, p, 0);
    });
}

/// Static description of a windowed pool.
#[derive(Clone, Debug)]
pub(crate) struct PoolSpec {
    /// Max or average.
    pub kind: PoolKind,
    /// Batch x channels.
    pub planes: usize,
    /// Input spatial dims.
    pub input: Vec<usize>,
    /// Window.
    pub kernel: Vec<usize>,
    /// Strides.
    pub strides: Vec<usize>,
    /// Dilations.
    pub dilations: Vec<usize>,
    /// Pads, begins then ends.
    pub pads: Vec<usize>,
    /// Output spatial dims.
    pub output: Vec<usize>,
    /// Average: divide by the window clipped to the padded input instead of to the input.
    pub count_include_pad: bool,
}

/// Windowed max/average pooling. Operands: x, y. Out-of-range taps are read at a clamped index
/// and discarded with a select, so the tap loop has no branches; when no window ever leaves the
/// input the checks are not emitted at all.
pub(crate) fn pool_kernel(kb: &mut Kb, s: &PoolSpec) {
    let (x, y) = (kb.args[0], kb.args[1]);
    let r = s.input.len();
    let sin: usize = s.input.iter().product();
    let p: usize = s.output.iter().product();
    if p == 0 {
        return;
    }
    let ksz: usize = s.kernel.iter().product();
    let reach = |j: usize| (s.output[j] - 1) * s.strides[j] + (s.kernel[j] - 1) * s.dilations[j];
    let always_in = (0..r).all(|j| s.pads[j] == 0 && reach(j) < s.input[j]);
    let within_pads = (0..r).all(|j| reach(j) < s.input[j] + s.pads[j] + s.pads[j + r]);
    // The divisor is the full window unless windows get clipped.
    let const_div = always_in || (s.count_include_pad && within_pads);
    let in_strides = super::dense_strides(&s.input, 4);
    let out_strides = super::dense_strides(&s.output, 4);
    kb.for_n(s.planes, |kb, plane| {
        let xp = kb.index(x, plane, (sin * 4) as i64);
        let yp = kb.index(y, plane, (p * 4) as i64);
        index_nest(kb, &s.output, &mut |kb, os| {
            let os = os.to_vec();
            let init = match s.kind {
                PoolKind::Max => kb.fconst(f32::NEG_INFINITY),
                PoolKind::Avg => kb.fconst(0.0),
            };
            let acc = kb.var(F32, init);
            let z = kb.iconst(0);
            let cnt = kb.var(I64, z);
            index_nest(kb, &s.kernel, &mut |kb, ks| {
                let mut off = kb.iconst(0);
                let mut inb: Option<Value> = None;
                let mut inpad: Option<Value> = None;
                for j in 0..r {
                    let a = kb.b.ins().imul_imm_s(os[j], s.strides[j] as i64);
                    let b = kb.b.ins().imul_imm_s(ks[j], s.dilations[j] as i64);
                    let i = kb.b.ins().iadd(a, b);
                    let i = kb.b.ins().iadd_imm_s(i, -(s.pads[j] as i64));
                    let ic = if always_in {
                        i
                    } else {
                        let ok =
                            kb.b.ins()
                                .icmp_imm_u(IntCC::UnsignedLessThan, i, s.input[j] as i64);
                        inb = Some(match inb {
                            None => ok,
                            Some(v) => kb.b.ins().band(v, ok),
                        });
                        let okp = kb.b.ins().icmp_imm_s(
                            IntCC::SignedLessThan,
                            i,
                            (s.input[j] + s.pads[j + r]) as i64,
                        );
                        inpad = Some(match inpad {
                            None => okp,
                            Some(v) => kb.b.ins().band(v, okp),
                        });
                        let z = kb.iconst(0);
                        let hi = kb.iconst(s.input[j] as i64 - 1);
                        let c = kb.b.ins().smax(i, z);
                        kb.b.ins().smin(c, hi)
                    };
                    let t = kb.scale(ic, in_strides[j]);
                    off = kb.b.ins().iadd(off, t);
                }
                let src = kb.at(xp, off);
                let v = kb.load(F32, src, 0);
                let cur = kb.get(acc);
                let new = match s.kind {
                    PoolKind::Max => kb.fmax(cur, v),
                    PoolKind::Avg => kb.b.ins().fadd(cur, v),
                };
                let new = match inb {
                    Some(c) => kb.b.ins().select(c, new, cur),
                    None => new,
                };
                kb.set(acc, new);
                if !const_div {
                    let counted = if s.count_include_pad { inpad } else { inb };
                    if let Some(c) = counted {
                        let c64 = kb.b.ins().uextend(I64, c);
                        let cur = kb.get(cnt);
                        let nx = kb.b.ins().iadd(cur, c64);
                        kb.set(cnt, nx);
                    }
                }
            });
            let mut res = kb.get(acc);
            if s.kind == PoolKind::Avg {
                if const_div {
                    let inv = kb.fconst(1.0 / ksz as f32);
                    res = kb.b.ins().fmul(res, inv);
                } else {
                    let c = kb.get(cnt);
                    let cf = kb.b.ins().fcvt_from_sint(F32, c);
                    res = kb.b.ins().fdiv(res, cf);
                }
            }
            let mut dst = yp;
            for j in 0..r {
                dst = kb.index(dst, os[j], out_strides[j]);
            }
            kb.store(res, dst, 0);
        });
    });
}

/// Global max/average pool: `planes` planes of `len` elements each, one output per plane.
/// Operands: x, y.
pub(crate) fn global_pool_kernel(kb: &mut Kb, kind: PoolKind, planes: usize, len: usize) {
    let (x, y) = (kb.args[0], kb.args[1]);
    kb.for_n(planes, |kb, plane| {
        let xp = kb.index(x, plane, (len * 4) as i64);
        let r = reduce(kb, kind, xp, len);
        let r = match kind {
            PoolKind::Avg if len > 0 => {
                let inv = kb.fconst(1.0 / len as f32);
                kb.b.ins().fmul(r, inv)
            }
            _ => r,
        };
        let yp = kb.index(y, plane, 4);
        kb.store(r, yp, 0);
    });
}

/// Sum or max of `len` contiguous f32 at `p`: four lanes, then across lanes, then the tail.
pub(crate) fn reduce(kb: &mut Kb, kind: PoolKind, p: Ptr, len: usize) -> Value {
    let (id, idv) = match kind {
        PoolKind::Max => (kb.fconst(f32::NEG_INFINITY), kb.fsplat(f32::NEG_INFINITY)),
        PoolKind::Avg => (kb.fconst(0.0), kb.fsplat(0.0)),
    };
    let main = len / 4 * 4;
    let mut r = id;
    if main > 0 {
        let acc = kb.var(F32X4, idv);
        kb.for_range(0, main as i64, 4, |kb, i| {
            let a = kb.index(p, i, 4);
            let v = kb.load(F32X4, a, 0);
            let cur = kb.get(acc);
            let nx = match kind {
                PoolKind::Max => kb.fmax(cur, v),
                PoolKind::Avg => kb.b.ins().fadd(cur, v),
            };
            kb.set(acc, nx);
        });
        let v = kb.get(acc);
        r = match kind {
            PoolKind::Max => kb.hmax(v),
            PoolKind::Avg => kb.hsum(v),
        };
    }
    for i in main..len {
        let v = kb.load(F32, p, (i * 4) as i32);
        r = match kind {
            PoolKind::Max => kb.fmax(r, v),
            PoolKind::Avg => kb.b.ins().fadd(r, v),
        };
    }
    r
}
