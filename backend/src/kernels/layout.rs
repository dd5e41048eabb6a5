//! Data movement: copies, transposes, concatenation, slicing and gathers. All of them work on
//! elements of any byte size, so integer tensors move as well as floats.

use super::{block_copy, dense_strides, strided_copy};
use crate::builder::Kb;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::InstBuilder;

/// Copies `bytes` bytes. Operands: src, dst.
pub(crate) fn copy_kernel(kb: &mut Kb, bytes: usize) {
    let (s, d) = (kb.args[0], kb.args[1]);
    block_copy(kb, d, s, bytes);
}

/// Transpose: output dim `i` is input dim `perm[i]`. Operands: x, y.
pub(crate) fn transpose_kernel(kb: &mut Kb, in_dims: &[usize], perm: &[usize], esize: usize) {
    let (x, y) = (kb.args[0], kb.args[1]);
    let in_strides = dense_strides(in_dims, esize as i64);
    let out_dims: Vec<usize> = perm.iter().map(|&p| in_dims[p]).collect();
    let src: Vec<i64> = perm.iter().map(|&p| in_strides[p]).collect();
    let dst = dense_strides(&out_dims, esize as i64);
    strided_copy(kb, &out_dims, x, &src, y, &dst, esize);
}

/// Concatenation along `axis`. Operands: each input, then y.
pub(crate) fn concat_kernel(kb: &mut Kb, inputs: &[Vec<usize>], axis: usize, esize: usize) {
    let y = kb.args[inputs.len()];
    let mut out_dims = inputs[0].clone();
    out_dims[axis] = inputs.iter().map(|d| d[axis]).sum();
    let dst = dense_strides(&out_dims, esize as i64);
    let mut at = 0usize;
    for (j, d) in inputs.iter().enumerate() {
        let x = kb.args[j];
        let src = dense_strides(d, esize as i64);
        let yp = kb.offset(y, at as i64 * dst[axis]);
        strided_copy(kb, d, x, &src, yp, &dst, esize);
        at += d[axis];
    }
}

/// Strided slice: per input axis `(first, step, count)`. Operands: x, y.
pub(crate) fn slice_kernel(
    kb: &mut Kb,
    in_dims: &[usize],
    ranges: &[(i64, i64, usize)],
    esize: usize,
) {
    let (x, y) = (kb.args[0], kb.args[1]);
    let in_strides = dense_strides(in_dims, esize as i64);
    let out_dims: Vec<usize> = ranges.iter().map(|r| r.2).collect();
    let start: i64 = ranges.iter().zip(&in_strides).map(|(r, s)| r.0 * s).sum();
    let src: Vec<i64> = ranges
        .iter()
        .zip(&in_strides)
        .map(|(r, s)| r.1 * s)
        .collect();
    let dst = dense_strides(&out_dims, esize as i64);
    let xp = kb.offset(x, start);
    strided_copy(kb, &out_dims, xp, &src, y, &dst, esize);
}

/// Gather along an axis: data viewed as `[outer, axis, inner]` (elements of `esize` bytes),
/// `count` indices of type i32 or i64 (`idx_size` bytes). Negative indices count from the end;
/// out-of-range indices are clamped to the axis instead of trapping. Operands: data, indices, y.
pub(crate) fn gather_kernel(
    kb: &mut Kb,
    outer: usize,
    axis: usize,
    inner: usize,
    count: usize,
    idx_size: usize,
    esize: usize,
) {
    let (x, ind, y) = (kb.args[0], kb.args[1], kb.args[2]);
    let row = (inner * esize) as i64;
    kb.for_n(count, |kb, j| {
        let ip = kb.index(ind, j, idx_size as i64);
        let raw = if idx_size == 4 {
            let v = kb.load(I32, ip, 0);
            kb.b.ins().sextend(I64, v)
        } else {
            kb.load(I64, ip, 0)
        };
        let neg = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, raw, 0);
        let wrapped = kb.b.ins().iadd_imm_s(raw, axis as i64);
        let idx = kb.b.ins().select(neg, wrapped, raw);
        let zero = kb.iconst(0);
        let top = kb.iconst(axis as i64 - 1);
        let idx = kb.b.ins().smax(idx, zero);
        let idx = kb.b.ins().smin(idx, top);
        kb.for_n(outer, |kb, o| {
            let xo = kb.index(x, o, axis as i64 * row);
            let src = kb.index(xo, idx, row);
            let yo = kb.index(y, o, count as i64 * row);
            let dst = kb.index(yo, j, row);
            block_copy(kb, dst, src, inner * esize);
        });
    });
}
