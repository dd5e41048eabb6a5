//! Lowering decisions: which kernel every node gets, with which operands, and where every value
//! lives (caller buffers, the arena, the weights).
//!
//! Nothing here emits code. Each compute node becomes a [`Step`]: a list of pointer operands and a
//! closure that writes the kernel body against them. Views (identity, reshape, flatten, squeeze,
//! unsqueeze) become nothing: their value is their input's storage. Every user-facing error
//! (unsupported dtype, op or combination) is raised here, before any code exists, and all of them
//! are collected so a model's problems are listed at once.

use crate::builder::{CodegenCfg, Kb};
use crate::kernels::conv::{ConvPlan, ConvSpec};
use crate::kernels::gemm::{pack_b, Addend, Lhs, Mat, Product, Rhs, Tiling};
use crate::kernels::pool::PoolSpec;
use crate::kernels::{self, dense_strides};
use crate::BackendError;
use kiln_ir::ops::{Layout, PoolKind};
use kiln_ir::{DType, Graph, NodeId, Op, Tensor, Value};
use std::collections::HashMap;

mod elementwise;
mod fused;
mod movement;
mod nhwc;
mod norm;

/// A pointer operand of a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Arg {
    /// A graph value (input, output, intermediate or constant), wherever it lives.
    Val(Value),
    /// A constant derived at compile time (packed weights, folded batch-norm parameters).
    Derived(usize),
    /// Scratch memory of this many bytes, private to the step.
    Scratch(usize),
}

/// One kernel call.
pub(crate) struct Step {
    /// The node it computes (for names, comments and errors).
    pub node: NodeId,
    /// Kernel name stem (`relu`, `conv`, `copy`, ...).
    pub kind: String,
    /// Operands in signature order: inputs, outputs, scratch.
    pub args: Vec<Arg>,
    /// Values the step writes.
    pub writes: Vec<Value>,
    /// Inputs whose storage the output may take over when they die here (elementwise ops that read
    /// each element before writing the same position).
    pub inplace: Vec<Value>,
    /// Emits the kernel body; `kb.args` are the operands' pointers in `args` order.
    pub build: Box<dyn Fn(&mut Kb)>,
    /// The body honours [`Kb::share`], so the work can be split into parts run in parallel.
    pub split: bool,
}

/// A compile-time constant that no graph value holds.
pub(crate) struct Derived {
    /// Report name, `"{node}:{what}"`.
    pub name: String,
    /// The node it serves.
    pub node: NodeId,
    /// The data.
    pub tensor: Tensor,
}

/// Everything lowering decided about a graph.
pub(crate) struct Lowered {
    /// Nodes in execution order.
    pub order: Vec<NodeId>,
    /// Position of each node in `order`.
    pub pos: HashMap<NodeId, usize>,
    /// Kernel calls in execution order.
    pub steps: Vec<Step>,
    /// Derived constants, indexed by [`Arg::Derived`].
    pub derived: Vec<Derived>,
    /// Compile-time value of every constant node (`const`, and `shape` of a static shape).
    pub consts: HashMap<NodeId, Tensor>,
    /// For every value, the value that owns its bytes (itself unless it is a view).
    pub root: HashMap<Value, Value>,
}

pub(crate) fn unsupported(g: &Graph, id: NodeId, reason: impl Into<String>) -> BackendError {
    let n = g.node(id);
    BackendError::Unsupported {
        node: n.name.clone(),
        op: n.op.name().to_string(),
        reason: reason.into(),
    }
}

/// Whether the op's output is its input's bytes under another shape.
pub(crate) fn is_view(op: &Op) -> bool {
    matches!(
        op,
        Op::Identity | Op::Reshape(_) | Op::Flatten(_) | Op::Squeeze(_) | Op::Unsqueeze(_)
    )
}

