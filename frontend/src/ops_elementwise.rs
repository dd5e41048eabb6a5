//! ONNX elementwise ops -> IR ops: math functions and activations, comparisons and logic, `Mod`,
//! `PRelu`, `Where`, `Mean`, `CastLike`, and the `Clip` and `Dropout` forms of every opset.
//!
//! Every activation is one IR `unary` op (so f16/bf16/f64 inputs compute in one pass with one
//! rounding at the end); `Mean` is a chain of `add`s and one division; `Clip` whose bounds are
//! run-time values (or constants an f32 attribute cannot hold exactly) becomes `max` then `min`.
//! The older ops (`Relu`, `Add`, `Cast`, ...) are mapped in `ops.rs`.

use crate::attrs::{invalid, unsupported, NResult, NodeError};
use crate::import::{Importer, NodeCx};
use crate::ops::OpSpec;
use kiln_ir::ops::{BinaryOp, Cast, UnaryOp};
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

/// Before opset 7, binary ops broadcast only on request (`broadcast`, `axis`).
const LEGACY_BINARY: &[&str] = &["broadcast", "axis"];

/// The ops of this family kiln maps, with the attributes and arity it accepts.
pub(crate) fn spec(op_type: &str) -> Option<OpSpec> {
    Some(match op_type {
        "Sin" | "Cos" | "Tan" | "Round" | "Sign" | "HardSwish" | "Softplus" | "Softsign"
        | "Mish" | "Not" | "IsNaN" => s(&[], 1, 1, 1),
        "Elu" => s(&["alpha", "consumed_inputs"], 1, 1, 1),
        "Selu" => s(&["alpha", "gamma", "consumed_inputs"], 1, 1, 1),
        "Celu" => s(&["alpha"], 1, 1, 1),
        "HardSigmoid" => s(&["alpha", "beta", "consumed_inputs"], 1, 1, 1),
        "ThresholdedRelu" => s(&["alpha"], 1, 1, 1),
        "Gelu" => s(&["approximate"], 1, 1, 1),
        "IsInf" => s(&["detect_negative", "detect_positive"], 1, 1, 1),
        "PRelu" => s(&["consumed_inputs"], 2, 1, 1),
        "Mod" => s(&["fmod"], 2, 1, 1),
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Xor" => {
            s(LEGACY_BINARY, 2, 1, 1)
        }
        "Where" => s(&[], 3, 1, 1),
        "Mean" => s(&["consumed_inputs"], usize::MAX, 1, 1),
        "CastLike" => s(&["saturate"], 2, 1, 1),
        "Clip" => s(&["min", "max", "consumed_inputs"], 3, 1, 1),
        "Dropout" => s(&["ratio", "is_test", "seed", "consumed_inputs"], 3, 2, 2),
        _ => return None,
    })
}

/// Maps one node of this family; returns the IR values of its outputs, in ONNX order.
pub(crate) fn map(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let f = |name: &str, default: f32| cx.attrs.float_or(name, default);
    let u = match cx.op_type {
        "Sin" => UnaryOp::Sin,
        "Cos" => UnaryOp::Cos,
        "Tan" => UnaryOp::Tan,
        "Round" => UnaryOp::Round,
        "Sign" => UnaryOp::Sign,
        "HardSwish" => UnaryOp::HardSwish,
        "Softplus" => UnaryOp::Softplus,
        "Softsign" => UnaryOp::Softsign,
        "Mish" => UnaryOp::Mish,
        "Not" => UnaryOp::Not,
        "IsNaN" => UnaryOp::IsNaN,
        "Elu" => UnaryOp::Elu {
            alpha: f("alpha", 1.0)?,
        },
        // The defaults are the float32 constants of the ONNX spec.
        "Selu" => UnaryOp::Selu {
            alpha: f("alpha", 1.673_263_2)?,
            gamma: f("gamma", 1.050_701)?,
        },
        "Celu" => {
            let alpha = f("alpha", 1.0)?;
            if alpha == 0.0 {
                return invalid("Celu's alpha must not be 0");
            }
            UnaryOp::Celu { alpha }
        }
        "HardSigmoid" => UnaryOp::HardSigmoid {
            alpha: f("alpha", 0.2)?,
            beta: f("beta", 0.5)?,
        },
        "ThresholdedRelu" => UnaryOp::ThresholdedRelu {
            alpha: f("alpha", 1.0)?,
        },
        "Gelu" => UnaryOp::Gelu {
            tanh: match cx.attrs.string("approximate")?.unwrap_or("none") {
                "none" => false,
                "tanh" => true,
                other => return invalid(format!("unknown approximate {other:?}")),
            },
        },
        "IsInf" => UnaryOp::IsInf {
            negative: cx.attrs.flag("detect_negative", true)?,
            positive: cx.attrs.flag("detect_positive", true)?,
        },
        "PRelu" => return prelu(imp, cx),
        "Mod" => {
            let op = if cx.attrs.flag("fmod", false)? {
                BinaryOp::Fmod
            } else {
                BinaryOp::Mod
            };
            return binary(imp, cx, op);
        }
        "Equal" => return binary(imp, cx, BinaryOp::Equal),
        "Less" => return binary(imp, cx, BinaryOp::Less),
        "Greater" => return binary(imp, cx, BinaryOp::Greater),
        "LessOrEqual" => return binary(imp, cx, BinaryOp::LessOrEqual),
        "GreaterOrEqual" => return binary(imp, cx, BinaryOp::GreaterOrEqual),
        "And" => return binary(imp, cx, BinaryOp::And),
        "Or" => return binary(imp, cx, BinaryOp::Or),
        "Xor" => return binary(imp, cx, BinaryOp::Xor),
        "Where" => {
            let c = imp.req(cx, 0, "condition")?;
            let x = imp.req(cx, 1, "X")?;
            let y = imp.req(cx, 2, "Y")?;
            return imp.add(cx, Op::Where, &[Some(c), Some(x), Some(y)]);
        }
        "Mean" => return mean(imp, cx),
        "CastLike" => {
            let x = imp.req(cx, 0, "input")?;
            let like = imp.req(cx, 1, "target_type")?;
            let to = imp.ty(like).dtype;
            return imp.add(cx, Op::Cast(Cast { to }), &[Some(x)]);
        }
        "Clip" => return clip(imp, cx),
        "Dropout" => return dropout(imp, cx),
        other => return unsupported(format!("kiln has no mapping for the ONNX op `{other}` yet")),
    };
    let x = imp.req(cx, 0, "X")?;
    imp.add(cx, Op::Unary(u), &[Some(x)])
}

