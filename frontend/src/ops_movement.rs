//! ONNX data movement, resampling, the convolution extras and Einsum -> IR ops.
//!
//! Expand, Tile, Pad, Trilu, GatherElements, GatherND, ScatterElements (and the legacy Scatter),
//! ScatterND, OneHot, CumSum and TopK map to [`Movement`] ops; Resize and Upsample to [`Resize`] with
//! every size resolved here; ConvTranspose, MaxPool's Indices output and Einsum to ops of their own.
//! Split becomes one Slice per output, DepthToSpace and SpaceToDepth a reshape-transpose-reshape,
//! LpPool and GlobalLpPool a power, an average pool and a root (as the ONNX reference computes them),
//! and Range, Size and EyeLike, whose values follow from shapes and constants alone, constants.

use crate::attrs::{invalid, unsupported, NResult, NodeError};
use crate::import::{Importer, NodeCx};
use crate::ops::{auto_pad, axis, int_list, window, window_attr, OpSpec};
use crate::tensor;
use kiln_ir::ops::{
    broadcast_shapes, AutoPad, BinaryOp, ConvTranspose, CoordMode, CumSum, Einsum, Expand,
    GatherElements, GatherNd, GlobalPool, Movement, NearestMode, OneHot, Pad, PadMode, Pool,
    PoolKind, Reduction, Reshape, Resize, ResizeMode, ScatterElements, ScatterNd, Slice, Tile,
    TopK, Transpose, Trilu, UnaryOp,
};
use kiln_ir::{DType, Dim, Op, Tensor, Value};

const fn s(
    attrs: &'static [&'static str],
    max_inputs: usize,
    onnx_outputs: usize,
    kiln_outputs: usize,
) -> OpSpec {
    OpSpec {
        attrs,
        max_inputs,
        onnx_outputs,
        kiln_outputs,
    }
}

const VARIADIC: usize = usize::MAX;

/// The ops of this family kiln maps, with the attributes and arity it accepts.
pub(crate) fn spec(op_type: &str) -> Option<OpSpec> {
    Some(match op_type {
        "Split" => s(&["axis", "split", "num_outputs"], 2, VARIADIC, VARIADIC),
        "Expand" => s(&[], 2, 1, 1),
        "Tile" => s(&[], 2, 1, 1),
        "Pad" => s(&["mode", "pads", "value"], 4, 1, 1),
        "DepthToSpace" | "SpaceToDepth" => s(&["blocksize", "mode"], 1, 1, 1),
        "Resize" => s(
            &[
                "antialias",
                "axes",
                "coordinate_transformation_mode",
                "cubic_coeff_a",
                "exclude_outside",
                "extrapolation_value",
                "keep_aspect_ratio_policy",
                "mode",
                "nearest_mode",
            ],
            4,
            1,
            1,
        ),
        "Upsample" => s(&["mode", "scales", "height_scale", "width_scale"], 2, 1, 1),
        "Trilu" => s(&["upper"], 2, 1, 1),
        "CumSum" => s(&["exclusive", "reverse"], 2, 1, 1),
        "TopK" => s(&["axis", "k", "largest", "sorted"], 2, 2, 2),
        "OneHot" => s(&["axis"], 3, 1, 1),
        "Range" => s(&["stash_type"], 3, 1, 1),
        "Size" => s(&[], 1, 1, 1),
        "EyeLike" => s(&["dtype", "k"], 1, 1, 1),
        "GatherElements" => s(&["axis"], 2, 1, 1),
        "GatherND" => s(&["batch_dims"], 2, 1, 1),
        "ScatterElements" | "Scatter" => s(&["axis", "reduction"], 3, 1, 1),
        "ScatterND" => s(&["reduction"], 3, 1, 1),
        "ConvTranspose" => s(
            &[
                "auto_pad",
                "dilations",
                "group",
                "kernel_shape",
                "output_padding",
                "output_shape",
                "pads",
                "strides",
            ],
            3,
            1,
            1,
        ),
        "LpPool" => s(
            &[
                "auto_pad",
                "ceil_mode",
                "dilations",
                "kernel_shape",
                "p",
                "pads",
                "strides",
            ],
            1,
            1,
            1,
        ),
        "GlobalLpPool" => s(&["p"], 1, 1, 1),
        "Einsum" => s(&["equation"], VARIADIC, 1, 1),
        _ => return None,
    })
}

