//! The convolution family beyond `Conv` and `Pool`: transposed convolution, and max pooling that also
//! returns where each maximum came from.

use super::conv::{check_window, tap};
use super::{dims_of, for_each_index, ints, invalid, req, req_t, strides_of, Fact, OpError, Pool};
use crate::attr::{Attr, Attrs};
use crate::{DType, Dim, Tensor, TensorType};

/// Transposed convolution (NCHW input, `C x M/group x k...` weights): every input element scatters
/// `x * w` to output position `i * stride + k * dilation - pads_begin`. The output spatial size is
/// resolved by the frontend (from `output_shape`, `output_padding` and the pads); positions the scatter
/// misses hold the bias alone. Inputs: X, W, optional B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvTranspose {
    /// Spatial kernel size.
    pub kernel_shape: Vec<usize>,
    /// Strides per spatial axis.
    pub strides: Vec<usize>,
    /// Dilations per spatial axis.
    pub dilations: Vec<usize>,
    /// Begin pads per spatial axis (negative: the output starts before input position 0's first tap).
    pub pads_begin: Vec<i64>,
    /// Output spatial size.
    pub output: Vec<usize>,
    /// Number of groups.
    pub group: usize,
}

impl ConvTranspose {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<ConvTranspose, OpError> {
        Ok(ConvTranspose {
            kernel_shape: a.usizes("kernel_shape", None)?,
            strides: a.usizes("strides", None)?,
            dilations: a.usizes("dilations", None)?,
            pads_begin: a.ints("pads_begin", None)?,
            output: a.usizes("output", None)?,
            group: a.usize("group", Some(1))?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("kernel_shape", ints(&self.kernel_shape)),
            ("strides", ints(&self.strides)),
            ("dilations", ints(&self.dilations)),
            ("pads_begin", Attr::Ints(self.pads_begin.clone())),
            ("output", ints(&self.output)),
            ("group", Attr::Int(self.group as i64)),
        ]
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let (x, w) = (req(ins, 0)?, req(ins, 1)?);
        let (xd, wd) = (dims_of(x.ty)?, dims_of(w.ty)?);
        if xd.len() < 3 || wd.len() != xd.len() {
            return invalid(format!(
                "input must be N x C x spatial... and weights C x M/group x kernel..., got {} and {}",
                x.ty, w.ty
            ));
        }
        if !x.ty.dtype.is_float() || w.ty.dtype != x.ty.dtype {
            return Err(OpError::Unsupported(format!(
                "conv_transpose with input {} and weights {}",
                x.ty.dtype, w.ty.dtype
            )));
        }
        let r = xd.len() - 2;
        let zero_pads = vec![0; 2 * r];
        check_window(
            "conv_transpose",
            r,
            &self.kernel_shape,
            &self.strides,
            &self.dilations,
            &zero_pads,
        )?;
        if self.pads_begin.len() != r || self.output.len() != r {
            return invalid(format!("pads_begin and output must have {r} entries"));
        }
        let g = self.group;
        if g == 0 || xd[1] % g != 0 || wd[0] != xd[1] {
            return invalid(format!(
                "channels do not match groups: input {:?}, weights {wd:?}, group {g}",
                xd
            ));
        }
        if wd[2..] != self.kernel_shape[..] {
            return invalid(format!(
                "kernel_shape {:?} differs from weight shape {wd:?}",
                self.kernel_shape
            ));
        }
        let m = wd[1] * g;
        if let Some(b) = ins.get(2).and_then(|b| b.as_ref()) {
            if dims_of(b.ty)? != [m] || b.ty.dtype != x.ty.dtype {
                return invalid(format!("bias must be {}[{m}], got {}", x.ty.dtype, b.ty));
            }
        }
        let mut out = vec![Dim::Const(xd[0]), Dim::Const(m)];
        out.extend(self.output.iter().map(|&o| Dim::Const(o)));
        Ok(vec![TensorType {
            dtype: x.ty.dtype,
            shape: out,
        }])
    }

    /// Output coordinate that input position `i`, tap `k` of spatial axis `a` writes, if inside.
    pub fn target(&self, a: usize, i: usize, k: usize) -> Option<usize> {
        let o = i as i128 * self.strides[a] as i128 + k as i128 * self.dilations[a] as i128
            - self.pads_begin[a] as i128;
        (0..self.output[a] as i128)
            .contains(&o)
            .then_some(o as usize)
    }

