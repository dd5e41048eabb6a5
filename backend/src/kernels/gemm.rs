//! The matrix-multiply core shared by Gemm, MatMul and Conv.
//!
//! `out[m, n] = alpha * sum_k A[m, k] * B[k, n] + beta * C[m, n]`, f32, vectorized over n.
//!
//! The work is cut the way BLIS-style libraries cut it: column blocks of `nc` columns, then k
//! blocks of about `kc`, then row blocks of about `mc` rows, then `nr`-column tiles, then
//! `mr`-row tiles. A tile keeps its `mr x nr` outputs in registers for a whole k block (the
//! micro-kernel), so the `kc x nr` strip of B it reads stays in L1 while every row tile of the
//! row block passes over it, and the `mc x kc` block of A stays in L2 while every column tile of
//! the column block passes over it. Between k blocks a tile's partial sums round-trip through the
//! output; the epilogue (alpha, the addend, the fused activations) runs after the last one, in
//! registers before the store, with its constants and C loaded from memory where they are used
//! ([`EpilogueConsts`]) so that they take no register through the k loop. Activations that need
//! more registers than the accumulators leave free (anything but relu and clip) run over the
//! stored tile instead.
//!
//! Operands come as plain strided matrices or pre-packed into panels ([`Lhs::Panels`],
//! [`Rhs::Panels`]): `mr` rows (or `nr` columns) interleaved per k step, so a micro-kernel reads
//! both operands as two forward streams with compile-time offsets. Constant operands (weights)
//! are packed at compile time, the column matrix of a convolution is written packed by its im2col.
//!
//! The tile shape depends on the target ([`Tiling::for_target`]): x86_64 has 16 vector registers,
//! so 6 x 8: 12 accumulators, 2 B vectors, and for each FMA its own `vbroadcastss` of the A
//! element from memory, which the FMA then overwrites (x86's FMA overwrites a multiplicand, never
//! the addend, so a broadcast shared by two FMAs would need a register copy). aarch64 has 32
//! registers and a lane-indexed `fmla` that accumulates in place, so 8 x 8 with A read as two
//! vectors and multiplied lane by lane. The portable form (A elements broadcast one by one) serves
//! strided A operands on both targets and every operand on x86; without a native FMA (x86-64-v2)
//! the multiply-adds are `mulps` + `addps`.
//!
//! Every output element is computed by the same sequence of operations however the columns are
//! tiled or shared out (zero, then one multiply-add per k in order, partial sums stored and
//! reloaded exactly at the same k-block boundaries, then the epilogue), so splitting the columns
//! into parts run in parallel gives bitwise the serial result.

use super::depthwise::activation;
use super::elementwise::unary_float;
use crate::builder::{CodegenCfg, Kb, Ptr};
use cranelift_codegen::cursor::{Cursor, FuncCursor};
use cranelift_codegen::entity::EntityRef;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I64, I8X16};
use cranelift_codegen::ir::{
    ConstantData, Endianness, Function, Inst, InstBuilder, InstructionData, MemFlagsData, Opcode,
    StackSlot, StackSlotData, StackSlotKind, Type, Value, ValueDef,
};
use cranelift_frontend::Variable;
use kiln_ir::ops::UnaryOp;
use std::cell::RefCell;

/// A matrix operand: base pointer and byte strides between rows and columns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat {
    /// Element (0, 0).
    pub p: Ptr,
    /// Bytes between rows.
    pub rs: i64,
    /// Bytes between columns (4 for B and the output; 0 for a C broadcast along columns).
    pub cs: i64,
}

/// The additive term of the epilogue.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Addend {
    /// `C`, broadcast through zero strides.
    pub c: Mat,
    /// Its scale.
    pub beta: f32,
}

/// One matrix product over plain strided operands (the form the callers without packed operands
/// use; [`gemm`] runs it as a [`Product`]).
#[derive(Clone, Debug)]
pub(crate) struct Gemm {
    /// Rows of the output.
    pub m: usize,
    /// Columns of the output.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Scale of the product.
    pub alpha: f32,
    /// Left operand, `m x k`, any strides.
    pub a: Mat,
    /// Right operand, `k x n`, columns contiguous (`cs == 4`).
    pub b: Mat,
    /// Output, `m x n`, columns contiguous.
    pub y: Mat,
    /// Optional `beta * C`.
    pub add: Option<Addend>,
    /// Activations applied in order to every output element after the addend, in registers
    /// before the store (a fused Relu, Clip, ... of the producing node).
    pub post: Vec<UnaryOp>,
}

/// Tile shape and cache blocking of the micro-kernel for one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tiling {
    /// Rows of a tile (A panel height).
    pub mr: usize,
    /// Columns of a tile (B panel width), a multiple of 4.
    pub nr: usize,
    /// Packed A rows are loaded as vectors and multiplied with lane-indexed FMAs (aarch64
    /// `fmla v.4s, v.4s, v.s[i]`) instead of being broadcast one by one.
    pub by_lane: bool,
    /// k steps per micro-kernel loop iteration.
    pub unroll: usize,
    /// Target k-block length.
    pub kc: usize,
    /// Target row-block height (rows of A kept in L2 per k block).
    pub mc: usize,
    /// Target column-block width (columns per block, a multiple of `nr`).
    pub nc: usize,
}

impl Tiling {
    /// The tiling for a target.
    pub(crate) fn for_target(cfg: &CodegenCfg) -> Tiling {
        if cfg.aarch64 {
            // 16 accumulators + 2 A and 2 B vectors per k step (or 8 A elements, for a strided A):
            // 20 or 26 of the 32 registers. One step per iteration: with two, Cranelift emits each
            // accumulator's two FMAs back to back, which stalls in-order cores on the first's
            // latency (llvm-mca, Cortex-A53: 14-19% of the FMA peak against 65-73% with one step
            // and the loads first; see `operand_load`).
            Tiling {
                mr: 8,
                nr: 8,
                by_lane: true,
                unroll: 1,
                ..Tiling::portable()
            }
        } else {
            Tiling::portable()
        }
    }

