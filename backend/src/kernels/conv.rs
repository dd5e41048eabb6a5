//! Convolution as a matrix product over any number of spatial dims: `Y[M, P] = W[M, K] x Col[K, P]`
//! per (image, group), `K = C/g * prod(kernel)`, `P = prod(output)`.
//!
//! The weights are the product's left operand, packed at compile time into the micro-kernel's row
//! panels (see `gemm`). The right operand is the column matrix: for a pointwise convolution (1x1,
//! stride 1, no padding) the input itself, read in place; otherwise an im2col copy written straight
//! into the micro-kernel's column panels (`[P/nr][K][nr]`), one column block at a time just before
//! the product consumes it, so it is still in L2 when it is read. Strides, dilations, padding and
//! groups cost nothing in the product: the copy absorbs them.
//!
//! The copy works panel by panel (`nr` consecutive output positions). A panel inside one output
//! row whose every tap reads inside the input (most of them) copies each tap's `nr` inputs with
//! two vector loads and stores (stride 1) or strided scalar loads, with no test; a border panel
//! decides per tap between that, zeros, and a per-lane select; a panel that straddles two output
//! rows (outputs narrower than, or not a multiple of, `nr`) works lane by lane.
//!
//! The columns (output positions) are the unit of work sharing: each part copies and computes
//! only its own column tiles, so parts write disjoint memory and do the serial work exactly.

use super::gemm::{product, Addend, Lhs, Mat, Product, Rhs, Tiling};
use super::winograd::Winograd;
use crate::builder::{Kb, Ptr};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I8X16};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Value};
use kiln_ir::ops::UnaryOp;

/// Emits nested loops over `dims` and calls `body` with the induction variables.
pub(crate) fn index_nest(kb: &mut Kb, dims: &[usize], body: &mut dyn FnMut(&mut Kb, &[Value])) {
    fn rec(
        kb: &mut Kb,
        dims: &[usize],
        ivs: &mut Vec<Value>,
        body: &mut dyn FnMut(&mut Kb, &[Value]),
    ) {
        if dims.is_empty() {
            body(kb, ivs);
            return;
        }
        kb.for_n(dims[0], |kb, i| {
            ivs.push(i);
            rec(kb, &dims[1..], ivs, body);
            ivs.pop();
        });
    }
    rec(kb, dims, &mut Vec::new(), body)
}

/// Static description of a convolution.
#[derive(Clone, Debug)]
pub(crate) struct ConvSpec {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Output channels.
    pub m: usize,
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
    /// Begin pads (end pads only bound the output size, which is given).
    pub pads_begin: Vec<usize>,
    /// Output spatial dims.
    pub output: Vec<usize>,
    /// A bias operand is present.
    pub bias: bool,
    /// Activations applied to every output element, in order, before it is stored.
    pub post: Vec<UnaryOp>,
}

impl ConvSpec {
    /// The spec of `conv` for input dims `xd`, weight dims `wd` and output dims `yd`.
    pub(crate) fn new(
        conv: &kiln_ir::ops::Conv,
        xd: &[usize],
        wd: &[usize],
        yd: &[usize],
        bias: bool,
    ) -> ConvSpec {
        let r = xd.len() - 2;
        ConvSpec {
            n: xd[0],
            c: xd[1],
            m: wd[0],
            group: conv.group,
            input: xd[2..].to_vec(),
            kernel: conv.kernel_shape.clone(),
            strides: conv.strides.clone(),
            dilations: conv.dilations.clone(),
            pads_begin: conv.pads[..r].to_vec(),
            output: yd[2..].to_vec(),
            bias,
            post: conv.post.clone(),
        }
    }
}

impl ConvSpec {
    /// 1x1 kernel, unit strides, no padding: the input already is the column matrix.
    pub fn pointwise(&self) -> bool {
        self.kernel.iter().all(|&k| k == 1)
            && self.strides.iter().all(|&s| s == 1)
            && self.pads_begin.iter().all(|&p| p == 0)
    }

    /// One input and one output channel per group: computed directly, without a column matrix.
    pub fn depthwise(&self) -> bool {
        self.c == self.group && self.m == self.group
    }

    /// Rows of the column matrix (the reduction length of the product).
    pub fn k_len(&self) -> usize {
        (self.c / self.group) * self.kernel.iter().product::<usize>()
    }

