//! Elementwise ops: unary activations and math, broadcasting binary arithmetic, casts.

use super::{invalid, nan_max, nan_min, req, req_t, Fact, OpError};
use crate::attr::{Attr, Attrs};
use crate::{DType, Dim, Tensor, TensorType};

/// An elementwise function of one input. Parameters are part of the variant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `max(x, 0)`.
    Relu,
    /// `x < 0 ? alpha * x : x`.
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f32,
    },
    /// `min(max(x, min), max)`; absent bounds are infinities.
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// `e^x`.
    Exp,
    /// Natural logarithm.
    Log,
    /// Square root.
    Sqrt,
    /// `-x`.
    Neg,
    /// `|x|`.
    Abs,
    /// `1 / x`.
    Reciprocal,
    /// The error function.
    Erf,
    /// Round toward negative infinity.
    Floor,
    /// Round toward positive infinity.
    Ceil,
    /// Round to the nearest integer, ties to even.
    Round,
    /// `-1`, `0` or `1` by the sign of `x` (NaN stays NaN, zeros keep their sign).
    Sign,
    /// Sine.
    Sin,
    /// Cosine.
    Cos,
    /// Tangent.
    Tan,
    /// `x < 0 ? alpha * (e^x - 1) : x`.
    Elu {
        /// Scale of the negative part.
        alpha: f32,
    },
    /// `gamma * (x <= 0 ? alpha * (e^x - 1) : x)`.
    Selu {
        /// Scale of the negative part.
        alpha: f32,
        /// Overall scale.
        gamma: f32,
    },
    /// `max(0, x) + min(0, alpha * (e^(x / alpha) - 1))`.
    Celu {
        /// Scale (and inverse input scale) of the negative part.
        alpha: f32,
    },
    /// `max(0, min(1, alpha * x + beta))`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x * max(0, min(1, x / 6 + 1 / 2))`.
    HardSwish,
    /// `ln(1 + e^x)`.
    Softplus,
    /// `x / (1 + |x|)`.
    Softsign,
    /// `x > alpha ? x : 0`.
    ThresholdedRelu {
        /// Threshold.
        alpha: f32,
    },
    /// `x * Φ(x)`: exactly (with erf), or with the tanh approximation.
    Gelu {
        /// Use `0.5 x (1 + tanh(sqrt(2 / π) (x + 0.044715 x^3)))`.
        tanh: bool,
    },
    /// `x * tanh(softplus(x))`.
    Mish,
    /// `x * sigmoid(x)` (SiLU, swish with beta 1). Not an ONNX op: the fusion passes form it from
    /// `Mul(x, Sigmoid(x))` so that it can run inside a producing kernel.
    Silu,
    /// Logical not (bool in, bool out).
    Not,
    /// Whether `x` is NaN (float in, bool out).
    IsNaN,
    /// Whether `x` is an infinity of a detected sign (float in, bool out).
    IsInf {
        /// Detect `-inf`.
        negative: bool,
        /// Detect `+inf`.
        positive: bool,
    },
}

