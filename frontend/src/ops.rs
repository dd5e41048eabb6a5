//! ONNX ops (default domain) -> IR ops, dispatched on the opset version in force.
//!
//! Each mapping reads attributes with their ONNX names and defaults, normalizes negative axes, turns
//! parameter inputs that must be compile-time constants (Reshape's shape, Slice's bounds, ...) into
//! attributes through the importer's on-demand constant evaluation, and adds the IR node, whose own
//! inference checks shapes. To map a new op: add a row to [`spec`] and an arm to [`map_node`].

use crate::attrs::{invalid, unsupported, NResult, NodeError};
use crate::import::{Importer, NodeCx};
use crate::tensor;
use kiln_ir::ops::{
    resolve_auto_pad, AutoPad, BatchNorm, BinaryOp, Cast, Concat, Conv, Flatten, Gather, Gemm,
    GlobalPool, Pool, PoolKind, Reshape, ShapeOf, Slice, Softmax, Squeeze, Transpose, UnaryOp,
    Unsqueeze,
};
use kiln_ir::{DType, Dim, Op, Tensor, Value};

/// What the importer checks about a node before mapping it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpSpec {
    /// Attributes kiln understands (legacy ones it ignores included). Any other is unsupported.
    pub attrs: &'static [&'static str],
    /// Inputs ONNX allows at most (`usize::MAX` for variadic ops).
    pub max_inputs: usize,
    /// Outputs ONNX defines.
    pub onnx_outputs: usize,
    /// Outputs kiln produces; reading a later one is unsupported.
    pub kiln_outputs: usize,
}

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

const UNARY_ATTRS: &[&str] = &["consumed_inputs"];
const BINARY_ATTRS: &[&str] = &["broadcast", "axis", "consumed_inputs"];
const POOL_ATTRS: &[&str] = &[
    "auto_pad",
    "ceil_mode",
    "count_include_pad",
    "dilations",
    "kernel_shape",
    "pads",
    "storage_order",
    "strides",
];
const VARIADIC: usize = usize::MAX;

/// The ops kiln maps, with the attributes and arity it accepts. `None`: no mapping.
pub(crate) fn spec(op_type: &str) -> Option<OpSpec> {
    if let Some(sp) = crate::ops_elementwise::spec(op_type) {
        return Some(sp);
    }
    if let Some(sp) = crate::ops_norm::spec(op_type) {
        return Some(sp);
    }
    if let Some(sp) = crate::ops_movement::spec(op_type) {
        return Some(sp);
    }
    Some(match op_type {
        "Identity" => s(&[], 1, 1, 1),
        "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Sqrt" | "Neg" | "Abs" | "Reciprocal"
        | "Floor" | "Ceil" => s(UNARY_ATTRS, 1, 1, 1),
        "Erf" => s(&[], 1, 1, 1),
        "LeakyRelu" => s(&["alpha", "consumed_inputs"], 1, 1, 1),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" => s(BINARY_ATTRS, 2, 1, 1),
        "Max" | "Min" | "Sum" => s(UNARY_ATTRS, VARIADIC, 1, 1),
        "Softmax" => s(&["axis"], 1, 1, 1),
        "Gemm" => s(&["alpha", "beta", "transA", "transB", "broadcast"], 3, 1, 1),
        "MatMul" => s(&[], 2, 1, 1),
        "Conv" => s(
            &[
                "auto_pad",
                "dilations",
                "group",
                "kernel_shape",
                "pads",
                "strides",
            ],
            3,
            1,
            1,
        ),
        "MaxPool" => s(POOL_ATTRS, 1, 2, 2),
        "AveragePool" => s(POOL_ATTRS, 1, 1, 1),
        "GlobalAveragePool" | "GlobalMaxPool" => s(&[], 1, 1, 1),
        "BatchNormalization" => s(
            &[
                "epsilon",
                "momentum",
                "spatial",
                "is_test",
                "consumed_inputs",
                "training_mode",
            ],
            5,
            5,
            1,
        ),
        "Flatten" => s(&["axis"], 1, 1, 1),
        "Reshape" => s(&["shape", "allowzero", "consumed_inputs"], 2, 1, 1),
        "Transpose" => s(&["perm"], 1, 1, 1),
        "Concat" => s(&["axis"], VARIADIC, 1, 1),
        "Constant" => s(
            &[
                "value",
                "value_float",
                "value_floats",
                "value_int",
                "value_ints",
                "value_string",
                "value_strings",
                "sparse_value",
            ],
            0,
            1,
            1,
        ),
        "ConstantOfShape" => s(&["value"], 1, 1, 1),
        "Shape" => s(&["start", "end"], 1, 1, 1),
        "Gather" => s(&["axis"], 2, 1, 1),
        "Unsqueeze" | "Squeeze" => s(&["axes"], 2, 1, 1),
        "Slice" => s(&["starts", "ends", "axes"], 5, 1, 1),
        "Cast" => s(&["to", "saturate"], 1, 1, 1),
        _ => return None,
    })
}