/// Maps one node of this family.
pub(crate) fn map(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    match cx.op_type {
        "Split" => split(imp, cx),
        "Expand" => expand(imp, cx),
        "Tile" => tile(imp, cx),
        "Pad" => pad(imp, cx),
        "DepthToSpace" => depth_to_space(imp, cx),
        "SpaceToDepth" => space_to_depth(imp, cx),
        "Resize" => resize(imp, cx),
        "Upsample" => upsample(imp, cx),
        "Trilu" => trilu(imp, cx),
        "CumSum" => cumsum(imp, cx),
        "TopK" => top_k(imp, cx),
        "OneHot" => one_hot(imp, cx),
        "Range" => range(imp, cx),
        "Size" => size(imp, cx),
        "EyeLike" => eye_like(imp, cx),
        "GatherElements" => {
            let x = imp.req(cx, 0, "data")?;
            let i = imp.req(cx, 1, "indices")?;
            let a = axis(cx.attrs.int_or("axis", 0)?, imp.ty(x).rank(), "axis")?;
            let op = Movement::GatherElements(GatherElements { axis: a });
            imp.add(cx, Op::Movement(op), &[Some(x), Some(i)])
        }
        "GatherND" => {
            let x = imp.req(cx, 0, "data")?;
            let i = imp.req(cx, 1, "indices")?;
            let b = cx.attrs.int_or("batch_dims", 0)?;
            let batch_dims = usize::try_from(b)
                .map_err(|_| NodeError::Invalid(format!("batch_dims {b} must not be negative")))?;
            let op = Movement::GatherNd(GatherNd { batch_dims });
            imp.add(cx, Op::Movement(op), &[Some(x), Some(i)])
        }
        "ScatterElements" | "Scatter" => {
            let (x, i, u) = scatter_inputs(imp, cx)?;
            let a = axis(cx.attrs.int_or("axis", 0)?, imp.ty(x).rank(), "axis")?;
            let op = Movement::ScatterElements(ScatterElements {
                axis: a,
                reduction: reduction(cx)?,
            });
            imp.add(cx, Op::Movement(op), &[Some(x), Some(i), Some(u)])
        }
        "ScatterND" => {
            let (x, i, u) = scatter_inputs(imp, cx)?;
            let op = Movement::ScatterNd(ScatterNd {
                reduction: reduction(cx)?,
            });
            imp.add(cx, Op::Movement(op), &[Some(x), Some(i), Some(u)])
        }
        "ConvTranspose" => conv_transpose(imp, cx),
        "LpPool" => lp_pool(imp, cx),
        "GlobalLpPool" => global_lp_pool(imp, cx),
        "Einsum" => {
            let Some(eq) = cx.attrs.string("equation")? else {
                return invalid("attribute `equation` is required");
            };
            let ins = (0..imp.num_inputs(cx))
                .map(|i| imp.req(cx, i, "Inputs").map(Some))
                .collect::<NResult<Vec<_>>>()?;
            let op = Op::Einsum(Einsum {
                equation: eq.to_string(),
            });
            imp.add(cx, op, &ins)
        }
        other => unsupported(format!("kiln has no mapping for the ONNX op `{other}` yet")),
    }
}

// ---- helpers ----

/// A required constant parameter input as i64s.
fn const_ints(imp: &mut Importer, cx: &NodeCx, i: usize, what: &str) -> NResult<Vec<i64>> {
    match imp.const_input(cx, i, &format!("`{what}`"))? {
        Some(t) => int_list(&t, &format!("`{what}`")),
        None => invalid(format!("input {i} (`{what}`) is required")),
    }
}

/// A constant scalar parameter (rank 0 or a single element), as f64.
fn const_scalar(imp: &mut Importer, cx: &NodeCx, i: usize, what: &str) -> NResult<Option<Tensor>> {
    match imp.const_input(cx, i, &format!("`{what}`"))? {
        Some(t) if t.len() == 1 => Ok(Some(t)),
        Some(t) => invalid(format!("`{what}` must be a scalar, got {}", t.ty())),
        None => Ok(None),
    }
}

/// A constant helper node of a decomposition.
fn aux_const(imp: &mut Importer, cx: &NodeCx, suffix: &str, t: Tensor) -> NResult<Value> {
    imp.add_aux(cx, suffix, Op::Const(t), &[])
}

/// Normalizes a list of axes (any order, no repeats).
fn axes_list(list: &[i64], rank: usize) -> NResult<Vec<usize>> {
    let mut out = Vec::with_capacity(list.len());
    for &a in list {
        let a = axis(a, rank, "axis")?;
        if out.contains(&a) {
            return invalid(format!("axes {list:?} repeat axis {a}"));
        }
        out.push(a);
    }
    Ok(out)
}

fn to_usize(v: i64, what: &str) -> NResult<usize> {
    usize::try_from(v).map_err(|_| NodeError::Invalid(format!("{what} {v} must not be negative")))
}

// ---- Split ----

