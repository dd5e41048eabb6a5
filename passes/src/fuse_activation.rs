//! Fusing activations and constant biases into the Conv or Gemm that produces their input.
//!
//! A separate elementwise node costs a full pass over the activation tensor: a load and a store per
//! element, for a few instructions of work. The conv and gemm kernels already hold every output
//! element in a register before storing it, so an activation there (the op's `post` chain) is nearly
//! free, and a constant bias added afterwards can join the bias the kernel adds anyway.
//!
//! Three rewrites, all on f32 (the dtype the backend's conv and gemm kernels compile):
//! - `mul(x, sigmoid(x))` becomes `silu(x)` (on any value: one kernel instead of two even unfused);
//! - `add(y, c)` with `y` a conv or gemm output read by nothing else and `c` a constant that is the
//!   same along every axis but the output channels (`[1, M, 1, 1]`, `[M, 1, 1]`, a scalar) or the
//!   gemm's output columns (`[N]`, `[1, N]`) is folded into the bias (conv) or C (gemm), while the
//!   producer's `post` is still empty (the bias comes before the activations);
//! - `act(y)` with `y` such an output and `act` a relu, clip, leaky relu, sigmoid, hard sigmoid, hard
//!   swish, gelu, silu or tanh is appended to the producer's `post`, repeatedly for chains. Views
//!   (reshape, flatten, squeeze, unsqueeze) may sit between them, each the only reader of the value
//!   before it: an elementwise op gives the same values before or after a view. Depthwise convs take
//!   every such activation; gemms and the other convs (the gemm microkernel's epilogue) take relu and
//!   clip, the ones measured faster there (see `epilogue_pays`, and
//!   [`FuseActivation::gemm_epilogue`] for the rest).
//!
//! The fused node keeps the producer's node name and output name; the removed nodes go away at once
//! (so that the next link of a chain finds its producer with a single reader again).

use crate::{Fuel, Pass, PassError};
use kiln_ir::ops::{BinaryOp, UnaryOp};
use kiln_ir::{DType, Graph, GraphError, NodeId, Op, OpError, Tensor, Value};

/// Forms `silu` from `mul(x, sigmoid(x))`, then folds constant bias adds and activations into the f32
/// `conv` or `gemm` producing their input (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct FuseActivation {
    /// Fuse every activation above into gemms and non-depthwise convs (the gemm microkernel's
    /// epilogue), not only relu and clip. Off by default: the others measured slower there than
    /// as a separate loop (the numbers are in the module's `epilogue_pays`). Constant bias adds fold
    /// into every producer either way.
    pub gemm_epilogue: bool,
}

impl Pass for FuseActivation {
    fn name(&self) -> &'static str {
        "fuse-activation"
    }

    fn run(&self, g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError> {
        let mut changed = false;
        // Silu first: `conv -> sigmoid -> mul(conv, sigmoid)` gives the conv two readers, which would
        // block the fusion below until the pair has become one `silu`.
        for id in g.topo_order()? {
            let Some((x, sigmoid)) = silu_operand(g, id) else {
                continue;
            };
            if !fuel.take() {
                return Ok(changed);
            }
            g.node_mut(id).op = Op::Unary(UnaryOp::Silu);
            g.set_input(id, 0, Some(x));
            g.set_input(id, 1, None);
            // A sigmoid nothing else reads would still count as a reader of x and block fusing the
            // silu into x's producer: remove it now rather than in `dce`.
            let s = Value {
                node: sigmoid,
                slot: 0,
            };
            if g.users(s).is_empty() && !g.is_output(s) {
                g.remove_node(sigmoid);
            }
            changed = true;
        }
        for id in g.topo_order()? {
            if !g.contains(id) || !fusable_producer(g, id) {
                continue;
            }
            while let Some(rewrite) = next_rewrite(g, id, self.gemm_epilogue) {
                if !fuel.take() {
                    return Ok(changed);
                }
                apply(g, id, rewrite)?;
                changed = true;
            }
        }
        Ok(changed)
    }
}

