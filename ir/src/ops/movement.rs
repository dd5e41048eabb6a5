//! Data movement beyond views and slices: Expand, Tile, Pad, Trilu, the element gathers and scatters
//! (GatherElements, GatherND, ScatterElements, ScatterND), OneHot, CumSum and TopK.
//!
//! They share one [`crate::Op`] variant, [`Movement`], so the op set stays one closed enum while this
//! family keeps its dispatch in one file. Every evaluator moves bytes where the op only moves data
//! (exact for every dtype, NaN payloads included) and computes in f64 (floats) or i128 (integers)
//! where it combines values.

use super::{
    dims_of, for_each_index, ints, invalid, norm_axis, req, req_t, strides_of, Fact, OpError,
};
use crate::attr::{Attr, Attrs};
use crate::{DType, Tensor, TensorType};

/// The ops of this family.
#[derive(Clone, Debug, PartialEq)]
pub enum Movement {
    /// Broadcast to a larger shape.
    Expand(Expand),
    /// Repeat along every axis.
    Tile(Tile),
    /// Pad (or crop, with negative pads) every axis.
    Pad(Pad),
    /// Keep the upper or lower triangle of the last two axes.
    Trilu(Trilu),
    /// Gather single elements along an axis.
    GatherElements(GatherElements),
    /// Gather slices addressed by index tuples.
    GatherNd(GatherNd),
    /// Scatter single elements along an axis.
    ScatterElements(ScatterElements),
    /// Scatter slices addressed by index tuples.
    ScatterNd(ScatterNd),
    /// One-hot encoding along a new axis.
    OneHot(OneHot),
    /// Running sum along an axis.
    CumSum(CumSum),
    /// The `k` largest or smallest elements along an axis, with their indices.
    TopK(TopK),
}