fn split(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "input")?;
    let dims = imp.static_dims(x, "input")?;
    let a = axis(cx.attrs.int_or("axis", 0)?, dims.len(), "axis")?;
    let n = dims[a];
    let outputs = cx.node.output.len();
    let given = if cx.opset >= 13 {
        if imp.input(cx, 1).is_some() {
            Some(const_ints(imp, cx, 1, "split")?)
        } else {
            None
        }
    } else {
        cx.attrs.ints("split")?.map(<[i64]>::to_vec)
    };
    let parts: Vec<usize> = match given {
        Some(list) => {
            let parts = list
                .iter()
                .map(|&v| to_usize(v, "split size"))
                .collect::<NResult<Vec<_>>>()?;
            if parts.iter().sum::<usize>() != n || parts.len() != outputs {
                return invalid(format!(
                    "split {list:?} must sum to {n} with one entry per output ({outputs})"
                ));
            }
            parts
        }
        None => {
            let k = match cx.attrs.int("num_outputs")? {
                Some(k) if cx.opset >= 18 => to_usize(k, "num_outputs")?,
                _ => outputs,
            };
            if k == 0 || k != outputs {
                return invalid(format!("{k} parts for {outputs} outputs"));
            }
            if cx.opset >= 18 && cx.attrs.has("num_outputs") {
                // Opset 18: ceil(n / k) per part, the last one smaller.
                let chunk = n.div_ceil(k);
                (0..k)
                    .map(|i| n.saturating_sub(i * chunk).min(chunk))
                    .collect()
            } else {
                if !n.is_multiple_of(k) {
                    return invalid(format!("axis of {n} does not split into {k} equal parts"));
                }
                vec![n / k; k]
            }
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    let mut at = 0usize;
    for (k, &p) in parts.iter().enumerate() {
        let op = Op::Slice(Slice {
            starts: vec![at as i64],
            ends: vec![(at + p) as i64],
            axes: vec![a],
            steps: vec![1],
        });
        out.push(imp.add_aux(cx, &k.to_string(), op, &[Some(x)])?);
        at += p;
    }
    Ok(out)
}

// ---- Expand, Tile ----

fn expand(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "input")?;
    let want = const_ints(imp, cx, 1, "shape")?;
    let want: Vec<Dim> = want
        .iter()
        .map(|&v| to_usize(v, "shape entry").map(Dim::Const))
        .collect::<NResult<_>>()?;
    let out =
        broadcast_shapes(&imp.ty(x).shape, &want).map_err(|e| NodeError::Invalid(e.to_string()))?;
    let shape = out
        .iter()
        .map(|d| {
            d.as_const()
                .ok_or_else(|| NodeError::Unsupported(format!("Expand to symbolic shape {d}")))
        })
        .collect::<NResult<Vec<_>>>()?;
    imp.add(
        cx,
        Op::Movement(Movement::Expand(Expand { shape })),
        &[Some(x)],
    )
}

fn tile(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "input")?;
    if cx.opset < 6 {
        return unsupported("Tile-1 (tiles and axis inputs) is not supported");
    }
    let repeats = const_ints(imp, cx, 1, "repeats")?
        .iter()
        .map(|&v| to_usize(v, "repeat"))
        .collect::<NResult<Vec<_>>>()?;
    imp.add(
        cx,
        Op::Movement(Movement::Tile(Tile { repeats })),
        &[Some(x)],
    )
}

// ---- Pad ----

fn pad(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "data")?;
    let rank = imp.ty(x).rank();
    let dtype = imp.ty(x).dtype;
    let mode_name = cx.attrs.string("mode")?.unwrap_or("constant");
    let mode = PadMode::from_name(mode_name)
        .ok_or_else(|| NodeError::Invalid(format!("unknown pad mode {mode_name:?}")))?;
    let (raw, fill, axes) = if cx.opset < 11 {
        let Some(p) = cx.attrs.ints("pads")? else {
            return invalid("attribute `pads` is required");
        };
        let v = cx.attrs.float_or("value", 0.0)?;
        let fill = if v != 0.0 && mode == PadMode::Constant {
            Some(aux_const(
                imp,
                cx,
                "value",
                Tensor::from_f64(dtype, vec![], &[v as f64]),
            )?)
        } else {
            None
        };
        (p.to_vec(), fill, None)
    } else {
        let p = const_ints(imp, cx, 1, "pads")?;
        let fill = if mode == PadMode::Constant {
            imp.input(cx, 2)
        } else {
            None
        };
        let axes = if imp.input(cx, 3).is_some() {
            Some(axes_list(&const_ints(imp, cx, 3, "axes")?, rank)?)
        } else {
            None
        };
        (p, fill, axes)
    };
    let axes = axes.unwrap_or_else(|| (0..rank).collect());
    if raw.len() != 2 * axes.len() {
        return invalid(format!(
            "pads {raw:?} need two entries per padded axis ({})",
            axes.len()
        ));
    }
    let mut pads = vec![0i64; 2 * rank];
    let n = axes.len();
    for (i, &a) in axes.iter().enumerate() {
        pads[a] = raw[i];
        pads[a + rank] = raw[i + n];
    }
    // An empty fill tensor means "absent" (zero).
    let fill = fill.filter(|&f| {
        imp.ty(f)
            .dims()
            .is_none_or(|d| d.iter().product::<usize>() > 0)
    });
    let op = Op::Movement(Movement::Pad(Pad { pads, mode }));
    imp.add(cx, op, &[Some(x), fill])
}

// ---- DepthToSpace, SpaceToDepth ----

fn block_mode(cx: &NodeCx) -> NResult<(usize, bool)> {
    let b = cx
        .attrs
        .int("blocksize")?
        .ok_or_else(|| NodeError::Invalid("attribute `blocksize` is required".into()))?;
    let b = usize::try_from(b)
        .ok()
        .filter(|&b| b > 0 && b < 1 << 20)
        .ok_or_else(|| NodeError::Invalid(format!("blocksize {b} must be positive")))?;
    let crd = match cx.attrs.string("mode")?.unwrap_or("DCR") {
        "DCR" => false,
        "CRD" => true,
        m => return invalid(format!("unknown mode {m:?}")),
    };
    Ok((b, crd))
}

