//! Matrix products: Gemm and MatMul.

use super::elementwise::{
    apply_post, broadcast_dims, broadcast_index, check_post, post_attr, post_from_attrs,
};
use super::{dims_of, invalid, req, req_t, Fact, OpError, UnaryOp};
use crate::attr::{Attr, Attrs};
use crate::ops::broadcast_shapes;
use crate::{Dim, Tensor, TensorType};

/// `Y = alpha * A' * B' + beta * C`, where `X'` is `X` or its transpose. A and B are 2-D; C broadcasts to
/// `[M, N]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of C.
    pub beta: f32,
    /// Transpose A first.
    pub trans_a: bool,
    /// Transpose B first.
    pub trans_b: bool,
    /// Activations applied in order to every output element (after adding C), set by the fusion
    /// passes so that the kernel applies them before its store. Empty for a plain ONNX Gemm.
    pub post: Vec<UnaryOp>,
}

impl Gemm {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Gemm, OpError> {
        Ok(Gemm {
            alpha: a.float("alpha", Some(1.0))?,
            beta: a.float("beta", Some(1.0))?,
            trans_a: a.bool("trans_a", false)?,
            trans_b: a.bool("trans_b", false)?,
            post: post_from_attrs(a)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let mut v = vec![
            ("alpha", Attr::Float(self.alpha)),
            ("beta", Attr::Float(self.beta)),
            ("trans_a", Attr::Int(self.trans_a as i64)),
            ("trans_b", Attr::Int(self.trans_b as i64)),
        ];
        v.extend(post_attr(&self.post));
        v
    }

    /// `(M, K, N)` for the given A and B shapes.
    pub fn mkn(&self, a: &[usize], b: &[usize]) -> Result<(usize, usize, usize), OpError> {
        if a.len() != 2 || b.len() != 2 {
            return invalid(format!("A and B must be 2-D, got {a:?} and {b:?}"));
        }
        let (m, k) = if self.trans_a {
            (a[1], a[0])
        } else {
            (a[0], a[1])
        };
        let (k2, n) = if self.trans_b {
            (b[1], b[0])
        } else {
            (b[0], b[1])
        };
        if k != k2 {
            return invalid(format!(
                "inner dimensions differ: A{a:?} B{b:?} (trans_a={}, trans_b={})",
                self.trans_a, self.trans_b
            ));
        }
        Ok((m, k, n))
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let (a, b) = (req(ins, 0)?, req(ins, 1)?);
        if !a.ty.dtype.is_float() || a.ty.dtype != b.ty.dtype {
            return Err(OpError::Unsupported(format!(
                "gemm on {} x {}",
                a.ty.dtype, b.ty.dtype
            )));
        }
        check_post(&self.post, a.ty.dtype)?;
        let (m, _, n) = self.mkn(&dims_of(a.ty)?, &dims_of(b.ty)?)?;
        let out = vec![Dim::Const(m), Dim::Const(n)];
        if let Some(c) = ins.get(2).and_then(|c| c.as_ref()) {
            if c.ty.dtype != a.ty.dtype {
                return invalid(format!("C is {} but A is {}", c.ty.dtype, a.ty.dtype));
            }
            let bc = broadcast_shapes(&c.ty.shape, &out)?;
            if bc != out {
                return invalid(format!(
                    "C of shape {} does not broadcast to [{m},{n}]",
                    c.ty
                ));
            }
        }
        Ok(vec![TensorType {
            dtype: a.ty.dtype,
            shape: out,
        }])
    }

    /// `alpha * sum_k A'[i,k] B'[k,j] + beta * C[i,j]` in f64, C broadcast to `[M, N]` and left out
    /// (not treated as zero: `beta * inf` would be NaN) when absent.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (req_t(ins, 0)?, req_t(ins, 1)?);
        let (m, k, n) = self.mkn(a.shape(), b.shape())?;
        let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
        // Element (i, k) of A' and (k, j) of B', reading the stored matrix transposed when asked.
        let a_at = |i: usize, kk: usize| {
            if self.trans_a {
                av[kk * m + i]
            } else {
                av[i * k + kk]
            }
        };
        let b_at = |kk: usize, j: usize| {
            if self.trans_b {
                bv[j * k + kk]
            } else {
                bv[kk * n + j]
            }
        };
        let c = ins
            .get(2)
            .copied()
            .flatten()
            .map(|c| (c.to_f64_vec(), broadcast_index(c.shape(), &[m, n])));
        let mut out = Vec::with_capacity(m * n);
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|kk| a_at(i, kk) * b_at(kk, j)).sum();
                let mut y = self.alpha as f64 * dot;
                if let Some((cv, ci)) = &c {
                    y += self.beta as f64 * cv[ci[i * n + j]];
                }
                out.push(y);
            }
        }
        let y = Tensor::from_f64(a.dtype(), vec![m, n], &out);
        Ok(vec![apply_post(&self.post, y)?])
    }
}

