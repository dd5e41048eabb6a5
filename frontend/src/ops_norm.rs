//! ONNX reductions, the softmax family, normalizations and transformer blocks -> IR ops.
//!
//! ReduceX, ArgMax/ArgMin, LogSoftmax, Hardmax, LayerNormalization, RMSNormalization, LRN,
//! Attention and RotaryEmbedding have IR ops of their own. InstanceNormalization and
//! GroupNormalization are a parameterless `layer_norm` over the right axes (through a free reshape)
//! followed by the per-channel affine map; MeanVarianceNormalization, LpNormalization, SwiGLU and
//! BatchNormalization in training mode decompose into reductions and elementwise ops, which keep
//! the numerics of the ONNX function bodies.

use crate::attrs::{invalid, unsupported, NResult, NodeError};
use crate::import::{Importer, NodeCx};
use crate::ops::OpSpec;
use kiln_ir::ops::{
    ArgReduce, Attention, BatchNorm, BinaryOp, Concat, LayerNorm, Lrn, Reduce, ReduceKind, Reshape,
    Rotary, Softmax, Transpose, UnaryOp,
};
use kiln_ir::{DType, Op, Tensor, Value};

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

const REDUCE_ATTRS: &[&str] = &["axes", "keepdims", "noop_with_empty_axes"];
const STASH: &[&str] = &["axis", "epsilon", "stash_type"];

/// The ops of this family kiln maps, with the attributes and arity it accepts.
pub(crate) fn spec(op_type: &str) -> Option<OpSpec> {
    Some(match op_type {
        "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1"
        | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" => {
            s(REDUCE_ATTRS, 2, 1, 1)
        }
        "ArgMax" | "ArgMin" => s(&["axis", "keepdims", "select_last_index"], 1, 1, 1),
        "LogSoftmax" | "Hardmax" => s(&["axis"], 1, 1, 1),
        "LayerNormalization" => s(STASH, 3, 3, 3),
        "RMSNormalization" => s(STASH, 2, 1, 1),
        "InstanceNormalization" => s(&["epsilon"], 3, 1, 1),
        "GroupNormalization" => s(&["epsilon", "num_groups", "stash_type"], 3, 1, 1),
        "MeanVarianceNormalization" => s(&["axes"], 1, 1, 1),
        "LpNormalization" => s(&["axis", "p"], 1, 1, 1),
        "LRN" => s(&["alpha", "beta", "bias", "size"], 1, 1, 1),
        "SwiGLU" => s(&["alpha"], 2, 1, 1),
        "RotaryEmbedding" => s(
            &["interleaved", "num_heads", "rotary_embedding_dim"],
            4,
            1,
            1,
        ),
        "Attention" => s(
            &[
                "is_causal",
                "kv_num_heads",
                "q_num_heads",
                "qk_matmul_output_mode",
                "scale",
                "softcap",
                "softmax_precision",
                "left_window_size",
                "right_window_size",
            ],
            7,
            4,
            4,
        ),
        _ => return None,
    })
}

