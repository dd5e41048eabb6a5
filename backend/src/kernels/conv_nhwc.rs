//! Channels-last (NHWC) 2-D convolution (group 1) as one matrix product over every output
//! position of the batch: `Y[P, M] = Col[P, K] x W[K, M]`, `P = N * OH * OW`, `K = kh * kw * C`
//! in `(ky, kx, c)` order.
//!
//! The weights are the product's right operand, packed at compile time into the micro-kernel's
//! column panels (`gemm::pack_b`, `[M/nr][K][nr]`), so the product is vectorized over output
//! channels: with `M` a multiple of 8 no lane is wasted however few positions there are (the
//! channels-first kernel vectorizes over positions and wastes the tail of every 7x7 plane). The
//! output rows are NHWC rows, written in place.
//!
//! The left operand is read as a strided matrix. A pointwise convolution (1x1, stride 1, no
//! padding) needs no copy: `[P x C]` is the input itself. Otherwise an im2col copy writes the rows
//! of one block of positions into scratch just before the product reads them, while they are in
//! L2: each row is, kernel row by kernel row, the `kw * C` contiguous input floats under the
//! window (one block copy when the dilation is 1), zeros in the padding.
//!
//! Work is cut into units of one block of rows (and, when there are few blocks, one group of
//! column tiles of it). A part takes a range of units and writes its copies into its own slot of
//! the scratch (the slot of its first unit), so parts write disjoint memory; a part that moves
//! to the next column group of the same block reuses the copy it already made. Every output
//! element is computed by the same operations whatever the parts (the product's k blocking
//! depends only on the block's static row count), so parallel runs are bitwise serial.

use super::depthwise::Win;
use super::gemm::{pack_b, product, Addend, Lhs, Mat, Product, Rhs, Tiling};
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I64, I8};
use cranelift_codegen::ir::{InstBuilder, Value};
use kiln_ir::ops::UnaryOp;

/// Static description of a channels-last 2-D convolution with one group.
#[derive(Clone, Debug)]
pub(crate) struct NhwcConv {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Output channels.
    pub m: usize,
    /// The window: input, output and kernel sizes, strides, dilations, top and left padding.
    pub win: Win,
    /// A bias operand is present.
    pub bias: bool,
    /// Activations applied in order to every output before it is stored.
    pub post: Vec<UnaryOp>,
}

/// How [`conv_kernel`] cuts and feeds the product.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NhwcPlan {
    /// The micro-kernel's tiling.
    pub tiling: Tiling,
    /// The weights operand is packed by [`NhwcConv::pack_weights`] (a derived constant);
    /// otherwise it is the OIHW tensor, transposed into scratch at run time.
    pub packed_w: bool,
    /// Rows (output positions) per block.
    pub rows: usize,
    /// Blocks (the last may be shorter).
    pub blocks: usize,
    /// Column groups per block.
    pub col_groups: usize,
}

/// Work units a convolution is cut into at least, when its blocks allow (a few threads' worth).
const MIN_UNITS: usize = 8;

/// Row tiles per block at least, when blocks are made smaller to make more work units.
const MIN_BLOCK_TILES: usize = 4;

/// Floats of im2col rows per block: 256 KiB, which L2 keeps between the copy and the product.
const BLOCK_FLOATS: usize = 64 * 1024;

impl NhwcConv {
    /// Output positions of the batch (rows of the product).
    pub(crate) fn positions(&self) -> usize {
        self.n * self.win.oh * self.win.ow
    }

    /// Reduction length of the product.
    pub(crate) fn k_len(&self) -> usize {
        self.win.kh * self.win.kw * self.c
    }

    /// 1x1, stride 1, no padding: the input is the left operand, read in place.
    pub(crate) fn pointwise(&self) -> bool {
        self.win.kh == 1
            && self.win.kw == 1
            && self.win.sy == 1
            && self.win.sx == 1
            && self.win.pt == 0
            && self.win.pl == 0
            && self.win.oh == self.win.h
            && self.win.ow == self.win.w
    }

    /// Whether the kernel copies the left operand (im2col) into scratch.
    fn copies(&self) -> bool {
        !self.pointwise() && self.k_len() > 0
    }

