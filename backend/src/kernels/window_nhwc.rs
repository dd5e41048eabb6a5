//! Channels-last (NHWC) sliding windows: depthwise convolution, max and average pooling, and
//! global pooling, all vectorized over channels.
//!
//! In NHWC the channels of one position are contiguous, so a window op is
//! `y[oy, ox, c] = fold over taps (ky, kx) of x[oy * sy - pt + ky * dy, ox * sx - pl + kx * dx, c]`
//! with `c` running along a vector: any stride costs the same (no deinterleaving), any channel
//! count fills whole vectors (the last, partial one overlaps the one before), and a depthwise
//! convolution's weights are a `[kh][kw][C]` table read as vectors.
//!
//! The column geometry is decided at compile time: along a row, the output positions fall into
//! runs whose windows cover the same kernel columns (the border positions skip the columns that
//! fall in the padding; the interior is one run), and every run gets its own copy of the position
//! code with exactly its taps, so no column tap is tested at run time. Kernel rows are a loop:
//! the interior output rows (every kernel row inside the input) run it over constant bounds in
//! one copy of the row code, the border rows above and below over bounds computed per row in
//! another (one copy per row run would double the code of a 5x5 window for little speed). Inside
//! a run, positions go `pw` at a time (a group) and channels `cv` vectors at a time: the group's
//! `pw x cv` accumulators stay in registers over every tap, each tap's `cv` weight vectors are
//! loaded once for the group, and the bias, the activations or an average's scale (1 / the taps
//! counted) are applied in registers before the one store.
//!
//! Work is shared by output rows (image x row): parts write disjoint rows and each computes its
//! rows exactly as the serial kernel does.

use super::depthwise::{activation, vmax};
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use cranelift_frontend::Variable;
use kiln_ir::ops::{PoolKind, UnaryOp};

/// One spatial axis of a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Axis {
    /// Input length.
    pub input: usize,
    /// Output length.
    pub output: usize,
    /// Kernel length.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Dilation.
    pub dilation: usize,
    /// Padding before the input.
    pub pad_begin: usize,
    /// Padding after the input (only an average with `count_include_pad` looks at it).
    pub pad_end: usize,
}

/// A run of output positions along one axis whose windows cover the same kernel taps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    /// First and one-past-last output position.
    pub o0: usize,
    pub o1: usize,
    /// Kernel taps inside the input: `k0..k1`.
    pub k0: usize,
    pub k1: usize,
    /// Taps an average divides by along this axis.
    pub count: usize,
}

impl Axis {
    /// Input coordinate of output `o`, tap `k` (may be outside the input).
    fn coord(&self, o: usize, k: usize) -> i64 {
        (o * self.stride + k * self.dilation) as i64 - self.pad_begin as i64
    }

    /// The runs of output positions with the same taps inside the input. The taps inside are
    /// always an interval (the coordinate grows with the tap). With `include_pad` the count is
    /// the taps inside the padded input (taps of a ceil-mode window past the end padding never
    /// count), otherwise the taps inside the input.
    pub(crate) fn runs(&self, include_pad: bool) -> Vec<Run> {
        let mut out: Vec<Run> = Vec::new();
        let len = self.input as i64;
        for o in 0..self.output {
            let inside = (0..self.kernel).filter(|&k| (0..len).contains(&self.coord(o, k)));
            let (mut k0, mut k1) = (0, 0);
            for (i, k) in inside.enumerate() {
                if i == 0 {
                    k0 = k;
                }
                k1 = k + 1;
            }
            let count = if include_pad {
                let hi = (self.input + self.pad_end) as i64;
                (0..self.kernel).filter(|&k| self.coord(o, k) < hi).count()
            } else {
                k1 - k0
            };
            match out.last_mut() {
                Some(r) if (r.k0, r.k1, r.count) == (k0, k1, count) => r.o1 = o + 1,
                _ => out.push(Run {
                    o0: o,
                    o1: o + 1,
                    k0,
                    k1,
                    count,
                }),
            }
        }
        out
    }
}

/// What a window computes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum WinOp {
    /// Depthwise convolution: `bias + sum(w[tap, c] * x)`, then the activations. The weights
    /// operand is the `[kh][kw][C]` table (or, with `repack`, the OIHW `[C, 1, kh, kw]` tensor,
    /// turned into the table in scratch first).
    Conv {
        /// A bias operand follows the weights.
        bias: bool,
        /// Activations applied in order before the store.
        post: Vec<UnaryOp>,
        /// The weights are OIHW, read at run time: the kernel writes the table into its scratch
        /// operand (and cannot be split, every part would write it).
        repack: bool,
    },
    /// Max or average pooling (`include_pad`: ONNX `count_include_pad`).
    Pool(PoolKind, bool),
}