/// Why reading output `k` of `op_type` is unsupported.
fn extra_output_reason(op_type: &str, k: usize) -> String {
    match op_type {
        "MaxPool" => "the `Indices` output is not supported".into(),
        "BatchNormalization" => {
            format!("output {k} is a training statistic; only inference (output 0) is supported")
        }
        _ => format!("output {k} is not supported"),
    }
}

/// Checks what can be checked without the graph: a mapping exists, attributes are known and unique,
/// arity, and no unsupported output is read. `used[k]` says whether output `k` is read.
pub(crate) fn check_node(cx: &NodeCx, used: &[bool]) -> NResult<()> {
    let Some(sp) = spec(cx.op_type) else {
        return unsupported(format!(
            "kiln has no mapping for the ONNX op `{}` yet",
            cx.op_type
        ));
    };
    if let Some(since) = crate::since::since_version(cx.op_type).filter(|&v| cx.opset < v) {
        return invalid(format!(
            "{} does not exist before opset {since}, but the model imports opset {} of the default domain",
            cx.op_type, cx.opset
        ));
    }
    if let Some(d) = cx.attrs.duplicate() {
        return invalid(format!("attribute `{d}` is given twice"));
    }
    if let Some(a) = cx.attrs.reference() {
        return unsupported(format!(
            "attribute `{}` refers to a function attribute; functions are not supported",
            a.name()
        ));
    }
    if let Some(a) = cx.attrs.names().find(|a| !sp.attrs.contains(a)) {
        return unsupported(format!(
            "attribute `{a}` of {} is not supported",
            cx.op_type
        ));
    }
    if cx.node.input.len() > sp.max_inputs {
        return invalid(format!(
            "{} takes at most {} inputs, the node has {}",
            cx.op_type,
            sp.max_inputs,
            cx.node.input.len()
        ));
    }
    if cx.node.output.len() > sp.onnx_outputs {
        return invalid(format!(
            "{} has at most {} outputs, the node lists {}",
            cx.op_type,
            sp.onnx_outputs,
            cx.node.output.len()
        ));
    }
    // BatchNormalization in training mode also returns the running statistics.
    let kiln_outputs = if cx.op_type == "BatchNormalization"
        && cx.opset >= 14
        && cx.attrs.flag("training_mode", false)?
    {
        3
    } else {
        sp.kiln_outputs
    };
    if let Some(k) = (kiln_outputs..used.len()).find(|&k| used[k]) {
        return unsupported(extra_output_reason(cx.op_type, k));
    }
    Ok(())
}

