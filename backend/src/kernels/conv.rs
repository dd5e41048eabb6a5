//! Convolution (im2col + the shared GEMM) over any number of
//! spatial dims.
//!
//! Convolution copies each (image, group) into a column matrix `[C/g * prod(k), prod(out)]` in
//! scratch memory, then multiplies it by the group's weights `[M/g, C/g * prod(k)]` (the ONNX OIHW
//! layout already is that matrix). The product is vectorized over output positions, so strides,
//! dilations, padding and groups cost nothing in the inner loop: the column copy absorbs them, one
//! row at a time, split into a zero-padding head, a copied middle and a zero-padding tail whose
//! bounds are computed once per row. Pointwise convolutions (1x1, stride 1, no padding) skip the copy.

use super::depthwise::valid_range;
use super::gemm::{gemm, Addend, Gemm, Mat};
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Value};
use kiln_ir::ops::UnaryOp;

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

/// Whether [`conv_kernel`] honours `Kb::share` for this convolution (its work can be split into
/// parts run in parallel).
pub(crate) fn conv_splits(s: &ConvSpec) -> bool {
    if s.depthwise() {
        super::depthwise::splits(s)
    } else {
        false
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
        super::depthwise::depthwise_kernel(kb, s, x, w, bias, y);
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
