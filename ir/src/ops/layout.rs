//! Data movement and shape ops: Reshape, Flatten, Transpose, Concat, Squeeze, Unsqueeze, Slice, Gather,
//! Shape.

use super::{dims_of, for_each_index, ints, invalid, req, req_t, strides_of, Fact, OpError};
use crate::attr::{Attr, Attrs};
use crate::{DType, Dim, Tensor, TensorType};

/// New shape, same data. `shape` follows ONNX: `0` copies the input dim (unless `allowzero`), `-1` is
/// inferred.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reshape {
    /// Requested shape.
    pub shape: Vec<i64>,
    /// A `0` means an empty dimension rather than "copy".
    pub allowzero: bool,
}

impl Reshape {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Reshape, OpError> {
        Ok(Reshape {
            shape: a.ints("shape", None)?,
            allowzero: a.bool("allowzero", false)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let mut v = vec![("shape", Attr::Ints(self.shape.clone()))];
        if self.allowzero {
            v.push(("allowzero", Attr::Int(1)));
        }
        v
    }

    /// The output dims for input dims `d`.
    pub fn resolve(&self, d: &[usize]) -> Result<Vec<usize>, OpError> {
        let total: usize = d.iter().product();
        let mut out = Vec::with_capacity(self.shape.len());
        let mut infer_at = None;
        for (i, &s) in self.shape.iter().enumerate() {
            match s {
                -1 if infer_at.is_none() => {
                    infer_at = Some(i);
                    out.push(1);
                }
                -1 => return invalid(format!("shape {:?} has more than one -1", self.shape)),
                0 if !self.allowzero => match d.get(i) {
                    Some(&v) => out.push(v),
                    None => {
                        return invalid(format!(
                            "shape {:?} copies dimension {i} the input lacks",
                            self.shape
                        ))
                    }
                },
                s if s < 0 => {
                    return invalid(format!("shape {:?} has a negative dimension", self.shape))
                }
                s => out.push(s as usize),
            }
        }
        let known = out.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        let Some(known) = known else {
            return invalid(format!("shape {:?} overflows", self.shape));
        };
        if let Some(i) = infer_at {
            if known == 0 || !total.is_multiple_of(known) {
                return invalid(format!(
                    "cannot reshape {d:?} ({total} elements) to {:?}",
                    self.shape
                ));
            }
            out[i] = total / known;
        } else if known != total {
            return invalid(format!(
                "cannot reshape {d:?} ({total} elements) to {:?}",
                self.shape
            ));
        }
        Ok(out)
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let out = self.resolve(&dims_of(x.ty)?)?;
        Ok(vec![TensorType::new(x.ty.dtype, &out)])
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        Ok(vec![x.reshaped(self.resolve(x.shape())?)])
    }
}

/// Collapse to 2-D: `[prod(d[..axis]), prod(d[axis..])]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flatten {
    /// Normalized axis in `0..=rank`.
    pub axis: usize,
}

impl Flatten {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Flatten, OpError> {
        Ok(Flatten {
            axis: a.usize("axis", None)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![("axis", Attr::Int(self.axis as i64))]
    }

    fn out_dims(&self, d: &[usize]) -> Result<Vec<usize>, OpError> {
        if self.axis > d.len() {
            return invalid(format!(
                "axis {} is out of range for rank {}",
                self.axis,
                d.len()
            ));
        }
        Ok(vec![
            d[..self.axis].iter().product(),
            d[self.axis..].iter().product(),
        ])
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        Ok(vec![TensorType::new(
            x.ty.dtype,
            &self.out_dims(&dims_of(x.ty)?)?,
        )])
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        Ok(vec![x.reshaped(self.out_dims(x.shape())?)])
    }
}

/// Permute axes: output dim `i` is input dim `perm[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transpose {
    /// The permutation.
    pub perm: Vec<usize>,
}

impl Transpose {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Transpose, OpError> {
        Ok(Transpose {
            perm: a.usizes("perm", None)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![("perm", ints(&self.perm))]
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let mut seen = vec![false; x.ty.rank()];
        if self.perm.len() != x.ty.rank() {
            return invalid(format!(
                "perm {:?} does not match rank {}",
                self.perm,
                x.ty.rank()
            ));
        }
        for &p in &self.perm {
            if p >= seen.len() || seen[p] {
                return invalid(format!("perm {:?} is not a permutation", self.perm));
            }
            seen[p] = true;
        }
        let shape = self.perm.iter().map(|&p| x.ty.shape[p].clone()).collect();
        Ok(vec![TensorType {
            dtype: x.ty.dtype,
            shape,
        }])
    }

    /// Output element at multi-index `o` is input element at the index whose axis `perm[i]` is `o[i]`.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let xs = strides_of(x.shape());
        let out: Vec<usize> = self.perm.iter().map(|&p| x.shape()[p]).collect();
        let mut picks = Vec::with_capacity(x.len());
        for_each_index(&out, |o| {
            picks.push(o.iter().zip(&self.perm).map(|(&i, &p)| i * xs[p]).sum())
        });
        Ok(vec![x.take(out, &picks)])
    }
}

/// Join inputs along `axis`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Concat {
    /// Normalized axis.
    pub axis: usize,
}

impl Concat {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Concat, OpError> {
        Ok(Concat {
            axis: a.usize("axis", None)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![("axis", Attr::Int(self.axis as i64))]
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let first = req(ins, 0)?;
        let rank = first.ty.rank();
        if self.axis >= rank {
            return invalid(format!(
                "axis {} is out of range for rank {rank}",
                self.axis
            ));
        }
        let mut total = 0usize;
        let base = dims_of(first.ty)?;
        for (i, f) in ins.iter().enumerate() {
            let f = f
                .as_ref()
                .ok_or_else(|| OpError::Invalid(format!("input {i} is missing")))?;
            let d = dims_of(f.ty)?;
            if f.ty.dtype != first.ty.dtype || d.len() != rank {
                return invalid(format!("input {i} is {} but input 0 is {}", f.ty, first.ty));
            }
            for a in 0..rank {
                if a != self.axis && d[a] != base[a] {
                    return invalid(format!(
                        "input {i} is {} but input 0 is {} (concat axis {})",
                        f.ty, first.ty, self.axis
                    ));
                }
            }
            total = total.checked_add(d[self.axis]).ok_or_else(|| {
                OpError::Invalid(format!("concatenated axis {} is too large", self.axis))
            })?;
        }
        let mut out = base;
        out[self.axis] = total;
        Ok(vec![TensorType::new(first.ty.dtype, &out)])
    }

    /// For each index of the axes before `axis`, the inputs' blocks one after another.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let ts: Vec<&Tensor> = (0..ins.len())
            .map(|i| req_t(ins, i))
            .collect::<Result<_, _>>()?;
        let first = ts[0].shape();
        let outer: usize = first[..self.axis].iter().product();
        let inner: usize = first[self.axis + 1..].iter().product();
        let mut picks = Vec::new();
        for o in 0..outer {
            for (s, t) in ts.iter().enumerate() {
                let block = t.shape()[self.axis] * inner;
                picks.extend((o * block..(o + 1) * block).map(|e| (s, e)));
            }
        }
        let mut shape = first.to_vec();
        shape[self.axis] = ts.iter().map(|t| t.shape()[self.axis]).sum();
        Ok(vec![Tensor::take_from(
            ts[0].dtype(),
            shape,
            &ts,
            picks.into_iter(),
        )])
    }
}

/// Remove the listed size-1 axes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Squeeze {
    /// Normalized axes, sorted.
    pub axes: Vec<usize>,
}

impl Squeeze {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Squeeze, OpError> {
        Ok(Squeeze {
            axes: a.usizes("axes", None)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![("axes", ints(&self.axes))]
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let mut shape = Vec::new();
        for (i, d) in x.ty.shape.iter().enumerate() {
            if self.axes.contains(&i) {
                if *d != Dim::Const(1) {
                    return invalid(format!("cannot squeeze axis {i} of size {d}"));
                }
            } else {
                shape.push(d.clone());
            }
        }
        if let Some(&a) = self.axes.iter().find(|&&a| a >= x.ty.rank()) {
            return invalid(format!("axis {a} is out of range for rank {}", x.ty.rank()));
        }
        Ok(vec![TensorType {
            dtype: x.ty.dtype,
            shape,
        }])
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let d: Vec<usize> = x
            .shape()
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.axes.contains(i))
            .map(|(_, &d)| d)
            .collect();
        Ok(vec![x.reshaped(d)])
    }
}

/// Insert size-1 axes at the listed output positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsqueeze {
    /// Normalized axes of the output, sorted.
    pub axes: Vec<usize>,
}

impl Unsqueeze {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Unsqueeze, OpError> {
        Ok(Unsqueeze {
            axes: a.usizes("axes", None)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![("axes", ints(&self.axes))]
    }

    fn out_shape(&self, inp: &[Dim]) -> Result<Vec<Dim>, OpError> {
        let r = inp.len() + self.axes.len();
        let mut it = inp.iter();
        let mut out = Vec::with_capacity(r);
        for i in 0..r {
            if self.axes.contains(&i) {
                out.push(Dim::Const(1));
            } else {
                out.push(it.next().cloned().ok_or_else(|| {
                    OpError::Invalid(format!("axes {:?} out of range", self.axes))
                })?);
            }
        }
        if self.axes.iter().any(|&a| a >= r) {
            return invalid(format!(
                "axes {:?} out of range for output rank {r}",
                self.axes
            ));
        }
        Ok(out)
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        Ok(vec![TensorType {
            dtype: x.ty.dtype,
            shape: self.out_shape(&x.ty.shape)?,
        }])
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let dims: Vec<Dim> = x.shape().iter().map(|&d| Dim::Const(d)).collect();
        let out = self
            .out_shape(&dims)?
            .iter()
            .map(|d| d.as_const().unwrap())
            .collect();
        Ok(vec![x.reshaped(out)])
    }
}

/// Strided slice with constant bounds, ONNX semantics (negative indices count from the end, bounds
/// clamp). `axes` are normalized; `starts`, `ends`, `steps` are raw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    /// Start per listed axis.
    pub starts: Vec<i64>,
    /// End (exclusive) per listed axis.
    pub ends: Vec<i64>,
    /// The sliced axes.
    pub axes: Vec<usize>,
    /// Step per listed axis (non-zero).
    pub steps: Vec<i64>,
}

impl Slice {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Slice, OpError> {
        Ok(Slice {
            starts: a.ints("starts", None)?,
            ends: a.ints("ends", None)?,
            axes: a.usizes("axes", None)?,
            steps: a.ints("steps", None)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("starts", Attr::Ints(self.starts.clone())),
            ("ends", Attr::Ints(self.ends.clone())),
            ("axes", ints(&self.axes)),
            ("steps", Attr::Ints(self.steps.clone())),
        ]
    }