    /// Bytes of scratch the column matrix needs under the tiling `t` (0 when pointwise or
    /// depthwise): one (image, group) at a time, in whole column panels.
    pub fn scratch_bytes(&self, t: &Tiling) -> usize {
        if self.pointwise() || self.depthwise() {
            0
        } else {
            4 * t.packed_b_len(self.k_len(), self.output.iter().product::<usize>())
        }
    }
}

/// Whether [`conv_kernel`] honours `Kb::share` for this convolution (its work can be split into
/// parts run in parallel).
pub(crate) fn conv_splits(s: &ConvSpec) -> bool {
    if s.depthwise() {
        super::depthwise::splits(s)
    } else {
        true
    }
}

/// How the product of a convolution that is not depthwise reads its weights.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvPlan {
    /// The micro-kernel's tiling.
    pub tiling: Tiling,
    /// The weights operand is packed by `gemm::pack_a` per group (`[g][M/g/mr][K][mr]`, a
    /// derived constant); otherwise it is the OIHW tensor, read in place.
    pub packed_w: bool,
    /// Computed by Winograd's algorithm instead (`super::winograd`); the weights are then
    /// [`Winograd::transform_weights`]'s.
    pub winograd: Option<Winograd>,
}

impl ConvPlan {
    /// The plan for `s` under `tiling`, with compile-time packed weights when `packed_w`
    /// (Winograd needs them), Winograd as the user's `mode` allows.
    pub fn new(s: &ConvSpec, tiling: Tiling, packed_w: bool, mode: crate::Winograd) -> ConvPlan {
        let winograd = if packed_w && !s.depthwise() {
            Winograd::choose(s, &tiling, mode)
        } else {
            None
        };
        ConvPlan {
            tiling,
            packed_w,
            winograd,
        }
    }

    /// Bytes of scratch the kernel needs.
    pub fn scratch_bytes(&self, s: &ConvSpec) -> usize {
        match self.winograd {
            Some(wg) => wg.scratch_bytes(s),
            None => s.scratch_bytes(&self.tiling),
        }
    }

    /// Floats of one group's packed weights.
    pub fn group_floats(&self, s: &ConvSpec) -> usize {
        let mg = s.m / s.group;
        mg.div_ceil(self.tiling.mr) * self.tiling.mr * s.k_len()
    }

    /// The packed weights: `w` is the OIHW tensor's data.
    pub fn pack_weights(&self, s: &ConvSpec, w: &[f32]) -> Vec<f32> {
        if let Some(wg) = self.winograd {
            return wg.transform_weights(s, &self.tiling, w);
        }
        let (mg, kk) = (s.m / s.group, s.k_len());
        let mut out = Vec::with_capacity(self.group_floats(s) * s.group);
        for g in 0..s.group {
            out.extend(super::gemm::pack_a(
                &w[g * mg * kk..],
                mg,
                kk,
                kk,
                1,
                self.tiling.mr,
            ));
        }
        out
    }
}