/// `reshape(tmp) -> transpose(perm) -> reshape(out)`, the last one carrying the node's name.
fn reshuffle(
    imp: &mut Importer,
    cx: &NodeCx,
    x: Value,
    tmp: Vec<usize>,
    perm: Vec<usize>,
    out: Vec<usize>,
) -> NResult<Vec<Value>> {
    let r = |d: Vec<usize>| {
        Op::Reshape(Reshape {
            shape: d.into_iter().map(|v| v as i64).collect(),
            allowzero: true,
        })
    };
    let a = imp.add_aux(cx, "split", r(tmp), &[Some(x)])?;
    let t = imp.add_aux(cx, "permute", Op::Transpose(Transpose { perm }), &[Some(a)])?;
    imp.add(cx, r(out), &[Some(t)])
}

fn depth_to_space(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "input")?;
    let d = imp.static_dims(x, "input")?;
    let (b, crd) = block_mode(cx)?;
    let [n, c, h, w] = d[..] else {
        return invalid(format!("input must be 4-D, got {}", imp.ty(x)));
    };
    if !c.is_multiple_of(b * b) {
        return invalid(format!(
            "{c} channels do not divide by blocksize {b} squared"
        ));
    }
    let cb = c / (b * b);
    let (tmp, perm) = if crd {
        (vec![n, cb, b, b, h, w], vec![0, 1, 4, 2, 5, 3])
    } else {
        (vec![n, b, b, cb, h, w], vec![0, 3, 4, 1, 5, 2])
    };
    reshuffle(imp, cx, x, tmp, perm, vec![n, cb, h * b, w * b])
}

fn space_to_depth(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "input")?;
    let d = imp.static_dims(x, "input")?;
    let (b, crd) = block_mode(cx)?;
    let [n, c, h, w] = d[..] else {
        return invalid(format!("input must be 4-D, got {}", imp.ty(x)));
    };
    if !h.is_multiple_of(b) || !w.is_multiple_of(b) {
        return invalid(format!(
            "spatial dims {h}x{w} do not divide by blocksize {b}"
        ));
    }
    let perm = if crd {
        vec![0, 1, 3, 5, 2, 4]
    } else {
        vec![0, 3, 5, 1, 2, 4]
    };
    reshuffle(
        imp,
        cx,
        x,
        vec![n, c, h / b, b, w / b, b],
        perm,
        vec![n, c * b * b, h / b, w / b],
    )
}

// ---- Resize, Upsample ----

/// A float parameter input that may be given as an empty tensor (meaning absent).
fn opt_const_floats(
    imp: &mut Importer,
    cx: &NodeCx,
    i: usize,
    what: &str,
) -> NResult<Option<Vec<f64>>> {
    let Some(v) = imp.input(cx, i) else {
        return Ok(None);
    };
    if imp
        .ty(v)
        .dims()
        .is_some_and(|d| d.iter().product::<usize>() == 0)
    {
        return Ok(None);
    }
    match imp.const_input(cx, i, &format!("`{what}`"))? {
        Some(t) if t.shape().len() <= 1 => Ok(Some(t.to_f64_vec())),
        Some(t) => invalid(format!("`{what}` must be 1-D, got {}", t.ty())),
        None => Ok(None),
    }
}