impl Movement {
    /// The textual name.
    pub fn name(&self) -> &'static str {
        match self {
            Movement::Expand(_) => "expand",
            Movement::Tile(_) => "tile",
            Movement::Pad(_) => "pad",
            Movement::Trilu(t) if t.upper => "triu",
            Movement::Trilu(_) => "tril",
            Movement::GatherElements(_) => "gather_elements",
            Movement::GatherNd(_) => "gather_nd",
            Movement::ScatterElements(_) => "scatter_elements",
            Movement::ScatterNd(_) => "scatter_nd",
            Movement::OneHot(_) => "one_hot",
            Movement::CumSum(_) => "cumsum",
            Movement::TopK(_) => "top_k",
        }
    }

    /// The most inputs the op takes.
    pub fn max_inputs(&self) -> usize {
        match self {
            Movement::Expand(_) | Movement::Tile(_) | Movement::CumSum(_) | Movement::TopK(_) => 1,
            Movement::Pad(_)
            | Movement::Trilu(_)
            | Movement::GatherElements(_)
            | Movement::GatherNd(_)
            | Movement::OneHot(_) => 2,
            Movement::ScatterElements(_) | Movement::ScatterNd(_) => 3,
        }
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        match self {
            Movement::Expand(o) => o.infer(ins),
            Movement::Tile(o) => o.infer(ins),
            Movement::Pad(o) => o.infer(ins),
            Movement::Trilu(o) => o.infer(ins),
            Movement::GatherElements(o) => o.infer(ins),
            Movement::GatherNd(o) => o.infer(ins),
            Movement::ScatterElements(o) => o.infer(ins),
            Movement::ScatterNd(o) => o.infer(ins),
            Movement::OneHot(o) => o.infer(ins),
            Movement::CumSum(o) => o.infer(ins),
            Movement::TopK(o) => o.infer(ins),
        }
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        match self {
            Movement::Expand(o) => o.eval(ins),
            Movement::Tile(o) => o.eval(ins),
            Movement::Pad(o) => o.eval(ins),
            Movement::Trilu(o) => o.eval(ins),
            Movement::GatherElements(o) => o.eval(ins),
            Movement::GatherNd(o) => o.eval(ins),
            Movement::ScatterElements(o) => o.eval(ins),
            Movement::ScatterNd(o) => o.eval(ins),
            Movement::OneHot(o) => o.eval(ins),
            Movement::CumSum(o) => o.eval(ins),
            Movement::TopK(o) => o.eval(ins),
        }
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        match self {
            Movement::Expand(o) => vec![("shape", ints(&o.shape))],
            Movement::Tile(o) => vec![("repeats", ints(&o.repeats))],
            Movement::Pad(o) => vec![
                ("pads", Attr::Ints(o.pads.clone())),
                ("mode", Attr::Str(o.mode.name().into())),
            ],
            Movement::Trilu(_) => vec![],
            Movement::GatherElements(o) => vec![("axis", Attr::Int(o.axis as i64))],
            Movement::GatherNd(o) => vec![("batch_dims", Attr::Int(o.batch_dims as i64))],
            Movement::ScatterElements(o) => vec![
                ("axis", Attr::Int(o.axis as i64)),
                ("reduction", Attr::Str(o.reduction.name().into())),
            ],
            Movement::ScatterNd(o) => vec![("reduction", Attr::Str(o.reduction.name().into()))],
            Movement::OneHot(o) => vec![
                ("axis", Attr::Int(o.axis as i64)),
                ("depth", Attr::Int(o.depth as i64)),
            ],
            Movement::CumSum(o) => vec![
                ("axis", Attr::Int(o.axis as i64)),
                ("exclusive", Attr::Int(o.exclusive as i64)),
                ("reverse", Attr::Int(o.reverse as i64)),
            ],
            Movement::TopK(o) => vec![
                ("axis", Attr::Int(o.axis as i64)),
                ("k", Attr::Int(o.k as i64)),
                ("largest", Attr::Int(o.largest as i64)),
            ],
        }
    }

    /// Builds the op named `name` from its attributes; `None` when the name is not of this family.
    pub(crate) fn from_text(name: &str, a: &Attrs) -> Result<Option<Movement>, OpError> {
        Ok(Some(match name {
            "expand" => Movement::Expand(Expand {
                shape: a.usizes("shape", None)?,
            }),
            "tile" => Movement::Tile(Tile {
                repeats: a.usizes("repeats", None)?,
            }),
            "pad" => {
                let mode = a.string("mode", Some("constant"))?;
                Movement::Pad(Pad {
                    pads: a.ints("pads", None)?,
                    mode: PadMode::from_name(&mode)
                        .ok_or_else(|| OpError::Invalid(format!("unknown pad mode `{mode}`")))?,
                })
            }
            "triu" => Movement::Trilu(Trilu { upper: true }),
            "tril" => Movement::Trilu(Trilu { upper: false }),
            "gather_elements" => Movement::GatherElements(GatherElements {
                axis: a.usize("axis", None)?,
            }),
            "gather_nd" => Movement::GatherNd(GatherNd {
                batch_dims: a.usize("batch_dims", Some(0))?,
            }),
            "scatter_elements" => Movement::ScatterElements(ScatterElements {
                axis: a.usize("axis", None)?,
                reduction: Reduction::from_attrs(a)?,
            }),
            "scatter_nd" => Movement::ScatterNd(ScatterNd {
                reduction: Reduction::from_attrs(a)?,
            }),
            "one_hot" => Movement::OneHot(OneHot {
                axis: a.usize("axis", None)?,
                depth: a.usize("depth", None)?,
            }),
            "cumsum" => Movement::CumSum(CumSum {
                axis: a.usize("axis", None)?,
                exclusive: a.bool("exclusive", false)?,
                reverse: a.bool("reverse", false)?,
            }),
            "top_k" => Movement::TopK(TopK {
                axis: a.usize("axis", None)?,
                k: a.usize("k", None)?,
                largest: a.bool("largest", true)?,
            }),
            _ => return Ok(None),
        }))
    }
}

// ---- shared helpers ----

/// Normalizes a run-time index against an axis of length `n` (negative counts from the end).
fn wrap_index(i: i64, n: usize, what: &str) -> Result<usize, OpError> {
    let j = if i < 0 { i + n as i64 } else { i };
    usize::try_from(j)
        .ok()
        .filter(|&j| j < n)
        .ok_or_else(|| OpError::Invalid(format!("{what} {i} is out of range for size {n}")))
}

fn check_index_dtype(ty: &TensorType, what: &str) -> Result<(), OpError> {
    if !matches!(ty.dtype, DType::I64 | DType::I32) {
        return invalid(format!("{what} must be i32 or i64, got {ty}"));
    }
    Ok(())
}

/// An element value that arithmetic can combine exactly: f64 for floats, i128 for integers (which
/// holds every u64 and i64 without reinterpretation).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
enum Num {
    F(f64),
    I(i128),
}

fn num_at(t: &Tensor, i: usize) -> Num {
    match t.dtype() {
        d if d.is_float() => Num::F(t.get_f64(i)),
        DType::U64 => Num::I(t.get_i64(i) as u64 as i128),
        _ => Num::I(t.get_i64(i) as i128),
    }
}