    /// The portable tiling: 6 x 8 with every A element broadcast (fits x86's 16 registers).
    pub(crate) fn portable() -> Tiling {
        Tiling {
            mr: 6,
            nr: 8,
            by_lane: false,
            unroll: 1,
            // A 256 x 8 strip of B is 8 KiB (L1); a 240 x 256 block of A is 240 KiB (L2).
            kc: 256,
            mc: 240,
            nc: 256,
        }
    }

    /// Column tiles of an `n`-column product: the units its work is shared out in.
    pub(crate) fn col_tiles(&self, n: usize) -> usize {
        n.div_ceil(self.nr)
    }

    /// Floats of `k x n` B packed into panels (`n` rounded up to whole panels).
    pub(crate) fn packed_b_len(&self, k: usize, n: usize) -> usize {
        self.col_tiles(n) * self.nr * k
    }

    /// The k blocks of a `k`-long reduction with `m` rows: `(count, len)` blocks of `len` (a
    /// multiple of the unroll) followed by one of `k - (count - 1) * len`.
    ///
    /// Blocks are about `kc` long, longer (up to `3 * kc`) when there are few rows: the row
    /// block of A (`min(m, mc) x len`) still fits in 256 KiB of L2 and the `len x nr` strip of B
    /// in L1, and fewer blocks mean fewer round trips of the partial sums through the output.
    fn k_blocks(&self, k: usize, m: usize) -> (usize, usize) {
        const A_BLOCK_FLOATS: usize = 64 * 1024;
        let kc = (A_BLOCK_FLOATS / m.clamp(1, self.mc)).clamp(self.kc, 3 * self.kc);
        let count = k.div_ceil(kc).max(1);
        if count == 1 {
            return (1, k);
        }
        let len = k.div_ceil(count).div_ceil(self.unroll) * self.unroll;
        // Rounding up may leave nothing for the last block when k is small per block.
        let count = k.div_ceil(len);
        (count, len)
    }
}

/// Packs the `m x k` matrix `a` (element `(i, j)` at `a[i * rs + j * cs]`) into `mr`-row panels:
/// `[ceil(m / mr)][k][mr]`, rows past `m` zero.
pub(crate) fn pack_a(a: &[f32], m: usize, k: usize, rs: usize, cs: usize, mr: usize) -> Vec<f32> {
    let panels = m.div_ceil(mr);
    let mut out = vec![0f32; panels * k * mr];
    for p in 0..panels {
        for j in 0..k {
            for r in 0..mr {
                let i = p * mr + r;
                if i < m {
                    out[(p * k + j) * mr + r] = a[i * rs + j * cs];
                }
            }
        }
    }
    out
}

/// Packs the `k x n` matrix `b` (element `(i, j)` at `b[i * rs + j * cs]`) into `nr`-column
/// panels: `[ceil(n / nr)][k][nr]`, columns past `n` zero.
pub(crate) fn pack_b(b: &[f32], k: usize, n: usize, rs: usize, cs: usize, nr: usize) -> Vec<f32> {
    // Column panels of B are the row panels of its transpose.
    pack_a(b, n, k, cs, rs, nr)
}

/// Left operand of a [`Product`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lhs {
    /// `A[i, j]` at `p + i * rs + j * cs`.
    Strided(Mat),
    /// Packed by [`pack_a`] with the tiling's `mr`.
    Panels(Ptr),
}

/// Right operand of a [`Product`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rhs {
    /// `B[i, j]` at `p + i * rs + j * 4`.
    Rows(Mat),
    /// Packed by [`pack_b`] with the tiling's `nr` (the padding columns may hold anything: they
    /// are computed and never stored).
    Panels(Ptr),
}

/// One matrix product `Y = alpha * A x B + beta * C`, then the activations.
#[derive(Clone, Debug)]
pub(crate) struct Product {
    /// Rows of the output.
    pub m: usize,
    /// Columns of the output.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Scale of the product.
    pub alpha: f32,
    /// Left operand.
    pub a: Lhs,
    /// Right operand.
    pub b: Rhs,
    /// Output, `m x n`, columns contiguous.
    pub y: Mat,
    /// Optional `beta * C`.
    pub add: Option<Addend>,
    /// Activations applied in order after the addend.
    pub post: Vec<UnaryOp>,
}

/// Emits the product of strided operands, all of it (or this part's share of its columns when
/// the kernel is split).
pub(crate) fn gemm(kb: &mut Kb, g: &Gemm) {
    let t = Tiling::for_target(&kb.cfg);
    let p = Product {
        m: g.m,
        n: g.n,
        k: g.k,
        alpha: g.alpha,
        a: Lhs::Strided(g.a),
        b: Rhs::Rows(g.b),
        y: g.y,
        add: g.add,
        post: g.post.clone(),
    };
    let (t0, t1) = kb.share(t.col_tiles(g.n));
    product(kb, &p, &t, t0, t1, &mut |_, _, _| {});
}

