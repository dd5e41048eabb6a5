//! Reductions: `Reduce` (ReduceSum, ReduceMean, ReduceMax, ... over a set of axes) and `ArgReduce`
//! (ArgMax, ArgMin along one axis).

use super::{check_axis, dims_of, for_each_index, invalid, req, req_t, strides_of, Fact, OpError};
use crate::attr::{Attr, Attrs};
use crate::{DType, Tensor, TensorType};

/// What a [`Reduce`] computes over each group of elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    /// `sum(x)`.
    Sum,
    /// `sum(x) / n`.
    Mean,
    /// `max(x)`.
    Max,
    /// `min(x)`.
    Min,
    /// `prod(x)`.
    Prod,
    /// `sum(|x|)`.
    L1,
    /// `sqrt(sum(x^2))`.
    L2,
    /// `log(sum(x))`.
    LogSum,
    /// `log(sum(exp(x)))`.
    LogSumExp,
    /// `sum(x^2)`.
    SumSquare,
}

impl ReduceKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ReduceKind; 10] = [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::Prod,
        ReduceKind::L1,
        ReduceKind::L2,
        ReduceKind::LogSum,
        ReduceKind::LogSumExp,
        ReduceKind::SumSquare,
    ];

    /// The textual IR name.
    pub fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "reduce_sum",
            ReduceKind::Mean => "reduce_mean",
            ReduceKind::Max => "reduce_max",
            ReduceKind::Min => "reduce_min",
            ReduceKind::Prod => "reduce_prod",
            ReduceKind::L1 => "reduce_l1",
            ReduceKind::L2 => "reduce_l2",
            ReduceKind::LogSum => "reduce_log_sum",
            ReduceKind::LogSumExp => "reduce_log_sum_exp",
            ReduceKind::SumSquare => "reduce_sum_square",
        }
    }

    /// The kind named `name` in the textual IR.
    pub fn from_name(name: &str) -> Option<ReduceKind> {
        ReduceKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the kind is defined on integer tensors (wrapping arithmetic, truncating mean).
    pub fn allows_int(self) -> bool {
        matches!(
            self,
            ReduceKind::Sum
                | ReduceKind::Mean
                | ReduceKind::Max
                | ReduceKind::Min
                | ReduceKind::Prod
                | ReduceKind::L1
                | ReduceKind::SumSquare
        )
    }

    /// The float result of reducing `v` (empty `v` gives the identity of the reduction: 0 for sums,
    /// 1 for products, -inf/+inf for max/min, `log(0) = -inf` for the log kinds, NaN for the mean).
    pub fn fold_f64(self, v: &[f64]) -> f64 {
        let sum = |f: &dyn Fn(f64) -> f64| v.iter().map(|&x| f(x)).sum::<f64>();
        match self {
            ReduceKind::Sum => sum(&|x| x),
            ReduceKind::Mean => sum(&|x| x) / v.len() as f64,
            ReduceKind::Max => v
                .iter()
                .fold(f64::NEG_INFINITY, |a, &b| super::nan_max(a, b)),
            ReduceKind::Min => v.iter().fold(f64::INFINITY, |a, &b| super::nan_min(a, b)),
            ReduceKind::Prod => v.iter().product(),
            ReduceKind::L1 => sum(&f64::abs),
            ReduceKind::L2 => sum(&|x| x * x).sqrt(),
            ReduceKind::LogSum => sum(&|x| x).ln(),
            ReduceKind::LogSumExp => {
                // Shifting by the maximum keeps exp from overflowing; an all -inf (or empty) group
                // is log(0) = -inf.
                let m = v.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                if m == f64::NEG_INFINITY || m.is_nan() {
                    return if v.iter().any(|x| x.is_nan()) {
                        f64::NAN
                    } else {
                        f64::NEG_INFINITY
                    };
                }
                m + sum(&|x| (x - m).exp()).ln()
            }
            ReduceKind::SumSquare => sum(&|x| x * x),
        }
    }
}

/// Reduction of the input over `axes`. An empty `axes` reduces nothing: every element is a group of
/// its own (ONNX `noop_with_empty_axes`), so for example `reduce_sum_square` squares elementwise.
/// The frontend turns "no axes given" (reduce everything) into the full axis list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reduce {
    /// What to compute.
    pub kind: ReduceKind,
    /// Reduced axes, normalized, sorted, without repeats.
    pub axes: Vec<usize>,
    /// Keep reduced axes as size 1.
    pub keepdims: bool,
}

