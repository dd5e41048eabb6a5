//! Kernels of the data-movement family and its neighbours: per-axis table gathers (Pad, Tile,
//! nearest Resize), Trilu, the element gathers and scatters, OneHot, CumSum, TopK, separable
//! resampling (linear and cubic Resize), transposed convolution, max pooling of any dtype with
//! indices, and Einsum.
//!
//! Moves are by element size, so every dtype moves; arithmetic goes through [`Arith`], which loads an
//! element widened to its compute type (f32, f64, or i64 for integers) and stores it back narrowed
//! (bf16 computes in f32 and rounds to nearest even on the way out).

use super::{block_copy, dense_strides, int_type, loop_nest};
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, F64, I16, I32, I64, I8};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value};
use kiln_ir::ops::Reduction;
use kiln_ir::DType;

// ---- typed element access ----

/// How elements of a dtype are loaded for arithmetic and stored back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arith {
    /// f32, computed as f32.
    F32,
    /// f64, computed as f64.
    F64,
    /// bfloat16, computed as f32.
    Bf16,
    /// IEEE half, computed as f32 (converted in software: no F16C/libcall dependency).
    F16,
    /// An integer of memory type `ty`, computed as i64.
    Int {
        /// Memory type.
        ty: Type,
        /// Signed (sign-extends, compares signed).
        signed: bool,
    },
}

impl Arith {
    /// The arithmetic form of `d`, if kiln computes on it.
    pub(crate) fn of(d: DType) -> Option<Arith> {
        Some(match d {
            DType::F32 => Arith::F32,
            DType::F64 => Arith::F64,
            DType::BF16 => Arith::Bf16,
            DType::F16 => Arith::F16,
            DType::I64 | DType::U64 | DType::I32 | DType::U32 | DType::I16 | DType::U16 => {
                Arith::Int {
                    ty: int_type(d.bits() / 8),
                    signed: d.is_signed_int(),
                }
            }
            DType::I8 | DType::U8 => Arith::Int {
                ty: I8,
                signed: d == DType::I8,
            },
            _ => return None,
        })
    }

    /// The type values are computed in.
    pub(crate) fn ty(self) -> Type {
        match self {
            Arith::F32 | Arith::Bf16 | Arith::F16 => F32,
            Arith::F64 => F64,
            Arith::Int { .. } => I64,
        }
    }

    fn is_float(self) -> bool {
        !matches!(self, Arith::Int { .. })
    }

    /// Loads the element at `p + off`, widened.
    pub(crate) fn load(self, kb: &mut Kb, p: Ptr, off: i32) -> Value {
        match self {
            Arith::F32 => kb.load(F32, p, off),
            Arith::F64 => kb.load(F64, p, off),
            Arith::Bf16 => {
                let h = kb.load(I16, p, off);
                let w = kb.b.ins().uextend(I32, h);
                let w = kb.b.ins().ishl_imm_u(w, 16);
                kb.b.ins().bitcast(F32, MemFlagsData::new(), w)
            }
            Arith::F16 => {
                let h = kb.load(I16, p, off);
                let h = kb.b.ins().uextend(I32, h);
                half_to_f32(kb, h)
            }
            Arith::Int { ty, signed } => {
                let v = kb.load(ty, p, off);
                if ty == I64 {
                    v
                } else if signed {
                    kb.b.ins().sextend(I64, v)
                } else {
                    kb.b.ins().uextend(I64, v)
                }
            }
        }
    }

    /// Stores a computed value to `p + off`, narrowed.
    pub(crate) fn store(self, kb: &mut Kb, v: Value, p: Ptr, off: i32) {
        match self {
            Arith::F32 | Arith::F64 => kb.store(v, p, off),
            Arith::Bf16 => {
                // Round to nearest even: add 0x7fff plus the lowest kept bit, keep the high half.
                let bits = kb.b.ins().bitcast(I32, MemFlagsData::new(), v);
                let lsb = kb.b.ins().ushr_imm_u(bits, 16);
                let lsb = kb.b.ins().band_imm_s(lsb, 1);
                let r = kb.b.ins().iadd(bits, lsb);
                let r = kb.b.ins().iadd_imm_s(r, 0x7fff);
                let hi = kb.b.ins().ushr_imm_u(r, 16);
                let h = kb.b.ins().ireduce(I16, hi);
                kb.store(h, p, off);
            }
            Arith::F16 => {
                let h = f32_to_half(kb, v);
                let h = kb.b.ins().ireduce(I16, h);
                kb.store(h, p, off);
            }
            Arith::Int { ty, .. } => {
                let n = if ty == I64 {
                    v
                } else {
                    kb.b.ins().ireduce(ty, v)
                };
                kb.store(n, p, off);
            }
        }
    }

    /// Zero of the compute type.
    pub(crate) fn zero(self, kb: &mut Kb) -> Value {
        match self.ty() {
            F32 => kb.fconst(0.0),
            F64 => kb.b.ins().f64const(0.0),
            _ => kb.iconst(0),
        }
    }

    /// `a + b`.
    pub(crate) fn add(self, kb: &mut Kb, a: Value, b: Value) -> Value {
        if self.is_float() {
            kb.b.ins().fadd(a, b)
        } else {
            kb.b.ins().iadd(a, b)
        }
    }

    /// `a * b`.
    pub(crate) fn mul(self, kb: &mut Kb, a: Value, b: Value) -> Value {
        if self.is_float() {
            kb.b.ins().fmul(a, b)
        } else {
            kb.b.ins().imul(a, b)
        }
    }

    /// `a > b` (as a truth value).
    pub(crate) fn gt(self, kb: &mut Kb, a: Value, b: Value) -> Value {
        match self {
            Arith::Int { signed: true, .. } => kb.b.ins().icmp(IntCC::SignedGreaterThan, a, b),
            Arith::Int { .. } => kb.b.ins().icmp(IntCC::UnsignedGreaterThan, a, b),
            _ => kb.b.ins().fcmp(FloatCC::GreaterThan, a, b),
        }
    }

    /// `a < b` (as a truth value).
    pub(crate) fn lt(self, kb: &mut Kb, a: Value, b: Value) -> Value {
        self.gt(kb, b, a)
    }

    /// `reduction(old, new)`.
    fn combine(self, kb: &mut Kb, r: Reduction, old: Value, new: Value) -> Value {
        match r {
            Reduction::None => new,
            Reduction::Add => self.add(kb, old, new),
            Reduction::Mul => self.mul(kb, old, new),
            Reduction::Max | Reduction::Min => {
                if self.is_float() {
                    if r == Reduction::Max {
                        kb.fmax(old, new)
                    } else {
                        kb.fmin(old, new)
                    }
                } else {
                    let signed = matches!(self, Arith::Int { signed: true, .. });
                    match (r == Reduction::Max, signed) {
                        (true, true) => kb.b.ins().smax(old, new),
                        (true, false) => kb.b.ins().umax(old, new),
                        (false, true) => kb.b.ins().smin(old, new),
                        (false, false) => kb.b.ins().umin(old, new),
                    }
                }
            }
        }
    }
}