impl UnaryOp {
    /// Textual name.
    pub fn name(&self) -> &'static str {
        match self {
            UnaryOp::Relu => "relu",
            UnaryOp::LeakyRelu { .. } => "leaky_relu",
            UnaryOp::Clip { .. } => "clip",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Reciprocal => "reciprocal",
            UnaryOp::Erf => "erf",
            UnaryOp::Floor => "floor",
            UnaryOp::Ceil => "ceil",
            UnaryOp::Round => "round",
            UnaryOp::Sign => "sign",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Tan => "tan",
            UnaryOp::Elu { .. } => "elu",
            UnaryOp::Selu { .. } => "selu",
            UnaryOp::Celu { .. } => "celu",
            UnaryOp::HardSigmoid { .. } => "hard_sigmoid",
            UnaryOp::HardSwish => "hard_swish",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Softsign => "softsign",
            UnaryOp::ThresholdedRelu { .. } => "thresholded_relu",
            UnaryOp::Gelu { .. } => "gelu",
            UnaryOp::Mish => "mish",
            UnaryOp::Silu => "silu",
            UnaryOp::Not => "not",
            UnaryOp::IsNaN => "is_nan",
            UnaryOp::IsInf { .. } => "is_inf",
        }
    }

    pub(crate) fn from_text(name: &str, a: &Attrs) -> Result<Option<UnaryOp>, OpError> {
        Ok(Some(match name {
            "relu" => UnaryOp::Relu,
            "leaky_relu" => UnaryOp::LeakyRelu {
                alpha: a.float("alpha", None)?,
            },
            "clip" => UnaryOp::Clip {
                min: a.float("min", None)?,
                max: a.float("max", None)?,
            },
            "sigmoid" => UnaryOp::Sigmoid,
            "tanh" => UnaryOp::Tanh,
            "exp" => UnaryOp::Exp,
            "log" => UnaryOp::Log,
            "sqrt" => UnaryOp::Sqrt,
            "neg" => UnaryOp::Neg,
            "abs" => UnaryOp::Abs,
            "reciprocal" => UnaryOp::Reciprocal,
            "erf" => UnaryOp::Erf,
            "floor" => UnaryOp::Floor,
            "ceil" => UnaryOp::Ceil,
            "round" => UnaryOp::Round,
            "sign" => UnaryOp::Sign,
            "sin" => UnaryOp::Sin,
            "cos" => UnaryOp::Cos,
            "tan" => UnaryOp::Tan,
            "elu" => UnaryOp::Elu {
                alpha: a.float("alpha", None)?,
            },
            "selu" => UnaryOp::Selu {
                alpha: a.float("alpha", None)?,
                gamma: a.float("gamma", None)?,
            },
            "celu" => UnaryOp::Celu {
                alpha: a.float("alpha", None)?,
            },
            "hard_sigmoid" => UnaryOp::HardSigmoid {
                alpha: a.float("alpha", None)?,
                beta: a.float("beta", None)?,
            },
            "hard_swish" => UnaryOp::HardSwish,
            "softplus" => UnaryOp::Softplus,
            "softsign" => UnaryOp::Softsign,
            "thresholded_relu" => UnaryOp::ThresholdedRelu {
                alpha: a.float("alpha", None)?,
            },
            "gelu" => UnaryOp::Gelu {
                tanh: match a.string("approximate", None)?.as_str() {
                    "tanh" => true,
                    "none" => false,
                    other => return invalid(format!("gelu: unknown approximate {other:?}")),
                },
            },
            "mish" => UnaryOp::Mish,
            "silu" => UnaryOp::Silu,
            "not" => UnaryOp::Not,
            "is_nan" => UnaryOp::IsNaN,
            "is_inf" => UnaryOp::IsInf {
                negative: a.bool("negative", true)?,
                positive: a.bool("positive", true)?,
            },
            _ => return Ok(None),
        }))
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        match *self {
            UnaryOp::LeakyRelu { alpha } => vec![("alpha", Attr::Float(alpha))],
            UnaryOp::Clip { min, max } => {
                vec![("min", Attr::Float(min)), ("max", Attr::Float(max))]
            }
            UnaryOp::Elu { alpha }
            | UnaryOp::Celu { alpha }
            | UnaryOp::ThresholdedRelu { alpha } => vec![("alpha", Attr::Float(alpha))],
            UnaryOp::Selu { alpha, gamma } => {
                vec![("alpha", Attr::Float(alpha)), ("gamma", Attr::Float(gamma))]
            }
            UnaryOp::HardSigmoid { alpha, beta } => {
                vec![("alpha", Attr::Float(alpha)), ("beta", Attr::Float(beta))]
            }
            UnaryOp::Gelu { tanh } => vec![(
                "approximate",
                Attr::Str(if tanh { "tanh" } else { "none" }.into()),
            )],
            UnaryOp::IsInf { negative, positive } => vec![
                ("negative", Attr::Int(negative as i64)),
                ("positive", Attr::Int(positive as i64)),
            ],
            _ => vec![],
        }
    }

    /// Whether the op is defined on integer inputs too (the rest are float-only, except the
    /// bool-only [`UnaryOp::Not`]).
    pub fn allows_int(&self) -> bool {
        matches!(
            self,
            UnaryOp::Relu | UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Clip { .. } | UnaryOp::Sign
        )
    }

    /// Whether the output is bool whatever the input (the classifications `is_nan`, `is_inf`,
    /// and `not`).
    pub fn is_predicate(&self) -> bool {
        matches!(self, UnaryOp::IsNaN | UnaryOp::IsInf { .. } | UnaryOp::Not)
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let d = x.ty.dtype;
        let ok = match self {
            UnaryOp::Not => d == DType::Bool,
            _ => d.is_float() || self.allows_int() && d.is_int() && d.bits() >= 8,
        };
        if !ok {
            return Err(OpError::Unsupported(format!("{} on {d}", self.name())));
        }
        let dtype = if self.is_predicate() { DType::Bool } else { d };
        Ok(vec![TensorType {
            dtype,
            shape: x.ty.shape.clone(),
        }])
    }

    /// The function on one f64 element (the reference definition).
    pub fn apply(&self, x: f64) -> f64 {
        match *self {
            UnaryOp::Relu => nan_max(x, 0.0),
            UnaryOp::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha as f64 * x
                } else {
                    x
                }
            }
            UnaryOp::Clip { min, max } => nan_min(nan_max(x, min as f64), max as f64),
            UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Reciprocal => 1.0 / x,
            UnaryOp::Erf => erf(x),
            UnaryOp::Floor => x.floor(),
            UnaryOp::Ceil => x.ceil(),
            UnaryOp::Round => x.round_ties_even(),
            UnaryOp::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    x
                }
            }
            UnaryOp::Sin => x.sin(),
            UnaryOp::Cos => x.cos(),
            UnaryOp::Tan => x.tan(),
            UnaryOp::Elu { alpha } => {
                if x < 0.0 {
                    alpha as f64 * (x.exp() - 1.0)
                } else {
                    x
                }
            }
            UnaryOp::Selu { alpha, gamma } => {
                let y = if x <= 0.0 {
                    alpha as f64 * (x.exp() - 1.0)
                } else {
                    x
                };
                gamma as f64 * y
            }
            UnaryOp::Celu { alpha } => {
                let a = alpha as f64;
                nan_max(x, 0.0) + nan_min(0.0, a * ((x / a).exp() - 1.0))
            }
            UnaryOp::HardSigmoid { alpha, beta } => {
                nan_max(0.0, nan_min(1.0, alpha as f64 * x + beta as f64))
            }
            UnaryOp::HardSwish => x * nan_max(0.0, nan_min(1.0, x / 6.0 + 0.5)),
            UnaryOp::Softplus => softplus(x),
            UnaryOp::Softsign => x / (1.0 + x.abs()),
            // As numpy's `where(x > alpha, x, 0)`, the ONNX reference: NaN gives 0.
            UnaryOp::ThresholdedRelu { alpha } => {
                if x > alpha as f64 {
                    x
                } else {
                    0.0
                }
            }
            UnaryOp::Gelu { tanh: false } => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            UnaryOp::Gelu { tanh: true } => {
                let k = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
            }
            UnaryOp::Mish => x * softplus(x).tanh(),
            UnaryOp::Silu => x * (1.0 / (1.0 + (-x).exp())),
            UnaryOp::Not => (x == 0.0) as u8 as f64,
            UnaryOp::IsNaN => x.is_nan() as u8 as f64,
            UnaryOp::IsInf { negative, positive } => {
                (x == f64::INFINITY && positive || x == f64::NEG_INFINITY && negative) as u8 as f64
            }
        }
    }

    /// The function on one integer element, for the ops [`UnaryOp::allows_int`] admits (exact in i64,
    /// where going through f64 would round values above 2^53). Clip bounds round inward.
    pub fn apply_i64(&self, x: i64) -> i64 {
        match *self {
            UnaryOp::Relu => x.max(0),
            UnaryOp::Neg => x.wrapping_neg(),
            UnaryOp::Abs => x.wrapping_abs(),
            // `as` saturates, so infinite bounds become i64::MIN / i64::MAX.
            UnaryOp::Clip { min, max } => x
                .max((min as f64).ceil() as i64)
                .min((max as f64).floor() as i64),
            UnaryOp::Sign => x.signum(),
            _ => self.apply(x as f64) as i64,
        }
    }

    /// [`UnaryOp::apply_i64`] for unsigned elements (zero-extended to u64): nothing is negative,
    /// so relu and abs are the identity, and clip bounds below zero act as zero.
    pub fn apply_u64(&self, x: u64) -> u64 {
        match *self {
            UnaryOp::Relu | UnaryOp::Abs => x,
            UnaryOp::Neg => x.wrapping_neg(),
            UnaryOp::Sign => x.min(1),
            UnaryOp::Clip { min, max } => {
                // `as` saturates: negative bounds become 0, infinite ones 0 / u64::MAX.
                let lo = (min as f64).ceil() as u64;
                let hi = (max as f64).floor() as u64;
                x.max(lo).min(hi)
            }
            _ => self.apply_i64(x as i64) as u64,
        }
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        if self.is_predicate() {
            let out: Vec<i64> = x
                .to_f64_vec()
                .into_iter()
                .map(|v| self.apply(v) as i64)
                .collect();
            return Ok(vec![Tensor::from_i64(
                DType::Bool,
                x.shape().to_vec(),
                &out,
            )]);
        }
        if x.dtype().is_int() {
            let unsigned = !x.dtype().is_signed_int();
            let out: Vec<i64> = x
                .to_i64_vec()
                .into_iter()
                .map(|v| {
                    if unsigned {
                        self.apply_u64(v as u64) as i64
                    } else {
                        self.apply_i64(v)
                    }
                })
                .collect();
            return Ok(vec![Tensor::from_i64(x.dtype(), x.shape().to_vec(), &out)]);
        }
        let out: Vec<f64> = x.to_f64_vec().into_iter().map(|v| self.apply(v)).collect();
        Ok(vec![Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out)])
    }
}