/// Maps one node of this family; returns the IR values of its outputs, in ONNX order.
pub(crate) fn map(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    match cx.op_type {
        "ReduceSum" => reduce(imp, cx, ReduceKind::Sum),
        "ReduceMean" => reduce(imp, cx, ReduceKind::Mean),
        "ReduceMax" => reduce(imp, cx, ReduceKind::Max),
        "ReduceMin" => reduce(imp, cx, ReduceKind::Min),
        "ReduceProd" => reduce(imp, cx, ReduceKind::Prod),
        "ReduceL1" => reduce(imp, cx, ReduceKind::L1),
        "ReduceL2" => reduce(imp, cx, ReduceKind::L2),
        "ReduceLogSum" => reduce(imp, cx, ReduceKind::LogSum),
        "ReduceLogSumExp" => reduce(imp, cx, ReduceKind::LogSumExp),
        "ReduceSumSquare" => reduce(imp, cx, ReduceKind::SumSquare),
        "ArgMax" => arg_reduce(imp, cx, true),
        "ArgMin" => arg_reduce(imp, cx, false),
        "LogSoftmax" => softmax_like(imp, cx, Op::LogSoftmax),
        "Hardmax" => softmax_like(imp, cx, Op::Hardmax),
        "LayerNormalization" => layer_norm(imp, cx, false),
        "RMSNormalization" => layer_norm(imp, cx, true),
        "InstanceNormalization" => instance_norm(imp, cx),
        "GroupNormalization" => group_norm(imp, cx),
        "MeanVarianceNormalization" => mvn(imp, cx),
        "LpNormalization" => lp_norm(imp, cx),
        "LRN" => lrn(imp, cx),
        "SwiGLU" => swiglu(imp, cx),
        "RotaryEmbedding" => rotary(imp, cx),
        "Attention" => attention(imp, cx),
        other => unsupported(format!("kiln has no mapping for the ONNX op `{other}` yet")),
    }
}

// ---- helpers ----

fn axis(a: i64, rank: usize, what: &str) -> NResult<usize> {
    kiln_ir::ops::norm_axis(a, rank)
        .map_err(|_| NodeError::Invalid(format!("{what} {a} is out of range for rank {rank}")))
}

/// A scalar constant of `dtype` holding `v`.
fn scalar(imp: &mut Importer, cx: &NodeCx, what: &str, dtype: DType, v: f64) -> NResult<Value> {
    imp.add_aux(cx, what, Op::Const(Tensor::scalar_f64(dtype, v)), &[])
}

fn binary(
    imp: &mut Importer,
    cx: &NodeCx,
    what: &str,
    op: BinaryOp,
    a: Value,
    b: Value,
) -> NResult<Value> {
    imp.add_aux(cx, what, Op::Binary(op), &[Some(a), Some(b)])
}

/// A free reshape of `x` to `dims`.
fn reshape(
    imp: &mut Importer,
    cx: &NodeCx,
    what: &str,
    x: Value,
    dims: &[usize],
) -> NResult<Value> {
    let op = Op::Reshape(Reshape {
        shape: dims.iter().map(|&d| d as i64).collect(),
        allowzero: true,
    });
    imp.add_aux(cx, what, op, &[Some(x)])
}

/// Checks that a parameter input has X's dtype.
fn same_dtype(imp: &Importer, x: Value, p: Value, what: &str) -> NResult<()> {
    if imp.ty(p).dtype != imp.ty(x).dtype {
        return invalid(format!("{what} is {} but X is {}", imp.ty(p), imp.ty(x)));
    }
    Ok(())
}

// ---- reductions ----

fn reduce(imp: &mut Importer, cx: &NodeCx, kind: ReduceKind) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "data")?;
    let rank = imp.ty(x).rank();
    // The axes became an input in opset 13 for ReduceSum and in opset 18 for the others.
    let axes_input_from = if kind == ReduceKind::Sum { 13 } else { 18 };
    let list: Option<Vec<i64>> = if cx.opset >= axes_input_from {
        if cx.attrs.has("axes") {
            return invalid(format!(
                "from opset {axes_input_from} `axes` is an input, not an attribute"
            ));
        }
        match imp.const_input(cx, 1, "`axes`")? {
            None => None,
            Some(t) => {
                if !t.dtype().is_int() || t.shape().len() > 1 {
                    return invalid(format!(
                        "`axes` must be a 1-D integer tensor, got {}",
                        t.ty()
                    ));
                }
                Some(t.to_i64_vec())
            }
        }
    } else {
        if imp.input(cx, 1).is_some() {
            return invalid(format!(
                "before opset {axes_input_from} {} takes one input",
                cx.op_type
            ));
        }
        cx.attrs.ints("axes")?.map(<[i64]>::to_vec)
    };
    let noop = cx.opset >= axes_input_from && cx.attrs.flag("noop_with_empty_axes", false)?;
    let axes = match list {
        Some(l) if !l.is_empty() => {
            let mut v = l
                .iter()
                .map(|&a| axis(a, rank, "axis"))
                .collect::<NResult<Vec<_>>>()?;
            v.sort_unstable();
            if v.windows(2).any(|w| w[0] == w[1]) {
                return invalid(format!("axes {l:?} repeat an axis"));
            }
            v
        }
        // No axes: everything, unless `noop_with_empty_axes` says nothing.
        _ if noop => vec![],
        _ => (0..rank).collect(),
    };
    let keepdims = cx.attrs.flag("keepdims", true)?;
    imp.add(
        cx,
        Op::Reduce(Reduce {
            kind,
            axes,
            keepdims,
        }),
        &[Some(x)],
    )
}