impl Reduce {
    pub(crate) fn from_attrs(kind: ReduceKind, a: &Attrs) -> Result<Reduce, OpError> {
        Ok(Reduce {
            kind,
            axes: a.usizes("axes", None)?,
            keepdims: a.bool("keepdims", true)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("axes", super::ints(&self.axes)),
            ("keepdims", Attr::Int(self.keepdims as i64)),
        ]
    }

    /// Output dims for input dims `d`.
    pub fn out_dims(&self, d: &[usize]) -> Vec<usize> {
        (0..d.len())
            .filter_map(|i| match (self.axes.contains(&i), self.keepdims) {
                (false, _) => Some(d[i]),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect()
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let d = dims_of(x.ty)?;
        for &a in &self.axes {
            check_axis(a, d.len())?;
        }
        if self.axes.windows(2).any(|w| w[0] >= w[1]) {
            return invalid(format!("axes {:?} must be sorted and distinct", self.axes));
        }
        let dt = x.ty.dtype;
        let ok = dt.is_float()
            || (dt.is_int() && self.kind.allows_int() && dt.bits() >= 8)
            || (dt == DType::Bool && matches!(self.kind, ReduceKind::Max | ReduceKind::Min));
        if !ok {
            return Err(OpError::Unsupported(format!(
                "{} on {dt}",
                self.kind.name()
            )));
        }
        Ok(vec![TensorType::new(dt, &self.out_dims(&d))])
    }

    /// For every input element (row-major), the row-major index of its output element.
    fn groups(&self, d: &[usize]) -> Vec<usize> {
        let keep: Vec<usize> = (0..d.len())
            .map(|i| if self.axes.contains(&i) { 1 } else { d[i] })
            .collect();
        let ks = strides_of(&keep);
        let mut out = Vec::with_capacity(d.iter().product());
        for_each_index(d, |idx| {
            out.push(
                idx.iter()
                    .zip(&keep)
                    .zip(&ks)
                    .map(|((&i, &k), &s)| if k == 1 { 0 } else { i * s })
                    .sum(),
            );
        });
        out
    }

    /// Gathers the elements of each group, then folds each group: floats in f64, integers exactly
    /// (wrapping to the element width), bools as any/all.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let d = x.shape();
        let od = self.out_dims(d);
        let n_out: usize = od.iter().product();
        let groups = self.groups(d);
        let dt = x.dtype();
        if dt.is_float() {
            let mut vals: Vec<Vec<f64>> = vec![Vec::new(); n_out];
            for (i, &g) in groups.iter().enumerate() {
                vals[g].push(x.get_f64(i));
            }
            let out: Vec<f64> = vals.iter().map(|v| self.kind.fold_f64(v)).collect();
            return Ok(vec![Tensor::from_f64(dt, od, &out)]);
        }
        let mut vals: Vec<Vec<i128>> = vec![Vec::new(); n_out];
        for (i, &g) in groups.iter().enumerate() {
            vals[g].push(int_at(x, i));
        }
        let (lo, hi) = int_range(dt);
        let out: Vec<i64> = vals
            .iter()
            .map(|v| {
                let r: i128 = match self.kind {
                    ReduceKind::Sum => v.iter().fold(0i128, |a, &b| a.wrapping_add(b)),
                    ReduceKind::Mean if v.is_empty() => 0,
                    ReduceKind::Mean => v.iter().sum::<i128>() / v.len() as i128,
                    ReduceKind::Max => v.iter().copied().fold(lo, i128::max),
                    ReduceKind::Min => v.iter().copied().fold(hi, i128::min),
                    ReduceKind::Prod => v.iter().fold(1i128, |a, &b| a.wrapping_mul(b)),
                    ReduceKind::L1 => v.iter().fold(0i128, |a, &b| a.wrapping_add(b.abs())),
                    ReduceKind::SumSquare => v
                        .iter()
                        .fold(0i128, |a, &b| a.wrapping_add(b.wrapping_mul(b))),
                    // Rejected by inference.
                    ReduceKind::L2 | ReduceKind::LogSum | ReduceKind::LogSumExp => 0,
                };
                r as i64
            })
            .collect();
        Ok(vec![Tensor::from_i64(dt, od, &out)])
    }
}

/// Element `i` of an integer or bool tensor, exactly (u64 above 2^63 included).
fn int_at(t: &Tensor, i: usize) -> i128 {
    let v = t.get_i64(i);
    if t.dtype() == DType::U64 {
        v as u64 as i128
    } else {
        v as i128
    }
}

/// The smallest and largest value of an integer (or bool) dtype: the results of max and min over
/// an empty group.
pub fn int_range(d: DType) -> (i128, i128) {
    match d {
        DType::Bool => (0, 1),
        DType::I8 => (i8::MIN as i128, i8::MAX as i128),
        DType::U8 => (0, u8::MAX as i128),
        DType::I16 => (i16::MIN as i128, i16::MAX as i128),
        DType::U16 => (0, u16::MAX as i128),
        DType::I32 => (i32::MIN as i128, i32::MAX as i128),
        DType::U32 => (0, u32::MAX as i128),
        DType::U64 => (0, u64::MAX as i128),
        _ => (i64::MIN as i128, i64::MAX as i128),
    }
}

/// Index of the largest (`max`) or smallest element along `axis`, as i64. Ties go to the first
/// index, or the last with `select_last_index`. NaN counts as more extreme than any number (numpy's
/// `argmax`/`argmin` return the first NaN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgReduce {
    /// ArgMax (true) or ArgMin (false).
    pub max: bool,
    /// Normalized axis.
    pub axis: usize,
    /// Keep the axis as size 1.
    pub keepdims: bool,
    /// Ties resolve to the last index.
    pub select_last_index: bool,
}

impl ArgReduce {
    /// The textual IR name.
    pub fn name(&self) -> &'static str {
        if self.max {
            "argmax"
        } else {
            "argmin"
        }
    }