/// A binary op, with the opt-in broadcasting of opsets before 7 checked.
fn binary(imp: &mut Importer, cx: &NodeCx, op: BinaryOp) -> NResult<Vec<Value>> {
    let a = imp.req(cx, 0, "A")?;
    let b = imp.req(cx, 1, "B")?;
    if cx.opset < 7 {
        let (ta, tb) = (imp.ty(a), imp.ty(b));
        if cx.attrs.flag("broadcast", false)? {
            // Legacy broadcasting aligned B at `axis` of A; numpy's rule agrees when B is a suffix.
            if let Some(ax) = cx.attrs.int("axis")? {
                let (ra, rb) = (ta.rank() as i64, tb.rank() as i64);
                let ax = if ax < 0 { ax + ra } else { ax };
                if ax + rb != ra {
                    return unsupported(format!(
                        "legacy broadcasting of B (rank {rb}) at axis {ax} of A (rank {ra}) is not supported"
                    ));
                }
            }
        } else if ta.shape != tb.shape {
            return invalid(format!(
                "without `broadcast` the inputs must have equal shapes, got {ta} and {tb}"
            ));
        }
    }
    imp.add(cx, Op::Binary(op), &[Some(a), Some(b)])
}

/// PRelu: the slope broadcasts to X (one way only).
fn prelu(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "X")?;
    let slope = imp.req(cx, 1, "slope")?;
    let (tx, ts) = (imp.ty(x).clone(), imp.ty(slope).clone());
    if cx.opset < 7
        && ts.shape != tx.shape
        && ts.dims().map(|d| d.iter().product::<usize>()) != Some(1)
    {
        return unsupported(format!(
            "PRelu-{} with slope {ts} for X {tx} (legacy channel broadcasting) is not supported",
            cx.opset
        ));
    }
    let out = kiln_ir::ops::broadcast_shapes(&tx.shape, &ts.shape)
        .map_err(|e| NodeError::Invalid(e.to_string()))?;
    if out != tx.shape {
        return invalid(format!("slope {ts} does not broadcast to X {tx}"));
    }
    imp.add(cx, Op::Binary(BinaryOp::PRelu), &[Some(x), Some(slope)])
}

/// Mean of any number of inputs: a left-to-right chain of adds, then one division by the count.
fn mean(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let ins: Vec<Value> = (0..imp.num_inputs(cx))
        .map(|i| imp.req(cx, i, "data"))
        .collect::<NResult<_>>()?;
    let Some((&first, rest)) = ins.split_first() else {
        return invalid("Mean needs at least one input");
    };
    if rest.is_empty() {
        return imp.add(cx, Op::Identity, &[Some(first)]);
    }
    let dtype = imp.ty(first).dtype;
    if !dtype.is_float() {
        return invalid(format!("Mean is defined on floats, got {dtype}"));
    }
    let mut acc = first;
    for (k, &x) in rest.iter().enumerate() {
        acc = imp.add_aux(
            cx,
            &format!("sum{k}"),
            Op::Binary(BinaryOp::Add),
            &[Some(acc), Some(x)],
        )?;
    }
    let n = Tensor::scalar_f64(dtype, ins.len() as f64);
    let n = imp.add_aux(cx, "count", Op::Const(n), &[])?;
    imp.add(cx, Op::Binary(BinaryOp::Div), &[Some(acc), Some(n)])
}

