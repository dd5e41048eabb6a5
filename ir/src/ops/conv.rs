//! Convolution and pooling.

use super::elementwise::{apply_post, check_post, post_attr, post_from_attrs};
use super::{
    dims_of, for_each_index, ints, invalid, req, req_t, strides_of, Fact, OpError, UnaryOp,
};
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
///
/// Never panics: it runs on raw ONNX attributes before [`Conv`] and [`Pool`] inference validate them, so
/// missing entries, zero kernels or strides and empty inputs yield some pads and leave the error to
/// inference.
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
                let at = |v: &[usize]| v.get(i).copied().unwrap_or(1).max(1);
                let (stride, k, dil) = (at(strides), at(kernel), at(dilations));
                let out = input[i].div_ceil(stride);
                let eff_k = (k - 1).saturating_mul(dil).saturating_add(1);
                let total = out
                    .saturating_sub(1)
                    .saturating_mul(stride)
                    .saturating_add(eff_k)
                    .saturating_sub(input[i]);
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

/// Extent of a dilated window, `(k - 1) * dil + 1`, or an error when it overflows (absurd attributes
/// must be an error, not an arithmetic panic).
fn effective_kernel(k: usize, dil: usize) -> Result<usize, OpError> {
    k.saturating_sub(1)
        .checked_mul(dil)
        .and_then(|v| v.checked_add(1))
        .ok_or_else(|| OpError::Invalid(format!("kernel {k} with dilation {dil} is too large")))
}

/// Output size of one spatial axis of a sliding window.
fn window_out(
    input: usize,
    k: usize,
    stride: usize,
    dil: usize,
    pb: usize,
    pe: usize,
    ceil: bool,
) -> Result<usize, OpError> {
    let eff_k = effective_kernel(k, dil)?;
    let padded = input
        .checked_add(pb)
        .and_then(|v| v.checked_add(pe))
        .ok_or_else(|| OpError::Invalid(format!("pads {pb}+{pe} are too large")))?;
    if padded < eff_k {
        return invalid(format!(
            "window of {eff_k} does not fit input of {input} with pads {pb}+{pe}"
        ));
    }
    let span = padded - eff_k;
    let mut out = if ceil {
        span.div_ceil(stride) + 1
    } else {
        span / stride + 1
    };
    // In ceil mode the last window must start inside the input or the begin padding (windows that
    // would start in the end padding are dropped, as PyTorch and onnxruntime do). `padded` did not
    // overflow, so neither does `input + pb`.
    if ceil
        && (out - 1)
            .checked_mul(stride)
            .is_none_or(|start| start >= input + pb)
    {
        out -= 1;
    }
    Ok(out)
}

/// Input coordinate read by output position `o`, kernel tap `k` on one spatial axis, or `None` when the
/// tap falls in the padding. The arithmetic is in i128 so no attribute values can overflow it.
pub(super) fn tap(
    o: usize,
    k: usize,
    stride: usize,
    dil: usize,
    pad_begin: usize,
    input: usize,
) -> Option<usize> {
    let p = o as i128 * stride as i128 + k as i128 * dil as i128 - pad_begin as i128;
    (0..input as i128).contains(&p).then_some(p as usize)
}

pub(super) fn check_window(
    name: &str,
    rank: usize,
    kernel: &[usize],
    strides: &[usize],
    dil: &[usize],
    pads: &[usize],
) -> Result<(), OpError> {
    if kernel.len() != rank || strides.len() != rank || dil.len() != rank || pads.len() != 2 * rank
    {
        return invalid(format!(
            "{name}: kernel_shape, strides, dilations and pads must have {rank}, {rank}, {rank} and {} entries",
            2 * rank
        ));
    }
    if kernel.contains(&0) || strides.contains(&0) || dil.contains(&0) {
        return invalid(format!(
            "{name}: kernel_shape, strides and dilations must be positive"
        ));
    }
    Ok(())
}

/// Where the channel axis of an activation tensor sits, for the ops that have one (conv, pooling).
///
/// ONNX models are channels-first. The `choose-layout` pass may switch a region of the graph to
/// channels-last, where the channels of one position are contiguous: the backend then vectorizes
/// depthwise convolutions and pooling over channels and computes a convolution as
/// `Y[positions, M] = Col[positions, K] x W[K, M]` with the weights as the packed operand. The
/// weights stay OIHW whatever the layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `N x C x spatial...`, ONNX's layout.
    #[default]
    Nchw,
    /// `N x spatial... x C`.
    Nhwc,
}