/// IEEE half bits (in the low 16 bits of an i32) to f32, exactly: the exponent is rebased; infinities
/// and NaNs get the f32 maximum exponent; subnormals are renormalized through a float subtraction.
fn half_to_f32(kb: &mut Kb, h: Value) -> Value {
    let em = kb.b.ins().band_imm_s(h, 0x7fff);
    let o = kb.b.ins().ishl_imm_u(em, 13);
    let shifted_exp = 0x7c00i64 << 13;
    let exp = kb.b.ins().band_imm_s(o, shifted_exp);
    let normal = kb.b.ins().iadd_imm_s(o, (127 - 15) << 23);
    let special = kb.b.ins().iadd_imm_s(normal, (128 - 16) << 23);
    // Subnormal: the mantissa as a float with exponent 2^-14, minus the implicit one.
    let den = kb.b.ins().iadd_imm_s(normal, 1 << 23);
    let den = kb.b.ins().bitcast(F32, MemFlagsData::new(), den);
    let magic = kb.fconst(f32::from_bits(113 << 23));
    let den = kb.b.ins().fsub(den, magic);
    let den = kb.b.ins().bitcast(I32, MemFlagsData::new(), den);
    let is_special = kb.b.ins().icmp_imm_s(IntCC::Equal, exp, shifted_exp);
    let is_den = kb.b.ins().icmp_imm_s(IntCC::Equal, exp, 0);
    let o = kb.b.ins().select(is_den, den, normal);
    let o = kb.b.ins().select(is_special, special, o);
    let sign = kb.b.ins().band_imm_s(h, 0x8000);
    let sign = kb.b.ins().ishl_imm_u(sign, 16);
    let o = kb.b.ins().bor(o, sign);
    kb.b.ins().bitcast(F32, MemFlagsData::new(), o)
}

/// f32 to IEEE half bits (in an i32), rounding to nearest even; overflow gives infinity, NaN a quiet
/// NaN, and small values subnormals (rounded by a float addition that aligns the mantissa).
fn f32_to_half(kb: &mut Kb, v: Value) -> Value {
    let bits = kb.b.ins().bitcast(I32, MemFlagsData::new(), v);
    let sign = kb.b.ins().band_imm_s(bits, 0x8000_0000u32 as i32 as i64);
    let f = kb.b.ins().bxor(bits, sign);
    // Overflow, infinity, NaN.
    let f16max = (127 + 16) << 23;
    let f32inf = 255 << 23;
    let is_nan = kb.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, f, f32inf);
    let qnan = kb.b.ins().iconst(I32, 0x7e00);
    let inf = kb.b.ins().iconst(I32, 0x7c00);
    let big = kb.b.ins().select(is_nan, qnan, inf);
    let is_big =
        kb.b.ins()
            .icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, f, f16max);
    // Subnormal results: add a magic number whose ulp is the half subnormal step.
    let denorm_magic = ((127 - 15) + (23 - 10) + 1) << 23;
    let ff = kb.b.ins().bitcast(F32, MemFlagsData::new(), f);
    let dm = kb.fconst(f32::from_bits(denorm_magic as u32));
    let sum = kb.b.ins().fadd(ff, dm);
    let sum = kb.b.ins().bitcast(I32, MemFlagsData::new(), sum);
    let sub = kb.b.ins().iadd_imm_s(sum, -(denorm_magic as i64));
    let is_sub = kb.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, f, 113 << 23);
    // Normal results: rebias, round to nearest even on the 13 dropped bits.
    let odd = kb.b.ins().ushr_imm_u(f, 13);
    let odd = kb.b.ins().band_imm_s(odd, 1);
    let n =
        kb.b.ins()
            .iadd_imm_s(f, (((15 - 127) << 23) + 0xfff) as i64);
    let n = kb.b.ins().iadd(n, odd);
    let n = kb.b.ins().ushr_imm_u(n, 13);
    let o = kb.b.ins().select(is_sub, sub, n);
    let o = kb.b.ins().select(is_big, big, o);
    let sign = kb.b.ins().ushr_imm_u(sign, 16);
    kb.b.ins().bor(o, sign)
}

/// Copies one element of `esize` bytes.
fn copy_elem(kb: &mut Kb, dst: Ptr, src: Ptr, esize: usize) {
    let ty = int_type(esize);
    let v = kb.load(ty, src, 0);
    kb.store(v, dst, 0);
}

/// Loads an index of `isize` bytes (i32 or i64) as i64, wraps a negative one by `n`, and clamps it
/// into `0..n` so a bad index reads a wrong element rather than outside the tensor.
fn load_index(kb: &mut Kb, p: Ptr, isize: usize, n: usize) -> Value {
    let raw = if isize == 4 {
        let v = kb.load(I32, p, 0);
        kb.b.ins().sextend(I64, v)
    } else {
        kb.load(I64, p, 0)
    };
    wrap_clamp(kb, raw, n)
}

fn wrap_clamp(kb: &mut Kb, raw: Value, n: usize) -> Value {
    let neg = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, raw, 0);
    let wrapped = kb.b.ins().iadd_imm_s(raw, n as i64);
    let idx = kb.b.ins().select(neg, wrapped, raw);
    let zero = kb.iconst(0);
    let top = kb.iconst(n as i64 - 1);
    let idx = kb.b.ins().smax(idx, zero);
    kb.b.ins().smin(idx, top)
}

// ---- table gather ----

/// Offset of a table entry that reads the fill value instead of the input. Any sum of up to 127
/// such entries and real offsets (below 2^31) stays negative and never overflows.
pub(crate) const FILL: i64 = -(1 << 56);

/// How one output axis finds its input offset (bytes).
#[derive(Clone, Debug)]
pub(crate) enum AxisMap {
    /// `start + i * step`.
    Affine {
        /// Offset of output 0.
        start: i64,
        /// Offset step per output position.
        step: i64,
    },
    /// Entry `at + i` of the i64 table operand ([`FILL`] for the fill value).
    Table {
        /// First entry of this axis.
        at: usize,
    },
}

/// A gather whose input offset is a sum of one term per output axis.
#[derive(Clone, Debug)]
pub(crate) struct TableGather {
    /// Output dims.
    pub out: Vec<usize>,
    /// One map per output axis.
    pub maps: Vec<AxisMap>,
    /// Element size in bytes.
    pub esize: usize,
    /// Some entry is [`FILL`]: a fill-value operand follows x.
    pub fill: bool,
    /// Some axis uses a table: a table operand follows (x, fill).
    pub tables: bool,
}

/// Operands: x, [fill], [tables], y.
pub(crate) fn table_gather_kernel(kb: &mut Kb, s: &TableGather) {
    let mut a = 0;
    let mut next = |kb: &Kb| {
        a += 1;
        kb.args[a - 1]
    };
    let x = next(kb);
    let fill = s.fill.then(|| next(kb));
    let tab = s.tables.then(|| next(kb));
    let y = next(kb);
    let es = s.esize;
    if s.out.is_empty() {
        block_copy(kb, y, x, es);
        return;
    }
    let ystr = dense_strides(&s.out, es as i64);
    let zero = kb.iconst(0);
    gather_level(kb, s, 0, zero, y, x, fill, tab, &ystr);
}

