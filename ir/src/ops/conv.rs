//! Convolution and pooling.

use super::{dims_of, ints, invalid, req, Fact, OpError};
use crate::attr::{Attr, Attrs};
use crate::{Dim, Tensor, TensorType};

/// ONNX `auto_pad`, resolved to explicit pads by the frontend with [`resolve_auto_pad`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoPad {
    /// Use the explicit `pads`.
    NotSet,
    /// Pad so that output = ceil(input / stride); extra padding at the end.
    SameUpper,
    /// Same, extra padding at the beginning.
    SameLower,
    /// No padding.
    Valid,
}

/// Explicit pads (`[begin..., end...]`) for an `auto_pad` mode, given the spatial input sizes.
pub fn resolve_auto_pad(
    mode: AutoPad,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    explicit: &[usize],
) -> Vec<usize> {
    let r = input.len();
    match mode {
        AutoPad::NotSet => explicit.to_vec(),
        AutoPad::Valid => vec![0; 2 * r],
        AutoPad::SameUpper | AutoPad::SameLower => {
            let mut pads = vec![0; 2 * r];
            for i in 0..r {
                let out = input[i].div_ceil(strides[i]);
                let eff_k = (kernel[i] - 1) * dilations[i] + 1;
                let total = ((out - 1) * strides[i] + eff_k).saturating_sub(input[i]);
                let small = total / 2;
                let big = total - small;
                if mode == AutoPad::SameUpper {
                    pads[i] = small;
                    pads[i + r] = big;
                } else {
                    pads[i] = big;
                    pads[i + r] = small;
                }
            }
            pads
        }
    }
}

/// Output size of one spatial axis of a sliding window.
fn window_out(input: usize, k: usize, stride: usize, dil: usize, pb: usize, pe: usize, ceil: bool) -> Result<usize, OpError> {
    let eff_k = (k - 1) * dil + 1;
    let padded = input + pb + pe;
    if padded < eff_k {
        return invalid(format!("window of {eff_k} does not fit input of {input} with pads {pb}+{pe}"));
    }
    let span = padded - eff_k;
    let mut out = if ceil { span.div_ceil(stride) + 1 } else { span / stride + 1 };
    // In ceil mode the last window must start inside the input or the begin padding.
    if ceil && (out - 1) * stride >= input + pb {
        out -= 1;
    }
    Ok(out)
}

fn check_window(name: &str, rank: usize, kernel: &[usize], strides: &[usize], dil: &[usize], pads: &[usize]) -> Result<(), OpError> {
    if kernel.len() != rank || strides.len() != rank || dil.len() != rank || pads.len() != 2 * rank {
        return invalid(format!(
            "{name}: kernel_shape, strides, dilations and pads must have {rank}, {rank}, {rank} and {} entries",
            2 * rank
        ));
    }
    if kernel.contains(&0) || strides.contains(&0) || dil.contains(&0) {
        return invalid(format!("{name}: kernel_shape, strides and dilations must be positive"));
    }
    Ok(())
}

/// N-d convolution (NCHW layout, OIHW weights) with groups. Pads are explicit `[begin..., end...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conv {
    /// Spatial kernel size.
    pub kernel_shape: Vec<usize>,
    /// Strides per spatial axis.
    pub strides: Vec<usize>,
    /// Dilations per spatial axis.
    pub dilations: Vec<usize>,
    /// Padding: begins then ends.
    pub pads: Vec<usize>,
    /// Number of groups (`group == C == M` is depthwise).
    pub group: usize,
}

impl Conv {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Conv, OpError> {
        Ok(Conv {
            kernel_shape: a.usizes("kernel_shape", None)?,
            strides: a.usizes("strides", None)?,
            dilations: a.usizes("dilations", None)?,
            pads: a.usizes("pads", None)?,
            group: a.int("group", Some(1))? as usize,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("kernel_shape", ints(&self.kernel_shape)),
            ("strides", ints(&self.strides)),
            ("pads", ints(&self.pads)),
            ("dilations", ints(&self.dilations)),
            ("group", Attr::Int(self.group as i64)),
        ]
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let w = req(ins, 1)?;
        let xd = dims_of(x.ty)?;
        let wd = dims_of(w.ty)?;
        if xd.len() < 3 {
            return invalid(format!("input must be N x C x spatial..., got rank {}", xd.len()));
        }
        if !x.ty.dtype.is_float() || w.ty.dtype != x.ty.dtype {
            return Err(OpError::Unsupported(format!("conv with input {} and weights {}", x.ty.dtype, w.ty.dtype)));
        }
        let r = xd.len() - 2;
        check_window("conv", r, &self.kernel_shape, &self.strides, &self.dilations, &self.pads)?;
        if wd.len() != xd.len() {
            return invalid(format!("weights rank {} differs from input rank {}", wd.len(), xd.len()));
        }
        let (c, m, g) = (xd[1], wd[0], self.group);
        if g == 0 || c % g != 0 || m % g != 0 || wd[1] * g != c {
            return invalid(format!(
                "channels do not match groups: input has {c} channels, weights {:?}, group {g}",
                wd
            ));
        }
        if wd[2..] != self.kernel_shape[..] {
            return invalid(format!("kernel_shape {:?} differs from weight shape {:?}", self.kernel_shape, wd));
        }
        if let Some(b) = ins.get(2).and_then(|b| b.as_ref()) {
            if dims_of(b.ty)? != [m] || b.ty.dtype != x.ty.dtype {
                return invalid(format!("bias must be {}[{m}], got {}", x.ty.dtype, b.ty));
            }
        }
        let mut out = vec![Dim::Const(xd[0]), Dim::Const(m)];
        for i in 0..r {
            let o = window_out(xd[2 + i], self.kernel_shape[i], self.strides[i], self.dilations[i], self.pads[i], self.pads[i + r], false)?;
            out.push(Dim::Const(o));
        }
        Ok(vec![TensorType { dtype: x.ty.dtype, shape: out }])
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let _ = ins;
        Err(OpError::Unsupported("EVAL-PENDING conv".into()))
    }
}

/// Kind of pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    /// Maximum over the window (padding never wins).
    Max,
    /// Average over the window.
    Avg,
}