/// One rewrite at a producer.
enum Rewrite {
    /// Append this activation to `post`; the node is its only reader.
    Activation(UnaryOp, NodeId),
    /// Fold the constant added by this `add` node into the bias.
    Bias(Tensor, NodeId),
}

/// `x` and the sigmoid node when `id` is `mul(x, sigmoid(x))` (either operand order) with no
/// broadcasting.
fn silu_operand(g: &Graph, id: NodeId) -> Option<(Value, NodeId)> {
    if g.node(id).op != Op::Binary(BinaryOp::Mul) {
        return None;
    }
    let (a, b) = (g.input(id, 0)?, g.input(id, 1)?);
    let sigmoid_of = |s: Value| match g.node(s.node).op {
        Op::Unary(UnaryOp::Sigmoid) => g.input(s.node, 0),
        _ => None,
    };
    let (x, s) = if sigmoid_of(b) == Some(a) {
        (a, b)
    } else if sigmoid_of(a) == Some(b) {
        (b, a)
    } else {
        return None;
    };
    // Same type in and out: silu's output must be exactly the mul's (a float x, so sigmoid took it).
    (g.ty(x) == g.ty(Value { node: id, slot: 0 })).then_some((x, s.node))
}

/// An f32 conv or gemm: the ops whose kernels apply a `post` chain and add a bias.
fn fusable_producer(g: &Graph, id: NodeId) -> bool {
    matches!(g.node(id).op, Op::Conv(_) | Op::Gemm(_))
        && g.input(id, 0).is_some_and(|x| g.ty(x).dtype == DType::F32)
        && g.node(id).outputs.len() == 1
}

/// The activations the conv and gemm epilogues are asked to apply: the ones models put after a
/// linear layer (a register-only computation of a few instructions each).
fn fusable_activation(op: &UnaryOp) -> bool {
    matches!(
        op,
        UnaryOp::Relu
            | UnaryOp::Clip { .. }
            | UnaryOp::LeakyRelu { .. }
            | UnaryOp::Sigmoid
            | UnaryOp::HardSigmoid { .. }
            | UnaryOp::HardSwish
            | UnaryOp::Gelu { .. }
            | UnaryOp::Silu
            | UnaryOp::Tanh
    )
}

/// Whether activation `op` in the epilogue of producer `id` beats the separate elementwise loop it
/// would otherwise run in (after `fuse-elementwise`).
///
/// Depthwise convs: always (same instructions, one pass over the activation less). Gemm and every
/// other conv run the gemm microkernel, whose epilogue loads its constants from memory next to
/// their use (so they take no register through the k loop) and applies relu and clip as one
/// `maxps`/`minps` each on x86. Measured (p50 of single-thread CPU time per run, `--cpu native`,
/// six alternating rounds; the separate loop -> relu/clip fused): mobilenet_v2 16.7 -> 15.5 ms,
/// squeezenet1_1 12.8 -> 12.3, shufflenet_v2_x1_0 7.8 -> 7.6, resnet18 56.8 -> 56.9 (most of its
/// convs run the Winograd kernel, with an epilogue of its own). The other activations are dozens of instructions per vector, bound by
/// arithmetic either way, and the separate loop keeps their constants in registers: SiLU fused
/// (applied over the stored tile) made yolo_style 30.8 -> 32.9 ms and efficientnet_b0 36.1 ->
/// 36.7 ms, so only [`FuseActivation::gemm_epilogue`] fuses them there.
fn epilogue_pays(g: &Graph, id: NodeId, op: &UnaryOp, gemm_epilogue: bool) -> bool {
    is_depthwise(g, id) || gemm_epilogue || matches!(op, UnaryOp::Relu | UnaryOp::Clip { .. })
}