fn tensor_of(dtype: DType, shape: Vec<usize>, v: &[Num]) -> Tensor {
    if dtype.is_float() {
        let f: Vec<f64> = v
            .iter()
            .map(|n| match n {
                Num::F(x) => *x,
                Num::I(x) => *x as f64,
            })
            .collect();
        Tensor::from_f64(dtype, shape, &f)
    } else {
        let i: Vec<i64> = v
            .iter()
            .map(|n| match n {
                Num::I(x) => *x as i64,
                Num::F(x) => *x as i64,
            })
            .collect();
        Tensor::from_i64(dtype, shape, &i)
    }
}

/// `a + b` wrapped to the dtype's width (the tensor constructor truncates).
fn num_add(a: Num, b: Num) -> Num {
    match (a, b) {
        (Num::F(x), Num::F(y)) => Num::F(x + y),
        (Num::I(x), Num::I(y)) => Num::I(x.wrapping_add(y)),
        _ => a,
    }
}

// ---- Expand ----

/// numpy broadcast of the input to `shape` (the broadcast of the input shape and ONNX's requested
/// shape, resolved by the frontend).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expand {
    /// Output dims.
    pub shape: Vec<usize>,
}

impl Expand {
    fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let d = dims_of(x.ty)?;
        if d.len() > self.shape.len() {
            return invalid(format!(
                "cannot expand {} to fewer dims {:?}",
                x.ty, self.shape
            ));
        }
        let off = self.shape.len() - d.len();
        for (i, &v) in d.iter().enumerate() {
            if v != 1 && v != self.shape[off + i] {
                return invalid(format!("cannot expand {} to {:?}", x.ty, self.shape));
            }
        }
        Ok(vec![TensorType::new(x.ty.dtype, &self.shape)])
    }

    fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let picks = super::elementwise::broadcast_index(x.shape(), &self.shape);
        Ok(vec![x.take(self.shape.clone(), &picks)])
    }
}

// ---- Tile ----

/// Repeats the input `repeats[i]` times along axis `i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Repeat count per axis.
    pub repeats: Vec<usize>,
}

impl Tile {
    fn out_dims(&self, d: &[usize]) -> Result<Vec<usize>, OpError> {
        if d.len() != self.repeats.len() {
            return invalid(format!(
                "repeats {:?} do not match rank {}",
                self.repeats,
                d.len()
            ));
        }
        d.iter()
            .zip(&self.repeats)
            .map(|(&a, &b)| {
                a.checked_mul(b)
                    .ok_or_else(|| OpError::Invalid(format!("tiling {d:?} overflows")))
            })
            .collect()
    }

    fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        Ok(vec![TensorType::new(
            x.ty.dtype,
            &self.out_dims(&dims_of(x.ty)?)?,
        )])
    }

    fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let d = x.shape();
        let out = self.out_dims(d)?;
        let xs = strides_of(d);
        let mut picks = Vec::with_capacity(out.iter().product());
        for_each_index(&out, |o| {
            picks.push(o.iter().enumerate().map(|(a, &i)| (i % d[a]) * xs[a]).sum())
        });
        Ok(vec![x.take(out, &picks)])
    }
}

// ---- Pad ----

/// How `Pad` fills the border.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// A constant (input 1, zero when absent).
    Constant,
    /// Mirror without repeating the edge element (numpy `reflect`).
    Reflect,
    /// Repeat the edge element.
    Edge,
    /// Continue periodically from the other side.
    Wrap,
}

impl PadMode {
    /// ONNX spelling.
    pub fn name(self) -> &'static str {
        match self {
            PadMode::Constant => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Edge => "edge",
            PadMode::Wrap => "wrap",
        }
    }

    /// Inverse of [`PadMode::name`].
    pub fn from_name(s: &str) -> Option<PadMode> {
        [
            PadMode::Constant,
            PadMode::Reflect,
            PadMode::Edge,
            PadMode::Wrap,
        ]
        .into_iter()
        .find(|m| m.name() == s)
    }
}

/// Pads every axis: `pads` is `[begin_0, ..., begin_{r-1}, end_0, ..., end_{r-1}]`; a negative pad
/// removes elements. Inputs: data, optional scalar fill value (constant mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pad {
    /// Begins then ends, one per axis.
    pub pads: Vec<i64>,
    /// Border mode.
    pub mode: PadMode,
}

impl Pad {
    /// Output dims for input dims `d`.
    pub fn out_dims(&self, d: &[usize]) -> Result<Vec<usize>, OpError> {
        let r = d.len();
        if self.pads.len() != 2 * r {
            return invalid(format!("pads {:?} do not match rank {r}", self.pads));
        }
        (0..r)
            .map(|a| {
                let n = d[a] as i128 + self.pads[a] as i128 + self.pads[a + r] as i128;
                usize::try_from(n).map_err(|_| {
                    OpError::Invalid(format!("pads {:?} leave axis {a} negative", self.pads))
                })
            })
            .collect()
    }