fn resize(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "X")?;
    let d = imp.static_dims(x, "X")?;
    let r = d.len();
    let mode_name = cx.attrs.string("mode")?.unwrap_or("nearest");
    if cx.opset < 11 {
        // Resize-10 is Upsample-9 under a new name: asymmetric coordinates, nearest rounds down.
        let scales = opt_const_floats(imp, cx, 1, "scales")?
            .ok_or_else(|| NodeError::Invalid("input `scales` is required".into()))?;
        return upsample_with(imp, cx, x, &d, mode_name, &scales);
    }
    let coord_name = cx
        .attrs
        .string("coordinate_transformation_mode")?
        .unwrap_or("half_pixel");
    let coord = CoordMode::from_name(coord_name).ok_or_else(|| {
        NodeError::Invalid(format!(
            "unknown coordinate_transformation_mode {coord_name:?}"
        ))
    })?;
    let mode = match mode_name {
        "nearest" => {
            let n = cx
                .attrs
                .string("nearest_mode")?
                .unwrap_or("round_prefer_floor");
            ResizeMode::Nearest(
                NearestMode::from_name(n)
                    .ok_or_else(|| NodeError::Invalid(format!("unknown nearest_mode {n:?}")))?,
            )
        }
        "linear" => ResizeMode::Linear,
        "cubic" => ResizeMode::Cubic {
            a: cx.attrs.float_or("cubic_coeff_a", -0.75)?,
        },
        m => return invalid(format!("unknown mode {m:?}")),
    };
    let axes = match cx.attrs.ints("axes")? {
        Some(a) => axes_list(a, r)?,
        None => (0..r).collect(),
    };
    let n = axes.len();
    let roi = if coord == CoordMode::TfCropAndResize {
        let roi = opt_const_floats(imp, cx, 1, "roi")?
            .ok_or_else(|| NodeError::Invalid("tf_crop_and_resize needs `roi`".into()))?;
        if roi.len() != 2 * n {
            return invalid(format!("roi {roi:?} needs {} entries", 2 * n));
        }
        let mut full = vec![0.0f32; r];
        full.extend(std::iter::repeat_n(1.0f32, r));
        for (i, &a) in axes.iter().enumerate() {
            full[a] = roi[i] as f32;
            full[a + r] = roi[i + n] as f32;
        }
        full
    } else {
        vec![]
    };
    let scales_in = opt_const_floats(imp, cx, 2, "scales")?;
    let sizes_in = if imp.input(cx, 3).is_some() {
        let v = imp.input(cx, 3);
        if v.is_some_and(|v| {
            imp.ty(v)
                .dims()
                .is_some_and(|d| d.iter().product::<usize>() == 0)
        }) {
            None
        } else {
            Some(const_ints(imp, cx, 3, "sizes")?)
        }
    } else {
        None
    };
    let mut scales = vec![1.0f64; r];
    let mut sizes = d.clone();
    match (scales_in, sizes_in) {
        (Some(sc), None) => {
            if sc.len() != n {
                return invalid(format!("scales {sc:?} need {n} entries"));
            }
            for (i, &a) in axes.iter().enumerate() {
                if !(sc[i].is_finite() && sc[i] > 0.0) {
                    return invalid(format!("scale {} must be positive", sc[i]));
                }
                scales[a] = sc[i];
                let o = (sc[i] * d[a] as f64).floor();
                if o > (1u64 << 40) as f64 {
                    return invalid(format!("scale {} makes axis {a} too large", sc[i]));
                }
                sizes[a] = o as usize;
            }
        }
        (None, Some(sz)) => {
            if sz.len() != n {
                return invalid(format!("sizes {sz:?} need {n} entries"));
            }
            let sz = sz
                .iter()
                .map(|&v| to_usize(v, "size"))
                .collect::<NResult<Vec<_>>>()?;
            let policy = cx
                .attrs
                .string("keep_aspect_ratio_policy")?
                .unwrap_or("stretch");
            let ratio = |i: usize| -> NResult<f64> {
                let a = axes[i];
                if d[a] == 0 {
                    return invalid(format!("cannot resize empty axis {a}"));
                }
                Ok(sz[i] as f64 / d[a] as f64)
            };
            match policy {
                "stretch" => {
                    for (i, &a) in axes.iter().enumerate() {
                        scales[a] = ratio(i)?;
                        sizes[a] = sz[i];
                    }
                }
                "not_larger" | "not_smaller" => {
                    let rs = (0..n).map(ratio).collect::<NResult<Vec<_>>>()?;
                    let pick = if policy == "not_larger" {
                        rs.iter().copied().fold(f64::INFINITY, f64::min)
                    } else {
                        rs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                    };
                    for &a in &axes {
                        scales[a] = pick;
                        // Round half up, as the reference does.
                        sizes[a] = (pick * d[a] as f64 + 0.5) as usize;
                    }
                }
                p => return invalid(format!("unknown keep_aspect_ratio_policy {p:?}")),
            }
        }
        (Some(_), Some(_)) => return invalid("only one of `scales` and `sizes` may be given"),
        (None, None) => return invalid("one of `scales` and `sizes` is required"),
    }
    let op = Resize {
        mode,
        coord,
        exclude_outside: cx.attrs.flag("exclude_outside", false)?,
        antialias: cx.attrs.flag("antialias", false)?,
        extrapolation_value: cx.attrs.float_or("extrapolation_value", 0.0)?,
        scales,
        sizes,
        roi,
    };
    imp.add(cx, Op::Resize(op), &[Some(x)])
}

/// Upsample (and Resize-10): asymmetric coordinates, nearest rounding down.
fn upsample_with(
    imp: &mut Importer,
    cx: &NodeCx,
    x: Value,
    d: &[usize],
    mode: &str,
    scales: &[f64],
) -> NResult<Vec<Value>> {
    let mode = match mode {
        "nearest" => ResizeMode::Nearest(NearestMode::Floor),
        "linear" | "bilinear" => ResizeMode::Linear,
        m => return invalid(format!("unknown mode {m:?}")),
    };
    if scales.len() != d.len() {
        return invalid(format!(
            "scales {scales:?} need one entry per axis of {d:?}"
        ));
    }
    let mut sizes = Vec::with_capacity(d.len());
    for (&s, &n) in scales.iter().zip(d) {
        if !(s.is_finite() && s >= 1.0 && s < (1u64 << 20) as f64) {
            return invalid(format!("scale {s} must be at least 1"));
        }
        sizes.push((s * n as f64).floor() as usize);
    }
    let op = Resize {
        mode,
        coord: CoordMode::Asymmetric,
        exclude_outside: false,
        antialias: false,
        extrapolation_value: 0.0,
        scales: scales.to_vec(),
        sizes,
        roi: vec![],
    };
    imp.add(cx, Op::Resize(op), &[Some(x)])
}