/// Static description of a channels-last 2-D window op.
#[derive(Clone, Debug)]
pub(crate) struct WindowSpec {
    /// Batch.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// The row axis (H).
    pub rows: Axis,
    /// The column axis (W).
    pub cols: Axis,
    /// The op.
    pub op: WinOp,
}

/// Element reads below which a window op is not worth splitting into parallel parts (a part
/// handed to another thread costs a few microseconds).
const SPLIT_WORK: usize = 1 << 16;

impl WindowSpec {
    /// Work units of [`window_kernel`]: output rows of every image.
    fn units(&self) -> usize {
        self.n * self.rows.output
    }

    /// Whether the step should be split into parallel parts.
    pub(crate) fn splits(&self) -> bool {
        let repack = matches!(self.op, WinOp::Conv { repack: true, .. });
        let work = self.units() * self.cols.output * self.c * self.rows.kernel * self.cols.kernel;
        !repack && self.units() > 1 && work >= SPLIT_WORK
    }

    /// Scratch bytes [`window_kernel`] needs (the weight table of a run-time weights operand).
    pub(crate) fn scratch_bytes(&self) -> usize {
        match self.op {
            WinOp::Conv { repack: true, .. } => 4 * self.c * self.rows.kernel * self.cols.kernel,
            _ => 0,
        }
    }
}

/// The `[kh][kw][C]` table of depthwise weights given as OIHW `[C, 1, kh, kw]`.
pub(crate) fn pack_depthwise(w: &[f32], c: usize, kh: usize, kw: usize) -> Vec<f32> {
    let taps = kh * kw;
    let mut out = vec![0f32; taps * c];
    for ch in 0..c {
        for t in 0..taps {
            out[t * c + ch] = w[ch * taps + t];
        }
    }
    out
}

/// Positions per group and vectors per channel step. The group's accumulators plus one tap's
/// weight vectors and a few loads fit the registers (x86: 8 + 2 of 16; aarch64: 16 + 4 of 32),
/// and each weight vector serves four positions. Along a row at stride 1, position `j`'s tap
/// `kx + 1` is position `j + 1`'s tap `kx`: the same load, which Cranelift shares (the input
/// loads are read-only), so four positions of a 3-wide row take 6 loads per vector, not 12.
/// (Measured on x86: 4 x 2 beats 2 x 4, 3 x 3, 5 x 2, 6 x 2 and 8 x 1 on MobileNetV2's
/// depthwise layers.)
fn blocking(kb: &Kb) -> (usize, usize) {
    if kb.cfg.aarch64 {
        (4, 4)
    } else {
        (4, 2)
    }
}