    /// The input coordinate that output coordinate `o` of axis `axis` (input length `n`) reads, or
    /// `None` for the constant fill.
    pub fn source(&self, axis: usize, o: usize, n: usize) -> Option<usize> {
        let c = o as i64 - self.pads[axis];
        if (0..n as i64).contains(&c) {
            return Some(c as usize);
        }
        if n == 0 {
            return None;
        }
        let n = n as i64;
        Some(match self.mode {
            PadMode::Constant => return None,
            PadMode::Edge => c.clamp(0, n - 1) as usize,
            PadMode::Wrap => c.rem_euclid(n) as usize,
            PadMode::Reflect if n == 1 => 0,
            PadMode::Reflect => {
                // Reflection without the edge repeats with period 2(n - 1).
                let p = 2 * (n - 1);
                let m = c.rem_euclid(p);
                (if m < n { m } else { p - m }) as usize
            }
        })
    }

    fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let d = dims_of(x.ty)?;
        if let Some(v) = ins.get(1).and_then(|v| v.as_ref()) {
            if self.mode != PadMode::Constant {
                return invalid(format!(
                    "a fill value is only used in constant mode, not {}",
                    self.mode.name()
                ));
            }
            if v.ty.dtype != x.ty.dtype || dims_of(v.ty)?.iter().product::<usize>() != 1 {
                return invalid(format!(
                    "the fill value must be one {}, got {}",
                    x.ty.dtype, v.ty
                ));
            }
        }
        if self.mode != PadMode::Constant && d.contains(&0) {
            let out = self.out_dims(&d)?;
            if out.iter().product::<usize>() > 0 {
                return invalid(format!("{} padding of an empty input", self.mode.name()));
            }
        }
        Ok(vec![TensorType::new(x.ty.dtype, &self.out_dims(&d)?)])
    }

    fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let d = x.shape();
        let out = self.out_dims(d)?;
        let fill = match ins.get(1).copied().flatten() {
            Some(v) => v.clone(),
            None => Tensor::zeros(x.dtype(), vec![1]),
        };
        let xs = strides_of(d);
        let mut picks = Vec::with_capacity(out.iter().product());
        for_each_index(&out, |o| {
            let mut at = Some(0);
            for (a, &oi) in o.iter().enumerate() {
                at = at.and_then(|s| self.source(a, oi, d[a]).map(|c| s + c * xs[a]));
            }
            picks.push(match at {
                Some(e) => (0, e),
                None => (1, 0),
            });
        });
        Ok(vec![Tensor::take_from(
            x.dtype(),
            out,
            &[x, &fill],
            picks.into_iter(),
        )])
    }
}

// ---- Trilu ----

/// Keeps the upper (`j - i >= k`) or lower (`j - i <= k`) triangle of every matrix in the last two
/// axes and zeroes the rest. Inputs: data, optional scalar `k` (i64, default 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trilu {
    /// Upper triangle (else lower).
    pub upper: bool,
}

impl Trilu {
    fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        if x.ty.rank() < 2 {
            return invalid(format!("input must have rank 2 or more, got {}", x.ty));
        }
        if let Some(k) = ins.get(1).and_then(|v| v.as_ref()) {
            if k.ty.dtype != DType::I64 || dims_of(k.ty)?.iter().product::<usize>() != 1 {
                return invalid(format!("k must be one i64, got {}", k.ty));
            }
        }
        Ok(vec![x.ty.clone()])
    }

    /// Whether element `(i, j)` is kept for diagonal offset `k`.
    pub fn keeps(&self, i: usize, j: usize, k: i64) -> bool {
        let diff = j as i128 - i as i128;
        if self.upper {
            diff >= k as i128
        } else {
            diff <= k as i128
        }
    }

    fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let k = ins.get(1).copied().flatten().map_or(0, |t| t.get_i64(0));
        let d = x.shape();
        let (rows, cols) = (d[d.len() - 2], d[d.len() - 1]);
        let zero = Tensor::zeros(x.dtype(), vec![1]);
        let picks = (0..x.len()).map(|e| {
            let (i, j) = ((e / cols) % rows, e % cols);
            if self.keeps(i, j, k) {
                (0, e)
            } else {
                (1, 0)
            }
        });
        Ok(vec![Tensor::take_from(
            x.dtype(),
            d.to_vec(),
            &[x, &zero],
            picks,
        )])
    }
}

// ---- GatherElements ----