fn upsample(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "X")?;
    let d = imp.static_dims(x, "X")?;
    let mode = cx.attrs.string("mode")?.unwrap_or("nearest").to_string();
    let scales: Vec<f64> = if cx.opset >= 9 {
        opt_const_floats(imp, cx, 1, "scales")?
            .ok_or_else(|| NodeError::Invalid("input `scales` is required".into()))?
    } else if let Some(s) = cx.attrs.floats("scales")? {
        s.iter().map(|&v| v as f64).collect()
    } else {
        // Upsample-1: height_scale and width_scale of an NCHW input.
        let h = cx.attrs.float_or("height_scale", 1.0)? as f64;
        let w = cx.attrs.float_or("width_scale", 1.0)? as f64;
        vec![1.0, 1.0, h, w]
    };
    upsample_with(imp, cx, x, &d, &mode, &scales)
}

// ---- Trilu, CumSum, TopK, OneHot ----

fn trilu(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "input")?;
    let upper = cx.attrs.flag("upper", true)?;
    // `k` may be computed at run time: the kernel reads it.
    let k = imp.input(cx, 1);
    imp.add(
        cx,
        Op::Movement(Movement::Trilu(Trilu { upper })),
        &[Some(x), k],
    )
}

fn cumsum(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "x")?;
    let Some(t) = const_scalar(imp, cx, 1, "axis")? else {
        return invalid("input `axis` is required");
    };
    if !t.dtype().is_int() {
        return invalid(format!("`axis` must be an integer, got {}", t.ty()));
    }
    let a = axis(t.get_i64(0), imp.ty(x).rank(), "axis")?;
    let op = CumSum {
        axis: a,
        exclusive: cx.attrs.flag("exclusive", false)?,
        reverse: cx.attrs.flag("reverse", false)?,
    };
    imp.add(cx, Op::Movement(Movement::CumSum(op)), &[Some(x)])
}

fn top_k(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "X")?;
    let k = if cx.opset < 10 {
        cx.attrs
            .int("k")?
            .ok_or_else(|| NodeError::Invalid("attribute `k` is required".into()))?
    } else {
        let Some(t) = const_scalar(imp, cx, 1, "K")? else {
            return invalid("input `K` is required");
        };
        t.get_i64(0)
    };
    let k = to_usize(k, "k")?;
    let a = axis(cx.attrs.int_or("axis", -1)?, imp.ty(x).rank(), "axis")?;
    // `sorted = 0` lets any order through; kiln always returns the sorted one.
    let _ = cx.attrs.flag("sorted", true)?;
    let op = TopK {
        axis: a,
        k,
        largest: cx.attrs.flag("largest", true)?,
    };
    imp.add(cx, Op::Movement(Movement::TopK(op)), &[Some(x)])
}

fn one_hot(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let i = imp.req(cx, 0, "indices")?;
    let v = imp.req(cx, 2, "values")?;
    let Some(t) = const_scalar(imp, cx, 1, "depth")? else {
        return invalid("input `depth` is required");
    };
    // A float depth is cast to an integer, as ONNX specifies.
    let depth = t.get_f64(0);
    if !(depth >= 1.0 && depth < (1u64 << 32) as f64) {
        return invalid(format!("depth {depth} must be positive"));
    }
    let rank = imp.ty(i).rank();
    let a = axis(cx.attrs.int_or("axis", -1)?, rank + 1, "axis")?;
    let op = OneHot {
        axis: a,
        depth: depth as usize,
    };
    imp.add(cx, Op::Movement(Movement::OneHot(op)), &[Some(i), Some(v)])
}

// ---- constants: Range, Size, EyeLike ----

fn range(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let mut get = |i: usize, what: &str| -> NResult<Tensor> {
        imp.req(cx, i, what)?;
        const_scalar(imp, cx, i, what)?
            .ok_or_else(|| NodeError::Invalid(format!("input `{what}` is required")))
    };
    let (start, limit, delta) = (get(0, "start")?, get(1, "limit")?, get(2, "delta")?);
    let dtype = start.dtype();
    if limit.dtype() != dtype || delta.dtype() != dtype {
        return invalid("start, limit and delta must have the same type");
    }
    let t = if dtype.is_float() {
        let (s, l, d) = (start.get_f64(0), limit.get_f64(0), delta.get_f64(0));
        if d == 0.0 || !(s.is_finite() && l.is_finite() && d.is_finite()) {
            return invalid(format!("range({s}, {l}, {d}) is not finite"));
        }
        let n = ((l - s) / d).ceil().max(0.0);
        if n > imp.max_tensor_bytes() as f64 {
            return invalid(format!("range({s}, {l}, {d}) is too long"));
        }
        let v: Vec<f64> = (0..n as usize).map(|i| s + i as f64 * d).collect();
        Tensor::from_f64(dtype, vec![v.len()], &v)
    } else {
        let (s, l, d) = (
            start.get_i64(0) as i128,
            limit.get_i64(0) as i128,
            delta.get_i64(0) as i128,
        );
        if d == 0 {
            return invalid("delta must not be 0");
        }
        let span = l - s;
        let n = if (span > 0) == (d > 0) && span != 0 {
            (span.abs() + d.abs() - 1) / d.abs()
        } else {
            0
        };
        if n > imp.max_tensor_bytes() as i128 {
            return invalid(format!("range({s}, {l}, {d}) is too long"));
        }
        let v: Vec<i64> = (0..n).map(|i| (s + i * d) as i64).collect();
        Tensor::from_i64(dtype, vec![v.len()], &v)
    };
    imp.add_constant(cx, t)
}