/// The `post` attribute of the ops that apply an activation chain to their output (conv, gemm):
/// `post="clip{min=0.0, max=6.0}, relu"`, each entry an op as the textual IR names it with its
/// attributes in braces. Absent when the chain is empty, so unfused graphs print as before.
pub(crate) fn post_attr(post: &[UnaryOp]) -> Option<(&'static str, Attr)> {
    if post.is_empty() {
        return None;
    }
    let parts: Vec<String> = post
        .iter()
        .map(|op| {
            let attrs = op.attrs();
            if attrs.is_empty() {
                op.name().to_string()
            } else {
                let kv: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{}{{{}}}", op.name(), kv.join(", "))
            }
        })
        .collect();
    Some(("post", Attr::Str(parts.join(", "))))
}

/// Reads the chain [`post_attr`] prints (empty when the attribute is absent).
pub(crate) fn post_from_attrs(a: &Attrs) -> Result<Vec<UnaryOp>, OpError> {
    let text = a.string("post", Some(""))?;
    let chain =
        crate::parse::op_chain(&text).map_err(|e| OpError::Invalid(format!("post: {e}")))?;
    chain
        .iter()
        .map(|(name, attrs)| {
            let Some(op) = UnaryOp::from_text(name, attrs)? else {
                return invalid(format!("post: `{name}` is not an elementwise op"));
            };
            // The constructor ignores attributes it does not read; a typo must not pass silently.
            let known = op.attrs();
            if let Some((k, _)) = attrs
                .0
                .iter()
                .find(|(k, _)| !known.iter().any(|(n, _)| n == k))
            {
                return invalid(format!("post: `{name}` has no attribute `{k}`"));
            }
            Ok(op)
        })
        .collect()
}

