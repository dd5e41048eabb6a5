//! Resize (and the legacy Upsample, which the frontend maps onto it): nearest, linear and cubic
//! interpolation, separable per axis, with ONNX's coordinate transformations.
//!
//! Everything that depends only on shapes and attributes (which input elements an output element reads
//! and with which weights) is computed by [`Resize::axis_plan`], once per axis. The reference evaluator
//! applies those plans one axis at a time in f64, as the ONNX reference does; the backend turns the same
//! plans into tables, so the two cannot disagree about coordinates.

use super::{dims_of, invalid, req, req_t, Fact, OpError};
use crate::attr::{Attr, Attrs};
use crate::{Tensor, TensorType};

/// How a fractional source coordinate rounds in nearest mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestMode {
    /// Round half down.
    RoundPreferFloor,
    /// Round half up.
    RoundPreferCeil,
    /// Round down.
    Floor,
    /// Round up.
    Ceil,
}

impl NearestMode {
    /// ONNX spelling.
    pub fn name(self) -> &'static str {
        match self {
            NearestMode::RoundPreferFloor => "round_prefer_floor",
            NearestMode::RoundPreferCeil => "round_prefer_ceil",
            NearestMode::Floor => "floor",
            NearestMode::Ceil => "ceil",
        }
    }

    /// Inverse of [`NearestMode::name`].
    pub fn from_name(s: &str) -> Option<NearestMode> {
        [
            NearestMode::RoundPreferFloor,
            NearestMode::RoundPreferCeil,
            NearestMode::Floor,
            NearestMode::Ceil,
        ]
        .into_iter()
        .find(|m| m.name() == s)
    }
}

/// Interpolation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResizeMode {
    /// Nearest neighbour.
    Nearest(NearestMode),
    /// (Bi/tri)linear.
    Linear,
    /// Cubic convolution with coefficient `a`.
    Cubic {
        /// The `cubic_coeff_a` attribute (-0.75 by default, -0.5 for Keys' kernel).
        a: f32,
    },
}

/// How an output coordinate maps to an input coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordMode {
    /// `(x + 0.5) / scale - 0.5`.
    HalfPixel,
    /// Half pixel, centred when the output size was rounded.
    HalfPixelSymmetric,
    /// Half pixel, except that a length-1 output reads source coordinate `-0.5` (as PyTorch).
    PytorchHalfPixel,
    /// Corners of input and output align.
    AlignCorners,
    /// `x / scale`.
    Asymmetric,
    /// Crop to the region of interest, then align corners; outside it, the extrapolation value.
    TfCropAndResize,
}

impl CoordMode {
    /// ONNX spelling.
    pub fn name(self) -> &'static str {
        match self {
            CoordMode::HalfPixel => "half_pixel",
            CoordMode::HalfPixelSymmetric => "half_pixel_symmetric",
            CoordMode::PytorchHalfPixel => "pytorch_half_pixel",
            CoordMode::AlignCorners => "align_corners",
            CoordMode::Asymmetric => "asymmetric",
            CoordMode::TfCropAndResize => "tf_crop_and_resize",
        }
    }

    /// Inverse of [`CoordMode::name`].
    pub fn from_name(s: &str) -> Option<CoordMode> {
        [
            CoordMode::HalfPixel,
            CoordMode::HalfPixelSymmetric,
            CoordMode::PytorchHalfPixel,
            CoordMode::AlignCorners,
            CoordMode::Asymmetric,
            CoordMode::TfCropAndResize,
        ]
        .into_iter()
        .find(|m| m.name() == s)
    }
}

/// Resize with every size resolved: `scales[i]` and `sizes[i]` for every input axis (1.0 and the
/// input size on the axes ONNX leaves alone).
#[derive(Clone, Debug, PartialEq)]
pub struct Resize {
    /// Interpolation.
    pub mode: ResizeMode,
    /// Coordinate transformation.
    pub coord: CoordMode,
    /// Drop taps outside the input and renormalize the weights.
    pub exclude_outside: bool,
    /// Widen linear and cubic kernels when downsampling.
    pub antialias: bool,
    /// Value of outputs outside the region of interest (`tf_crop_and_resize`).
    pub extrapolation_value: f32,
    /// Scale per axis (output over input), as ONNX computes it.
    pub scales: Vec<f64>,
    /// Output size per axis.
    pub sizes: Vec<usize>,
    /// Region of interest `[starts..., ends...]` (normalized coordinates), or empty.
    pub roi: Vec<f32>,
}