fn arg_reduce(imp: &mut Importer, cx: &NodeCx, max: bool) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "data")?;
    let rank = imp.ty(x).rank();
    let op = ArgReduce {
        max,
        axis: axis(cx.attrs.int_or("axis", 0)?, rank, "axis")?,
        keepdims: cx.attrs.flag("keepdims", true)?,
        // Added in opset 12; before, ties went to the first index.
        select_last_index: cx.attrs.flag("select_last_index", false)?,
    };
    imp.add(cx, Op::ArgReduce(op), &[Some(x)])
}

/// LogSoftmax and Hardmax: Softmax's axis rules (2-D coercion before opset 13).
fn softmax_like(imp: &mut Importer, cx: &NodeCx, make: fn(Softmax) -> Op) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "input")?;
    let rank = imp.ty(x).rank();
    let legacy = cx.opset < 13;
    let ax = axis(
        cx.attrs.int_or("axis", if legacy { 1 } else { -1 })?,
        rank,
        "axis",
    )?;
    let flatten = legacy && ax + 1 != rank;
    imp.add(cx, make(Softmax { axis: ax, flatten }), &[Some(x)])
}

// ---- normalizations ----

/// Whether the parameter `p` can be fused into a norm over the trailing dims `norm`: its dims
/// are `norm`'s with leading ones (a free reshape away).
fn fusable(imp: &Importer, p: Value, norm: &[usize]) -> bool {
    let strip = |d: &[usize]| -> Vec<usize> { d.iter().copied().skip_while(|&v| v == 1).collect() };
    imp.ty(p).dims().is_some_and(|pd| strip(&pd) == strip(norm))
}

/// The parameter `p` shaped as `norm` for fusion, or `None` when it must be applied by a
/// broadcasting op afterwards.
fn fuse_param(
    imp: &mut Importer,
    cx: &NodeCx,
    what: &str,
    p: Option<Value>,
    norm: &[usize],
) -> NResult<(Option<Value>, Option<Value>)> {
    match p {
        None => Ok((None, None)),
        Some(p) if fusable(imp, p, norm) => {
            if imp.ty(p).dims().as_deref() == Some(norm) {
                Ok((Some(p), None))
            } else {
                Ok((Some(reshape(imp, cx, what, p, norm)?), None))
            }
        }
        Some(p) => Ok((None, Some(p))),
    }
}