/// Channels-last depthwise convolution or pooling. Operands: x, [w, [bias]], y, [scratch].
pub(crate) fn window_kernel(kb: &mut Kb, s: &WindowSpec) {
    // Nothing writes the input while the kernel runs (the output never shares its storage), so
    // its loads may move freely: Cranelift then folds each into its multiply-add.
    let x = Ptr {
        ro: true,
        ..kb.args[0]
    };
    let (w, bias, y) = match &s.op {
        WinOp::Conv { bias, repack, .. } => {
            let (b, yi) = if *bias {
                (Some(kb.args[2]), 3)
            } else {
                (None, 2)
            };
            let w = if *repack {
                // [C][taps] -> [taps][C], before any part could read it.
                let table = kb.args[yi + 1];
                let taps = (s.rows.kernel * s.cols.kernel) as i64;
                super::strided_copy(
                    kb,
                    &[taps as usize, s.c],
                    kb.args[1],
                    &[4, taps * 4],
                    table,
                    &[(s.c * 4) as i64, 4],
                    4,
                );
                table
            } else {
                kb.args[1]
            };
            (Some(w), b, kb.args[yi])
        }
        WinOp::Pool(..) => (None, None, kb.args[1]),
    };
    if s.units() == 0 || s.cols.output == 0 || s.c == 0 {
        return;
    }
    let include_pad = matches!(s.op, WinOp::Pool(PoolKind::Avg, true));
    let col_runs = s.cols.runs(include_pad);
    let kh = s.rows.kernel;
    let interior = s
        .rows
        .runs(include_pad)
        .iter()
        .find(|r| r.k0 == 0 && r.k1 == kh && r.count == kh)
        .map(|r| (r.o0, r.o1));
    let (pw, cv) = blocking(kb);
    let e = Emit { s, w, bias, pw, cv };
    let c4 = (s.c * 4) as i64;
    let (h, wd) = (s.rows.input as i64, s.cols.input as i64);
    let (oh, ow) = (s.rows.output, s.cols.output);
    let (lo, hi) = kb.share(s.units());
    kb.for_n(s.n, |kb, n| {
        let xn = kb.index(x, n, h * wd * c4);
        let yn = kb.index(y, n, (oh * ow) as i64 * c4);
        // This part's rows of image n: [lo, hi) shifted to the image, clipped to it.
        let base = kb.b.ins().imul_imm_s(n, oh as i64);
        let rlo = kb.b.ins().isub(lo, base);
        let rhi = kb.b.ins().isub(hi, base);
        let zero = kb.iconst(0);
        let rlo = kb.b.ins().smax(rlo, zero);
        let top = kb.iconst(oh as i64);
        let rhi = kb.b.ins().smin(rhi, top);
        // Rows whose every kernel row is inside the input (the interior run) share one copy of
        // the code with a constant row loop; the border rows above and below it another, with
        // their kernel rows computed at run time.
        let row = |kb: &mut Kb, oy: Value, rows: &RowTaps| {
            // Input row of tap 0 (possibly in the padding; only the row's taps are read).
            let xr = kb.index(xn, oy, s.rows.stride as i64 * wd * c4);
            let xr = kb.offset(xr, -(s.rows.pad_begin as i64) * wd * c4);
            let yr = kb.index(yn, oy, ow as i64 * c4);
            for rx in &col_runs {
                e.col_run(kb, rows, rx, xr, yr);
            }
        };
        let border = |kb: &mut Kb, a: Value, b: Value| {
            kb.for_dyn(a, b, |kb, oy| {
                let rows = row_taps(kb, s, include_pad, oy);
                row(kb, oy, &rows)
            })
        };
        match interior {
            Some((i0, i1)) => {
                let (i0, i1) = (kb.iconst(i0 as i64), kb.iconst(i1 as i64));
                let a = kb.b.ins().smin(rhi, i0);
                border(kb, rlo, a);
                let a = kb.b.ins().smax(rlo, i0);
                let b = kb.b.ins().smin(rhi, i1);
                kb.for_dyn(a, b, |kb, oy| {
                    let rows = RowTaps::whole(kb, s);
                    row(kb, oy, &rows)
                });
                let a = kb.b.ins().smax(rlo, i1);
                border(kb, a, rhi);
            }
            None => border(kb, rlo, rhi),
        }
    });
}

/// The kernel rows of an output row.
#[derive(Clone, Copy)]
struct RowTaps {
    /// Kernel rows inside the input: `k0..k1`.
    k0: Value,
    k1: Value,
    /// The same, when they are constants.
    fixed: Option<(usize, usize)>,
    /// For an average: the rows it divides by, as an f32 (in [`Emit::channels`], the whole
    /// scale).
    count: Option<Value>,
}

impl RowTaps {
    /// Every kernel row (an interior output row).
    fn whole(kb: &mut Kb, s: &WindowSpec) -> RowTaps {
        let kh = s.rows.kernel;
        let count = matches!(s.op, WinOp::Pool(PoolKind::Avg, _)).then(|| kb.fconst(kh as f32));
        RowTaps {
            k0: kb.iconst(0),
            k1: kb.iconst(kh as i64),
            fixed: Some((0, kh)),
            count,
        }
    }
}

/// `ceil(max(t, 0) / d)` clamped to `[0, cap]`, for a run-time `t` and constant `d`.
fn ceil_div_clamp(kb: &mut Kb, t: Value, d: usize, cap: usize) -> Value {
    let z = kb.iconst(0);
    let t = kb.b.ins().smax(t, z);
    let q = if d == 1 {
        t
    } else {
        let t = kb.b.ins().iadd_imm_s(t, d as i64 - 1);
        kb.b.ins().udiv_imm_u(t, d as i64)
    };
    let c = kb.iconst(cap as i64);
    kb.b.ins().smin(q, c)
}

/// The kernel rows of output row `oy` whose input row `oy * sy - pt + ky * dy` is inside the
/// input (the tap row grows with `ky`, so they are an interval), and for an average the rows it
/// counts: those, or with `include_pad` every row before the end of the bottom padding.
fn row_taps(kb: &mut Kb, s: &WindowSpec, include_pad: bool, oy: Value) -> RowTaps {
    let a = &s.rows;
    // Tap 0's input row, and how far the input starts and ends from it.
    let first = kb.b.ins().imul_imm_s(oy, a.stride as i64);
    let first = kb.b.ins().iadd_imm_s(first, -(a.pad_begin as i64));
    let zero = kb.iconst(0);
    let to_start = kb.b.ins().isub(zero, first);
    let k0 = ceil_div_clamp(kb, to_start, a.dilation, a.kernel);
    let end = kb.iconst(a.input as i64);
    let to_end = kb.b.ins().isub(end, first);
    let k1 = ceil_div_clamp(kb, to_end, a.dilation, a.kernel);
    let k1 = kb.b.ins().smax(k1, k0);
    let count = matches!(s.op, WinOp::Pool(PoolKind::Avg, _)).then(|| {
        let c = if include_pad {
            let end = kb.iconst((a.input + a.pad_end) as i64);
            let to_end = kb.b.ins().isub(end, first);
            ceil_div_clamp(kb, to_end, a.dilation, a.kernel)
        } else {
            kb.b.ins().isub(k1, k0)
        };
        kb.b.ins().fcvt_from_sint(F32, c)
    });
    RowTaps {
        k0,
        k1,
        fixed: None,
        count,
    }
}

