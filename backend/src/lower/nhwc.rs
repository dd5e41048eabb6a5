//! Lowering of the channels-last (NHWC) convolution and pooling ops (kernels in
//! `kernels::conv_nhwc` and `kernels::window_nhwc`).
//!
//! Compiled: 2-D f32 `Conv` with group 1 (a matrix product over positions, weights packed at
//! compile time) or depthwise (`group == C == M`, a window vectorized over channels), 2-D f32
//! `Pool` (max or average, every attribute) and 2-D f32 `GlobalPool`. Everything else in the
//! channels-last layout is an `unsupported` error naming the node.

use super::{unsupported, Arg, Lowering, Step};
use crate::kernels::conv_nhwc::{self, NhwcConv};
use crate::kernels::depthwise::Win;
use crate::kernels::gemm::Tiling;
use crate::kernels::window_nhwc::{self, Axis, GlobalSpec, WinOp, WindowSpec};
use crate::BackendError;
use kiln_ir::ops::{Conv, PoolKind};
use kiln_ir::{DType, NodeId, Op, Tensor, Value};

/// Multiply-adds above which a convolution is split into parallel parts (see
/// `lower::worth_splitting`).
const SPLIT_MACS: usize = 100_000;

impl Lowering<'_> {
    /// The step for a channels-last `Conv`, `Pool` or `GlobalPool`.
    pub(super) fn nhwc_family(
        &mut self,
        id: NodeId,
        op: &Op,
    ) -> Result<Option<Step>, BackendError> {
        let g = self.g;
        let unsup = |r: String| Err(unsupported(g, id, r));
        let x = self.input(id, 0)?;
        let xd = self.dims(x);
        let name = op.name();
        let dt = self.dtype(x);
        if dt != DType::F32 {
            return unsup(format!(
                "channels-last {name} on {dt} (only f32 is compiled)"
            ));
        }
        if xd.len() != 4 {
            return unsup(format!(
                "channels-last {name} of rank {} (only 2-D, N x H x W x C, is compiled)",
                xd.len()
            ));
        }
        let y = Value { node: id, slot: 0 };
        let yd = self.dims(y);
        match op {
            Op::Conv(c) => self.nhwc_conv(id, c, x, &xd, y, &yd),
            Op::Pool(p) => {
                let spec = WindowSpec {
                    n: xd[0],
                    c: xd[3],
                    rows: window_axis(
                        &xd,
                        &yd,
                        0,
                        &p.kernel_shape,
                        &p.strides,
                        &p.dilations,
                        &p.pads,
                    ),
                    cols: window_axis(
                        &xd,
                        &yd,
                        1,
                        &p.kernel_shape,
                        &p.strides,
                        &p.dilations,
                        &p.pads,
                    ),
                    op: WinOp::Pool(p.kind, p.count_include_pad),
                };
                let kind = match p.kind {
                    PoolKind::Max => "max_pool_nhwc",
                    PoolKind::Avg => "avg_pool_nhwc",
                };
                let split = spec.splits();
                Ok(self
                    .step(
                        id,
                        kind,
                        vec![Arg::Val(x), Arg::Val(y)],
                        vec![],
                        Box::new(move |kb| window_nhwc::window_kernel(kb, &spec)),
                    )
                    .map(|s| Step { split, ..s }))
            }
            Op::GlobalPool(p) => {
                let spec = GlobalSpec {
                    kind: p.kind,
                    n: xd[0],
                    p: xd[1] * xd[2],
                    c: xd[3],
                };
                let kind = match p.kind {
                    PoolKind::Max => "global_max_pool_nhwc",
                    PoolKind::Avg => "global_avg_pool_nhwc",
                };
                let split = spec.splits();
                Ok(self
                    .step(
                        id,
                        kind,
                        vec![Arg::Val(x), Arg::Val(y)],
                        vec![],
                        Box::new(move |kb| window_nhwc::global_pool_kernel(kb, &spec)),
                    )
                    .map(|s| Step { split, ..s }))
            }
            _ => unsup(format!("channels-last {name} is not compiled")),
        }
    }

    /// A channels-last 2-D convolution: group 1 as a product, depthwise as a window.
    fn nhwc_conv(
        &mut self,
        id: NodeId,
        conv: &Conv,
        x: Value,
        xd: &[usize],
        y: Value,
        yd: &[usize],
    ) -> Result<Option<Step>, BackendError> {
        let g = self.g;
        let w = self.input(id, 1)?;
        let bias = g.input(id, 2);
        let wd = self.dims(w);
        let (c, m) = (xd[3], wd[0]);
        let wconst = self.const_of(w);
        let mut args = vec![Arg::Val(x)];
        if conv.group == c && m == c && c > 1 {
            let spec = WindowSpec {
                n: xd[0],
                c,
                rows: window_axis(
                    xd,
                    yd,
                    0,
                    &conv.kernel_shape,
                    &conv.strides,
                    &conv.dilations,
                    &conv.pads,
                ),
                cols: window_axis(
                    xd,
                    yd,
                    1,
                    &conv.kernel_shape,
                    &conv.strides,
                    &conv.dilations,
                    &conv.pads,
                ),
                op: WinOp::Conv {
                    bias: bias.is_some(),
                    post: conv.post.clone(),
                    repack: wconst.is_none(),
                },
            };
            match &wconst {
                Some(t) => {
                    let table = window_nhwc::pack_depthwise(
                        &t.to_f32_vec(),
                        c,
                        conv.kernel_shape[0],
                        conv.kernel_shape[1],
                    );
                    let arg =
                        self.derive(id, "dw_table", Tensor::from_f32(vec![table.len()], &table));
                    args.push(arg);
                }
                None => args.push(Arg::Val(w)),
            }
            args.extend(bias.map(Arg::Val));
            args.push(Arg::Val(y));
            let scratch = spec.scratch_bytes();
            if scratch > 0 {
                args.push(Arg::Scratch(scratch));
            }
            let split = spec.splits();
            return Ok(self
                .step(
                    id,
                    "depthwise_nhwc",
                    args,
                    vec![],
                    Box::new(move |kb| window_nhwc::window_kernel(kb, &spec)),
                )
                .map(|s| Step { split, ..s }));
        }
        if conv.group != 1 {
            return Err(unsupported(
                g,
                id,
                format!(
                    "channels-last grouped convolution (group {} of {c} input and {m} output \
                     channels); only group 1 and depthwise are compiled",
                    conv.group
                ),
            ));
        }
        let spec = NhwcConv {
            n: xd[0],
            c,
            m,
            win: Win {
                h: xd[1],
                w: xd[2],
                oh: yd[1],
                ow: yd[2],
                kh: conv.kernel_shape[0],
                kw: conv.kernel_shape[1],
                sy: conv.strides[0],
                sx: conv.strides[1],
                dy: conv.dilations[0],
                dx: conv.dilations[1],
                pt: conv.pads[0],
                pl: conv.pads[1],
            },
            bias: bias.is_some(),
            post: conv.post.clone(),
        };
        let tiling = Tiling::for_target(&self.cfg);
        // With no input channels the product never reads its weights: no packing, no transpose.
        let empty = spec.k_len() == 0;
        let plan = spec.plan(tiling, wconst.is_some() || empty);
        match wconst.filter(|_| !empty) {
            Some(t) => {
                let v = spec.pack_weights(&t.to_f32_vec(), tiling.nr);
                let arg = self.derive(id, "packed_w", Tensor::from_f32(vec![v.len()], &v));
                args.push(arg);
            }
            None => args.push(Arg::Val(w)),
        }
        args.extend(bias.map(Arg::Val));
        args.push(Arg::Val(y));
        let scratch = spec.scratch_bytes(&plan);
        if scratch > 0 {
            args.push(Arg::Scratch(scratch));
        }
        // Run-time weights are transposed by the kernel itself: every part would write them.
        let split = plan.packed_w && spec.positions() * spec.m * spec.k_len() > SPLIT_MACS;
        Ok(self
            .step(
                id,
                "conv_nhwc",
                args,
                vec![],
                Box::new(move |kb| conv_nhwc::conv_kernel(kb, &spec, &plan)),
            )
            .map(|s| Step { split, ..s }))
    }
}

/// Spatial axis `i` (0: rows, 1: columns) of a channels-last window op on input dims `xd` and
/// output dims `yd` (both N x H x W x C), from the op's attributes (pads are `[begins..., ends...]`).
fn window_axis(
    xd: &[usize],
    yd: &[usize],
    i: usize,
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &[usize],
) -> Axis {
    Axis {
        input: xd[1 + i],
        output: yd[1 + i],
        kernel: kernel[i],
        stride: strides[i],
        dilation: dilations[i],
        pad_begin: pads[i],
        pad_end: pads[2 + i],
    }
}