fn layer_norm(imp: &mut Importer, cx: &NodeCx, rms: bool) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "X")?;
    let xd = imp.static_dims(x, "X")?;
    let ax = axis(cx.attrs.int_or("axis", -1)?, xd.len(), "axis")?;
    let epsilon = cx.attrs.float_or("epsilon", 1e-5)?;
    // stash_type picks the precision of the computation and the type of Mean/InvStdDev; kiln
    // computes in f32 or better whatever it says, and the IR op returns the statistics in X's
    // type, cast below when stash_type names another.
    let stash = match cx.attrs.int_or("stash_type", 1)? {
        1 => DType::F32,
        11 => DType::F64,
        16 => DType::BF16,
        10 => DType::F16,
        t => return unsupported(format!("stash_type {t} is not supported")),
    };
    let dt = imp.ty(x).dtype;
    let scale = imp.req(cx, 1, "Scale")?;
    same_dtype(imp, x, scale, "Scale")?;
    let bias = if rms { None } else { imp.input(cx, 2) };
    if let Some(b) = bias {
        same_dtype(imp, x, b, "B")?;
    }
    let norm = &xd[ax..];
    let (fs, ls) = fuse_param(imp, cx, "scale", Some(scale), norm)?;
    let (fb, lb) = fuse_param(imp, cx, "bias", bias, norm)?;
    // The bias can only be fused when the scale is.
    let (fb, lb) = if fs.is_none() && bias.is_some() {
        (None, bias)
    } else {
        (fb, lb)
    };
    let ln = LayerNorm { axis: ax, epsilon };
    let op = if rms {
        Op::RmsNorm(ln)
    } else {
        Op::LayerNorm(ln)
    };
    if ls.is_none() && lb.is_none() && (rms || stash == dt) {
        return imp.add(cx, op, &[Some(x), fs, fb]);
    }
    // Scale or bias broadcast across the rows too: normalize, then apply them with numpy
    // broadcasting. The statistics outputs come from the normalizing node.
    let n = imp.add_aux(cx, "norm", op, &[Some(x), fs, fb])?;
    let mut y = n;
    if let Some(s) = ls {
        y = binary(imp, cx, "scale", BinaryOp::Mul, y, s)?;
    }
    if let Some(b) = lb {
        y = binary(imp, cx, "bias", BinaryOp::Add, y, b)?;
    }
    let mut out = vec![y];
    if !rms {
        for (slot, what) in [(1, "mean"), (2, "inv_std_dev")] {
            let v = Value { slot, ..n };
            out.push(if stash == dt {
                v
            } else {
                let to = kiln_ir::ops::Cast { to: stash };
                imp.add_aux(cx, what, Op::Cast(to), &[Some(v)])?
            });
        }
    }
    Ok(out)
}

/// `y * scale + bias` with scale and bias `[C]` applied along axis 1 of a rank-`rank` y.
fn channel_affine(
    imp: &mut Importer,
    cx: &NodeCx,
    y: Value,
    scale: Value,
    bias: Value,
    rank: usize,
    last: bool,
) -> NResult<Vec<Value>> {
    let c = imp.static_dims(scale, "scale")?;
    let mut dims = c.clone();
    dims.extend(std::iter::repeat_n(1, rank - 2));
    let s = reshape(imp, cx, "scale_c", scale, &dims)?;
    let b = reshape(imp, cx, "bias_c", bias, &dims)?;
    let m = binary(imp, cx, "mul", BinaryOp::Mul, y, s)?;
    if last {
        imp.add(cx, Op::Binary(BinaryOp::Add), &[Some(m), Some(b)])
    } else {
        Ok(vec![binary(imp, cx, "add", BinaryOp::Add, m, b)?])
    }
}

fn instance_norm(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "input")?;
    let scale = imp.req(cx, 1, "scale")?;
    let bias = imp.req(cx, 2, "B")?;
    let xd = imp.static_dims(x, "input")?;
    if xd.len() < 3 {
        return invalid(format!("input must be N x C x D1 x ..., got {}", imp.ty(x)));
    }
    for (p, what) in [(scale, "scale"), (bias, "B")] {
        same_dtype(imp, x, p, what)?;
        if imp.static_dims(p, what)? != [xd[1]] {
            return invalid(format!("{what} must be [{}], got {}", xd[1], imp.ty(p)));
        }
    }
    let epsilon = cx.attrs.float_or("epsilon", 1e-5)?;
    let n = imp.add_aux(
        cx,
        "norm",
        Op::LayerNorm(LayerNorm { axis: 2, epsilon }),
        &[Some(x)],
    )?;
    channel_affine(imp, cx, n, scale, bias, xd.len(), true)
}