/// A conv with one input and one output channel per group (the backend's depthwise kernel).
fn is_depthwise(g: &Graph, id: NodeId) -> bool {
    let Op::Conv(c) = &g.node(id).op else {
        return false;
    };
    let channels = |v: Option<Value>| {
        v.and_then(|v| g.ty(v).dims())
            .and_then(|d| d.get(1).copied())
    };
    let y = Some(Value { node: id, slot: 0 });
    c.group > 1 && channels(g.input(id, 0)) == Some(c.group) && channels(y) == Some(c.group)
}

/// The only reader of `v`: one consumer slot, `v` not a graph output, and a single-output consumer.
fn sole_user(g: &Graph, v: Value) -> Option<NodeId> {
    match g.users(v).as_slice() {
        [(u, _)] if !g.is_output(v) && g.node(*u).outputs.len() == 1 => Some(*u),
        _ => None,
    }
}

/// Ops that only reinterpret the shape of their input, so an elementwise op after them computes the
/// same values as before them (PyTorch wraps a Linear on a 3-D activation in reshapes around the
/// gemm, with the activation after the reshape back).
fn is_view(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape(_) | Op::Flatten(_) | Op::Squeeze(_) | Op::Unsqueeze(_)
    )
}

/// The next rewrite at producer `id`, if its output has a single reader that can be folded in. An
/// activation may also follow a chain of views, each the only reader of the value before it.
fn next_rewrite(g: &Graph, id: NodeId, gemm_epilogue: bool) -> Option<Rewrite> {
    let y = Value { node: id, slot: 0 };
    let mut v = y;
    let mut user = sole_user(g, v)?;
    while is_view(&g.node(user).op) && g.input(user, 0) == Some(v) {
        v = Value {
            node: user,
            slot: 0,
        };
        user = sole_user(g, v)?;
    }
    let out = Value {
        node: user,
        slot: 0,
    };
    if g.ty(out) != g.ty(v) {
        return None;
    }
    match &g.node(user).op {
        Op::Unary(op) if fusable_activation(op) && epilogue_pays(g, id, op, gemm_epilogue) => {
            Some(Rewrite::Activation(*op, user))
        }
        Op::Binary(BinaryOp::Add) if v == y && post_of(&g.node(id).op).is_empty() => {
            let (a, b) = (g.input(user, 0)?, g.input(user, 1)?);
            let c = if a == y { b } else { a };
            let c = g.const_value(c)?;
            // The existing bias (or C) must be a constant too, to be combined at compile time; a
            // gemm's C that beta zeroes does not count.
            let old = match &g.node(id).op {
                Op::Gemm(gm) if gm.beta == 0.0 => None,
                _ => g.input(id, 2),
            };
            if old.is_some_and(|b| g.const_value(b).is_none()) {
                return None;
            }
            let bias = match &g.node(id).op {
                Op::Conv(_) => channel_bias(c, &g.ty(y).dims()?)?,
                _ => column_bias(c, &g.ty(y).dims()?)?,
            };
            Some(Rewrite::Bias(bias, user))
        }
        _ => None,
    }
}

fn post_of(op: &Op) -> &[UnaryOp] {
    match op {
        Op::Conv(c) => &c.post,
        Op::Gemm(gm) => &gm.post,
        _ => &[],
    }
}

/// A constant added to a conv output `[N, M, spatial...]` as a `[M]` bias: f32, of rank at most the
/// output's, and 1 on every (right-aligned) axis but the channel axis, where it is M or 1.
fn channel_bias(c: &Tensor, out: &[usize]) -> Option<Tensor> {
    let (cd, r) = (c.shape(), out.len());
    if c.dtype() != DType::F32 || cd.len() > r || r < 2 {
        return None;
    }
    let lead = r - cd.len();
    let mut channels = 1;
    for (i, &d) in cd.iter().enumerate() {
        let axis = lead + i;
        if axis == 1 && d == out[1] {
            channels = d;
        } else if d != 1 {
            return None;
        }
    }
    let v = c.to_f32_vec();
    let m = out[1];
    let per_channel: Vec<f32> = (0..m)
        .map(|i| v[if channels == 1 { 0 } else { i }])
        .collect();
    Some(Tensor::from_f32(vec![m], &per_channel))
}