#[allow(clippy::too_many_arguments)]
fn gather_level(
    kb: &mut Kb,
    s: &TableGather,
    level: usize,
    off: Value,
    yp: Ptr,
    x: Ptr,
    fill: Option<Ptr>,
    tab: Option<Ptr>,
    ystr: &[i64],
) {
    let es = s.esize;
    let n = s.out[level];
    let axis_off = |kb: &mut Kb, i: Value| -> Value {
        match &s.maps[level] {
            AxisMap::Affine { start, step } => {
                let t = kb.b.ins().imul_imm_s(i, *step);
                kb.b.ins().iadd_imm_s(t, *start)
            }
            AxisMap::Table { at } => {
                let base = kb.offset(tab.expect("table operand"), (*at * 8) as i64);
                let p = kb.index(base, i, 8);
                kb.load(I64, p, 0)
            }
        }
    };
    if level + 1 < s.out.len() {
        kb.for_n(n, |kb, i| {
            let o = axis_off(kb, i);
            let tot = kb.b.ins().iadd(off, o);
            let yq = kb.index(yp, i, ystr[level]);
            gather_level(kb, s, level + 1, tot, yq, x, fill, tab, ystr);
        });
        return;
    }
    let copy_or_fill = |kb: &mut Kb, tot: Value, dst: Ptr, run: usize| {
        let copy = |kb: &mut Kb| {
            let src = kb.at(x, tot);
            block_copy(kb, dst, src, run * es);
        };
        match fill {
            Some(f) => {
                let neg = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, tot, 0);
                kb.if_else(
                    neg,
                    |kb| {
                        let ty = int_type(es);
                        let v = kb.load(ty, f, 0);
                        kb.for_n(run, |kb, j| {
                            let d = kb.index(dst, j, es as i64);
                            kb.store(v, d, 0);
                        });
                    },
                    copy,
                );
            }
            None => copy(kb),
        }
    };
    match &s.maps[level] {
        // A contiguous innermost run: one block copy (or fill) per row.
        AxisMap::Affine { start, step } if *step == es as i64 => {
            let tot = kb.b.ins().iadd_imm_s(off, *start);
            copy_or_fill(kb, tot, yp, n);
        }
        _ => kb.for_n(n, |kb, i| {
            let o = axis_off(kb, i);
            let tot = kb.b.ins().iadd(off, o);
            let dst = kb.index(yp, i, es as i64);
            copy_or_fill(kb, tot, dst, 1);
        }),
    }
}

// ---- Trilu ----

/// Operands: x, [k (i64)], y. Elements outside the triangle become zero bytes.
pub(crate) fn trilu_kernel(
    kb: &mut Kb,
    batch: usize,
    rows: usize,
    cols: usize,
    esize: usize,
    upper: bool,
    has_k: bool,
) {
    let x = kb.args[0];
    let (k, y) = if has_k {
        let kp = kb.args[1];
        (kb.load(I64, kp, 0), kb.args[2])
    } else {
        (kb.iconst(0), kb.args[1])
    };
    let ty = int_type(esize);
    let plane = (rows * cols * esize) as i64;
    kb.for_n(batch, |kb, b| {
        let xb = kb.index(x, b, plane);
        let yb = kb.index(y, b, plane);
        kb.for_n(rows, |kb, i| {
            let xr = kb.index(xb, i, (cols * esize) as i64);
            let yr = kb.index(yb, i, (cols * esize) as i64);
            kb.for_n(cols, |kb, j| {
                let diff = kb.b.ins().isub(j, i);
                let keep = if upper {
                    kb.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, diff, k)
                } else {
                    kb.b.ins().icmp(IntCC::SignedLessThanOrEqual, diff, k)
                };
                let src = kb.index(xr, j, esize as i64);
                let v = kb.load(ty, src, 0);
                let z = kb.b.ins().iconst(ty, 0);
                let out = kb.b.ins().select(keep, v, z);
                let dst = kb.index(yr, j, esize as i64);
                kb.store(out, dst, 0);
            });
        });
    });
}

// ---- element gathers and scatters ----

/// Geometry of GatherElements / ScatterElements: the loop runs over the indices' dims.
#[derive(Clone, Debug)]
pub(crate) struct ElementsSpec {
    /// Indices (and updates / output) dims.
    pub dims: Vec<usize>,
    /// Data dims.
    pub data: Vec<usize>,
    /// The indexed axis.
    pub axis: usize,
    /// Element size.
    pub esize: usize,
    /// Index size (4 or 8).
    pub isize: usize,
}

impl ElementsSpec {
    /// Byte strides of data along the loop dims (zero along the axis), and the axis stride.
    fn data_strides(&self) -> (Vec<i64>, i64) {
        let mut ds = dense_strides(&self.data, self.esize as i64);
        let axis_stride = ds[self.axis];
        ds[self.axis] = 0;
        (ds, axis_stride)
    }
}

/// Operands: data, indices, y.
pub(crate) fn gather_elements_kernel(kb: &mut Kb, s: &ElementsSpec) {
    let (x, ind, y) = (kb.args[0], kb.args[1], kb.args[2]);
    let (ds, astr) = s.data_strides();
    let strides = vec![
        ds,
        dense_strides(&s.dims, s.isize as i64),
        dense_strides(&s.dims, s.esize as i64),
    ];
    let n = s.data[s.axis];
    loop_nest(kb, &s.dims, &strides, &[x, ind, y], &mut |kb, p| {
        let j = load_index(kb, p[1], s.isize, n);
        let src = kb.index(p[0], j, astr);
        copy_elem(kb, p[2], src, s.esize);
    });
}

/// Combines the update at `src` into the element at `dst`.
fn scatter_one(kb: &mut Kb, red: Reduction, ar: Option<Arith>, esize: usize, dst: Ptr, src: Ptr) {
    match (red, ar) {
        (Reduction::None, _) | (_, None) => copy_elem(kb, dst, src, esize),
        (r, Some(a)) => {
            let old = a.load(kb, dst, 0);
            let new = a.load(kb, src, 0);
            let v = a.combine(kb, r, old, new);
            a.store(kb, v, dst, 0);
        }
    }
}

/// Operands: data, indices, updates, y. `y` starts as a copy of data.
pub(crate) fn scatter_elements_kernel(
    kb: &mut Kb,
    s: &ElementsSpec,
    red: Reduction,
    ar: Option<Arith>,
) {
    let (x, ind, upd, y) = (kb.args[0], kb.args[1], kb.args[2], kb.args[3]);
    let total: usize = s.data.iter().product::<usize>() * s.esize;
    block_copy(kb, y, x, total);
    let (ds, astr) = s.data_strides();
    let strides = vec![
        ds,
        dense_strides(&s.dims, s.isize as i64),
        dense_strides(&s.dims, s.esize as i64),
    ];
    let n = s.data[s.axis];
    // Sequential, so with duplicate indices the last update wins (or all combine), as ONNX says.
    loop_nest(kb, &s.dims, &strides, &[y, ind, upd], &mut |kb, p| {
        let j = load_index(kb, p[1], s.isize, n);
        let dst = kb.index(p[0], j, astr);
        scatter_one(kb, red, ar, s.esize, dst, p[2]);
    });
}

/// Geometry of GatherND / ScatterND.
#[derive(Clone, Debug)]
pub(crate) struct NdSpec {
    /// Batch count (GatherND's batch_dims axes).
    pub batch: usize,
    /// Index tuples per batch.
    pub lookups: usize,
    /// Size and byte stride of each indexed axis (the tuple length is their count).
    pub axes: Vec<(usize, i64)>,
    /// Bytes of one batch of data.
    pub batch_bytes: usize,
    /// Elements of one addressed slice.
    pub slice: usize,
    /// Element size.
    pub esize: usize,
}

/// Emits the data offset (bytes, within a batch) addressed by the tuple at `ip`.
fn nd_offset(kb: &mut Kb, s: &NdSpec, ip: Ptr) -> Value {
    let mut off = kb.iconst(0);
    for (j, &(n, st)) in s.axes.iter().enumerate() {
        let p = kb.offset(ip, (j * 8) as i64);
        let v = load_index(kb, p, 8, n);
        let t = kb.scale(v, st);
        off = kb.b.ins().iadd(off, t);
    }
    off
}