/// Lowers every node of `g`. Errors list every unsupported node.
pub(crate) fn lower(g: &Graph, cfg: CodegenCfg) -> Result<Lowered, BackendError> {
    let order = g
        .topo_order()
        .map_err(|e| BackendError::Graph(e.to_string()))?;
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut errors = Vec::new();

    // Static shapes everywhere, and every input edge present where an op needs it.
    for &id in &order {
        let n = g.node(id);
        for (slot, o) in n.outputs.iter().enumerate() {
            match o.ty.byte_size() {
                None => errors.push(unsupported(
                    g,
                    id,
                    format!(
                        "output {slot} has a symbolic shape {}; bind it with --dim",
                        o.ty
                    ),
                )),
                // Kernels use 32-bit immediate offsets inside one tensor.
                Some(b) if b > i32::MAX as usize => errors.push(unsupported(
                    g,
                    id,
                    format!("output {slot} ({}) is 2 GiB or more", o.ty),
                )),
                Some(_) => {}
            }
        }
    }
    if !errors.is_empty() {
        return Err(BackendError::many(errors));
    }
    if g.outputs.is_empty() {
        return Err(BackendError::Graph("the graph has no outputs".into()));
    }

    let mut l = Lowering {
        g,
        cfg,
        derived: Vec::new(),
        consts: HashMap::new(),
        root: HashMap::new(),
    };
    for &id in &order {
        let n = g.node(id);
        match &n.op {
            Op::Const(t) => {
                l.consts.insert(id, t.clone());
            }
            Op::Shape(s) => {
                // Every dim is static, so the shape is a constant.
                match g.input(id, 0) {
                    Some(x) => {
                        let dims = g.ty(x).dims().unwrap_or_default();
                        l.consts.insert(id, s.value_for(&dims));
                    }
                    None => errors.push(unsupported(g, id, "input 0 is missing")),
                }
            }
            _ => {}
        }
        for slot in 0..n.outputs.len() as u32 {
            let v = Value { node: id, slot };
            let r = match (is_view(&n.op), g.input(id, 0)) {
                (true, Some(x)) => l.root[&x],
                _ => v,
            };
            l.root.insert(v, r);
        }
    }

    let mut steps = Vec::new();
    for &id in &order {
        match l.node(id) {
            Ok(Some(s)) => steps.push(s),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(BackendError::many(errors));
    }
    Ok(Lowered {
        order,
        pos,
        steps,
        derived: l.derived,
        consts: l.consts,
        root: l.root,
    })
}

struct Lowering<'g> {
    g: &'g Graph,
    // Target capabilities: the GEMM tile shape (and so the packed weight layouts) depends on them.
    cfg: CodegenCfg,
    derived: Vec<Derived>,
    consts: HashMap<NodeId, Tensor>,
    root: HashMap<Value, Value>,
}

/// Element size in bytes for data movement, if the dtype has whole-byte elements.
fn esize(d: DType) -> Option<usize> {
    (d.bits() >= 8).then(|| d.bits() / 8)
}

impl<'g> Lowering<'g> {
    fn dims(&self, v: Value) -> Vec<usize> {
        self.g.ty(v).dims().unwrap_or_default()
    }

    fn dtype(&self, v: Value) -> DType {
        self.g.ty(v).dtype
    }

    /// The constant data of `v`, looking through views (with `v`'s own shape).
    fn const_of(&self, v: Value) -> Option<Tensor> {
        let r = self.root[&v];
        self.consts.get(&r.node).map(|t| t.reshaped(self.dims(v)))
    }

    fn derive(&mut self, node: NodeId, what: &str, t: Tensor) -> Arg {
        self.derived.push(Derived {
            name: format!("{}:{what}", self.g.node(node).name),
            node,
            tensor: t,
        });
        Arg::Derived(self.derived.len() - 1)
    }

    fn input(&self, id: NodeId, slot: usize) -> Result<Value, BackendError> {
        self.g
            .input(id, slot)
            .ok_or_else(|| unsupported(self.g, id, format!("input {slot} is missing")))
    }

    fn step(
        &self,
        id: NodeId,
        kind: &str,
        args: Vec<Arg>,
        inplace: Vec<Value>,
        build: Box<dyn Fn(&mut Kb)>,
    ) -> Option<Step> {
        Some(Step {
            node: id,
            kind: kind.to_string(),
            args,
            writes: vec![Value { node: id, slot: 0 }],
            inplace,
            build,
            split: false,
        })
    }