/// The f32 a scalar bound tensor holds exactly, if it does (NaN included).
fn exact_f32(t: &Tensor) -> Option<f32> {
    if t.len() != 1 {
        return None;
    }
    let v = t.get_f64(0);
    let f = v as f32;
    let exact = f as f64 == v || v.is_nan();
    // Integers are read exactly through i64 (u64 above 2^63 excepted, which f32 cannot hold).
    let int_exact = !t.dtype().is_int() || f as f64 as i64 == t.get_i64(0);
    (exact && int_exact).then_some(f)
}

/// Clip: bounds are attributes before opset 11 and optional inputs from 11.
fn clip(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "input")?;
    if cx.opset < 11 {
        let min = cx.attrs.float_or("min", f32::NEG_INFINITY)?;
        let max = cx.attrs.float_or("max", f32::INFINITY)?;
        return imp.add(cx, Op::Unary(UnaryOp::Clip { min, max }), &[Some(x)]);
    }
    let bounds = [imp.input(cx, 1), imp.input(cx, 2)];
    let mut consts = [Some(f32::NEG_INFINITY), Some(f32::INFINITY)];
    for (k, b) in bounds.iter().enumerate() {
        if let Some(v) = *b {
            let t = imp.ty(v);
            if t.dims().map(|d| d.iter().product::<usize>()) != Some(1) {
                return invalid(format!("`{}` must be a scalar, got {t}", ["min", "max"][k]));
            }
            consts[k] = imp.const_value(v)?.as_ref().and_then(exact_f32);
        }
    }
    if let [Some(min), Some(max)] = consts {
        return imp.add(cx, Op::Unary(UnaryOp::Clip { min, max }), &[Some(x)]);
    }
    // Run-time bounds: max(x, min) then min(., max), which also gives `max` when min > max.
    let mut y = x;
    let last = if bounds[1].is_some() { 1 } else { 0 };
    for (k, (b, op)) in bounds
        .iter()
        .zip([BinaryOp::Max, BinaryOp::Min])
        .enumerate()
    {
        let Some(b) = *b else { continue };
        if k == last {
            return imp.add(cx, Op::Binary(op), &[Some(y), Some(b)]);
        }
        y = imp.add_aux(cx, op.name(), Op::Binary(op), &[Some(y), Some(b)])?;
    }
    unreachable!("a run-time bound exists, so the loop returns")
}

/// Dropout in inference is the identity, with a mask of ones (bool from opset 10, X's type
/// before). Training mode is supported only with a ratio of 0, where it is the identity too.
fn dropout(imp: &mut Importer, cx: &NodeCx) -> NResult<Vec<Value>> {
    let x = imp.req(cx, 0, "data")?;
    if cx.opset >= 12 {
        let mode =
            match imp.input(cx, 2) {
                Some(v) => match imp.const_value(v)? {
                    Some(t) => Some(t),
                    None => return unsupported(
                        "`training_mode` is a run-time input; only inference (a constant false) \
                         is supported",
                    ),
                },
                None => None,
            };
        let training = match mode {
            None => false,
            Some(t) if t.len() == 1 => t.get_i64(0) != 0,
            Some(t) => return invalid(format!("`training_mode` must be a scalar, got {}", t.ty())),
        };
        if training {
            let ratio = match imp.const_input(cx, 1, "`ratio`")? {
                None => 0.5,
                Some(t) if t.len() == 1 => t.get_f64(0),
                Some(t) => return invalid(format!("`ratio` must be a scalar, got {}", t.ty())),
            };
            if ratio != 0.0 {
                return unsupported(format!(
                    "training_mode = true with ratio {ratio} (random dropout) is not supported"
                ));
            }
        }
    }
    let mut out = imp.add(cx, Op::Identity, &[Some(x)])?;
    let wants_mask = cx.node.output.get(1).is_some_and(|o| !o.is_empty());
    if !wants_mask {
        return Ok(out);
    }
    let dims = imp.static_dims(x, "data")?;
    let dtype = if cx.opset >= 10 {
        DType::Bool
    } else {
        imp.ty(x).dtype
    };
    let ones = Tensor::from_f64(dtype, dims.clone(), &vec![1.0; dims.iter().product()]);
    out.push(imp.add_aux(cx, "mask", Op::Const(ones), &[])?);
    Ok(out)
}