/// Operands: data, indices (i64), y.
pub(crate) fn gather_nd_kernel(kb: &mut Kb, s: &NdSpec) {
    let (x, ind, y) = (kb.args[0], kb.args[1], kb.args[2]);
    let m = s.axes.len();
    let sb = (s.slice * s.esize) as i64;
    kb.for_n(s.batch, |kb, b| {
        let xb = kb.index(x, b, s.batch_bytes as i64);
        let ib = kb.index(ind, b, (s.lookups * m * 8) as i64);
        let yb = kb.index(y, b, s.lookups as i64 * sb);
        kb.for_n(s.lookups, |kb, l| {
            let ip = kb.index(ib, l, (m * 8) as i64);
            let off = nd_offset(kb, s, ip);
            let src = kb.at(xb, off);
            let dst = kb.index(yb, l, sb);
            block_copy(kb, dst, src, s.slice * s.esize);
        });
    });
}

/// Operands: data, indices (i64), updates, y. `y` starts as a copy of data.
pub(crate) fn scatter_nd_kernel(kb: &mut Kb, s: &NdSpec, red: Reduction, ar: Option<Arith>) {
    let (x, ind, upd, y) = (kb.args[0], kb.args[1], kb.args[2], kb.args[3]);
    block_copy(kb, y, x, s.batch_bytes);
    let m = s.axes.len();
    let sb = (s.slice * s.esize) as i64;
    kb.for_n(s.lookups, |kb, l| {
        let ip = kb.index(ind, l, (m * 8) as i64);
        let off = nd_offset(kb, s, ip);
        let dst = kb.at(y, off);
        let src = kb.index(upd, l, sb);
        if red == Reduction::None {
            block_copy(kb, dst, src, s.slice * s.esize);
        } else {
            kb.for_n(s.slice, |kb, e| {
                let d = kb.index(dst, e, s.esize as i64);
                let u = kb.index(src, e, s.esize as i64);
                scatter_one(kb, red, ar, s.esize, d, u);
            });
        }
    });
}

// ---- OneHot ----

/// Operands: indices, values (`[off, on]`), y. The output is `[outer, depth, inner]`.
pub(crate) fn one_hot_kernel(
    kb: &mut Kb,
    outer: usize,
    depth: usize,
    inner: usize,
    idx: DType,
    esize: usize,
) {
    let (ind, vals, y) = (kb.args[0], kb.args[1], kb.args[2]);
    let ty = int_type(esize);
    let off = kb.load(ty, vals, 0);
    let on = kb.load(ty, vals, esize as i32);
    kb.for_n(outer * depth * inner, |kb, e| {
        let d = kb.index(y, e, esize as i64);
        kb.store(off, d, 0);
    });
    let isz = (idx.bits() / 8) as i64;
    kb.for_n(outer, |kb, o| {
        kb.for_n(inner, |kb, i| {
            let e = kb.b.ins().imul_imm_s(o, inner as i64);
            let e = kb.b.ins().iadd(e, i);
            let p = kb.index(ind, e, isz);
            // Float indices truncate toward zero.
            let raw = match idx {
                DType::F32 | DType::F64 => {
                    let v = kb.load(if idx == DType::F32 { F32 } else { F64 }, p, 0);
                    kb.b.ins().fcvt_to_sint_sat(I64, v)
                }
                d => Arith::of(d)
                    .map(|a| a.load(kb, p, 0))
                    .unwrap_or_else(|| kb.iconst(-1)),
            };
            let neg = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, raw, 0);
            let wrapped = kb.b.ins().iadd_imm_s(raw, depth as i64);
            let j = kb.b.ins().select(neg, wrapped, raw);
            let ok =
                kb.b.ins()
                    .icmp_imm_u(IntCC::UnsignedLessThan, j, depth as i64);
            kb.if_then(ok, |kb| {
                // ((o * depth + j) * inner + i) * esize
                let t = kb.b.ins().imul_imm_s(o, depth as i64);
                let t = kb.b.ins().iadd(t, j);
                let t = kb.b.ins().imul_imm_s(t, inner as i64);
                let t = kb.b.ins().iadd(t, i);
                let d = kb.index(y, t, esize as i64);
                kb.store(on, d, 0);
            });
        });
    });
}

// ---- CumSum ----

/// Operands: x, y, both `[outer, n, inner]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cumsum_kernel(
    kb: &mut Kb,
    outer: usize,
    n: usize,
    inner: usize,
    ar: Arith,
    esize: usize,
    exclusive: bool,
    reverse: bool,
) {
    let (x, y) = (kb.args[0], kb.args[1]);
    let row = (inner * esize) as i64;
    kb.for_n(outer, |kb, o| {
        let xo = kb.index(x, o, n as i64 * row);
        let yo = kb.index(y, o, n as i64 * row);
        kb.for_n(inner, |kb, i| {
            let xi = kb.index(xo, i, esize as i64);
            let yi = kb.index(yo, i, esize as i64);
            let z = ar.zero(kb);
            let acc = kb.var(ar.ty(), z);
            kb.for_n(n, |kb, s| {
                let j = if reverse {
                    let last = kb.iconst(n as i64 - 1);
                    kb.b.ins().isub(last, s)
                } else {
                    s
                };
                let src = kb.index(xi, j, row);
                let dst = kb.index(yi, j, row);
                let v = ar.load(kb, src, 0);
                let cur = kb.get(acc);
                let sum = ar.add(kb, cur, v);
                ar.store(kb, if exclusive { cur } else { sum }, dst, 0);
                kb.set(acc, sum);
            });
        });
    });
}

// ---- TopK ----

/// Operands: x, values, indices (i64), scratch (`n` bytes of taken flags). Rows are `[outer, n, inner]`;
/// the outputs `[outer, k, inner]`. Selection scans the row `k` times for the best element not yet
/// taken; strict comparisons keep the lower index first among equals.
#[allow(clippy::too_many_arguments)]
pub(crate) fn top_k_kernel(
    kb: &mut Kb,
    outer: usize,
    n: usize,
    inner: usize,
    k: usize,
    ar: Arith,
    esize: usize,
    largest: bool,
) {
    let (x, vals, idxs, taken) = (kb.args[0], kb.args[1], kb.args[2], kb.args[3]);
    let row = (inner * esize) as i64;
    kb.for_n(outer, |kb, o| {
        let xo = kb.index(x, o, n as i64 * row);
        let vo = kb.index(vals, o, k as i64 * row);
        let io = kb.index(idxs, o, (k * inner * 8) as i64);
        kb.for_n(inner, |kb, i| {
            let xi = kb.index(xo, i, esize as i64);
            let vi = kb.index(vo, i, esize as i64);
            let ii = kb.index(io, i, 8);
            let z8 = kb.b.ins().iconst(I8, 0);
            kb.for_n(n, |kb, j| {
                let t = kb.index(taken, j, 1);
                kb.store(z8, t, 0);
            });
            kb.for_n(k, |kb, s| {
                let minus1 = kb.iconst(-1);
                let best_j = kb.var(I64, minus1);
                let z = ar.zero(kb);
                let best_v = kb.var(ar.ty(), z);
                kb.for_n(n, |kb, j| {
                    let tp = kb.index(taken, j, 1);
                    let t = kb.load(I8, tp, 0);
                    let free = kb.b.ins().icmp_imm_s(IntCC::Equal, t, 0);
                    let src = kb.index(xi, j, row);
                    let v = ar.load(kb, src, 0);
                    let bv = kb.get(best_v);
                    let bj = kb.get(best_j);
                    let better = if largest {
                        ar.gt(kb, v, bv)
                    } else {
                        ar.lt(kb, v, bv)
                    };
                    let first = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, bj, 0);
                    let want = kb.b.ins().bor(first, better);
                    let take = kb.b.ins().band(free, want);
                    let nj = kb.b.ins().select(take, j, bj);
                    let nv = kb.b.ins().select(take, v, bv);
                    kb.set(best_j, nj);
                    kb.set(best_v, nv);
                });
                let bj = kb.get(best_j);
                let tp = kb.index(taken, bj, 1);
                let one = kb.b.ins().iconst(I8, 1);
                kb.store(one, tp, 0);
                let src = kb.index(xi, bj, row);
                let dst = kb.index(vi, s, row);
                copy_elem(kb, dst, src, esize);
                let ip = kb.index(ii, s, (inner * 8) as i64);
                kb.store(bj, ip, 0);
            });
        });
    });
}