/// Maps one default-domain node; returns the IR values of its outputs, in ONNX order.
pub(crate) fn map_node(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    if crate::ops_elementwise::spec(cx.op_type).is_some() {
        return crate::ops_elementwise::map(imp, cx);
    }
    if crate::ops_norm::spec(cx.op_type).is_some() {
        return crate::ops_norm::map(imp, cx);
    }
    if crate::ops_movement::spec(cx.op_type).is_some() {
        return crate::ops_movement::map(imp, cx);
    }
    match cx.op_type {
        "Identity" => {
            let x = imp.req(cx, 0, "input")?;
            imp.add(cx, Op::Identity, &[Some(x)])
        }
        "Relu" => unary(imp, cx, UnaryOp::Relu),
        "Sigmoid" => unary(imp, cx, UnaryOp::Sigmoid),
        "Tanh" => unary(imp, cx, UnaryOp::Tanh),
        "Exp" => unary(imp, cx, UnaryOp::Exp),
        "Log" => unary(imp, cx, UnaryOp::Log),
        "Sqrt" => unary(imp, cx, UnaryOp::Sqrt),
        "Neg" => unary(imp, cx, UnaryOp::Neg),
        "Abs" => unary(imp, cx, UnaryOp::Abs),
        "Reciprocal" => unary(imp, cx, UnaryOp::Reciprocal),
        "Erf" => unary(imp, cx, UnaryOp::Erf),
        "Floor" => unary(imp, cx, UnaryOp::Floor),
        "Ceil" => unary(imp, cx, UnaryOp::Ceil),
        "LeakyRelu" => {
            let alpha = cx.attrs.float_or("alpha", 0.01)?;
            unary(imp, cx, UnaryOp::LeakyRelu { alpha })
        }
        "Add" => binary(imp, cx, BinaryOp::Add),
        "Sub" => binary(imp, cx, BinaryOp::Sub),
        "Mul" => binary(imp, cx, BinaryOp::Mul),
        "Div" => binary(imp, cx, BinaryOp::Div),
        "Pow" => binary(imp, cx, BinaryOp::Pow),
        "Max" => variadic(imp, cx, BinaryOp::Max),
        "Min" => variadic(imp, cx, BinaryOp::Min),
        "Sum" => variadic(imp, cx, BinaryOp::Add),
        "Softmax" => softmax(imp, cx),
        "Gemm" => gemm(imp, cx),
        "MatMul" => {
            let a = imp.req(cx, 0, "A")?;
            let b = imp.req(cx, 1, "B")?;
            imp.add(cx, Op::MatMul, &[Some(a), Some(b)])
        }
        "Conv" => conv(imp, cx),
        "MaxPool" => pool(imp, cx, PoolKind::Max),
        "AveragePool" => pool(imp, cx, PoolKind::Avg),
        "GlobalAveragePool" => global_pool(imp, cx, PoolKind::Avg),
        "GlobalMaxPool" => global_pool(imp, cx, PoolKind::Max),
        "BatchNormalization" => batch_norm(imp, cx),
        "Flatten" => flatten(imp, cx),
        "Reshape" => reshape(imp, cx),
        "Transpose" => transpose(imp, cx),
        "Concat" => concat(imp, cx),
        "Constant" => constant(imp, cx),
        "ConstantOfShape" => constant_of_shape(imp, cx),
        "Shape" => {
            let x = imp.req(cx, 0, "data")?;
            let start = cx.attrs.int_or("start", 0)?;
            let end = cx.attrs.int("end")?;
            imp.add(cx, Op::Shape(ShapeOf { start, end }), &[Some(x)])
        }
        "Gather" => gather(imp, cx),
        "Unsqueeze" => unsqueeze(imp, cx),
        "Squeeze" => squeeze(imp, cx),
        "Slice" => slice(imp, cx),
        "Cast" => cast(imp, cx),
        other => unsupported(format!("kiln has no mapping for the ONNX op `{other}` yet")),
    }
}

// ---- helpers ----

/// Normalizes `axis` against `rank` (valid range `-rank..rank`).
pub(crate) fn axis(a: i64, rank: usize, what: &str) -> NResult<usize> {
    let r = rank as i64;
    if a < -r || a >= r {
        return invalid(format!("{what} {a} is out of range for rank {rank}"));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

/// Normalizes a list of axes against `rank`, sorted, refusing duplicates.
fn axes_sorted(list: &[i64], rank: usize, what: &str) -> NResult<Vec<usize>> {
    let mut out = list
        .iter()
        .map(|&a| axis(a, rank, what))
        .collect::<NResult<Vec<_>>>()?;
    out.sort_unstable();
    if out.windows(2).any(|w| w[0] == w[1]) {
        return invalid(format!("{what}s {list:?} repeat an axis"));
    }
    Ok(out)
}

/// Window attributes are bounded so the IR's size arithmetic cannot overflow.
const MAX_WINDOW_ATTR: i64 = 1 << 31;

/// An INTS attribute of non-negative (or, with `positive`, strictly positive) window sizes.
pub(crate) fn window_attr(cx: &NodeCx, name: &str, positive: bool) -> NResult<Option<Vec<usize>>> {
    let Some(v) = cx.attrs.ints(name)? else {
        return Ok(None);
    };
    let lo = i64::from(positive);
    v.iter()
        .map(|&x| {
            if x < lo || x > MAX_WINDOW_ATTR {
                invalid(format!(
                    "attribute `{name}` {v:?} must hold {} values up to {MAX_WINDOW_ATTR}",
                    if positive { "positive" } else { "non-negative" }
                ))
            } else {
                Ok(x as usize)
            }
        })
        .collect::<NResult<Vec<_>>>()
        .map(Some)
}

/// A constant parameter input as i64s; it must be an integer tensor of rank 0 or 1.
pub(crate) fn int_list(t: &Tensor, what: &str) -> NResult<Vec<i64>> {
    if !t.dtype().is_int() {
        return invalid(format!("{what} must be an integer tensor, got {}", t.ty()));
    }
    if t.shape().len() > 1 {
        return invalid(format!("{what} must be 1-D, got {}", t.ty()));
    }
    Ok(t.to_i64_vec())
}

fn all_inputs(imp: &Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    (0..imp.num_inputs(cx))
        .map(|i| imp.req(cx, i, "input"))
        .collect()
}

// ---- mappings ----

fn unary(imp: &mut Importer, cx: &NodeCx, u: UnaryOp) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "X")?;
    imp.add(cx, Op::Unary(u), &[Some(x)])
}