fn size(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "data")?;
    let d = imp.static_dims(x, "data")?;
    let n = d.iter().product::<usize>() as i64;
    imp.add_constant(cx, Tensor::from_i64(DType::I64, vec![], &[n]))
}

fn eye_like(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "input")?;
    let d = imp.static_dims(x, "input")?;
    let [rows, cols] = d[..] else {
        return invalid(format!("input must be 2-D, got {}", imp.ty(x)));
    };
    let dtype = match cx.attrs.int("dtype")? {
        Some(code) => {
            let code = i32::try_from(code)
                .map_err(|_| NodeError::Invalid(format!("dtype {code} is not an element type")))?;
            tensor::dtype_from_onnx(code)
                .map_err(|r| NodeError::Unsupported(format!("EyeLike of {r}")))?
        }
        None => imp.ty(x).dtype,
    };
    let k = cx.attrs.int_or("k", 0)?;
    let v: Vec<i64> = (0..rows * cols)
        .map(|e| i64::from((e % cols) as i128 - (e / cols) as i128 == k as i128))
        .collect();
    imp.add_constant(cx, Tensor::from_i64(dtype, vec![rows, cols], &v))
}

// ---- scatter helpers ----

fn scatter_inputs(imp: &mut Importer, cx: &NodeCx) -> NResult<(Value, Value, Value)> {
    Ok((
        imp.req(cx, 0, "data")?,
        imp.req(cx, 1, "indices")?,
        imp.req(cx, 2, "updates")?,
    ))
}

fn reduction(cx: &NodeCx) -> NResult<Reduction> {
    let name = cx.attrs.string("reduction")?.unwrap_or("none");
    Reduction::from_name(name)
        .ok_or_else(|| NodeError::Invalid(format!("unknown reduction {name:?}")))
}

// ---- ConvTranspose, LpPool, GlobalLpPool ----

fn conv_transpose(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "X")?;
    let w = imp.req(cx, 1, "W")?;
    let b = imp.input(cx, 2);
    let xd = imp.static_dims(x, "X")?;
    let wd = imp.static_dims(w, "W")?;
    if xd.len() < 3 || wd.len() != xd.len() {
        return invalid(format!(
            "X must be N x C x D1 x ... and W of the same rank, got {} and {}",
            imp.ty(x),
            imp.ty(w)
        ));
    }
    let r = xd.len() - 2;
    let kernel = window_attr(cx, "kernel_shape", true)?.unwrap_or_else(|| wd[2..].to_vec());
    let strides = window_attr(cx, "strides", true)?.unwrap_or_else(|| vec![1; r]);
    let dilations = window_attr(cx, "dilations", true)?.unwrap_or_else(|| vec![1; r]);
    let out_pad = window_attr(cx, "output_padding", false)?.unwrap_or_else(|| vec![0; r]);
    let pads = window_attr(cx, "pads", false)?.unwrap_or_else(|| vec![0; 2 * r]);
    if kernel.len() != r
        || strides.len() != r
        || dilations.len() != r
        || out_pad.len() != r
        || pads.len() != 2 * r
    {
        return invalid(format!(
            "for {r} spatial axes, kernel_shape, strides, dilations and output_padding need {r} entries and pads {}",
            2 * r
        ));
    }
    let group = cx.attrs.int_or("group", 1)?;
    let group = usize::try_from(group)
        .ok()
        .filter(|g| (1..1 << 31).contains(g))
        .ok_or_else(|| NodeError::Invalid(format!("group {group} must be positive")))?;
    let mode = auto_pad(cx)?;
    // Full extent of the scatter along each axis: s * (in - 1) + output_padding + (k - 1) * d + 1.
    let full: Vec<i128> = (0..r)
        .map(|i| {
            strides[i] as i128 * (xd[2 + i] as i128 - 1)
                + out_pad[i] as i128
                + (kernel[i] as i128 - 1) * dilations[i] as i128
                + 1
        })
        .collect();
    let requested: Option<Vec<usize>> = match cx.attrs.ints("output_shape")? {
        Some(o) => {
            // Some exporters write the full N x C x ... shape.
            let o = if o.len() == r + 2 { &o[2..] } else { o };
            if o.len() != r {
                return invalid(format!("output_shape {o:?} needs {r} entries"));
            }
            Some(
                o.iter()
                    .map(|&v| to_usize(v, "output_shape entry"))
                    .collect::<NResult<_>>()?,
            )
        }
        None if matches!(mode, AutoPad::SameUpper | AutoPad::SameLower) => {
            Some((0..r).map(|i| xd[2 + i] * strides[i]).collect())
        }
        None => None,
    };
    let (pads_begin, output): (Vec<i64>, Vec<usize>) = match requested {
        Some(out) => {
            let mut pb = Vec::with_capacity(r);
            for i in 0..r {
                let total = full[i] - out[i] as i128;
                // Python floor division, as the ONNX spec writes it.
                let half = total.div_euclid(2);
                pb.push(if mode == AutoPad::SameUpper {
                    half
                } else {
                    total - half
                } as i64);
            }
            (pb, out)
        }
        None => {
            let pads = if mode == AutoPad::Valid {
                vec![0; 2 * r]
            } else {
                pads
            };
            let mut out = Vec::with_capacity(r);
            for i in 0..r {
                let o = full[i] - pads[i] as i128 - pads[i + r] as i128;
                out.push(usize::try_from(o).map_err(|_| {
                    NodeError::Invalid(format!("pads {pads:?} leave no output on axis {i}"))
                })?);
            }
            (pads[..r].iter().map(|&p| p as i64).collect(), out)
        }
    };
    let op = ConvTranspose {
        kernel_shape: kernel,
        strides,
        dilations,
        pads_begin,
        output,
        group,
    };
    imp.add(cx, Op::ConvTranspose(op), &[Some(x), Some(w), b])
}