/// Emits the product for the column tiles `[t0, t1)` (run-time values; tile `j` is columns
/// `[j * nr, min((j + 1) * nr, n))`). `prepare(kb, jb, je)` runs before each column block
/// `[jb, je)` is computed (a convolution writes that block's column matrix there).
pub(crate) fn product(
    kb: &mut Kb,
    p: &Product,
    t: &Tiling,
    t0: Value,
    t1: Value,
    prepare: &mut dyn FnMut(&mut Kb, Value, Value),
) {
    if p.m == 0 || p.n == 0 {
        return;
    }
    let consts = EpilogueConsts::default();
    if p.k == 0 {
        // No products: the output is the epilogue of zero.
        zero_k(kb, p, t, t0, t1, &consts);
        return;
    }
    let nct = (t.nc / t.nr).max(1) as i64;
    // Number of column blocks in [t0, t1): ceil((t1 - t0) / nct).
    let span = kb.b.ins().isub(t1, t0);
    let span = kb.b.ins().iadd_imm_s(span, nct - 1);
    let blocks = kb.b.ins().udiv_imm_u(span, nct);
    let zero = kb.iconst(0);
    kb.for_dyn(zero, blocks, |kb, bi| {
        let off = kb.b.ins().imul_imm_s(bi, nct);
        let jb = kb.b.ins().iadd(t0, off);
        let je = kb.b.ins().iadd_imm_s(jb, nct);
        let lt = kb.b.ins().icmp(IntCC::SignedLessThan, je, t1);
        let je = kb.b.ins().select(lt, je, t1);
        prepare(kb, jb, je);
        column_block(kb, p, t, &consts, jb, je);
    });
}

/// The shape of one micro-kernel instance.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// Rows computed and stored.
    rows: usize,
    /// Vector columns computed.
    nv: usize,
    /// Scalar columns computed after the vector ones (strided B's last columns).
    ns: usize,
    /// Columns stored (`<= 4 * nv + ns`; fewer for the last tile of packed B).
    width: usize,
}

/// Where a k block starts and how it ends.
#[derive(Clone, Copy)]
struct KBlock {
    /// First k (run-time value).
    k0: Value,
    /// Length.
    kc: usize,
    /// Accumulators start at zero (else at the stored partial sums).
    first: bool,
    /// The epilogue runs and the final values are stored.
    last: bool,
}

/// All k blocks and row blocks of the column tiles `[jb, je)`.
fn column_block(
    kb: &mut Kb,
    p: &Product,
    t: &Tiling,
    consts: &EpilogueConsts,
    jb: Value,
    je: Value,
) {
    let (count, len) = t.k_blocks(p.k, p.m);
    let last_len = p.k - (count - 1) * len;
    let zero = kb.iconst(0);
    k_block(
        kb,
        p,
        t,
        consts,
        jb,
        je,
        KBlock {
            k0: zero,
            kc: if count == 1 { p.k } else { len },
            first: true,
            last: count == 1,
        },
    );
    if count > 2 {
        kb.for_n(count - 2, |kb, i| {
            let i1 = kb.b.ins().iadd_imm_s(i, 1);
            let k0 = kb.b.ins().imul_imm_s(i1, len as i64);
            k_block(
                kb,
                p,
                t,
                consts,
                jb,
                je,
                KBlock {
                    k0,
                    kc: len,
                    first: false,
                    last: false,
                },
            );
        });
    }
    if count > 1 {
        let k0 = kb.iconst(((count - 1) * len) as i64);
        k_block(
            kb,
            p,
            t,
            consts,
            jb,
            je,
            KBlock {
                k0,
                kc: last_len,
                first: false,
                last: true,
            },
        );
    }
}

/// One k block over the column tiles `[jb, je)`: row blocks, then column tiles, then row tiles.
fn k_block(
    kb: &mut Kb,
    p: &Product,
    t: &Tiling,
    consts: &EpilogueConsts,
    jb: Value,
    je: Value,
    kblk: KBlock,
) {
    let full_rows = p.m / t.mr;
    let rem_rows = p.m % t.mr;
    let full_cols = p.n / t.nr;
    let rem_cols = p.n % t.nr;
    let mct = (t.mc / t.mr).max(1);
    let packed_b = matches!(p.b, Rhs::Panels(_));
    // Column tiles are the inner loop when there are few of them (a convolution's last stages:
    // many rows, few positions): the A panel of a row tile then stays in L1 across them, and
    // all of B in L2. Otherwise row tiles are inner, over one B strip in L1.
    let rows_outer = t.col_tiles(p.n) <= FEW_COL_TILES;
    // Column shapes: full tiles, and the last partial one.
    let full = |rows| Shape {
        rows,
        nv: t.nr / 4,
        ns: 0,
        width: t.nr,
    };
    let partial = |rows| {
        if packed_b {
            // Only the vectors that hold a stored column are computed.
            Shape {
                rows,
                nv: rem_cols.div_ceil(4),
                ns: 0,
                width: rem_cols,
            }
        } else {
            Shape {
                rows,
                nv: rem_cols / 4,
                ns: rem_cols % 4,
                width: rem_cols,
            }
        }
    };
    // Row blocks of `mct` tiles; the partial row tile joins the last one.
    let mut ib = 0;
    loop {
        let ie = (ib + mct).min(full_rows);
        let with_rem = ie == full_rows && rem_rows > 0;
        if ie == ib && !with_rem {
            break;
        }
        // Full column tiles of the block: [jb, min(je, full_cols)).
        let fc = kb.iconst(full_cols as i64);
        let lt = kb.b.ins().icmp(IntCC::SignedLessThan, je, fc);
        let jf = kb.b.ins().select(lt, je, fc);
        let has_rem_col = (rem_cols > 0).then(|| kb.b.ins().icmp(IntCC::SignedGreaterThan, je, fc));
        // Every column tile of the block for row tile `i`.
        let cols_of = |kb: &mut Kb, i: Value, rows: usize| {
            kb.for_dyn(jb, jf, |kb, j| {
                micro(kb, p, t, consts, full(rows), i, j, kblk)
            });
            if let Some(has) = has_rem_col {
                kb.if_then(has, |kb| {
                    let j = kb.iconst(full_cols as i64);
                    micro(kb, p, t, consts, partial(rows), i, j, kblk)
                });
            }
        };
        // Every row tile of the block for column tile `j`.
        let rows_of = |kb: &mut Kb, j: Value, shape: &dyn Fn(usize) -> Shape| {
            if ie > ib {
                kb.for_range(ib as i64, ie as i64, 1, |kb, i| {
                    micro(kb, p, t, consts, shape(t.mr), i, j, kblk)
                });
            }
            if with_rem {
                let i = kb.iconst(full_rows as i64);
                micro(kb, p, t, consts, shape(rem_rows), i, j, kblk);
            }
        };
        if rows_outer {
            if ie > ib {
                kb.for_range(ib as i64, ie as i64, 1, |kb, i| cols_of(kb, i, t.mr));
            }
            if with_rem {
                let i = kb.iconst(full_rows as i64);
                cols_of(kb, i, rem_rows);
            }
        } else {
            kb.for_dyn(jb, jf, |kb, j| rows_of(kb, j, &full));
            if let Some(has) = has_rem_col {
                kb.if_then(has, |kb| {
                    let j = kb.iconst(full_cols as i64);
                    rows_of(kb, j, &partial)
                });
            }
        }
        if ie == full_rows {
            break;
        }
        ib = ie;
    }
}