    /// The step for one node, or `None` when it needs no code.
    fn node(&mut self, id: NodeId) -> Result<Option<Step>, BackendError> {
        let g = self.g;
        let n = g.node(id);
        let op = n.op.clone();
        if matches!(op, Op::Input(_) | Op::Const(_) | Op::Shape(_)) || is_view(&op) {
            if is_view(&op) {
                self.input(id, 0)?;
            }
            return Ok(None);
        }
        let y = Value { node: id, slot: 0 };
        let ydims = self.dims(y);
        let ydt = self.dtype(y);
        let unsup = |r: String| Err(unsupported(g, id, r));
        let f32_only = |what: &str, d: DType| -> Result<(), BackendError> {
            if d == DType::F32 {
                Ok(())
            } else {
                Err(unsupported(
                    g,
                    id,
                    format!("{what} on {d} (only f32 is compiled)"),
                ))
            }
        };
        // Validate before deciding that an empty output needs no code.
        let step = match op {
            Op::Input(_)
            | Op::Const(_)
            | Op::Shape(_)
            | Op::Identity
            | Op::Reshape(_)
            | Op::Flatten(_)
            | Op::Squeeze(_)
            | Op::Unsqueeze(_) => return Ok(None),
            Op::Unary(_) | Op::Binary(_) | Op::Cast(_) | Op::Where => {
                self.elementwise_family(id, &op)?
            }
            Op::Conv(kiln_ir::ops::Conv {
                layout: Layout::Nhwc,
                ..
            })
            | Op::Pool(kiln_ir::ops::Pool {
                layout: Layout::Nhwc,
                ..
            })
            | Op::GlobalPool(kiln_ir::ops::GlobalPool {
                layout: Layout::Nhwc,
                ..
            }) => self.nhwc_family(id, &op)?,
            // Convolution of other float dtypes runs the generic direct kernel.
            Op::Conv(_) if g.input(id, 0).is_some_and(|x| g.ty(x).dtype != DType::F32) => {
                self.movement_family(id, &op)?
            }
            Op::Conv(c) => {
                let x = self.input(id, 0)?;
                let w = self.input(id, 1)?;
                let bias = g.input(id, 2);
                f32_only("conv", self.dtype(x))?;
                let xd = self.dims(x);
                let wd = self.dims(w);
                let spec = ConvSpec::new(&c, &xd, &wd, &ydims, bias.is_some());
                let tiling = Tiling::for_target(&self.cfg);
                // Constant weights of a product-based convolution are packed at compile time
                // into the micro-kernel's row panels.
                let packed = (!spec.depthwise())
                    .then(|| self.const_of(w))
                    .flatten()
                    .filter(|_| spec.m > 0 && spec.k_len() > 0);
                let plan = ConvPlan::new(&spec, tiling, packed.is_some(), self.cfg.winograd);
                let w_arg = match packed {
                    Some(t) => {
                        let v = plan.pack_weights(&spec, &t.to_f32_vec());
                        self.derive(id, "packed_w", Tensor::from_f32(vec![v.len()], &v))
                    }
                    None => Arg::Val(w),
                };
                let mut args = vec![Arg::Val(x), w_arg];
                if let Some(b) = bias {
                    args.push(Arg::Val(b));
                }
                args.push(Arg::Val(y));
                let scratch = plan.scratch_bytes(&spec);
                if scratch > 0 {
                    args.push(Arg::Scratch(scratch));
                }
                let split = kernels::conv::conv_splits(&spec);
                self.step(
                    id,
                    "conv",
                    args,
                    vec![],
                    Box::new(move |kb| kernels::conv::conv_kernel(kb, &spec, &plan)),
                )
                .map(|s| Step { split, ..s })
            }
            // Max pooling of other dtypes runs the generic kernel.
            Op::Pool(ref p)
                if p.kind == PoolKind::Max
                    && g.input(id, 0).is_some_and(|x| g.ty(x).dtype != DType::F32) =>
            {
                self.movement_family(id, &op)?
            }
            Op::Pool(p) => {
                let x = self.input(id, 0)?;
                f32_only(
                    if p.kind == PoolKind::Max {
                        "max_pool"
                    } else {
                        "avg_pool"
                    },
                    self.dtype(x),
                )?;
                let xd = self.dims(x);
                let spec = PoolSpec {
                    kind: p.kind,
                    planes: xd[0] * xd[1],
                    input: xd[2..].to_vec(),
                    kernel: p.kernel_shape.clone(),
                    strides: p.strides.clone(),
                    dilations: p.dilations.clone(),
                    pads: p.pads.clone(),
                    output: ydims[2..].to_vec(),
                    count_include_pad: p.count_include_pad,
                };
                let kind = if p.kind == PoolKind::Max {
                    "max_pool"
                } else {
                    "avg_pool"
                };
                let split = spec.splits();
                self.step(
                    id,
                    kind,
                    vec![Arg::Val(x), Arg::Val(y)],
                    vec![],
                    Box::new(move |kb| kernels::pool::pool_kernel(kb, &spec)),
                )
                .map(|s| Step { split, ..s })
            }
            Op::GlobalPool(p) => {
                let x = self.input(id, 0)?;
                f32_only("global pool", self.dtype(x))?;
                let xd = self.dims(x);
                let (planes, len) = (xd[0] * xd[1], xd[2..].iter().product::<usize>());
                let kind = p.kind;
                let name = if kind == PoolKind::Max {
                    "global_max_pool"
                } else {
                    "global_avg_pool"
                };
                let split = kernels::pool::global_pool_splits(planes, len);
                self.step(
                    id,
                    name,
                    vec![Arg::Val(x), Arg::Val(y)],
                    vec![],
                    Box::new(move |kb| kernels::pool::global_pool_kernel(kb, kind, planes, len)),
                )
                .map(|s| Step { split, ..s })
            }
            Op::Gemm(gm) => self.gemm(id, gm)?,
            Op::Movement(_)
            | Op::Resize(_)
            | Op::ConvTranspose(_)
            | Op::MaxPoolIndices(_)
            | Op::Einsum(_) => self.movement_family(id, &op)?,
            Op::Reduce(_)
            | Op::ArgReduce(_)
            | Op::Softmax(_)
            | Op::LogSoftmax(_)
            | Op::Hardmax(_)
            | Op::LayerNorm(_)
            | Op::RmsNorm(_)
            | Op::Lrn(_)
            | Op::Attention(_)
            | Op::Rotary(_) => self.norm_family(id, &op)?,
            Op::MatMul => self.matmul(id)?,
            Op::FusedEw(ref f) => self.fused(id, f)?,
            Op::BatchNorm(bn) => {
                let x = self.input(id, 0)?;
                f32_only("batch_norm", self.dtype(x))?;
                let xd = self.dims(x);
                let (nn, c, len) = (xd[0], xd[1], xd[2..].iter().product::<usize>());
                let params: Vec<Value> = (1..5)
                    .map(|i| self.input(id, i))
                    .collect::<Result<_, _>>()?;
                let consts: Option<Vec<Tensor>> =
                    params.iter().map(|&p| self.const_of(p)).collect();
                match consts {
                    Some(ps) => {
                        // Fold to y = x * s + t per channel, in f64 like the reference.
                        let (sc, bi, me, va) = (
                            ps[0].to_f64_vec(),
                            ps[1].to_f64_vec(),
                            ps[2].to_f64_vec(),
                            ps[3].to_f64_vec(),
                        );
                        let s: Vec<f64> = (0..c)
                            .map(|i| sc[i] / (va[i] + bn.epsilon as f64).sqrt())
                            .collect();
                        let t: Vec<f64> = (0..c).map(|i| bi[i] - me[i] * s[i]).collect();
                        let sa =
                            self.derive(id, "scale", Tensor::from_f64(DType::F32, vec![c], &s));
                        let ta =
                            self.derive(id, "shift", Tensor::from_f64(DType::F32, vec![c], &t));
                        self.step(
                            id,
                            "batch_norm",
                            vec![Arg::Val(x), sa, ta, Arg::Val(y)],
                            vec![x],
                            Box::new(move |kb| kernels::norm::affine_kernel(kb, nn, c, len)),
                        )
                    }
                    None => {
                        let mut args = vec![Arg::Val(x)];
                        args.extend(params.iter().map(|&p| Arg::Val(p)));
                        args.push(Arg::Val(y));
                        let eps = bn.epsilon;
                        self.step(
                            id,
                            "batch_norm",
                            args,
                            vec![x],
                            Box::new(move |kb| {
                                kernels::norm::batch_norm_kernel(kb, nn, c, len, eps)
                            }),
                        )
                    }
                }
            }
            Op::Transpose(t) => {
                let x = self.input(id, 0)?;
                let es =
                    esize(ydt).ok_or_else(|| unsupported(g, id, format!("transpose of {ydt}")))?;
                let xd = self.dims(x);
                let perm = t.perm.clone();
                self.step(
                    id,
                    "transpose",
                    vec![Arg::Val(x), Arg::Val(y)],
                    vec![],
                    Box::new(move |kb| kernels::layout::transpose_kernel(kb, &xd, &perm, es)),
                )
            }
            Op::Concat(c) => {
                let es =
                    esize(ydt).ok_or_else(|| unsupported(g, id, format!("concat of {ydt}")))?;
                let ins = g.inputs(id);
                let mut args = Vec::new();
                let mut dims = Vec::new();
                for (i, v) in ins.iter().enumerate() {
                    let v = v.ok_or_else(|| unsupported(g, id, format!("input {i} is missing")))?;
                    let d = self.dims(v);
                    if d.iter().product::<usize>() > 0 {
                        args.push(Arg::Val(v));
                        dims.push(d);
                    }
                }
                args.push(Arg::Val(y));
                let axis = c.axis;
                if dims.is_empty() {
                    return Ok(None);
                }
                self.step(
                    id,
                    "concat",
                    args,
                    vec![],
                    Box::new(move |kb| kernels::layout::concat_kernel(kb, &dims, axis, es)),
                )
            }
            Op::Slice(s) => {
                let x = self.input(id, 0)?;
                let es = esize(ydt).ok_or_else(|| unsupported(g, id, format!("slice of {ydt}")))?;
                let xd = self.dims(x);
                let ranges = s
                    .ranges(&xd)
                    .map_err(|e| unsupported(g, id, e.to_string()))?;
                self.step(
                    id,
                    "slice",
                    vec![Arg::Val(x), Arg::Val(y)],
                    vec![],
                    Box::new(move |kb| kernels::layout::slice_kernel(kb, &xd, &ranges, es)),
                )
            }
            Op::Gather(ga) => {
                let (x, ind) = (self.input(id, 0)?, self.input(id, 1)?);
                let es =
                    esize(ydt).ok_or_else(|| unsupported(g, id, format!("gather of {ydt}")))?;
                let xd = self.dims(x);
                let axis = ga.axis;
                let (outer, len, inner) = (
                    xd[..axis].iter().product::<usize>(),
                    xd[axis],
                    xd[axis + 1..].iter().product::<usize>(),
                );
                let count = self.dims(ind).iter().product::<usize>();
                let isz = self.dtype(ind).bits() / 8;
                if len == 0 && count > 0 && outer * inner > 0 {
                    return unsup("gather from an empty axis".to_string());
                }
                self.step(
                    id,
                    "gather",
                    vec![Arg::Val(x), Arg::Val(ind), Arg::Val(y)],
                    vec![],
                    Box::new(move |kb| {
                        kernels::layout::gather_kernel(kb, outer, len, inner, count, isz, es)
                    }),
                )
            }
        };
        // An empty output needs no code (and its inputs need no reading).
        if ydt.storage_bytes(ydims.iter().product()) == 0 {
            return Ok(None);
        }
        Ok(step)
    }