impl Layout {
    /// The permutation (as a Transpose `perm`) that takes a rank-`rank` channels-first tensor to this
    /// layout: the identity for [`Layout::Nchw`], `[0, 2, .., rank-1, 1]` for [`Layout::Nhwc`].
    pub fn from_nchw(self, rank: usize) -> Vec<usize> {
        match self {
            Layout::Nchw => (0..rank).collect(),
            Layout::Nhwc => std::iter::once(0)
                .chain(2..rank)
                .chain(std::iter::once(1))
                .collect(),
        }
    }

    /// The inverse of [`Layout::from_nchw`]: this layout back to channels-first.
    pub fn to_nchw(self, rank: usize) -> Vec<usize> {
        match self {
            Layout::Nchw => (0..rank).collect(),
            Layout::Nhwc => std::iter::once(0)
                .chain(std::iter::once(rank - 1))
                .chain(1..rank - 1)
                .collect(),
        }
    }

    /// The axis holding the channels in a rank-`rank` tensor.
    pub fn channel_axis(self, rank: usize) -> usize {
        match self {
            Layout::Nchw => 1,
            Layout::Nhwc => rank - 1,
        }
    }

    /// The `layout` attribute of the textual IR: absent for the default, `"nhwc"` otherwise.
    fn attr(self) -> Option<(&'static str, Attr)> {
        (self == Layout::Nhwc).then(|| ("layout", Attr::Str("nhwc".into())))
    }

    fn from_attrs(a: &Attrs) -> Result<Layout, OpError> {
        match a.string("layout", Some("nchw"))?.as_str() {
            "nchw" => Ok(Layout::Nchw),
            "nhwc" => Ok(Layout::Nhwc),
            other => invalid(format!(
                "layout must be \"nchw\" or \"nhwc\", got \"{other}\""
            )),
        }
    }

    /// `ty` (in this layout) as the channels-first type the op's rules are written for.
    fn type_to_nchw(self, ty: &TensorType) -> TensorType {
        let perm = self.to_nchw(ty.rank());
        TensorType {
            dtype: ty.dtype,
            shape: perm.iter().map(|&p| ty.shape[p].clone()).collect(),
        }
    }

    /// A channels-first result type in this layout.
    fn type_from_nchw(self, ty: TensorType) -> TensorType {
        let perm = self.from_nchw(ty.rank());
        TensorType {
            dtype: ty.dtype,
            shape: perm.iter().map(|&p| ty.shape[p].clone()).collect(),
        }
    }

    /// Runs a channels-first `infer` on input 0 seen channels-first, and gives its results back in
    /// this layout. Only input 0 (the activation) has a layout; weights and biases do not.
    fn infer_via_nchw(
        self,
        ins: &[Option<Fact>],
        infer: impl FnOnce(&[Option<Fact>]) -> Result<Vec<TensorType>, OpError>,
    ) -> Result<Vec<TensorType>, OpError> {
        if self == Layout::Nchw {
            return infer(ins);
        }
        let x = req(ins, 0)?;
        if x.ty.rank() < 3 {
            return invalid(format!(
                "channels-last input must be N x spatial... x C, got rank {}",
                x.ty.rank()
            ));
        }
        let xt = self.type_to_nchw(x.ty);
        let mut v: Vec<Option<Fact>> = ins.to_vec();
        v[0] = Some(Fact {
            ty: &xt,
            value: None,
        });
        Ok(infer(&v)?
            .into_iter()
            .map(|t| self.type_from_nchw(t))
            .collect())
    }

