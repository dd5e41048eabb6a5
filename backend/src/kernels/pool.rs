//! Windowed pooling and global pooling, over any number of spatial dims.

use super::conv::index_nest;
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{InstBuilder, Value};
use kiln_ir::ops::PoolKind;

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