/// At most this many column tiles: row tiles are the outer loop.
const FEW_COL_TILES: usize = 12;

/// Pointers and strides of one tile's operands at its first k.
struct TilePtrs {
    /// A at (first row, k0).
    a: Ptr,
    /// Bytes between A rows.
    a_r: i64,
    /// Bytes between A k steps.
    a_k: i64,
    /// B at (k0, first column).
    b: Ptr,
    /// Bytes between B k steps.
    b_k: i64,
}

fn tile_ptrs(kb: &mut Kb, p: &Product, t: &Tiling, i: Value, j: Value, k0: Value) -> TilePtrs {
    let mr4 = (t.mr * 4) as i64;
    let nr4 = (t.nr * 4) as i64;
    let (a, a_r, a_k) = match p.a {
        Lhs::Strided(a) => {
            let pa = kb.index(a.p, i, a.rs * t.mr as i64);
            (kb.index(pa, k0, a.cs), a.rs, a.cs)
        }
        Lhs::Panels(a) => {
            let pa = kb.index(a, i, p.k as i64 * mr4);
            (kb.index(pa, k0, mr4), 4, mr4)
        }
    };
    let (b, b_k) = match p.b {
        Rhs::Rows(b) => {
            let pb = kb.index(b.p, j, nr4);
            (kb.index(pb, k0, b.rs), b.rs)
        }
        Rhs::Panels(b) => {
            let pb = kb.index(b, j, p.k as i64 * nr4);
            (kb.index(pb, k0, nr4), nr4)
        }
    };
    TilePtrs {
        a,
        a_r,
        a_k,
        b,
        b_k,
    }
}

/// One tile over one k block: accumulate in registers, then store (through the epilogue after
/// the last k block).
#[allow(clippy::too_many_arguments)]
fn micro(
    kb: &mut Kb,
    p: &Product,
    t: &Tiling,
    consts: &EpilogueConsts,
    sh: Shape,
    i: Value,
    j: Value,
    kblk: KBlock,
) {
    let tp = tile_ptrs(kb, p, t, i, j, kblk.k0);
    let m0 = kb.b.ins().imul_imm_s(i, t.mr as i64);
    let n0 = kb.b.ins().imul_imm_s(j, t.nr as i64);
    let yrow = kb.index(p.y.p, m0, p.y.rs);
    let yp = kb.index(yrow, n0, 4);
    // Accumulators: zero, or the partial sums of the previous k blocks.
    let zv = kb.fsplat(0.0);
    let zs = kb.fconst(0.0);
    let mut acc: Vec<Vec<Variable>> = Vec::with_capacity(sh.rows);
    for r in 0..sh.rows {
        let mut row = Vec::with_capacity(sh.nv + sh.ns);
        for c in 0..sh.nv + sh.ns {
            let init = if kblk.first {
                if c < sh.nv {
                    zv
                } else {
                    zs
                }
            } else {
                let off = (r as i64 * p.y.rs) as i32;
                if c < sh.nv {
                    let w = lanes(sh.width, c);
                    if w == 0 {
                        zv
                    } else {
                        load_cols(kb, yp, off + (c * 16) as i32, w)
                    }
                } else {
                    let col = sh.nv * 4 + (c - sh.nv);
                    kb.load(F32, yp, off + (col * 4) as i32)
                }
            };
            row.push(kb.var(if c < sh.nv { F32X4 } else { F32 }, init));
        }
        acc.push(row);
    }
    let by_lane = t.by_lane && matches!(p.a, Lhs::Panels(_)) && kb.cfg.fma;
    let va = kb.var(I64, tp.a.v);
    let vb = kb.var(I64, tp.b.v);
    let u = t.unroll.max(1);
    let (ro_a, ro_b) = (tp.a.ro, tp.b.ro);
    let steps = |kb: &mut Kb, count: usize| {
        // Reading the accumulators first makes them the loop head's first parameters, so the
        // pointer increments come last on the back edge, after the loads that use the old
        // pointers: the increments then happen in place.
        for &v in acc.iter().flatten() {
            kb.get(v);
        }
        let pa = Ptr {
            v: kb.get(va),
            ro: ro_a,
        };
        let pb = Ptr {
            v: kb.get(vb),
            ro: ro_b,
        };
        for s in 0..count as i64 {
            k_step(kb, &tp, sh, &acc, pa, pb, s, by_lane);
        }
        let na = kb.b.ins().iadd_imm_s(pa.v, count as i64 * tp.a_k);
        kb.set(va, na);
        let nb = kb.b.ins().iadd_imm_s(pb.v, count as i64 * tp.b_k);
        kb.set(vb, nb);
    };
    // A loop tested at the top: its head has two predecessors, so the accumulators are block
    // parameters there and each multiply-add result has one use (the back edge). (In a loop
    // tested at the bottom the last results also feed the epilogue; Cranelift then treats the
    // whole multiply-add tree as used twice and folds no load into its user.) Cranelift emits a
    // pure value where it is first needed, and inside the body that is the back edge: with
    // several k steps per iteration each accumulator's chain through all of them would come out
    // together, keeping every step's B vectors live, so x86 (16 registers) runs one step per
    // iteration.
    if kblk.kc / u > 0 {
        let lo = kb.iconst(0);
        let hi = kb.iconst((kblk.kc / u) as i64);
        kb.for_dyn(lo, hi, |kb, _| steps(kb, u));
    }
    if !kblk.kc.is_multiple_of(u) {
        steps(kb, kblk.kc % u);
    }
    epilogue(kb, p, consts, sh, &acc, yp, m0, n0, kblk.last);
}