    /// Runs a channels-first `eval` on input 0 transposed to channels-first and transposes its
    /// results back: the reference semantics of the channels-last ops.
    fn eval_via_nchw(
        self,
        ins: &[Option<&Tensor>],
        eval: impl FnOnce(&[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError>,
    ) -> Result<Vec<Tensor>, OpError> {
        if self == Layout::Nchw {
            return eval(ins);
        }
        let x = req_t(ins, 0)?;
        let rank = x.shape().len();
        let to = super::Transpose {
            perm: self.to_nchw(rank),
        };
        let from = super::Transpose {
            perm: self.from_nchw(rank),
        };
        let xt = to.eval(&[Some(x)])?.remove(0);
        let mut v: Vec<Option<&Tensor>> = ins.to_vec();
        v[0] = Some(&xt);
        eval(&v)?
            .iter()
            .map(|y| Ok(from.eval(&[Some(y)])?.remove(0)))
            .collect()
    }
}

/// N-d convolution (OIHW weights) with groups, on channels-first input unless `layout` says otherwise.
/// Pads are explicit `[begin..., end...]`.
#[derive(Clone, Debug, PartialEq)]
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
    /// Activations applied in order to every output element (after the bias), set by the fusion
    /// passes so that the kernel applies them before its store. Empty for a plain ONNX Conv.
    pub post: Vec<UnaryOp>,
    /// Layout of the input and output activations.
    pub layout: Layout,
}

impl Conv {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Conv, OpError> {
        Ok(Conv {
            kernel_shape: a.usizes("kernel_shape", None)?,
            strides: a.usizes("strides", None)?,
            dilations: a.usizes("dilations", None)?,
            pads: a.usizes("pads", None)?,
            group: a.usize("group", Some(1))?,
            post: post_from_attrs(a)?,
            layout: Layout::from_attrs(a)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let mut v = vec![
            ("kernel_shape", ints(&self.kernel_shape)),
            ("strides", ints(&self.strides)),
            ("pads", ints(&self.pads)),
            ("dilations", ints(&self.dilations)),
            ("group", Attr::Int(self.group as i64)),
        ];
        v.extend(post_attr(&self.post));
        v.extend(self.layout.attr());
        v
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        self.layout.infer_via_nchw(ins, |ins| self.infer_nchw(ins))
    }

    fn infer_nchw(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let w = req(ins, 1)?;
        let xd = dims_of(x.ty)?;
        let wd = dims_of(w.ty)?;
        if xd.len() < 3 {
            return invalid(format!(
                "input must be N x C x spatial..., got rank {}",
                xd.len()
            ));
        }
        if !x.ty.dtype.is_float() || w.ty.dtype != x.ty.dtype {
            return Err(OpError::Unsupported(format!(
                "conv with input {} and weights {}",
                x.ty.dtype, w.ty.dtype
            )));
        }
        check_post(&self.post, x.ty.dtype)?;
        let r = xd.len() - 2;
        check_window(
            "conv",
            r,
            &self.kernel_shape,
            &self.strides,
            &self.dilations,
            &self.pads,
        )?;
        if wd.len() != xd.len() {
            return invalid(format!(
                "weights rank {} differs from input rank {}",
                wd.len(),
                xd.len()
            ));
        }
        let (c, m, g) = (xd[1], wd[0], self.group);
        if g == 0 || c % g != 0 || m % g != 0 || wd[1].checked_mul(g) != Some(c) {
            return invalid(format!(
                "channels do not match groups: input has {c} channels, weights {:?}, group {g}",
                wd
            ));
        }
        if wd[2..] != self.kernel_shape[..] {
            return invalid(format!(
                "kernel_shape {:?} differs from weight shape {:?}",
                self.kernel_shape, wd
            ));
        }
        if let Some(b) = ins.get(2).and_then(|b| b.as_ref()) {
            if dims_of(b.ty)? != [m] || b.ty.dtype != x.ty.dtype {
                return invalid(format!("bias must be {}[{m}], got {}", x.ty.dtype, b.ty));
            }
        }
        let mut out = vec![Dim::Const(xd[0]), Dim::Const(m)];
        out.extend(self.out_spatial(&xd)?.into_iter().map(Dim::Const));
        Ok(vec![TensorType {
            dtype: x.ty.dtype,
            shape: out,
        }])
    }

    /// Direct convolution: every output element sums `x * w` over its group's input channels and every
    /// kernel tap; taps in the padding read zero. Inputs are validated by [`crate::Op::eval`].
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        self.layout.eval_via_nchw(ins, |ins| self.eval_nchw(ins))
    }

    fn eval_nchw(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, w) = (req_t(ins, 0)?, req_t(ins, 1)?);
        let bias = ins.get(2).copied().flatten().map(Tensor::to_f64_vec);
        let (xd, wd) = (x.shape(), w.shape());
        let r = xd.len() - 2;
        let (n, m) = (xd[0], wd[0]);
        // Input channels per group (= wd[1]) and output channels per group.
        let (cg, mg) = (wd[1], m / self.group);
        let out_sp = self.out_spatial(xd)?;
        let (xv, wv) = (x.to_f64_vec(), w.to_f64_vec());
        let (xs, ws) = (strides_of(xd), strides_of(wd));
        let mut out = Vec::new();
        for ni in 0..n {
            for mi in 0..m {
                let group = mi / mg;
                for_each_index(&out_sp, |o| {
                    let mut acc = bias.as_ref().map_or(0.0, |b| b[mi]);
                    for ci in 0..cg {
                        let xc = group * cg + ci;
                        for_each_index(&self.kernel_shape, |k| {
                            let mut xi = ni * xs[0] + xc * xs[1];
                            let mut wi = mi * ws[0] + ci * ws[1];
                            for a in 0..r {
                                let Some(p) = tap(
                                    o[a],
                                    k[a],
                                    self.strides[a],
                                    self.dilations[a],
                                    self.pads[a],
                                    xd[2 + a],
                                ) else {
                                    return;
                                };
                                xi += p * xs[2 + a];
                                wi += k[a] * ws[2 + a];
                            }
                            acc += xv[xi] * wv[wi];
                        });
                    }
                    out.push(acc);
                });
            }
        }
        let mut shape = vec![n, m];
        shape.extend(out_sp);
        let y = Tensor::from_f64(x.dtype(), shape, &out);
        Ok(vec![apply_post(&self.post, y)?])
    }

