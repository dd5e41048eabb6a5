//! Windowed pooling and global pooling, over any number of spatial dims.

use super::conv::index_nest;
use super::depthwise::{vmax, Fold, Win};
use crate::builder::{CodegenCfg, Kb, Ptr};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::Type;
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;
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

/// Element reads below which a pool is not worth splitting across threads: handing a part to
/// another thread costs about as much as a few microseconds of work.
const SPLIT_WORK: usize = 1 << 16;

impl PoolSpec {
    /// Whether the step should be split into parallel parts: [`pool_kernel`] always honours
    /// `Kb::share` over the planes, but small pools are faster in one piece.
    pub(crate) fn splits(&self) -> bool {
        let work = self.planes
            * self.output.iter().product::<usize>()
            * self.kernel.iter().product::<usize>();
        self.planes > 1 && work >= SPLIT_WORK
    }

    /// The window engine's view of this pool, if it handles it (1-D and 2-D, column stride 1 or 2).
    fn win(&self, cfg: &CodegenCfg) -> Option<Win> {
        let r = self.input.len();
        if self.pads.len() != 2 * r {
            return None;
        }
        Win::new(
            cfg,
            &self.input,
            &self.output,
            &self.kernel,
            &self.strides,
            &self.dilations,
            &self.pads[..r],
        )
    }
}

/// Windowed max/average pooling, plane by plane, honouring `Kb::share` over the planes. 1-D and
/// 2-D pools with column stride 1 or 2 run the vectorized window engine
/// ([`super::depthwise::Win`]); the rest the scalar kernel below. Operands: x, y.
pub(crate) fn pool_kernel(kb: &mut Kb, s: &PoolSpec) {
    let (x, y) = (kb.args[0], kb.args[1]);
    let sin: usize = s.input.iter().product();
    let p: usize = s.output.iter().product();
    if p == 0 {
        return;
    }
    if let Some(win) = s.win(&kb.cfg) {
        let r = s.input.len();
        let fold = match s.kind {
            PoolKind::Max => Fold::Max,
            PoolKind::Avg => Fold::Avg {
                include_pad: s.count_include_pad,
                pb: if r == 2 { s.pads[2] } else { 0 },
                pr: s.pads[2 * r - 1],
            },
        };
        let (lo, hi) = kb.share(s.planes);
        kb.for_dyn(lo, hi, |kb, plane| {
            let xp = kb.index(x, plane, (sin * 4) as i64);
            let yp = kb.index(y, plane, (p * 4) as i64);
            win.plane(kb, fold, xp, yp);
        });
        return;
    }
    pool_generic(kb, s);
}