/// Checks an activation chain applied to an output of `dtype`: every op must map that dtype to
/// itself (a predicate would turn the output into bools).
pub(crate) fn check_post(post: &[UnaryOp], dtype: DType) -> Result<(), OpError> {
    for op in post {
        if op.is_predicate() || !dtype.is_float() {
            return invalid(format!(
                "post: {} cannot follow a {dtype} output",
                op.name()
            ));
        }
    }
    Ok(())
}

/// Applies an activation chain to an evaluated output, one op at a time exactly as separate
/// elementwise nodes would (rounding to the dtype after each), so fusing a chain into its producer
/// leaves the reference result unchanged.
pub(crate) fn apply_post(post: &[UnaryOp], mut t: Tensor) -> Result<Tensor, OpError> {
    for op in post {
        t = op
            .eval(&[Some(&t)])?
            .pop()
            .ok_or_else(|| OpError::Invalid(format!("{} produced no output", op.name())))?;
    }
    Ok(t)
}

/// `ln(1 + e^x)` without overflow: `max(x, 0) + ln(1 + e^-|x|)`.
fn softplus(x: f64) -> f64 {
    nan_max(x, 0.0) + (-x.abs()).exp().ln_1p()
}

/// erf by the Abramowitz-Stegun 7.1.26-style series with enough terms for f64 reference use:
/// a Taylor series near zero and a continued fraction for the tail.
fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let r = if ax < 2.5 {
        // Maclaurin series: 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        let mut sum = 0.0;
        let mut term = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        loop {
            let t = term / (2.0 * n + 1.0);
            sum += t;
            // `<=`: at x = 0 every term is 0 and a strict test would never stop.
            if t.abs() <= 1e-17 * sum.abs() {
                break;
            }
            n += 1.0;
            term *= -x2 / n;
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if ax > 6.0 {
        1.0
    } else {
        // erfc continued fraction (Lentz), converges fast for ax >= 2.5.
        let x2 = ax * ax;
        let mut f = ax;
        let mut c = ax;
        let mut d = 0.0;
        for k in 1..200 {
            let a = k as f64 / 2.0;
            d = ax + a * d;
            d = 1.0 / d;
            c = ax + a / c;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-x2).exp() / (f * std::f64::consts::PI.sqrt())
    };
    r.copysign(x)
}

/// An elementwise function of two inputs, with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b` (integer division truncates; division by zero gives 0).
    Div,
    /// `a ^ b`. The exponent may have another dtype than the base; the result has the base's.
    Pow,
    /// `max(a, b)`.
    Max,
    /// `min(a, b)`.
    Min,
    /// Remainder with the sign of the divisor (Python's `%`, ONNX `Mod` with `fmod = 0`).
    Mod,
    /// Remainder with the sign of the dividend (C's `fmod`, ONNX `Mod` with `fmod = 1`).
    Fmod,
    /// `a < 0 ? a * b : a` (ONNX `PRelu`; `b` is the slope).
    PRelu,
    /// `a == b` (bool output).
    Equal,
    /// `a < b` (bool output).
    Less,
    /// `a <= b` (bool output).
    LessOrEqual,
    /// `a > b` (bool output).
    Greater,
    /// `a >= b` (bool output).
    GreaterOrEqual,
    /// Logical and of bools.
    And,
    /// Logical or of bools.
    Or,
    /// Logical exclusive or of bools.
    Xor,
}