/// `out[i...] = data[i... with axis replaced by indices[i...]]`. Inputs: data, indices (same rank).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatherElements {
    /// Normalized axis.
    pub axis: usize,
}

/// Checks the shapes shared by GatherElements and ScatterElements: same rank, and indices no larger
/// than data on the other axes.
fn check_elements(data: &[usize], idx: &[usize], axis: usize) -> Result<(), OpError> {
    if data.len() != idx.len() || axis >= data.len() {
        return invalid(format!(
            "data {data:?} and indices {idx:?} must have the same rank, axis {axis}"
        ));
    }
    for a in 0..data.len() {
        if a != axis && idx[a] > data[a] {
            return invalid(format!(
                "indices {idx:?} are larger than data {data:?} on axis {a}"
            ));
        }
    }
    Ok(())
}

impl GatherElements {
    fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let (x, i) = (req(ins, 0)?, req(ins, 1)?);
        check_index_dtype(i.ty, "indices")?;
        let (xd, id) = (dims_of(x.ty)?, dims_of(i.ty)?);
        check_elements(&xd, &id, self.axis)?;
        if xd[self.axis] == 0 && id.iter().product::<usize>() > 0 {
            return invalid("gather from an empty axis");
        }
        Ok(vec![TensorType::new(x.ty.dtype, &id)])
    }

    fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, idx) = (req_t(ins, 0)?, req_t(ins, 1)?);
        let (xd, id) = (x.shape(), idx.shape().to_vec());
        let xs = strides_of(xd);
        let iv = idx.to_i64_vec();
        let mut picks = Vec::with_capacity(iv.len());
        let mut err = None;
        let mut e = 0;
        for_each_index(&id, |o| {
            let j = match wrap_index(iv[e], xd[self.axis], "index") {
                Ok(j) => j,
                Err(x) => {
                    err.get_or_insert(x);
                    0
                }
            };
            e += 1;
            picks.push(
                o.iter()
                    .enumerate()
                    .map(|(a, &i)| if a == self.axis { j } else { i } * xs[a])
                    .sum(),
            );
        });
        if let Some(e) = err {
            return Err(e);
        }
        Ok(vec![x.take(id, &picks)])
    }
}

// ---- GatherND ----

/// Gathers slices of `data` addressed by the last axis of `indices`; the first `batch_dims` axes of
/// both are batch axes. Output: `indices.shape[..-1] ++ data.shape[batch_dims + m..]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatherNd {
    /// Leading batch axes shared by data and indices.
    pub batch_dims: usize,
}

impl GatherNd {
    /// `(batch, lookups per batch, m, slice elements)` and the output dims.
    fn geometry(
        &self,
        xd: &[usize],
        id: &[usize],
    ) -> Result<(usize, usize, usize, usize, Vec<usize>), OpError> {
        let b = self.batch_dims;
        let (r, q) = (xd.len(), id.len());
        if q < 1 || r < 1 || b >= q.min(r) {
            return invalid(format!(
                "batch_dims {b} must be less than the ranks of data {xd:?} and indices {id:?}"
            ));
        }
        let m = id[q - 1];
        if xd[..b] != id[..b] || m < 1 || b + m > r {
            return invalid(format!(
                "indices {id:?} do not address data {xd:?} (batch_dims {b})"
            ));
        }
        let batch: usize = xd[..b].iter().product();
        let lookups: usize = id[b..q - 1].iter().product();
        let slice: usize = xd[b + m..].iter().product();
        let mut out = id[..q - 1].to_vec();
        out.extend_from_slice(&xd[b + m..]);
        Ok((batch, lookups, m, slice, out))
    }

    fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let (x, i) = (req(ins, 0)?, req(ins, 1)?);
        if i.ty.dtype != DType::I64 {
            return invalid(format!("indices must be i64, got {}", i.ty));
        }
        let (.., out) = self.geometry(&dims_of(x.ty)?, &dims_of(i.ty)?)?;
        Ok(vec![TensorType::new(x.ty.dtype, &out)])
    }

    fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, idx) = (req_t(ins, 0)?, req_t(ins, 1)?);
        let xd = x.shape();
        let (batch, lookups, m, slice, out) = self.geometry(xd, idx.shape())?;
        let b = self.batch_dims;
        let xs = strides_of(xd);
        let per_batch: usize = xd[b..].iter().product();
        let iv = idx.to_i64_vec();
        let mut picks = Vec::with_capacity(out.iter().product());
        for bi in 0..batch {
            for l in 0..lookups {
                let tuple = &iv[(bi * lookups + l) * m..][..m];
                let mut at = bi * per_batch;
                for (j, &t) in tuple.iter().enumerate() {
                    at += wrap_index(t, xd[b + j], "index")? * xs[b + j];
                }
                picks.extend(at..at + slice);
            }
        }
        Ok(vec![x.take(out, &picks)])
    }
}