fn group_norm(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "X")?;
    let scale = imp.req(cx, 1, "scale")?;
    let bias = imp.req(cx, 2, "bias")?;
    let xd = imp.static_dims(x, "X")?;
    if xd.len() < 2 {
        return invalid(format!("X must be N x C x ..., got {}", imp.ty(x)));
    }
    let Some(g) = cx.attrs.int("num_groups")? else {
        return invalid("attribute `num_groups` is required");
    };
    let c = xd[1];
    if g <= 0 || c % g as usize != 0 {
        return invalid(format!("num_groups {g} must divide the {c} channels"));
    }
    let g = g as usize;
    // Opset 18 had one scale and bias per group, opset 21 one per channel.
    let per = if cx.opset < 21 { g } else { c };
    for (p, what) in [(scale, "scale"), (bias, "bias")] {
        same_dtype(imp, x, p, what)?;
        if imp.static_dims(p, what)? != [per] {
            return invalid(format!("{what} must be [{per}], got {}", imp.ty(p)));
        }
    }
    let epsilon = cx.attrs.float_or("epsilon", 1e-5)?;
    let rest: usize = xd[1..].iter().product::<usize>() / g;
    let xg = reshape(imp, cx, "grouped", x, &[xd[0], g, rest])?;
    let n = imp.add_aux(
        cx,
        "norm",
        Op::LayerNorm(LayerNorm { axis: 2, epsilon }),
        &[Some(xg)],
    )?;
    if per == g {
        let y = channel_affine(imp, cx, n, scale, bias, 3, false)?[0];
        let op = Op::Reshape(Reshape {
            shape: xd.iter().map(|&d| d as i64).collect(),
            allowzero: true,
        });
        return imp.add(cx, op, &[Some(y)]);
    }
    let y = reshape(imp, cx, "ungrouped", n, &xd)?;
    channel_affine(imp, cx, y, scale, bias, xd.len(), true)
}

/// `(x - mean) / (sqrt(mean((x - mean)^2)) + 1e-9)` over `axes` (the ONNX function body's
/// epsilon, added to the deviation).
fn mvn(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "X")?;
    let rank = imp.ty(x).rank();
    let dt = imp.ty(x).dtype;
    let list = cx
        .attrs
        .ints("axes")?
        .map(<[i64]>::to_vec)
        .unwrap_or_else(|| vec![0, 2, 3]);
    let mut axes = list
        .iter()
        .map(|&a| axis(a, rank, "axis"))
        .collect::<NResult<Vec<_>>>()?;
    axes.sort_unstable();
    axes.dedup();
    let mean_op = Op::Reduce(Reduce {
        kind: ReduceKind::Mean,
        axes,
        keepdims: true,
    });
    let mean = imp.add_aux(cx, "mean", mean_op.clone(), &[Some(x)])?;
    let d = binary(imp, cx, "centered", BinaryOp::Sub, x, mean)?;
    let sq = binary(imp, cx, "square", BinaryOp::Mul, d, d)?;
    let var = imp.add_aux(cx, "var", mean_op, &[Some(sq)])?;
    let sd = imp.add_aux(cx, "std", Op::Unary(UnaryOp::Sqrt), &[Some(var)])?;
    let eps = scalar(imp, cx, "epsilon", dt, 1e-9)?;
    let den = binary(imp, cx, "den", BinaryOp::Add, sd, eps)?;
    imp.add(cx, Op::Binary(BinaryOp::Div), &[Some(d), Some(den)])
}