impl BinaryOp {
    /// Every binary op.
    pub const ALL: [BinaryOp; 18] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Mod,
        BinaryOp::Fmod,
        BinaryOp::PRelu,
        BinaryOp::Equal,
        BinaryOp::Less,
        BinaryOp::LessOrEqual,
        BinaryOp::Greater,
        BinaryOp::GreaterOrEqual,
        BinaryOp::And,
        BinaryOp::Or,
        BinaryOp::Xor,
    ];

    /// Textual name.
    pub fn name(&self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Mod => "mod",
            BinaryOp::Fmod => "fmod",
            BinaryOp::PRelu => "prelu",
            BinaryOp::Equal => "equal",
            BinaryOp::Less => "less",
            BinaryOp::LessOrEqual => "less_or_equal",
            BinaryOp::Greater => "greater",
            BinaryOp::GreaterOrEqual => "greater_or_equal",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Xor => "xor",
        }
    }

    /// Inverse of [`BinaryOp::name`].
    pub fn from_name(s: &str) -> Option<BinaryOp> {
        BinaryOp::ALL.into_iter().find(|b| b.name() == s)
    }

    /// The comparisons: any (same) input dtype, bool output.
    pub fn is_comparison(&self) -> bool {
        matches!(
            self,
            BinaryOp::Equal
                | BinaryOp::Less
                | BinaryOp::LessOrEqual
                | BinaryOp::Greater
                | BinaryOp::GreaterOrEqual
        )
    }

    /// The logical ops: bool inputs, bool output.
    pub fn is_logical(&self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor)
    }

    /// The output dtype for inputs of `a` (and `b`, which only Pow lets differ).
    pub fn out_dtype(&self, a: DType) -> DType {
        if self.is_comparison() || self.is_logical() {
            DType::Bool
        } else {
            a
        }
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let (a, b) = (req(ins, 0)?, req(ins, 1)?);
        let (da, db) = (a.ty.dtype, b.ty.dtype);
        if da != db && *self != BinaryOp::Pow {
            return invalid(format!("input dtypes differ: {da} and {db}"));
        }
        let ok = |d: DType| d.is_float() || d.is_int() && d.bits() >= 8;
        let supported = if self.is_logical() {
            da == DType::Bool
        } else if *self == BinaryOp::Equal {
            ok(da) || da == DType::Bool
        } else {
            ok(da) && ok(db)
        };
        if !supported {
            let on = if da == db {
                da.to_string()
            } else {
                format!("{da} and {db}")
            };
            return Err(OpError::Unsupported(format!("{} on {on}", self.name())));
        }
        let shape = broadcast_shapes(&a.ty.shape, &b.ty.shape)?;
        Ok(vec![TensorType {
            dtype: self.out_dtype(da),
            shape,
        }])
    }

    /// The function on f64 elements (the reference definition for floats). Comparisons give
    /// 1.0 or 0.0.
    pub fn apply_f64(&self, a: f64, b: f64) -> f64 {
        let t = |c: bool| c as u8 as f64;
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
            BinaryOp::Max => nan_max(a, b),
            BinaryOp::Min => nan_min(a, b),
            // Rust's `%` on floats is C's fmod: exact, with the sign of `a`.
            BinaryOp::Fmod => a % b,
            BinaryOp::Mod => {
                let r = a % b;
                if r == 0.0 {
                    // numpy gives the zero the divisor's sign.
                    0f64.copysign(b)
                } else if (r < 0.0) != (b < 0.0) {
                    r + b
                } else {
                    r
                }
            }
            BinaryOp::PRelu => {
                if a < 0.0 {
                    a * b
                } else {
                    a
                }
            }
            BinaryOp::Equal => t(a == b),
            BinaryOp::Less => t(a < b),
            BinaryOp::LessOrEqual => t(a <= b),
            BinaryOp::Greater => t(a > b),
            BinaryOp::GreaterOrEqual => t(a >= b),
            BinaryOp::And => t(a != 0.0 && b != 0.0),
            BinaryOp::Or => t(a != 0.0 || b != 0.0),
            BinaryOp::Xor => t((a != 0.0) != (b != 0.0)),
        }
    }

    /// The function on signed integer elements held in i64: wrapping; division or remainder by
    /// zero gives 0 rather than trapping (ONNX leaves it undefined), and so does the one
    /// overflowing quotient `i64::MIN / -1`. Pow with a negative exponent gives `1 / a^-b`
    /// truncated (0 unless `|a| = 1`). Comparisons give 1 or 0.
    pub fn apply_i64(&self, a: i64, b: i64) -> i64 {
        let t = |c: bool| c as i64;
        match self {
            BinaryOp::Add => a.wrapping_add(b),
            BinaryOp::Sub => a.wrapping_sub(b),
            BinaryOp::Mul => a.wrapping_mul(b),
            BinaryOp::Div => a.checked_div(b).unwrap_or(0),
            BinaryOp::Pow => int_pow(a, b),
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
            BinaryOp::Fmod => a.checked_rem(b).unwrap_or(0),
            BinaryOp::Mod => {
                let r = a.checked_rem(b).unwrap_or(0);
                if r != 0 && (r < 0) != (b < 0) {
                    r + b
                } else {
                    r
                }
            }
            BinaryOp::PRelu => {
                if a < 0 {
                    a.wrapping_mul(b)
                } else {
                    a
                }
            }
            BinaryOp::Equal => t(a == b),
            BinaryOp::Less => t(a < b),
            BinaryOp::LessOrEqual => t(a <= b),
            BinaryOp::Greater => t(a > b),
            BinaryOp::GreaterOrEqual => t(a >= b),
            BinaryOp::And => t(a != 0 && b != 0),
            BinaryOp::Or => t(a != 0 || b != 0),
            BinaryOp::Xor => t((a != 0) != (b != 0)),
        }
    }

    /// The function on unsigned integer elements (u8 to u64, zero-extended): as
    /// [`BinaryOp::apply_i64`] with unsigned division, remainder, order and exponent.
    pub fn apply_u64(&self, a: u64, b: u64) -> u64 {
        let t = |c: bool| c as u64;
        match self {
            BinaryOp::Div => a.checked_div(b).unwrap_or(0),
            BinaryOp::Mod | BinaryOp::Fmod => a.checked_rem(b).unwrap_or(0),
            BinaryOp::Pow => {
                let (mut r, mut base, mut e) = (1u64, a, b);
                while e != 0 {
                    if e & 1 == 1 {
                        r = r.wrapping_mul(base);
                    }
                    base = base.wrapping_mul(base);
                    e >>= 1;
                }
                r
            }
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
            // Nothing unsigned is negative.
            BinaryOp::PRelu => a,
            BinaryOp::Less => t(a < b),
            BinaryOp::LessOrEqual => t(a <= b),
            BinaryOp::Greater => t(a > b),
            BinaryOp::GreaterOrEqual => t(a >= b),
            // The rest do not depend on signedness.
            _ => self.apply_i64(a as i64, b as i64) as u64,
        }
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (req_t(ins, 0)?, req_t(ins, 1)?);
        let out_shape = broadcast_dims(a.shape(), b.shape())?;
        let ia = broadcast_index(a.shape(), &out_shape);
        let ib = broadcast_index(b.shape(), &out_shape);
        let dtype = self.out_dtype(a.dtype());
        // Pow may raise an integer to a float power: compute in f64 then, and truncate the result to
        // the base's type as a C cast (and numpy's astype) would.
        let t = if a.dtype().is_float() || b.dtype().is_float() {
            let (va, vb) = (a.to_f64_vec(), b.to_f64_vec());
            let out: Vec<f64> = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| self.apply_f64(va[i], vb[j]))
                .collect();
            Tensor::from_f64(dtype, out_shape, &out)
        } else {
            let (va, vb) = (a.to_i64_vec(), b.to_i64_vec());
            // A signed exponent of an unsigned base (or the reverse) is read as the base's kind.
            let unsigned = a.dtype().is_int() && !a.dtype().is_signed_int();
            let out: Vec<i64> = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| {
                    if unsigned {
                        self.apply_u64(va[i] as u64, vb[j] as u64) as i64
                    } else {
                        self.apply_i64(va[i], vb[j])
                    }
                })
                .collect();
            Tensor::from_i64(dtype, out_shape, &out)
        };
        Ok(vec![t])
    }
}