fn binary(imp: &mut Importer, cx: &NodeCx, op: BinaryOp) -> NResult<Vec<Value>> {
    let a = imp.req(cx, 0, "A")?;
    let b = imp.req(cx, 1, "B")?;
    if cx.opset < 7 {
        // Before opset 7, broadcasting was opt-in and `axis` aligned B anywhere inside A.
        let (ra, rb) = (imp.ty(a).rank(), imp.ty(b).rank());
        if cx.attrs.flag("broadcast", false)? {
            if let Some(ax) = cx.attrs.int("axis")? {
                let ax = axis(ax, ra, "axis")?;
                if ax + rb != ra {
                    return unsupported(format!(
                        "legacy broadcasting of B (rank {rb}) at axis {ax} of A (rank {ra}) is not supported"
                    ));
                }
            }
        } else if imp.ty(a).shape != imp.ty(b).shape {
            return invalid(format!(
                "without `broadcast` the inputs must have equal shapes, got {} and {}",
                imp.ty(a),
                imp.ty(b)
            ));
        }
    }
    imp.add(cx, Op::Binary(op), &[Some(a), Some(b)])
}

/// Max, Min and Sum of any number of inputs: a left-to-right chain of binary ops.
fn variadic(imp: &mut Importer, cx: &NodeCx, op: BinaryOp) -> NResult<Vec<Value>> {
    let ins = all_inputs(imp, cx)?;
    match ins.as_slice() {
        [] => invalid(format!("{} needs at least one input", cx.op_type)),
        [x] => imp.add(cx, Op::Identity, &[Some(*x)]),
        [first, rest @ ..] => {
            let mut acc = *first;
            for (k, &x) in rest.iter().enumerate() {
                if k + 1 == rest.len() {
                    return imp.add(cx, Op::Binary(op), &[Some(acc), Some(x)]);
                }
                acc = imp.add_aux(cx, &k.to_string(), Op::Binary(op), &[Some(acc), Some(x)])?;
            }
            unreachable!("the loop returns on the last input")
        }
    }
}

fn softmax(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "input")?;
    let rank = imp.ty(x).rank();
    let legacy = cx.opset < 13;
    let ax = axis(
        cx.attrs.int_or("axis", if legacy { 1 } else { -1 })?,
        rank,
        "axis",
    )?;
    // Before opset 13 Softmax coerced the input to 2-D at `axis`; on the last axis both agree.
    let flatten = legacy && ax + 1 != rank;
    imp.add(cx, Op::Softmax(Softmax { axis: ax, flatten }), &[Some(x)])
}

fn gemm(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let a = imp.req(cx, 0, "A")?;
    let b = imp.req(cx, 1, "B")?;
    let c = imp.input(cx, 2);
    let g = Gemm {
        alpha: cx.attrs.float_or("alpha", 1.0)?,
        beta: cx.attrs.float_or("beta", 1.0)?,
        trans_a: cx.attrs.flag("transA", false)?,
        trans_b: cx.attrs.flag("transB", false)?,
        post: vec![],
    };
    imp.add(cx, Op::Gemm(g), &[Some(a), Some(b), c])
}

pub(crate) fn auto_pad(cx: &NodeCx) -> NResult<AutoPad> {
    Ok(match cx.attrs.string("auto_pad")?.unwrap_or("NOTSET") {
        "NOTSET" | "" => AutoPad::NotSet,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        "VALID" => AutoPad::Valid,
        other => return invalid(format!("unknown auto_pad {other:?}")),
    })
}