// ---- Scatter ----

/// How a scatter combines an update with the element already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Overwrite (the last update to an element wins).
    None,
    /// Add.
    Add,
    /// Multiply.
    Mul,
    /// Keep the larger.
    Max,
    /// Keep the smaller.
    Min,
}

impl Reduction {
    /// ONNX spelling.
    pub fn name(self) -> &'static str {
        match self {
            Reduction::None => "none",
            Reduction::Add => "add",
            Reduction::Mul => "mul",
            Reduction::Max => "max",
            Reduction::Min => "min",
        }
    }

    /// Inverse of [`Reduction::name`].
    pub fn from_name(s: &str) -> Option<Reduction> {
        [
            Reduction::None,
            Reduction::Add,
            Reduction::Mul,
            Reduction::Max,
            Reduction::Min,
        ]
        .into_iter()
        .find(|r| r.name() == s)
    }

    fn from_attrs(a: &Attrs) -> Result<Reduction, OpError> {
        let s = a.string("reduction", Some("none"))?;
        Reduction::from_name(&s).ok_or_else(|| OpError::Invalid(format!("unknown reduction `{s}`")))
    }

    fn apply(self, old: Num, new: Num) -> Num {
        match (self, old, new) {
            (Reduction::None, _, n) => n,
            (Reduction::Add, o, n) => num_add(o, n),
            (Reduction::Mul, Num::F(a), Num::F(b)) => Num::F(a * b),
            (Reduction::Mul, Num::I(a), Num::I(b)) => {
                Num::I((a as i64).wrapping_mul(b as i64) as i128)
            }
            (Reduction::Max, Num::F(a), Num::F(b)) => Num::F(super::nan_max(a, b)),
            (Reduction::Min, Num::F(a), Num::F(b)) => Num::F(super::nan_min(a, b)),
            (Reduction::Max, Num::I(a), Num::I(b)) => Num::I(a.max(b)),
            (Reduction::Min, Num::I(a), Num::I(b)) => Num::I(a.min(b)),
            (_, o, _) => o,
        }
    }
}

/// Writes `updates` into a copy of `data` along an axis: element `i...` of updates goes to `data[i...
/// with axis replaced by indices[i...]]`. Inputs: data, indices, updates (indices' shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScatterElements {
    /// Normalized axis.
    pub axis: usize,
    /// How updates combine with existing elements.
    pub reduction: Reduction,
}

fn check_reduction(r: Reduction, d: DType) -> Result<(), OpError> {
    if r != Reduction::None && d == DType::Bool {
        return invalid(format!("reduction {} on bool", r.name()));
    }
    Ok(())
}

impl ScatterElements {
    fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let (x, i, u) = (req(ins, 0)?, req(ins, 1)?, req(ins, 2)?);
        check_index_dtype(i.ty, "indices")?;
        check_reduction(self.reduction, x.ty.dtype)?;
        let (xd, id) = (dims_of(x.ty)?, dims_of(i.ty)?);
        check_elements(&xd, &id, self.axis)?;
        if u.ty.dtype != x.ty.dtype || dims_of(u.ty)? != id {
            return invalid(format!(
                "updates must be {}{id:?}, got {}",
                x.ty.dtype, u.ty
            ));
        }
        if xd[self.axis] == 0 && id.iter().product::<usize>() > 0 {
            return invalid("scatter into an empty axis");
        }
        Ok(vec![x.ty.clone()])
    }

    fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, idx, upd) = (req_t(ins, 0)?, req_t(ins, 1)?, req_t(ins, 2)?);
        let xd = x.shape();
        let xs = strides_of(xd);
        let iv = idx.to_i64_vec();
        let mut vals: Vec<Num> = (0..x.len()).map(|e| num_at(x, e)).collect();
        let mut targets = Vec::with_capacity(iv.len());
        let mut err = None;
        for_each_index(idx.shape(), |o| {
            let e = targets.len();
            let j = wrap_index(iv[e], xd[self.axis], "index").unwrap_or_else(|x| {
                err.get_or_insert(x);
                0
            });
            targets.push(
                o.iter()
                    .enumerate()
                    .map(|(a, &i)| if a == self.axis { j } else { i } * xs[a])
                    .sum::<usize>(),
            );
        });
        if let Some(e) = err {
            return Err(e);
        }
        for (e, &t) in targets.iter().enumerate() {
            vals[t] = self.reduction.apply(vals[t], num_at(upd, e));
        }
        Ok(vec![tensor_of(x.dtype(), xd.to_vec(), &vals)])
    }
}