    fn gemm(&mut self, id: NodeId, gm: kiln_ir::ops::Gemm) -> Result<Option<Step>, BackendError> {
        let g = self.g;
        let y = Value { node: id, slot: 0 };
        let (a, b) = (self.input(id, 0)?, self.input(id, 1)?);
        if self.dtype(a) != DType::F32 {
            return Err(unsupported(
                g,
                id,
                format!("gemm on {} (only f32 is compiled)", self.dtype(a)),
            ));
        }
        let (ad, bd) = (self.dims(a), self.dims(b));
        let (m, k, n) = gm
            .mkn(&ad, &bd)
            .map_err(|e| unsupported(g, id, e.to_string()))?;
        let a_mat = if gm.trans_a {
            (4i64, (m * 4) as i64)
        } else {
            ((k * 4) as i64, 4i64)
        };
        let t = Tiling::for_target(&self.cfg);
        let mut args = vec![Arg::Val(a)];
        // A constant B (a fully connected layer's weights) is packed at compile time into the
        // micro-kernel's column panels; a run-time B is read in place, through a transposed copy
        // in scratch when it is stored [N, K].
        let mut transpose_b = false;
        let packed_b = match self.const_of(b) {
            Some(tb) => {
                let v = tb.to_f32_vec();
                let (rs, cs) = if gm.trans_b { (1, k) } else { (n, 1) };
                let packed = pack_b(&v, k, n, rs, cs, t.nr);
                let len = packed.len();
                let arg = self.derive(id, "packed_b", Tensor::from_f32(vec![len], &packed));
                args.push(arg);
                true
            }
            None => {
                args.push(Arg::Val(b));
                transpose_b = gm.trans_b;
                false
            }
        };
        let c = g.input(id, 2).filter(|_| gm.beta != 0.0);
        let mut c_mat = None;
        if let Some(c) = c {
            let cd = self.dims(c);
            let (c0, c1) = match cd.len() {
                0 => (1, 1),
                1 => (1, cd[0]),
                _ => (cd[cd.len() - 2], cd[cd.len() - 1]),
            };
            c_mat = Some((
                if c0 == 1 { 0 } else { (c1 * 4) as i64 },
                if c1 == 1 { 0 } else { 4i64 },
            ));
            args.push(Arg::Val(c));
        }
        args.push(Arg::Val(y));
        if transpose_b {
            args.push(Arg::Scratch(k * n * 4));
        }
        let (alpha, beta) = (gm.alpha, gm.beta);
        let post = gm.post;
        let has_c = c_mat.is_some();
        // Parts share the columns; a run-time transpose of B would have every part write all of
        // it, so that case stays serial.
        let split = !transpose_b && worth_splitting(m * n * k);
        let step = self.step(
            id,
            "gemm",
            args,
            vec![],
            Box::new(move |kb| {
                let pa = kb.args[0];
                let mut pb = kb.args[1];
                let mut i = 2;
                let pc = if has_c {
                    i += 1;
                    Some(kb.args[2])
                } else {
                    None
                };
                let py = kb.args[i];
                if transpose_b {
                    let scratch = kb.args[i + 1];
                    // B is [N, K]; write its transpose.
                    kernels::strided_copy(
                        kb,
                        &[k, n],
                        pb,
                        &[4, (k * 4) as i64],
                        scratch,
                        &[(n * 4) as i64, 4],
                        4,
                    );
                    pb = scratch;
                }
                let add = pc.zip(c_mat).map(|(p, (rs, cs))| Addend {
                    c: Mat { p, rs, cs },
                    beta,
                });
                let spec = Product {
                    m,
                    n,
                    k,
                    alpha,
                    a: Lhs::Strided(Mat {
                        p: pa,
                        rs: a_mat.0,
                        cs: a_mat.1,
                    }),
                    b: if packed_b {
                        Rhs::Panels(pb)
                    } else {
                        Rhs::Rows(Mat {
                            p: pb,
                            rs: (n * 4) as i64,
                            cs: 4,
                        })
                    },
                    y: Mat {
                        p: py,
                        rs: (n * 4) as i64,
                        cs: 4,
                    },
                    add,
                    post: post.clone(),
                };
                let (t0, t1) = kb.share(t.col_tiles(n));
                kernels::gemm::product(kb, &spec, &t, t0, t1, &mut |_, _, _| {});
            }),
        );
        Ok(step.map(|s| Step { split, ..s }))
    }