/// Lanes of vector `c` that fall inside `width` columns.
fn lanes(width: usize, c: usize) -> usize {
    width.saturating_sub(c * 4).min(4)
}

/// One k step (`s` steps past the pointers) of a tile.
#[allow(clippy::too_many_arguments)]
fn k_step(
    kb: &mut Kb,
    tp: &TilePtrs,
    sh: Shape,
    acc: &[Vec<Variable>],
    pa: Ptr,
    pb: Ptr,
    s: i64,
    by_lane: bool,
) {
    let boff = s * tp.b_k;
    let bv: Vec<Value> = (0..sh.nv)
        .map(|v| operand_load(kb, F32X4, pb, boff + v as i64 * 16))
        .collect();
    let bs: Vec<Value> = (0..sh.ns)
        .map(|c| operand_load(kb, F32, pb, boff + ((sh.nv * 4 + c) * 4) as i64))
        .collect();
    let aoff = s * tp.a_k;
    let avec: Vec<Value> = if by_lane {
        (0..sh.rows.div_ceil(4))
            .map(|q| operand_load(kb, F32X4, pa, aoff + q as i64 * 16))
            .collect()
    } else {
        Vec::new()
    };
    for (r, acc_r) in acc.iter().enumerate() {
        let off = (aoff + r as i64 * tp.a_r) as i32;
        if sh.nv > 0 {
            // The broadcast A element is the first multiplicand: x86's FMA overwrites it (and
            // keeps the B vectors, which every row reuses).
            for (v, &b) in bv.iter().enumerate() {
                let a = if by_lane {
                    lane_splat(kb, avec[r / 4], (r % 4) as u8)
                } else if kb.cfg.aarch64 {
                    // `fmla` takes the element from lane 0 of a register: one load per row.
                    let x = operand_load(kb, F32, pa, off as i64);
                    kb.splat(x)
                } else if !kb.cfg.fma {
                    // Without AVX a broadcast is a load and a shuffle: one per row, shared.
                    broadcast(kb, pa, off as i64, 0)
                } else {
                    broadcast(kb, pa, off as i64, v)
                };
                let cur = kb.get(acc_r[v]);
                let nxt = kb.mul_add(a, b, cur);
                kb.set(acc_r[v], nxt);
            }
        }
        if sh.ns > 0 {
            let x = operand_load(kb, F32, pa, off as i64);
            for (c, &b) in bs.iter().enumerate() {
                let cur = kb.get(acc_r[sh.nv + c]);
                let nxt = kb.mul_add(x, b, cur);
                kb.set(acc_r[sh.nv + c], nxt);
            }
        }
    }
}

/// A load of an A or B element in the micro-kernel: on x86_64 marked `readonly` and `can_move`, on
/// aarch64 a plain load that stays where it is written.
///
/// On x86_64 the flags make it a pure value to Cranelift's optimizer, which then places it right
/// before its first use instead of keeping every load of the loop body in program order ahead of
/// the FMAs (which spills the whole tile with 16 registers). It is sound for the way the kernels use it: A and B are never
/// written while the product runs, and the one operand written by the same kernel (a
/// convolution's column matrix) is written before the product reads it, by code that precedes it
/// in the same loop iteration, at addresses that depend on that iteration's tile indices, so no
/// read can be hoisted above the write.
///
/// On aarch64 the 32 registers hold a whole k step's operands beside the 16 accumulators, so the
/// loads stay in program order, all of them ahead of the step's FMAs: in-order cores (Cortex-A53,
/// A55) then do not wait on a load right before its use. `python3 scripts/mca_kernels.py` (llvm-mca)
/// puts the tile at 65-73% of the A53's FMA peak this way, against 23-47% with every load placed
/// before its first use, and at 100% either way on the out-of-order A57/A72 and M1 models.
fn operand_load(kb: &mut Kb, ty: Type, p: Ptr, off: i64) -> Value {
    let mut f = if kb.cfg.aarch64 {
        MemFlagsData::new().with_notrap()
    } else {
        MemFlagsData::new()
            .with_notrap()
            .with_readonly()
            .with_can_move()
    };
    if !ty.is_vector() {
        f = f.with_aligned();
    }
    kb.b.ins().load(ty, f, p.v, off as i32)
}

/// The A element at `p + off` in every lane, for the `v`-th multiply-add of the row.
///
/// Each multiply-add gets its own load, so that on x86 every broadcast is a `vbroadcastss` from
/// memory used once: the FMA then overwrites it in place. A broadcast shared by two FMAs would be
/// a separate load and register broadcast (Cranelift sinks a load only into a single user) plus a
/// register copy before the first FMA. The address is written differently for each `v` (base
/// `p + off + 4v`, offset `-4v`) so the optimizer does not merge the loads; the instruction
/// selector folds both back into the same addressing mode.
fn broadcast(kb: &mut Kb, p: Ptr, off: i64, v: usize) -> Value {
    let x = if v == 0 {
        operand_load(kb, F32, p, off)
    } else {
        let d = 4 * v as i64;
        let q = kb.b.ins().iadd_imm_s(p.v, off + d);
        operand_load(kb, F32, Ptr { v: q, ro: p.ro }, -d)
    };
    kb.splat(x)
}

