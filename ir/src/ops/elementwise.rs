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
            _ => return Ok(None),
        }))
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        match *self {
            UnaryOp::LeakyRelu { alpha } => vec![("alpha", Attr::Float(alpha))],
            UnaryOp::Clip { min, max } => {
                vec![("min", Attr::Float(min)), ("max", Attr::Float(max))]
            }
            _ => vec![],
        }
    }

    /// Whether the op is defined on integer inputs too (the rest are float-only).
    pub fn allows_int(&self) -> bool {
        matches!(
            self,
            UnaryOp::Relu | UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Clip { .. }
        )
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        if !(x.ty.dtype.is_float() || self.allows_int() && x.ty.dtype.is_int()) {
            return Err(OpError::Unsupported(format!(
                "{} on {}",
                self.name(),
                x.ty.dtype
            )));
        }
        Ok(vec![x.ty.clone()])
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
            _ => self.apply(x as f64) as i64,
        }
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        if x.dtype().is_int() {
            let out: Vec<i64> = x
                .to_i64_vec()
                .into_iter()
                .map(|v| self.apply_i64(v))
                .collect();
            return Ok(vec![Tensor::from_i64(x.dtype(), x.shape().to_vec(), &out)]);
        }
        let out: Vec<f64> = x.to_f64_vec().into_iter().map(|v| self.apply(v)).collect();
        Ok(vec![Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out)])
    }
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
            if t.abs() < 1e-17 * sum.abs() {
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
    /// `a / b` (integer division truncates).
    Div,
    /// `a ^ b`.
    Pow,
    /// `max(a, b)`.
    Max,
    /// `min(a, b)`.
    Min,
}

impl BinaryOp {
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
        }
    }

    /// Inverse of [`BinaryOp::name`].
    pub fn from_name(s: &str) -> Option<BinaryOp> {
        [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Pow,
            BinaryOp::Max,
            BinaryOp::Min,
        ]
        .into_iter()
        .find(|b| b.name() == s)
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let (a, b) = (req(ins, 0)?, req(ins, 1)?);
        if a.ty.dtype != b.ty.dtype && *self != BinaryOp::Pow {
            return invalid(format!(
                "input dtypes differ: {} and {}",
                a.ty.dtype, b.ty.dtype
            ));
        }
        if a.ty.dtype == DType::Bool {
            return Err(OpError::Unsupported(format!("{} on bool", self.name())));
        }
        let shape = broadcast_shapes(&a.ty.shape, &b.ty.shape)?;
        Ok(vec![TensorType {
            dtype: a.ty.dtype,
            shape,
        }])
    }

    /// The function on f64 elements (the reference definition for floats).
    pub fn apply_f64(&self, a: f64, b: f64) -> f64 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
            BinaryOp::Max => nan_max(a, b),
            BinaryOp::Min => nan_min(a, b),
        }
    }

    /// The function on i64 elements (wrapping; division by zero gives 0 rather than trapping).
    pub fn apply_i64(&self, a: i64, b: i64) -> i64 {
        match self {
            BinaryOp::Add => a.wrapping_add(b),
            BinaryOp::Sub => a.wrapping_sub(b),
            BinaryOp::Mul => a.wrapping_mul(b),
            BinaryOp::Div => a.checked_div(b).unwrap_or(0),
            BinaryOp::Pow => (a as f64).powf(b as f64) as i64,
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
        }
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (req_t(ins, 0)?, req_t(ins, 1)?);
        let out_shape = broadcast_dims(a.shape(), b.shape())?;
        let ia = broadcast_index(a.shape(), &out_shape);
        let ib = broadcast_index(b.shape(), &out_shape);
        let dtype = a.dtype();
        // Pow may raise an integer to a float power: compute in f64 then, and truncate the result to
        // the base's type as a C cast (and numpy's astype) would.
        let t = if dtype.is_float() || b.dtype().is_float() {
            let (va, vb) = (a.to_f64_vec(), b.to_f64_vec());
            let out: Vec<f64> = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| self.apply_f64(va[i], vb[j]))
                .collect();
            Tensor::from_f64(dtype, out_shape, &out)
        } else {
            let (va, vb) = (a.to_i64_vec(), b.to_i64_vec());
            let out: Vec<i64> = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| self.apply_i64(va[i], vb[j]))
                .collect();
            Tensor::from_i64(dtype, out_shape, &out)
        };
        Ok(vec![t])
    }
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
