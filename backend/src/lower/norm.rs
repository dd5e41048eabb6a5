//! Lowering of the reduction, normalization, softmax and transformer-block ops (kernels in
//! `kernels::reduce`, `kernels::norm` and `kernels::attention`).

use super::{unsupported, Arg, Lowering, Step};
use crate::kernels;
use crate::kernels::reduce::{reduce_supported, ReduceSpec};
use crate::BackendError;
use kiln_ir::{DType, NodeId, Op, Value};

impl Lowering<'_> {
    /// The step for a node of this family.
    pub(super) fn norm_family(
        &mut self,
        id: NodeId,
        op: &Op,
    ) -> Result<Option<Step>, BackendError> {
        let g = self.g;
        let y = Value { node: id, slot: 0 };
        let unsup = |r: String| Err(unsupported(g, id, r));
        match op {
            Op::Reduce(r) => {
                let x = self.input(id, 0)?;
                let d = self.dtype(x);
                if !reduce_supported(r.kind, d) {
                    return unsup(format!("{} on {d}", r.kind.name()));
                }
                let spec = ReduceSpec {
                    kind: r.kind,
                    dtype: d,
                    dims: self.dims(x),
                    axes: r.axes.clone(),
                };
                Ok(self.step(
                    id,
                    r.kind.name(),
                    vec![Arg::Val(x), Arg::Val(y)],
                    vec![],
                    Box::new(move |kb| kernels::reduce::reduce_kernel(kb, &spec)),
                ))
            }
            Op::ArgReduce(a) => {
                let x = self.input(id, 0)?;
                let d = self.dtype(x);
                if !(matches!(d, DType::F32 | DType::F64) || d.is_int() && d.bits() >= 8) {
                    return unsup(format!("{} on {d}", a.name()));
                }
                let split = a.split(&self.dims(x));
                let (max, last) = (a.max, a.select_last_index);
                Ok(self.step(
                    id,
                    a.name(),
                    vec![Arg::Val(x), Arg::Val(y)],
                    vec![],
                    Box::new(move |kb| kernels::reduce::arg_reduce_kernel(kb, d, max, last, split)),
                ))
            }
            Op::Softmax(sm) | Op::LogSoftmax(sm) | Op::Hardmax(sm) => {
                use kernels::norm::{Elem, SoftKind};
                let x = self.input(id, 0)?;
                let d = self.dtype(x);
                if !matches!(d, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
                    return unsup(format!("{} on {d}", op.name()));
                }
                let split = sm.split(&self.dims(x));
                let (o, a, i) = split;
                let kind = match op {
                    Op::Softmax(_) => SoftKind::Soft,
                    Op::LogSoftmax(_) => SoftKind::Log,
                    _ => SoftKind::Hard,
                };
                Ok(self.step(
                    id,
                    op.name(),
                    vec![Arg::Val(x), Arg::Val(y)],
                    vec![],
                    Box::new(move |kb| match (d, kind) {
                        (DType::F32, SoftKind::Soft) => kernels::norm::softmax_kernel(kb, o, a, i),
                        (DType::F32, SoftKind::Log) => {
                            kernels::norm::log_softmax_kernel(kb, o, a, i)
                        }
                        _ => kernels::norm::softmax_generic_kernel(
                            kb,
                            Elem { dtype: d },
                            kind,
                            split,
                        ),
                    }),
                ))
            }
            Op::LayerNorm(ln) | Op::RmsNorm(ln) => {
                let rms = matches!(op, Op::RmsNorm(_));
                let x = self.input(id, 0)?;
                let d = self.dtype(x);
                if !matches!(d, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
                    return unsup(format!("{} on {d}", op.name()));
                }
                let (rows, n) = ln.split(&self.dims(x));
                let scale = g.input(id, 1);
                let bias = if rms { None } else { g.input(id, 2) };
                let mut args = vec![Arg::Val(x)];
                args.extend(scale.iter().chain(bias.iter()).map(|&v| Arg::Val(v)));
                let outs = if rms { 1 } else { 3 };
                let writes: Vec<Value> = (0..outs).map(|slot| Value { node: id, slot }).collect();
                args.extend(writes.iter().map(|&v| Arg::Val(v)));
                let spec = kernels::norm::NormSpec {
                    rows,
                    n,
                    epsilon: ln.epsilon,
                    rms,
                    scale: scale.is_some(),
                    bias: bias.is_some(),
                };
                if rows > 0 && n == 0 && !rms {
                    // Y is empty but the statistics are not (NaN); the empty-output rule would
                    // drop the step and leave them unwritten.
                    return unsup("layer_norm over empty rows".into());
                }
                if rows * n == 0 {
                    return Ok(None);
                }
                Ok(Some(Step {
                    node: id,
                    kind: op.name().to_string(),
                    args,
                    writes,
                    inplace: vec![],
                    build: Box::new(move |kb| {
                        if d == DType::F32 {
                            kernels::norm::layer_norm_kernel(kb, &spec)
                        } else {
                            let e = kernels::norm::Elem { dtype: d };
                            kernels::norm::layer_norm_generic_kernel(kb, e, &spec)
                        }
                    }),
                    split: false,
                }))
            }
            Op::Lrn(l) => {
                let x = self.input(id, 0)?;
                let d = self.dtype(x);
                if d != DType::F32 {
                    return unsup(format!("lrn on {d} (only f32 is compiled)"));
                }
                let xd = self.dims(x);
                let shape = (xd[0], xd[1], xd[2..].iter().product::<usize>());
                let (l, reach) = (*l, l.reach());
                Ok(self.step(
                    id,
                    "lrn",
                    vec![Arg::Val(x), Arg::Val(y)],
                    vec![],
                    Box::new(move |kb| kernels::norm::lrn_kernel(kb, shape, reach, l)),
                ))
            }
            Op::Attention(at) => self.attention(id, at),
            Op::Rotary(r) => {
                let x = self.input(id, 0)?;
                let d = self.dtype(x);
                if d != DType::F32 {
                    return unsup(format!("rotary on {d} (only f32 is compiled)"));
                }
                let dims = r
                    .dims(&self.dims(x))
                    .map_err(|e| unsupported(g, id, e.to_string()))?;
                let (cos, sin) = (self.input(id, 1)?, self.input(id, 2)?);
                let pos = g.input(id, 3);
                let mut args = vec![Arg::Val(x), Arg::Val(cos), Arg::Val(sin)];
                if let Some(p) = pos {
                    args.push(Arg::Val(p));
                }
                args.push(Arg::Val(y));
                let spec = kernels::attention::RotarySpec {
                    dims,
                    interleaved: r.interleaved,
                    positions: self.dims(cos)[0],
                    pos: pos.map(|p| self.dtype(p).bits() / 8),
                };
                if spec.pos.is_some_and(|s| s != 4 && s != 8) {
                    return unsup("position_ids narrower than 32 bits".into());
                }
                if spec.pos.is_some() && spec.positions == 0 && dims.b * dims.s * dims.h > 0 {
                    return unsup("an empty cos/sin cache indexed by position ids".into());
                }
                Ok(self.step(
                    id,
                    "rotary",
                    args,
                    vec![],
                    Box::new(move |kb| kernels::attention::rotary_kernel(kb, &spec)),
                ))
            }
            _ => unsup(format!("{} is not compiled yet", op.name())),
        }
    }

    fn attention(
        &mut self,
        id: NodeId,
        at: &kiln_ir::ops::Attention,
    ) -> Result<Option<Step>, BackendError> {
        let g = self.g;
        let unsup = |r: String| Err(unsupported(g, id, r));
        let (q, k, v) = (self.input(id, 0)?, self.input(id, 1)?, self.input(id, 2)?);
        let d = self.dtype(q);
        if !matches!(d, DType::F32 | DType::F16 | DType::BF16) {
            return unsup(format!("attention on {d} (f32, f16 and bf16 are compiled)"));
        }
        let half = (d != DType::F32).then_some(d);
        let sizes = kiln_ir::ops::Attention::sizes(&self.dims(q), &self.dims(k), &self.dims(v));
        let mut args = vec![Arg::Val(q), Arg::Val(k), Arg::Val(v)];
        let mask = match g.input(id, 3) {
            None => None,
            Some(m) => {
                let md = self.dims(m);
                let boolean = self.dtype(m) == DType::Bool;
                let esize = self.dtype(m).bits() as i64 / 8;
                let mut m4 = vec![1usize; 4 - md.len()];
                m4.extend_from_slice(&md);
                let dense = kernels::dense_strides(&m4, esize);
                let mut strides = [0i64; 4];
                for i in 0..4 {
                    // The key axis never broadcasts: keys past the mask are masked.
                    strides[i] = if m4[i] == 1 && i < 3 { 0 } else { dense[i] };
                }
                args.push(Arg::Val(m));
                Some(kernels::attention::MaskSpec {
                    boolean,
                    strides,
                    len: m4[3],
                    count: md.iter().product(),
                })
            }
        };
        let nonpad = match g.input(id, 4) {
            None => None,
            Some(n) => {
                let size = self.dtype(n).bits() / 8;
                if size != 4 && size != 8 {
                    return unsup("nonpad_kv_seqlen narrower than 32 bits".into());
                }
                args.push(Arg::Val(n));
                Some(size)
            }
        };
        let outs = 1 + at.qk_mode.is_some() as u32;
        let writes: Vec<Value> = (0..outs).map(|slot| Value { node: id, slot }).collect();
        args.extend(writes.iter().map(|&v| Arg::Val(v)));
        let spec = kernels::attention::AttnSpec {
            sizes,
            scale: at.scale,
            softcap: at.softcap,
            causal: at.causal,
            past_len: at.past_len,
            left: at.left_window,
            right: at.right_window,
            qk_mode: at.qk_mode,
            mask,
            nonpad,
            half,
            wide_softmax: at.wide_softmax,
        };
        let [b, hq, _, sq, skv, _, _] = sizes;
        if b * hq * sq == 0 {
            return Ok(None);
        }
        args.push(Arg::Scratch(spec.scratch_bytes().max(4)));
        if skv == 0 {
            // No keys: Y is all zero (every row attends to nothing).
        }
        Ok(Some(Step {
            node: id,
            kind: "attention".to_string(),
            args,
            writes,
            inplace: vec![],
            build: Box::new(move |kb| kernels::attention::attention_kernel(kb, &spec)),
            split: false,
        }))
    }
}