    fn out_spatial(&self, xd: &[usize]) -> Result<Vec<usize>, OpError> {
        let r = xd.len() - 2;
        (0..r)
            .map(|i| {
                let (k, s, d) = (self.kernel_shape[i], self.strides[i], self.dilations[i]);
                window_out(xd[2 + i], k, s, d, self.pads[i], self.pads[i + r], false)
            })
            .collect()
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
    /// Layout of the input and output.
    pub layout: Layout,
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
            layout: Layout::from_attrs(a)?,
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
            v.push((
                "count_include_pad",
                Attr::Int(self.count_include_pad as i64),
            ));
        }
        v.extend(self.layout.attr());
        v
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        self.layout.infer_via_nchw(ins, |ins| self.infer_nchw(ins))
    }

    fn infer_nchw(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let xd = dims_of(x.ty)?;
        if xd.len() < 3 {
            return invalid(format!(
                "input must be N x C x spatial..., got rank {}",
                xd.len()
            ));
        }
        // Max pooling only compares, so it is exact on integers too (up to 32 bits through the f64
        // evaluator); averages are float-only.
        let max_int = self.kind == PoolKind::Max && x.ty.dtype.is_int() && x.ty.dtype.bits() >= 8;
        if !x.ty.dtype.is_float() && !max_int {
            return Err(OpError::Unsupported(format!(
                "{} on {}",
                self.name(),
                x.ty.dtype
            )));
        }
        let r = xd.len() - 2;
        check_window(
            self.name(),
            r,
            &self.kernel_shape,
            &self.strides,
            &self.dilations,
            &self.pads,
        )?;
        for i in 0..r {
            let eff_k = effective_kernel(self.kernel_shape[i], self.dilations[i])?;
            if self.pads[i] >= eff_k || self.pads[i + r] >= eff_k {
                return invalid(format!(
                    "pads {:?} must be smaller than the window {:?}",
                    self.pads, self.kernel_shape
                ));
            }
        }
        let out_sp = self.out_spatial(&xd)?;
        let mut out = vec![Dim::Const(xd[0]), Dim::Const(xd[1])];
        out.extend(out_sp.iter().map(|&o| Dim::Const(o)));
        Ok(vec![TensorType {
            dtype: x.ty.dtype,
            shape: out,
        }])
    }

    /// Spatial output sizes, after checking that every window reads at least one input element (a
    /// window of padding only has no maximum, and no average when padding is not counted).
    pub(crate) fn out_spatial(&self, xd: &[usize]) -> Result<Vec<usize>, OpError> {
        let r = xd.len() - 2;
        let mut out = Vec::with_capacity(r);
        for i in 0..r {
            let (input, k, s, d, pb) = (
                xd[2 + i],
                self.kernel_shape[i],
                self.strides[i],
                self.dilations[i],
                self.pads[i],
            );
            let o = window_out(input, k, s, d, pb, self.pads[i + r], self.ceil_mode)?;
            // A window that starts inside the input reads its first tap, and windows never start in the
            // end padding (pads < window, ceil mode drops such windows), so only windows that start in
            // the begin padding can miss the input: the first ceil(pb / s) of them.
            let suspects = pb.div_ceil(s).min(o);
            if suspects > 1 << 16 {
                return Err(OpError::Unsupported(format!(
                    "{}: begin padding {pb} is too large",
                    self.name()
                )));
            }
            for w in 0..suspects {
                // First tap at or after input coordinate 0, and whether it is still inside the input.
                let start = w as i128 * s as i128 - pb as i128;
                let first = ((-start).max(0) + d as i128 - 1) / d as i128;
                if first >= k as i128 || start + first * d as i128 >= input as i128 {
                    return invalid(format!(
                        "{}: output {w} of spatial axis {i} covers only padding (kernel {k}, dilation {d}, pads {:?})",
                        self.name(),
                        self.pads
                    ));
                }
            }
            out.push(o);
        }
        Ok(out)
    }