    /// The plan for the tiling `t`.
    pub(crate) fn plan(&self, t: Tiling, packed_w: bool) -> NhwcPlan {
        let (p, k) = (self.positions().max(1), self.k_len().max(1));
        // A copied block fills about BLOCK_FLOATS, but has at least as many rows as there are
        // output channels: the weights (K x M) are read again for every block, and with fewer
        // rows than M re-reading them would cost more than the copy. A pointwise convolution
        // copies nothing: its blocks are the product's own row blocks.
        let target = if self.copies() {
            (BLOCK_FLOATS / k).max(self.m).clamp(t.mr, t.mc)
        } else {
            t.mc
        };
        let mut blocks = p.div_ceil(target);
        if blocks < MIN_UNITS {
            // Few positions: smaller blocks (down to a few row tiles) before column groups.
            // Every part that works on a block copies it into its own slot, so column groups
            // multiply the scratch; smaller blocks only re-read the weights a few more times.
            blocks = MIN_UNITS
                .min(p.div_ceil(MIN_BLOCK_TILES * t.mr))
                .max(blocks);
        }
        // Even blocks, whole row tiles.
        let rows = p.div_ceil(blocks).div_ceil(t.mr) * t.mr;
        let blocks = p.div_ceil(rows);
        let col_groups = if blocks >= MIN_UNITS {
            1
        } else {
            MIN_UNITS.div_ceil(blocks).min(t.col_tiles(self.m)).max(1)
        };
        NhwcPlan {
            tiling: t,
            packed_w,
            rows,
            blocks,
            col_groups,
        }
    }

    /// Scratch bytes for the plan: the transposed weights when they are not packed, and one
    /// im2col block per work unit (a part writes only the slot of its first unit).
    pub(crate) fn scratch_bytes(&self, plan: &NhwcPlan) -> usize {
        let wt = if plan.packed_w {
            0
        } else {
            4 * self.k_len() * self.m
        };
        let col = if self.copies() {
            4 * plan.blocks * plan.col_groups * plan.rows * self.k_len()
        } else {
            0
        };
        wt + col
    }

    /// The weights `w` (OIHW `[M, C, kh, kw]`) as the packed right operand: `W[(ky, kx, c), m]`
    /// in `nr`-column panels.
    pub(crate) fn pack_weights(&self, w: &[f32], nr: usize) -> Vec<f32> {
        let (k, m) = (self.k_len(), self.m);
        let mut b = vec![0f32; k * m];
        for mo in 0..m {
            for ci in 0..self.c {
                for ky in 0..self.win.kh {
                    for kx in 0..self.win.kw {
                        let row = (ky * self.win.kw + kx) * self.c + ci;
                        b[row * m + mo] =
                            w[((mo * self.c + ci) * self.win.kh + ky) * self.win.kw + kx];
                    }
                }
            }
        }
        pack_b(&b, k, m, m, 1, nr)
    }
}