/// Writes slices of `updates` into a copy of `data` at the index tuples of the last axis of
/// `indices`. Inputs: data, indices (i64), updates (`indices.shape[..-1] ++ data.shape[m..]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScatterNd {
    /// How updates combine with existing elements.
    pub reduction: Reduction,
}

impl ScatterNd {
    /// `(lookups, m, slice elements)`.
    fn geometry(
        xd: &[usize],
        id: &[usize],
        ud: &[usize],
    ) -> Result<(usize, usize, usize), OpError> {
        let q = id.len();
        if q < 1 {
            return invalid("indices must have rank 1 or more");
        }
        let m = id[q - 1];
        if m < 1 || m > xd.len() {
            return invalid(format!("indices {id:?} do not address data {xd:?}"));
        }
        let mut want = id[..q - 1].to_vec();
        want.extend_from_slice(&xd[m..]);
        if ud != want {
            return invalid(format!("updates must have shape {want:?}, got {ud:?}"));
        }
        Ok((id[..q - 1].iter().product(), m, xd[m..].iter().product()))
    }

    fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let (x, i, u) = (req(ins, 0)?, req(ins, 1)?, req(ins, 2)?);
        if i.ty.dtype != DType::I64 {
            return invalid(format!("indices must be i64, got {}", i.ty));
        }
        check_reduction(self.reduction, x.ty.dtype)?;
        if u.ty.dtype != x.ty.dtype {
            return invalid(format!("updates must be {}, got {}", x.ty.dtype, u.ty));
        }
        Self::geometry(&dims_of(x.ty)?, &dims_of(i.ty)?, &dims_of(u.ty)?)?;
        Ok(vec![x.ty.clone()])
    }

    fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, idx, upd) = (req_t(ins, 0)?, req_t(ins, 1)?, req_t(ins, 2)?);
        let xd = x.shape();
        let (lookups, m, slice) = Self::geometry(xd, idx.shape(), upd.shape())?;
        let xs = strides_of(xd);
        let iv = idx.to_i64_vec();
        let mut vals: Vec<Num> = (0..x.len()).map(|e| num_at(x, e)).collect();
        for l in 0..lookups {
            let mut at = 0;
            for j in 0..m {
                at += wrap_index(iv[l * m + j], xd[j], "index")? * xs[j];
            }
            for s in 0..slice {
                vals[at + s] = self
                    .reduction
                    .apply(vals[at + s], num_at(upd, l * slice + s));
            }
        }
        Ok(vec![tensor_of(x.dtype(), xd.to_vec(), &vals)])
    }
}

// ---- OneHot ----

/// `out[..., j, ...] = j == indices[...] ? on : off`, the new axis of length `depth` at `axis`.
/// Negative indices count from `depth`; out-of-range ones select nothing. Float indices are truncated.
/// Inputs: indices, values (`[off, on]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OneHot {
    /// Position of the new axis in the output (`0..=rank(indices)`).
    pub axis: usize,
    /// Length of the new axis.
    pub depth: usize,
}

impl OneHot {
    fn out_dims(&self, id: &[usize]) -> Result<Vec<usize>, OpError> {
        if self.axis > id.len() {
            return invalid(format!(
                "axis {} is out of range for rank {}",
                self.axis,
                id.len() + 1
            ));
        }
        let mut out = id.to_vec();
        out.insert(self.axis, self.depth);
        Ok(out)
    }

    fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let (i, v) = (req(ins, 0)?, req(ins, 1)?);
        if i.ty.dtype == DType::Bool || i.ty.dtype.bits() < 8 {
            return invalid(format!("indices must be numbers, got {}", i.ty));
        }
        if dims_of(v.ty)?.iter().product::<usize>() != 2 {
            return invalid(format!("values must hold [off, on], got {}", v.ty));
        }
        Ok(vec![TensorType::new(
            v.ty.dtype,
            &self.out_dims(&dims_of(i.ty)?)?,
        )])
    }

    /// The hot position for an index value, if any.
    pub fn hot(&self, i: i64) -> Option<usize> {
        let j = if i < 0 {
            i as i128 + self.depth as i128
        } else {
            i as i128
        };
        (0..self.depth as i128).contains(&j).then_some(j as usize)
    }

    fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (idx, v) = (req_t(ins, 0)?, req_t(ins, 1)?);
        let out = self.out_dims(idx.shape())?;
        let outer: usize = idx.shape()[..self.axis].iter().product();
        let inner: usize = idx.shape()[self.axis..].iter().product();
        let mut picks = Vec::with_capacity(out.iter().product());
        for o in 0..outer {
            for j in 0..self.depth {
                for i in 0..inner {
                    let hot = self.hot(idx.get_i64(o * inner + i)) == Some(j);
                    picks.push(usize::from(hot));
                }
            }
        }
        Ok(vec![v.take(out, &picks)])
    }
}