/// A constant added to a gemm output `[M, N]` as C: f32, of rank at most 2, and every dim 1 or the
/// output's (it broadcasts to `[M, N]` without growing the output). Kept in its own shape: C
/// broadcasts the same way.
fn column_bias(c: &Tensor, out: &[usize]) -> Option<Tensor> {
    let cd = c.shape();
    if c.dtype() != DType::F32 || cd.len() > 2 || out.len() != 2 {
        return None;
    }
    let lead = 2 - cd.len();
    let fits = cd
        .iter()
        .enumerate()
        .all(|(i, &d)| d == 1 || d == out[lead + i]);
    fits.then(|| c.clone())
}

/// The error for an evaluator that rejected inputs the pass checked: a compiler bug, reported with
/// the node rather than a panic.
fn eval_err(g: &Graph, id: NodeId, source: OpError) -> PassError {
    PassError::Graph(GraphError::Op {
        node: g.node(id).name.clone(),
        op: g.node(id).op.name().to_string(),
        source,
    })
}

/// `op` evaluated on constants, its single output.
fn eval1(g: &Graph, id: NodeId, op: Op, ins: &[&Tensor]) -> Result<Tensor, PassError> {
    let ins: Vec<Option<&Tensor>> = ins.iter().map(|&t| Some(t)).collect();
    let mut out = op.eval(&ins).map_err(|e| eval_err(g, id, e))?;
    out.pop()
        .ok_or_else(|| eval_err(g, id, OpError::Invalid("no output".into())))
}

fn apply(g: &mut Graph, id: NodeId, rewrite: Rewrite) -> Result<(), PassError> {
    let y = Value { node: id, slot: 0 };
    // The user goes; its readers read `src` instead: y, or the last view between y and the
    // activation.
    let (user, src) = match rewrite {
        Rewrite::Activation(act, user) => {
            match &mut g.node_mut(id).op {
                Op::Conv(c) => c.post.push(act),
                Op::Gemm(gm) => gm.post.push(act),
                _ => unreachable!("fusion into a {}", g.node(id).op.name()),
            }
            (user, g.input(user, 0).unwrap_or(y))
        }
        Rewrite::Bias(c, user) => {
            let name = format!("{}.bias", g.node(user).name);
            let add = Op::Binary(BinaryOp::Add);
            let new_bias = match g.node(id).op.clone() {
                Op::Conv(_) => match g.input(id, 2) {
                    Some(b) => {
                        let old = g
                            .const_value(b)
                            .ok_or_else(|| eval_err(g, id, not_const()))?
                            .clone();
                        eval1(g, id, add, &[&old, &c])?
                    }
                    None => c,
                },
                Op::Gemm(mut gm) => {
                    // y = alpha AB + beta C + c = alpha AB + 1 * (beta C + c).
                    let sum = match g.input(id, 2).filter(|_| gm.beta != 0.0) {
                        Some(old) => {
                            let old = g
                                .const_value(old)
                                .ok_or_else(|| eval_err(g, id, not_const()))?
                                .clone();
                            let beta = Tensor::from_f32(vec![], &[gm.beta]);
                            let scaled = eval1(g, id, Op::Binary(BinaryOp::Mul), &[&old, &beta])?;
                            eval1(g, id, add, &[&scaled, &c])?
                        }
                        None => c,
                    };
                    gm.beta = 1.0;
                    g.node_mut(id).op = Op::Gemm(gm);
                    sum
                }
                _ => unreachable!("bias fold into a {}", g.node(id).op.name()),
            };
            let b = g.add_const(name, new_bias);
            g.set_input(id, 2, Some(b));
            (user, y)
        }
    };
    g.replace_all_uses(
        Value {
            node: user,
            slot: 0,
        },
        src,
    );
    g.remove_node(user);
    Ok(())
}

fn not_const() -> OpError {
    OpError::Invalid("bias fold: the existing bias is not a constant".into())
}