    /// Scatter form: for every input element and tap, add `x * w` at the tap's target.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, w) = (req_t(ins, 0)?, req_t(ins, 1)?);
        let bias = ins.get(2).copied().flatten().map(Tensor::to_f64_vec);
        let (xd, wd) = (x.shape(), w.shape());
        let r = xd.len() - 2;
        let (n, c) = (xd[0], xd[1]);
        let (cg, mg) = (c / self.group, wd[1]);
        let m = mg * self.group;
        let mut od = vec![n, m];
        od.extend_from_slice(&self.output);
        let (xs, ws, os) = (strides_of(xd), strides_of(wd), strides_of(&od));
        let (xv, wv) = (x.to_f64_vec(), w.to_f64_vec());
        let mut out = vec![0.0; od.iter().product()];
        for ni in 0..n {
            for mi in 0..m {
                let b = bias.as_ref().map_or(0.0, |b| b[mi]);
                let base = ni * os[0] + mi * os[1];
                for e in 0..os[1] {
                    out[base + e] = b;
                }
            }
            for ci in 0..c {
                let group = ci / cg;
                for_each_index(&xd[2..], |i| {
                    let xval = xv[ni * xs[0]
                        + ci * xs[1]
                        + i.iter()
                            .enumerate()
                            .map(|(a, &p)| p * xs[2 + a])
                            .sum::<usize>()];
                    for_each_index(&self.kernel_shape, |k| {
                        let mut at = 0;
                        for a in 0..r {
                            match self.target(a, i[a], k[a]) {
                                Some(o) => at += o * os[2 + a],
                                None => return,
                            }
                        }
                        let kw: usize = k.iter().enumerate().map(|(a, &p)| p * ws[2 + a]).sum();
                        for mj in 0..mg {
                            let mi = group * mg + mj;
                            out[ni * os[0] + mi * os[1] + at] +=
                                xval * wv[ci * ws[0] + mj * ws[1] + kw];
                        }
                    });
                });
            }
        }
        Ok(vec![Tensor::from_f64(x.dtype(), od, &out)])
    }
}

/// Max pooling with a second output: the flat index (over the whole input, `N x C x spatial`) of each
/// maximum, the first one in window order on ties. `column_major` (ONNX `storage_order = 1`) numbers
/// the spatial positions with the first spatial axis fastest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaxPoolIndices {
    /// The window (kind `Max`).
    pub pool: Pool,
    /// ONNX `storage_order = 1`.
    pub column_major: bool,
}

impl MaxPoolIndices {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<MaxPoolIndices, OpError> {
        Ok(MaxPoolIndices {
            pool: Pool::from_attrs(super::PoolKind::Max, a)?,
            column_major: a.bool("storage_order", false)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let mut v = self.pool.attrs();
        v.push(("storage_order", Attr::Int(self.column_major as i64)));
        v
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        if self.pool.kind != super::PoolKind::Max {
            return invalid("indices come from max pooling only");
        }
        let y = self.pool.infer(ins)?.remove(0);
        let idx = TensorType {
            dtype: DType::I64,
            shape: y.shape.clone(),
        };
        Ok(vec![y, idx])
    }

    /// Spatial strides used to number positions in the indices output.
    pub fn spatial_strides(&self, spatial: &[usize]) -> Vec<usize> {
        if self.column_major {
            let mut s = vec![1; spatial.len()];
            for a in 1..spatial.len() {
                s[a] = s[a - 1] * spatial[a - 1];
            }
            s
        } else {
            strides_of(spatial)
        }
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = req_t(ins, 0)?;
        let xd = x.shape();
        let r = xd.len() - 2;
        let p = &self.pool;
        let out_sp = p.out_spatial(xd)?;
        let xs = strides_of(xd);
        let ss = self.spatial_strides(&xd[2..]);
        let plane: usize = xd[2..].iter().product();
        let mut picks = Vec::new();
        let mut idx = Vec::new();
        for nc in 0..xd[0] * xd[1] {
            for_each_index(&out_sp, |o| {
                let mut best: Option<(usize, usize, f64)> = None;
                for_each_index(&p.kernel_shape, |k| {
                    let (mut at, mut num) = (nc * plane, nc * plane);
                    for a in 0..r {
                        match tap(
                            o[a],
                            k[a],
                            p.strides[a],
                            p.dilations[a],
                            p.pads[a],
                            xd[2 + a],
                        ) {
                            Some(c) => {
                                at += c * xs[2 + a];
                                num += c * ss[a];
                            }
                            None => return,
                        }
                    }
                    let v = x.get_f64(at);
                    if best.is_none_or(|(_, _, b)| v > b) {
                        best = Some((at, num, v));
                    }
                });
                // Pool inference guarantees every window reads the input.
                let (at, num, _) = best.unwrap_or((0, 0, 0.0));
                picks.push(at);
                idx.push(num as i64);
            });
        }
        let mut shape = xd[..2].to_vec();
        shape.extend(out_sp);
        Ok(vec![
            x.take(shape.clone(), &picks),
            Tensor::from_i64(DType::I64, shape, &idx),
        ])
    }
}
