//! Normalization: BatchNormalization (inference), LayerNormalization and RMSNormalization, LRN, and
//! the softmax family (Softmax, LogSoftmax, Hardmax).

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

    /// Calls `f` with the flat indices of every reduced row of an input of dims `d`.
    fn for_each_row(&self, d: &[usize], mut f: impl FnMut(&[usize])) {
        let (outer, len, inner) = self.split(d);
        for o in 0..outer {
            for i in 0..inner {
                let row: Vec<usize> = (0..len).map(|a| o * len * inner + a * inner + i).collect();
                f(&row);
            }
        }
    }

    /// LogSoftmax: `x - max - log(sum(exp(x - max)))` over each reduced row, in f64.
    pub(crate) fn eval_log(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let xv = x.to_f64_vec();
        let mut out = vec![0.0; xv.len()];
        self.for_each_row(x.shape(), |row| {
            let max = row.iter().map(|&k| xv[k]).fold(f64::NEG_INFINITY, f64::max);
            let lse = row.iter().map(|&k| (xv[k] - max).exp()).sum::<f64>().ln();
            for &k in row {
                out[k] = xv[k] - max - lse;
            }
        });
        Ok(vec![Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out)])
    }

    /// Hardmax: 1 at the first maximum of each reduced row, 0 elsewhere.
    pub(crate) fn eval_hard(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let xv = x.to_f64_vec();
        let mut out = vec![0.0; xv.len()];
        self.for_each_row(x.shape(), |row| {
            let mut best = row[0];
            for &k in &row[1..] {
                if xv[k] > xv[best] {
                    best = k;
                }
            }
            out[best] = 1.0;
        });
        Ok(vec![Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out)])
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

/// Layer normalization (and RMS normalization, which shares the attributes) over the trailing axes
/// `axis..`: each row of `n = prod(d[axis..])` elements becomes
/// `(x - mean) / sqrt(var + epsilon) * scale + bias` (RMS: `x / sqrt(mean(x^2) + epsilon) * scale`).
///
/// Inputs: X, optional scale, optional bias (RMS: no bias), each of shape `d[axis..]`. Outputs of
/// `layer_norm`: Y, and the statistics of every row, Mean and InvStdDev, of shape
/// `d[..axis] + [1; rank - axis]` and X's dtype. `rms_norm` has only Y.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNorm {
    /// First normalized axis (normalized, `< rank`).
    pub axis: usize,
    /// Added to the variance (the mean square for RMS).
    pub epsilon: f32,
}

impl LayerNorm {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<LayerNorm, OpError> {
        Ok(LayerNorm {
            axis: a.usize("axis", None)?,
            epsilon: a.float("epsilon", Some(1e-5))?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("axis", Attr::Int(self.axis as i64)),
            ("epsilon", Attr::Float(self.epsilon)),
        ]
    }

    /// `(rows, n)`: the input viewed as `[rows, n]`, one normalized row per line.
    pub fn split(&self, d: &[usize]) -> (usize, usize) {
        (
            d[..self.axis].iter().product(),
            d[self.axis..].iter().product(),
        )
    }

    /// Shape of the per-row statistics.
    pub fn stats_dims(&self, d: &[usize]) -> Vec<usize> {
        d.iter()
            .enumerate()
            .map(|(i, &v)| if i < self.axis { v } else { 1 })
            .collect()
    }

    pub(crate) fn infer(
        &self,
        ins: &[Option<Fact>],
        rms: bool,
    ) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let d = dims_of(x.ty)?;
        check_axis(self.axis, d.len())?;
        let what = if rms { "rms_norm" } else { "layer_norm" };
        if !x.ty.dtype.is_float() {
            return Err(OpError::Unsupported(format!("{what} on {}", x.ty.dtype)));
        }
        let params: &[&str] = if rms { &["scale"] } else { &["scale", "bias"] };
        for (i, p) in params.iter().enumerate() {
            if let Some(Some(f)) = ins.get(i + 1) {
                if dims_of(f.ty)? != d[self.axis..] || f.ty.dtype != x.ty.dtype {
                    return invalid(format!(
                        "{p} must be {}{:?}, got {}",
                        x.ty.dtype,
                        &d[self.axis..],
                        f.ty
                    ));
                }
            }
        }
        let mut out = vec![x.ty.clone()];
        if !rms {
            let st = TensorType::new(x.ty.dtype, &self.stats_dims(&d));
            out.push(st.clone());
            out.push(st);
        }
        Ok(out)
    }

