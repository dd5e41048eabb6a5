//! The fused elementwise kernel: a whole `fused_ew` program per element, in one pass over memory.
//!
//! The loop nest is the elementwise one (the output's dims, coalesced, every input walking it by
//! its broadcast strides), so the innermost dim of each input steps by one element or not at all.
//! Inside, the inputs are loaded, every instruction runs on registers with the same emitters the
//! single ops use (`unary_float`, `binary_float`), and only the last result is stored: the
//! intermediates never touch memory. Four f32 lanes at a time when every instruction is lanewise
//! (all but the remainders), broadcast inputs splatted; a scalar tail.
//!
//! Large outputs can be split into parts (`Kb::share`): over the outermost coalesced dim, or, when
//! the nest is one dim, over blocks of [`BLOCK`] elements.

use super::elementwise::{binary_float, unary_float};
use super::{coalesce, dense_strides, loop_nest, map_f32};
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Value};
use kiln_ir::ops::{BinaryOp, FusedArg, FusedInst};

/// Elements per work unit when a one-dimensional nest is split (64 KiB of output: big enough
/// that a part's loop overhead vanishes, small enough to balance a few threads).
pub(crate) const BLOCK: usize = 16 * 1024;

/// Outputs smaller than this are never split: the work is too small to share.
const MIN_SPLIT: usize = 2 * BLOCK;

/// A fused kernel with every shape fixed. All operands are f32.
#[derive(Clone, Debug)]
pub(crate) struct FusedSpec {
    /// The program (already checked against the input count).
    pub program: Vec<FusedInst>,
    /// Dims of each input, in operand order.
    pub ins: Vec<Vec<usize>>,
    /// Dims of the output.
    pub out: Vec<usize>,
}

/// The coalesced loop nest: dims and, per operand (inputs then output), strides in elements.
struct Nest {
    dims: Vec<usize>,
    strides: Vec<Vec<i64>>,
}

impl FusedSpec {
    fn nest(&self) -> Nest {
        let out = &self.out;
        let mut strides: Vec<Vec<i64>> = self
            .ins
            .iter()
            .map(|d| super::broadcast_strides(d, out))
            .collect();
        strides.push(dense_strides(out, 1));
        let (dims, strides) = coalesce(out, &strides, 1);
        Nest { dims, strides }
    }

    /// Whether every instruction runs on f32x4 (the remainders are scalar-only).
    fn vectorizes(&self) -> bool {
        self.program.iter().all(|i| match i {
            FusedInst::Unary(..) => true,
            FusedInst::Binary(b, ..) => !matches!(b, BinaryOp::Mod | BinaryOp::Fmod),
        })
    }

    /// Whether the kernel honours `Kb::share` (large outputs only).
    pub(crate) fn splits(&self) -> bool {
        self.out.iter().product::<usize>() >= MIN_SPLIT
    }
}

/// Runs the program on one value per input (all F32, or all F32X4) and returns the last result.
fn run_program(kb: &mut Kb, program: &[FusedInst], ins: &[Value]) -> Value {
    let mut t: Vec<Value> = Vec::with_capacity(program.len());
    for inst in program {
        let get = |a: FusedArg| match a {
            FusedArg::Input(i) => ins[i],
            FusedArg::Inst(k) => t[k],
        };
        let r = match *inst {
            FusedInst::Unary(u, a) => {
                let x = get(a);
                unary_float(kb, u, x)
            }
            FusedInst::Binary(b, x, y) => {
                let (x, y) = (get(x), get(y));
                binary_float(kb, b, x, y)
            }
        };
        t.push(r);
    }
    *t.last().expect("a checked program is not empty")
}

/// `n` output elements from the operand pointers `p` (inputs, then the output) whose innermost
/// strides (elements) are `inner`.
fn row(kb: &mut Kb, spec: &FusedSpec, vector: bool, n: usize, p: &[Ptr], inner: &[i64]) {
    let (ins, y) = p.split_at(p.len() - 1);
    let y = y[0];
    let program = &spec.program;
    if vector {
        let srcs = super::row_sources(kb, ins, inner);
        map_f32(kb, n, &srcs, y, &|kb, v| run_program(kb, program, v));
    } else {
        kb.for_n(n, |kb, i| {
            let vals: Vec<Value> = ins
                .iter()
                .zip(inner)
                .map(|(&ptr, &step)| {
                    let a = kb.index(ptr, i, step * 4);
                    kb.load(F32, a, 0)
                })
                .collect();
            let r = run_program(kb, program, &vals);
            let o = kb.index(y, i, 4);
            kb.store(r, o, 0);
        });
    }
}