/// Lane `l` of `v` in every lane, written as the byte shuffle aarch64's lowering turns into the
/// lane operand of `fmla v.4s, v.4s, v.s[l]` when it feeds an FMA.
fn lane_splat(kb: &mut Kb, v: Value, l: u8) -> Value {
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let x = kb.b.ins().bitcast(I8X16, le, v);
    let bytes: Vec<u8> = (0..4)
        .flat_map(|_| (0..4).map(move |k| 4 * l + k))
        .collect();
    let mask = kb.b.func.dfg.immediates.push(ConstantData::from(bytes));
    let s = kb.b.ins().shuffle(x, x, mask);
    kb.b.ins().bitcast(F32X4, le, s)
}

/// Loads lanes `[0, w)` of an f32x4 at `p + off` (the rest zero).
fn load_cols(kb: &mut Kb, p: Ptr, off: i32, w: usize) -> Value {
    if w >= 4 {
        return kb.load(F32X4, p, off);
    }
    let mut v = kb.fsplat(0.0);
    for l in 0..w {
        let x = kb.load(F32, p, off + (l * 4) as i32);
        v = kb.b.ins().insertlane(v, x, l as u8);
    }
    v
}

/// Stores lanes `[0, w)` of the f32x4 `v` at `p + off`.
fn store_cols(kb: &mut Kb, v: Value, p: Ptr, off: i32, w: usize) {
    if w >= 4 {
        kb.store(v, p, off);
        return;
    }
    for l in 0..w {
        let x = kb.b.ins().extractlane(v, l as u8);
        kb.store(x, p, off + (l * 4) as i32);
    }
}

/// The vector constants of one product's epilogues (alpha, beta, the activations' coefficients),
/// kept in a stack slot of the kernel and loaded where they are used.
///
/// A constant is a pure value to Cranelift, so its egraph elaboration hoists it out of every loop
/// to the function entry; the epilogue's constants would then be live through the micro-kernel's
/// k loop, which needs all but one of x86's 16 vector registers, and push accumulators onto the
/// stack or into register shuffles there (a fused relu6 kept `0` and `6` in xmm0/xmm1 across
/// MobileNetV2's k loops, which then spilled an accumulator and a pointer every k step).
/// Cranelift rematerializes scalar constants in each block that uses them, but not vector splats.
/// A plain load (neither `readonly` nor `can_move`) stays where it is written, and every epilogue
/// store is a fence to Cranelift's alias analysis (it has no alias region), so neither the table's
/// initial stores nor a previous tile's loads are forwarded to a later tile's loads: a constant
/// lives from its load to its last use in one tile's epilogue, and on x86 a load used once folds
/// into its instruction as a memory operand.
///
/// The activations are emitted by the code the elementwise kernels use (`unary_float`, and the
/// math emitters of the runtime crate, which build their own constants), so instead of giving all
/// of them a constant source, [`EpilogueConsts::from_memory`] turns the vector constants they
/// emitted into loads afterwards. The elementwise kernels keep theirs in registers: their loops
/// have registers to spare.
#[derive(Default)]
pub(crate) struct EpilogueConsts {
    table: RefCell<ConstTable>,
}

#[derive(Default)]
struct ConstTable {
    /// The stack slot, once there is a constant.
    slot: Option<StackSlot>,
    /// The 16 bytes of each entry, in slot order.
    entries: Vec<[u8; 16]>,
}

impl EpilogueConsts {
    /// Runs `emit`, then turns every vector constant (a splat of a scalar constant, or a `vconst`)
    /// it emitted into a load from the table.
    // Named for where the constants come from, not a conversion of `self`.
    #[allow(clippy::wrong_self_convention)]
    pub(crate) fn from_memory(&self, kb: &mut Kb, emit: impl FnOnce(&mut Kb) -> Value) -> Value {
        let first = kb.b.func.dfg.num_insts();
        let y = emit(kb);
        let last = kb.b.func.dfg.num_insts();
        for i in first..last {
            let inst = Inst::new(i);
            if kb.b.func.layout.inst_block(inst).is_none() {
                continue;
            }
            if let Some((ty, bytes)) = vector_constant(kb.b.func, inst) {
                let (slot, off) = self.entry(kb, bytes);
                // The constant's result value becomes the load's.
                kb.b.func.replace(inst).stack_load(I64, ty, slot, off);
            }
        }
        y
    }

    /// The slot and byte offset of the entry holding `bytes`. A new entry is stored at the top of
    /// the function's entry block, which dominates every use.
    fn entry(&self, kb: &mut Kb, bytes: [u8; 16]) -> (StackSlot, i32) {
        let mut t = self.table.borrow_mut();
        let slot = *t.slot.get_or_insert_with(|| {
            kb.b.func
                .create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 0, 4))
        });
        if let Some(i) = t.entries.iter().position(|e| *e == bytes) {
            return (slot, 16 * i as i32);
        }
        let off = 16 * t.entries.len() as i32;
        t.entries.push(bytes);
        kb.b.func.sized_stack_slots[slot].size = 16 * t.entries.len() as u32;
        let c =
            kb.b.func
                .dfg
                .constants
                .insert(ConstantData::from(&bytes[..]));
        let entry =
            kb.b.func
                .layout
                .entry_block()
                .expect("a kernel has an entry block");
        let mut cur = FuncCursor::new(kb.b.func).at_first_insertion_point(entry);
        let v = cur.ins().vconst(I8X16, c);
        cur.ins().stack_store(I64, v, slot, off);
        (slot, off)
    }
}

