//! Winograd convolution `F(m x m, 3 x 3)` for dense 2-D 3x3 stride-1 convolutions (NCHW, f32).
//!
//! The output is cut into `m x m` tiles; tile `(ty, tx)` reads the `a x a` input patch
//! (`a = m + 2`) at `(ty * m - pad_top, tx * m - pad_left)`, zero outside the input. With the
//! transform matrices `B^T` (`a x a`), `G` (`a x 3`) and `A^T` (`m x a`) of the chosen
//! interpolation points,
//!
//! `Y[mo] = A^T [ sum_c (G g[mo, c] G^T) ⊙ (B^T d[c] B) ] A`,
//!
//! so each of the `a^2` transform points `xi` is one matrix product over the channels,
//! `M[xi] = U[xi] (M x C) x V[xi] (C x tiles)`: `a^2 / m^2` times fewer multiplies than the direct
//! form (2.25x for `F(2, 3)`, 4x for `F(4, 3)`), paid for with the two transforms (a few adds per
//! element) and a little precision.
//!
//! - `U = G g G^T` is computed at compile time in f64, rounded to f32 and packed per point by
//!   `gemm::pack_a` (the derived weights constant).
//! - Per run the tiles are processed in blocks of `nb` (a multiple of the micro-kernel's `nr`)
//!   sized so a block's `V` and `M` stay in L2: the input transform writes `V[xi]` of the block
//!   straight into the product's column panels (`[nb/nr][C][nr]` per point), the `a^2` products
//!   run through `gemm::product`, and the output transform reads `M` (`[M][a^2][nb]`), adds the
//!   bias, applies the fused activations and stores the tiles, clipped at the right and bottom
//!   edges.
//! - Both transforms work on four adjacent tiles at once (one f32x4 lane per tile). Four tiles in
//!   one tile row whose patches are inside the input gather their columns with vector loads and
//!   lane shuffles (even/odd lanes for `m = 2`, 4x4 transposes for `m = 4`), and store their
//!   outputs the same way when their tiles are inside the output; other groups (borders, groups
//!   that wrap to the next tile row, tiles past the last) go lane by lane with masked loads and
//!   stores.
//! - Work is shared in units of one block and one piece of the output channels: a layer with
//!   few blocks (the late, small feature maps) cuts its output channels into `split` pieces of
//!   whole row tiles so that two or four parts still get even shares. A part transforms the
//!   input of each block it has a piece of (parts sharing a block each transform it: the
//!   transform is a few adds per element against the products' `2 M` flops), then runs the
//!   products and the output transform of its pieces only. Each part running at the same time
//!   has its own scratch slot (a serial run uses the first); with more parts than slots, the
//!   extra parts have no work. Every output element's arithmetic is the same whichever part
//!   computes it (blocks and pieces are fixed at compile time, and the product computes each
//!   row and column the same way however they are cut), so any number of parts gives bitwise
//!   the serial result.

use super::conv::ConvSpec;
use super::elementwise::unary_float;
use super::gemm::{product, EpilogueConsts, Lhs, Mat, Product, Rhs, Tiling};
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I8X16};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Value};

/// The Winograd plan of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Winograd {
    /// Output tile size: 2 (`F(2x2, 3x3)`) or 4 (`F(4x4, 3x3)`).
    pub m: usize,
    /// Tiles per block (a multiple of the tiling's `nr`).
    pub nb: usize,
    /// Pieces the output channels are cut into per block (1: not cut).
    pub split: usize,
    /// Output channels per piece, a whole number of row tiles; the last piece has the rest
    /// (all of them when not cut).
    pub piece: usize,
    /// Scratch slots, one per part running at the same time (parts run at once need their own
    /// V and M): at most [`MAX_SLOTS`], and no more than the units of work.
    pub slots: usize,
}

/// Most scratch slots of one convolution, so the most parts it runs as at once.
const MAX_SLOTS: usize = 8;

/// Most pieces the output channels of a block are cut into.
const MAX_SPLIT: usize = 8;

/// Fewest row tiles in a piece of the output channels.
const MIN_PIECE_TILES: usize = 4;

/// Parts counts the work sharing is balanced for (a serial run, and the 2 and 4 cores of
/// typical edge boards).
const BALANCED_PARTS: [usize; 3] = [1, 2, 4];

/// Most bytes of scratch slots beyond the first.
const EXTRA_SLOT_BYTES: usize = 8 << 20;

/// Bytes of V and M scratch one block may take: half of the 1 MiB L2 of current x86 and arm
/// cores, leaving the rest to the product's packed weights and the input rows.
const BLOCK_BYTES: usize = 512 * 1024;

/// Most tiles in a block.
const MAX_BLOCK_TILES: usize = 512;

/// The transform matrices of `F(m, 3)`, exact in f64.
struct Mats {
    /// `B^T`, `a x a`.
    bt: Vec<Vec<f64>>,
    /// `G`, `a x 3`.
    g: Vec<Vec<f64>>,
    /// `A^T`, `m x a`.
    at: Vec<Vec<f64>>,
}

