//! The closed set of operations.
//!
//! Every op family has one file holding its attributes, its type and shape inference and its reference
//! evaluator. [`Op`] dispatches to them. The same inference serves the frontend, every pass, the verifier
//! and the backend. To add an op, see `docs/DESIGN.md` ("Adding an op").

mod attention;
mod conv;
mod conv_extra;
mod einsum;
mod elementwise;
mod fused;
mod layout;
mod linalg;
mod movement;
mod norm;
mod reduce;
mod resize;

pub use attention::{Attention, Rotary, RotaryDims};
pub use conv::{resolve_auto_pad, AutoPad, Conv, GlobalPool, Layout, Pool, PoolKind};
pub use conv_extra::{ConvTranspose, MaxPoolIndices};
pub use einsum::{Einsum, EinsumPlan};
pub use elementwise::{broadcast_shapes, BinaryOp, Cast, UnaryOp};
pub use fused::{FusedArg, FusedEw, FusedInst};
pub use layout::{Concat, Flatten, Gather, Reshape, ShapeOf, Slice, Squeeze, Transpose, Unsqueeze};
pub use linalg::{matmul_shapes, Gemm};
pub use movement::{
    CumSum, Expand, GatherElements, GatherNd, Movement, OneHot, Pad, PadMode, Reduction,
    ScatterElements, ScatterNd, Tile, TopK, Trilu,
};
pub use norm::{BatchNorm, Softmax};
pub use norm::{LayerNorm, Lrn};
pub use reduce::{int_range, ArgReduce, Reduce, ReduceKind};
pub use resize::{AxisPlan, CoordMode, NearestMode, Resize, ResizeMode};

use crate::attr::{Attr, AttrError, Attrs};
use crate::{Dim, Tensor, TensorType};

/// What inference knows about one input: its type, and its data when it is a constant.
#[derive(Clone, Copy, Debug)]
pub struct Fact<'a> {
    /// Type and shape.
    pub ty: &'a TensorType,
    /// Data, when the value is a compile-time constant.
    pub value: Option<&'a Tensor>,
}

/// Why an op rejected its inputs or attributes.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The inputs or attributes break the op's rules (bad model).
    #[error("{0}")]
    Invalid(String),
    /// Legal ONNX that kiln does not handle yet.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A bad attribute in the textual form.
    #[error(transparent)]
    Attr(#[from] AttrError),
}

/// Shorthand for an [`OpError::Invalid`].
pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T, OpError> {
    Err(OpError::Invalid(msg.into()))
}