/// `x / norm` with the L1 or L2 norm along `axis`; a zero norm gives 0 (as the ONNX reference):
/// the norm is raised to the smallest positive subnormal, which only changes a zero norm, and
/// then every element of that group is 0.
fn lp_norm(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "input")?;
    let rank = imp.ty(x).rank();
    let dt = imp.ty(x).dtype;
    let ax = axis(cx.attrs.int_or("axis", -1)?, rank, "axis")?;
    let kind = match cx.attrs.int_or("p", 2)? {
        1 => ReduceKind::L1,
        2 => ReduceKind::L2,
        p => return invalid(format!("p must be 1 or 2, got {p}")),
    };
    let tiny = match dt {
        DType::F32 => f32::from_bits(1) as f64,
        DType::F64 => f64::from_bits(1),
        DType::F16 => (2.0f64).powi(-24),
        DType::BF16 => (2.0f64).powi(-133),
        d => return unsupported(format!("LpNormalization on {d}")),
    };
    let norm = imp.add_aux(
        cx,
        "norm",
        Op::Reduce(Reduce {
            kind,
            axes: vec![ax],
            keepdims: true,
        }),
        &[Some(x)],
    )?;
    let t = scalar(imp, cx, "tiny", dt, tiny)?;
    let safe = binary(imp, cx, "safe_norm", BinaryOp::Max, norm, t)?;
    imp.add(cx, Op::Binary(BinaryOp::Div), &[Some(x), Some(safe)])
}

fn lrn(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "X")?;
    let Some(size) = cx.attrs.int("size")? else {
        return invalid("attribute `size` is required");
    };
    if !(1..=1 << 20).contains(&size) {
        return invalid(format!("size {size} must be positive"));
    }
    let op = Lrn {
        size: size as usize,
        alpha: cx.attrs.float_or("alpha", 1e-4)?,
        beta: cx.attrs.float_or("beta", 0.75)?,
        bias: cx.attrs.float_or("bias", 1.0)?,
    };
    imp.add(cx, Op::Lrn(op), &[Some(x)])
}

/// BatchNormalization with `training_mode = 1`: normalize with the batch statistics (population
/// variance) and return the updated running statistics
/// `running = input * momentum + batch * (1 - momentum)`.
pub(crate) fn batch_norm_training(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let names = ["X", "scale", "B", "input_mean", "input_var"];
    let ins = names
        .iter()
        .enumerate()
        .map(|(i, n)| imp.req(cx, i, n))
        .collect::<NResult<Vec<_>>>()?;
    let x = ins[0];
    let xd = imp.static_dims(x, "X")?;
    if xd.len() < 2 {
        return invalid(format!("X must be N x C x ..., got {}", imp.ty(x)));
    }
    let dt = imp.ty(x).dtype;
    let c = xd[1];
    let epsilon = cx.attrs.float_or("epsilon", 1e-5)?;
    let momentum = cx.attrs.float_or("momentum", 0.9)? as f64;
    let axes: Vec<usize> = (0..xd.len()).filter(|&a| a != 1).collect();
    let mean_op = Op::Reduce(Reduce {
        kind: ReduceKind::Mean,
        axes,
        keepdims: true,
    });
    let mean = imp.add_aux(cx, "batch_mean", mean_op.clone(), &[Some(x)])?;
    let d = binary(imp, cx, "centered", BinaryOp::Sub, x, mean)?;
    let sq = binary(imp, cx, "square", BinaryOp::Mul, d, d)?;
    let var = imp.add_aux(cx, "batch_var", mean_op, &[Some(sq)])?;
    let mean_c = reshape(imp, cx, "batch_mean_c", mean, &[c])?;
    let var_c = reshape(imp, cx, "batch_var_c", var, &[c])?;
    let y = imp.add_aux(
        cx,
        "normalize",
        Op::BatchNorm(BatchNorm { epsilon }),
        &[
            Some(x),
            Some(ins[1]),
            Some(ins[2]),
            Some(mean_c),
            Some(var_c),
        ],
    )?;
    let m = scalar(imp, cx, "momentum", dt, momentum)?;
    let om = scalar(imp, cx, "one_minus_momentum", dt, 1.0 - momentum)?;
    let mut out = vec![y];
    for (k, (running, batch)) in [(ins[3], mean_c), (ins[4], var_c)].into_iter().enumerate() {
        let a = binary(
            imp,
            cx,
            &format!("running{k}_old"),
            BinaryOp::Mul,
            running,
            m,
        )?;
        let b = binary(
            imp,
            cx,
            &format!("running{k}_new"),
            BinaryOp::Mul,
            batch,
            om,
        )?;
        out.push(binary(
            imp,
            cx,
            &format!("running{k}"),
            BinaryOp::Add,
            a,
            b,
        )?);
    }
    Ok(out)
}