/// Convolution kernel. Operands: x, w, [bias], y, [scratch].
pub(crate) fn conv_kernel(kb: &mut Kb, s: &ConvSpec, plan: &ConvPlan) {
    let x = kb.args[0];
    let w = kb.args[1];
    let (bias, y) = if s.bias {
        (Some(kb.args[2]), kb.args[3])
    } else {
        (None, kb.args[2])
    };
    if s.depthwise() {
        super::depthwise::depthwise_kernel(kb, s, x, w, bias, y);
        return;
    }
    let t = plan.tiling;
    if let Some(wg) = plan.winograd {
        let scratch = kb.args[if s.bias { 4 } else { 3 }];
        super::winograd::winograd_kernel(kb, s, &wg, &t, x, w, bias, y, scratch);
        return;
    }
    let scratch = if s.pointwise() {
        None
    } else {
        Some(kb.args[if s.bias { 4 } else { 3 }])
    };
    let (cg, mg) = (s.c / s.group, s.m / s.group);
    let kk = s.k_len();
    let p: usize = s.output.iter().product();
    let sin: usize = s.input.iter().product();
    if p == 0 || mg == 0 {
        return;
    }
    // Every part takes the same output columns of every image and group.
    let (t0, t1) = kb.share(t.col_tiles(p));
    kb.for_n(s.n, |kb, n| {
        kb.for_n(s.group, |kb, g| {
            let xn = kb.index(x, n, (s.c * sin * 4) as i64);
            let xg = kb.index(xn, g, (cg * sin * 4) as i64);
            let yn = kb.index(y, n, (s.m * p * 4) as i64);
            let yg = kb.index(yn, g, (mg * p * 4) as i64);
            let a = if plan.packed_w {
                Lhs::Panels(kb.index(w, g, (plan.group_floats(s) * 4) as i64))
            } else {
                Lhs::Strided(Mat {
                    p: kb.index(w, g, (mg * kk * 4) as i64),
                    rs: (kk * 4) as i64,
                    cs: 4,
                })
            };
            let b = match scratch {
                None => Rhs::Rows(Mat {
                    p: xg,
                    rs: (sin * 4) as i64,
                    cs: 4,
                }),
                Some(col) => Rhs::Panels(col),
            };
            let add = bias.map(|bp| {
                let bg = kb.index(bp, g, (mg * 4) as i64);
                Addend {
                    c: Mat {
                        p: bg,
                        rs: 4,
                        cs: 0,
                    },
                    beta: 1.0,
                }
            });
            let spec = Product {
                m: mg,
                n: p,
                k: kk,
                alpha: 1.0,
                a,
                b,
                y: Mat {
                    p: yg,
                    rs: (p * 4) as i64,
                    cs: 4,
                },
                add,
                post: s.post.clone(),
            };
            product(kb, &spec, &t, t0, t1, &mut |kb, jb, je| {
                if let Some(col) = scratch {
                    im2col_panels(kb, s, &t, xg, col, jb, je);
                }
            });
        });
    });
}

/// Writes the column panels `[jb, je)` of one (image, group): lane `l` of row
/// `(ci, tap)` of panel `j` is `x[ci, o * s + tap * d - pad]` for output position `o = j * nr +
/// l`, or 0 in the padding and past the last position.
fn im2col_panels(kb: &mut Kb, s: &ConvSpec, t: &Tiling, x: Ptr, col: Ptr, jb: Value, je: Value) {
    let nr = t.nr;
    let p: usize = s.output.iter().product();
    let ow = s.output[s.output.len() - 1];
    let panel_bytes = (s.k_len() * nr * 4) as i64;
    kb.for_dyn(jb, je, |kb, j| {
        let dst = kb.index(col, j, panel_bytes);
        let o0 = kb.b.ins().imul_imm_s(j, nr as i64);
        if ow.is_multiple_of(nr) && p.is_multiple_of(nr) {
            // Every panel lies inside one output row.
            in_row_panel(kb, s, nr, x, dst, o0);
            return;
        }
        if ow < nr {
            lane_panel(kb, s, nr, x, dst, o0);
            return;
        }
        // Inside one row (w0 + nr <= ow) and not past the end (o0 + nr <= p).
        let w0 = kb.b.ins().urem_imm_u(o0, ow as i64);
        let a =
            kb.b.ins()
                .icmp_imm_s(IntCC::SignedLessThanOrEqual, w0, (ow - nr) as i64);
        let b =
            kb.b.ins()
                .icmp_imm_s(IntCC::SignedLessThanOrEqual, o0, p as i64 - nr as i64);
        let ok = kb.b.ins().band(a, b);
        kb.if_else(
            ok,
            |kb| in_row_panel(kb, s, nr, x, dst, o0),
            |kb| lane_panel(kb, s, nr, x, dst, o0),
        );
    });
}

/// Output coordinates of flat position `o` (run time), outermost first.
fn out_coords(kb: &mut Kb, s: &ConvSpec, o: Value) -> Vec<Value> {
    let r = s.output.len();
    let mut cs = vec![o; r];
    let mut rest = o;
    for a in (1..r).rev() {
        cs[a] = kb.b.ins().urem_imm_u(rest, s.output[a] as i64);
        rest = kb.b.ins().udiv_imm_u(rest, s.output[a] as i64);
    }
    cs[0] = rest;
    cs
}