// ---- separable resampling ----

/// One axis of a separable resample.
#[derive(Clone, Debug)]
pub(crate) struct ResamplePass {
    /// Product of the dims before the axis.
    pub outer: usize,
    /// Input length of the axis.
    pub input: usize,
    /// Output length of the axis.
    pub output: usize,
    /// Product of the dims after the axis.
    pub inner: usize,
    /// Taps per output.
    pub taps: usize,
    /// First entry of this pass in the index (i64 byte offsets) and weight (f32) tables.
    pub table_at: usize,
    /// First entry in the bias table (one per output), when some output is extrapolated.
    pub bias_at: Option<usize>,
}

/// Operands: x, index table, weight table, [bias table], y, [scratch]. Each pass computes
/// `out[o, j, i] = bias[j] + sum_t w[j, t] * in[o, idx[j, t], i]` (f32), alternating between
/// two halves of the scratch buffer; the last pass writes y.
pub(crate) fn resample_kernel(kb: &mut Kb, passes: &[ResamplePass], has_bias: bool, half: usize) {
    let x = kb.args[0];
    let (it, wt) = (kb.args[1], kb.args[2]);
    let mut a = 3;
    let bt = has_bias.then(|| {
        a += 1;
        kb.args[a - 1]
    });
    let y = kb.args[a];
    let scratch = kb.args.get(a + 1).copied();
    let mut src = x;
    for (pi, p) in passes.iter().enumerate() {
        let dst = if pi + 1 == passes.len() {
            y
        } else {
            let s = scratch.expect("resample scratch");
            kb.offset(s, if pi % 2 == 0 { 0 } else { half as i64 })
        };
        resample_pass(kb, p, src, dst, it, wt, bt);
        src = dst;
    }
}

fn resample_pass(
    kb: &mut Kb,
    p: &ResamplePass,
    src: Ptr,
    dst: Ptr,
    it: Ptr,
    wt: Ptr,
    bt: Option<Ptr>,
) {
    let row = (p.inner * 4) as i64;
    let it = kb.offset(it, (p.table_at * 8) as i64);
    let wt = kb.offset(wt, (p.table_at * 4) as i64);
    let bt = match (bt, p.bias_at) {
        (Some(b), Some(at)) => Some(kb.offset(b, (at * 4) as i64)),
        _ => None,
    };
    let main = p.inner / 4 * 4;
    if p.taps > UNROLLED_TAPS {
        return resample_pass_looped(kb, p, src, dst, it, wt, bt);
    }
    kb.for_n(p.outer, |kb, o| {
        let so = kb.index(src, o, p.input as i64 * row);
        let d_o = kb.index(dst, o, p.output as i64 * row);
        kb.for_n(p.output, |kb, j| {
            let mut rows = Vec::with_capacity(p.taps);
            let mut ws = Vec::with_capacity(p.taps);
            let e = kb.b.ins().imul_imm_s(j, p.taps as i64);
            let ie = kb.index(it, e, 8);
            let we = kb.index(wt, e, 4);
            for t in 0..p.taps {
                let off = kb.load(I64, ie, (t * 8) as i32);
                rows.push(kb.at(so, off));
                ws.push(kb.load(F32, we, (t * 4) as i32));
            }
            let bias = match bt {
                Some(b) => {
                    let bp = kb.index(b, j, 4);
                    kb.load(F32, bp, 0)
                }
                None => kb.fconst(0.0),
            };
            let dr = kb.index(d_o, j, row);
            if main > 0 {
                let wv: Vec<Value> = ws.iter().map(|&w| kb.splat(w)).collect();
                let bv = kb.splat(bias);
                kb.for_range(0, main as i64, 4, |kb, i| {
                    let off = kb.scale(i, 4);
                    let mut acc = bv;
                    for t in 0..p.taps {
                        let a = kb.at(rows[t], off);
                        let v = kb.load(F32X4, a, 0);
                        acc = kb.mul_add(v, wv[t], acc);
                    }
                    let d = kb.at(dr, off);
                    kb.store(acc, d, 0);
                });
            }
            for i in main..p.inner {
                let mut acc = bias;
                for t in 0..p.taps {
                    let v = kb.load(F32, rows[t], (i * 4) as i32);
                    acc = kb.mul_add(v, ws[t], acc);
                }
                kb.store(acc, dr, (i * 4) as i32);
            }
        });
    });
}

/// Taps up to this many are unrolled; antialiased downsampling by a large factor has many more
/// (about 2 / scale per output), which a loop keeps from blowing up the code.
const UNROLLED_TAPS: usize = 8;

/// [`resample_pass`] with the taps in a run-time loop.
fn resample_pass_looped(
    kb: &mut Kb,
    p: &ResamplePass,
    src: Ptr,
    dst: Ptr,
    it: Ptr,
    wt: Ptr,
    bt: Option<Ptr>,
) {
    let row = (p.inner * 4) as i64;
    let main = p.inner / 4 * 4;
    kb.for_n(p.outer, |kb, o| {
        let so = kb.index(src, o, p.input as i64 * row);
        let d_o = kb.index(dst, o, p.output as i64 * row);
        kb.for_n(p.output, |kb, j| {
            let e = kb.b.ins().imul_imm_s(j, p.taps as i64);
            let ie = kb.index(it, e, 8);
            let we = kb.index(wt, e, 4);
            let bias = match bt {
                Some(b) => {
                    let bp = kb.index(b, j, 4);
                    kb.load(F32, bp, 0)
                }
                None => kb.fconst(0.0),
            };
            let dr = kb.index(d_o, j, row);
            // One accumulation over the taps per vector (`ty` F32X4) or scalar (`ty` F32) column.
            let column = |kb: &mut Kb, ty: Type, off: Value| {
                let init = if ty == F32X4 { kb.splat(bias) } else { bias };
                let acc = kb.var(ty, init);
                kb.for_n(p.taps, |kb, t| {
                    let tp = kb.index(ie, t, 8);
                    let toff = kb.load(I64, tp, 0);
                    let wp = kb.index(we, t, 4);
                    let w = kb.load(F32, wp, 0);
                    let w = if ty == F32X4 { kb.splat(w) } else { w };
                    let r = kb.at(so, toff);
                    let a = kb.at(r, off);
                    let v = kb.load(ty, a, 0);
                    let cur = kb.get(acc);
                    let nx = kb.mul_add(v, w, cur);
                    kb.set(acc, nx);
                });
                let v = kb.get(acc);
                let d = kb.at(dr, off);
                kb.store(v, d, 0);
            };
            if main > 0 {
                kb.for_range(0, main as i64, 4, |kb, i| {
                    let off = kb.scale(i, 4);
                    column(kb, F32X4, off);
                });
            }
            for i in main..p.inner {
                let off = kb.iconst((i * 4) as i64);
                column(kb, F32, off);
            }
        });
    });
}

// ---- ConvTranspose ----

