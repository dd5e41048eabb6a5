//! Depthwise convolution (one input and one output channel per group), computed directly, and the
//! sliding-window engine it shares with pooling.
//!
//! The engine ([`Win::plane`]) computes one plane of a 1-D or 2-D window op (weighted sum, max or
//! average) four output columns at a time, each f32x4 accumulated in registers over every tap
//! (one chain per kernel row, summed at the end, so that the latency of a nine-deep chain of
//! multiply-adds does not bound the loop) and stored once, after the activations. Everything
//! about the geometry is decided at compile time:
//! - Output rows are grouped into runs whose windows cover the same kernel rows (the top and
//!   bottom border rows skip the rows that fall in the padding); each run is a loop over one
//!   copy of the row code, so no tap is ever tested at run time.
//! - Along a row, the vectors whose taps all read inside the row run in a loop, two vectors per
//!   iteration; the few at the edges (and the last, overlapping one when the width is not a
//!   multiple of four) are emitted at their constant positions. An edge tap loads the nearest
//!   vector inside the row and slides it against the padding value (0, or -inf for max) with one
//!   lane shuffle (`palignr` / `ext`), so edges need no scalar code either.
//! - Stride 2 reads two vectors and keeps their even (or odd) lanes (`shufps` / `uzp1`, `uzp2`):
//!   the four inputs of tap `t` for outputs `o..o+4` are `x[2o + t + 2j]`. Taps whose first
//!   columns differ by one share the pair of loads, so a 3x3 row costs four loads and three
//!   shuffles per four outputs.
//!
//! Loads never leave the row they belong to, so nothing outside the tensor is read. The generic
//! shuffles need SSSE3 on x86 (they become libcalls without it), which every CPU with SSE4.1 has:
//! the engine runs when the target rounds natively (`CodegenCfg::round`). The older direct
//! kernels ([`depthwise_generic`], the scalar pool) serve the rest: other column strides, 3-D
//! windows, very large kernels.

use super::conv::{index_nest, ConvSpec};
use super::elementwise::unary_float;
use crate::builder::{CodegenCfg, Kb, Ptr};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I8X16};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Value};
use kiln_ir::ops::UnaryOp;
use std::collections::HashMap;

/// Whether [`depthwise_kernel`] honours `Kb::share` for this convolution: always, the planes
/// (image x channel) are independent.
pub(crate) fn splits(_s: &ConvSpec) -> bool {
    true
}

/// Taps above this count are left to the generic kernels (the engine unrolls every tap).
const MAX_TAPS: usize = 64;
/// Vectors emitted at constant positions per row, at most (more means a window far wider than
/// its padding is used to: the generic kernel is then smaller).
const MAX_STATIC: usize = 12;
/// Output vectors per iteration of the row loop.
const BLOCK: usize = 2;

/// The geometry of a 1-D or 2-D sliding window over one plane (a 1-D window is a 2-D one with a
/// single row).
#[derive(Clone, Debug)]
pub(crate) struct Win {
    /// Input rows and columns.
    pub h: usize,
    /// Input columns.
    pub w: usize,
    /// Output rows.
    pub oh: usize,
    /// Output columns.
    pub ow: usize,
    /// Kernel rows.
    pub kh: usize,
    /// Kernel columns.
    pub kw: usize,
    /// Row stride.
    pub sy: usize,
    /// Column stride (1 or 2 for this module's engine, see [`Win::new`]).
    pub sx: usize,
    /// Row dilation.
    pub dy: usize,
    /// Column dilation.
    pub dx: usize,
    /// Top padding.
    pub pt: usize,
    /// Left padding.
    pub pl: usize,
}

/// How the taps of a window combine.
#[derive(Clone, Copy)]
pub(crate) enum Fold<'a> {
    /// `init + sum(w[tap] * x)` then the activations: `w` holds one splatted weight per tap,
    /// row-major, `init` the splatted bias.
    Conv {
        /// Splatted weights, `kh * kw` of them.
        w: &'a [Value],
        /// Splatted initial value.
        init: Value,
        /// Activations applied before the store.
        post: &'a [UnaryOp],
    },
    /// Maximum; padding is -inf and NaN propagates.
    Max,
    /// Mean over the taps inside the input (or inside the padded input with `include_pad`;
    /// `pb`, `pr` are the bottom and right pads that then count).
    Avg {
        /// ONNX `count_include_pad`.
        include_pad: bool,
        /// Bottom padding.
        pb: usize,
        /// Right padding.
        pr: usize,
    },
}

/// A run of output rows whose windows cover the same kernel rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rows {
    /// First and one-past-last output row.
    oy0: usize,
    oy1: usize,
    /// Kernel rows inside the input.
    ky0: usize,
    ky1: usize,
    /// Kernel rows an average divides by.
    count: usize,
}

/// How tap `kx` reads four adjacent outputs in the row loop.
#[derive(Clone, Copy, Debug)]
struct Tap {
    /// Column of the first output's input, relative to `sx * o`.
    t: i64,
    /// Stride 2: the first column of the pair of vectors it takes lanes from, relative to
    /// `2 * o`, and whether it takes the odd lanes.
    base: i64,
    odd: bool,
}