/// What the code of every position group is built from.
struct Emit<'a> {
    s: &'a WindowSpec,
    /// The `[kh][kw][C]` weight table (convolution).
    w: Option<Ptr>,
    bias: Option<Ptr>,
    /// Positions per group.
    pw: usize,
    /// Vectors per channel step.
    cv: usize,
}

/// Base pointers of one group at the first channel of a step: x at tap 0 of the first
/// position, y at the first position, the weight table at tap 0, the bias.
#[derive(Clone, Copy)]
struct Bases {
    x: Ptr,
    y: Ptr,
    w: Option<Ptr>,
    bias: Option<Ptr>,
}

impl Emit<'_> {
    /// The positions `rx.o0..rx.o1` of one output row: groups of `pw` in a loop, the rest one
    /// group at a constant position.
    fn col_run(&self, kb: &mut Kb, rows: &RowTaps, rx: &Run, xr: Ptr, yr: Ptr) {
        let s = self.s;
        let c4 = (s.c * 4) as i64;
        let sx = s.cols.stride as i64;
        let pl = s.cols.pad_begin as i64;
        // An average's scale, 1 / (rows x columns counted), once per row and run.
        let scale = rows.count.map(|cy| {
            let cx = kb.fconst(rx.count.max(1) as f32);
            let n = kb.b.ins().fmul(cy, cx);
            let one = kb.fconst(1.0);
            kb.b.ins().fdiv(one, n)
        });
        let rows = &RowTaps {
            count: scale,
            ..*rows
        };
        let len = rx.o1 - rx.o0;
        let groups = if len >= self.pw { len / self.pw } else { 0 };
        let end = rx.o0 + groups * self.pw;
        if groups > 0 {
            kb.for_range(rx.o0 as i64, end as i64, self.pw as i64, |kb, ox| {
                let xp = kb.index(xr, ox, sx * c4);
                let xp = kb.offset(xp, -pl * c4);
                let yp = kb.index(yr, ox, c4);
                self.group(kb, rows, rx, xp, yp, self.pw);
            });
        }
        if end < rx.o1 {
            let o = end as i64;
            let xp = kb.offset(xr, (o * sx - pl) * c4);
            let yp = kb.offset(yr, o * c4);
            self.group(kb, rows, rx, xp, yp, rx.o1 - end);
        }
    }

    /// `npos` adjacent positions, every channel: steps of `cv` vectors in a loop, the remaining
    /// vectors, then the last channels (an overlapping vector, or scalars when there are fewer
    /// than four channels).
    fn group(&self, kb: &mut Kb, rows: &RowTaps, rx: &Run, xp: Ptr, yp: Ptr, npos: usize) {
        let c = self.s.c;
        let nvec = c / 4;
        let steps = nvec / self.cv;
        let b = Bases {
            x: xp,
            y: yp,
            w: self.w,
            bias: self.bias,
        };
        if steps > 0 {
            let step = (self.cv * 16) as i64;
            kb.for_range(0, steps as i64 * step, step, |kb, cb| {
                let at = |kb: &mut Kb, p: Ptr| kb.at(p, cb);
                let bb = Bases {
                    x: at(kb, b.x),
                    y: at(kb, b.y),
                    w: b.w.map(|p| at(kb, p)),
                    bias: b.bias.map(|p| at(kb, p)),
                };
                let offs: Vec<i64> = (0..self.cv).map(|v| 16 * v as i64).collect();
                self.channels(kb, rows, rx, &bb, npos, F32X4, &offs);
            });
        }
        let rest: Vec<i64> = (steps * self.cv..nvec).map(|v| 16 * v as i64).collect();
        if !rest.is_empty() {
            self.channels(kb, rows, rx, &b, npos, F32X4, &rest);
        }
        if !c.is_multiple_of(4) {
            if c >= 4 {
                // The last four channels again: the overlap recomputes the same values.
                self.channels(kb, rows, rx, &b, npos, F32X4, &[(c as i64 - 4) * 4]);
            } else {
                let offs: Vec<i64> = (0..c).map(|ch| 4 * ch as i64).collect();
                self.channels(kb, rows, rx, &b, npos, F32, &offs);
            }
        }
    }

    /// The outputs of `npos` positions for the channel vectors (or scalars) at byte offsets
    /// `offs` from the bases, folded over the kernel rows `rows` and the kernel columns of `rx`.
    ///
    /// The kernel rows are folded in a loop whose block parameters are the accumulators, vector
    /// by vector and position by position inside a vector. Cranelift computes a pure value where
    /// it is first needed, depth first: at the loop's back edge (or at the stores) it emits one
    /// accumulator's chain over a kernel row after the other, loads first, so each chain keeps
    /// only one row's loads live, and a weight vector dies once the positions that share it are
    /// done. (Nine taps straight-line would load all eighteen operands of a chain before its
    /// first multiply-add, and spill.)
    #[allow(clippy::too_many_arguments)]
    fn channels(
        &self,
        kb: &mut Kb,
        rows: &RowTaps,
        rx: &Run,
        b: &Bases,
        npos: usize,
        ty: Type,
        offs: &[i64],
    ) {
        let s = self.s;
        let c4 = (s.c * 4) as i64;
        let (wd, kw) = (s.cols.input as i64, s.cols.kernel as i64);
        let dy = s.rows.dilation as i64;
        let kind = match &s.op {
            WinOp::Conv { .. } => None,
            WinOp::Pool(k, _) => Some(*k),
        };
        let f = Fold {
            kind,
            ty,
            offs,
            npos,
            pos_step: s.cols.stride as i64 * c4,
            tap_step: s.cols.dilation as i64 * c4,
            c4,
            unroll_max: if kb.cfg.aarch64 { 13 } else { 7 },
        };
        // A convolution starts from the bias (or 0), loaded once for every position; a pool's
        // accumulators start at its first tap. Indexed [vector][position].
        let mut cur: Vec<Vec<Option<Value>>> = offs
            .iter()
            .map(|&o| {
                let st = kind.is_none().then(|| f.init(kb, b.bias, o));
                vec![st; npos]
            })
            .collect();
        // A max pool's first kernel row is peeled: its first tap starts the maximum (x86's
        // NaN-propagating max is three instructions; a pool's window always has a row). Everything
        // else starts from its initial value and loops over every kernel row.
        let mut from = rows.k0;
        let mut fixed = rows.fixed;
        if kind == Some(PoolKind::Max) {
            let xr = match fixed {
                Some((k0, _)) => kb.offset(b.x, k0 as i64 * dy * wd * c4),
                None => kb.index(b.x, rows.k0, dy * wd * c4),
            };
            f.row(kb, rx, xr, None, None, &mut cur);
            from = kb.b.ins().iadd_imm_s(rows.k0, 1);
            fixed = fixed.map(|(k0, k1)| (k0 + 1, k1));
        }
        let vars: Vec<Vec<Variable>> = cur
            .iter()
            .zip(offs)
            .map(|(cv, &o)| {
                cv.iter()
                    .map(|a| {
                        let i = match a {
                            Some(a) => *a,
                            None => f.init(kb, b.bias, o),
                        };
                        kb.var(ty, i)
                    })
                    .collect()
            })
            .collect();
        let body = |kb: &mut Kb, ky: Value| {
            // The accumulators first: they become the loop head's first parameters.
            let mut c: Vec<Vec<Option<Value>>> = vars
                .iter()
                .map(|vv| vv.iter().map(|&v| Some(kb.get(v))).collect())
                .collect();
            let xr = kb.index(b.x, ky, dy * wd * c4);
            let wr = b.w.map(|w| kb.index(w, ky, kw * c4));
            f.row(kb, rx, xr, wr, b.bias, &mut c);
            for (vv, cv) in vars.iter().zip(&c) {
                for (&v, a) in vv.iter().zip(cv) {
                    if let Some(a) = a {
                        kb.set(v, *a);
                    }
                }
            }
        };
        match fixed {
            Some((k0, k1)) => kb.for_range(k0 as i64, k1 as i64, 1, body),
            None => kb.for_dyn(from, rows.k1, body),
        }
        let cur: Vec<Vec<Option<Value>>> = vars
            .iter()
            .map(|vv| vv.iter().map(|&v| Some(kb.get(v))).collect())
            .collect();
        let scale = rows.count.map(|k| if ty == F32 { k } else { kb.splat(k) });
        let post: &[UnaryOp] = match &s.op {
            WinOp::Conv { post, .. } => post,
            WinOp::Pool(..) => &[],
        };
        for (cv, &o) in cur.iter().zip(offs) {
            for (j, a) in cv.iter().enumerate() {
                let mut r = match a {
                    Some(a) => *a,
                    None => f.init(kb, b.bias, o),
                };
                if let Some(k) = scale {
                    r = kb.b.ins().fmul(r, k);
                }
                for &op in post {
                    r = activation_any(kb, op, r);
                }
                kb.store(r, b.y, (j as i64 * c4 + o) as i32);
            }
        }
    }
}