    /// Direct pooling. Max: padding never wins (only taps inside the input are compared) and NaN
    /// propagates. Average: the
    /// sum of the taps inside the input, divided by the number of taps inside the input, or with
    /// `count_include_pad` by the number of taps inside the padded input; taps past the end padding
    /// (the overhang of a ceil-mode window) never count, as in PyTorch and onnxruntime.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        self.layout.eval_via_nchw(ins, |ins| self.eval_nchw(ins))
    }

    fn eval_nchw(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let xd = x.shape();
        let r = xd.len() - 2;
        let out_sp = self.out_spatial(xd)?;
        let xv = x.to_f64_vec();
        let xs = strides_of(xd);
        let mut out = Vec::new();
        for ni in 0..xd[0] {
            for ci in 0..xd[1] {
                let base = ni * xs[0] + ci * xs[1];
                for_each_index(&out_sp, |o| {
                    let (mut max, mut sum, mut inside, mut padded) =
                        (f64::NEG_INFINITY, 0.0, 0usize, 0usize);
                    for_each_index(&self.kernel_shape, |k| {
                        let mut xi = base;
                        let mut in_input = true;
                        let mut in_padded = true;
                        for a in 0..r {
                            let (s, d, pb) = (self.strides[a], self.dilations[a], self.pads[a]);
                            match tap(o[a], k[a], s, d, pb, xd[2 + a]) {
                                Some(p) => xi += p * xs[2 + a],
                                None => {
                                    in_input = false;
                                    // Padded coordinate of the tap; inside the padded input when below
                                    // input + begin pad + end pad.
                                    let pc = o[a] as u128 * s as u128 + k[a] as u128 * d as u128;
                                    in_padded &= pc < (xd[2 + a] + pb + self.pads[a + r]) as u128;
                                }
                            }
                        }
                        if in_input {
                            max = super::nan_max(max, xv[xi]);
                            sum += xv[xi];
                            inside += 1;
                        }
                        if in_input || in_padded {
                            padded += 1;
                        }
                    });
                    out.push(match self.kind {
                        PoolKind::Max => max,
                        PoolKind::Avg if self.count_include_pad => sum / padded as f64,
                        PoolKind::Avg => sum / inside as f64,
                    });
                });
            }
        }
        let mut shape = xd[..2].to_vec();
        shape.extend(out_sp);
        Ok(vec![Tensor::from_f64(x.dtype(), shape, &out)])
    }
}

/// Pooling over every spatial position: `N x C x ... -> N x C x 1 x ...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalPool {
    /// Max or average.
    pub kind: PoolKind,
    /// Layout of the input and output (`N x 1 x ... x C` channels-last).
    pub layout: Layout,
}

impl GlobalPool {
    pub(crate) fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "global_max_pool",
            PoolKind::Avg => "global_avg_pool",
        }
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        self.layout.attr().into_iter().collect()
    }

    pub(crate) fn from_attrs(kind: PoolKind, a: &Attrs) -> Result<GlobalPool, OpError> {
        Ok(GlobalPool {
            kind,
            layout: Layout::from_attrs(a)?,
        })
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        self.layout.infer_via_nchw(ins, |ins| self.infer_nchw(ins))
    }

    fn infer_nchw(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        if x.ty.rank() < 3 {
            return invalid(format!(
                "input must be N x C x spatial..., got rank {}",
                x.ty.rank()
            ));
        }
        if !x.ty.dtype.is_float() {
            return Err(OpError::Unsupported(format!(
                "{} on {}",
                self.name(),
                x.ty.dtype
            )));
        }
        let mut shape = x.ty.shape[..2].to_vec();
        shape.extend(std::iter::repeat_n(Dim::Const(1), x.ty.rank() - 2));
        Ok(vec![TensorType {
            dtype: x.ty.dtype,
            shape,
        }])
    }

    /// Max or mean of each `(n, c)` plane.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        self.layout.eval_via_nchw(ins, |ins| self.eval_nchw(ins))
    }

    fn eval_nchw(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let xd = x.shape();
        let plane: usize = xd[2..].iter().product();
        let xv = x.to_f64_vec();
        let out: Vec<f64> = (0..xd[0] * xd[1])
            .map(|p| {
                let vals = &xv[p * plane..(p + 1) * plane];
                match self.kind {
                    PoolKind::Max => vals
                        .iter()
                        .fold(f64::NEG_INFINITY, |m, &v| super::nan_max(m, v)),
                    PoolKind::Avg => vals.iter().sum::<f64>() / plane as f64,
                }
            })
            .collect();
        let mut shape = xd[..2].to_vec();
        shape.extend(std::iter::repeat_n(1, xd.len() - 2));
        Ok(vec![Tensor::from_f64(x.dtype(), shape, &out)])
    }
}