    /// Two passes over each row in f64: the mean, then the mean square deviation.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>], rms: bool) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let d = x.shape();
        let (rows, n) = self.split(d);
        let xv = x.to_f64_vec();
        let param = |i: usize| ins.get(i).copied().flatten().map(Tensor::to_f64_vec);
        let (scale, bias) = (param(1), if rms { None } else { param(2) });
        let mut y = vec![0.0; xv.len()];
        let (mut means, mut invs) = (vec![0.0; rows], vec![0.0; rows]);
        for r in 0..rows {
            let row = &xv[r * n..(r + 1) * n];
            let mean = if rms {
                0.0
            } else {
                row.iter().sum::<f64>() / n as f64
            };
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
            let inv = 1.0 / (var + self.epsilon as f64).sqrt();
            for (k, &v) in row.iter().enumerate() {
                let s = scale.as_ref().map_or(1.0, |s| s[k]);
                let b = bias.as_ref().map_or(0.0, |b| b[k]);
                y[r * n + k] = (v - mean) * inv * s + b;
            }
            means[r] = mean;
            invs[r] = inv;
        }
        let dt = x.dtype();
        let mut out = vec![Tensor::from_f64(dt, d.to_vec(), &y)];
        if !rms {
            out.push(Tensor::from_f64(dt, self.stats_dims(d), &means));
            out.push(Tensor::from_f64(dt, self.stats_dims(d), &invs));
        }
        Ok(out)
    }
}

/// Local response normalization across channels (axis 1):
/// `y = x / (bias + alpha / size * sum(x[c']^2))^beta`, the sum over the `size` channels
/// `c - floor((size-1)/2) ..= c + ceil((size-1)/2)` that exist.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lrn {
    /// Window length in channels (odd in practice; >= 1).
    pub size: usize,
    /// Scale of the square sum.
    pub alpha: f32,
    /// Exponent.
    pub beta: f32,
    /// Additive bias.
    pub bias: f32,
}

impl Lrn {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Lrn, OpError> {
        Ok(Lrn {
            size: a.usize("size", None)?,
            alpha: a.float("alpha", Some(1e-4))?,
            beta: a.float("beta", Some(0.75))?,
            bias: a.float("bias", Some(1.0))?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("size", Attr::Int(self.size as i64)),
            ("alpha", Attr::Float(self.alpha)),
            ("beta", Attr::Float(self.beta)),
            ("bias", Attr::Float(self.bias)),
        ]
    }

    /// Channels before and after `c` in the window: `(floor((size-1)/2), ceil((size-1)/2))`.
    pub fn reach(&self) -> (usize, usize) {
        let s = self.size.saturating_sub(1);
        (s / 2, s.div_ceil(2))
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let d = dims_of(x.ty)?;
        if d.len() < 2 {
            return invalid(format!("input must have rank >= 2, got {}", x.ty));
        }
        if self.size == 0 {
            return invalid("size must be positive");
        }
        if !x.ty.dtype.is_float() {
            return Err(OpError::Unsupported(format!("lrn on {}", x.ty.dtype)));
        }
        Ok(vec![x.ty.clone()])
    }

    /// The formula above in f64, element by element.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let d = x.shape();
        let (c, inner) = (d[1], d[2..].iter().product::<usize>());
        let xv = x.to_f64_vec();
        let (lo, hi) = self.reach();
        let out: Vec<f64> = (0..xv.len())
            .map(|i| {
                let ch = (i / inner) % c;
                let base = i - ch * inner;
                let sq: f64 = (ch.saturating_sub(lo)..(ch + hi + 1).min(c))
                    .map(|k| xv[base + k * inner].powi(2))
                    .sum();
                let den = self.bias as f64 + self.alpha as f64 / self.size as f64 * sq;
                xv[i] / den.powf(self.beta as f64)
            })
            .collect();
        Ok(vec![Tensor::from_f64(x.dtype(), d.to_vec(), &out)])
    }
}