/// Windowed pooling (MaxPool, AveragePool). Pads are explicit `[begin..., end...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    /// Max or average.
    pub kind: PoolKind,
    /// Window size.
    pub kernel_shape: Vec<usize>,
    /// Strides.
    pub strides: Vec<usize>,
    /// Padding: begins then ends.
    pub pads: Vec<usize>,
    /// Dilations.
    pub dilations: Vec<usize>,
    /// Round output size up instead of down.
    pub ceil_mode: bool,
    /// For average pooling: divide by the full window, padding included.
    pub count_include_pad: bool,
}

impl Pool {
    pub(crate) fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "max_pool",
            PoolKind::Avg => "avg_pool",
        }
    }

    pub(crate) fn from_attrs(kind: PoolKind, a: &Attrs) -> Result<Pool, OpError> {
        Ok(Pool {
            kind,
            kernel_shape: a.usizes("kernel_shape", None)?,
            strides: a.usizes("strides", None)?,
            pads: a.usizes("pads", None)?,
            dilations: a.usizes("dilations", None)?,
            ceil_mode: a.bool("ceil_mode", false)?,
            count_include_pad: a.bool("count_include_pad", false)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let mut v = vec![
            ("kernel_shape", ints(&self.kernel_shape)),
            ("strides", ints(&self.strides)),
            ("pads", ints(&self.pads)),
            ("dilations", ints(&self.dilations)),
            ("ceil_mode", Attr::Int(self.ceil_mode as i64)),
        ];
        if self.kind == PoolKind::Avg {
            v.push(("count_include_pad", Attr::Int(self.count_include_pad as i64)));
        }
        v
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let xd = dims_of(x.ty)?;
        if xd.len() < 3 {
            return invalid(format!("input must be N x C x spatial..., got rank {}", xd.len()));
        }
        if !x.ty.dtype.is_float() {
            return Err(OpError::Unsupported(format!("{} on {}", self.name(), x.ty.dtype)));
        }
        let r = xd.len() - 2;
        check_window(self.name(), r, &self.kernel_shape, &self.strides, &self.dilations, &self.pads)?;
        for i in 0..r {
            let eff_k = (self.kernel_shape[i] - 1) * self.dilations[i] + 1;
            if self.pads[i] >= eff_k || self.pads[i + r] >= eff_k {
                return invalid(format!("pads {:?} must be smaller than the window {:?}", self.pads, self.kernel_shape));
            }
        }
        let mut out = vec![Dim::Const(xd[0]), Dim::Const(xd[1])];
        for i in 0..r {
            let o = window_out(xd[2 + i], self.kernel_shape[i], self.strides[i], self.dilations[i], self.pads[i], self.pads[i + r], self.ceil_mode)?;
            out.push(Dim::Const(o));
        }
        Ok(vec![TensorType { dtype: x.ty.dtype, shape: out }])
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let _ = ins;
        Err(OpError::Unsupported("EVAL-PENDING pool".into()))
    }
}

/// Pooling over every spatial position: `N x C x ... -> N x C x 1 x ...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalPool {
    /// Max or average.
    pub kind: PoolKind,
}

impl GlobalPool {
    pub(crate) fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "global_max_pool",
            PoolKind::Avg => "global_avg_pool",
        }
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        if x.ty.rank() < 3 {
            return invalid(format!("input must be N x C x spatial..., got rank {}", x.ty.rank()));
        }
        if !x.ty.dtype.is_float() {
            return Err(OpError::Unsupported(format!("{} on {}", self.name(), x.ty.dtype)));
        }
        let mut shape = x.ty.shape[..2].to_vec();
        shape.extend(std::iter::repeat_n(Dim::Const(1), x.ty.rank() - 2));
        Ok(vec![TensorType { dtype: x.ty.dtype, shape }])
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let _ = ins;
        Err(OpError::Unsupported("EVAL-PENDING global_pool".into()))
    }
}