/// The fused kernel: operands are the inputs in order, then the output.
pub(crate) fn fused_kernel(kb: &mut Kb, spec: &FusedSpec) {
    if spec.out.contains(&0) {
        return;
    }
    let Nest { dims, strides } = spec.nest();
    let r = dims.len();
    let bytes = |st: &[i64]| -> Vec<i64> { st.iter().map(|x| x * 4).collect() };
    let inner: Vec<i64> = strides.iter().map(|st| st[r - 1]).collect();
    let n = dims[r - 1];
    let bases: Vec<Ptr> = kb.args[..spec.ins.len() + 1].to_vec();
    let vector = spec.vectorizes();
    if !spec.splits() {
        let outer: Vec<Vec<i64>> = strides.iter().map(|st| bytes(&st[..r - 1])).collect();
        loop_nest(kb, &dims[..r - 1], &outer, &bases, &mut |kb, p| {
            row(kb, spec, vector, n, p, &inner)
        });
        return;
    }
    if r >= 2 {
        // Units are the outermost dim's indices; each runs the rest of the nest.
        let (lo, hi) = kb.share(dims[0]);
        let step: Vec<i64> = strides.iter().map(|st| st[0] * 4).collect();
        let rest: Vec<Vec<i64>> = strides.iter().map(|st| bytes(&st[1..r - 1])).collect();
        kb.for_dyn(lo, hi, |kb, i| {
            let p: Vec<Ptr> = bases
                .iter()
                .zip(&step)
                .map(|(&b, &s)| kb.index(b, i, s))
                .collect();
            loop_nest(kb, &dims[1..r - 1], &rest, &p, &mut |kb, p| {
                row(kb, spec, vector, n, p, &inner)
            });
        });
        return;
    }
    // One dim: units are blocks of BLOCK elements, the last one possibly shorter.
    let full = n / BLOCK;
    let rem = n % BLOCK;
    let units = full + usize::from(rem > 0);
    let (lo, hi) = kb.share(units);
    let block: Vec<i64> = inner.iter().map(|&s| s * (BLOCK as i64) * 4).collect();
    let at = |kb: &mut Kb, b: Value| -> Vec<Ptr> {
        bases
            .iter()
            .zip(&block)
            .map(|(&p, &s)| kb.index(p, b, s))
            .collect()
    };
    let full_hi = if rem > 0 {
        let f = kb.iconst(full as i64);
        kb.b.ins().smin(hi, f)
    } else {
        hi
    };
    kb.for_dyn(lo, full_hi, |kb, b| {
        let p = at(kb, b);
        row(kb, spec, vector, BLOCK, &p, &inner);
    });
    if rem > 0 {
        // The short last block belongs to the part whose share holds unit `full`.
        let owns_hi =
            kb.b.ins()
                .icmp_imm_s(IntCC::SignedGreaterThan, hi, full as i64);
        let owns_lo =
            kb.b.ins()
                .icmp_imm_s(IntCC::SignedLessThanOrEqual, lo, full as i64);
        let owns = kb.b.ins().band(owns_hi, owns_lo);
        kb.if_then(owns, |kb| {
            let b = kb.iconst(full as i64);
            let p = at(kb, b);
            row(kb, spec, vector, rem, &p, &inner);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ins: &[&[usize]], out: &[usize]) -> FusedSpec {
        FusedSpec {
            program: vec![],
            ins: ins.iter().map(|d| d.to_vec()).collect(),
            out: out.to_vec(),
        }
    }

    #[test]
    fn nest_coalesces_and_broadcasts() {
        // Same-shape operands collapse to one dim.
        let n = spec(&[&[2, 3, 4], &[2, 3, 4]], &[2, 3, 4]).nest();
        assert_eq!(n.dims, vec![24]);
        assert_eq!(n.strides, vec![vec![1], vec![1], vec![1]]);
        // A per-channel [3,1] operand and a scalar: the inner dim is contiguous or steps by zero.
        let n = spec(&[&[2, 3, 4], &[3, 1], &[]], &[2, 3, 4]).nest();
        assert_eq!(n.dims, vec![2, 3, 4]);
        assert_eq!(
            n.strides,
            vec![vec![12, 4, 1], vec![0, 1, 0], vec![0, 0, 0], vec![12, 4, 1]]
        );
        // A row vector [4] against [6, 4]: two dims, the vector repeats.
        let n = spec(&[&[6, 4], &[4]], &[6, 4]).nest();
        assert_eq!(n.dims, vec![6, 4]);
        assert_eq!(n.strides[1], vec![0, 1]);
    }

    #[test]
    fn only_remainders_are_scalar() {
        let x = FusedArg::Input(0);
        let mut s = spec(&[&[8]], &[8]);
        s.program = vec![
            FusedInst::Unary(kiln_ir::ops::UnaryOp::Tanh, x),
            FusedInst::Binary(BinaryOp::Pow, FusedArg::Inst(0), x),
        ];
        assert!(s.vectorizes());
        s.program
            .push(FusedInst::Binary(BinaryOp::Fmod, FusedArg::Inst(1), x));
        assert!(!s.vectorizes());
    }

    #[test]
    fn splits_only_large_outputs() {
        assert!(!spec(&[&[4, 1000]], &[4, 1000]).splits());
        assert!(spec(&[&[4, 10000]], &[4, 10000]).splits());
    }
}