/// How one channel step folds its taps.
struct Fold<'a> {
    /// `None` for a convolution.
    kind: Option<PoolKind>,
    /// F32X4 or F32.
    ty: Type,
    /// Byte offsets of the step's vectors.
    offs: &'a [i64],
    /// Positions.
    npos: usize,
    /// Bytes between the inputs of adjacent positions.
    pos_step: i64,
    /// Bytes between the inputs of adjacent taps of a kernel row.
    tap_step: i64,
    /// Bytes per position (all channels).
    c4: i64,
    /// Kernel-row taps unrolled at most (each keeps its weight vector and loads live across
    /// the group's positions); wider rows loop over their taps.
    unroll_max: usize,
}

impl Fold<'_> {
    /// The value an accumulator starts from when no tap started it.
    fn init(&self, kb: &mut Kb, bias: Option<Ptr>, off: i64) -> Value {
        match (self.kind, bias) {
            (None, Some(bp)) => kb.load(self.ty, bp, off as i32),
            (Some(PoolKind::Max), _) => kb.fconst_ty(self.ty, f32::NEG_INFINITY),
            _ => kb.fconst_ty(self.ty, 0.0),
        }
    }

    fn combine(&self, kb: &mut Kb, acc: Option<Value>, xv: Value, wv: Option<Value>) -> Value {
        let Some(acc) = acc else { return xv };
        match (self.kind, wv) {
            // The loaded operand first: x86's FMA overwrites its first multiplicand, the dead
            // load rather than a weight the other positions still need.
            (None, Some(wv)) => kb.mul_add(xv, wv, acc),
            (Some(PoolKind::Max), _) => vmax(kb, acc, xv),
            _ => kb.b.ins().fadd(acc, xv),
        }
    }

    /// Folds the taps `rx.k0..rx.k1` of one kernel row into `cur`: `xr` is the row's input at
    /// tap 0 of the first position, `wr` its weights at tap 0.
    fn row(
        &self,
        kb: &mut Kb,
        rx: &Run,
        xr: Ptr,
        wr: Option<Ptr>,
        bias: Option<Ptr>,
        cur: &mut [Vec<Option<Value>>],
    ) {
        let taps = rx.k1 - rx.k0;
        if taps <= self.unroll_max {
            for kx in rx.k0..rx.k1 {
                let kx = kx as i64;
                self.tap(kb, xr, kx * self.tap_step, wr, kx * self.c4, cur);
            }
            return;
        }
        let vars: Vec<Vec<Variable>> = cur
            .iter()
            .zip(self.offs)
            .map(|(cv, &o)| {
                cv.iter()
                    .map(|a| {
                        let i = match a {
                            Some(a) => *a,
                            None => self.init(kb, bias, o),
                        };
                        kb.var(self.ty, i)
                    })
                    .collect()
            })
            .collect();
        kb.for_range(rx.k0 as i64, rx.k1 as i64, 1, |kb, kx| {
            let mut c: Vec<Vec<Option<Value>>> = vars
                .iter()
                .map(|vv| vv.iter().map(|&v| Some(kb.get(v))).collect())
                .collect();
            let xt = kb.index(xr, kx, self.tap_step);
            let wt = wr.map(|w| kb.index(w, kx, self.c4));
            self.tap(kb, xt, 0, wt, 0, &mut c);
            for (vv, cv) in vars.iter().zip(&c) {
                for (&v, a) in vv.iter().zip(cv) {
                    if let Some(a) = a {
                        kb.set(v, *a);
                    }
                }
            }
        });
        for (cv, vv) in cur.iter_mut().zip(&vars) {
            for (a, &v) in cv.iter_mut().zip(vv) {
                *a = Some(kb.get(v));
            }
        }
    }

    /// One tap: `x` at `xp + xo` (first position), weights at `wp + wo`.
    ///
    /// At stride 1, position `j`'s tap `kx + 1` is position `j + 1`'s tap `kx`: the same
    /// (read-only) load, which Cranelift shares. That keeps more values live (a shared load
    /// cannot fold into its multiply-adds) but saves loads, and measures faster on x86 even for
    /// five-wide rows, where it spills a little.
    fn tap(
        &self,
        kb: &mut Kb,
        xp: Ptr,
        xo: i64,
        wp: Option<Ptr>,
        wo: i64,
        cur: &mut [Vec<Option<Value>>],
    ) {
        for (cv, &o) in cur.iter_mut().zip(self.offs) {
            let wv = wp.map(|w| kb.load(self.ty, w, (wo + o) as i32));
            for (j, a) in cv.iter_mut().enumerate().take(self.npos) {
                let xv = kb.load(self.ty, xp, (xo + j as i64 * self.pos_step + o) as i32);
                *a = Some(self.combine(kb, *a, xv, wv));
            }
        }
    }
}