/// Channels-last convolution (group 1). Operands: x, w, [bias], y, [scratch].
pub(crate) fn conv_kernel(kb: &mut Kb, s: &NhwcConv, plan: &NhwcPlan) {
    let x = kb.args[0];
    let w = kb.args[1];
    let (bias, y, next) = if s.bias {
        (Some(kb.args[2]), kb.args[3], 4)
    } else {
        (None, kb.args[2], 3)
    };
    let scratch = kb.args.get(next).copied();
    let t = plan.tiling;
    let (p, k, m) = (s.positions(), s.k_len(), s.m);
    if p == 0 || m == 0 {
        return;
    }
    let (rhs, cols) = if plan.packed_w {
        (Rhs::Panels(w), scratch)
    } else {
        let Some(wt) = scratch else {
            unreachable!("run-time weights have scratch for their transpose");
        };
        // OIHW [M][C][kh][kw] -> [kh][kw][C][M], before any product reads it (the step is not
        // split: every part would write it).
        let (kh, kw, c) = (s.win.kh as i64, s.win.kw as i64, s.c as i64);
        super::strided_copy(
            kb,
            &[s.win.kh, s.win.kw, s.c, s.m],
            w,
            &[kw * 4, 4, kh * kw * 4, c * kh * kw * 4],
            wt,
            &[kw * c * m as i64 * 4, c * m as i64 * 4, m as i64 * 4, 4],
            4,
        );
        let rows = Rhs::Rows(Mat {
            p: wt,
            rs: (m * 4) as i64,
            cs: 4,
        });
        (rows, Some(kb.offset(wt, (k * m * 4) as i64)))
    };
    let cols = cols.filter(|_| s.copies());
    let ct = t.col_tiles(m) as i64;
    let cg = plan.col_groups as i64;
    let units = plan.blocks * plan.col_groups;
    let (u0, u1) = kb.share(units);
    let slot = cols.map(|c| kb.index(c, u0, (plan.rows * k * 4) as i64));
    let last_rows = p - (plan.blocks - 1) * plan.rows;
    let add = bias.map(|bp| Addend {
        c: Mat {
            p: bp,
            rs: 0,
            cs: 4,
        },
        beta: 1.0,
    });
    kb.for_dyn(u0, u1, |kb, u| {
        let (blk, g) = if cg == 1 {
            (u, kb.iconst(0))
        } else {
            (kb.b.ins().udiv_imm_u(u, cg), kb.b.ins().urem_imm_u(u, cg))
        };
        // Column tiles [g * ct / cg, (g + 1) * ct / cg) of the block.
        let t0 = kb.b.ins().imul_imm_s(g, ct);
        let t0 = kb.b.ins().udiv_imm_u(t0, cg);
        let g1 = kb.b.ins().iadd_imm_s(g, 1);
        let t1 = kb.b.ins().imul_imm_s(g1, ct);
        let t1 = kb.b.ins().udiv_imm_u(t1, cg);
        let r0 = kb.b.ins().imul_imm_s(blk, plan.rows as i64);
        let a = match slot {
            None => Mat {
                p: kb.index(x, r0, (s.c * 4) as i64),
                rs: (s.c * 4) as i64,
                cs: 4,
            },
            Some(sl) => {
                // A part's first unit, and the first column group of every block, copy.
                let first = kb.b.ins().icmp(IntCC::Equal, u, u0);
                let g0 = kb.b.ins().icmp_imm_s(IntCC::Equal, g, 0);
                let fresh = kb.b.ins().bor(first, g0);
                kb.if_then(fresh, |kb| im2col(kb, s, plan.rows, x, sl, r0));
                Mat {
                    p: sl,
                    rs: (k * 4) as i64,
                    cs: 4,
                }
            }
        };
        let yb = kb.index(y, r0, (m * 4) as i64);
        let emit = |kb: &mut Kb, rows: usize| {
            let spec = Product {
                m: rows,
                n: m,
                k,
                alpha: 1.0,
                a: Lhs::Strided(a),
                b: rhs,
                y: Mat {
                    p: yb,
                    rs: (m * 4) as i64,
                    cs: 4,
                },
                add,
                post: s.post.clone(),
            };
            product(kb, &spec, &t, t0, t1, &mut |_, _, _| {});
        };
        if last_rows == plan.rows {
            emit(kb, plan.rows);
        } else {
            let is_last =
                kb.b.ins()
                    .icmp_imm_s(IntCC::Equal, blk, plan.blocks as i64 - 1);
            kb.if_else(is_last, |kb| emit(kb, last_rows), |kb| emit(kb, plan.rows));
        }
    });
}