/// Shapes of a numpy matmul: `(batch dims of the output, M, K, N, a is 1-D, b is 1-D)`.
#[allow(clippy::type_complexity)] // a plain tuple, documented above, read by destructuring
pub fn matmul_shapes(
    a: &[Dim],
    b: &[Dim],
) -> Result<(Vec<Dim>, Dim, Dim, Dim, bool, bool), OpError> {
    if a.is_empty() || b.is_empty() {
        return invalid("matmul inputs must have rank >= 1");
    }
    let a_vec = a.len() == 1;
    let b_vec = b.len() == 1;
    let a2: Vec<Dim> = if a_vec {
        vec![Dim::Const(1), a[0].clone()]
    } else {
        a.to_vec()
    };
    let b2: Vec<Dim> = if b_vec {
        vec![b[0].clone(), Dim::Const(1)]
    } else {
        b.to_vec()
    };
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
    // Integers multiply too (exact in the f64 evaluator up to 2^53); bool and 4-bit do not.
    let numeric = a.ty.dtype.is_float() || (a.ty.dtype.is_int() && a.ty.dtype.bits() >= 8);
    if !numeric || a.ty.dtype != b.ty.dtype {
        return Err(OpError::Unsupported(format!(
            "matmul on {} x {}",
            a.ty.dtype, b.ty.dtype
        )));
    }
    let (mut shape, m, _, n, a_vec, b_vec) = matmul_shapes(&a.ty.shape, &b.ty.shape)?;
    if !a_vec {
        shape.push(m);
    }
    if !b_vec {
        shape.push(n);
    }
    Ok(vec![TensorType {
        dtype: a.ty.dtype,
        shape,
    }])
}

/// numpy `matmul` in f64: a 1-D A is a row `[1, K]` and a 1-D B a column `[K, 1]` (the added dim is
/// dropped from the result), and the batch dims broadcast.
pub(crate) fn matmul_eval(ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
    let (a, b) = (req_t(ins, 0)?, req_t(ins, 1)?);
    let a2: Vec<usize> = if a.shape().len() == 1 {
        vec![1, a.shape()[0]]
    } else {
        a.shape().to_vec()
    };
    let b2: Vec<usize> = if b.shape().len() == 1 {
        vec![b.shape()[0], 1]
    } else {
        b.shape().to_vec()
    };
    let (ra, rb) = (a2.len(), b2.len());
    let (m, k, n) = (a2[ra - 2], a2[ra - 1], b2[rb - 1]);
    let batch = broadcast_dims(&a2[..ra - 2], &b2[..rb - 2])?;
    // For every output batch entry, which matrix of A and of B it reads.
    let (a_mat, b_mat) = (
        broadcast_index(&a2[..ra - 2], &batch),
        broadcast_index(&b2[..rb - 2], &batch),
    );
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    let mut out = Vec::new();
    for (&ia, &ib) in a_mat.iter().zip(&b_mat) {
        let (ao, bo) = (ia * m * k, ib * k * n);
        for i in 0..m {
            for j in 0..n {
                out.push(
                    (0..k)
                        .map(|kk| av[ao + i * k + kk] * bv[bo + kk * n + j])
                        .sum(),
                );
            }
        }
    }
    let mut shape = batch;
    if a.shape().len() > 1 {
        shape.push(m);
    }
    if b.shape().len() > 1 {
        shape.push(n);
    }
    Ok(vec![Tensor::from_f64(a.dtype(), shape, &out)])
}