/// Window geometry shared by Conv and the pools: kernel, strides, dilations and explicit pads, with
/// `auto_pad` resolved against the static spatial input dims.
pub(crate) struct Window {
    pub(crate) kernel: Vec<usize>,
    pub(crate) strides: Vec<usize>,
    pub(crate) dilations: Vec<usize>,
    pub(crate) pads: Vec<usize>,
}

pub(crate) fn window(cx: &NodeCx, spatial: &[usize], kernel: Vec<usize>) -> NResult<Window> {
    let r = spatial.len();
    let strides = window_attr(cx, "strides", true)?.unwrap_or_else(|| vec![1; r]);
    let dilations = window_attr(cx, "dilations", true)?.unwrap_or_else(|| vec![1; r]);
    let pads = window_attr(cx, "pads", false)?.unwrap_or_else(|| vec![0; 2 * r]);
    if kernel.len() != r || strides.len() != r || dilations.len() != r || pads.len() != 2 * r {
        return invalid(format!(
            "for {r} spatial axes, kernel_shape, strides and dilations need {r} entries and pads {}; got \
             {kernel:?}, {strides:?}, {dilations:?}, {pads:?}",
            2 * r
        ));
    }
    if kernel.contains(&0) {
        return invalid(format!("kernel_shape {kernel:?} must be positive"));
    }
    let mode = auto_pad(cx)?;
    if matches!(mode, AutoPad::SameUpper | AutoPad::SameLower) && spatial.contains(&0) {
        return invalid(format!(
            "auto_pad SAME needs non-empty spatial dims, got {spatial:?}"
        ));
    }
    // With auto_pad set, explicit pads are meaningless; exporters sometimes leave zeros there.
    let pads = resolve_auto_pad(mode, spatial, &kernel, &strides, &dilations, &pads);
    Ok(Window {
        kernel,
        strides,
        dilations,
        pads,
    })
}

fn conv(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "X")?;
    let w = imp.req(cx, 1, "W")?;
    let b = imp.input(cx, 2);
    let xd = imp.static_dims(x, "X")?;
    let wd = imp.static_dims(w, "W")?;
    if xd.len() < 3 {
        return invalid(format!("X must be N x C x D1 x ..., got {}", imp.ty(x)));
    }
    if wd.len() != xd.len() {
        return invalid(format!(
            "W is {} but X is {}: ranks differ",
            imp.ty(w),
            imp.ty(x)
        ));
    }
    let kernel = window_attr(cx, "kernel_shape", true)?.unwrap_or_else(|| wd[2..].to_vec());
    let group = cx.attrs.int_or("group", 1)?;
    if !(1..=MAX_WINDOW_ATTR).contains(&group) {
        return invalid(format!("group {group} must be positive"));
    }
    let win = window(cx, &xd[2..], kernel)?;
    let op = Conv {
        layout: kiln_ir::ops::Layout::Nchw,
        kernel_shape: win.kernel,
        strides: win.strides,
        dilations: win.dilations,
        pads: win.pads,
        group: group as usize,
        post: vec![],
    };
    imp.add(cx, Op::Conv(op), &[Some(x), Some(w), b])
}

fn pool(imp: &mut Importer, cx: &NodeCx, kind: PoolKind) -> NResult<Vec<Value>> {
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
    if kind == PoolKind::Max && cx.attrs.has("count_include_pad") {
        return unsupported("attribute `count_include_pad` of MaxPool is not supported");
    }
    let win = window(cx, &xd[2..], kernel)?;
    let op = Pool {
        layout: kiln_ir::ops::Layout::Nchw,
        kind,
        kernel_shape: win.kernel,
        strides: win.strides,
        pads: win.pads,
        dilations: win.dilations,
        ceil_mode: cx.attrs.flag("ceil_mode", false)?,
        count_include_pad: cx.attrs.flag("count_include_pad", false)?,
    };
    // `storage_order` only affects the Indices output, computed only when the node names it.
    if kind == PoolKind::Max && cx.node.output.get(1).is_some_and(|o| !o.is_empty()) {
        let column_major = cx.attrs.flag("storage_order", false)?;
        let op = kiln_ir::ops::MaxPoolIndices {
            pool: op,
            column_major,
        };
        return imp.add(cx, Op::MaxPoolIndices(op), &[Some(x)]);
    }
    imp.add(cx, Op::Pool(op), &[Some(x)])
}