// ---- transformer blocks ----

/// `Swish_alpha(A) * B = A * sigmoid(alpha * A) * B`.
fn swiglu(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let a = imp.req(cx, 0, "A")?;
    let b = imp.req(cx, 1, "B")?;
    if imp.ty(a) != imp.ty(b) {
        return invalid(format!(
            "A and B must have the same type and shape, got {} and {}",
            imp.ty(a),
            imp.ty(b)
        ));
    }
    let alpha = cx.attrs.float_or("alpha", 1.0)?;
    let dt = imp.ty(a).dtype;
    let gate_in = if alpha == 1.0 {
        a
    } else {
        let k = scalar(imp, cx, "alpha", dt, alpha as f64)?;
        binary(imp, cx, "scaled", BinaryOp::Mul, a, k)?
    };
    let sg = imp.add_aux(cx, "sigmoid", Op::Unary(UnaryOp::Sigmoid), &[Some(gate_in)])?;
    let sw = binary(imp, cx, "swish", BinaryOp::Mul, a, sg)?;
    imp.add(cx, Op::Binary(BinaryOp::Mul), &[Some(sw), Some(b)])
}

fn rotary(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "X")?;
    let cos = imp.req(cx, 1, "cos_cache")?;
    let sin = imp.req(cx, 2, "sin_cache")?;
    let pos = imp.input(cx, 3);
    let nonneg = |name: &str| -> NResult<usize> {
        let v = cx.attrs.int_or(name, 0)?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v <= 1 << 24)
            .ok_or_else(|| NodeError::Invalid(format!("`{name}` {v} must be non-negative")))
    };
    let op = Rotary {
        interleaved: cx.attrs.flag("interleaved", false)?,
        rotary_dim: nonneg("rotary_embedding_dim")?,
        num_heads: nonneg("num_heads")?,
    };
    imp.add(cx, Op::Rotary(op), &[Some(x), Some(cos), Some(sin), pos])
}

/// A 3-D `[B, S, H * D]` operand viewed as `[B, H, S, D]` (a reshape and a transpose).
fn split_heads(
    imp: &mut Importer,
    cx: &NodeCx,
    what: &str,
    t: Value,
    heads: usize,
) -> NResult<Value> {
    let d = imp.static_dims(t, what)?;
    if heads == 0 || d[2] % heads != 0 {
        return invalid(format!(
            "{what} hidden size {} is not a multiple of {heads} heads",
            d[2]
        ));
    }
    let r = reshape(
        imp,
        cx,
        &format!("{what}_heads"),
        t,
        &[d[0], d[1], heads, d[2] / heads],
    )?;
    imp.add_aux(
        cx,
        &format!("{what}_bhsd"),
        Op::Transpose(Transpose {
            perm: vec![0, 2, 1, 3],
        }),
        &[Some(r)],
    )
}