/// An operation. Plain data: no behaviour hidden behind trait objects.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Graph input number `n` (ONNX order).
    Input(usize),
    /// A compile-time constant (initializer, `Constant` node, or folded value).
    Const(Tensor),
    /// Passes its input through.
    Identity,
    /// Elementwise op of one input.
    Unary(UnaryOp),
    /// Elementwise op of two inputs with numpy broadcasting.
    Binary(BinaryOp),
    /// Element type conversion.
    Cast(Cast),
    /// `cond ? x : y` with the three inputs broadcast together. Inputs: cond (bool), x, y.
    Where,
    /// N-d convolution. Inputs: X, W, optional B.
    Conv(Conv),
    /// Max or average pooling over a window.
    Pool(Pool),
    /// Max or average over all spatial positions.
    GlobalPool(GlobalPool),
    /// `alpha * A' * B' + beta * C`. Inputs: A, B, optional C.
    Gemm(Gemm),
    /// numpy `matmul`.
    MatMul,
    /// Inference-mode batch normalization. Inputs: X, scale, B, mean, var.
    BatchNorm(BatchNorm),
    /// Softmax along an axis.
    Softmax(Softmax),
    /// New shape, same data.
    Reshape(Reshape),
    /// Collapse to 2-D at an axis.
    Flatten(Flatten),
    /// Permute axes.
    Transpose(Transpose),
    /// Join along an axis; any number of inputs.
    Concat(Concat),
    /// Remove size-1 axes.
    Squeeze(Squeeze),
    /// Insert size-1 axes.
    Unsqueeze(Unsqueeze),
    /// Strided slice with constant bounds.
    Slice(Slice),
    /// Gather along an axis. Inputs: data, indices.
    Gather(Gather),
    /// The shape of the input as an i64 tensor.
    Shape(ShapeOf),
    /// Data movement: expand, tile, pad, trilu, element gathers and scatters, one-hot, cumsum, top-k.
    Movement(Movement),
    /// Nearest, linear or cubic resampling. Input: X.
    Resize(Resize),
    /// Transposed convolution. Inputs: X, W, optional B.
    ConvTranspose(ConvTranspose),
    /// Max pooling with the indices of the maxima. Outputs: Y, Indices.
    MaxPoolIndices(MaxPoolIndices),
    /// Sum of products over labelled axes; any number of inputs.
    Einsum(Einsum),
    /// Reduction over a set of axes (ReduceSum, ReduceMean, ...).
    Reduce(Reduce),
    /// Index of the maximum or minimum along an axis.
    ArgReduce(ArgReduce),
    /// Log of the softmax along an axis.
    LogSoftmax(Softmax),
    /// One-hot of the first maximum along an axis.
    Hardmax(Softmax),
    /// Layer normalization over the trailing axes. Inputs: X, optional scale, optional bias;
    /// outputs: Y, Mean, InvStdDev.
    LayerNorm(LayerNorm),
    /// RMS normalization over the trailing axes. Inputs: X, optional scale.
    RmsNorm(LayerNorm),
    /// Local response normalization across channels.
    Lrn(Lrn),
    /// Scaled dot-product attention. Inputs: Q, K, V, optional mask, optional nonpad_kv_seqlen.
    Attention(Attention),
    /// Rotary position embedding. Inputs: X, cos cache, sin cache, optional position_ids.
    Rotary(Rotary),
    /// A chain of f32 elementwise ops run as one loop (formed by the `fuse-elementwise` pass). Any
    /// number of inputs, broadcast together.
    FusedEw(FusedEw),
}