/// Windowed max/average pooling over any number of spatial dims, one output at a time.
/// Out-of-range taps are read at a clamped index and discarded with a select, so the tap loop
/// has no branches; when no window ever leaves the input the checks are not emitted at all.
/// Operands: x, y.
fn pool_generic(kb: &mut Kb, s: &PoolSpec) {
    let (x, y) = (kb.args[0], kb.args[1]);
    let r = s.input.len();
    let sin: usize = s.input.iter().product();
    let p: usize = s.output.iter().product();
    let ksz: usize = s.kernel.iter().product();
    let reach = |j: usize| (s.output[j] - 1) * s.strides[j] + (s.kernel[j] - 1) * s.dilations[j];
    let always_in = (0..r).all(|j| s.pads[j] == 0 && reach(j) < s.input[j]);
    let within_pads = (0..r).all(|j| reach(j) < s.input[j] + s.pads[j] + s.pads[j + r]);
    // The divisor is the full window unless windows get clipped.
    let const_div = always_in || (s.count_include_pad && within_pads);
    let in_strides = super::dense_strides(&s.input, 4);
    let out_strides = super::dense_strides(&s.output, 4);
    let (lo, hi) = kb.share(s.planes);
    kb.for_dyn(lo, hi, |kb, plane| {
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

/// Whether a global pool of `planes` planes of `len` elements should be split into parallel
/// parts (see [`PoolSpec::splits`]).
pub(crate) fn global_pool_splits(planes: usize, len: usize) -> bool {
    planes > 1 && planes * len >= SPLIT_WORK
}

/// Global max/average pool: `planes` planes of `len` elements each, one output per plane,
/// honouring `Kb::share` over the planes. Operands: x, y.
pub(crate) fn global_pool_kernel(kb: &mut Kb, kind: PoolKind, planes: usize, len: usize) {
    let (x, y) = (kb.args[0], kb.args[1]);
    let (lo, hi) = kb.share(planes);
    kb.for_dyn(lo, hi, |kb, plane| {
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

/// Sum or max of `len` contiguous f32 at `p`: vectors (see [`fold_vectors`]), then across lanes,
/// then the tail. The maximum propagates NaN.
pub(crate) fn reduce(kb: &mut Kb, kind: PoolKind, p: Ptr, len: usize) -> Value {
    let (id, idv) = match kind {
        PoolKind::Max => (kb.fconst(f32::NEG_INFINITY), kb.fsplat(f32::NEG_INFINITY)),
        PoolKind::Avg => (kb.fconst(0.0), kb.fsplat(0.0)),
    };
    let main = len / 4;
    let mut r = id;
    if main > 0 {
        let v = fold_vectors(
            kb,
            F32X4,
            main,
            idv,
            &|kb, i, j| {
                let a = kb.index(p, i, 16);
                kb.load(F32X4, a, (j * 16) as i32)
            },
            &|kb, a, b| match kind {
                PoolKind::Max => vmax(kb, a, b),
                PoolKind::Avg => kb.b.ins().fadd(a, b),
            },
        );
        r = match kind {
            PoolKind::Max => kb.hmax(v),
            PoolKind::Avg => kb.hsum(v),
        };
    }
    for i in main * 4..len {
        let v = kb.load(F32, p, (i * 4) as i32);
        r = match kind {
            PoolKind::Max => kb.fmax(r, v),
            PoolKind::Avg => kb.b.ins().fadd(r, v),
        };
    }
    r
}

/// Folds `n` vectors of type `ty` with `comb` (associative, `init` its identity): vector `i + j`
/// is `term(kb, i, j)`, with `i` a run-time index and `j` a small constant. Long folds keep four
/// accumulators, so that the latency of one chain of `comb` does not bound the loop (a chain of
/// vector adds runs at one vector per three or four cycles; loads allow three per cycle), and
/// combine them pairwise at the end.
pub(crate) fn fold_vectors(
    kb: &mut Kb,
    ty: Type,
    n: usize,
    init: Value,
    term: &dyn Fn(&mut Kb, Value, usize) -> Value,
    comb: &dyn Fn(&mut Kb, Value, Value) -> Value,
) -> Value {
    const K: usize = 4;
    if n < 2 * K {
        let acc = kb.var(ty, init);
        kb.for_n(n, |kb, i| {
            let t = term(kb, i, 0);
            let c = kb.get(acc);
            let nx = comb(kb, c, t);
            kb.set(acc, nx);
        });
        return kb.get(acc);
    }
    let accs: Vec<Variable> = (0..K).map(|_| kb.var(ty, init)).collect();
    let full = n / K * K;
    kb.for_range(0, full as i64, K as i64, |kb, i| {
        for (j, &a) in accs.iter().enumerate() {
            let t = term(kb, i, j);
            let c = kb.get(a);
            let nx = comb(kb, c, t);
            kb.set(a, nx);
        }
    });
    if n > full {
        let i = kb.iconst(full as i64);
        for (j, &a) in accs.iter().enumerate().take(n - full) {
            let t = term(kb, i, j);
            let c = kb.get(a);
            let nx = comb(kb, c, t);
            kb.set(a, nx);
        }
    }
    let v: Vec<Value> = accs.iter().map(|&a| kb.get(a)).collect();
    let l = comb(kb, v[0], v[1]);
    let h = comb(kb, v[2], v[3]);
    comb(kb, l, h)
}