    /// Per input axis: `(first index, step, count)` after clamping.
    pub fn ranges(&self, d: &[usize]) -> Result<Vec<(i64, i64, usize)>, OpError> {
        let n = self.axes.len();
        if self.starts.len() != n || self.ends.len() != n || self.steps.len() != n {
            return invalid("starts, ends, axes and steps must have the same length");
        }
        let mut r: Vec<(i64, i64, usize)> = d.iter().map(|&x| (0, 1, x)).collect();
        for i in 0..n {
            let ax = self.axes[i];
            if ax >= d.len() {
                return invalid(format!("axis {ax} is out of range for rank {}", d.len()));
            }
            if self.axes[..i].contains(&ax) {
                return invalid(format!("axis {ax} is sliced twice (axes {:?})", self.axes));
            }
            let step = self.steps[i];
            if step == 0 {
                return invalid("slice step must not be 0");
            }
            // i128 so that no start, end or step (i64::MIN included) can overflow.
            let (dim, step) = (d[ax] as i128, step as i128);
            let fix = |v: i64| if v < 0 { v as i128 + dim } else { v as i128 };
            let (start, count) = if step > 0 {
                let (start, end) = (
                    fix(self.starts[i]).clamp(0, dim),
                    fix(self.ends[i]).clamp(0, dim),
                );
                (
                    start,
                    if end > start {
                        (end - start + step - 1) / step
                    } else {
                        0
                    },
                )
            } else {
                // Walking down: start clamps to the last element, end to one before the first. An empty
                // axis has neither (and would make `clamp` panic), so it yields nothing.
                let (start, end) = if dim == 0 {
                    (0, 0)
                } else {
                    (
                        fix(self.starts[i]).clamp(0, dim - 1),
                        fix(self.ends[i]).clamp(-1, dim - 1),
                    )
                };
                (
                    start,
                    if start > end {
                        (start - end - step - 1) / -step
                    } else {
                        0
                    },
                )
            };
            // start is in 0..=dim and count <= dim, so both fit.
            r[ax] = (start as i64, self.steps[i], count as usize);
        }
        Ok(r)
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let r = self.ranges(&dims_of(x.ty)?)?;
        let out: Vec<usize> = r.iter().map(|&(_, _, c)| c).collect();
        Ok(vec![TensorType::new(x.ty.dtype, &out)])
    }