    pub(crate) fn from_attrs(max: bool, a: &Attrs) -> Result<ArgReduce, OpError> {
        Ok(ArgReduce {
            max,
            axis: a.usize("axis", None)?,
            keepdims: a.bool("keepdims", true)?,
            select_last_index: a.bool("select_last_index", false)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("axis", Attr::Int(self.axis as i64)),
            ("keepdims", Attr::Int(self.keepdims as i64)),
            (
                "select_last_index",
                Attr::Int(self.select_last_index as i64),
            ),
        ]
    }

    /// `(outer, len, inner)`: the input viewed as `[outer, len, inner]` with `len` the axis.
    pub fn split(&self, d: &[usize]) -> (usize, usize, usize) {
        (
            d[..self.axis].iter().product(),
            d[self.axis],
            d[self.axis + 1..].iter().product(),
        )
    }

    fn out_dims(&self, d: &[usize]) -> Vec<usize> {
        let mut o = d.to_vec();
        if self.keepdims {
            o[self.axis] = 1;
        } else {
            o.remove(self.axis);
        }
        o
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let d = dims_of(x.ty)?;
        check_axis(self.axis, d.len())?;
        let dt = x.ty.dtype;
        if !(dt.is_float() || dt.is_int() && dt.bits() >= 8) {
            return Err(OpError::Unsupported(format!("{} on {dt}", self.name())));
        }
        if d[self.axis] == 0 && self.out_dims(&d).iter().product::<usize>() > 0 {
            return invalid(format!(
                "{} over the empty axis {} has no answer",
                self.name(),
                self.axis
            ));
        }
        Ok(vec![TensorType::new(DType::I64, &self.out_dims(&d))])
    }

    /// Whether `v` beats the current best `b` (strictly, or also on ties with `select_last_index`).
    fn better(&self, v: f64, b: f64) -> bool {
        if b.is_nan() {
            return false;
        }
        if v.is_nan() {
            return true;
        }
        let (v, b) = if self.max { (v, b) } else { (-v, -b) };
        v > b || (self.select_last_index && v == b)
    }

    /// A linear scan of every `[outer, :, inner]` line.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let d = x.shape();
        let (outer, len, inner) = self.split(d);
        let mut out = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let at = |a: usize| (o * len + a) * inner + i;
                let mut best = 0usize;
                if x.dtype().is_float() {
                    for a in 1..len {
                        if self.better(x.get_f64(at(a)), x.get_f64(at(best))) {
                            best = a;
                        }
                    }
                } else {
                    // Integers compare through i128 so 64-bit values stay exact.
                    for a in 1..len {
                        let (v, b) = (int_at(x, at(a)), int_at(x, at(best)));
                        let (v, b) = if self.max { (v, b) } else { (-v, -b) };
                        if v > b || (self.select_last_index && v == b) {
                            best = a;
                        }
                    }
                }
                out.push(best as i64);
            }
        }
        Ok(vec![Tensor::from_i64(DType::I64, self.out_dims(d), &out)])
    }
}
