//! Matrix products: Gemm and MatMul.

use super::{dims_of, invalid, req, Fact, OpError};
use crate::attr::{Attr, Attrs};
use crate::ops::broadcast_shapes;
use crate::{Dim, Tensor, TensorType};

/// `Y = alpha * A' * B' + beta * C`, where `X'` is `X` or its transpose. A and B are 2-D; C broadcasts to
/// `[M, N]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of C.
    pub beta: f32,
    /// Transpose A first.
    pub trans_a: bool,
    /// Transpose B first.
    pub trans_b: bool,
}

impl Gemm {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Gemm, OpError> {
        Ok(Gemm {
            alpha: a.float("alpha", Some(1.0))?,
            beta: a.float("beta", Some(1.0))?,
            trans_a: a.bool("trans_a", false)?,
            trans_b: a.bool("trans_b", false)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("alpha", Attr::Float(self.alpha)),
            ("beta", Attr::Float(self.beta)),
            ("trans_a", Attr::Int(self.trans_a as i64)),
            ("trans_b", Attr::Int(self.trans_b as i64)),
        ]
    }

    /// `(M, K, N)` for the given A and B shapes.
    pub fn mkn(&self, a: &[usize], b: &[usize]) -> Result<(usize, usize, usize), OpError> {
        if a.len() != 2 || b.len() != 2 {
            return invalid(format!("A and B must be 2-D, got {a:?} and {b:?}"));
        }
        let (m, k) = if self.trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
        let (k2, n) = if self.trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
        if k != k2 {
            return invalid(format!("inner dimensions differ: A{a:?} B{b:?} (trans_a={}, trans_b={})", self.trans_a, self.trans_b));
        }
        Ok((m, k, n))
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let (a, b) = (req(ins, 0)?, req(ins, 1)?);
        if !a.ty.dtype.is_float() || a.ty.dtype != b.ty.dtype {
            return Err(OpError::Unsupported(format!("gemm on {} x {}", a.ty.dtype, b.ty.dtype)));
        }
        let (m, _, n) = self.mkn(&dims_of(a.ty)?, &dims_of(b.ty)?)?;
        let out = vec![Dim::Const(m), Dim::Const(n)];
        if let Some(c) = ins.get(2).and_then(|c| c.as_ref()) {
            if c.ty.dtype != a.ty.dtype {
                return invalid(format!("C is {} but A is {}", c.ty.dtype, a.ty.dtype));
            }
            let bc = broadcast_shapes(&c.ty.shape, &out)?;
            if bc != out {
                return invalid(format!("C of shape {} does not broadcast to [{m},{n}]", c.ty));
            }
        }
        Ok(vec![TensorType { dtype: a.ty.dtype, shape: out }])
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let _ = ins;
        Err(OpError::Unsupported("EVAL-PENDING gemm".into()))
    }
}

/// Shapes of a numpy matmul: `(batch dims of the output, M, K, N, a is 1-D, b is 1-D)`.
pub fn matmul_shapes(a: &[Dim], b: &[Dim]) -> Result<(Vec<Dim>, Dim, Dim, Dim, bool, bool), OpError> {
    if a.is_empty() || b.is_empty() {
        return invalid("matmul inputs must have rank >= 1");
    }
    let a_vec = a.len() == 1;
    let b_vec = b.len() == 1;
    let a2: Vec<Dim> = if a_vec { vec![Dim::Const(1), a[0].clone()] } else { a.to_vec() };
    let b2: Vec<Dim> = if b_vec { vec![b[0].clone(), Dim::Const(1)] } else { b.to_vec() };
    let (m, k) = (a2[a2.len() - 2].clone(), a2[a2.len() - 1].clone());
    let (k2, n) = (b2[b2.len() - 2].clone(), b2[b2.len() - 1].clone());
    if k != k2 {
        return invalid(format!("inner dimensions differ: {k} vs {k2}"));
    }
    let batch = broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    Ok((batch, m, k, n, a_vec, b_vec))
}

pub(crate) fn matmul_infer(ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
    let (a, b) = (req(ins, 0)?, req(ins, 1)?);
    if !a.ty.dtype.is_float() || a.ty.dtype != b.ty.dtype {
        return Err(OpError::Unsupported(format!("matmul on {} x {}", a.ty.dtype, b.ty.dtype)));
    }
    let (mut shape, m, _, n, a_vec, b_vec) = matmul_shapes(&a.ty.shape, &b.ty.shape)?;
    if !a_vec {
        shape.push(m);
    }
    if !b_vec {
        shape.push(n);
    }
    Ok(vec![TensorType { dtype: a.ty.dtype, shape }])
}

pub(crate) fn matmul_eval(ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
    let _ = ins;
    Err(OpError::Unsupported("EVAL-PENDING matmul".into()))
}