/// Where along a row the vectors go.
#[derive(Clone, Debug)]
struct Cols {
    taps: Vec<Tap>,
    /// Vectors at constant positions before the loop.
    left: Vec<i64>,
    /// The loop: `n` vectors from `start`, every tap inside the row.
    start: i64,
    n: usize,
    /// Vectors at constant positions after the loop (the last one may overlap).
    right: Vec<i64>,
}

/// What a lane of a vector at a constant position reads for one tap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// Phase index (column `sx * i + r`) inside the row.
    In(i64),
    /// Outside the row: the padding value.
    Pad,
    /// Past the last output: never stored.
    Dead,
}

/// One vector position: a constant column, or a run-time base plus a constant.
#[derive(Clone, Copy)]
struct At {
    dynbase: Option<Value>,
    off: i64,
}

impl Win {
    /// The window over spatial dims `input` (one or two of them), if the engine handles it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: &CodegenCfg,
        input: &[usize],
        output: &[usize],
        kernel: &[usize],
        strides: &[usize],
        dilations: &[usize],
        pads_begin: &[usize],
    ) -> Option<Win> {
        let win = match input.len() {
            1 => Win {
                h: 1,
                w: input[0],
                oh: 1,
                ow: output[0],
                kh: 1,
                kw: kernel[0],
                sy: 1,
                sx: strides[0],
                dy: 1,
                dx: dilations[0],
                pt: 0,
                pl: pads_begin[0],
            },
            2 => Win {
                h: input[0],
                w: input[1],
                oh: output[0],
                ow: output[1],
                kh: kernel[0],
                kw: kernel[1],
                sy: strides[0],
                sx: strides[1],
                dy: dilations[0],
                dx: dilations[1],
                pt: pads_begin[0],
                pl: pads_begin[1],
            },
            _ => return None,
        };
        let ok = cfg.round
            && matches!(win.sx, 1 | 2)
            && win.sy > 0
            && win.dy > 0
            && win.dx > 0
            && win.kh * win.kw > 0
            && win.kh * win.kw <= MAX_TAPS
            && win.h > 0
            && win.w > 0
            && win.oh > 0
            && win.ow > 0
            && win
                .cols()
                .is_some_and(|c| c.left.len() + c.right.len() <= MAX_STATIC);
        ok.then_some(win)
    }

    /// Input row of output row `oy` and kernel row `ky` (may be outside `0..h`).
    fn in_row(&self, oy: usize, ky: usize) -> i64 {
        (oy * self.sy + ky * self.dy) as i64 - self.pt as i64
    }

    /// The runs of output rows with the same kernel rows inside the input.
    fn rows(&self, include_pad: bool, pb: usize) -> Vec<Rows> {
        let mut out: Vec<Rows> = Vec::new();
        for oy in 0..self.oh {
            let inside: Vec<usize> = (0..self.kh)
                .filter(|&ky| (0..self.h as i64).contains(&self.in_row(oy, ky)))
                .collect();
            let (ky0, ky1) = match (inside.first(), inside.last()) {
                (Some(&a), Some(&b)) => (a, b + 1),
                _ => (0, 0),
            };
            let count = if include_pad {
                let hi = (self.h + pb) as i64;
                (0..self.kh).filter(|&ky| self.in_row(oy, ky) < hi).count()
            } else {
                ky1 - ky0
            };
            match out.last_mut() {
                Some(r) if (r.ky0, r.ky1, r.count) == (ky0, ky1, count) => r.oy1 = oy + 1,
                _ => out.push(Rows {
                    oy0: oy,
                    oy1: oy + 1,
                    ky0,
                    ky1,
                    count,
                }),
            }
        }
        out
    }

    /// Number of phase-`r` columns of the row (`sx * i + r < w`).
    fn phase_len(&self, r: i64) -> i64 {
        (self.w as i64 - r + self.sx as i64 - 1) / self.sx as i64
    }

    /// The taps and the column layout of every row.
    fn cols(&self) -> Option<Cols> {
        let (w, ow, sx) = (self.w as i64, self.ow as i64, self.sx as i64);
        let firsts: Vec<i64> = (0..self.kw)
            .map(|k| (k * self.dx) as i64 - self.pl as i64)
            .collect();
        // Stride 2: a pair of loads at column b gives the taps starting at b (even lanes) and
        // b + 1 (odd lanes); cover the taps with as few pairs as possible.
        let mut bases: Vec<i64> = Vec::new();
        let mut sorted = firsts.clone();
        sorted.sort_unstable();
        sorted.dedup();
        for &t in &sorted {
            if sx == 2 && !bases.contains(&(t - 1)) {
                bases.push(t);
            }
        }
        let taps: Vec<Tap> = firsts
            .iter()
            .map(|&t| {
                let odd = sx == 2 && bases.contains(&(t - 1));
                Tap {
                    t,
                    base: if odd { t - 1 } else { t },
                    odd,
                }
            })
            .collect();
        // Vectors whose loads all stay inside the row.
        let reach = if sx == 1 { 3 } else { 7 };
        let safe = |o: i64| {
            o + 4 <= ow
                && taps.iter().all(|tp| {
                    let lo = sx * o + if sx == 1 { tp.t } else { tp.base };
                    lo >= 0 && lo + reach < w
                })
        };
        if ow < 4 {
            return Some(Cols {
                taps,
                left: vec![0],
                start: 0,
                n: 0,
                right: vec![],
            });
        }
        let safe_starts: Vec<i64> = (0..=ow - 4).filter(|&o| safe(o)).collect();
        let (mut left, mut start, mut n) = (Vec::new(), 0, 0);
        if let (Some(&a), Some(&b)) = (safe_starts.first(), safe_starts.last()) {
            let c0 = (a + 3) / 4 * 4;
            if c0 <= b {
                left = (0..c0).step_by(4).collect();
                start = c0;
                n = ((b - c0) / 4 + 1) as usize;
            }
        }
        let mut right = Vec::new();
        let mut p = start + 4 * n as i64;
        while p + 4 <= ow {
            right.push(p);
            p += 4;
        }
        if p < ow {
            right.push(ow - 4);
        }
        Some(Cols {
            taps,
            left,
            start,
            n,
            right,
        })
    }

    /// Emits one plane: `x` points at its `h x w` input, `y` at its `oh x ow` output.
    ///
    /// The caller guarantees that nothing writes the input while the kernel runs (it is not the
    /// output's storage, and parallel parts of the kernel write only output): its loads are then
    /// marked read-only, which lets Cranelift place each load next to its multiply-add and fold
    /// it into the instruction instead of issuing every load of the vector first.
    pub(crate) fn plane(&self, kb: &mut Kb, fold: Fold, x: Ptr, y: Ptr) {
        let x = Ptr { v: x.v, ro: true };
        let Some(cols) = self.cols() else {
            unreachable!("Win::new checked the column plan");
        };
        let (include_pad, pb) = match fold {
            Fold::Avg {
                include_pad, pb, ..
            } => (include_pad, pb),
            _ => (false, 0),
        };
        let fill = match fold {
            Fold::Max => kb.fsplat(f32::NEG_INFINITY),
            _ => kb.fsplat(0.0),
        };
        let pc = PlaneCode {
            win: self,
            cols: &cols,
            fold,
            fill,
        };
        for rows in self.rows(include_pad, pb) {
            let body = |kb: &mut Kb, oy: Value| {
                let xrow = kb.index(x, oy, (self.sy * self.w * 4) as i64);
                let yrow = kb.index(y, oy, (self.ow * 4) as i64);
                pc.row(kb, &rows, xrow, yrow);
            };
            kb.for_range(rows.oy0 as i64, rows.oy1 as i64, 1, body);
        }
    }
}