/// Which input elements one axis of the output reads, and how much of each.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisPlan {
    /// Taps per output element.
    pub taps: usize,
    /// `index[o * taps + t]`: input coordinate of tap `t` of output `o` (always in range).
    pub index: Vec<usize>,
    /// Weight of each tap (same layout); a row sums to 1.
    pub weight: Vec<f64>,
    /// Outputs that take the extrapolation value instead.
    pub extrapolated: Vec<bool>,
}

impl AxisPlan {
    /// The tap a nearest-mode output `o` reads (the one of weight 1).
    pub fn nearest(&self, o: usize) -> usize {
        let row = o * self.taps;
        let t = (0..self.taps)
            .find(|&t| self.weight[row + t] == 1.0)
            .unwrap_or(0);
        self.index[row + t]
    }
}

fn is_close(a: f64, b: f64) -> bool {
    // Python's math.isclose with its default relative tolerance, as the reference uses.
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

impl Resize {
    /// Textual name.
    pub fn name(&self) -> &'static str {
        "resize"
    }

    pub(crate) fn from_attrs(a: &Attrs) -> Result<Resize, OpError> {
        let mode = a.string("mode", None)?;
        let mode = match mode.as_str() {
            "nearest" => {
                let n = a.string("nearest_mode", Some("round_prefer_floor"))?;
                ResizeMode::Nearest(
                    NearestMode::from_name(&n)
                        .ok_or_else(|| OpError::Invalid(format!("unknown nearest_mode `{n}`")))?,
                )
            }
            "linear" => ResizeMode::Linear,
            "cubic" => ResizeMode::Cubic {
                a: a.float("cubic_coeff_a", Some(-0.75))?,
            },
            m => return invalid(format!("unknown resize mode `{m}`")),
        };
        let coord = a.string("coordinate_transformation_mode", None)?;
        let scales = a.string("scales", None)?;
        let scales = scales
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.trim()
                    .parse::<f64>()
                    .map_err(|_| OpError::Invalid(format!("bad scale `{s}`")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Resize {
            mode,
            coord: CoordMode::from_name(&coord).ok_or_else(|| {
                OpError::Invalid(format!("unknown coordinate_transformation_mode `{coord}`"))
            })?,
            exclude_outside: a.bool("exclude_outside", false)?,
            antialias: a.bool("antialias", false)?,
            extrapolation_value: a.float("extrapolation_value", Some(0.0))?,
            scales,
            sizes: a.usizes("sizes", None)?,
            roi: a.floats("roi", Some(vec![]))?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let mut v = vec![];
        match self.mode {
            ResizeMode::Nearest(n) => {
                v.push(("mode", Attr::Str("nearest".into())));
                v.push(("nearest_mode", Attr::Str(n.name().into())));
            }
            ResizeMode::Linear => v.push(("mode", Attr::Str("linear".into()))),
            ResizeMode::Cubic { a } => {
                v.push(("mode", Attr::Str("cubic".into())));
                v.push(("cubic_coeff_a", Attr::Float(a)));
            }
        }
        v.push((
            "coordinate_transformation_mode",
            Attr::Str(self.coord.name().into()),
        ));
        v.push(("exclude_outside", Attr::Int(self.exclude_outside as i64)));
        v.push(("antialias", Attr::Int(self.antialias as i64)));
        v.push(("extrapolation_value", Attr::Float(self.extrapolation_value)));
        // Scales are f64 (a ratio of sizes need not be an f32); `{:?}` prints them so they parse back
        // exactly.
        let s: Vec<String> = self.scales.iter().map(|x| format!("{x:?}")).collect();
        v.push(("scales", Attr::Str(s.join(","))));
        v.push(("sizes", super::ints(&self.sizes)));
        if !self.roi.is_empty() {
            v.push(("roi", Attr::Floats(self.roi.clone())));
        }
        v
    }

    fn check(&self, d: &[usize]) -> Result<(), OpError> {
        let r = d.len();
        if self.scales.len() != r || self.sizes.len() != r {
            return invalid(format!(
                "scales {:?} and sizes {:?} must have one entry per axis of {d:?}",
                self.scales, self.sizes
            ));
        }
        if !self.roi.is_empty() && self.roi.len() != 2 * r {
            return invalid(format!("roi {:?} must have {} entries", self.roi, 2 * r));
        }
        if self.coord == CoordMode::TfCropAndResize && self.roi.is_empty() {
            return invalid("tf_crop_and_resize needs a roi");
        }
        for (a, (&n, (&s, &o))) in d
            .iter()
            .zip(self.scales.iter().zip(&self.sizes))
            .enumerate()
        {
            if !(s.is_finite() && s > 0.0) {
                return invalid(format!("scale {s} of axis {a} must be positive"));
            }
            if n == 0 && o > 0 {
                return invalid(format!("cannot resize empty axis {a} to {o}"));
            }
        }
        if self.antialias && matches!(self.mode, ResizeMode::Nearest(_)) {
            return invalid("antialias applies to linear and cubic modes only");
        }
        Ok(())
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let x = req(ins, 0)?;
        let d = dims_of(x.ty)?;
        self.check(&d)?;
        if !x.ty.dtype.is_float() && !matches!(self.mode, ResizeMode::Nearest(_)) {
            return Err(OpError::Unsupported(format!(
                "resize of {} (only nearest mode moves non-float data)",
                x.ty.dtype
            )));
        }
        Ok(vec![TensorType::new(x.ty.dtype, &self.sizes)])
    }

    /// The plan of `axis` for an input of length `n`, or `None` when the axis is left unchanged.
    pub fn axis_plan(&self, axis: usize, n: usize) -> Option<AxisPlan> {
        let r = self.scales.len();
        let scale = self.scales[axis];
        let out = self.sizes[axis];
        let roi =
            (!self.roi.is_empty()).then(|| (self.roi[axis] as f64, self.roi[axis + r] as f64));
        if is_close(scale, 1.0)
            && out == n
            && roi.is_none_or(|(a, b)| is_close(a, 0.0) && is_close(b, 1.0))
        {
            return None;
        }
        let inf = n as f64;
        let out_w = scale * inf;
        let mut plan = AxisPlan {
            taps: 0,
            index: Vec::new(),
            weight: Vec::new(),
            extrapolated: Vec::with_capacity(out),
        };
        for o in 0..out {
            let y = o as f64;
            let mut extrap = false;
            let x = match self.coord {
                CoordMode::AlignCorners => {
                    if out_w == 1.0 {
                        0.0
                    } else {
                        y * (inf - 1.0) / (out_w - 1.0)
                    }
                }
                CoordMode::Asymmetric => y / scale,
                CoordMode::TfCropAndResize => {
                    let (a, b) = roi.unwrap_or((0.0, 1.0));
                    let x = if out_w == 1.0 {
                        (b - a) * (inf - 1.0) / 2.0
                    } else {
                        y * (b - a) * (inf - 1.0) / (out_w - 1.0)
                    };
                    let x = x + a * (inf - 1.0);
                    extrap = x < 0.0 || x > inf - 1.0;
                    x
                }
                CoordMode::PytorchHalfPixel => {
                    if out_w == 1.0 {
                        -0.5
                    } else {
                        (y + 0.5) / scale - 0.5
                    }
                }
                CoordMode::HalfPixel => (y + 0.5) / scale - 0.5,
                CoordMode::HalfPixelSymmetric => {
                    let adjustment = out as f64 / out_w;
                    let center = inf / 2.0;
                    center * (1.0 - adjustment) + (y + 0.5) / scale - 0.5
                }
            };
            let fl = x.floor();
            // The tap left of x is preferred, so an integral x has ratio 1, not 0.
            let ratio = if x == fl { 1.0 } else { x - fl };
            let mut coeffs = self.coeffs(ratio, scale);
            let taps = coeffs.len();
            // The `taps` input positions nearest to x, ties to the smaller (ONNX's window rule).
            let pad = taps.div_ceil(2) as f64;
            let xp = x + pad;
            let p = xp.floor();
            let frac = xp - p;
            let offset = if taps.is_multiple_of(2) {
                if frac == 0.0 {
                    -((taps / 2) as f64)
                } else {
                    1.0 - (taps / 2) as f64
                }
            } else {
                let base = -(((taps - 1) / 2) as f64);
                if frac <= 0.5 {
                    base
                } else {
                    base + 1.0
                }
            };
            let start = p + offset - pad;
            let idx: Vec<f64> = (0..taps).map(|t| start + t as f64).collect();
            if self.exclude_outside {
                for (c, &i) in coeffs.iter_mut().zip(&idx) {
                    if i < 0.0 || i >= inf {
                        *c = 0.0;
                    }
                }
                let sum: f64 = coeffs.iter().sum();
                let sum = if sum == 0.0 { 1.0 } else { sum };
                coeffs.iter_mut().for_each(|c| *c /= sum);
            }
            plan.taps = taps;
            plan.index
                .extend(idx.iter().map(|&i| i.clamp(0.0, inf - 1.0) as usize));
            plan.weight.extend(coeffs);
            plan.extrapolated.push(extrap);
        }
        Some(plan)
    }

    /// Tap weights for a fractional position `ratio` in `(0, 1]`.
    fn coeffs(&self, ratio: f64, scale: f64) -> Vec<f64> {
        match self.mode {
            ResizeMode::Nearest(m) => {
                let hi = if ratio == 1.0 {
                    true
                } else {
                    match m {
                        NearestMode::RoundPreferFloor => ratio > 0.5,
                        NearestMode::RoundPreferCeil => ratio >= 0.5,
                        NearestMode::Floor => false,
                        NearestMode::Ceil => true,
                    }
                };
                if hi {
                    vec![0.0, 1.0]
                } else {
                    vec![1.0, 0.0]
                }
            }
            ResizeMode::Linear if self.antialias => {
                let s = scale.min(1.0);
                let start = (-1.0 / s).floor() as i64 + 1;
                let footprint = 2 - 2 * start;
                let c: Vec<f64> = (start..start + footprint)
                    .map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0))
                    .collect();
                let sum: f64 = c.iter().sum();
                c.into_iter().map(|v| v / sum).collect()
            }
            ResizeMode::Linear => vec![1.0 - ratio, ratio],
            ResizeMode::Cubic { a } if self.antialias => {
                let a = a as f64;
                let s = scale.min(1.0);
                let f = |x: f64| {
                    let x = x.abs();
                    let (x2, x3) = (x * x, x * x * x);
                    if x <= 1.0 {
                        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
                    } else if x < 2.0 {
                        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
                    } else {
                        0.0
                    }
                };
                let i_start = (-2.0 / s).floor() as i64 + 1;
                let i_end = 2 - i_start;
                let c: Vec<f64> = (i_start..i_end)
                    .map(|i| f(s * (i as f64 - ratio)))
                    .collect();
                let sum: f64 = c.iter().sum();
                c.into_iter().map(|v| v / sum).collect()
            }
            ResizeMode::Cubic { a } => {
                let a = a as f64;
                let r = ratio;
                let q = 1.0 - r;
                vec![
                    ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                    ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                    ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
                    ((a * (q + 1.0) - 5.0 * a) * (q + 1.0) + 8.0 * a) * (q + 1.0) - 4.0 * a,
                ]
            }
        }
    }

    /// One axis at a time, in f64, each output the weighted sum of its taps.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let mut dims = x.shape().to_vec();
        self.check(&dims)?;
        if matches!(self.mode, ResizeMode::Nearest(_)) {
            // Nearest moves elements: pick them, so every dtype keeps its exact bits. `None` is the
            // extrapolation value.
            let mut picks: Vec<Option<usize>> = (0..x.len()).map(Some).collect();
            for axis in 0..dims.len() {
                let Some(plan) = self.axis_plan(axis, dims[axis]) else {
                    continue;
                };
                let (outer, inner) = (
                    dims[..axis].iter().product::<usize>(),
                    dims[axis + 1..].iter().product::<usize>(),
                );
                let out = self.sizes[axis];
                let mut next = Vec::with_capacity(outer * out * inner);
                for o in 0..outer {
                    for j in 0..out {
                        if plan.extrapolated[j] {
                            next.extend(std::iter::repeat_n(None, inner));
                            continue;
                        }
                        let src = plan.nearest(j);
                        next.extend_from_slice(&picks[(o * dims[axis] + src) * inner..][..inner]);
                    }
                }
                picks = next;
                dims[axis] = out;
            }
            let fill = Tensor::from_f64(x.dtype(), vec![1], &[self.extrapolation_value as f64]);
            let picks = picks.into_iter().map(|p| match p {
                Some(e) => (0, e),
                None => (1, 0),
            });
            return Ok(vec![Tensor::take_from(x.dtype(), dims, &[x, &fill], picks)]);
        }
        let mut v = x.to_f64_vec();
        for axis in 0..dims.len() {
            let Some(plan) = self.axis_plan(axis, dims[axis]) else {
                continue;
            };
            let (outer, inner) = (
                dims[..axis].iter().product::<usize>(),
                dims[axis + 1..].iter().product::<usize>(),
            );
            let out = self.sizes[axis];
            let mut next = vec![0.0; outer * out * inner];
            for o in 0..outer {
                for j in 0..out {
                    for i in 0..inner {
                        let y = if plan.extrapolated[j] {
                            self.extrapolation_value as f64
                        } else {
                            (0..plan.taps)
                                .map(|t| {
                                    let src = plan.index[j * plan.taps + t];
                                    plan.weight[j * plan.taps + t]
                                        * v[(o * dims[axis] + src) * inner + i]
                                })
                                .sum()
                        };
                        next[(o * out + j) * inner + i] = y;
                    }
                }
            }
            v = next;
            dims[axis] = out;
        }
        Ok(vec![Tensor::from_f64(x.dtype(), dims, &v)])
    }
}