// ---- CumSum ----

/// Running sum along `axis`; `exclusive` leaves out the element itself, `reverse` runs from the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CumSum {
    /// Normalized axis.
    pub axis: usize,
    /// Sum of the elements strictly before.
    pub exclusive: bool,
    /// Run from the last element to the first.
    pub reverse: bool,
}

impl CumSum {
    fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        norm_axis(self.axis as i64, x.ty.rank())?;
        if x.ty.dtype == DType::Bool || x.ty.dtype.bits() < 8 {
            return invalid(format!("cumsum of {}", x.ty.dtype));
        }
        Ok(vec![x.ty.clone()])
    }

    fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let d = x.shape();
        let (outer, n, inner) = (
            d[..self.axis].iter().product::<usize>(),
            d[self.axis],
            d[self.axis + 1..].iter().product::<usize>(),
        );
        let zero = if x.dtype().is_float() {
            Num::F(0.0)
        } else {
            Num::I(0)
        };
        let mut vals = vec![zero; x.len()];
        for o in 0..outer {
            for i in 0..inner {
                let mut acc = zero;
                for s in 0..n {
                    let j = if self.reverse { n - 1 - s } else { s };
                    let e = (o * n + j) * inner + i;
                    let v = num_at(x, e);
                    if self.exclusive {
                        vals[e] = acc;
                        acc = num_add(acc, v);
                    } else {
                        acc = num_add(acc, v);
                        vals[e] = acc;
                    }
                }
            }
        }
        Ok(vec![tensor_of(x.dtype(), d.to_vec(), &vals)])
    }
}

// ---- TopK ----

/// The `k` largest (or smallest) elements along `axis`, sorted best first, and their indices (i64).
/// Equal elements keep their order (the lower index first). Two outputs: values, indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopK {
    /// Normalized axis.
    pub axis: usize,
    /// How many to keep.
    pub k: usize,
    /// Largest first (else smallest first).
    pub largest: bool,
}

impl TopK {
    fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let mut d = dims_of(x.ty)?;
        norm_axis(self.axis as i64, d.len())?;
        if self.k > d[self.axis] {
            return invalid(format!(
                "k = {} exceeds axis {} of {}",
                self.k, self.axis, x.ty
            ));
        }
        if x.ty.dtype == DType::Bool || x.ty.dtype.bits() < 8 {
            return invalid(format!("top_k of {}", x.ty.dtype));
        }
        d[self.axis] = self.k;
        Ok(vec![
            TensorType::new(x.ty.dtype, &d),
            TensorType::new(DType::I64, &d),
        ])
    }

    fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let d = x.shape();
        let (outer, n, inner) = (
            d[..self.axis].iter().product::<usize>(),
            d[self.axis],
            d[self.axis + 1..].iter().product::<usize>(),
        );
        let k = self.k;
        let mut picks = vec![0; outer * k * inner];
        let mut idx = vec![0i64; outer * k * inner];
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| (o * n + j) * inner + i;
                let mut order: Vec<usize> = (0..n).collect();
                // A stable sort keeps equal elements in index order; NaN sorts as the largest.
                order.sort_by(|&a, &b| {
                    let (va, vb) = (num_at(x, at(a)), num_at(x, at(b)));
                    let ord = match (va, vb) {
                        (Num::F(p), Num::F(q)) => p.total_cmp(&q).then(std::cmp::Ordering::Equal),
                        _ => va.partial_cmp(&vb).unwrap_or(std::cmp::Ordering::Equal),
                    };
                    let ord = match (va, vb) {
                        (Num::F(p), Num::F(q)) if p == q => std::cmp::Ordering::Equal,
                        _ => ord,
                    };
                    if self.largest {
                        ord.reverse()
                    } else {
                        ord
                    }
                });
                for (s, &j) in order.iter().take(k).enumerate() {
                    let e = (o * k + s) * inner + i;
                    picks[e] = at(j);
                    idx[e] = j as i64;
                }
            }
        }
        let mut od = d.to_vec();
        od[self.axis] = k;
        Ok(vec![
            x.take(od.clone(), &picks),
            Tensor::from_i64(DType::I64, od, &idx),
        ])
    }
}