/// Writes the im2col rows of positions `r0 .. min(r0 + rows, P)` to `dst` (`K` floats per row):
/// row `r`, entry `(ky, kx, c)` is `x[n, oy * sy - pt + ky * dy, ox * sx - pl + kx * dx, c]`
/// for position `r0 + r = (n, oy, ox)`, or 0 in the padding.
fn im2col(kb: &mut Kb, s: &NhwcConv, rows: usize, x: Ptr, dst: Ptr, r0: Value) {
    let p = s.positions() as i64;
    let k4 = (s.k_len() * 4) as i64;
    let c4 = (s.c * 4) as i64;
    let img = (s.win.h * s.win.w) as i64 * c4;
    let left = kb.iconst(p);
    let left = kb.b.ins().isub(left, r0);
    let cap = kb.iconst(rows as i64);
    let count = kb.b.ins().smin(left, cap);
    // Coordinates of the first position; the loop then steps them.
    let ox0 = kb.b.ins().urem_imm_u(r0, s.win.ow as i64);
    let q = kb.b.ins().udiv_imm_u(r0, s.win.ow as i64);
    let oy0 = kb.b.ins().urem_imm_u(q, s.win.oh as i64);
    let n0 = kb.b.ins().udiv_imm_u(q, s.win.oh as i64);
    let xn0 = kb.index(x, n0, img);
    let vox = kb.var(I64, ox0);
    let voy = kb.var(I64, oy0);
    let vxn = kb.var(I64, xn0.v);
    let zero = kb.iconst(0);
    kb.for_dyn(zero, count, |kb, r| {
        let (ox, oy) = (kb.get(vox), kb.get(voy));
        let xn = Ptr {
            v: kb.get(vxn),
            ro: x.ro,
        };
        let drow = kb.index(dst, r, k4);
        let iy0 = kb.b.ins().imul_imm_s(oy, s.win.sy as i64);
        let iy0 = kb.b.ins().iadd_imm_s(iy0, -(s.win.pt as i64));
        let ix0 = kb.b.ins().imul_imm_s(ox, s.win.sx as i64);
        let ix0 = kb.b.ins().iadd_imm_s(ix0, -(s.win.pl as i64));
        let inside_y = span_inside(kb, iy0, (s.win.kh - 1) * s.win.dy, s.win.h);
        let inside_x = span_inside(kb, ix0, (s.win.kw - 1) * s.win.dx, s.win.w);
        let inside = kb.b.ins().band(inside_y, inside_x);
        kb.if_else(
            inside,
            |kb| {
                // Every tap inside: kernel row by kernel row, contiguous when dx == 1.
                let src = kb.index(xn, iy0, s.win.w as i64 * c4);
                let src = kb.index(src, ix0, c4);
                for_each(kb, s.win.kh, &mut |kb, ky| {
                    let srow = kb.index(src, ky, (s.win.dy * s.win.w) as i64 * c4);
                    let d = kb.index(drow, ky, s.win.kw as i64 * c4);
                    if s.win.dx == 1 {
                        super::block_copy(kb, d, srow, s.win.kw * s.c * 4);
                    } else {
                        for kx in 0..s.win.kw {
                            let sp = kb.offset(srow, (kx * s.win.dx) as i64 * c4);
                            let dp = kb.offset(d, kx as i64 * c4);
                            super::block_copy(kb, dp, sp, s.c * 4);
                        }
                    }
                });
            },
            |kb| {
                // A border position: tap by tap, a copy or zeros.
                for_each(kb, s.win.kh, &mut |kb, ky| {
                    let kyd = kb.b.ins().imul_imm_s(ky, s.win.dy as i64);
                    let iy = kb.b.ins().iadd(iy0, kyd);
                    let row_ok =
                        kb.b.ins()
                            .icmp_imm_u(IntCC::UnsignedLessThan, iy, s.win.h as i64);
                    let d = kb.index(drow, ky, s.win.kw as i64 * c4);
                    kb.if_else(
                        row_ok,
                        |kb| {
                            let srow = kb.index(xn, iy, s.win.w as i64 * c4);
                            for_each(kb, s.win.kw, &mut |kb, kx| {
                                let kxd = kb.b.ins().imul_imm_s(kx, s.win.dx as i64);
                                let ix = kb.b.ins().iadd(ix0, kxd);
                                let ok = kb.b.ins().icmp_imm_u(
                                    IntCC::UnsignedLessThan,
                                    ix,
                                    s.win.w as i64,
                                );
                                let dp = kb.index(d, kx, c4);
                                kb.if_else(
                                    ok,
                                    |kb| {
                                        let sp = kb.index(srow, ix, c4);
                                        super::block_copy(kb, dp, sp, s.c * 4);
                                    },
                                    |kb| zero_fill(kb, dp, s.c * 4),
                                );
                            });
                        },
                        |kb| zero_fill(kb, d, s.win.kw * s.c * 4),
                    );
                });
            },
        );
        // Next position: ox, then oy, then the image.
        let ox1 = kb.b.ins().iadd_imm_s(ox, 1);
        let wrap = kb.b.ins().icmp_imm_s(IntCC::Equal, ox1, s.win.ow as i64);
        let z = kb.iconst(0);
        let ox1 = kb.b.ins().select(wrap, z, ox1);
        let step = kb.b.ins().uextend(I64, wrap);
        let oy1 = kb.b.ins().iadd(oy, step);
        let wrap2 = kb.b.ins().icmp_imm_s(IntCC::Equal, oy1, s.win.oh as i64);
        let oy1 = kb.b.ins().select(wrap2, z, oy1);
        let next_img = kb.b.ins().iadd_imm_s(xn.v, img);
        let xn1 = kb.b.ins().select(wrap2, next_img, xn.v);
        kb.set(vox, ox1);
        kb.set(voy, oy1);
        kb.set(vxn, xn1);
    });
}