/// Input coordinates of tap 0 for output coordinates `cs`: `o * s - pad` (possibly negative).
fn first_inputs(kb: &mut Kb, s: &ConvSpec, cs: &[Value]) -> Vec<Value> {
    cs.iter()
        .enumerate()
        .map(|(a, &c)| {
            let v = kb.b.ins().imul_imm_s(c, s.strides[a] as i64);
            kb.b.ins().iadd_imm_s(v, -(s.pads_begin[a] as i64))
        })
        .collect()
}

/// Calls `body(kb, tap_index, tap_coords)` for every kernel tap, unrolled (constant coordinates)
/// for small kernels and as loops for big ones, to bound the code size.
fn for_taps(
    kb: &mut Kb,
    s: &ConvSpec,
    unroll_max: usize,
    body: &mut dyn FnMut(&mut Kb, Value, &[Value]),
) {
    let r = s.kernel.len();
    let count: usize = s.kernel.iter().product();
    if count <= unroll_max {
        let mut ks = vec![0usize; r];
        for index in 0..count {
            let iv = kb.iconst(index as i64);
            let kv: Vec<Value> = ks.iter().map(|&k| kb.iconst(k as i64)).collect();
            body(kb, iv, &kv);
            for a in (0..r).rev() {
                ks[a] += 1;
                if ks[a] < s.kernel[a] {
                    break;
                }
                ks[a] = 0;
            }
        }
    } else {
        index_nest(kb, &s.kernel, &mut |kb, kv| {
            let mut index = kb.iconst(0);
            for (a, &k) in kv.iter().enumerate() {
                let t = kb.b.ins().imul_imm_s(index, s.kernel[a] as i64);
                index = kb.b.ins().iadd(t, k);
            }
            body(kb, index, kv)
        });
    }
}

/// The parts of a tap's position for the output whose tap-0 inputs are `first`: the byte offset
/// from a channel's first element, whether the leading axes are inside the input (`None` for
/// 1-D), and the input coordinate along the last axis (possibly outside).
fn tap_parts(
    kb: &mut Kb,
    s: &ConvSpec,
    first: &[Value],
    ks: &[Value],
) -> (Value, Option<Value>, Value) {
    let r = s.input.len();
    let in_strides = super::dense_strides(&s.input, 4);
    let mut off = kb.iconst(0);
    let mut lead: Option<Value> = None;
    let mut last = first[r - 1];
    for a in 0..r {
        let kd = kb.b.ins().imul_imm_s(ks[a], s.dilations[a] as i64);
        let i = kb.b.ins().iadd(first[a], kd);
        if a < r - 1 {
            // 0 <= i < len, as one unsigned compare.
            let inside =
                kb.b.ins()
                    .icmp_imm_u(IntCC::UnsignedLessThan, i, s.input[a] as i64);
            lead = Some(match lead {
                None => inside,
                Some(v) => kb.b.ins().band(v, inside),
            });
        } else {
            last = i;
        }
        let t = kb.b.ins().imul_imm_s(i, in_strides[a]);
        off = kb.b.ins().iadd(off, t);
    }
    (off, lead, last)
}

/// Whether the last-axis coordinate `i` and the `span` elements after it are inside the input,
/// and the leading axes too.
fn inside_last(kb: &mut Kb, s: &ConvSpec, lead: Option<Value>, i: Value, span: usize) -> Value {
    let len = s.input[s.input.len() - 1];
    // 0 <= i and i + span < len, as one unsigned compare.
    let ok = if span >= len {
        kb.iconst(0)
    } else {
        kb.b.ins()
            .icmp_imm_u(IntCC::UnsignedLessThanOrEqual, i, (len - 1 - span) as i64)
    };
    match lead {
        Some(l) => kb.b.ins().band(l, ok),
        None => ok,
    }
}

/// Byte offset from a channel's first element of the tap with coordinates `ks` for the output
/// whose tap-0 inputs are `first`, and whether it is inside the input (`lanes_span` more
/// elements along the last axis must be inside too).
fn tap_offset(
    kb: &mut Kb,
    s: &ConvSpec,
    first: &[Value],
    ks: &[Value],
    lanes_span: usize,
) -> (Value, Value) {
    let (off, lead, last) = tap_parts(kb, s, first, ks);
    let ok = inside_last(kb, s, lead, last, lanes_span);
    (off, ok)
}

