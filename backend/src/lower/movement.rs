//! Lowering of the data-movement family (expand, tile, pad, trilu, element gathers and scatters,
//! one-hot, cumsum, top-k), resize, the convolution extras (transposed convolution, max pooling of
//! any dtype and with indices) and einsum. Kernels live in `kernels::movement`.
//!
//! Everything that depends only on shapes is decided here, at compile time: per-axis offset tables
//! for the table gathers, resampling weights, einsum strides. Kernels only walk them.

use super::{esize, unsupported, Arg, Lowering, Step};
use crate::builder::Kb;
use crate::kernels::conv::ConvSpec;
use crate::kernels::movement::{
    self as mv, Arith, AxisMap, ConvTransposeSpec, DirectConvSpec, EinsumSpec, ElementsSpec,
    MaxPoolSpec, NdSpec, ResamplePass, TableGather, FILL,
};
use crate::kernels::{dense_strides, strided_copy};
use crate::BackendError;
use kiln_ir::ops::{Einsum, Movement, Pool, PoolKind, Reduction, Resize, ResizeMode};
use kiln_ir::{DType, NodeId, Op, Tensor, Value};

/// Builds the map of one output axis from its source coordinates (`None`: the fill value), appending
/// to `tables` unless the map is affine. Returns the map and whether it reads the fill value.
fn axis_map(src: &[Option<usize>], stride: i64, tables: &mut Vec<i64>) -> (AxisMap, bool) {
    let affine = match src {
        [] => Some((0, 0)),
        [Some(a)] => Some((*a as i64, 0)),
        [Some(a), Some(b), ..] => {
            let d = *b as i64 - *a as i64;
            src.iter()
                .enumerate()
                .all(|(i, s)| *s == Some((*a as i64 + d * i as i64) as usize))
                .then_some((*a as i64, d))
        }
        _ => None,
    };
    if let Some((a, d)) = affine {
        return (
            AxisMap::Affine {
                start: a * stride,
                step: d * stride,
            },
            false,
        );
    }
    let at = tables.len();
    let mut fill = false;
    tables.extend(src.iter().map(|s| match s {
        Some(c) => *c as i64 * stride,
        None => {
            fill = true;
            FILL
        }
    }));
    (AxisMap::Table { at }, fill)
}