impl Op {
    /// The name used in the textual IR (`conv`, `add`, `relu`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input(_) => "input",
            Op::Const(_) => "const",
            Op::Identity => "identity",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Cast(_) => "cast",
            Op::Where => "where",
            Op::Conv(_) => "conv",
            Op::Pool(p) => p.name(),
            Op::GlobalPool(p) => p.name(),
            Op::Gemm(_) => "gemm",
            Op::MatMul => "matmul",
            Op::BatchNorm(_) => "batch_norm",
            Op::Softmax(_) => "softmax",
            Op::Reshape(_) => "reshape",
            Op::Flatten(_) => "flatten",
            Op::Transpose(_) => "transpose",
            Op::Concat(_) => "concat",
            Op::Squeeze(_) => "squeeze",
            Op::Unsqueeze(_) => "unsqueeze",
            Op::Slice(_) => "slice",
            Op::Gather(_) => "gather",
            Op::Shape(_) => "shape",
            Op::Movement(m) => m.name(),
            Op::Resize(_) => "resize",
            Op::ConvTranspose(_) => "conv_transpose",
            Op::MaxPoolIndices(_) => "max_pool_indices",
            Op::Einsum(_) => "einsum",
            Op::Reduce(r) => r.kind.name(),
            Op::ArgReduce(a) => a.name(),
            Op::LogSoftmax(_) => "log_softmax",
            Op::Hardmax(_) => "hardmax",
            Op::LayerNorm(_) => "layer_norm",
            Op::RmsNorm(_) => "rms_norm",
            Op::Lrn(_) => "lrn",
            Op::Attention(_) => "attention",
            Op::Rotary(_) => "rotary",
            Op::FusedEw(_) => "fused_ew",
        }
    }

    /// The most inputs the op takes (`None`: any number, as for `concat`).
    pub fn max_inputs(&self) -> Option<usize> {
        Some(match self {
            Op::Input(_) | Op::Const(_) => 0,
            Op::Binary(_) | Op::MatMul | Op::Gather(_) => 2,
            Op::Conv(_) | Op::Gemm(_) => 3,
            Op::Where => 3,
            Op::BatchNorm(_) => 5,
            Op::Concat(_) | Op::Einsum(_) => return None,
            Op::FusedEw(_) => return None,
            Op::Movement(m) => m.max_inputs(),
            Op::Resize(_) | Op::MaxPoolIndices(_) => 1,
            Op::ConvTranspose(_) => 3,
            Op::Identity
            | Op::Unary(_)
            | Op::Cast(_)
            | Op::Pool(_)
            | Op::GlobalPool(_)
            | Op::Softmax(_)
            | Op::Reshape(_)
            | Op::Flatten(_)
            | Op::Transpose(_)
            | Op::Squeeze(_)
            | Op::Unsqueeze(_)
            | Op::Slice(_)
            | Op::Shape(_) => 1,
            Op::Reduce(_) | Op::ArgReduce(_) | Op::LogSoftmax(_) | Op::Hardmax(_) | Op::Lrn(_) => 1,
            Op::RmsNorm(_) => 2,
            Op::LayerNorm(_) => 3,
            Op::Rotary(_) => 4,
            Op::Attention(_) => 5,
        })
    }

    /// Output types for the given inputs (`None` for an absent optional input).
    pub fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        // Trailing absent inputs are the same as no input (ONNX lists empty names for them), but a
        // present input beyond the op's arity would be silently ignored by inference, the evaluator
        // and the backend alike: reject it so the verifier catches the bad edge.
        let given = ins.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
        if let Some(max) = self.max_inputs() {
            if given > max {
                return invalid(format!(
                    "{} takes at most {max} inputs, got {given}",
                    self.name()
                ));
            }
        }
        match self {
            Op::Input(_) => invalid("graph inputs carry their type; nothing to infer"),
            Op::Const(t) => Ok(vec![t.ty()]),
            Op::Identity => Ok(vec![req(ins, 0)?.ty.clone()]),
            Op::Unary(u) => u.infer(ins),
            Op::Binary(b) => b.infer(ins),
            Op::Cast(c) => c.infer(ins),
            Op::Where => elementwise::where_infer(ins),
            Op::Conv(c) => c.infer(ins),
            Op::Pool(p) => p.infer(ins),
            Op::GlobalPool(p) => p.infer(ins),
            Op::Gemm(g) => g.infer(ins),
            Op::MatMul => linalg::matmul_infer(ins),
            Op::BatchNorm(b) => b.infer(ins),
            Op::Softmax(s) => s.infer(ins),
            Op::Reshape(r) => r.infer(ins),
            Op::Flatten(f) => f.infer(ins),
            Op::Transpose(t) => t.infer(ins),
            Op::Concat(c) => c.infer(ins),
            Op::Squeeze(s) => s.infer(ins),
            Op::Unsqueeze(u) => u.infer(ins),
            Op::Slice(s) => s.infer(ins),
            Op::Gather(g) => g.infer(ins),
            Op::Shape(s) => s.infer(ins),
            Op::Movement(m) => m.infer(ins),
            Op::Resize(r) => r.infer(ins),
            Op::ConvTranspose(c) => c.infer(ins),
            Op::MaxPoolIndices(p) => p.infer(ins),
            Op::Einsum(e) => e.infer(ins),
            Op::Reduce(r) => r.infer(ins),
            Op::ArgReduce(a) => a.infer(ins),
            Op::LogSoftmax(s) | Op::Hardmax(s) => s.infer(ins),
            Op::LayerNorm(n) => n.infer(ins, false),
            Op::RmsNorm(n) => n.infer(ins, true),
            Op::Lrn(n) => n.infer(ins),
            Op::Attention(a) => a.infer(ins),
            Op::Rotary(r) => r.infer(ins),
            Op::FusedEw(f) => f.infer(ins),
        }
    }

    /// Reference evaluation on constant inputs: the constant folder and the test oracle.
    /// Simple and obviously right beats fast here.
    ///
    /// The inputs are first checked by [`Op::infer`], so every evaluator works on inputs whose shapes and
    /// dtypes it knows to be valid, and a bad call is an [`OpError`] rather than a panic.
    pub fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        if let Op::Input(_) = self {
            return invalid("a graph input has no value at compile time");
        }
        let tys: Vec<Option<TensorType>> = ins.iter().map(|t| t.map(Tensor::ty)).collect();
        let facts: Vec<Option<Fact>> = ins
            .iter()
            .zip(&tys)
            .map(|(t, ty)| ty.as_ref().map(|ty| Fact { ty, value: *t }))
            .collect();
        let expected = self.infer(&facts)?;
        let out = self.eval_checked(ins)?;
        debug_assert_eq!(
            out.iter().map(Tensor::ty).collect::<Vec<_>>(),
            expected,
            "{} evaluator disagrees with its inference",
            self.name()
        );
        Ok(out)
    }

    fn eval_checked(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        match self {
            Op::Input(_) => invalid("a graph input has no value at compile time"),
            Op::Const(t) => Ok(vec![t.clone()]),
            Op::Identity => Ok(vec![req_t(ins, 0)?.clone()]),
            Op::Unary(u) => u.eval(ins),
            Op::Binary(b) => b.eval(ins),
            Op::Cast(c) => c.eval(ins),
            Op::Where => elementwise::where_eval(ins),
            Op::Conv(c) => c.eval(ins),
            Op::Pool(p) => p.eval(ins),
            Op::GlobalPool(p) => p.eval(ins),
            Op::Gemm(g) => g.eval(ins),
            Op::MatMul => linalg::matmul_eval(ins),
            Op::BatchNorm(b) => b.eval(ins),
            Op::Softmax(s) => s.eval(ins),
            Op::Reshape(r) => r.eval(ins),
            Op::Flatten(f) => f.eval(ins),
            Op::Transpose(t) => t.eval(ins),
            Op::Concat(c) => c.eval(ins),
            Op::Squeeze(s) => s.eval(ins),
            Op::Unsqueeze(u) => u.eval(ins),
            Op::Slice(s) => s.eval(ins),
            Op::Gather(g) => g.eval(ins),
            Op::Shape(s) => s.eval(ins),
            Op::Movement(m) => m.eval(ins),
            Op::Resize(r) => r.eval(ins),
            Op::ConvTranspose(c) => c.eval(ins),
            Op::MaxPoolIndices(p) => p.eval(ins),
            Op::Einsum(e) => e.eval(ins),
            Op::Reduce(r) => r.eval(ins),
            Op::ArgReduce(a) => a.eval(ins),
            Op::LogSoftmax(s) => s.eval_log(ins),
            Op::Hardmax(s) => s.eval_hard(ins),
            Op::LayerNorm(n) => n.eval(ins, false),
            Op::RmsNorm(n) => n.eval(ins, true),
            Op::Lrn(n) => n.eval(ins),
            Op::Attention(a) => a.eval(ins),
            Op::Rotary(r) => r.eval(ins),
            Op::FusedEw(f) => f.eval(ins),
        }
    }

    /// Attributes as printed in the textual IR, in a fixed order. Defaults are printed too, so the text
    /// says everything the backend will see.
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        match self {
            Op::Input(n) => vec![("index", Attr::Int(*n as i64))],
            Op::Const(_) | Op::Identity | Op::MatMul => vec![],
            Op::Unary(u) => u.attrs(),
            Op::Binary(_) => vec![],
            Op::Cast(c) => c.attrs(),
            Op::Where => vec![],
            Op::Conv(c) => c.attrs(),
            Op::Pool(p) => p.attrs(),
            Op::GlobalPool(p) => p.attrs(),
            Op::Gemm(g) => g.attrs(),
            Op::BatchNorm(b) => b.attrs(),
            Op::Softmax(s) => s.attrs(),
            Op::Reshape(r) => r.attrs(),
            Op::Flatten(f) => f.attrs(),
            Op::Transpose(t) => t.attrs(),
            Op::Concat(c) => c.attrs(),
            Op::Squeeze(s) => s.attrs(),
            Op::Unsqueeze(u) => u.attrs(),
            Op::Slice(s) => s.attrs(),
            Op::Gather(g) => g.attrs(),
            Op::Shape(s) => s.attrs(),
            Op::Movement(m) => m.attrs(),
            Op::Resize(r) => r.attrs(),
            Op::ConvTranspose(c) => c.attrs(),
            Op::MaxPoolIndices(p) => p.attrs(),
            Op::Einsum(e) => e.attrs(),
            Op::Reduce(r) => r.attrs(),
            Op::ArgReduce(a) => a.attrs(),
            Op::LogSoftmax(s) | Op::Hardmax(s) => s.attrs(),
            Op::LayerNorm(n) | Op::RmsNorm(n) => n.attrs(),
            Op::Lrn(n) => n.attrs(),
            Op::Attention(a) => a.attrs(),
            Op::Rotary(r) => r.attrs(),
            Op::FusedEw(f) => f.attrs(),
        }
    }

    /// Builds an op from its textual name and attributes (inverse of [`Op::name`] + [`Op::attrs`]).
    /// `input` and `const` are handled by the parser itself.
    pub fn from_text(name: &str, a: &Attrs) -> Result<Op, OpError> {
        if let Some(u) = UnaryOp::from_text(name, a)? {
            return Ok(Op::Unary(u));
        }
        if let Some(b) = BinaryOp::from_name(name) {
            return Ok(Op::Binary(b));
        }
        if let Some(k) = ReduceKind::from_name(name) {
            return Ok(Op::Reduce(Reduce::from_attrs(k, a)?));
        }
        if let Some(m) = Movement::from_text(name, a)? {
            return Ok(Op::Movement(m));
        }
        Ok(match name {
            "identity" => Op::Identity,
            "matmul" => Op::MatMul,
            "cast" => Op::Cast(Cast::from_attrs(a)?),
            "where" => Op::Where,
            "conv" => Op::Conv(Conv::from_attrs(a)?),
            "max_pool" => Op::Pool(Pool::from_attrs(PoolKind::Max, a)?),
            "avg_pool" => Op::Pool(Pool::from_attrs(PoolKind::Avg, a)?),
            "global_max_pool" => Op::GlobalPool(GlobalPool::from_attrs(PoolKind::Max, a)?),
            "global_avg_pool" => Op::GlobalPool(GlobalPool::from_attrs(PoolKind::Avg, a)?),
            "gemm" => Op::Gemm(Gemm::from_attrs(a)?),
            "batch_norm" => Op::BatchNorm(BatchNorm::from_attrs(a)?),
            "softmax" => Op::Softmax(Softmax::from_attrs(a)?),
            "reshape" => Op::Reshape(Reshape::from_attrs(a)?),
            "flatten" => Op::Flatten(Flatten::from_attrs(a)?),
            "transpose" => Op::Transpose(Transpose::from_attrs(a)?),
            "concat" => Op::Concat(Concat::from_attrs(a)?),
            "squeeze" => Op::Squeeze(Squeeze::from_attrs(a)?),
            "unsqueeze" => Op::Unsqueeze(Unsqueeze::from_attrs(a)?),
            "slice" => Op::Slice(Slice::from_attrs(a)?),
            "gather" => Op::Gather(Gather::from_attrs(a)?),
            "shape" => Op::Shape(ShapeOf::from_attrs(a)?),
            "resize" => Op::Resize(Resize::from_attrs(a)?),
            "conv_transpose" => Op::ConvTranspose(ConvTranspose::from_attrs(a)?),
            "max_pool_indices" => Op::MaxPoolIndices(MaxPoolIndices::from_attrs(a)?),
            "einsum" => Op::Einsum(Einsum::from_attrs(a)?),
            "argmax" => Op::ArgReduce(ArgReduce::from_attrs(true, a)?),
            "argmin" => Op::ArgReduce(ArgReduce::from_attrs(false, a)?),
            "log_softmax" => Op::LogSoftmax(Softmax::from_attrs(a)?),
            "hardmax" => Op::Hardmax(Softmax::from_attrs(a)?),
            "layer_norm" => Op::LayerNorm(LayerNorm::from_attrs(a)?),
            "rms_norm" => Op::RmsNorm(LayerNorm::from_attrs(a)?),
            "lrn" => Op::Lrn(Lrn::from_attrs(a)?),
            "attention" => Op::Attention(Attention::from_attrs(a)?),
            "rotary" => Op::Rotary(Rotary::from_attrs(a)?),
            "fused_ew" => Op::FusedEw(FusedEw::from_attrs(a)?),
            _ => return Err(OpError::Invalid(format!("unknown op `{name}`"))),
        })
    }
}