    fn matmul(&mut self, id: NodeId) -> Result<Option<Step>, BackendError> {
        let y = Value { node: id, slot: 0 };
        let (a, b) = (self.input(id, 0)?, self.input(id, 1)?);
        if self.dtype(a) != DType::F32 {
            // Other dtypes run the generic einsum loops.
            return self.matmul_generic(id);
        }
        let (ad, bd) = (self.dims(a), self.dims(b));
        let a2 = if ad.len() == 1 {
            vec![1, ad[0]]
        } else {
            ad.clone()
        };
        let b2 = if bd.len() == 1 {
            vec![bd[0], 1]
        } else {
            bd.clone()
        };
        let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
        let n = b2[b2.len() - 1];
        let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
        let rb = ab.len().max(bb.len());
        let pad = |d: &[usize]| -> Vec<usize> {
            std::iter::repeat_n(1, rb - d.len())
                .chain(d.iter().copied())
                .collect()
        };
        let (pa, pb) = (pad(ab), pad(bb));
        let ob: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| x.max(y)).collect();
        let bstr = |d: &[usize], unit: i64| -> Vec<i64> {
            let dense = dense_strides(d, unit);
            d.iter()
                .zip(dense)
                .map(|(&x, s)| if x == 1 { 0 } else { s })
                .collect()
        };
        let t = Tiling::for_target(&self.cfg);
        // A constant B is packed at compile time into column panels, every batch matrix of it.
        let packed = self.const_of(b).map(|tb| {
            let v = tb.to_f32_vec();
            let mats = v.len() / (k * n).max(1);
            let mut out = Vec::with_capacity(mats * t.packed_b_len(k, n));
            for i in 0..mats {
                out.extend(pack_b(&v[i * k * n..], k, n, n, 1, t.nr));
            }
            out
        });
        let b_arg = match &packed {
            Some(p) if k * n > 0 => self.derive(id, "packed_b", Tensor::from_f32(vec![p.len()], p)),
            _ => Arg::Val(b),
        };
        let packed_b = packed.is_some() && k * n > 0;
        let b_mat = if packed_b {
            t.packed_b_len(k, n) * 4
        } else {
            k * n * 4
        };
        let sa = bstr(&pa, (m * k * 4) as i64);
        let sb = bstr(&pb, b_mat as i64);
        let so = dense_strides(&ob, (m * n * 4) as i64);
        let (bdims, bs) = kernels::coalesce(&ob, &[sa, sb, so], 0);
        // A batch of row-major A's times one shared B is a single taller product.
        let (batch, rows, strides) = if bdims.len() == 1
            && bs[0][0] == (m * k * 4) as i64
            && bs[1][0] == 0
            && bs[2][0] == (m * n * 4) as i64
        {
            (vec![], m * bdims[0], vec![vec![], vec![], vec![]])
        } else {
            (bdims, m, bs)
        };
        let batches: usize = batch.iter().product();
        let split = worth_splitting(batches * rows * n * k);
        let step = self.step(
            id,
            "matmul",
            vec![Arg::Val(a), b_arg, Arg::Val(y)],
            vec![],
            Box::new(move |kb| {
                let (pa, pb, py) = (kb.args[0], kb.args[1], kb.args[2]);
                // Every part takes the same columns of every matrix of the batch.
                let (t0, t1) = kb.share(t.col_tiles(n));
                kernels::loop_nest(kb, &batch, &strides, &[pa, pb, py], &mut |kb, p| {
                    let spec = Product {
                        m: rows,
                        n,
                        k,
                        alpha: 1.0,
                        a: Lhs::Strided(Mat {
                            p: p[0],
                            rs: (k * 4) as i64,
                            cs: 4,
                        }),
                        b: if packed_b {
                            Rhs::Panels(p[1])
                        } else {
                            Rhs::Rows(Mat {
                                p: p[1],
                                rs: (n * 4) as i64,
                                cs: 4,
                            })
                        },
                        y: Mat {
                            p: p[2],
                            rs: (n * 4) as i64,
                            cs: 4,
                        },
                        add: None,
                        post: Vec::new(),
                    };
                    kernels::gemm::product(kb, &spec, &t, t0, t1, &mut |_, _, _| {});
                });
            }),
        );
        Ok(step.map(|s| Step { split, ..s }))
    }
}

/// Whether a product of this many multiply-adds is worth handing to the parallel-for (a dispatch
/// costs a few microseconds; 1e5 multiply-adds take about ten on one core).
fn worth_splitting(macs: usize) -> bool {
    macs > 100_000
}