fn attention(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let q = imp.req(cx, 0, "Q")?;
    let k = imp.req(cx, 1, "K")?;
    let v = imp.req(cx, 2, "V")?;
    let mask = imp.input(cx, 3);
    let past_k = imp.input(cx, 4);
    let past_v = imp.input(cx, 5);
    let nonpad = imp.input(cx, 6);
    if past_k.is_some() != past_v.is_some() {
        return invalid("past_key and past_value must be given together");
    }
    if nonpad.is_some() && past_k.is_some() {
        return invalid("nonpad_kv_seqlen cannot be combined with past_key/past_value");
    }
    let rank = imp.ty(q).rank();
    let heads = |name: &str| -> NResult<Option<usize>> {
        cx.attrs
            .int(name)?
            .map(|h| {
                usize::try_from(h)
                    .ok()
                    .filter(|&h| h > 0)
                    .ok_or_else(|| NodeError::Invalid(format!("`{name}` {h} must be positive")))
            })
            .transpose()
    };
    let (q4, k4, v4) = match rank {
        3 => {
            let (Some(hq), Some(hkv)) = (heads("q_num_heads")?, heads("kv_num_heads")?) else {
                return invalid("3-D inputs need `q_num_heads` and `kv_num_heads`");
            };
            (
                split_heads(imp, cx, "Q", q, hq)?,
                split_heads(imp, cx, "K", k, hkv)?,
                split_heads(imp, cx, "V", v, hkv)?,
            )
        }
        4 => (q, k, v),
        _ => return invalid(format!("Q must be 3-D or 4-D, got {}", imp.ty(q))),
    };
    let qd = imp.static_dims(q4, "Q")?;
    let (mut kt, mut vt, mut past_len) = (k4, v4, 0);
    if let (Some(pk), Some(pv)) = (past_k, past_v) {
        past_len = imp
            .static_dims(pk, "past_key")?
            .get(2)
            .copied()
            .unwrap_or(0);
        let cat = Op::Concat(Concat { axis: 2 });
        kt = imp.add_aux(cx, "present_key", cat.clone(), &[Some(pk), Some(k4)])?;
        vt = imp.add_aux(cx, "present_value", cat, &[Some(pv), Some(v4)])?;
    }
    let scale = match cx.attrs.float("scale")? {
        Some(s) => s,
        None => (1.0 / (qd[3] as f64).sqrt()) as f32,
    };
    let window = |name: &str| -> NResult<i64> {
        let w = cx.attrs.int_or(name, -1)?;
        if w < -1 {
            return invalid(format!("`{name}` {w} must be -1 or non-negative"));
        }
        Ok(w)
    };
    let mode = cx.attrs.int_or("qk_matmul_output_mode", 0)?;
    if !(0..=3).contains(&mode) {
        return invalid(format!("qk_matmul_output_mode {mode} must be 0..=3"));
    }
    let wants_qk = cx.node.output.get(3).is_some_and(|o| !o.is_empty());
    let op = Attention {
        scale,
        causal: cx.attrs.flag("is_causal", false)?,
        softcap: cx.attrs.float_or("softcap", 0.0)?.max(0.0),
        past_len,
        left_window: window("left_window_size")?,
        right_window: window("right_window_size")?,
        qk_mode: wants_qk.then_some(mode as u8),
        // softmax_precision names an ONNX float type: FLOAT (1) and DOUBLE (11) widen the softmax
        // of half inputs; absent (or the input's own type) keeps it narrow.
        wide_softmax: matches!(cx.attrs.int("softmax_precision")?, Some(1 | 11)),
    };
    let y4 = imp.add_aux(
        cx,
        "attention",
        Op::Attention(op),
        &[Some(q4), Some(kt), Some(vt), mask, nonpad],
    )?;
    let mut y = y4;
    if rank == 3 {
        let yd = imp.static_dims(y, "Y")?;
        let t = imp.add_aux(
            cx,
            "Y_bshd",
            Op::Transpose(Transpose {
                perm: vec![0, 2, 1, 3],
            }),
            &[Some(y)],
        )?;
        y = reshape(imp, cx, "Y", t, &[yd[0], yd[2], yd[1] * yd[3]])?;
    }
    let mut result = vec![y, kt, vt];
    if wants_qk {
        result.push(Value { slot: 1, ..y4 });
    }
    Ok(result)
}
