//! Kernel bodies: the loops each op lowers to, specialized for static shapes.
//!
//! Each function here emits code into a [`Kb`] given the kernel's pointer operands; the choice of
//! which kernel a node gets (and every user-facing error) is made before, in `lower.rs`. The helpers
//! in this file are the shared shapes: dimension coalescing, loop nests over strided operands,
//! byte copies and the vectorized elementwise map.

pub(crate) mod attention;
pub(crate) mod conv;
pub(crate) mod conv_nhwc;
pub(crate) mod depthwise;
pub(crate) mod elementwise;
pub(crate) mod fused;
pub(crate) mod gemm;
pub(crate) mod layout;
pub(crate) mod movement;
pub(crate) mod norm;
pub(crate) mod pool;
pub(crate) mod reduce;
pub(crate) mod window_nhwc;
pub(crate) mod winograd;

use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::types::{F32, F32X4, I16, I32, I64, I8, I8X16};
use cranelift_codegen::ir::{MemFlagsData, Type, Value};

/// Row-major strides of `dims`, in units of `unit`.
pub(crate) fn dense_strides(dims: &[usize], unit: i64) -> Vec<i64> {
    let mut s = vec![0i64; dims.len()];
    let mut acc = unit;
    for i in (0..dims.len()).rev() {
        s[i] = acc;
        acc *= dims[i] as i64;
    }
    s
}

/// Element strides of an operand of shape `dims` read numpy-broadcast over `out`: 0 along the axes it
/// lacks or has size 1, its dense strides elsewhere.
pub(crate) fn broadcast_strides(dims: &[usize], out: &[usize]) -> Vec<i64> {
    let off = out.len() - dims.len();
    let dense = dense_strides(dims, 1);
    (0..out.len())
        .map(|i| {
            if i < off || dims[i - off] == 1 {
                0
            } else {
                dense[i - off]
            }
        })
        .collect()
}

/// The [`map_f32`] sources of one row: an operand that does not move along the row (`step == 0`,
/// broadcast) is loaded once and splatted; the others are read as vectors.
pub(crate) fn row_sources(kb: &mut Kb, ins: &[Ptr], steps: &[i64]) -> Vec<Src> {
    ins.iter()
        .zip(steps)
        .map(|(&ptr, &step)| {
            if step == 0 {
                Src::Splat(kb.load(F32, ptr, 0))
            } else {
                Src::Ptr(ptr)
            }
        })
        .collect()
}

/// Simplifies a loop nest over `dims` in which operand `t` steps by `strides[t][i]` along dim `i`:
/// drops size-1 dims and merges neighbours that every operand walks as one (`s[i] == s[i+1] *
/// dims[i+1]`). The result has at least one dim; an empty nest becomes `[1]` with strides `unit`.
pub(crate) fn coalesce(
    dims: &[usize],
    strides: &[Vec<i64>],
    unit: i64,
) -> (Vec<usize>, Vec<Vec<i64>>) {
    let mut d: Vec<usize> = Vec::new();
    let mut s: Vec<Vec<i64>> = vec![Vec::new(); strides.len()];
    for i in 0..dims.len() {
        if dims[i] == 1 {
            continue;
        }
        let merge = !d.is_empty()
            && strides
                .iter()
                .zip(&s)
                .all(|(st, acc)| *acc.last().unwrap() == st[i] * dims[i] as i64);
        if merge {
            let last = d.len() - 1;
            d[last] *= dims[i];
            for (t, st) in strides.iter().enumerate() {
                let l = s[t].len() - 1;
                s[t][l] = st[i];
            }
        } else {
            d.push(dims[i]);
            for (t, st) in strides.iter().enumerate() {
                s[t].push(st[i]);
            }
        }
    }
    if d.is_empty() {
        return (vec![1], vec![vec![unit]; strides.len()]);
    }
    (d, s)
}

/// Emits nested loops over `dims` (outermost first); `inner` runs once per point with every base
/// pointer advanced by its strides (bytes).
pub(crate) fn loop_nest(
    kb: &mut Kb,
    dims: &[usize],
    strides: &[Vec<i64>],
    bases: &[Ptr],
    inner: &mut dyn FnMut(&mut Kb, &[Ptr]),
) {
    if dims.is_empty() {
        inner(kb, bases);
        return;
    }
    kb.for_n(dims[0], |kb, i| {
        let ptrs: Vec<Ptr> = bases
            .iter()
            .zip(strides)
            .map(|(&p, s)| kb.index(p, i, s[0]))
            .collect();
        let rest: Vec<Vec<i64>> = strides.iter().map(|s| s[1..].to_vec()).collect();
        loop_nest(kb, &dims[1..], &rest, &ptrs, inner);
    });
}

/// The integer type of an element of `size` bytes.
pub(crate) fn int_type(size: usize) -> Type {
    match size {
        1 => I8,
        2 => I16,
        4 => I32,
        _ => I64,
    }
}

/// Unaligned-safe flags for byte copies (the copy may start anywhere inside an element run).
fn copy_flags(p: Ptr) -> MemFlagsData {
    let f = MemFlagsData::new().with_notrap();
    if p.ro {
        f.with_readonly().with_can_move()
    } else {
        f
    }
}