fn global_pool(imp: &mut Importer, cx: &NodeCx, kind: PoolKind) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "X")?;
    imp.add(
        cx,
        Op::GlobalPool(GlobalPool {
            kind,
            layout: kiln_ir::ops::Layout::Nchw,
        }),
        &[Some(x)],
    )
}

fn batch_norm(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    // Legacy attributes: `is_test` and `consumed_inputs` (before 7 and 6) do not change the
    // inference output, `momentum` only updates running statistics. `spatial = 0` (before 9) uses
    // per-activation statistics, which the IR op does not model.
    if cx.opset < 9 && cx.attrs.int("spatial")? == Some(0) {
        return unsupported("spatial = 0 (per-activation statistics) is not supported");
    }
    if cx.attrs.flag("training_mode", false)? {
        return crate::ops_norm::batch_norm_training(imp, cx);
    }
    let _ = cx.attrs.float("momentum")?;
    let _ = cx.attrs.int("is_test")?;
    let epsilon = cx.attrs.float_or("epsilon", 1e-5)?;
    let names = ["X", "scale", "B", "input_mean", "input_var"];
    let ins = names
        .iter()
        .enumerate()
        .map(|(i, n)| imp.req(cx, i, n).map(Some))
        .collect::<NResult<Vec<_>>>()?;
    imp.add(cx, Op::BatchNorm(BatchNorm { epsilon }), &ins)
}

fn flatten(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "input")?;
    let rank = imp.ty(x).rank();
    let a = cx.attrs.int_or("axis", 1)?;
    let r = rank as i64;
    // Flatten's axis may equal the rank (everything in the first dimension).
    if a < -r || a > r {
        return invalid(format!("axis {a} is out of range for rank {rank}"));
    }
    let a = if a < 0 { a + r } else { a } as usize;
    imp.add(cx, Op::Flatten(Flatten { axis: a }), &[Some(x)])
}

fn reshape(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "data")?;
    let shape = if cx.opset < 5 {
        match cx.attrs.ints("shape")? {
            Some(s) => s.to_vec(),
            None => return invalid("attribute `shape` is required"),
        }
    } else {
        imp.req(cx, 1, "shape")?;
        let t = imp
            .const_input(cx, 1, "`shape`")?
            .ok_or_else(|| NodeError::Invalid("`shape` is missing".into()))?;
        int_list(&t, "`shape`")?
    };
    let allowzero = cx.attrs.flag("allowzero", false)?;
    imp.add(cx, Op::Reshape(Reshape { shape, allowzero }), &[Some(x)])
}

fn transpose(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "data")?;
    let rank = imp.ty(x).rank();
    let perm = match cx.attrs.ints("perm")? {
        None => (0..rank).rev().collect(),
        Some(p) => p
            .iter()
            .map(|&v| {
                usize::try_from(v)
                    .ok()
                    .filter(|&v| v < rank)
                    .ok_or_else(|| {
                        NodeError::Invalid(format!("perm {p:?} is not a permutation of 0..{rank}"))
                    })
            })
            .collect::<NResult<Vec<_>>>()?,
    };
    imp.add(cx, Op::Transpose(Transpose { perm }), &[Some(x)])
}

fn concat(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let ins = all_inputs(imp, cx)?;
    let Some(&first) = ins.first() else {
        return invalid("Concat needs at least one input");
    };
    let a = match cx.attrs.int("axis")? {
        Some(a) => a,
        // Concat-1 defaulted to axis 1; from opset 4 the attribute is required.
        None if cx.opset < 4 => 1,
        None => return invalid("attribute `axis` is required"),
    };
    let a = axis(a, imp.ty(first).rank(), "axis")?;
    let ins: Vec<Option<Value>> = ins.into_iter().map(Some).collect();
    imp.add(cx, Op::Concat(Concat { axis: a }), &ins)
}