/// Static description of a transposed convolution.
#[derive(Clone, Debug)]
pub(crate) struct ConvTransposeSpec {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Output channels per group.
    pub mg: usize,
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
    /// Begin pads (may be negative).
    pub pads_begin: Vec<i64>,
    /// Output spatial dims.
    pub output: Vec<usize>,
    /// A bias operand follows W.
    pub bias: bool,
}

/// Largest column buffer (bytes) the GEMM form may use; beyond it the direct form runs.
const MAX_COLUMN_BYTES: usize = 16 << 20;
/// Kernels with more taps than this run the direct form (the GEMM form unrolls the taps).
const MAX_UNROLLED_KERNEL: usize = 64;

impl ConvTransposeSpec {
    /// Bytes of scratch the kernel needs: the column buffer of the GEMM form, or none.
    pub(crate) fn scratch_bytes(&self) -> usize {
        let k: usize = self.kernel.iter().product();
        let hw: usize = self.input.iter().product();
        let bytes = self.mg * k * hw * 4;
        if k <= MAX_UNROLLED_KERNEL && bytes <= MAX_COLUMN_BYTES {
            bytes
        } else {
            0
        }
    }
}

/// Fills every output plane with its channel's bias (or zero).
fn bias_fill(kb: &mut Kb, s: &ConvTransposeSpec, b: Option<Ptr>, y: Ptr) {
    let m = s.mg * s.group;
    let oplane: usize = s.output.iter().product();
    kb.for_n(s.n * m, |kb, nm| {
        let v = match b {
            Some(b) => {
                let ch = kb.b.ins().urem_imm_s(nm, m as i64);
                let bp = kb.index(b, ch, 4);
                kb.load(F32, bp, 0)
            }
            None => kb.fconst(0.0),
        };
        let yp = kb.index(y, nm, (oplane * 4) as i64);
        kb.for_n(oplane, |kb, e| {
            let d = kb.index(yp, e, 4);
            kb.store(v, d, 0);
        });
    });
}

/// Operands: x, w, [b], y (f32), [scratch]. The output starts as the bias. With scratch (the
/// column buffer), each (image, group) is one GEMM, `col[m * K + k, i] = sum_c w[c, m, k] * x[c, i]`,
/// followed by a scatter-add of every column row to its tap's output positions, whose valid input
/// range is known at compile time per tap; without it, every input element adds `x * w` at each
/// tap's target directly.
pub(crate) fn conv_transpose_kernel(kb: &mut Kb, s: &ConvTransposeSpec) {
    let (x, w) = (kb.args[0], kb.args[1]);
    let b = s.bias.then(|| kb.args[2]);
    let y = kb.args[if s.bias { 3 } else { 2 }];
    bias_fill(kb, s, b, y);
    if s.scratch_bytes() > 0 {
        let col = kb.args[if s.bias { 4 } else { 3 }];
        return conv_transpose_gemm(kb, s, x, w, y, col);
    }
    conv_transpose_direct(kb, s, x, w, y);
}

fn conv_transpose_gemm(kb: &mut Kb, s: &ConvTransposeSpec, x: Ptr, w: Ptr, y: Ptr, col: Ptr) {
    use super::gemm::{gemm, Gemm, Mat};
    let m = s.mg * s.group;
    let cg = s.c / s.group;
    let r = s.input.len();
    let k: usize = s.kernel.iter().product();
    let hw: usize = s.input.iter().product();
    let oplane: usize = s.output.iter().product();
    let istr = dense_strides(&s.input, 4);
    let ostr = dense_strides(&s.output, 4);
    let taps: Vec<Vec<usize>> = {
        let mut v = Vec::with_capacity(k);
        let mut idx = vec![0usize; r];
        for _ in 0..k {
            v.push(idx.clone());
            for a in (0..r).rev() {
                idx[a] += 1;
                if idx[a] < s.kernel[a] {
                    break;
                }
                idx[a] = 0;
            }
        }
        v
    };
    kb.for_n(s.n, |kb, ni| {
        let xn = kb.index(x, ni, (s.c * hw * 4) as i64);
        let yn = kb.index(y, ni, (m * oplane * 4) as i64);
        kb.for_n(s.group, |kb, gi| {
            // A = W_g^T ([Mg*K, Cg], W_g being [Cg, Mg*K] row-major), B = X_g ([Cg, HW]).
            let wg = kb.index(w, gi, (cg * s.mg * k * 4) as i64);
            let xg = kb.index(xn, gi, (cg * hw * 4) as i64);
            let spec = Gemm {
                m: s.mg * k,
                n: hw,
                k: cg,
                alpha: 1.0,
                a: Mat {
                    p: wg,
                    rs: 4,
                    cs: (s.mg * k * 4) as i64,
                },
                b: Mat {
                    p: xg,
                    rs: (hw * 4) as i64,
                    cs: 4,
                },
                y: Mat {
                    p: col,
                    rs: (hw * 4) as i64,
                    cs: 4,
                },
                add: None,
                post: Vec::new(),
            };
            gemm(kb, &spec);
            let yg = kb.index(yn, gi, (s.mg * oplane * 4) as i64);
            kb.for_n(s.mg, |kb, mj| {
                let ym = kb.index(yg, mj, (oplane * 4) as i64);
                let cm = kb.index(col, mj, (k * hw * 4) as i64);
                for (t, tap) in taps.iter().enumerate() {
                    // Input positions i with 0 <= i*s + k*d - pb < out, per axis.
                    let mut ranges = Vec::with_capacity(r);
                    let mut ybase = 0i64;
                    for a in 0..r {
                        let kd = (tap[a] * s.dilations[a]) as i64 - s.pads_begin[a];
                        let st = s.strides[a] as i64;
                        let ceil_div = |num: i64| -((-num).div_euclid(st));
                        let lo = ceil_div(-kd).max(0);
                        let hi = ceil_div(s.output[a] as i64 - kd).min(s.input[a] as i64);
                        ranges.push((lo, hi));
                        ybase += kd * ostr[a];
                    }
                    if ranges.iter().any(|(lo, hi)| lo >= hi) {
                        continue;
                    }
                    let crow = kb.offset(cm, (t * hw * 4) as i64);
                    let y0 = kb.offset(ym, ybase);
                    col2im_level(kb, s, &ranges, &istr, &ostr, 0, y0, crow);
                }
            });
        });
    });
}

/// Adds the column row's valid run into the output along axis `a` and below.
#[allow(clippy::too_many_arguments)]
fn col2im_level(
    kb: &mut Kb,
    s: &ConvTransposeSpec,
    ranges: &[(i64, i64)],
    istr: &[i64],
    ostr: &[i64],
    a: usize,
    yp: Ptr,
    cp: Ptr,
) {
    let (lo, hi) = ranges[a];
    let ystep = s.strides[a] as i64 * ostr[a];
    if a + 1 < ranges.len() {
        kb.for_range(lo, hi, 1, |kb, i| {
            let yq = kb.index(yp, i, ystep);
            let cq = kb.index(cp, i, istr[a]);
            col2im_level(kb, s, ranges, istr, ostr, a + 1, yq, cq);
        });
        return;
    }
    let n = (hi - lo) as usize;
    let yq = kb.offset(yp, lo * ystep);
    let cq = kb.offset(cp, lo * 4);
    let main = if ystep == 4 { n / 4 * 4 } else { 0 };
    if main > 0 {
        kb.for_range(0, main as i64, 4, |kb, i| {
            let off = kb.scale(i, 4);
            let d = kb.at(yq, off);
            let c = kb.at(cq, off);
            let dv = kb.load(F32X4, d, 0);
            let cv = kb.load(F32X4, c, 0);
            let sum = kb.b.ins().fadd(dv, cv);
            kb.store(sum, d, 0);
        });
    }
    if n > main {
        kb.for_range(main as i64, n as i64, 1, |kb, i| {
            let d = kb.index(yq, i, ystep);
            let c = kb.index(cq, i, 4);
            let dv = kb.load(F32, d, 0);
            let cv = kb.load(F32, c, 0);
            let sum = kb.b.ins().fadd(dv, cv);
            kb.store(sum, d, 0);
        });
    }
}