/// `|x|^p`: a square for p = 2, else a power of the absolute value.
fn abs_pow(imp: &mut Importer, cx: &NodeCx, x: Value, p: i64) -> NResult<Value> {
    if p == 2 {
        return imp.add_aux(cx, "square", Op::Binary(BinaryOp::Mul), &[Some(x), Some(x)]);
    }
    let a = imp.add_aux(cx, "abs", Op::Unary(UnaryOp::Abs), &[Some(x)])?;
    if p == 1 {
        return Ok(a);
    }
    let dtype = imp.ty(x).dtype;
    let e = aux_const(imp, cx, "p", Tensor::from_f64(dtype, vec![], &[p as f64]))?;
    imp.add_aux(cx, "pow", Op::Binary(BinaryOp::Pow), &[Some(a), Some(e)])
}

/// `(count * mean)^(1/p)`, the last node carrying the node's name.
fn scaled_root(
    imp: &mut Importer,
    cx: &NodeCx,
    mean: Value,
    count: usize,
    p: i64,
) -> NResult<Vec<Value>> {
    let dtype = imp.ty(mean).dtype;
    let n = aux_const(
        imp,
        cx,
        "count",
        Tensor::from_f64(dtype, vec![], &[count as f64]),
    )?;
    let sum = imp.add_aux(cx, "sum", Op::Binary(BinaryOp::Mul), &[Some(mean), Some(n)])?;
    match p {
        1 => imp.add(cx, Op::Identity, &[Some(sum)]),
        2 => imp.add(cx, Op::Unary(UnaryOp::Sqrt), &[Some(sum)]),
        _ => {
            let e = aux_const(
                imp,
                cx,
                "inv_p",
                Tensor::from_f64(dtype, vec![], &[1.0 / p as f64]),
            )?;
            imp.add(cx, Op::Binary(BinaryOp::Pow), &[Some(sum), Some(e)])
        }
    }
}

fn lp_p(cx: &NodeCx) -> NResult<i64> {
    let p = cx.attrs.int_or("p", 2)?;
    if !(1..=64).contains(&p) {
        return unsupported(format!("p = {p} (kiln supports 1 to 64)"));
    }
    Ok(p)
}

/// LpPool = (K * avg_pool(|x|^p))^(1/p), the ONNX reference's own formulation; padding counts as
/// zeros, so the average includes the padded taps and times K it is the plain window sum.
fn lp_pool(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "X")?;
    let xd = imp.static_dims(x, "X")?;
    let Some(kernel) = window_attr(cx, "kernel_shape", true)? else {
        return invalid("attribute `kernel_shape` is required");
    };
    if xd.len() != kernel.len() + 2 {
        return invalid(format!(
            "kernel_shape {kernel:?} has {} axes but X is {}",
            kernel.len(),
            imp.ty(x)
        ));
    }
    let p = lp_p(cx)?;
    let win = window(cx, &xd[2..], kernel)?;
    let count: usize = win.kernel.iter().product();
    let pw = abs_pow(imp, cx, x, p)?;
    let op = Pool {
        layout: kiln_ir::ops::Layout::Nchw,
        kind: PoolKind::Avg,
        kernel_shape: win.kernel,
        strides: win.strides,
        pads: win.pads,
        dilations: win.dilations,
        ceil_mode: cx.attrs.flag("ceil_mode", false)?,
        count_include_pad: true,
    };
    let mean = imp.add_aux(cx, "avg", Op::Pool(op), &[Some(pw)])?;
    scaled_root(imp, cx, mean, count, p)
}

fn global_lp_pool(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "X")?;
    let xd = imp.static_dims(x, "X")?;
    if xd.len() < 3 {
        return invalid(format!("X must be N x C x D1 x ..., got {}", imp.ty(x)));
    }
    let p = lp_p(cx)?;
    let count: usize = xd[2..].iter().product();
    let pw = abs_pow(imp, cx, x, p)?;
    let op = Op::GlobalPool(GlobalPool {
        layout: kiln_ir::ops::Layout::Nchw,
        kind: PoolKind::Avg,
    });
    let mean = imp.add_aux(cx, "avg", op, &[Some(pw)])?;
    scaled_root(imp, cx, mean, count, p)
}