    /// Output index `o[a]` on axis `a` reads input index `first + o[a] * step` there.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let ranges = self.ranges(x.shape())?;
        let xs = strides_of(x.shape());
        let out: Vec<usize> = ranges.iter().map(|&(_, _, c)| c).collect();
        let mut picks = Vec::new();
        for_each_index(&out, |o| {
            let flat: i64 = o
                .iter()
                .zip(&ranges)
                .zip(&xs)
                .map(|((&i, &(first, step, _)), &s)| (first + i as i64 * step) * s as i64)
                .sum();
            picks.push(flat as usize);
        });
        Ok(vec![x.take(out, &picks)])
    }
}

/// Gather along `axis` with integer indices (negative indices count from the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gather {
    /// Normalized axis.
    pub axis: usize,
}

impl Gather {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Gather, OpError> {
        Ok(Gather {
            axis: a.usize("axis", None)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![("axis", Attr::Int(self.axis as i64))]
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let (x, idx) = (req(ins, 0)?, req(ins, 1)?);
        if self.axis >= x.ty.rank() {
            return invalid(format!(
                "axis {} is out of range for rank {}",
                self.axis,
                x.ty.rank()
            ));
        }
        if !matches!(idx.ty.dtype, DType::I64 | DType::I32) {
            return invalid(format!("indices must be i32 or i64, got {}", idx.ty.dtype));
        }
        if let (Some(t), Some(n)) = (idx.value, x.ty.shape[self.axis].as_const()) {
            if let Some(bad) = t
                .to_i64_vec()
                .into_iter()
                .find(|&i| i < -(n as i64) || i >= n as i64)
            {
                return invalid(format!(
                    "index {bad} is out of range for axis {} of size {n}",
                    self.axis
                ));
            }
        }
        let mut shape = x.ty.shape[..self.axis].to_vec();
        shape.extend(idx.ty.shape.iter().cloned());
        shape.extend(x.ty.shape[self.axis + 1..].iter().cloned());
        Ok(vec![TensorType {
            dtype: x.ty.dtype,
            shape,
        }])
    }

    /// `out[pre, j, post] = data[pre, idx[j], post]`, a negative index counting from the end.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, idx) = (req_t(ins, 0)?, req_t(ins, 1)?);
        let d = x.shape();
        let n = d[self.axis];
        let outer: usize = d[..self.axis].iter().product();
        let inner: usize = d[self.axis + 1..].iter().product();
        let rows: Vec<usize> = idx
            .to_i64_vec()
            .into_iter()
            .map(|i| {
                let j = if i < 0 { i + n as i64 } else { i };
                usize::try_from(j).ok().filter(|&j| j < n).ok_or_else(|| {
                    OpError::Invalid(format!(
                        "index {i} is out of range for axis {} of size {n}",
                        self.axis
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let mut picks = Vec::with_capacity(outer * rows.len() * inner);
        for o in 0..outer {
            for &row in &rows {
                picks.extend((0..inner).map(|i| (o * n + row) * inner + i));
            }
        }
        let mut shape = d[..self.axis].to_vec();
        shape.extend_from_slice(idx.shape());
        shape.extend_from_slice(&d[self.axis + 1..]);
        Ok(vec![x.take(shape, &picks)])
    }
}

/// The input's shape, `[start, end)` of it, as i64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShapeOf {
    /// First dim reported.
    pub start: i64,
    /// One past the last dim reported; `None` = rank.
    pub end: Option<i64>,
}

impl ShapeOf {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<ShapeOf, OpError> {
        let end = a.int("end", Some(i64::MAX))?;
        Ok(ShapeOf {
            start: a.int("start", Some(0))?,
            end: (end != i64::MAX).then_some(end),
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let mut v = vec![("start", Attr::Int(self.start))];
        if let Some(e) = self.end {
            v.push(("end", Attr::Int(e)));
        }
        v
    }

    /// The value for an input of these dims (the input's data never matters).
    pub fn value_for(&self, dims: &[usize]) -> Tensor {
        let (s, e) = self.range(dims.len());
        let v: Vec<i64> = dims[s..e].iter().map(|&d| d as i64).collect();
        Tensor::from_i64(DType::I64, vec![v.len()], &v)
    }

    fn range(&self, rank: usize) -> (usize, usize) {
        let r = rank as i64;
        let fix = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let s = fix(self.start);
        let e = fix(self.end.unwrap_or(r));
        (s, e.max(s))
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let (s, e) = self.range(x.ty.rank());
        Ok(vec![TensorType::new(DType::I64, &[e - s])])
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![self.value_for(req_t(ins, 0)?.shape())])
    }
}