fn conv_transpose_direct(kb: &mut Kb, s: &ConvTransposeSpec, x: Ptr, w: Ptr, y: Ptr) {
    let m = s.mg * s.group;
    let cg = s.c / s.group;
    let r = s.input.len();
    let oplane: usize = s.output.iter().product();
    let iplane: usize = s.input.iter().product();
    let ksize: usize = s.kernel.iter().product();
    let istr = dense_strides(&s.input, 4);
    let ostr = dense_strides(&s.output, 4);
    let kstr = dense_strides(&s.kernel, 4);
    kb.for_n(s.n, |kb, ni| {
        let xn = kb.index(x, ni, (s.c * iplane * 4) as i64);
        let yn = kb.index(y, ni, (m * oplane * 4) as i64);
        for g in 0..s.group {
            let yg = kb.offset(yn, (g * s.mg * oplane * 4) as i64);
            kb.for_n(cg, |kb, cl| {
                let ci = kb.b.ins().iadd_imm_s(cl, (g * cg) as i64);
                let xc = kb.index(xn, ci, (iplane * 4) as i64);
                let wc = kb.index(w, ci, (s.mg * ksize * 4) as i64);
                super::conv::index_nest(kb, &s.input, &mut |kb, is| {
                    let is = is.to_vec();
                    let mut xo = kb.iconst(0);
                    for a in 0..r {
                        let t = kb.scale(is[a], istr[a]);
                        xo = kb.b.ins().iadd(xo, t);
                    }
                    let xp = kb.at(xc, xo);
                    let xv = kb.load(F32, xp, 0);
                    super::conv::index_nest(kb, &s.kernel, &mut |kb, ks| {
                        let mut ok: Option<Value> = None;
                        let mut yo = kb.iconst(0);
                        let mut wo = kb.iconst(0);
                        for a in 0..r {
                            let p = kb.b.ins().imul_imm_s(is[a], s.strides[a] as i64);
                            let q = kb.b.ins().imul_imm_s(ks[a], s.dilations[a] as i64);
                            let o = kb.b.ins().iadd(p, q);
                            let o = kb.b.ins().iadd_imm_s(o, -s.pads_begin[a]);
                            let inb = kb.b.ins().icmp_imm_u(
                                IntCC::UnsignedLessThan,
                                o,
                                s.output[a] as i64,
                            );
                            ok = Some(match ok {
                                None => inb,
                                Some(v) => kb.b.ins().band(v, inb),
                            });
                            let t = kb.scale(o, ostr[a]);
                            yo = kb.b.ins().iadd(yo, t);
                            let t = kb.scale(ks[a], kstr[a]);
                            wo = kb.b.ins().iadd(wo, t);
                        }
                        let ok = ok.expect("at least one spatial axis");
                        kb.if_then(ok, |kb| {
                            let yt = kb.at(yg, yo);
                            let wt = kb.at(wc, wo);
                            kb.for_n(s.mg, |kb, mj| {
                                let yp = kb.index(yt, mj, (oplane * 4) as i64);
                                let wp = kb.index(wt, mj, (ksize * 4) as i64);
                                let wv = kb.load(F32, wp, 0);
                                let cur = kb.load(F32, yp, 0);
                                let nv = kb.mul_add(xv, wv, cur);
                                kb.store(nv, yp, 0);
                            });
                        });
                    });
                });
            });
        }
    });
}

// ---- max pooling of any dtype, with indices ----

/// Static description of a max pool with the generic kernel.
#[derive(Clone, Debug)]
pub(crate) struct MaxPoolSpec {
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
    /// Begin pads.
    pub pads_begin: Vec<usize>,
    /// Output spatial dims.
    pub output: Vec<usize>,
    /// Element arithmetic.
    pub ar: Arith,
    /// Element size.
    pub esize: usize,
    /// Spatial strides (elements) numbering the indices output, when it is computed.
    pub index_strides: Option<Vec<usize>>,
}

/// Operands: x, y, [indices (i64)]. The first maximum in window order wins; taps in the padding
/// never do (every window reads at least one input element, which inference checks).
pub(crate) fn max_pool_kernel(kb: &mut Kb, s: &MaxPoolSpec) {
    let (x, y) = (kb.args[0], kb.args[1]);
    let ind = s.index_strides.as_ref().map(|_| kb.args[2]);
    let r = s.input.len();
    let es = s.esize as i64;
    let sin: usize = s.input.iter().product();
    let sout: usize = s.output.iter().product();
    let istr = dense_strides(&s.input, es);
    let ostr = dense_strides(&s.output, 1);
    kb.for_n(s.planes, |kb, plane| {
        let xp = kb.index(x, plane, sin as i64 * es);
        let yp = kb.index(y, plane, sout as i64 * es);
        let ip = ind.map(|p| kb.index(p, plane, (sout * 8) as i64));
        super::conv::index_nest(kb, &s.output, &mut |kb, os| {
            let os = os.to_vec();
            let z = s.ar.zero(kb);
            let best = kb.var(s.ar.ty(), z);
            let m1 = kb.iconst(-1);
            let best_at = kb.var(I64, m1);
            let best_num = kb.var(I64, m1);
            super::conv::index_nest(kb, &s.kernel, &mut |kb, ks| {
                let mut ok: Option<Value> = None;
                let mut off = kb.iconst(0);
                let mut num = kb.iconst(0);
                for j in 0..r {
                    let a = kb.b.ins().imul_imm_s(os[j], s.strides[j] as i64);
                    let b = kb.b.ins().imul_imm_s(ks[j], s.dilations[j] as i64);
                    let i = kb.b.ins().iadd(a, b);
                    let i = kb.b.ins().iadd_imm_s(i, -(s.pads_begin[j] as i64));
                    let inb =
                        kb.b.ins()
                            .icmp_imm_u(IntCC::UnsignedLessThan, i, s.input[j] as i64);
                    ok = Some(match ok {
                        None => inb,
                        Some(v) => kb.b.ins().band(v, inb),
                    });
                    let zero = kb.iconst(0);
                    let hi = kb.iconst(s.input[j] as i64 - 1);
                    let c = kb.b.ins().smax(i, zero);
                    let c = kb.b.ins().smin(c, hi);
                    let t = kb.scale(c, istr[j]);
                    off = kb.b.ins().iadd(off, t);
                    if let Some(ss) = &s.index_strides {
                        let t = kb.scale(c, ss[j] as i64);
                        num = kb.b.ins().iadd(num, t);
                    }
                }
                let ok = ok.expect("at least one spatial axis");
                let src = kb.at(xp, off);
                let v = s.ar.load(kb, src, 0);
                let bv = kb.get(best);
                let ba = kb.get(best_at);
                let first = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, ba, 0);
                let better = s.ar.gt(kb, v, bv);
                let want = kb.b.ins().bor(first, better);
                let take = kb.b.ins().band(ok, want);
                let nv = kb.b.ins().select(take, v, bv);
                let na = kb.b.ins().select(take, off, ba);
                kb.set(best, nv);
                kb.set(best_at, na);
                if s.index_strides.is_some() {
                    let bn = kb.get(best_num);
                    let nn = kb.b.ins().select(take, num, bn);
                    kb.set(best_num, nn);
                }
            });
            let mut oo = kb.iconst(0);
            for j in 0..r {
                let t = kb.scale(os[j], ostr[j]);
                oo = kb.b.ins().iadd(oo, t);
            }
            // Copy the winning element's bytes (exact for every dtype).
            let ba = kb.get(best_at);
            let src = kb.at(xp, ba);
            let dst = kb.index(yp, oo, es);
            copy_elem(kb, dst, src, s.esize);
            if let Some(ip) = ip {
                let bn = kb.get(best_num);
                let base = kb.b.ins().imul_imm_s(plane, sin as i64);
                let num = kb.b.ins().iadd(base, bn);
                let d = kb.index(ip, oo, 8);
                kb.store(num, d, 0);
            }
        });
    });
}