/// Copies `n` bytes (compile-time) from `src` to `dst`: 16-byte vectors, then 8/4/2/1-byte pieces.
pub(crate) fn block_copy(kb: &mut Kb, dst: Ptr, src: Ptr, n: usize) {
    use cranelift_codegen::ir::InstBuilder;
    let chunks = n / 16;
    // Short copies are unrolled; longer ones loop.
    if chunks <= 4 {
        for c in 0..chunks {
            let v =
                kb.b.ins()
                    .load(I8X16, copy_flags(src), src.v, (c * 16) as i32);
            kb.b.ins().store(copy_flags(dst), v, dst.v, (c * 16) as i32);
        }
    } else {
        kb.for_n(chunks, |kb, i| {
            let off = kb.scale(i, 16);
            let s = kb.at(src, off);
            let d = kb.at(dst, off);
            let v = kb.b.ins().load(I8X16, copy_flags(s), s.v, 0);
            kb.b.ins().store(copy_flags(d), v, d.v, 0);
        });
    }
    let mut at = chunks * 16;
    for (size, ty) in [(8, I64), (4, I32), (2, I16), (1, I8)] {
        if n - at >= size {
            let v = kb.b.ins().load(ty, copy_flags(src), src.v, at as i32);
            kb.b.ins().store(copy_flags(dst), v, dst.v, at as i32);
            at += size;
        }
    }
}

/// Copies a strided view of elements of `esize` bytes: element `idx` of the nest `dims` goes from
/// `src + sum(idx * src_strides)` to `dst + sum(idx * dst_strides)` (strides in bytes, any sign).
pub(crate) fn strided_copy(
    kb: &mut Kb,
    dims: &[usize],
    src: Ptr,
    src_strides: &[i64],
    dst: Ptr,
    dst_strides: &[i64],
    esize: usize,
) {
    if dims.contains(&0) {
        return;
    }
    let e = esize as i64;
    let (d, s) = coalesce(dims, &[src_strides.to_vec(), dst_strides.to_vec()], e);
    let r = d.len();
    let (ss, ds) = (&s[0], &s[1]);
    let outer: Vec<Vec<i64>> = vec![ss[..r - 1].to_vec(), ds[..r - 1].to_vec()];
    let (n, si, di) = (d[r - 1], ss[r - 1], ds[r - 1]);
    loop_nest(kb, &d[..r - 1], &outer, &[src, dst], &mut |kb, p| {
        if si == e && di == e {
            block_copy(kb, p[1], p[0], n * esize);
        } else {
            let ty = int_type(esize);
            kb.for_n(n, |kb, i| {
                let sp = kb.index(p[0], i, si);
                let dp = kb.index(p[1], i, di);
                let v = kb.load(ty, sp, 0);
                kb.store(v, dp, 0);
            });
        }
    });
}

/// One input of an elementwise map.
#[derive(Clone, Copy)]
pub(crate) enum Src {
    /// Contiguous f32 elements.
    Ptr(Ptr),
    /// The same f32 (scalar value) for every element.
    Splat(Value),
}

/// `out[i] = f(in_0[i], in_1[i], ...)` for `i` in `0..n` over f32: an f32x4 main loop and a scalar
/// tail. `f` receives and returns values of the type it is called with (F32X4 or F32).
pub(crate) fn map_f32(
    kb: &mut Kb,
    n: usize,
    ins: &[Src],
    out: Ptr,
    f: &dyn Fn(&mut Kb, &[Value]) -> Value,
) {
    let main = n / 4 * 4;
    if main > 0 {
        // Broadcast scalars are splatted once, outside the loop.
        let splats: Vec<Option<Value>> = ins
            .iter()
            .map(|s| {
                if let Src::Splat(v) = s {
                    Some(kb.splat(*v))
                } else {
                    None
                }
            })
            .collect();
        kb.for_range(0, main as i64, 4, |kb, i| {
            let off = kb.scale(i, 4);
            let vals: Vec<Value> = ins
                .iter()
                .zip(&splats)
                .map(|(s, sp)| match s {
                    Src::Ptr(p) => {
                        let a = kb.at(*p, off);
                        kb.load(F32X4, a, 0)
                    }
                    Src::Splat(_) => sp.unwrap(),
                })
                .collect();
            let y = f(kb, &vals);
            let o = kb.at(out, off);
            kb.store(y, o, 0);
        });
    }
    if n > main {
        kb.for_range(main as i64, n as i64, 1, |kb, i| {
            let off = kb.scale(i, 4);
            let vals: Vec<Value> = ins
                .iter()
                .map(|s| match s {
                    Src::Ptr(p) => {
                        let a = kb.at(*p, off);
                        kb.load(F32, a, 0)
                    }
                    Src::Splat(v) => *v,
                })
                .collect();
            let y = f(kb, &vals);
            let o = kb.at(out, off);
            kb.store(y, o, 0);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_merges_contiguous_dims() {
        // [2,3,4] dense + per-channel broadcast [3,1]: dims 0 and (1,2) cannot merge for the second
        // operand, the last two merge for neither (b has stride 0 on dim 2 but 1 on dim 1).
        let dims = [2, 3, 4];
        let a = dense_strides(&dims, 1);
        let b = vec![0, 1, 0];
        let (d, s) = coalesce(&dims, &[a.clone(), b], 1);
        assert_eq!(d, vec![2, 3, 4]);
        assert_eq!(s[0], vec![12, 4, 1]);
        // Both dense: one dim.
        let (d, s) = coalesce(&dims, &[a.clone(), a], 1);
        assert_eq!(d, vec![24]);
        assert_eq!(s, vec![vec![1], vec![1]]);
        // Size-1 dims vanish; an all-ones nest becomes [1].
        let (d, _) = coalesce(&[1, 1], &[vec![1, 1]], 1);
        assert_eq!(d, vec![1]);
    }

    #[test]
    fn dense_strides_row_major() {
        assert_eq!(dense_strides(&[2, 3, 4], 4), vec![48, 16, 4]);
        assert_eq!(dense_strides(&[], 4), Vec::<i64>::new());
    }
}