/// The type and bytes of the 128-bit vector constant `inst` defines, if it is one: a `splat` of
/// an `f32const`, `f64const` or `iconst`, or a `vconst`.
fn vector_constant(f: &Function, inst: Inst) -> Option<(Type, [u8; 16])> {
    let ty = f.dfg.value_type(*f.dfg.inst_results(inst).first()?);
    if !ty.is_vector() || ty.bits() != 128 {
        return None;
    }
    let mut bytes = [0u8; 16];
    match f.dfg.insts[inst] {
        InstructionData::Unary {
            opcode: Opcode::Splat,
            arg,
        } => {
            let ValueDef::Result(def, _) = f.dfg.value_def(arg) else {
                return None;
            };
            let bits = match f.dfg.insts[def] {
                InstructionData::UnaryIeee32 {
                    opcode: Opcode::F32const,
                    imm,
                } => u64::from(imm.bits()),
                InstructionData::UnaryIeee64 {
                    opcode: Opcode::F64const,
                    imm,
                } => imm.bits(),
                InstructionData::UnaryImm {
                    opcode: Opcode::Iconst,
                    imm,
                } => imm.bits() as u64,
                _ => return None,
            };
            // Both targets are little-endian: each lane's bytes low first.
            let lane = ty.lane_bits() as usize / 8;
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = (bits >> (8 * (i % lane))) as u8;
            }
        }
        InstructionData::UnaryConst {
            opcode: Opcode::Vconst,
            constant_handle,
        } => {
            let data = f.dfg.constants.get(constant_handle).as_slice();
            bytes.copy_from_slice(data.get(..16)?);
        }
        _ => return None,
    }
    Some((ty, bytes))
}

/// Stores a tile: the partial sums, or after the last k block `alpha * acc + beta * C` through
/// the activations.
#[allow(clippy::too_many_arguments)]
fn epilogue(
    kb: &mut Kb,
    p: &Product,
    consts: &EpilogueConsts,
    sh: Shape,
    acc: &[Vec<Variable>],
    yp: Ptr,
    m0: Value,
    n0: Value,
    last: bool,
) {
    if !(last && p.post.iter().any(needs_registers)) {
        store_tile(kb, p, sh, acc, yp, m0, n0, last.then_some(consts));
        return;
    }
    // The raw tile first, which ends the accumulators' live ranges, then the epilogue row by row
    // from L1 with every register free. Applied to the accumulators in registers, a sigmoid or
    // GELU (dozens of instructions and temporaries) made the register allocator keep the whole
    // tile on the stack through the k loop: yolo_style with its SiLUs fused took 86 ms instead of
    // 33. Cranelift's alias analysis forwards a stored value only to a load right after that
    // store, and the reloads start from the tile's first vector, so the accumulators are not
    // carried past the stores (but for a one-vector tile, which is harmless).
    store_tile(kb, p, sh, acc, yp, m0, n0, None);
    kb.for_n(sh.rows, |kb, r| {
        let row = kb.index(yp, r, p.y.rs);
        let crow = p.add.map(|ad| {
            let c0 = kb.index(ad.c.p, m0, ad.c.rs);
            let c0 = kb.index(c0, r, ad.c.rs);
            (ad, kb.index(c0, n0, ad.c.cs))
        });
        for c in 0..sh.nv + sh.ns {
            let (ty, w, col) = tile_col(sh, c);
            if w == 0 {
                continue;
            }
            let off = (col * 4) as i32;
            let y = if ty == F32X4 {
                load_cols(kb, row, off, w)
            } else {
                kb.load(F32, row, off)
            };
            let y = consts.from_memory(kb, |kb| finish(kb, p, ty, y, crow, col, w));
            store_col(kb, y, row, off, w);
        }
    });
}

/// Whether an activation needs more registers than a tile's accumulators leave free: everything
/// but the clamps (relu, clip: one instruction each on x86) goes through a second pass over the
/// stored tile.
fn needs_registers(op: &UnaryOp) -> bool {
    !matches!(op, UnaryOp::Relu | UnaryOp::Clip { .. })
}

/// The type, stored width and first column of accumulator column `c` of a tile.
fn tile_col(sh: Shape, c: usize) -> (Type, usize, usize) {
    if c < sh.nv {
        (F32X4, lanes(sh.width, c), c * 4)
    } else {
        (F32, 1, sh.nv * 4 + (c - sh.nv))
    }
}

/// Stores the `w` columns of `y` (an f32x4, or an f32 when `w` is 1 and `y` scalar) at `p + off`.
fn store_col(kb: &mut Kb, y: Value, p: Ptr, off: i32, w: usize) {
    if kb.b.func.dfg.value_type(y) == F32X4 {
        store_cols(kb, y, p, off, w);
    } else {
        kb.store(y, p, off);
    }
}

/// Stores the accumulators of a tile, through the epilogue (with its constants from `consts`)
/// when there is one.
#[allow(clippy::too_many_arguments)]
fn store_tile(
    kb: &mut Kb,
    p: &Product,
    sh: Shape,
    acc: &[Vec<Variable>],
    yp: Ptr,
    m0: Value,
    n0: Value,
    consts: Option<&EpilogueConsts>,
) {
    for (r, acc_r) in acc.iter().enumerate() {
        let yoff = (r as i64 * p.y.rs) as i32;
        let crow = match consts {
            Some(_) => p.add.map(|ad| {
                let row = kb.index(ad.c.p, m0, ad.c.rs);
                let row = kb.offset(row, r as i64 * ad.c.rs);
                let cp = kb.index(row, n0, ad.c.cs);
                (ad, cp)
            }),
            None => None,
        };
        for (c, &a) in acc_r.iter().enumerate() {
            let (ty, w, col) = tile_col(sh, c);
            if w == 0 {
                continue;
            }
            let mut y = kb.get(a);
            if let Some(consts) = consts {
                y = consts.from_memory(kb, |kb| finish(kb, p, ty, y, crow, col, w));
            }
            store_col(kb, y, yp, yoff + (col * 4) as i32, w);
        }
    }
}