fn constant(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let forms = [
        "value",
        "value_float",
        "value_floats",
        "value_int",
        "value_ints",
        "value_string",
        "value_strings",
        "sparse_value",
    ];
    let present: Vec<&str> = forms.into_iter().filter(|f| cx.attrs.has(f)).collect();
    let [form] = present.as_slice() else {
        return invalid(format!(
            "Constant needs exactly one of {}; got {}",
            forms.join(", "),
            if present.is_empty() {
                "none".to_string()
            } else {
                present.join(", ")
            }
        ));
    };
    let t = match *form {
        "value" => {
            let Some(t) = cx.attrs.tensor("value")? else {
                return invalid("attribute `value` holds no tensor");
            };
            imp.decode_tensor(t)?
        }
        "value_float" => Tensor::from_f32(vec![], &[cx.attrs.float_or("value_float", 0.0)?]),
        "value_floats" => {
            let v = cx.attrs.floats("value_floats")?.unwrap_or_default();
            Tensor::from_f32(vec![v.len()], v)
        }
        "value_int" => Tensor::from_i64(DType::I64, vec![], &[cx.attrs.int_or("value_int", 0)?]),
        "value_ints" => {
            let v = cx.attrs.ints("value_ints")?.unwrap_or_default();
            Tensor::from_i64(DType::I64, vec![v.len()], v)
        }
        "value_string" | "value_strings" => {
            return unsupported("string constants are not supported")
        }
        _ => return unsupported("sparse constants are not supported"),
    };
    imp.add_constant(cx, t)
}

/// A constant-shaped fill is a constant: build it now (after the size check) instead of adding an op.
fn constant_of_shape(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    imp.req(cx, 0, "input")?;
    let Some(shape) = imp.const_input(cx, 0, "`input` (the shape)")? else {
        return invalid("input 0 (`input`) is missing");
    };
    let dims = int_list(&shape, "the shape")?;
    let value = match cx.attrs.tensor("value")? {
        Some(t) => imp.decode_tensor(t)?,
        None => Tensor::from_f32(vec![1], &[0.0]),
    };
    if value.len() != 1 {
        return invalid(format!("`value` must hold one element, got {}", value.ty()));
    }
    let count = tensor::checked_numel(&dims).map_err(NodeError::Invalid)?;
    let dtype = value.dtype();
    let bytes = tensor::storage_bytes(count, dtype.bits() as u64)
        .filter(|&b| b <= imp.max_tensor_bytes())
        .ok_or_else(|| {
            NodeError::Invalid(format!(
                "shape {dims:?} of {dtype} is larger than the limit of {} bytes",
                imp.max_tensor_bytes()
            ))
        })?;
    let count = count as usize;
    let data = if dtype.bits() == 4 {
        // Both nibbles of every byte hold the value; an odd count leaves the last high nibble clear.
        let nib = value.bytes()[0] & 0x0f;
        let mut d = vec![nib | (nib << 4); bytes as usize];
        if count % 2 == 1 {
            if let Some(last) = d.last_mut() {
                *last &= 0x0f;
            }
        }
        d
    } else {
        value.bytes().repeat(count)
    };
    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let t =
        Tensor::from_bytes(dtype, shape, data).map_err(|e| NodeError::Invalid(e.to_string()))?;
    imp.add_constant(cx, t)
}

fn gather(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let data = imp.req(cx, 0, "data")?;
    let idx = imp.req(cx, 1, "indices")?;
    let a = axis(cx.attrs.int_or("axis", 0)?, imp.ty(data).rank(), "axis")?;
    imp.add(cx, Op::Gather(Gather { axis: a }), &[Some(data), Some(idx)])
}

/// Axes of Squeeze/Unsqueeze: an attribute before opset 13, a constant input from 13.
fn squeeze_axes(imp: &mut Importer, cx: &NodeCx) -> NResult<Option<Vec<i64>>> {
    if cx.opset < 13 {
        Ok(cx.attrs.ints("axes")?.map(<[i64]>::to_vec))
    } else {
        if cx.attrs.has("axes") {
            return invalid("from opset 13 `axes` is an input, not an attribute");
        }
        imp.const_input(cx, 1, "`axes`")?
            .map(|t| int_list(&t, "`axes`"))
            .transpose()
    }
}

fn unsqueeze(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "data")?;
    let Some(list) = squeeze_axes(imp, cx)? else {
        return invalid("`axes` is required");
    };
    let out_rank = imp.ty(x).rank() + list.len();
    let axes = axes_sorted(&list, out_rank, "axis")?;
    imp.add(cx, Op::Unsqueeze(Unsqueeze { axes }), &[Some(x)])
}

