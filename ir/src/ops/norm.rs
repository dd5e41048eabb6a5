//! Normalization: BatchNormalization (inference) and Softmax.

use super::{dims_of, invalid, norm_axis, req, Fact, OpError};
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
        Ok(BatchNorm { epsilon: a.float("epsilon", Some(1e-5))? })
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
            return Err(OpError::Unsupported(format!("batch_norm on {}", x.ty.dtype)));
        }
        for (i, what) in ["scale", "bias", "mean", "var"].iter().enumerate() {
            let p = req(ins, i + 1)?;
            if dims_of(p.ty)? != [xd[1]] || p.ty.dtype != x.ty.dtype {
                return invalid(format!("{what} must be {}[{}], got {}", x.ty.dtype, xd[1], p.ty));
            }
        }
        Ok(vec![x.ty.clone()])
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let _ = ins;
        Err(OpError::Unsupported("EVAL-PENDING batch_norm".into()))
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
        Ok(Softmax { axis: a.int("axis", None)? as usize, flatten: a.bool("flatten", false)? })
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
            (outer, dims[self.axis], dims[self.axis + 1..].iter().product())
        }
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        norm_axis(self.axis as i64, x.ty.rank())?;
        if !x.ty.dtype.is_float() {
            return Err(OpError::Unsupported(format!("softmax on {}", x.ty.dtype)));
        }
        Ok(vec![x.ty.clone()])
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let _ = ins;
        Err(OpError::Unsupported("EVAL-PENDING softmax".into()))
    }
}