/// `alpha * y + beta * C` through the activations, for the columns `[col, col + w)` of a row
/// whose C row is at `crow`.
fn finish(
    kb: &mut Kb,
    p: &Product,
    ty: Type,
    mut y: Value,
    crow: Option<(Addend, Ptr)>,
    col: usize,
    w: usize,
) -> Value {
    if p.alpha != 1.0 {
        let al = kb.fconst_ty(ty, p.alpha);
        y = kb.b.ins().fmul(y, al);
    }
    if let Some((ad, cp)) = crow {
        // Loaded as ordinary memory even when C is a weight: a `can_move` load of the bias depends
        // only on the tile's row (conv) or column (gemm), so Cranelift would hoist it out of the
        // loop over the other tiles and keep it in a register through their k loops.
        let cp = Ptr { v: cp.v, ro: false };
        let c = if ad.c.cs == 0 {
            let s = kb.load(F32, cp, 0);
            if ty == F32X4 {
                kb.splat(s)
            } else {
                s
            }
        } else if ty == F32 {
            kb.load(F32, cp, (col as i64 * ad.c.cs) as i32)
        } else if ad.c.cs == 4 {
            load_cols(kb, cp, (col * 4) as i32, w)
        } else {
            let mut v = kb.fsplat(0.0);
            for l in 0..w {
                let x = kb.load(F32, cp, ((col + l) as i64 * ad.c.cs) as i32);
                v = kb.b.ins().insertlane(v, x, l as u8);
            }
            v
        };
        y = if ad.beta != 1.0 {
            let bt = kb.fconst_ty(ty, ad.beta);
            kb.mul_add(c, bt, y)
        } else {
            kb.b.ins().fadd(y, c)
        };
    }
    for &op in &p.post {
        // On vectors, relu and clip as the depthwise kernels apply them: one `maxps`/`minps` on
        // x86 instead of the eight instructions of Cranelift's `fmax` (NaN still propagates; a -0
        // stays -0 where the separate elementwise kernel gives +0).
        y = if ty == F32X4 {
            activation(kb, op, y)
        } else {
            unary_float(kb, op, y)
        };
    }
    y
}

/// A product with `k == 0`: every output is the epilogue of 0.
fn zero_k(kb: &mut Kb, p: &Product, t: &Tiling, t0: Value, t1: Value, consts: &EpilogueConsts) {
    let n = p.n as i64;
    let nr = t.nr as i64;
    let c0 = kb.b.ins().imul_imm_s(t0, nr);
    let c1 = kb.b.ins().imul_imm_s(t1, nr);
    let nn = kb.iconst(n);
    let lt = kb.b.ins().icmp(IntCC::SignedLessThan, c1, nn);
    let c1 = kb.b.ins().select(lt, c1, nn);
    kb.for_n(p.m, |kb, i| {
        let crow = p.add.map(|ad| (ad, kb.index(ad.c.p, i, ad.c.rs)));
        let yrow = kb.index(p.y.p, i, p.y.rs);
        kb.for_dyn(c0, c1, |kb, j| {
            let y = kb.fconst(0.0);
            let crow = crow.map(|(ad, cp)| (ad, kb.index(cp, j, ad.c.cs)));
            let y = consts.from_memory(kb, |kb| finish(kb, p, F32, y, crow, 0, 1));
            let yp = kb.index(yrow, j, 4);
            kb.store(y, yp, 0);
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_a_interleaves_rows_and_pads() {
        // A = [[1, 2], [3, 4], [5, 6]] (3 x 2), mr = 2: panels [[1,3],[2,4]], [[5,0],[6,0]].
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(
            pack_a(&a, 3, 2, 2, 1, 2),
            vec![1.0, 3.0, 2.0, 4.0, 5.0, 0.0, 6.0, 0.0]
        );
        // The same matrix stored transposed (column-major).
        let at = [1.0, 3.0, 5.0, 2.0, 4.0, 6.0];
        assert_eq!(pack_a(&at, 3, 2, 1, 3, 2), pack_a(&a, 3, 2, 2, 1, 2));
    }

    #[test]
    fn pack_b_interleaves_columns_and_pads() {
        // B = [[1, 2, 3], [4, 5, 6]] (2 x 3), nr = 2: panels [[1,2],[4,5]], [[3,0],[6,0]].
        let b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(
            pack_b(&b, 2, 3, 3, 1, 2),
            vec![1.0, 2.0, 4.0, 5.0, 3.0, 0.0, 6.0, 0.0]
        );
    }

    #[test]
    fn k_blocks_cover_k_exactly() {
        let t = Tiling::portable();
        for m in [1, 64, 200, 1000] {
            for k in [1, 3, 4, 255, 256, 257, 300, 576, 1024, 4608, 1001] {
                let (count, len) = t.k_blocks(k, m);
                assert!(count >= 1);
                let last = k - (count - 1) * len;
                assert!(last >= 1 && last <= len, "k {k}: {count} x {len}");
                if count > 1 {
                    assert_eq!(len % t.unroll, 0);
                    assert!(len <= 3 * t.kc);
                }
            }
        }
        // Many rows: blocks of about kc (576 = 3 x 192). Few rows: one block up to 3 kc.
        assert_eq!(t.k_blocks(200, 1000), (1, 200));
        assert_eq!(t.k_blocks(576, 1000), (3, 192));
        assert_eq!(t.k_blocks(576, 64), (1, 576));
        assert_eq!(t.k_blocks(1152, 128), (3, 384));
    }
}