/// Whether `i .. i + span` lies inside `0..len` (one unsigned compare; `i` may be negative).
fn span_inside(kb: &mut Kb, i: Value, span: usize, len: usize) -> Value {
    if span >= len {
        return kb.b.ins().iconst(I8, 0);
    }
    kb.b.ins()
        .icmp_imm_u(IntCC::UnsignedLessThanOrEqual, i, (len - 1 - span) as i64)
}

/// `body(i)` for `i` in `0..n`: unrolled (constant `i`) for short kernels, a loop otherwise.
fn for_each(kb: &mut Kb, n: usize, body: &mut dyn FnMut(&mut Kb, Value)) {
    const UNROLL: usize = 7;
    if n <= UNROLL {
        for i in 0..n {
            let v = kb.iconst(i as i64);
            body(kb, v);
        }
    } else {
        kb.for_n(n, |kb, i| body(kb, i));
    }
}

/// Zeros `bytes` (a multiple of 4) at `p`.
fn zero_fill(kb: &mut Kb, p: Ptr, bytes: usize) {
    let chunks = bytes / 16;
    let zv = kb.fsplat(0.0);
    if chunks <= 4 {
        for c in 0..chunks {
            kb.store(zv, p, (c * 16) as i32);
        }
    } else {
        kb.for_n(chunks, |kb, i| {
            let d = kb.index(p, i, 16);
            kb.store(zv, d, 0);
        });
    }
    let z = kb.fconst(0.0);
    for off in (chunks * 16..bytes).step_by(4) {
        kb.store(z, p, off as i32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(c: usize, m: usize, side: usize, k: usize, s: usize, p: usize) -> NhwcConv {
        let o = (side + 2 * p - k) / s + 1;
        NhwcConv {
            n: 1,
            c,
            m,
            win: Win {
                h: side,
                w: side,
                oh: o,
                ow: o,
                kh: k,
                kw: k,
                sy: s,
                sx: s,
                dy: 1,
                dx: 1,
                pt: p,
                pl: p,
            },
            bias: false,
            post: vec![],
        }
    }

    #[test]
    fn weights_pack_as_k_by_m() {
        // M = 2, C = 1, 1x2 kernel: W[(0,0,0)] = [w00, w10], W[(0,1,0)] = [w01, w11];
        // nr = 4 pads each k row to four columns.
        let mut s = conv(1, 2, 4, 1, 1, 0);
        s.win.kh = 1;
        s.win.kw = 2;
        let w = [1.0, 2.0, 3.0, 4.0]; // [m0: (1, 2)], [m1: (3, 4)]
        assert_eq!(
            s.pack_weights(&w, 4),
            vec![1.0, 3.0, 0.0, 0.0, 2.0, 4.0, 0.0, 0.0]
        );
    }

    #[test]
    fn plans_cover_every_row() {
        let t = Tiling::portable();
        for s in [
            conv(64, 64, 56, 3, 1, 1),
            conv(512, 512, 7, 3, 1, 1),
            conv(3, 64, 224, 7, 2, 3),
            conv(96, 24, 56, 1, 1, 0),
            conv(960, 160, 7, 1, 1, 0),
            conv(5, 3, 3, 3, 2, 1),
        ] {
            let pl = s.plan(t, true);
            let p = s.positions();
            assert_eq!(pl.rows % t.mr, 0);
            assert!(pl.blocks * pl.rows >= p && (pl.blocks - 1) * pl.rows < p);
            assert!(pl.col_groups >= 1 && pl.col_groups <= t.col_tiles(s.m));
        }
        // Few positions: blocks of four row tiles, then the columns shared out too. 49
        // positions: 3 blocks of 18 rows, 3 column groups.
        let s = conv(512, 512, 7, 3, 1, 1);
        let pl = s.plan(t, true);
        assert_eq!((pl.rows, pl.blocks, pl.col_groups), (18, 3, 3));
        assert_eq!(s.scratch_bytes(&pl), 4 * 9 * 18 * 4608);
        // 196 positions: 7 blocks of 30 rows, 2 column groups.
        let pl = conv(256, 256, 14, 3, 1, 1).plan(t, true);
        assert_eq!((pl.rows, pl.blocks, pl.col_groups), (30, 7, 2));
        // A pointwise conv copies nothing.
        let s = conv(96, 24, 56, 1, 1, 0);
        assert_eq!(s.scratch_bytes(&s.plan(t, true)), 0);
    }
}