/// The matrices for output tile size `m` (2 or 4).
///
/// `F(2, 3)` interpolates at 0, 1, -1 and infinity: every coefficient is 0, ±1 or ±1/2.
/// `F(4, 3)` at 0, ±1, ±2 and infinity, scaled so `B^T` and `A^T` have small integer entries
/// (the scale lives in `G`, which is applied at compile time).
fn mats(m: usize) -> Mats {
    let rows = |r: &[&[f64]]| r.iter().map(|x| x.to_vec()).collect::<Vec<_>>();
    if m == 2 {
        Mats {
            bt: rows(&[
                &[1.0, 0.0, -1.0, 0.0],
                &[0.0, 1.0, 1.0, 0.0],
                &[0.0, -1.0, 1.0, 0.0],
                &[0.0, 1.0, 0.0, -1.0],
            ]),
            g: rows(&[
                &[1.0, 0.0, 0.0],
                &[0.5, 0.5, 0.5],
                &[0.5, -0.5, 0.5],
                &[0.0, 0.0, 1.0],
            ]),
            at: rows(&[&[1.0, 1.0, 1.0, 0.0], &[0.0, 1.0, -1.0, -1.0]]),
        }
    } else {
        assert_eq!(m, 4, "Winograd tiles are 2 or 4 wide");
        Mats {
            bt: rows(&[
                &[4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
                &[0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
                &[0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
                &[0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
                &[0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
                &[0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
            ]),
            g: rows(&[
                &[1.0 / 4.0, 0.0, 0.0],
                &[-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
                &[-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
                &[1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
                &[1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
                &[0.0, 0.0, 1.0],
            ]),
            at: rows(&[
                &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
                &[0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
                &[0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
                &[0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
            ]),
        }
    }
}

impl Winograd {
    /// The plan for `s` under the tiling `t`, if Winograd applies and pays: a dense 2-D 3x3
    /// convolution with unit strides and dilations and enough channels and outputs that the
    /// products dominate the transforms.
    ///
    /// `mode` (the user's `--winograd`) can turn it off or force a tile size wherever it applies.
    pub(crate) fn choose(s: &ConvSpec, t: &Tiling, mode: crate::Winograd) -> Option<Winograd> {
        let applies = s.group == 1
            && s.kernel == [3, 3]
            && s.strides == [1, 1]
            && s.dilations == [1, 1]
            && s.input.len() == 2
            && s.output.iter().all(|&o| o > 0)
            && s.c > 0
            && s.m > 0;
        if !applies {
            return None;
        }
        let cols = |m: usize| {
            let (th, tw) = tiles(s, m);
            (th * tw).div_ceil(t.nr) * t.nr
        };
        let m = match mode {
            crate::Winograd::Off => return None,
            crate::Winograd::F2 => 2,
            crate::Winograd::F4 => 4,
            crate::Winograd::Auto => {
                // Measured (tests/winograd.rs `probe_layers`, x86_64 with FMA, best ms per
                // layer, im2col / F(2) / F(4)): 64ch 56x56 5.5 / 2.7 / 1.9; 128ch 28x28 4.9 / 2.5 /
                // 1.7; 256ch 14x14 5.0 / 2.5 / 1.8; 512ch 7x7 5.9 / 4.3 / 8.1; 16->64 55x55 1.19 /
                // 0.70 / 0.52; 64->256 13x13 1.04 / 0.65 / 0.46; 16ch 80x80 0.70 / 0.56 / 0.35;
                // 64ch 20x20 0.67 / 0.35 / 0.29; 128ch 10x10 0.65 / 0.39 / 0.48. Whole ResNet-18
                // is faster with its 7x7 layers in F(2) too (p50 50-75 ms against 74-82 ms).
                // Fewer than 16 channels and outputs smaller than 7x7 were not measured and stay
                // with im2col (the transforms' share grows as the products shrink).
                let (oh, ow) = (s.output[0], s.output[1]);
                if s.c < 16 || s.m < 16 || oh * ow < 49 {
                    return None;
                }
                // Multiplies per channel pair: points x product columns (tiles rounded up to
                // whole column panels); F(4) must do fewer (it wins from 13x13 up, F(2) at
                // 7x7 to 10x10, where F(4)'s tiles fill only part of a panel).
                if 36 * cols(4) < 16 * cols(2) {
                    4
                } else {
                    2
                }
            }
        };
        let a2 = (m + 2) * (m + 2);
        let per_tile = 4 * a2 * (s.c + s.m);
        // A block holds what fits the L2 budget, but at least 32 tiles (or the whole image):
        // every block streams all the transformed weights through the products, which costs
        // more than V and M spilling to L3 (512ch 7x7: 8-tile blocks took 15 ms, one 16-tile
        // block 9 ms).
        let nb = (BLOCK_BYTES / per_tile)
            .clamp(32, MAX_BLOCK_TILES)
            .min(cols(m));
        let nb = (nb / t.nr).max(1) * t.nr;
        let nblocks = (tiles(s, m).0 * tiles(s, m).1).div_ceil(nb);
        let (split, piece) = split_channels(nblocks, s.m, t.mr);
        let mut wg = Winograd {
            m,
            nb,
            split,
            piece,
            slots: 1,
        };
        wg.slots = (nblocks * split)
            .min(MAX_SLOTS)
            .min(1 + EXTRA_SLOT_BYTES / wg.slot_bytes(s))
            .max(1);
        Some(wg)
    }

    /// Output channels of the last piece.
    fn last_piece(&self, s: &ConvSpec) -> usize {
        s.m - (self.split - 1) * self.piece
    }

    /// Points of the transform, `(m + 2)^2`.
    fn points(&self) -> usize {
        (self.m + 2) * (self.m + 2)
    }

    /// Floats of one point's packed weights.
    fn u_floats(&self, s: &ConvSpec, t: &Tiling) -> usize {
        s.m.div_ceil(t.mr) * t.mr * s.c
    }

    /// The transformed, packed weights `[xi][M/mr][C][mr]` of the OIHW weights `w`.
    pub(crate) fn transform_weights(&self, s: &ConvSpec, t: &Tiling, w: &[f32]) -> Vec<f32> {
        let mt = mats(self.m);
        let a = self.m + 2;
        let (mm, cc) = (s.m, s.c);
        // u[xi][mo][c] = (G g G^T)[i][j], xi = i * a + j.
        let mut u = vec![0f32; a * a * mm * cc];
        for mo in 0..mm {
            for c in 0..cc {
                let g = &w[(mo * cc + c) * 9..][..9];
                // G g: a x 3.
                let mut gg = vec![[0f64; 3]; a];
                for (i, row) in gg.iter_mut().enumerate() {
                    for (l, v) in row.iter_mut().enumerate() {
                        *v = (0..3).map(|k| mt.g[i][k] * g[k * 3 + l] as f64).sum();
                    }
                }
                for i in 0..a {
                    for j in 0..a {
                        let v: f64 = (0..3).map(|l| gg[i][l] * mt.g[j][l]).sum();
                        u[((i * a + j) * mm + mo) * cc + c] = v as f32;
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(self.points() * self.u_floats(s, t));
        for xi in 0..a * a {
            out.extend(super::gemm::pack_a(&u[xi * mm * cc..], mm, cc, cc, 1, t.mr));
        }
        out
    }

    /// Bytes of one scratch slot: one block's V and M, and a few bytes the masked stores of
    /// border tiles write their discarded lanes to.
    fn slot_bytes(&self, s: &ConvSpec) -> usize {
        4 * self.points() * self.nb * (s.c + s.m) + 64
    }

    /// Bytes of scratch: a slot per part run at the same time.
    pub(crate) fn scratch_bytes(&self, s: &ConvSpec) -> usize {
        self.slots * self.slot_bytes(s)
    }
}

/// How to cut `m` output channels (row tiles of `mr`) for `nblocks` blocks: `(split, piece)`,
/// pieces of `piece` channels and a last one of the rest.
///
/// Cutting lets parts share a layer with few blocks (the 7x7 and 14x14 maps of an image
/// classifier are one block each). The cut chosen spreads the units most evenly over
/// [`BALANCED_PARTS`] parts (the mean of each count's slowest share against an even one); ties
/// go to fewer pieces. A piece has at least [`MIN_PIECE_TILES`] row tiles.
fn split_channels(nblocks: usize, m: usize, mr: usize) -> (usize, usize) {
    let panels = m.div_ceil(mr);
    let mut best = (1, m);
    let mut best_cost = f64::INFINITY;
    for split in 1..=MAX_SPLIT {
        let per = panels.div_ceil(split);
        if split > 1 && (per < MIN_PIECE_TILES || per * (split - 1) >= panels) {
            // Pieces too small, or the last one would be empty.
            continue;
        }
        let units = nblocks * split;
        let cost = BALANCED_PARTS
            .iter()
            .map(|&p| (units.div_ceil(p) * p) as f64 / units as f64)
            .sum::<f64>()
            / BALANCED_PARTS.len() as f64;
        if cost < best_cost - 1e-9 {
            best_cost = cost;
            best = if split == 1 {
                (1, m)
            } else {
                (split, per * mr)
            };
        }
    }
    best
}

/// Tile rows and columns of the output.
fn tiles(s: &ConvSpec, m: usize) -> (usize, usize) {
    (s.output[0].div_ceil(m), s.output[1].div_ceil(m))
}

/// Everything the kernel's pieces share: static sizes and the run-time pointers of the block.
struct Ctx<'a> {
    s: &'a ConvSpec,
    wg: Winograd,
    t: Tiling,
    mt: Mats,
    /// Tile columns and the tile count of one image.
    tw: usize,
    tiles: usize,
}

impl Ctx<'_> {
    fn a(&self) -> usize {
        self.wg.m + 2
    }
}

/// The Winograd convolution kernel. `w` holds [`Winograd::transform_weights`]; `scratch` has
/// [`Winograd::scratch_bytes`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn winograd_kernel(
    kb: &mut Kb,
    s: &ConvSpec,
    wg: &Winograd,
    t: &Tiling,
    x: Ptr,
    w: Ptr,
    bias: Option<Ptr>,
    y: Ptr,
    scratch: Ptr,
) {
    let (th, tw) = tiles(s, wg.m);
    let cx = Ctx {
        s,
        wg: *wg,
        t: *t,
        mt: mats(wg.m),
        tw,
        tiles: th * tw,
    };
    let a = cx.a();
    let a2 = a * a;
    let nb = wg.nb;
    let (h, wd) = (s.input[0], s.input[1]);
    let (oh, ow) = (s.output[0], s.output[1]);
    let nblocks = cx.tiles.div_ceil(nb);
    let v_point = (s.c * nb * 4) as i64;
    let u_point = (wg.u_floats(s, t) * 4) as i64;
    let consts = EpilogueConsts::default();
    // Units of work: block `bi`'s output-channel piece `r` is unit `bi * split + r`. A part
    // takes a range of units and the scratch slot of its index; parts past the slots take none.
    let split = wg.split;
    let units = (nblocks * split) as i64;
    let (u0, u1, slot) = match kb.part {
        None => {
            let lo = kb.iconst(0);
            let hi = kb.iconst(units);
            (lo, hi, lo)
        }
        Some((p, parts)) => {
            let cap = kb.iconst(wg.slots as i64);
            let fewer = kb.b.ins().icmp(IntCC::SignedLessThan, parts, cap);
            let active = kb.b.ins().select(fewer, parts, cap);
            let busy = kb.b.ins().icmp(IntCC::SignedLessThan, p, active);
            let zero = kb.iconst(0);
            let lo = kb.b.ins().imul_imm_s(p, units);
            let lo = kb.b.ins().udiv(lo, active);
            let p1 = kb.b.ins().iadd_imm_s(p, 1);
            let hi = kb.b.ins().imul_imm_s(p1, units);
            let hi = kb.b.ins().udiv(hi, active);
            let lo = kb.b.ins().select(busy, lo, zero);
            let hi = kb.b.ins().select(busy, hi, zero);
            let slot = kb.b.ins().select(busy, p, zero);
            (lo, hi, slot)
        }
    };
    let vbuf = kb.index(scratch, slot, wg.slot_bytes(s) as i64);
    let mbuf = kb.offset(vbuf, v_point * a2 as i64);
    let dummy = kb.offset(mbuf, (a2 * s.m * nb * 4) as i64);
    let m_row = (a2 * nb * 4) as i64;
    kb.for_n(s.n, |kb, n| {
        let xn = kb.index(x, n, (s.c * h * wd * 4) as i64);
        let yn = kb.index(y, n, (s.m * oh * ow * 4) as i64);
        // The blocks the units [u0, u1) touch.
        let lo = kb.b.ins().udiv_imm_u(u0, split as i64);
        let hi = kb.b.ins().iadd_imm_s(u1, split as i64 - 1);
        let hi = kb.b.ins().udiv_imm_u(hi, split as i64);
        kb.for_dyn(lo, hi, |kb, bi| {
            let tile0 = kb.b.ins().imul_imm_s(bi, nb as i64);
            // Tiles in this block: min(nb, tiles - tile0).
            let total = kb.iconst(cx.tiles as i64);
            let left = kb.b.ins().isub(total, tile0);
            let full = kb.iconst(nb as i64);
            let lt = kb.b.ins().icmp(IntCC::SignedLessThan, left, full);
            let count = kb.b.ins().select(lt, left, full);
            let panels = kb.b.ins().iadd_imm_s(count, t.nr as i64 - 1);
            let panels = kb.b.ins().udiv_imm_u(panels, t.nr as i64);
            // Input transform: every group of four tiles of the computed panels (tiles past the
            // last are zero columns).
            let groups = kb.b.ins().imul_imm_s(panels, (t.nr / 4) as i64);
            let zero = kb.iconst(0);
            kb.for_dyn(zero, groups, |kb, g| {
                let per = (t.nr / 4) as i64;
                let p = kb.b.ins().udiv_imm_u(g, per);
                let q = kb.b.ins().urem_imm_u(g, per);
                let dst = kb.index(vbuf, p, (s.c * t.nr * 4) as i64);
                let dst = kb.index(dst, q, 16);
                let t0 = kb.b.ins().imul_imm_s(g, 4);
                let t0 = kb.b.ins().iadd(tile0, t0);
                input_group(kb, &cx, &consts, xn, dst, t0, v_point);
            });
            // This part's pieces of the block: [r0, r1).
            let base = kb.b.ins().imul_imm_s(bi, split as i64);
            let r0 = kb.b.ins().isub(u0, base);
            let zero = kb.iconst(0);
            let neg = kb.b.ins().icmp(IntCC::SignedLessThan, r0, zero);
            let r0 = kb.b.ins().select(neg, zero, r0);
            let r1 = kb.b.ins().isub(u1, base);
            let all = kb.iconst(split as i64);
            let past = kb.b.ins().icmp(IntCC::SignedGreaterThan, r1, all);
            let r1 = kb.b.ins().select(past, all, r1);
            // One product per transform point and piece.
            kb.for_n(a2, |kb, xi| {
                let u = kb.index(w, xi, u_point);
                let v = kb.index(vbuf, xi, v_point);
                let mp = kb.index(mbuf, xi, (nb * 4) as i64);
                // Whole pieces in [r0, min(r1, split - 1)), then the last if it is ours.
                let piece = |kb: &mut Kb, r: Value, rows: usize| {
                    let spec = Product {
                        m: rows,
                        n: nb,
                        k: s.c,
                        alpha: 1.0,
                        a: Lhs::Panels(kb.index(u, r, (wg.piece * s.c * 4) as i64)),
                        b: Rhs::Panels(v),
                        y: Mat {
                            p: kb.index(mp, r, wg.piece as i64 * m_row),
                            rs: m_row,
                            cs: 4,
                        },
                        add: None,
                        post: vec![],
                    };
                    let zero = kb.iconst(0);
                    product(kb, &spec, t, zero, panels, &mut |_, _, _| {});
                };
                if split > 1 {
                    let whole = kb.iconst(split as i64 - 1);
                    let lt = kb.b.ins().icmp(IntCC::SignedLessThan, r1, whole);
                    let end = kb.b.ins().select(lt, r1, whole);
                    kb.for_dyn(r0, end, |kb, r| piece(kb, r, wg.piece));
                }
                let all = kb.iconst(split as i64);
                let ends = kb.b.ins().icmp(IntCC::Equal, r1, all);
                let some = kb.b.ins().icmp(IntCC::SignedLessThan, r0, r1);
                let ours = kb.b.ins().band(ends, some);
                kb.if_then(ours, |kb| {
                    let r = kb.iconst(split as i64 - 1);
                    piece(kb, r, wg.last_piece(s))
                });
            });
            // Output transform of the pieces' channels, one at a time.
            let ogroups = kb.b.ins().iadd_imm_s(count, 3);
            let ogroups = kb.b.ins().ushr_imm_s(ogroups, 2);
            let mlo = kb.b.ins().imul_imm_s(r0, wg.piece as i64);
            let mhi = kb.b.ins().imul_imm_s(r1, wg.piece as i64);
            let mm = kb.iconst(s.m as i64);
            let past = kb.b.ins().icmp(IntCC::SignedGreaterThan, mhi, mm);
            let mhi = kb.b.ins().select(past, mm, mhi);
            kb.for_dyn(mlo, mhi, |kb, mo| {
                let bv = bias.map(|bp| {
                    let bp = kb.index(bp, mo, 4);
                    // A plain load: a `can_move` one would be hoisted into a register held
                    // through the products.
                    let bp = Ptr { v: bp.v, ro: false };
                    kb.load(F32, bp, 0)
                });
                let src = kb.index(mbuf, mo, m_row);
                let yc = kb.index(yn, mo, (oh * ow * 4) as i64);
                let zero = kb.iconst(0);
                kb.for_dyn(zero, ogroups, |kb, g| {
                    let sg = kb.index(src, g, 16);
                    let t0 = kb.b.ins().imul_imm_s(g, 4);
                    let t0 = kb.b.ins().iadd(tile0, t0);
                    output_group(kb, &cx, &consts, sg, bv, yc, dummy, t0);
                });
            });
        });
    });
}

/// `sum_j c[j] * x[j]` over the non-zero coefficients (adds and subtracts for ±1).
fn combine(kb: &mut Kb, c: &[f64], x: &[Value]) -> Value {
    let mut acc: Option<Value> = None;
    for (&cj, &xj) in c.iter().zip(x) {
        if cj == 0.0 {
            continue;
        }
        acc = Some(match acc {
            None if cj == 1.0 => xj,
            None if cj == -1.0 => kb.b.ins().fneg(xj),
            None => {
                let k = kb.fsplat(cj as f32);
                kb.b.ins().fmul(xj, k)
            }
            Some(s) if cj == 1.0 => kb.b.ins().fadd(s, xj),
            Some(s) if cj == -1.0 => kb.b.ins().fsub(s, xj),
            Some(s) => {
                let k = kb.fsplat(cj as f32);
                kb.mul_add(xj, k, s)
            }
        });
    }
    acc.unwrap_or_else(|| kb.fsplat(0.0))
}

/// `L X R^T` for `X` given as rows of vectors (`L` is `p x q`, `X` is `q x r`, `R` is `s x r`).
fn sandwich(kb: &mut Kb, l: &[Vec<f64>], x: &[Vec<Value>], r: &[Vec<f64>]) -> Vec<Vec<Value>> {
    let q = x.len();
    let cols = x[0].len();
    // L X: p x r.
    let lx: Vec<Vec<Value>> = l
        .iter()
        .map(|li| {
            (0..cols)
                .map(|c| {
                    let col: Vec<Value> = (0..q).map(|k| x[k][c]).collect();
                    combine(kb, li, &col)
                })
                .collect()
        })
        .collect();
    lx.iter()
        .map(|row| r.iter().map(|rj| combine(kb, rj, row)).collect())
        .collect()
}

/// The f32x4 made of lanes `lanes` of `a` (0-3) and `b` (4-7), as a byte shuffle (Cranelift
/// matches the patterns used here to `shufps`/`unpcklps` on x86 and `uzp`/`zip` on aarch64).
fn shuf(kb: &mut Kb, a: Value, b: Value, lanes: [u8; 4]) -> Value {
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let a = kb.b.ins().bitcast(I8X16, le, a);
    let b = kb.b.ins().bitcast(I8X16, le, b);
    let bytes: Vec<u8> = lanes
        .iter()
        .flat_map(|&l| (0..4).map(move |k| 4 * l + k))
        .collect();
    let mask = kb.b.func.dfg.immediates.push(ConstantData::from(bytes));
    let r = kb.b.ins().shuffle(a, b, mask);
    kb.b.ins().bitcast(F32X4, le, r)
}

/// The 4x4 transpose of the rows `v`: element `l` of result `j` is element `j` of `v[l]`.
fn transpose4(kb: &mut Kb, v: [Value; 4]) -> [Value; 4] {
    let t0 = shuf(kb, v[0], v[1], [0, 1, 4, 5]);
    let t1 = shuf(kb, v[2], v[3], [0, 1, 4, 5]);
    let t2 = shuf(kb, v[0], v[1], [2, 3, 6, 7]);
    let t3 = shuf(kb, v[2], v[3], [2, 3, 6, 7]);
    [
        shuf(kb, t0, t1, [0, 2, 4, 6]),
        shuf(kb, t0, t1, [1, 3, 5, 7]),
        shuf(kb, t2, t3, [0, 2, 4, 6]),
        shuf(kb, t2, t3, [1, 3, 5, 7]),
    ]
}

/// Floats of an input row the vector gather of four tiles reads from the first tile's first
/// column: exactly the four patches' extent, `3m + a`.
fn gather_span(m: usize) -> usize {
    3 * m + m + 2
}

/// Column `c` (0..a) of four consecutive tiles' patches in one input row starting at `p` (lane
/// `l` is `p[m * l + c]`), for every `c`.
fn gather_row(kb: &mut Kb, m: usize, p: Ptr) -> Vec<Value> {
    if m == 2 {
        let a = kb.load(F32X4, p, 0);
        let b = kb.load(F32X4, p, 16);
        let c = kb.load(F32X4, p, 8);
        let d = kb.load(F32X4, p, 24);
        vec![
            shuf(kb, a, b, [0, 2, 4, 6]),
            shuf(kb, a, b, [1, 3, 5, 7]),
            shuf(kb, c, d, [0, 2, 4, 6]),
            shuf(kb, c, d, [1, 3, 5, 7]),
        ]
    } else {
        // Columns 0-3 transpose the vectors at 4l; columns 4 and 5 are lanes 2 and 3 of the
        // vectors at 4l + 2 (which read no further than the last patch's end).
        let r: [Value; 4] = std::array::from_fn(|l| kb.load(F32X4, p, 16 * l as i32));
        let q: [Value; 4] = std::array::from_fn(|l| kb.load(F32X4, p, 16 * l as i32 + 8));
        let lo = transpose4(kb, r);
        let hi = transpose4(kb, q);
        vec![lo[0], lo[1], lo[2], lo[3], hi[2], hi[3]]
    }
}

/// The input transform of the four tiles `t0 .. t0 + 4` of image `xn`, every channel, into the
/// V panels: point `xi`, channel `c` at `dst + xi * v_point + c * nr * 4` (four lanes).
fn input_group(
    kb: &mut Kb,
    cx: &Ctx,
    consts: &EpilogueConsts,
    xn: Ptr,
    dst: Ptr,
    t0: Value,
    v_point: i64,
) {
    let s = cx.s;
    let (m, a) = (cx.wg.m, cx.a());
    let (h, wd) = (s.input[0], s.input[1]);
    let (pt, pl) = (s.pads_begin[0] as i64, s.pads_begin[1] as i64);
    let plane = (h * wd * 4) as i64;
    let row_bytes = (cx.t.nr * 4) as i64;
    let span = gather_span(m);
    let ty0 = kb.b.ins().udiv_imm_u(t0, cx.tw as i64);
    let tx0 = kb.b.ins().urem_imm_u(t0, cx.tw as i64);
    let iy0 = kb.b.ins().imul_imm_s(ty0, m as i64);
    let iy0 = kb.b.ins().iadd_imm_s(iy0, -pt);
    let ix0 = kb.b.ins().imul_imm_s(tx0, m as i64);
    let ix0 = kb.b.ins().iadd_imm_s(ix0, -pl);
    // Vector path: four tiles of one row, not past the last tile, patches inside the input.
    let ok_t = if cx.tw >= 4 && h >= a && wd >= span {
        let ok_x =
            kb.b.ins()
                .icmp_imm_s(IntCC::SignedLessThan, tx0, cx.tw as i64 - 3);
        let t3 = kb.b.ins().iadd_imm_s(t0, 3);
        let ok_t =
            kb.b.ins()
                .icmp_imm_s(IntCC::SignedLessThan, t3, cx.tiles as i64);
        // 0 <= iy0 <= h - a and 0 <= ix0 <= wd - span, as unsigned compares.
        let ok_y =
            kb.b.ins()
                .icmp_imm_u(IntCC::UnsignedLessThanOrEqual, iy0, (h - a) as i64);
        let ok_c =
            kb.b.ins()
                .icmp_imm_u(IntCC::UnsignedLessThanOrEqual, ix0, (wd - span) as i64);
        let ok = kb.b.ins().band(ok_x, ok_t);
        let ok = kb.b.ins().band(ok, ok_y);
        kb.b.ins().band(ok, ok_c)
    } else {
        kb.iconst(0)
    };
    let store = |kb: &mut Kb, v: &[Vec<Value>], dc: Ptr| {
        for (i, row) in v.iter().enumerate() {
            for (j, &x) in row.iter().enumerate() {
                kb.store(x, dc, ((i * a + j) as i64 * v_point) as i32);
            }
        }
    };
    kb.if_else(
        ok_t,
        |kb| {
            let off = kb.b.ins().imul_imm_s(iy0, wd as i64);
            let off = kb.b.ins().iadd(off, ix0);
            let src = kb.index(xn, off, 4);
            kb.for_n(s.c, |kb, c| {
                let xc = kb.index(src, c, plane);
                let dc = kb.index(dst, c, row_bytes);
                let mut v = Vec::new();
                consts.from_memory(kb, |kb| {
                    let d: Vec<Vec<Value>> = (0..a)
                        .map(|r| {
                            let p = kb.offset(xc, (r * wd * 4) as i64);
                            gather_row(kb, m, p)
                        })
                        .collect();
                    v = sandwich(kb, &cx.mt.bt, &d, &cx.mt.bt);
                    v[0][0]
                });
                store(kb, &v, dc);
            });
        },
        |kb| {
            // Lane by lane: each patch element's offset, 0 (and the load discarded) outside the
            // input or for tiles past the last.
            let mut lanes: Vec<Vec<(Value, Value)>> = Vec::with_capacity(4);
            for l in 0..4 {
                let mut taps = Vec::with_capacity(a * a);
                let t = kb.b.ins().iadd_imm_s(t0, l as i64);
                let live =
                    kb.b.ins()
                        .icmp_imm_s(IntCC::SignedLessThan, t, cx.tiles as i64);
                let zero = kb.iconst(0);
                let t = kb.b.ins().select(live, t, zero);
                let ty = kb.b.ins().udiv_imm_u(t, cx.tw as i64);
                let tx = kb.b.ins().urem_imm_u(t, cx.tw as i64);
                let iy = kb.b.ins().imul_imm_s(ty, m as i64);
                let iy = kb.b.ins().iadd_imm_s(iy, -pt);
                let ix = kb.b.ins().imul_imm_s(tx, m as i64);
                let ix = kb.b.ins().iadd_imm_s(ix, -pl);
                for r in 0..a {
                    let yr = kb.b.ins().iadd_imm_s(iy, r as i64);
                    let oky = kb.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, yr, h as i64);
                    let oky = kb.b.ins().band(oky, live);
                    let ro = kb.b.ins().imul_imm_s(yr, wd as i64);
                    for c in 0..a {
                        let xc = kb.b.ins().iadd_imm_s(ix, c as i64);
                        let okx =
                            kb.b.ins()
                                .icmp_imm_u(IntCC::UnsignedLessThan, xc, wd as i64);
                        let ok = kb.b.ins().band(oky, okx);
                        let off = kb.b.ins().iadd(ro, xc);
                        let off = kb.b.ins().ishl_imm_s(off, 2);
                        let zero = kb.iconst(0);
                        let off = kb.b.ins().select(ok, off, zero);
                        taps.push((off, ok));
                    }
                }
                lanes.push(taps);
            }
            kb.for_n(s.c, |kb, c| {
                let xc = kb.index(xn, c, plane);
                let dc = kb.index(dst, c, row_bytes);
                let mut v = Vec::new();
                consts.from_memory(kb, |kb| {
                    let z = kb.fconst(0.0);
                    let d: Vec<Vec<Value>> = (0..a)
                        .map(|r| {
                            (0..a)
                                .map(|c| {
                                    let mut vec = kb.fsplat(0.0);
                                    for (l, taps) in lanes.iter().enumerate() {
                                        let (off, ok) = taps[r * a + c];
                                        let p = kb.at(xc, off);
                                        let x = kb.load(F32, p, 0);
                                        let x = kb.b.ins().select(ok, x, z);
                                        vec = kb.b.ins().insertlane(vec, x, l as u8);
                                    }
                                    vec
                                })
                                .collect()
                        })
                        .collect();
                    v = sandwich(kb, &cx.mt.bt, &d, &cx.mt.bt);
                    v[0][0]
                });
                store(kb, &v, dc);
            });
        },
    );
}

/// The output transform of the four tiles `t0 .. t0 + 4` of one output channel: `src` is their
/// first point's four values in M (point `xi` at `src + xi * nb * 4`), `bias` the channel's
/// bias, `yc` the channel's output plane; lanes of tiles past the last, and elements past the
/// output's edges, are stored to `dummy`.
#[allow(clippy::too_many_arguments)]
fn output_group(
    kb: &mut Kb,
    cx: &Ctx,
    consts: &EpilogueConsts,
    src: Ptr,
    bias: Option<Value>,
    yc: Ptr,
    dummy: Ptr,
    t0: Value,
) {
    let s = cx.s;
    let (m, a) = (cx.wg.m, cx.a());
    let (oh, ow) = (s.output[0], s.output[1]);
    let point = (cx.wg.nb * 4) as i64;
    let mut yv: Vec<Vec<Value>> = Vec::new();
    consts.from_memory(kb, |kb| {
        let mx: Vec<Vec<Value>> = (0..a)
            .map(|i| {
                (0..a)
                    .map(|j| kb.load(F32X4, src, ((i * a + j) as i64 * point) as i32))
                    .collect()
            })
            .collect();
        yv = sandwich(kb, &cx.mt.at, &mx, &cx.mt.at);
        for row in yv.iter_mut() {
            for v in row.iter_mut() {
                if let Some(b) = bias {
                    let bs = kb.splat(b);
                    *v = kb.b.ins().fadd(*v, bs);
                }
                for &op in &s.post {
                    *v = unary_float(kb, op, *v);
                }
            }
        }
        yv[0][0]
    });
    let ty0 = kb.b.ins().udiv_imm_u(t0, cx.tw as i64);
    let tx0 = kb.b.ins().urem_imm_u(t0, cx.tw as i64);
    // Vector path: four whole tiles of one row.
    let ok = if cx.tw >= 4 {
        let full_cols = (ow / m) as i64;
        let full_rows = (oh / m) as i64;
        let a1 =
            kb.b.ins()
                .icmp_imm_s(IntCC::SignedLessThanOrEqual, tx0, full_cols - 4);
        let a2 = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, ty0, full_rows);
        kb.b.ins().band(a1, a2)
    } else {
        kb.iconst(0)
    };
    kb.if_else(
        ok,
        |kb| {
            let y0 = kb.b.ins().imul_imm_s(ty0, (m * ow) as i64);
            let x0 = kb.b.ins().imul_imm_s(tx0, m as i64);
            let off = kb.b.ins().iadd(y0, x0);
            let p = kb.index(yc, off, 4);
            for (i, row) in yv.iter().enumerate() {
                let outs: Vec<Value> = if m == 2 {
                    vec![
                        shuf(kb, row[0], row[1], [0, 4, 1, 5]),
                        shuf(kb, row[0], row[1], [2, 6, 3, 7]),
                    ]
                } else {
                    transpose4(kb, [row[0], row[1], row[2], row[3]]).to_vec()
                };
                for (k, &v) in outs.iter().enumerate() {
                    kb.store(v, p, (i * ow * 4 + 16 * k) as i32);
                }
            }
        },
        |kb| {
            for l in 0..4u8 {
                let t = kb.b.ins().iadd_imm_s(t0, l as i64);
                let live =
                    kb.b.ins()
                        .icmp_imm_s(IntCC::SignedLessThan, t, cx.tiles as i64);
                let zero = kb.iconst(0);
                let t = kb.b.ins().select(live, t, zero);
                let ty = kb.b.ins().udiv_imm_u(t, cx.tw as i64);
                let tx = kb.b.ins().urem_imm_u(t, cx.tw as i64);
                let oy = kb.b.ins().imul_imm_s(ty, m as i64);
                let ox = kb.b.ins().imul_imm_s(tx, m as i64);
                for (i, row) in yv.iter().enumerate() {
                    let yi = kb.b.ins().iadd_imm_s(oy, i as i64);
                    let oky = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, yi, oh as i64);
                    let oky = kb.b.ins().band(oky, live);
                    let ro = kb.b.ins().imul_imm_s(yi, ow as i64);
                    for (j, &v) in row.iter().enumerate() {
                        let xj = kb.b.ins().iadd_imm_s(ox, j as i64);
                        let okx = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, xj, ow as i64);
                        let ok = kb.b.ins().band(oky, okx);
                        let off = kb.b.ins().iadd(ro, xj);
                        let p = kb.index(yc, off, 4);
                        let p = kb.b.ins().select(ok, p.v, dummy.v);
                        let e = kb.b.ins().extractlane(v, l);
                        kb.store(e, Ptr { v: p, ro: false }, 0);
                    }
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `A^T [(G g) ⊙ (B^T d)]` is the valid correlation of `d` (length a) with `g` (length 3),
    /// for both tile sizes, on data with a known exact answer.
    #[test]
    fn matrices_compute_1d_correlation() {
        for m in [2usize, 4] {
            let mt = mats(m);
            let a = m + 2;
            let d: Vec<f64> = (0..a)
                .map(|i| (i * i) as f64 - 2.5 * i as f64 + 1.0)
                .collect();
            let g = [0.75, -1.5, 2.0];
            let gg: Vec<f64> = (0..a)
                .map(|i| (0..3).map(|k| mt.g[i][k] * g[k]).sum())
                .collect();
            let bd: Vec<f64> = (0..a)
                .map(|i| (0..a).map(|k| mt.bt[i][k] * d[k]).sum())
                .collect();
            for i in 0..m {
                let y: f64 = (0..a).map(|k| mt.at[i][k] * gg[k] * bd[k]).sum();
                let want = d[i] * g[0] + d[i + 1] * g[1] + d[i + 2] * g[2];
                assert!((y - want).abs() < 1e-12, "m {m} y[{i}] = {y}, want {want}");
            }
        }
    }

    #[test]
    fn output_channels_are_cut_for_layers_of_few_blocks() {
        // One block, 512 channels in 86 row tiles of 6: 2 pieces leave 4 parts uneven (mean
        // slowest share (1 + 1 + 2) / 3), 3 pieces (1 + 4/3 + 4/3) / 3; 4 pieces of 22 tiles
        // (132 channels, the last 116) are even for 1, 2 and 4 parts. 8 ties and loses.
        assert_eq!(split_channels(1, 512, 6), (4, 132));
        // aarch64's 8-row tiles: 64 tiles, 4 pieces of 16.
        assert_eq!(split_channels(1, 512, 8), (4, 128));
        // Two blocks of 128 channels (22 tiles): 2 pieces of 11 tiles give 4 even units.
        assert_eq!(split_channels(2, 128, 6), (2, 66));
        // Seven blocks of 64 channels (11 tiles): 7 units share as 8/7 on 2 and 4 parts
        // (mean 1.095); 14 units as 1 and 16/14 (1.048); 21 as 22/21 and 24/21 (1.063).
        assert_eq!(split_channels(7, 64, 6), (2, 36));
        // Eight blocks already share evenly; 16 channels (3 tiles) cannot make 4-tile pieces.
        assert_eq!(split_channels(8, 256, 6), (1, 256));
        assert_eq!(split_channels(1, 16, 6), (1, 16));
    }

    #[test]
    fn gather_span_is_the_patches_extent() {
        // Four tiles m apart, each a = m + 2 wide: the last ends at 3m + m + 2.
        assert_eq!(gather_span(2), 10);
        assert_eq!(gather_span(4), 18);
    }
}
