//! The matrix-multiply core shared by Gemm, MatMul and Conv.
//!
//! `out[m, n] = alpha * sum_k A[m, k] * B[k, n] + beta * C[m, n]`, f32, with B's rows contiguous so
//! that the kernel vectorizes over n. The tile is 4 rows x 8 columns (eight f32x4 accumulators, two B
//! vectors and one broadcast A element in flight: 11 of the 16 vector registers x86 has), with 1-row,
//! 4-column and scalar-column tiles for the edges. Each accumulator is a loop-carried variable of the
//! k loop; A elements are broadcast from scalar loads, so A can have any strides (transposed A costs
//! nothing).

use super::elementwise::unary_float;
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;
use kiln_ir::ops::UnaryOp;

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

/// One matrix product.
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

const MR: usize = 4;

/// Emits the product.
///
/// Column blocks are the outer loop and row blocks the inner one, so a `k x 8` panel of B stays in
/// L1 while every row of A passes over it. In the products this serves, B is the big operand (the
/// column matrix of a convolution, the weights of a fully connected layer) and A is small or
/// reused (the filters, a handful of rows), so B is read from memory once.
pub(crate) fn gemm(kb: &mut Kb, g: &Gemm) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    let n8 = g.n / 8 * 8;
    let n4 = g.n / 4 * 4;
    if n8 > 0 {
        kb.for_range(0, n8 as i64, 8, |kb, n0| column_block(kb, g, n0, 2, true));
    }
    if n4 > n8 {
        let n0 = kb.iconst(n8 as i64);
        column_block(kb, g, n0, 1, true);
    }
    if g.n > n4 {
        kb.for_range(n4 as i64, g.n as i64, 1, |kb, n0| {
            column_block(kb, g, n0, 1, false)
        });
    }
}

/// All rows of the columns at `n0`: 4-row tiles, then single rows.
fn column_block(kb: &mut Kb, g: &Gemm, n0: Value, nv: usize, vector: bool) {
    let main_rows = g.m / MR * MR;
    if main_rows > 0 {
        kb.for_range(0, main_rows as i64, MR as i64, |kb, m0| {
            tile(kb, g, m0, MR, n0, nv, vector)
        });
    }
    if g.m > main_rows {
        kb.for_range(main_rows as i64, g.m as i64, 1, |kb, m0| {
            tile(kb, g, m0, 1, n0, nv, vector)
        });
    }
}

/// A `rows x (nv * 4)` tile (vector) or a `rows x 1` tile (scalar) at `(m0, n0)`.
fn tile(kb: &mut Kb, g: &Gemm, m0: Value, rows: usize, n0: Value, nv: usize, vector: bool) {
    let ty = if vector { F32X4 } else { F32 };
    let width: i32 = if vector { 16 } else { 4 };
    let zero = kb.fconst_ty(ty, 0.0);
    let acc: Vec<Vec<Variable>> = (0..rows)
        .map(|_| (0..nv).map(|_| kb.var(ty, zero)).collect())
        .collect();
    // Row pointers of A and the output, and column offset of B, fixed for the tile.
    let a_rows: Vec<Ptr> = (0..rows)
        .map(|r| {
            let p = kb.index(g.a.p, m0, g.a.rs);
            kb.offset(p, r as i64 * g.a.rs)
        })
        .collect();
    let b_col = kb.index(g.b.p, n0, g.b.cs);
    kb.for_n(g.k, |kb, k| {
        let bp = kb.index(b_col, k, g.b.rs);
        let bv: Vec<Value> = (0..nv).map(|v| kb.load(ty, bp, v as i32 * width)).collect();
        for (r, ap) in a_rows.iter().enumerate() {
            let app = kb.index(*ap, k, g.a.cs);
            let a = kb.load(F32, app, 0);
            let a = if vector { kb.splat(a) } else { a };
            for v in 0..nv {
                let cur = kb.get(acc[r][v]);
                let nxt = kb.mul_add(a, bv[v], cur);
                kb.set(acc[r][v], nxt);
            }
        }
    });
    let alpha = (g.alpha != 1.0).then(|| kb.fconst_ty(ty, g.alpha));
    let beta = g
        .add
        .and_then(|ad| (ad.beta != 1.0).then(|| kb.fconst_ty(ty, ad.beta)));
    for (r, acc_row) in acc.iter().enumerate() {
        let row = kb.index(g.y.p, m0, g.y.rs);
        let yrow = kb.offset(row, r as i64 * g.y.rs);
        let yp = kb.index(yrow, n0, g.y.cs);
        let crow = g.add.map(|ad| {
            let p = kb.index(ad.c.p, m0, ad.c.rs);
            let p = kb.offset(p, r as i64 * ad.c.rs);
            (ad, p)
        });
        for (v, &acc_v) in acc_row.iter().enumerate() {
            let mut y = kb.get(acc_v);
            if let Some(al) = alpha {
                y = kb.b.ins().fmul(y, al);
            }
            if let Some((ad, cp)) = crow {
                let c = if ad.c.cs == 0 {
                    let s = kb.load(F32, cp, 0);
                    if vector {
                        kb.splat(s)
                    } else {
                        s
                    }
                } else {
                    let cpp = kb.index(cp, n0, ad.c.cs);
                    kb.load(ty, cpp, v as i32 * width)
                };
                y = match beta {
                    Some(bt) => kb.mul_add(c, bt, y),
                    None => kb.b.ins().fadd(y, c),
                };
            }
            for &op in &g.post {
                y = unary_float(kb, op, y);
            }
            kb.store(y, yp, v as i32 * width);
        }
    }
}