fn squeeze(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "data")?;
    let rank = imp.ty(x).rank();
    let axes = match squeeze_axes(imp, cx)? {
        Some(list) => axes_sorted(&list, rank, "axis")?,
        // No axes: every size-1 dim, which needs the dims to be known.
        None => {
            let ty = imp.ty(x);
            if ty.shape.iter().any(|d| matches!(d, Dim::Sym { .. })) {
                return unsupported(format!("Squeeze without axes on symbolic shape {ty}"));
            }
            ty.shape
                .iter()
                .enumerate()
                .filter(|(_, d)| **d == Dim::Const(1))
                .map(|(i, _)| i)
                .collect()
        }
    };
    imp.add(cx, Op::Squeeze(Squeeze { axes }), &[Some(x)])
}

fn slice(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "data")?;
    let dims = imp.static_dims(x, "data")?;
    let rank = dims.len();
    let (starts, ends, axes, steps) = if cx.opset < 10 {
        let req = |n: &str| -> NResult<Vec<i64>> {
            cx.attrs
                .ints(n)?
                .map(<[i64]>::to_vec)
                .ok_or_else(|| NodeError::Invalid(format!("attribute `{n}` is required")))
        };
        (
            req("starts")?,
            req("ends")?,
            cx.attrs.ints("axes")?.map(<[i64]>::to_vec),
            None,
        )
    } else {
        let mut get = |i: usize, n: &str| -> NResult<Option<Vec<i64>>> {
            imp.const_input(cx, i, &format!("`{n}`"))?
                .map(|t| int_list(&t, &format!("`{n}`")))
                .transpose()
        };
        let starts = get(1, "starts")?;
        let ends = get(2, "ends")?;
        let axes = get(3, "axes")?;
        let steps = get(4, "steps")?;
        let (Some(starts), Some(ends)) = (starts, ends) else {
            return invalid("inputs `starts` and `ends` are required");
        };
        (starts, ends, axes, steps)
    };
    let n = starts.len();
    let axes_list = axes.unwrap_or_else(|| (0..n as i64).collect());
    let mut steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes_list.len() != n || steps.len() != n {
        return invalid(format!(
            "starts, ends, axes and steps must have the same length, got {n}, {}, {} and {}",
            ends.len(),
            axes_list.len(),
            steps.len()
        ));
    }
    let mut axes = Vec::with_capacity(n);
    for &a in &axes_list {
        let a = axis(a, rank, "axis")?;
        if axes.contains(&a) {
            return invalid(format!("axes {axes_list:?} repeat axis {a}"));
        }
        axes.push(a);
    }
    let mut starts = starts;
    let mut ends = ends;
    for i in 0..n {
        if steps[i] == 0 {
            return invalid("a step of 0 is not allowed");
        }
        let d = dims[axes[i]] as i64;
        if d == 0 {
            // Empty axis: the result is empty whatever the bounds; spell it so no clamp range is empty.
            (starts[i], ends[i], steps[i]) = (0, 0, 1);
        } else {
            // A step longer than the axis selects at most the start element; clamping it keeps the
            // result and keeps the IR's size arithmetic far from overflow (steps may be +-2^63).
            steps[i] = steps[i].clamp(-d, d);
        }
    }
    imp.add(
        cx,
        Op::Slice(Slice {
            starts,
            ends,
            axes,
            steps,
        }),
        &[Some(x)],
    )
}

fn cast(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "input")?;
    // Cast-1 spelled the target type as a string ("FLOAT"); later versions use the enum value.
    let code = match cx.attrs.get("to").map(crate::attrs::kind) {
        Some(crate::onnx::attribute_proto::AttributeType::String) => {
            let name = cx.attrs.string("to")?.unwrap_or_default();
            crate::onnx::tensor_proto::DataType::from_str_name(&name.to_ascii_uppercase())
                .map(|d| d as i32)
                .ok_or_else(|| NodeError::Invalid(format!("unknown type name {name:?} in `to`")))?
        }
        Some(_) => {
            let v = cx.attrs.int("to")?.unwrap_or(0);
            i32::try_from(v)
                .map_err(|_| NodeError::Invalid(format!("`to` {v} is not an element type")))?
        }
        None => return invalid("attribute `to` is required"),
    };
    let to = tensor::dtype_from_onnx(code)
        .map_err(|r| NodeError::Unsupported(format!("Cast to {r}")))?;
    imp.add(cx, Op::Cast(Cast { to }), &[Some(x)])
}