/// A panel inside one output row: positions `o0 .. o0 + nr` share every coordinate but the
/// last, and step by the stride along it.
fn in_row_panel(kb: &mut Kb, s: &ConvSpec, nr: usize, x: Ptr, dst: Ptr, o0: Value) {
    let r = s.input.len();
    let cs = out_coords(kb, s, o0);
    let first = first_inputs(kb, s, &cs);
    let in_strides = super::dense_strides(&s.input, 4);
    let st = s.strides[r - 1];
    // Interior when every lane of every tap reads inside: the extreme taps decide.
    let last_ks: Vec<Value> = s.kernel.iter().map(|&k| kb.iconst(k as i64 - 1)).collect();
    let zeros: Vec<Value> = (0..r).map(|_| kb.iconst(0)).collect();
    let (_, lo_ok) = tap_offset(kb, s, &first, &zeros, 0);
    let (_, hi_ok) = tap_offset(kb, s, &first, &last_ks, read_span(st, nr));
    let interior = kb.b.ins().band(lo_ok, hi_ok);
    let cg = s.c / s.group;
    let sin: usize = s.input.iter().product();
    let ksz: usize = s.kernel.iter().product();
    let row_bytes = (nr * 4) as i64;
    kb.if_else(
        interior,
        |kb| {
            // The panel's first input; every tap is a constant offset from it.
            let mut src = x;
            for a in 0..r {
                src = kb.index(src, first[a], in_strides[a]);
            }
            kb.for_n(cg, |kb, ci| {
                let xc = kb.index(src, ci, (sin * 4) as i64);
                let dc = kb.index(dst, ci, ksz as i64 * row_bytes);
                for_taps(kb, s, 64, &mut |kb, index, ks| {
                    let mut tp = xc;
                    for a in 0..r {
                        let off = (s.dilations[a] as i64) * in_strides[a];
                        tp = kb.index(tp, ks[a], off);
                    }
                    let dp = kb.index(dc, index, row_bytes);
                    copy_lanes(kb, st, nr, tp, dp);
                });
            });
        },
        |kb| {
            kb.for_n(cg, |kb, ci| {
                let xc = kb.index(x, ci, (sin * 4) as i64);
                let dc = kb.index(dst, ci, ksz as i64 * row_bytes);
                for_taps(kb, s, 9, &mut |kb, index, ks| {
                    let dp = kb.index(dc, index, row_bytes);
                    let (off, lead, last) = tap_parts(kb, s, &first, ks);
                    let all = inside_last(kb, s, lead, last, read_span(st, nr));
                    kb.if_else(
                        all,
                        |kb| {
                            let tp = kb.at(xc, off);
                            copy_lanes(kb, st, nr, tp, dp);
                        },
                        |kb| {
                            // Lane l reads `st * l` elements further along the last axis.
                            for l in 0..nr {
                                let i = kb.b.ins().iadd_imm_s(last, (l * st) as i64);
                                let ok = inside_last(kb, s, lead, i, 0);
                                let o = kb.b.ins().iadd_imm_s(off, (l * st * 4) as i64);
                                let v = masked_load(kb, xc, o, ok);
                                kb.store(v, dp, (4 * l) as i32);
                            }
                        },
                    );
                });
            });
        },
    );
}

/// Elements past a tap's first input that [`copy_lanes`] reads along the last axis: the last
/// lane's, and for stride 2 one more (it loads pairs of vectors and keeps the even lanes).
fn read_span(st: usize, nr: usize) -> usize {
    if st == 2 {
        2 * nr - 1
    } else {
        (nr - 1) * st
    }
}

/// Copies the `nr` inputs of one tap (`st` apart, all of [`read_span`] inside the input) to a
/// panel row: vector copies for stride 1, even lanes of vector pairs for stride 2 (`shufps` /
/// `uzp1`), scalar copies otherwise.
fn copy_lanes(kb: &mut Kb, st: usize, nr: usize, src: Ptr, dst: Ptr) {
    if st == 1 {
        for v in 0..nr / 4 {
            let x = kb.load(F32X4, src, 16 * v as i32);
            kb.store(x, dst, 16 * v as i32);
        }
    } else if st == 2 {
        for v in 0..nr / 4 {
            let a = kb.load(F32X4, src, 32 * v as i32);
            let b = kb.load(F32X4, src, 32 * v as i32 + 16);
            let x = even_lanes(kb, a, b);
            kb.store(x, dst, 16 * v as i32);
        }
    } else {
        for l in 0..nr {
            let x = kb.load(F32, src, (l * st * 4) as i32);
            kb.store(x, dst, 4 * l as i32);
        }
    }
}