impl Lowering<'_> {
    fn two_outputs(
        &self,
        id: NodeId,
        kind: &str,
        args: Vec<Arg>,
        build: Box<dyn Fn(&mut Kb)>,
    ) -> Option<Step> {
        Some(Step {
            node: id,
            kind: kind.to_string(),
            args,
            writes: vec![Value { node: id, slot: 0 }, Value { node: id, slot: 1 }],
            inplace: vec![],
            build,
            split: false,
        })
    }

    /// A table gather from `x` into this node's output, with per-axis source coordinates.
    fn table_gather(
        &mut self,
        id: NodeId,
        kind: &str,
        x: Value,
        sources: Vec<Vec<Option<usize>>>,
        fill_value: Option<Arg>,
        fill_const: impl FnOnce() -> Tensor,
    ) -> Result<Option<Step>, BackendError> {
        let g = self.g;
        let y = Value { node: id, slot: 0 };
        let dt = self.dtype(x);
        let es = esize(dt).ok_or_else(|| unsupported(g, id, format!("{kind} of {dt}")))?;
        let xs = dense_strides(&self.dims(x), es as i64);
        let mut tables = Vec::new();
        let mut maps = Vec::new();
        let mut fill = false;
        for (a, src) in sources.iter().enumerate() {
            let (m, f) = axis_map(src, xs[a], &mut tables);
            maps.push(m);
            fill |= f;
        }
        let mut args = vec![Arg::Val(x)];
        if fill {
            let f = match fill_value {
                Some(a) => a,
                None => self.derive(id, "fill", fill_const()),
            };
            args.push(f);
        }
        let has_tables = !tables.is_empty();
        if has_tables {
            let n = tables.len();
            let t = Tensor::from_i64(DType::I64, vec![n], &tables);
            let a = self.derive(id, "offsets", t);
            args.push(a);
        }
        args.push(Arg::Val(y));
        let spec = TableGather {
            out: self.dims(y),
            maps,
            esize: es,
            fill,
            tables: has_tables,
        };
        Ok(self.step(
            id,
            kind,
            args,
            vec![],
            Box::new(move |kb| mv::table_gather_kernel(kb, &spec)),
        ))
    }

    /// The step for a node of this family.
    pub(super) fn movement_family(
        &mut self,
        id: NodeId,
        op: &Op,
    ) -> Result<Option<Step>, BackendError> {
        let g = self.g;
        let y = Value { node: id, slot: 0 };
        let ydims = self.dims(y);
        let unsup = |r: String| Err(unsupported(g, id, r));
        let arith = |d: DType, what: &str| {
            Arith::of(d).ok_or_else(|| unsupported(g, id, format!("{what} on {d}")))
        };
        match op {
            Op::Movement(m) => self.movement(id, m),
            Op::Resize(r) => self.resize(id, r),
            Op::ConvTranspose(c) => {
                let (x, w) = (self.input(id, 0)?, self.input(id, 1)?);
                if self.dtype(x) != DType::F32 {
                    return unsup(format!(
                        "conv_transpose on {} (only f32 is compiled)",
                        self.dtype(x)
                    ));
                }
                let bias = g.input(id, 2);
                let xd = self.dims(x);
                let wd = self.dims(w);
                let spec = ConvTransposeSpec {
                    n: xd[0],
                    c: xd[1],
                    mg: wd[1],
                    group: c.group,
                    input: xd[2..].to_vec(),
                    kernel: c.kernel_shape.clone(),
                    strides: c.strides.clone(),
                    dilations: c.dilations.clone(),
                    pads_begin: c.pads_begin.clone(),
                    output: c.output.clone(),
                    bias: bias.is_some(),
                };
                let mut args = vec![Arg::Val(x), Arg::Val(w)];
                args.extend(bias.map(Arg::Val));
                args.push(Arg::Val(y));
                let scratch = spec.scratch_bytes();
                if scratch > 0 {
                    args.push(Arg::Scratch(scratch));
                }
                Ok(self.step(
                    id,
                    "conv_transpose",
                    args,
                    vec![],
                    Box::new(move |kb| mv::conv_transpose_kernel(kb, &spec)),
                ))
            }
            Op::MaxPoolIndices(p) => {
                let x = self.input(id, 0)?;
                let dt = self.dtype(x);
                let ar = arith(dt, "max_pool")?;
                let xd = self.dims(x);
                let spec = self.max_pool_spec(&p.pool, &xd, &ydims, ar, dt)?;
                let spec = MaxPoolSpec {
                    index_strides: Some(p.spatial_strides(&xd[2..])),
                    ..spec
                };
                let i = Value { node: id, slot: 1 };
                Ok(self.two_outputs(
                    id,
                    "max_pool_indices",
                    vec![Arg::Val(x), Arg::Val(y), Arg::Val(i)],
                    Box::new(move |kb| mv::max_pool_kernel(kb, &spec)),
                ))
            }
            Op::Pool(p) if p.kind == PoolKind::Max => {
                let x = self.input(id, 0)?;
                let dt = self.dtype(x);
                let ar = arith(dt, "max_pool")?;
                let xd = self.dims(x);
                let spec = self.max_pool_spec(p, &xd, &ydims, ar, dt)?;
                Ok(self.step(
                    id,
                    "max_pool",
                    vec![Arg::Val(x), Arg::Val(y)],
                    vec![],
                    Box::new(move |kb| mv::max_pool_kernel(kb, &spec)),
                ))
            }
            Op::Einsum(e) => self.einsum(id, e),
            Op::Conv(cv) => {
                let (x, w) = (self.input(id, 0)?, self.input(id, 1)?);
                let dt = self.dtype(x);
                let ar = arith(dt, "conv")?;
                // The direct kernel has no epilogue; the fusion passes only fuse into f32 convs, so
                // a chain here means a hand-written graph, refused rather than dropped.
                if !cv.post.is_empty() {
                    return unsup(format!("conv on {dt} with fused activations (post)"));
                }
                let bias = g.input(id, 2);
                let (xd, wd) = (self.dims(x), self.dims(w));
                let spec = DirectConvSpec {
                    conv: ConvSpec::new(cv, &xd, &wd, &ydims, bias.is_some()),
                    ar,
                    esize: dt.bits() / 8,
                };
                let mut args = vec![Arg::Val(x), Arg::Val(w)];
                args.extend(bias.map(Arg::Val));
                args.push(Arg::Val(y));
                Ok(self.step(
                    id,
                    "conv_direct",
                    args,
                    vec![],
                    Box::new(move |kb| mv::direct_conv_kernel(kb, &spec)),
                ))
            }
            other => unsup(format!("{} is not compiled by this family", other.name())),
        }
    }

    fn einsum(&mut self, id: NodeId, e: &Einsum) -> Result<Option<Step>, BackendError> {
        let g = self.g;
        let y = Value { node: id, slot: 0 };
        let ydt = self.dtype(y);
        let ins: Vec<Value> = (0..g.inputs(id).len())
            .map(|i| self.input(id, i))
            .collect::<Result<_, _>>()?;
        let ar = Arith::of(ydt)
            .ok_or_else(|| unsupported(g, id, format!("{} on {ydt}", g.node(id).op.name())))?;
        let es = esize(ydt).unwrap_or(1) as i64;
        let shapes: Vec<Vec<usize>> = ins.iter().map(|&v| self.dims(v)).collect();
        let plan = e
            .plan(&shapes)
            .map_err(|err| unsupported(g, id, err.to_string()))?;
        let bytes = |v: &Vec<Vec<usize>>| -> Vec<Vec<i64>> {
            v.iter()
                .map(|s| s.iter().map(|&x| x as i64 * es).collect())
                .collect()
        };
        let spec = EinsumSpec {
            out: plan.out.clone(),
            sum: plan.sum.clone(),
            out_strides: bytes(&plan.out_strides),
            sum_strides: bytes(&plan.sum_strides),
            ar,
            esize: es as usize,
        };
        let mut args: Vec<Arg> = ins.iter().map(|&v| Arg::Val(v)).collect();
        args.push(Arg::Val(y));
        Ok(self.step(
            id,
            "einsum",
            args,
            vec![],
            Box::new(move |kb| mv::einsum_kernel(kb, &spec)),
        ))
    }

    /// MatMul of dtypes the f32 GEMM does not take, as the einsum `...mk,...kn->...mn` (a 1-D operand
    /// drops its `m` or `n`), which broadcasts the batch dims the same way.
    pub(super) fn matmul_generic(&mut self, id: NodeId) -> Result<Option<Step>, BackendError> {
        let (a, b) = (self.input(id, 0)?, self.input(id, 1)?);
        let (ra, rb) = (self.dims(a).len(), self.dims(b).len());
        let lhs = if ra == 1 { "k" } else { "...mk" };
        let rhs = if rb == 1 { "k" } else { "...kn" };
        let out = match (ra == 1, rb == 1) {
            (true, true) => "",
            (true, false) => "...n",
            (false, true) => "...m",
            (false, false) => "...mn",
        };
        let e = Einsum {
            equation: format!("{lhs},{rhs}->{out}"),
        };
        self.einsum(id, &e)
    }

    fn max_pool_spec(
        &self,
        p: &Pool,
        xd: &[usize],
        yd: &[usize],
        ar: Arith,
        dt: DType,
    ) -> Result<MaxPoolSpec, BackendError> {
        let r = xd.len() - 2;
        Ok(MaxPoolSpec {
            planes: xd[0] * xd[1],
            input: xd[2..].to_vec(),
            kernel: p.kernel_shape.clone(),
            strides: p.strides.clone(),
            dilations: p.dilations.clone(),
            pads_begin: p.pads[..r].to_vec(),
            output: yd[2..].to_vec(),
            ar,
            esize: dt.bits() / 8,
            index_strides: None,
        })
    }

    fn movement(&mut self, id: NodeId, m: &Movement) -> Result<Option<Step>, BackendError> {
        let g = self.g;
        let y = Value { node: id, slot: 0 };
        let ydims = self.dims(y);
        let ydt = self.dtype(y);
        let unsup = |r: String| Err(unsupported(g, id, r));
        let es_of = |d: DType, what: &str| {
            esize(d).ok_or_else(|| unsupported(g, id, format!("{what} of {d}")))
        };
        let arith = |d: DType, what: &str| {
            Arith::of(d).ok_or_else(|| unsupported(g, id, format!("{what} on {d}")))
        };
        let x = self.input(id, 0)?;
        let xd = self.dims(x);
        let xdt = self.dtype(x);
        match m {
            Movement::Expand(e) => {
                let es = es_of(xdt, "expand")?;
                let off = e.shape.len() - xd.len();
                let dense = dense_strides(&xd, es as i64);
                let mut src = vec![0i64; e.shape.len()];
                for (i, &d) in xd.iter().enumerate() {
                    src[off + i] = if d == 1 { 0 } else { dense[i] };
                }
                let dst = dense_strides(&e.shape, es as i64);
                let out = e.shape.clone();
                Ok(self.step(
                    id,
                    "expand",
                    vec![Arg::Val(x), Arg::Val(y)],
                    vec![],
                    Box::new(move |kb| {
                        let (xp, yp) = (kb.args[0], kb.args[1]);
                        strided_copy(kb, &out, xp, &src, yp, &dst, es);
                    }),
                ))
            }
            Movement::Tile(_) => {
                let sources = ydims
                    .iter()
                    .zip(&xd)
                    .map(|(&o, &d)| (0..o).map(|i| Some(i % d)).collect())
                    .collect();
                self.table_gather(id, "tile", x, sources, None, || Tensor::zeros(xdt, vec![1]))
            }
            Movement::Pad(p) => {
                let sources = ydims
                    .iter()
                    .enumerate()
                    .map(|(a, &o)| (0..o).map(|i| p.source(a, i, xd[a])).collect())
                    .collect();
                let fill = g.input(id, 1).map(Arg::Val);
                self.table_gather(id, "pad", x, sources, fill, || Tensor::zeros(xdt, vec![1]))
            }
            Movement::Trilu(t) => {
                let es = es_of(xdt, "trilu")?;
                let r = xd.len();
                let (rows, cols) = (xd[r - 2], xd[r - 1]);
                let batch = xd[..r - 2].iter().product::<usize>();
                let k = g.input(id, 1);
                let mut args = vec![Arg::Val(x)];
                args.extend(k.map(Arg::Val));
                args.push(Arg::Val(y));
                let upper = t.upper;
                let has_k = k.is_some();
                Ok(self.step(
                    id,
                    if upper { "triu" } else { "tril" },
                    args,
                    vec![x],
                    Box::new(move |kb| mv::trilu_kernel(kb, batch, rows, cols, es, upper, has_k)),
                ))
            }
            Movement::GatherElements(ge) => {
                let ind = self.input(id, 1)?;
                let spec = ElementsSpec {
                    dims: self.dims(ind),
                    data: xd.clone(),
                    axis: ge.axis,
                    esize: es_of(xdt, "gather_elements")?,
                    isize: self.dtype(ind).bits() / 8,
                };
                Ok(self.step(
                    id,
                    "gather_elements",
                    vec![Arg::Val(x), Arg::Val(ind), Arg::Val(y)],
                    vec![],
                    Box::new(move |kb| mv::gather_elements_kernel(kb, &spec)),
                ))
            }
            Movement::GatherNd(gn) => {
                let ind = self.input(id, 1)?;
                let id_dims = self.dims(ind);
                let es = es_of(xdt, "gather_nd")?;
                let b = gn.batch_dims;
                let m = id_dims[id_dims.len() - 1];
                let xs = dense_strides(&xd, es as i64);
                let spec = NdSpec {
                    batch: xd[..b].iter().product(),
                    lookups: id_dims[b..id_dims.len() - 1].iter().product(),
                    axes: (0..m).map(|j| (xd[b + j], xs[b + j])).collect(),
                    batch_bytes: xd[b..].iter().product::<usize>() * es,
                    slice: xd[b + m..].iter().product(),
                    esize: es,
                };
                Ok(self.step(
                    id,
                    "gather_nd",
                    vec![Arg::Val(x), Arg::Val(ind), Arg::Val(y)],
                    vec![],
                    Box::new(move |kb| mv::gather_nd_kernel(kb, &spec)),
                ))
            }
            Movement::ScatterElements(se) => {
                let (ind, upd) = (self.input(id, 1)?, self.input(id, 2)?);
                let ar = self.scatter_arith(id, se.reduction, xdt)?;
                let spec = ElementsSpec {
                    dims: self.dims(ind),
                    data: xd.clone(),
                    axis: se.axis,
                    esize: es_of(xdt, "scatter_elements")?,
                    isize: self.dtype(ind).bits() / 8,
                };
                let red = se.reduction;
                Ok(self.step(
                    id,
                    "scatter_elements",
                    vec![Arg::Val(x), Arg::Val(ind), Arg::Val(upd), Arg::Val(y)],
                    vec![x],
                    Box::new(move |kb| mv::scatter_elements_kernel(kb, &spec, red, ar)),
                ))
            }
            Movement::ScatterNd(sn) => {
                let (ind, upd) = (self.input(id, 1)?, self.input(id, 2)?);
                let ar = self.scatter_arith(id, sn.reduction, xdt)?;
                let es = es_of(xdt, "scatter_nd")?;
                let id_dims = self.dims(ind);
                let m = id_dims[id_dims.len() - 1];
                let xs = dense_strides(&xd, es as i64);
                let spec = NdSpec {
                    batch: 1,
                    lookups: id_dims[..id_dims.len() - 1].iter().product(),
                    axes: (0..m).map(|j| (xd[j], xs[j])).collect(),
                    batch_bytes: xd.iter().product::<usize>() * es,
                    slice: xd[m..].iter().product(),
                    esize: es,
                };
                let red = sn.reduction;
                Ok(self.step(
                    id,
                    "scatter_nd",
                    vec![Arg::Val(x), Arg::Val(ind), Arg::Val(upd), Arg::Val(y)],
                    vec![x],
                    Box::new(move |kb| mv::scatter_nd_kernel(kb, &spec, red, ar)),
                ))
            }
            Movement::OneHot(oh) => {
                let vals = self.input(id, 1)?;
                let es = es_of(ydt, "one_hot")?;
                if !(matches!(xdt, DType::F32 | DType::F64)
                    || Arith::of(xdt).is_some_and(|a| matches!(a, Arith::Int { .. })))
                {
                    return unsup(format!("one_hot with {xdt} indices"));
                }
                let outer = xd[..oh.axis].iter().product::<usize>();
                let inner = xd[oh.axis..].iter().product::<usize>();
                let depth = oh.depth;
                Ok(self.step(
                    id,
                    "one_hot",
                    vec![Arg::Val(x), Arg::Val(vals), Arg::Val(y)],
                    vec![],
                    Box::new(move |kb| mv::one_hot_kernel(kb, outer, depth, inner, xdt, es)),
                ))
            }
            Movement::CumSum(c) => {
                let ar = arith(xdt, "cumsum")?;
                let es = es_of(xdt, "cumsum")?;
                let (outer, n, inner) = (
                    xd[..c.axis].iter().product::<usize>(),
                    xd[c.axis],
                    xd[c.axis + 1..].iter().product::<usize>(),
                );
                let (ex, rev) = (c.exclusive, c.reverse);
                Ok(self.step(
                    id,
                    "cumsum",
                    vec![Arg::Val(x), Arg::Val(y)],
                    vec![],
                    Box::new(move |kb| mv::cumsum_kernel(kb, outer, n, inner, ar, es, ex, rev)),
                ))
            }
            Movement::TopK(t) => {
                let ar = arith(xdt, "top_k")?;
                let es = es_of(xdt, "top_k")?;
                let (outer, n, inner) = (
                    xd[..t.axis].iter().product::<usize>(),
                    xd[t.axis],
                    xd[t.axis + 1..].iter().product::<usize>(),
                );
                let (k, largest) = (t.k, t.largest);
                let i = Value { node: id, slot: 1 };
                Ok(self.two_outputs(
                    id,
                    "top_k",
                    vec![
                        Arg::Val(x),
                        Arg::Val(y),
                        Arg::Val(i),
                        Arg::Scratch(n.max(1)),
                    ],
                    Box::new(move |kb| mv::top_k_kernel(kb, outer, n, inner, k, ar, es, largest)),
                ))
            }
        }
    }

    fn scatter_arith(
        &self,
        id: NodeId,
        red: Reduction,
        d: DType,
    ) -> Result<Option<Arith>, BackendError> {
        if red == Reduction::None {
            return Ok(None);
        }
        Arith::of(d).map(Some).ok_or_else(|| {
            unsupported(
                self.g,
                id,
                format!("scatter reduction {} on {d}", red.name()),
            )
        })
    }

    fn resize(&mut self, id: NodeId, r: &Resize) -> Result<Option<Step>, BackendError> {
        let g = self.g;
        let y = Value { node: id, slot: 0 };
        let x = self.input(id, 0)?;
        let xd = self.dims(x);
        let dt = self.dtype(x);
        if let ResizeMode::Nearest(_) = r.mode {
            let sources = xd
                .iter()
                .enumerate()
                .map(|(a, &n)| match r.axis_plan(a, n) {
                    None => (0..n).map(Some).collect(),
                    Some(p) => (0..r.sizes[a])
                        .map(|o| (!p.extrapolated[o]).then(|| p.nearest(o)))
                        .collect(),
                })
                .collect();
            let ev = r.extrapolation_value as f64;
            return self.table_gather(id, "resize", x, sources, None, move || {
                Tensor::from_f64(dt, vec![1], &[ev])
            });
        }
        if dt != DType::F32 {
            return Err(unsupported(
                g,
                id,
                format!("resize on {dt} (only f32 is compiled)"),
            ));
        }
        let mut dims = xd.clone();
        let (mut idx, mut wts, mut bias) = (Vec::new(), Vec::new(), Vec::new());
        let mut passes = Vec::new();
        let mut half = 0usize;
        for a in 0..dims.len() {
            let Some(p) = r.axis_plan(a, dims[a]) else {
                continue;
            };
            let outer = dims[..a].iter().product::<usize>();
            let inner = dims[a + 1..].iter().product::<usize>();
            let table_at = idx.len();
            idx.extend(p.index.iter().map(|&i| (i * inner * 4) as i64));
            let mut w = p.weight.clone();
            let extrap = p.extrapolated.iter().any(|&e| e);
            let bias_at = extrap.then(|| {
                let at = bias.len();
                for (o, &e) in p.extrapolated.iter().enumerate() {
                    if e {
                        w[o * p.taps..(o + 1) * p.taps].fill(0.0);
                    }
                    bias.push(if e { r.extrapolation_value as f64 } else { 0.0 });
                }
                at
            });
            wts.extend(w);
            passes.push(ResamplePass {
                outer,
                input: dims[a],
                output: r.sizes[a],
                inner,
                taps: p.taps,
                table_at,
                bias_at,
            });
            dims[a] = r.sizes[a];
            half = half.max(dims.iter().product::<usize>() * 4);
        }
        if passes.is_empty() {
            let bytes = xd.iter().product::<usize>() * 4;
            return Ok(self.step(
                id,
                "copy",
                vec![Arg::Val(x), Arg::Val(y)],
                vec![],
                Box::new(move |kb| crate::kernels::layout::copy_kernel(kb, bytes)),
            ));
        }
        let n = idx.len();
        let it = self.derive(id, "taps", Tensor::from_i64(DType::I64, vec![n], &idx));
        let wt = self.derive(id, "weights", Tensor::from_f64(DType::F32, vec![n], &wts));
        let mut args = vec![Arg::Val(x), it, wt];
        let has_bias = !bias.is_empty();
        if has_bias {
            let nb = bias.len();
            args.push(self.derive(id, "bias", Tensor::from_f64(DType::F32, vec![nb], &bias)));
        }
        args.push(Arg::Val(y));
        if passes.len() > 1 {
            args.push(Arg::Scratch(2 * half));
        }
        Ok(self.step(
            id,
            "resize",
            args,
            vec![],
            Box::new(move |kb| mv::resample_kernel(kb, &passes, has_bias, half)),
        ))
    }
}