/// `a^b` by squaring, wrapping; a negative exponent gives `1 / a^-b` truncated toward zero.
fn int_pow(a: i64, b: i64) -> i64 {
    if b < 0 {
        return match a {
            1 => 1,
            -1 if b % 2 == 0 => 1,
            -1 => -1,
            _ => 0,
        };
    }
    let (mut r, mut base, mut e) = (1i64, a, b as u64);
    while e != 0 {
        if e & 1 == 1 {
            r = r.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        e >>= 1;
    }
    r
}

/// ONNX `Where`: `cond ? x : y` elementwise, the three inputs broadcast together.
pub(crate) fn where_infer(ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
    let (c, x, y) = (req(ins, 0)?, req(ins, 1)?, req(ins, 2)?);
    if c.ty.dtype != DType::Bool {
        return invalid(format!("the condition must be bool, got {}", c.ty.dtype));
    }
    if x.ty.dtype != y.ty.dtype {
        return invalid(format!(
            "input dtypes differ: {} and {}",
            x.ty.dtype, y.ty.dtype
        ));
    }
    if x.ty.dtype.bits() < 8 {
        return Err(OpError::Unsupported(format!("where on {}", x.ty.dtype)));
    }
    let s = broadcast_shapes(&c.ty.shape, &x.ty.shape)?;
    let shape = broadcast_shapes(&s, &y.ty.shape)?;
    Ok(vec![TensorType {
        dtype: x.ty.dtype,
        shape,
    }])
}

pub(crate) fn where_eval(ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
    let (c, x, y) = (req_t(ins, 0)?, req_t(ins, 1)?, req_t(ins, 2)?);
    let s = broadcast_dims(c.shape(), x.shape())?;
    let out = broadcast_dims(&s, y.shape())?;
    let ic = broadcast_index(c.shape(), &out);
    let ix = broadcast_index(x.shape(), &out);
    let iy = broadcast_index(y.shape(), &out);
    // Pick whole elements so every bit (NaN payloads, -0.0) is copied as is.
    let both = [x, y];
    let picks = (0..ic.len()).map(|k| {
        if c.get_i64(ic[k]) != 0 {
            (0, ix[k])
        } else {
            (1, iy[k])
        }
    });
    Ok(vec![Tensor::take_from(x.dtype(), out, &both, picks)])
}

/// numpy broadcasting of two shapes.
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, OpError> {
    let r = a.len().max(b.len());
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let da = if i + a.len() >= r {
            &a[i + a.len() - r]
        } else {
            &Dim::Const(1)
        };
        let db = if i + b.len() >= r {
            &b[i + b.len() - r]
        } else {
            &Dim::Const(1)
        };
        out.push(match (da, db) {
            (Dim::Const(1), d) | (d, Dim::Const(1)) => d.clone(),
            (x, y) if x == y => x.clone(),
            (x, y) => return invalid(format!("shapes do not broadcast: dimension {x} vs {y}")),
        });
    }
    Ok(out)
}