/// `[a0, a2, b0, b2]`.
fn even_lanes(kb: &mut Kb, a: Value, b: Value) -> Value {
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let a = kb.b.ins().bitcast(I8X16, le, a);
    let b = kb.b.ins().bitcast(I8X16, le, b);
    let bytes: Vec<u8> = [0u8, 2, 4, 6]
        .iter()
        .flat_map(|&l| (0..4).map(move |k| 4 * l + k))
        .collect();
    let mask = kb.b.func.dfg.immediates.push(ConstantData::from(bytes));
    let r = kb.b.ins().shuffle(a, b, mask);
    kb.b.ins().bitcast(F32X4, le, r)
}

/// The f32 at `ch + off` when `ok`, else 0; the load reads the channel's first element instead
/// when not `ok`, so its address is always inside the input.
fn masked_load(kb: &mut Kb, ch: Ptr, off: Value, ok: Value) -> Value {
    let zero = kb.iconst(0);
    let off = kb.b.ins().select(ok, off, zero);
    let p = kb.at(ch, off);
    let v = kb.load(F32, p, 0);
    let z = kb.fconst(0.0);
    kb.b.ins().select(ok, v, z)
}

/// A panel that straddles output rows or runs past the last output position: lane by lane.
///
/// A lane's taps read the same offsets in every input channel, so for a small kernel each tap's
/// offset (0 when it falls in the padding) and validity are computed once per lane, before the
/// loop over channels, leaving a load, a select and a store per element inside it.
fn lane_panel(kb: &mut Kb, s: &ConvSpec, nr: usize, x: Ptr, dst: Ptr, o0: Value) {
    const UNROLL_TAPS: usize = 9;
    let p: usize = s.output.iter().product();
    let cg = s.c / s.group;
    let sin: usize = s.input.iter().product();
    let ksz: usize = s.kernel.iter().product();
    let row_bytes = (nr * 4) as i64;
    for l in 0..nr {
        let o = kb.b.ins().iadd_imm_s(o0, l as i64);
        let live = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, o, p as i64);
        // Past the end the lane is 0; its coordinates are computed from a clamped position.
        let last = kb.iconst(p as i64 - 1);
        let oc = kb.b.ins().select(live, o, last);
        let cs = out_coords(kb, s, oc);
        let first = first_inputs(kb, s, &cs);
        if ksz <= UNROLL_TAPS {
            let mut taps = Vec::with_capacity(ksz);
            for_taps(kb, s, UNROLL_TAPS, &mut |kb, _, ks| {
                let (off, ok) = tap_offset(kb, s, &first, ks, 0);
                let ok = kb.b.ins().band(ok, live);
                let zero = kb.iconst(0);
                taps.push((kb.b.ins().select(ok, off, zero), ok));
            });
            kb.for_n(cg, |kb, ci| {
                let xc = kb.index(x, ci, (sin * 4) as i64);
                let dc = kb.index(dst, ci, ksz as i64 * row_bytes);
                let z = kb.fconst(0.0);
                for (t, &(off, ok)) in taps.iter().enumerate() {
                    let pt = kb.at(xc, off);
                    let v = kb.load(F32, pt, 0);
                    let v = kb.b.ins().select(ok, v, z);
                    kb.store(v, dc, (t as i64 * row_bytes + 4 * l as i64) as i32);
                }
            });
        } else {
            kb.for_n(cg, |kb, ci| {
                let xc = kb.index(x, ci, (sin * 4) as i64);
                let dc = kb.index(dst, ci, ksz as i64 * row_bytes);
                for_taps(kb, s, UNROLL_TAPS, &mut |kb, index, ks| {
                    let (off, ok) = tap_offset(kb, s, &first, ks, 0);
                    let ok = kb.b.ins().band(ok, live);
                    let v = masked_load(kb, xc, off, ok);
                    let dp = kb.index(dc, index, row_bytes);
                    kb.store(v, dp, (4 * l) as i32);
                });
            });
        }
    }
}