/// A fused activation on an f32x4 ([`activation`]) or an f32.
fn activation_any(kb: &mut Kb, op: UnaryOp, x: Value) -> Value {
    if kb.b.func.dfg.value_type(x).is_vector() {
        activation(kb, op, x)
    } else {
        super::elementwise::unary_float(kb, op, x)
    }
}

/// Vectors of channels per work unit of [`global_pool_kernel`].
const GLOBAL_VECS: usize = 8;

/// Static description of a channels-last global pool: `N x P x C -> N x C`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GlobalSpec {
    /// Max or average.
    pub kind: PoolKind,
    /// Batch.
    pub n: usize,
    /// Positions per image.
    pub p: usize,
    /// Channels.
    pub c: usize,
}

impl GlobalSpec {
    /// Channel steps per image (the last one takes the leftover vectors and channels).
    fn steps(&self) -> usize {
        (self.c / 4 / GLOBAL_VECS).max(1)
    }

    /// Whether the step should be split into parallel parts.
    pub(crate) fn splits(&self) -> bool {
        self.n * self.steps() > 1 && self.n * self.p * self.c >= SPLIT_WORK
    }
}

/// Channels-last global max/average pool: per image, the max or mean over positions of each
/// channel, `GLOBAL_VECS` vectors of channels at a time held in registers over the positions.
/// Work units are (image, channel step). Operands: x, y.
pub(crate) fn global_pool_kernel(kb: &mut Kb, s: &GlobalSpec) {
    let x = Ptr {
        ro: true,
        ..kb.args[0]
    };
    let y = kb.args[1];
    if s.n == 0 || s.c == 0 {
        return;
    }
    if s.p == 0 {
        // No positions: the max of nothing is -inf, the mean 0 / 0, as the reference has them.
        let v = match s.kind {
            PoolKind::Max => f32::NEG_INFINITY,
            PoolKind::Avg => f32::NAN,
        };
        // (Never split: there is no work to share.)
        let z = kb.fconst(v);
        kb.for_n(s.n * s.c, |kb, i| {
            let p = kb.index(y, i, 4);
            kb.store(z, p, 0);
        });
        return;
    }
    let steps = s.steps();
    let nvec = s.c / 4;
    let c4 = (s.c * 4) as i64;
    let (lo, hi) = kb.share(s.n * steps);
    kb.for_dyn(lo, hi, |kb, u| {
        let (n, st) = if steps == 1 {
            (u, kb.iconst(0))
        } else {
            (
                kb.b.ins().udiv_imm_u(u, steps as i64),
                kb.b.ins().urem_imm_u(u, steps as i64),
            )
        };
        let xn = kb.index(x, n, s.p as i64 * c4);
        let yn = kb.index(y, n, c4);
        let full = (GLOBAL_VECS * 16) as i64;
        // Vectors of the step: GLOBAL_VECS, or for the last step everything left.
        let last_vecs = nvec - (steps - 1) * GLOBAL_VECS.min(nvec);
        let offs = |count: usize| -> Vec<i64> { (0..count).map(|v| 16 * v as i64).collect() };
        let xs = kb.index(xn, st, full);
        let ys = kb.index(yn, st, full);
        let tail_offs: Vec<i64> = if s.c.is_multiple_of(4) {
            vec![]
        } else if s.c >= 4 {
            vec![(s.c as i64 - 4) * 4]
        } else {
            (0..s.c).map(|ch| 4 * ch as i64).collect()
        };
        let tail_ty = if s.c >= 4 { F32X4 } else { F32 };
        let last = |kb: &mut Kb| {
            // The last step's pointers are constant offsets from the image.
            let base = ((steps - 1) * GLOBAL_VECS * 16) as i64;
            let xl = kb.offset(xn, base);
            let yl = kb.offset(yn, base);
            global_channels(kb, s, xl, yl, F32X4, &offs(last_vecs));
            if !tail_offs.is_empty() {
                global_channels(kb, s, xn, yn, tail_ty, &tail_offs);
            }
        };
        if steps == 1 {
            last(kb);
        } else {
            let is_last = kb.b.ins().icmp_imm_s(
                cranelift_codegen::ir::condcodes::IntCC::Equal,
                st,
                steps as i64 - 1,
            );
            kb.if_else(is_last, last, |kb| {
                global_channels(kb, s, xs, ys, F32X4, &offs(GLOBAL_VECS))
            });
        }
    });
}