/// Input `i`, which must be present.
pub(crate) fn req<'a>(ins: &'a [Option<Fact<'a>>], i: usize) -> Result<&'a Fact<'a>, OpError> {
    ins.get(i)
        .and_then(|f| f.as_ref())
        .ok_or_else(|| OpError::Invalid(format!("input {i} is missing")))
}

/// Input tensor `i` of an evaluation, which must be present.
pub(crate) fn req_t<'a>(ins: &'a [Option<&'a Tensor>], i: usize) -> Result<&'a Tensor, OpError> {
    ins.get(i)
        .copied()
        .flatten()
        .ok_or_else(|| OpError::Invalid(format!("input {i} is missing")))
}

/// The constant dims of a type, or an `Unsupported` error naming the symbolic one.
pub(crate) fn dims_of(ty: &TensorType) -> Result<Vec<usize>, OpError> {
    ty.shape
        .iter()
        .map(|d| match d {
            Dim::Const(n) => Ok(*n),
            Dim::Sym { name, .. } => {
                Err(OpError::Unsupported(format!("symbolic dimension `{name}`")))
            }
        })
        .collect()
}

/// Normalizes a possibly negative ONNX axis against `rank`: the accepted range is `[-rank, rank - 1]`,
/// so a rank-0 tensor has no axis at all. (Ops whose axis may equal the rank, like Flatten, add one to
/// the rank they pass.)
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize, OpError> {
    let r = i64::try_from(rank).unwrap_or(i64::MAX);
    if axis < -r || axis >= r {
        return invalid(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

/// Checks an already normalized axis against `rank`.
pub(crate) fn check_axis(axis: usize, rank: usize) -> Result<(), OpError> {
    if axis >= rank {
        return invalid(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(())
}

/// `max(a, b)` that propagates NaN, like numpy's `maximum` (the ONNX reference) and Cranelift's `fmax`;
/// `f64::max` would drop the NaN instead.
pub(crate) fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// `min(a, b)` that propagates NaN (see [`nan_max`]).
pub(crate) fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Row-major strides of `dims`, in elements.
pub(crate) fn strides_of(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Calls `f` with every multi-index of `dims` in row-major order (once with `[]` for rank 0, never
/// when a dim is 0).
pub(crate) fn for_each_index(dims: &[usize], mut f: impl FnMut(&[usize])) {
    if dims.contains(&0) {
        return;
    }
    let mut idx = vec![0; dims.len()];
    loop {
        f(&idx);
        let mut d = dims.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// `Attr::Ints` from usizes.
pub(crate) fn ints(v: &[usize]) -> Attr {
    Attr::Ints(v.iter().map(|&x| x as i64).collect())
}