/// What the code of one plane is built from.
struct PlaneCode<'a> {
    win: &'a Win,
    cols: &'a Cols,
    fold: Fold<'a>,
    /// The padding value, splatted.
    fill: Value,
}

impl PlaneCode<'_> {
    /// One output row: `xrow` is input row `oy * sy` (the kernel rows are constant offsets from
    /// it), `yrow` the output row.
    fn row(&self, kb: &mut Kb, rows: &Rows, xrow: Ptr, yrow: Ptr) {
        let c = self.cols;
        for chunk in c.left.chunks(BLOCK) {
            let at: Vec<At> = chunk
                .iter()
                .map(|&o| At {
                    dynbase: None,
                    off: o,
                })
                .collect();
            self.group(kb, rows, xrow, yrow, &at);
        }
        let blocks = c.n / BLOCK;
        if blocks > 0 {
            let end = c.start + (blocks * BLOCK * 4) as i64;
            kb.for_range(c.start, end, (BLOCK * 4) as i64, |kb, o| {
                let at: Vec<At> = (0..BLOCK)
                    .map(|v| At {
                        dynbase: Some(o),
                        off: 4 * v as i64,
                    })
                    .collect();
                self.group(kb, rows, xrow, yrow, &at);
            });
        }
        // The loop's remainder and the right edge, at constant positions.
        let mut tail: Vec<i64> = (blocks * BLOCK..c.n)
            .map(|v| c.start + 4 * v as i64)
            .collect();
        tail.extend(&c.right);
        for chunk in tail.chunks(BLOCK) {
            let at: Vec<At> = chunk
                .iter()
                .map(|&o| At {
                    dynbase: None,
                    off: o,
                })
                .collect();
            self.group(kb, rows, xrow, yrow, &at);
        }
    }

    /// Computes and stores the vectors at `at` (all run-time or all constant positions).
    fn group(&self, kb: &mut Kb, rows: &Rows, xrow: Ptr, yrow: Ptr, at: &[At]) {
        let win = self.win;
        let sx = win.sx as i64;
        let dynbase = at[0].dynbase;
        let (xp, yp) = match dynbase {
            Some(o) => (kb.index(xrow, o, sx * 4), kb.index(yrow, o, 4)),
            None => (xrow, yrow),
        };
        // One chain per kernel row and vector, summed at the end: nine multiply-adds in one chain
        // would take 36 cycles of latency per vector (x86), which no amount of reordering hides.
        let mut parts: Vec<Vec<Value>> = vec![Vec::new(); at.len()];
        // Loads by byte offset from `xp`, shared by the taps and vectors of the group.
        let mut loads: HashMap<i64, Value> = HashMap::new();
        for ky in rows.ky0..rows.ky1 {
            let ro = (ky * win.dy) as i64 - win.pt as i64;
            let ro = ro * win.w as i64 * 4;
            let mut cur: Vec<Option<Value>> = vec![None; at.len()];
            for (kx, tap) in self.cols.taps.iter().enumerate() {
                for (v, a) in at.iter().enumerate() {
                    let xv = if a.dynbase.is_some() {
                        Some(self.tap_fast(kb, xp, ro, a.off, tap, &mut loads))
                    } else {
                        self.tap_static(kb, xp, ro, a.off, tap, &mut loads)
                    };
                    let Some(xv) = xv else { continue };
                    cur[v] = Some(match (self.fold, cur[v]) {
                        // The loaded operand first: x86's `vfmadd213` overwrites its first
                        // multiplicand, which is then the dead load rather than a weight that
                        // would need a copy.
                        (Fold::Conv { w, init, .. }, None) => {
                            let wk = w[ky * win.kw + kx];
                            if parts[v].is_empty() {
                                kb.mul_add(xv, wk, init)
                            } else {
                                kb.b.ins().fmul(xv, wk)
                            }
                        }
                        (Fold::Conv { w, .. }, Some(c)) => kb.mul_add(xv, w[ky * win.kw + kx], c),
                        (_, None) => xv,
                        (Fold::Max, Some(c)) => vmax(kb, c, xv),
                        (Fold::Avg { .. }, Some(c)) => kb.b.ins().fadd(c, xv),
                    });
                }
            }
            for (p, c) in parts.iter_mut().zip(cur) {
                p.extend(c);
            }
        }
        let acc: Vec<Value> = parts
            .into_iter()
            .map(|p| match self.fold {
                Fold::Conv { init, .. } => tree(kb, p, init, |kb, a, b| kb.b.ins().fadd(a, b)),
                Fold::Max => tree(kb, p, self.fill, vmax),
                Fold::Avg { .. } => tree(kb, p, self.fill, |kb, a, b| kb.b.ins().fadd(a, b)),
            })
            .collect();
        for (v, a) in at.iter().enumerate() {
            let mut r = acc[v];
            match self.fold {
                Fold::Conv { post, .. } => {
                    for &op in post {
                        r = activation(kb, op, r);
                    }
                }
                Fold::Max => {}
                Fold::Avg {
                    include_pad, pr, ..
                } => {
                    let k = self.reciprocals(rows, a, include_pad, pr);
                    let kv = if k.iter().all(|&e| e == k[0]) {
                        kb.fsplat(k[0])
                    } else {
                        vconst(kb, k)
                    };
                    r = kb.b.ins().fmul(r, kv);
                }
            }
            let lanes = (win.ow as i64 - a.off).min(4);
            if a.dynbase.is_some() || lanes == 4 {
                kb.store(r, yp, (a.off * 4) as i32);
            } else {
                for j in 0..lanes {
                    let e = kb.b.ins().extractlane(r, j as u8);
                    kb.store(e, yp, ((a.off + j) * 4) as i32);
                }
            }
        }
    }

    /// `1 / count` per lane of an average at `a`: the taps inside the input, or inside the
    /// padded input with `include_pad`.
    fn reciprocals(&self, rows: &Rows, a: &At, include_pad: bool, pr: usize) -> [f32; 4] {
        let win = self.win;
        let (w, sx) = (win.w as i64, win.sx as i64);
        let hi = if include_pad { w + pr as i64 } else { w };
        let lo = if include_pad { -(win.pl as i64) } else { 0 };
        let mut k = [1.0f32; 4];
        for (j, kj) in k.iter_mut().enumerate() {
            let cx = if a.dynbase.is_some() {
                win.kw
            } else {
                let o = a.off + j as i64;
                if o >= win.ow as i64 {
                    continue;
                }
                self.cols
                    .taps
                    .iter()
                    .filter(|tp| (lo..hi).contains(&(sx * o + tp.t)))
                    .count()
            };
            *kj = 1.0 / (rows.count * cx) as f32;
        }
        k
    }

    /// Tap `tap` of the four outputs at `off` past the run-time base of `xp` (every lane inside
    /// the row): one load for stride 1, two loads and a lane shuffle for stride 2.
    fn tap_fast(
        &self,
        kb: &mut Kb,
        xp: Ptr,
        ro: i64,
        off: i64,
        tap: &Tap,
        loads: &mut HashMap<i64, Value>,
    ) -> Value {
        if self.win.sx == 1 {
            return load_at(kb, xp, ro + (off + tap.t) * 4, loads);
        }
        let b = ro + (2 * off + tap.base) * 4;
        let lo = load_at(kb, xp, b, loads);
        let hi = load_at(kb, xp, b + 16, loads);
        let l = if tap.odd { [1, 3, 5, 7] } else { [0, 2, 4, 6] };
        shuffle(kb, lo, hi, l)
    }

    /// Tap `tap` of the four outputs at the constant column `o0`, with the padding value in the
    /// lanes that read outside the row, or `None` when every lane does.
    fn tap_static(
        &self,
        kb: &mut Kb,
        xp: Ptr,
        ro: i64,
        o0: i64,
        tap: &Tap,
        loads: &mut HashMap<i64, Value>,
    ) -> Option<Value> {
        let win = self.win;
        let (sx, w) = (win.sx as i64, win.w as i64);
        // Column sx*o + t = sx*(o + q) + r: phase r, phase index o + q.
        let r = tap.t.rem_euclid(sx);
        let q = (tap.t - r) / sx;
        let n = win.phase_len(r);
        let lanes: Vec<Lane> = (0..4)
            .map(|j| {
                let o = o0 + j;
                let i = o + q;
                if o >= win.ow as i64 {
                    Lane::Dead
                } else if (0..n).contains(&i) {
                    Lane::In(i)
                } else {
                    Lane::Pad
                }
            })
            .collect();
        if !lanes.iter().any(|l| matches!(l, Lane::In(_))) {
            return None;
        }
        if n < 4 {
            // A row too short for a vector load: lane by lane.
            let mut v = self.fill;
            for (j, l) in lanes.iter().enumerate() {
                if let Lane::In(i) = l {
                    let e = kb.load(F32, xp, (ro + (sx * i + r) * 4) as i32);
                    v = kb.b.ins().insertlane(v, e, j as u8);
                }
            }
            return Some(v);
        }
        // The four phase elements from the nearest start inside the row, slid into place.
        let k = o0 + q;
        let start = k.clamp(0, n - 4);
        let p = if sx == 1 {
            load_at(kb, xp, ro + start * 4, loads)
        } else {
            let c = 2 * start + r;
            let fast = 2 * o0 + tap.base;
            let pair = |kb: &mut Kb, b: i64, loads: &mut HashMap<i64, Value>| {
                let lo = load_at(kb, xp, ro + b * 4, loads);
                let hi = load_at(kb, xp, ro + (b + 4) * 4, loads);
                (lo, hi)
            };
            if start == k && fast >= 0 && fast + 7 < w {
                let (lo, hi) = pair(kb, fast, loads);
                let l = if tap.odd { [1, 3, 5, 7] } else { [0, 2, 4, 6] };
                shuffle(kb, lo, hi, l)
            } else if c + 7 < w {
                let (lo, hi) = pair(kb, c, loads);
                shuffle(kb, lo, hi, [0, 2, 4, 6])
            } else if c >= 1 {
                let (lo, hi) = pair(kb, c - 1, loads);
                shuffle(kb, lo, hi, [1, 3, 5, 7])
            } else {
                // c == 0 and w == 7: x[0..4] and x[3..7].
                let lo = load_at(kb, xp, ro, loads);
                let hi = load_at(kb, xp, ro + (w - 4) * 4, loads);
                let m = |col: i64| {
                    if col < 4 {
                        col as u8
                    } else {
                        (4 + col - (w - 4)) as u8
                    }
                };
                shuffle(kb, lo, hi, [m(0), m(2), m(4), m(6)])
            }
        };
        let d = k - start;
        Some(match d {
            0 => p,
            d if d > 0 => {
                let l = |j: i64| (j + d) as u8;
                shuffle(kb, p, self.fill, [l(0), l(1), l(2), l(3)])
            }
            d => {
                let l = |j: i64| (j + d + 4) as u8;
                shuffle(kb, self.fill, p, [l(0), l(1), l(2), l(3)])
            }
        })
    }
}

