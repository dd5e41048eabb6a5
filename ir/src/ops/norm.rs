//! Normalization: BatchNormalization (inference) and Softmax.

use super::{check_axis, dims_of, invalid, req, req_t, Fact, OpError};
use crate::attr::{Attr, Attrs};
use crate::{Tensor, TensorType};

/// Inference-mode batch normalization over axis 1:
/// `y = scale * (x - mean) / sqrt(var + epsilon) + bias`. Inputs: X, scale, B, mean, var (each `[C]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm {
    /// Added to the variance.
    pub epsilon: f32,
}

impl BatchNorm {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<BatchNorm, OpError> {
        Ok(BatchNorm {
            epsilon: a.float("epsilon", Some(1e-5))?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![("epsilon", Attr::Float(self.epsilon))]
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let xd = dims_of(x.ty)?;
        if xd.len() < 2 {
            return invalid(format!("input must have rank >= 2, got {}", x.ty));
        }
        if !x.ty.dtype.is_float() {
            return Err(OpError::Unsupported(format!(
                "batch_norm on {}",
                x.ty.dtype
            )));
        }
        for (i, what) in ["scale", "bias", "mean", "var"].iter().enumerate() {
            let p = req(ins, i + 1)?;
            if dims_of(p.ty)? != [xd[1]] || p.ty.dtype != x.ty.dtype {
                return invalid(format!(
                    "{what} must be {}[{}], got {}",
                    x.ty.dtype, xd[1], p.ty
                ));
            }
        }
        Ok(vec![x.ty.clone()])
    }

    /// The formula above in f64, channel by channel.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let p: Vec<Vec<f64>> = (1..5)
            .map(|i| req_t(ins, i).map(Tensor::to_f64_vec))
            .collect::<Result<_, _>>()?;
        let (scale, bias, mean, var) = (&p[0], &p[1], &p[2], &p[3]);
        let xd = x.shape();
        let inner: usize = xd[2..].iter().product();
        let eps = self.epsilon as f64;
        let out: Vec<f64> = x
            .to_f64_vec()
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = (i / inner) % xd[1];
                scale[c] * (v - mean[c]) / (var[c] + eps).sqrt() + bias[c]
            })
            .collect();
        Ok(vec![Tensor::from_f64(x.dtype(), xd.to_vec(), &out)])
    }
}

/// Softmax along `axis`. With `flatten` (opset < 13 semantics) the input is viewed as 2-D
/// `[prod(d[..axis]), prod(d[axis..])]` and the softmax runs over the second dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Softmax {
    /// Normalized (non-negative) axis.
    pub axis: usize,
    /// Legacy 2-D coercion.
    pub flatten: bool,
}

impl Softmax {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Softmax, OpError> {
        Ok(Softmax {
            axis: a.usize("axis", None)?,
            flatten: a.bool("flatten", false)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let mut v = vec![("axis", Attr::Int(self.axis as i64))];
        if self.flatten {
            v.push(("flatten", Attr::Int(1)));
        }
        v
    }

    /// `(outer, axis, inner)` sizes of the reduction for an input of these dims.
    pub fn split(&self, dims: &[usize]) -> (usize, usize, usize) {
        let outer: usize = dims[..self.axis].iter().product();
        if self.flatten {
            (outer, dims[self.axis..].iter().product(), 1)
        } else {
            (
                outer,
                dims[self.axis],
                dims[self.axis + 1..].iter().product(),
            )
        }
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        // The axis is stored normalized; a rank-0 input has no axis to reduce over.
        check_axis(self.axis, x.ty.rank())?;
        if !x.ty.dtype.is_float() {
            return Err(OpError::Unsupported(format!("softmax on {}", x.ty.dtype)));
        }
        Ok(vec![x.ty.clone()])
    }

    /// `exp(x - max) / sum(exp(x - max))` over each reduced row, in f64. Subtracting the row maximum
    /// keeps `exp` from overflowing and does not change the result.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let (outer, len, inner) = self.split(x.shape());
        let xv = x.to_f64_vec();
        let mut out = vec![0.0; xv.len()];
        for o in 0..outer {
            for i in 0..inner {
                let at = |a: usize| o * len * inner + a * inner + i;
                let max = (0..len)
                    .map(|a| xv[at(a)])
                    .fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = (0..len).map(|a| (xv[at(a)] - max).exp()).sum();
                for a in 0..len {
                    out[at(a)] = (xv[at(a)] - max).exp() / sum;
                }
            }
        }
        Ok(vec![Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out)])
    }
}