/// The pooled channels at byte offsets `offs` (vectors or scalars of type `ty`) of one image:
/// `x` at its first position, `y` its output.
fn global_channels(kb: &mut Kb, s: &GlobalSpec, x: Ptr, y: Ptr, ty: Type, offs: &[i64]) {
    if offs.is_empty() {
        return;
    }
    let c4 = (s.c * 4) as i64;
    let vars: Vec<Variable> = offs
        .iter()
        .map(|&o| {
            let v = kb.load(ty, x, o as i32);
            kb.var(ty, v)
        })
        .collect();
    if s.p > 1 {
        kb.for_range(1, s.p as i64, 1, |kb, p| {
            let xp = kb.index(x, p, c4);
            for (&v, &o) in vars.iter().zip(offs) {
                let xv = kb.load(ty, xp, o as i32);
                let a = kb.get(v);
                let nx = match s.kind {
                    PoolKind::Max => vmax(kb, a, xv),
                    PoolKind::Avg => kb.b.ins().fadd(a, xv),
                };
                kb.set(v, nx);
            }
        });
    }
    for (&v, &o) in vars.iter().zip(offs) {
        let mut r = kb.get(v);
        if s.kind == PoolKind::Avg {
            let inv = kb.fconst_ty(ty, 1.0 / s.p as f32);
            r = kb.b.ins().fmul(r, inv);
        }
        kb.store(r, y, o as i32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(input: usize, output: usize, k: usize, s: usize, d: usize, p: (usize, usize)) -> Axis {
        Axis {
            input,
            output,
            kernel: k,
            stride: s,
            dilation: d,
            pad_begin: p.0,
            pad_end: p.1,
        }
    }

    fn spans(r: &[Run]) -> Vec<(usize, usize, usize, usize, usize)> {
        r.iter()
            .map(|r| (r.o0, r.o1, r.k0, r.k1, r.count))
            .collect()
    }

    #[test]
    fn runs_of_a_padded_3x3() {
        // 7 wide, k 3, pad 1, stride 1: output 0 misses tap 0, output 6 tap 2.
        let a = axis(7, 7, 3, 1, 1, (1, 1));
        assert_eq!(
            spans(&a.runs(false)),
            vec![(0, 1, 1, 3, 2), (1, 6, 0, 3, 3), (6, 7, 0, 2, 2)]
        );
        // Counting the padding: every window is whole.
        assert_eq!(
            spans(&a.runs(true)),
            vec![(0, 1, 1, 3, 3), (1, 6, 0, 3, 3), (6, 7, 0, 2, 3)]
        );
    }

    #[test]
    fn runs_of_a_ceil_mode_overhang() {
        // 6 wide, k 3, stride 2, no pads, ceil mode: 3 outputs, the last window starts at 4 and
        // covers 4, 5 and 6 (past the input and past the (empty) end padding).
        let a = axis(6, 3, 3, 2, 1, (0, 0));
        assert_eq!(
            spans(&a.runs(false)),
            vec![(0, 2, 0, 3, 3), (2, 3, 0, 2, 2)]
        );
        assert_eq!(spans(&a.runs(true)), vec![(0, 2, 0, 3, 3), (2, 3, 0, 2, 2)]);
        // With one end pad, the tap at 6 is in the padding and counts with include_pad.
        let a = axis(6, 3, 3, 2, 1, (0, 1));
        assert_eq!(spans(&a.runs(true)), vec![(0, 2, 0, 3, 3), (2, 3, 0, 2, 3)]);
    }

    #[test]
    fn runs_with_dilation() {
        // 9 wide, k 3, dilation 2, pad 2: taps at o - 2, o, o + 2.
        let a = axis(9, 9, 3, 1, 2, (2, 2));
        assert_eq!(
            spans(&a.runs(false)),
            vec![(0, 2, 1, 3, 2), (2, 7, 0, 3, 3), (7, 9, 0, 2, 2)]
        );
    }

    #[test]
    fn depthwise_table() {
        // Two channels, 1x2 kernel: [[a0, a1], [b0, b1]] -> [[a0, b0], [a1, b1]].
        assert_eq!(
            pack_depthwise(&[1.0, 2.0, 3.0, 4.0], 2, 1, 2),
            vec![1.0, 3.0, 2.0, 4.0]
        );
    }
}