// ---- direct convolution of any float dtype ----

/// Static description of a convolution for the generic direct kernel.
#[derive(Clone, Debug)]
pub(crate) struct DirectConvSpec {
    /// The convolution's shapes and window, as the f32 kernel sees them.
    pub conv: super::conv::ConvSpec,
    /// Element arithmetic (accumulates in f32 for the half types, f64 for f64).
    pub ar: Arith,
    /// Element size.
    pub esize: usize,
}

impl std::ops::Deref for DirectConvSpec {
    type Target = super::conv::ConvSpec;
    fn deref(&self) -> &Self::Target {
        &self.conv
    }
}

/// Operands: x, w, [b], y. Every output element sums `x * w` over its group's channels and the
/// taps inside the input (taps in the padding are read at a clamped index and discarded), widened
/// to the compute type and rounded once at the end. The f32 path (im2col + GEMM) is in `conv`.
pub(crate) fn direct_conv_kernel(kb: &mut Kb, s: &DirectConvSpec) {
    let (x, w) = (kb.args[0], kb.args[1]);
    let b = s.bias.then(|| kb.args[2]);
    let y = kb.args[if s.bias { 3 } else { 2 }];
    let r = s.input.len();
    let es = s.esize as i64;
    let (cg, mg) = (s.c / s.group, s.m / s.group);
    let iplane: usize = s.input.iter().product();
    let oplane: usize = s.output.iter().product();
    let ksize: usize = s.kernel.iter().product();
    let istr = dense_strides(&s.input, es);
    let ostr = dense_strides(&s.output, es);
    let kstr = dense_strides(&s.kernel, es);
    kb.for_n(s.n, |kb, ni| {
        let xn = kb.index(x, ni, (s.c * iplane) as i64 * es);
        let yn = kb.index(y, ni, (s.m * oplane) as i64 * es);
        kb.for_n(s.m, |kb, mi| {
            let gi = kb.b.ins().udiv_imm_s(mi, mg as i64);
            let xg = kb.index(xn, gi, (cg * iplane) as i64 * es);
            let wm = kb.index(w, mi, (cg * ksize) as i64 * es);
            let ym = kb.index(yn, mi, oplane as i64 * es);
            super::conv::index_nest(kb, &s.output, &mut |kb, os| {
                let os = os.to_vec();
                let init = match b {
                    Some(b) => {
                        let bp = kb.index(b, mi, es);
                        s.ar.load(kb, bp, 0)
                    }
                    None => s.ar.zero(kb),
                };
                let acc = kb.var(s.ar.ty(), init);
                kb.for_n(cg, |kb, cl| {
                    let xc = kb.index(xg, cl, iplane as i64 * es);
                    let wc = kb.index(wm, cl, ksize as i64 * es);
                    super::conv::index_nest(kb, &s.kernel, &mut |kb, ks| {
                        let mut ok: Option<Value> = None;
                        let mut xo = kb.iconst(0);
                        let mut wo = kb.iconst(0);
                        for a in 0..r {
                            let p = kb.b.ins().imul_imm_s(os[a], s.strides[a] as i64);
                            let q = kb.b.ins().imul_imm_s(ks[a], s.dilations[a] as i64);
                            let i = kb.b.ins().iadd(p, q);
                            let i = kb.b.ins().iadd_imm_s(i, -(s.pads_begin[a] as i64));
                            let inb = kb.b.ins().icmp_imm_u(
                                IntCC::UnsignedLessThan,
                                i,
                                s.input[a] as i64,
                            );
                            ok = Some(match ok {
                                None => inb,
                                Some(v) => kb.b.ins().band(v, inb),
                            });
                            let zero = kb.iconst(0);
                            let hi = kb.iconst(s.input[a] as i64 - 1);
                            let c = kb.b.ins().smax(i, zero);
                            let c = kb.b.ins().smin(c, hi);
                            let t = kb.scale(c, istr[a]);
                            xo = kb.b.ins().iadd(xo, t);
                            let t = kb.scale(ks[a], kstr[a]);
                            wo = kb.b.ins().iadd(wo, t);
                        }
                        let ok = ok.expect("at least one spatial axis");
                        let xp = kb.at(xc, xo);
                        let wp = kb.at(wc, wo);
                        let xv = s.ar.load(kb, xp, 0);
                        let wv = s.ar.load(kb, wp, 0);
                        let prod = s.ar.mul(kb, xv, wv);
                        let cur = kb.get(acc);
                        let sum = s.ar.add(kb, cur, prod);
                        let nx = kb.b.ins().select(ok, sum, cur);
                        kb.set(acc, nx);
                    });
                });
                let mut oo = kb.iconst(0);
                for a in 0..r {
                    let t = kb.scale(os[a], ostr[a]);
                    oo = kb.b.ins().iadd(oo, t);
                }
                let v = kb.get(acc);
                let d = kb.at(ym, oo);
                s.ar.store(kb, v, d, 0);
            });
        });
    });
}

// ---- Einsum ----

/// Static description of an einsum: output loops, summed loops, byte strides per operand.
#[derive(Clone, Debug)]
pub(crate) struct EinsumSpec {
    /// Output dims.
    pub out: Vec<usize>,
    /// Summed dims.
    pub sum: Vec<usize>,
    /// Per input, byte strides along the output dims.
    pub out_strides: Vec<Vec<i64>>,
    /// Per input, byte strides along the summed dims.
    pub sum_strides: Vec<Vec<i64>>,
    /// Element arithmetic.
    pub ar: Arith,
    /// Element size.
    pub esize: usize,
}

/// Operands: each input, then y.
pub(crate) fn einsum_kernel(kb: &mut Kb, s: &EinsumSpec) {
    let k = s.out_strides.len();
    let y = kb.args[k];
    let mut bases: Vec<Ptr> = kb.args[..k].to_vec();
    bases.push(y);
    let mut strides = s.out_strides.clone();
    strides.push(dense_strides(&s.out, s.esize as i64));
    loop_nest(kb, &s.out, &strides, &bases, &mut |kb, p| {
        let z = s.ar.zero(kb);
        let acc = kb.var(s.ar.ty(), z);
        loop_nest(kb, &s.sum, &s.sum_strides, &p[..k], &mut |kb, q| {
            let mut prod = s.ar.load(kb, q[0], 0);
            for &qi in &q[1..] {
                let v = s.ar.load(kb, qi, 0);
                prod = s.ar.mul(kb, prod, v);
            }
            let cur = kb.get(acc);
            let nx = s.ar.add(kb, cur, prod);
            kb.set(acc, nx);
        });
        let v = kb.get(acc);
        s.ar.store(kb, v, p[k], 0);
    });
}