/// numpy broadcasting of two constant shapes.
pub(crate) fn broadcast_dims(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    let da: Vec<Dim> = a.iter().map(|&d| Dim::Const(d)).collect();
    let db: Vec<Dim> = b.iter().map(|&d| Dim::Const(d)).collect();
    Ok(broadcast_shapes(&da, &db)?
        .iter()
        .map(|d| d.as_const().unwrap())
        .collect())
}

/// For every element of `out` (row-major), the flat index of the element of an input of shape `src`
/// that broadcasting reads.
pub(crate) fn broadcast_index(src: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let off = r - src.len();
    // Strides of src, zero where src broadcasts.
    let mut strides = vec![0usize; r];
    let mut acc = 1;
    for i in (0..src.len()).rev() {
        strides[i + off] = if src[i] == 1 { 0 } else { acc };
        acc *= src[i];
    }
    let n: usize = out.iter().product();
    let mut idx = vec![0usize; r];
    let mut res = Vec::with_capacity(n);
    for _ in 0..n {
        res.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for d in (0..r).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    res
}

/// Conversion to another element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cast {
    /// Target dtype.
    pub to: DType,
}

impl Cast {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Cast, OpError> {
        Ok(Cast { to: a.dtype("to")? })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![("to", Attr::Type(self.to))]
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        Ok(vec![TensorType {
            dtype: self.to,
            shape: req(ins, 0)?.ty.shape.clone(),
        }])
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![req_t(ins, 0)?.cast(self.to)])
    }
}