/// Combines `v` pairwise (a balanced tree, for latency); `empty` when there is nothing.
fn tree(
    kb: &mut Kb,
    mut v: Vec<Value>,
    empty: Value,
    f: impl Fn(&mut Kb, Value, Value) -> Value,
) -> Value {
    if v.is_empty() {
        return empty;
    }
    while v.len() > 1 {
        let mut next = Vec::with_capacity(v.len().div_ceil(2));
        for pair in v.chunks(2) {
            next.push(match pair {
                [a, b] => f(kb, *a, *b),
                [a] => *a,
                _ => unreachable!("chunks of two"),
            });
        }
        v = next;
    }
    v[0]
}

/// An f32x4 load at byte offset `off` from `p`, shared through `loads`.
fn load_at(kb: &mut Kb, p: Ptr, off: i64, loads: &mut HashMap<i64, Value>) -> Value {
    *loads
        .entry(off)
        .or_insert_with(|| kb.load(F32X4, p, off as i32))
}

/// `shuffle` on 32-bit lanes: lane `l < 4` of `a`, or `l - 4` of `b`.
pub(crate) fn shuffle(kb: &mut Kb, a: Value, b: Value, lanes: [u8; 4]) -> Value {
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

/// An f32x4 constant.
fn vconst(kb: &mut Kb, v: [f32; 4]) -> Value {
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    let c = kb.b.func.dfg.constants.insert(ConstantData::from(bytes));
    kb.b.ins().vconst(F32X4, c)
}

/// `a < b ? b : a` for float vectors in the form x86 lowers to one `maxps b, a` (`maxpd`),
/// which returns `a` when either is NaN.
fn maxps(kb: &mut Kb, b: Value, a: Value) -> Value {
    let ty = kb.b.func.dfg.value_type(a);
    let c = kb.b.ins().fcmp(FloatCC::LessThan, a, b);
    let m = kb.b.ins().bitcast(ty, MemFlagsData::new(), c);
    kb.b.ins().bitselect(m, b, a)
}

/// `b < a ? b : a` for float vectors in the form x86 lowers to one `minps b, a` (`minpd`).
fn minps(kb: &mut Kb, b: Value, a: Value) -> Value {
    let ty = kb.b.func.dfg.value_type(a);
    let c = kb.b.ins().fcmp(FloatCC::LessThan, b, a);
    let m = kb.b.ins().bitcast(ty, MemFlagsData::new(), c);
    kb.b.ins().bitselect(m, b, a)
}

/// The maximum of two floats (scalars or vectors), NaN if either is. aarch64 has this as one
/// instruction; on x86 Cranelift's vector `fmax` also canonicalizes NaNs and orders zeros (eight
/// instructions), where the OR of both operand orders of `maxps` is enough: each order returns
/// its second operand when either is NaN, so the OR has a NaN's all-ones exponent and non-zero
/// fraction. Used for max pooling and max reductions, where it is the whole inner loop.
pub(crate) fn vmax(kb: &mut Kb, a: Value, b: Value) -> Value {
    if kb.cfg.aarch64 || !kb.b.func.dfg.value_type(a).is_vector() {
        return kb.fmax(a, b);
    }
    let m1 = maxps(kb, a, b);
    let m2 = maxps(kb, b, a);
    kb.b.ins().bor(m1, m2)
}

/// The minimum of two floats, NaN if either is (see [`vmax`]).
pub(crate) fn vmin(kb: &mut Kb, a: Value, b: Value) -> Value {
    if kb.cfg.aarch64 || !kb.b.func.dfg.value_type(a).is_vector() {
        return kb.fmin(a, b);
    }
    let m1 = minps(kb, a, b);
    let m2 = minps(kb, b, a);
    kb.b.ins().bor(m1, m2)
}

/// A fused activation on an f32x4: ReLU and Clip as one `maxps`/`minps` each on x86 (ordered so
/// that a NaN input comes out as NaN, as Cranelift's `fmax` would give), everything else as
/// the elementwise kernels compute it.
pub(crate) fn activation(kb: &mut Kb, op: UnaryOp, x: Value) -> Value {
    if kb.cfg.aarch64 {
        return unary_float(kb, op, x);
    }
    match op {
        UnaryOp::Relu => {
            let z = kb.fsplat(0.0);
            maxps(kb, z, x)
        }
        UnaryOp::Clip { min, max } => {
            let mut y = x;
            if min > f32::NEG_INFINITY {
                let m = kb.fsplat(min);
                y = maxps(kb, m, y);
            }
            if max < f32::INFINITY {
                let m = kb.fsplat(max);
                y = minps(kb, m, y);
            }
            y
        }
        _ => unary_float(kb, op, x),
    }
}

/// Depthwise convolution. The 1-D and 2-D ones with column stride 1 or 2 run the window engine;
/// the rest run [`depthwise_generic`].
pub(crate) fn depthwise_kernel(
    kb: &mut Kb,
    s: &ConvSpec,
    x: Ptr,
    w: Ptr,
    bias: Option<Ptr>,
    y: Ptr,
) {
    let win = Win::new(
        &kb.cfg,
        &s.input,
        &s.output,
        &s.kernel,
        &s.strides,
        &s.dilations,
        &s.pads_begin,
    );
    let Some(win) = win else {
        depthwise_generic(kb, s, x, w, bias, y);
        return;
    };
    let ksz: usize = s.kernel.iter().product();
    let (lo, hi) = kb.share(s.n * s.c);
    kb.for_dyn(lo, hi, |kb, plane| {
        let (xp, yp, wc, init) = plane_operands(kb, s, plane, x, w, bias, y);
        let init = kb.splat(init);
        let wv: Vec<Value> = (0..ksz)
            .map(|i| {
                let v = kb.load(F32, wc, (i * 4) as i32);
                kb.splat(v)
            })
            .collect();
        let fold = Fold::Conv {
            w: &wv,
            init,
            post: &s.post,
        };
        win.plane(kb, fold, xp, yp);
    });
}

/// Depthwise convolution of any rank, direct: every output row starts as the bias and each
/// kernel tap adds `w * x` over the range of output positions whose input is inside the image,
/// vectorized along the row when the stride is 1. The row stays in L1 across the taps; the
/// activations run over it at the end.
pub(crate) fn depthwise_generic(
    kb: &mut Kb,
    s: &ConvSpec,
    x: Ptr,
    w: Ptr,
    bias: Option<Ptr>,
    y: Ptr,
) {
    let r = s.input.len();
    let p: usize = s.output.iter().product();
    let ow = s.output[r - 1];
    if p == 0 {
        return;
    }
    let in_strides = super::dense_strides(&s.input, 4);
    let k_strides = super::dense_strides(&s.kernel, 4);
    let (kl, st, d, pad, len) = (
        s.kernel[r - 1],
        s.strides[r - 1],
        s.dilations[r - 1],
        s.pads_begin[r - 1],
        s.input[r - 1],
    );
    let (lo, hi) = kb.share(s.n * s.c);
    kb.for_dyn(lo, hi, |kb, plane| {
        let (xp, yp, wc, init) = plane_operands(kb, s, plane, x, w, bias, y);
        index_nest(kb, &s.output[..r - 1], &mut |kb, os| {
            let os = os.to_vec();
            let mut flat = kb.iconst(0);
            for (&o, &size) in os.iter().zip(&s.output) {
                let t = kb.b.ins().imul_imm_s(flat, size as i64);
                flat = kb.b.ins().iadd(t, o);
            }
            let yrow = kb.index(yp, flat, (ow * 4) as i64);
            super::map_f32(kb, ow, &[super::Src::Splat(init)], yrow, &|_, v| v[0]);
            index_nest(kb, &s.kernel[..r - 1], &mut |kb, ks| {
                let mut src = xp;
                let mut wk = wc;
                let mut valid: Option<Value> = None;
                for j in 0..r - 1 {
                    let a = kb.b.ins().imul_imm_s(os[j], s.strides[j] as i64);
                    let b = kb.b.ins().imul_imm_s(ks[j], s.dilations[j] as i64);
                    let i = kb.b.ins().iadd(a, b);
                    let i = kb.b.ins().iadd_imm_s(i, -(s.pads_begin[j] as i64));
                    let ok =
                        kb.b.ins()
                            .icmp_imm_u(IntCC::UnsignedLessThan, i, s.input[j] as i64);
                    valid = Some(match valid {
                        None => ok,
                        Some(v) => kb.b.ins().band(v, ok),
                    });
                    src = kb.index(src, i, in_strides[j]);
                    wk = kb.index(wk, ks[j], k_strides[j]);
                }
                let body = |kb: &mut Kb| {
                    kb.for_n(kl, |kb, k| {
                        let wp = kb.index(wk, k, 4);
                        let wv = kb.load(F32, wp, 0);
                        let (lo, hi) = valid_range(kb, k, st, d, pad, len, ow);
                        let kd = kb.b.ins().imul_imm_s(k, d as i64);
                        let shift = kb.b.ins().iadd_imm_s(kd, -(pad as i64));
                        let base = kb.index(src, shift, 4);
                        let step =
                            |kb: &mut Kb, o: Value, ty: cranelift_codegen::ir::Type, wv: Value| {
                                let sp = kb.index(base, o, (st * 4) as i64);
                                let xv = kb.load(ty, sp, 0);
                                let dp = kb.index(yrow, o, 4);
                                let acc = kb.load(ty, dp, 0);
                                let nx = kb.mul_add(wv, xv, acc);
                                kb.store(nx, dp, 0);
                            };
                        let start = if st == 1 {
                            let wvv = kb.splat(wv);
                            let cnt = kb.b.ins().isub(hi, lo);
                            let nvec = kb.b.ins().ushr_imm_s(cnt, 2);
                            let zero = kb.iconst(0);
                            kb.for_dyn(zero, nvec, |kb, j| {
                                let j4 = kb.b.ins().ishl_imm_s(j, 2);
                                let o = kb.b.ins().iadd(lo, j4);
                                step(kb, o, F32X4, wvv);
                            });
                            let done = kb.b.ins().ishl_imm_s(nvec, 2);
                            kb.b.ins().iadd(lo, done)
                        } else {
                            lo
                        };
                        kb.for_dyn(start, hi, |kb, o| step(kb, o, F32, wv));
                    });
                };
                match valid {
                    None => body(kb),
                    Some(v) => kb.if_then(v, body),
                }
            });
            if !s.post.is_empty() {
                let post = s.post.clone();
                super::map_f32(kb, ow, &[super::Src::Ptr(yrow)], yrow, &|kb, v| {
                    let mut r = v[0];
                    for &op in &post {
                        r = unary_float(kb, op, r);
                    }
                    r
                });
            }
        });
    });
}

/// Input plane, output plane and filter of `plane` (an `n * c + c` index), and the value its outputs
/// start from (the channel's bias, or 0).
fn plane_operands(
    kb: &mut Kb,
    s: &ConvSpec,
    plane: Value,
    x: Ptr,
    w: Ptr,
    bias: Option<Ptr>,
    y: Ptr,
) -> (Ptr, Ptr, Ptr, Value) {
    let sin: usize = s.input.iter().product();
    let p: usize = s.output.iter().product();
    let ksz: usize = s.kernel.iter().product();
    let ch = if s.c == 1 {
        kb.iconst(0)
    } else {
        kb.b.ins().urem_imm_s(plane, s.c as i64)
    };
    let xp = kb.index(x, plane, (sin * 4) as i64);
    let yp = kb.index(y, plane, (p * 4) as i64);
    let wc = kb.index(w, ch, (ksz * 4) as i64);
    let init = match bias {
        Some(b) => {
            let bp = kb.index(b, ch, 4);
            kb.load(F32, bp, 0)
        }
        None => kb.fconst(0.0),
    };
    (xp, yp, wc, init)
}

/// Output positions `[lo, hi)` along an axis whose input `o*s + k*d - pad` is inside `[0, len)`,
/// for a run-time kernel offset `k`.
pub(crate) fn valid_range(
    kb: &mut Kb,
    k: Value,
    st: usize,
    d: usize,
    pad: usize,
    len: usize,
    ow: usize,
) -> (Value, Value) {
    let kd = kb.b.ins().imul_imm_s(k, d as i64);
    let padv = kb.iconst(pad as i64);
    let t_lo = kb.b.ins().isub(padv, kd);
    let lo = ceil_div_clamp(kb, t_lo, st, ow);
    let lp = kb.iconst((len + pad) as i64);
    let t_hi = kb.b.ins().isub(lp, kd);
    let hi = ceil_div_clamp(kb, t_hi, st, ow);
    let hi = kb.b.ins().smax(hi, lo);
    (lo, hi)
}

/// `ceil(max(t, 0) / s)` clamped to `[0, cap]`, for run-time `t`.
fn ceil_div_clamp(kb: &mut Kb, t: Value, s: usize, cap: usize) -> Value {
    let z = kb.iconst(0);
    let t = kb.b.ins().smax(t, z);
    let q = if s == 1 {
        t
    } else {
        let t = kb.b.ins().iadd_imm_s(t, s as i64 - 1);
        let sv = kb.iconst(s as i64);
        kb.b.ins().udiv(t, sv)
    };
    let c = kb.iconst(cap as i64);
    kb.b.ins().smin(q, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win(w: usize, ow: usize, k: usize, s: usize, p: usize) -> Win {
        Win {
            h: 1,
            w,
            oh: 1,
            ow,
            kh: 1,
            kw: k,
            sy: 1,
            sx: s,
            dy: 1,
            dx: 1,
            pt: 0,
            pl: p,
        }
    }

    #[test]
    fn column_plans() {
        // 3 taps, stride 1, pad 1, 112 wide: vector 0 reads column -1, the loop covers
        // [4, 108), vector 108 reads column 112.
        let c = win(112, 112, 3, 1, 1).cols().unwrap();
        assert_eq!(
            (c.left.clone(), c.start, c.n, c.right.clone()),
            (vec![0], 4, 26, vec![108])
        );
        // 7 wide: two constant vectors, the second overlapping the first.
        let c = win(7, 7, 3, 1, 1).cols().unwrap();
        assert_eq!((c.left.len(), c.n, c.right.clone()), (0, 0, vec![0, 3]));
        // Stride 2: taps -1, 0, 1 share the pair at -1 (even, odd lanes); tap 1 has its own.
        let c = win(112, 56, 3, 2, 1).cols().unwrap();
        let t: Vec<(i64, i64, bool)> = c.taps.iter().map(|t| (t.t, t.base, t.odd)).collect();
        assert_eq!(t, vec![(-1, -1, false), (0, -1, true), (1, 1, false)]);
        // Loop starts need 2o - 1 >= 0 and 2o + 1 + 7 < 112: o in [1, 51] -> from 4, 12 vectors.
        assert_eq!(
            (c.left.clone(), c.start, c.n, c.right.clone()),
            (vec![0], 4, 12, vec![52])
        );
        // Narrower than a vector: one partial vector.
        let c = win(3, 3, 3, 1, 1).cols().unwrap();
        assert_eq!((c.left.clone(), c.n, c.right.len()), (vec![0], 0, 0));
    }

    #[test]
    fn row_runs() {
        let w = Win {
            h: 7,
            w: 7,
            oh: 7,
            ow: 7,
            kh: 5,
            kw: 5,
            sy: 1,
            sx: 1,
            dy: 1,
            dx: 1,
            pt: 2,
            pl: 2,
        };
        let r: Vec<(usize, usize, usize, usize)> = w
            .rows(false, 2)
            .iter()
            .map(|r| (r.oy0, r.oy1, r.ky0, r.ky1))
            .collect();
        // Rows 0, 1 miss kernel rows 2 and 1 at the top; 5, 6 the same at the bottom.
        assert_eq!(
            r,
            vec![
                (0, 1, 2, 5),
                (1, 2, 1, 5),
                (2, 5, 0, 5),
                (5, 6, 0, 4),
                (6, 7, 0, 3)
            ]
        );
    }
}
