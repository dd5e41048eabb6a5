//! Choosing the activation layout: channels-last (NHWC) for the convolution regions of a graph.
//!
//! ONNX models are channels-first (NCHW): the values of one channel are contiguous, the channels of
//! one position are a plane apart. Channels-last puts the channels of one position next to each
//! other, which is what the conv and pooling kernels want: a convolution becomes one GEMM
//! `Y[positions, M] = Col[positions, K] x W[K, M]` with the weights as the operand packed at compile
//! time, and depthwise convolutions and pooling vectorize across channels, which stay full vectors
//! where the rows of a small image (7x7, 14x14) leave most of a row-vectorized loop in its tails.
//!
//! What it costs: a transpose wherever a channels-last value meets an op that needs channels-first
//! (a reshape or flatten, a gemm, softmax, resize, the graph's outputs). A per-node choice would put
//! two transposes around every conv; the layout pays only if whole regions switch, so the choice is
//! made once per graph ([`LayoutPolicy`]) and the rewrite then removes every transpose it can:
//!
//! 1. **Convert.** Every eligible node (below) `op(x, w, b)` becomes
//!    `T_back(op_nhwc(T_fwd(x), w, b))`, with `T_fwd` the transpose NCHW -> NHWC and `T_back` its
//!    inverse. Weights and biases keep their layout (OIHW, `[M]`). Nodes reading the same value share
//!    one `T_fwd`.
//! 2. **Move the transposes out of the way**, to a fixed point:
//!    - a `T_back` read by a `T_fwd` cancels with it;
//!    - a `T_back` sinks below its readers when every one of them can take channels-last input:
//!      f32 unary ops; binary ops and `fused_ew` whose other operands are constants (permuted at
//!      compile time, with numpy's right-aligned broadcasting: a `[C,1,1]` bias becomes `[1,1,C]`),
//!      `T_back`s themselves, or values whose channels-last copy the graph computes anyway (a `T_fwd`
//!      made for a converted reader: the skip connection of a residual block on the graph input);
//!      `concat` of such operands (its axis renumbered, the channel axis 1 becoming 3). Each reader
//!      then computes channels-last and gets a `T_back` of its own, which moves on in turn;
//!    - a `T_back` with a reader that needs channels-first (or that is a graph output: the C API
//!      stays NCHW) stays for that reader, but its elementwise readers whose results only go on to
//!      `T_fwd`s (through a chain of activations, say) still move below it, since their own `T_back`
//!      cancels;
//!    - a `T_fwd` rises above a concat or elementwise producer read only by `T_fwd`s, which then
//!      takes its channels-first operands through `T_fwd`s of their own: the concat of an upsampled
//!      map (resize needs NCHW) and a skip connection before a conv transposes the upsampled half
//!      instead of the skip connection and the whole concatenation.
//!
//!    No move makes the transposes move more elements than before: sinking below several readers
//!    would duplicate a `T_back`, and sinking a per-channel vector's `T_back` below a broadcast
//!    would grow it to the feature map's size, so those stay (see `sink_pays`); a `T_fwd` rises
//!    only if what it adds is smaller than what goes.
//! 3. **Views.** A remaining transpose that only moves size-1 axes (the `T_back` of a global pool's
//!    `N x 1 x 1 x C`) becomes a `reshape`, which the backend runs as a free view.
//!
//! On a CNN the result is one transpose at the input (the model's C API keeps taking NCHW), one
//! reshape before the classifier, and channels-last everywhere in between.
//!
//! Eligible nodes are what the backend has channels-last kernels for: f32 2-D `conv` (rank-4 input)
//! with `group == 1` or depthwise (`group == C == M`), 2-D `max_pool`/`avg_pool` and 2-D global
//! pooling. Grouped convs with `1 < group < C` and 1-D or 3-D convs stay channels-first.
//!
//! The pass runs after `fuse-activation` (so a conv's activations already ride in its `post` chain
//! and move with it) and before `fuse-elementwise` (so the elementwise ops moved into the
//! channels-last region still fuse there).

use crate::{Fuel, Pass, PassError};
use kiln_ir::ops::{Concat, Conv, GlobalPool, Layout, Pool, Reshape, Transpose};
use kiln_ir::ops::{FusedEw, OpError};
use kiln_ir::{print_node, DType, Graph, GraphError, NodeId, Op, Tensor, Value, ValueInfo};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

/// Which layout the conv regions of a graph get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LayoutPolicy {
    /// Decide once per graph from a cost rule on its conv shapes (see the pass's `prefers_nhwc`).
    /// Until the rule is set from measurements of the channels-last kernels it keeps NCHW.
    #[default]
    Auto,
    /// Keep ONNX's channels-first layout everywhere: the pass changes nothing.
    Nchw,
    /// Convert every eligible conv and pooling node to channels-last.
    Nhwc,
}

impl LayoutPolicy {
    /// The spelling of the command-line flag and of [`FromStr`]: `auto`, `nchw` or `nhwc`.
    pub fn name(self) -> &'static str {
        match self {
            LayoutPolicy::Auto => "auto",
            LayoutPolicy::Nchw => "nchw",
            LayoutPolicy::Nhwc => "nhwc",
        }
    }
}

impl fmt::Display for LayoutPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LayoutPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(LayoutPolicy::Auto),
            "nchw" => Ok(LayoutPolicy::Nchw),
            "nhwc" => Ok(LayoutPolicy::Nhwc),
            _ => Err(format!("layout must be auto, nchw or nhwc, got {s:?}")),
        }
    }
}

/// Switches the conv regions of the graph to channels-last when the policy says so (see the module
/// docs). Every value keeps its type: the graph's inputs and outputs stay channels-first.
#[derive(Clone, Copy, Debug)]
pub struct ChooseLayout {
    /// Which layout to choose.
    pub policy: LayoutPolicy,
    /// Whether the backend computes dense 3x3 stride-1 convs by Winograd (which it has only
    /// channels-first): true unless the user turned Winograd off (`--winograd off`). The
    /// [`LayoutPolicy::Auto`] rule then weighs those convs as im2col GEMMs, which run faster
    /// channels-last.
    pub winograd: bool,
}

impl Default for ChooseLayout {
    fn default() -> Self {
        ChooseLayout {
            policy: LayoutPolicy::default(),
            winograd: true,
        }
    }
}

impl Pass for ChooseLayout {
    fn name(&self) -> &'static str {
        "choose-layout"
    }

    fn run(&self, g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError> {
        let convert = match self.policy {
            LayoutPolicy::Nchw => false,
            LayoutPolicy::Nhwc => true,
            LayoutPolicy::Auto => prefers_nhwc(g, self.winograd)?,
        };
        if !convert {
            return Ok(false);
        }
        to_channels_last(g, fuel)
    }
}

/// Rank of the activations of the channels-last ops (2-D conv and pooling).
const RANK: usize = 4;

/// Multiply-adds (window taps for pooling) of the eligible nodes of a graph, by kind of kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Work {
    /// 1x1 convs with `group == 1` (a plain GEMM in either layout).
    pointwise: f64,
    /// Other convs with `group == 1` (im2col + GEMM), but for those of `winograd`.
    dense: f64,
    /// Dense 3x3 stride-1 convs with enough channels and outputs that the backend computes them by
    /// Winograd, which it does only channels-first.
    winograd: f64,
    /// Depthwise convs.
    depthwise: f64,
    /// Windowed and global pooling.
    pool: f64,
}

/// How much faster each kind of [`Work`] runs channels-last than channels-first (time NCHW / time
/// NHWC; above 1 channels-last wins).
///
/// Measured per layer on x86_64 with FMA, one thread, best of 5 rounds
/// (`cargo test --release -p kiln-backend --test nhwc_perf -- --ignored --nocapture`):
/// - pointwise 1x1 convs 1.00-1.12 (MobileNetV2's, at 112x112 down to 7x7): 1.05;
/// - other dense convs (the 7x7 s2 and 3x3 s2 stems, 3x3 s2): 1.05-1.13: 1.07;
/// - dense 3x3 s1 convs: 0.38-0.40 at 56x56 to 14x14, 0.81 at 7x7, because channels-last has no
///   Winograd kernel (channels-first has): 0.4;
/// - depthwise 3x3 and 5x5: 0.93 (960 channels at 7x7) to 1.65 (stride 2), mostly 1.1-1.4: 1.2;
/// - max, average and global pooling: 1.13-1.61: 1.25.
///
/// Whole models agree: MobileNetV2 6% and EfficientNet-B0 5% faster channels-last, ResNet-18 72%
/// slower.
const NHWC_SPEEDUP: Work = Work {
    pointwise: 1.05,
    dense: 1.07,
    winograd: 0.4,
    depthwise: 1.2,
    pool: 1.25,
};

/// Time of moving one element in a transpose, in the multiply-adds of [`Work`] (a transpose is a
/// strided load and a store per element; a multiply-add in a GEMM kernel is a fraction of a vector
/// FMA). An estimate: next to the savings above, a transpose of the input image is noise.
const TRANSPOSE_COST: f64 = 4.0;

/// The [`LayoutPolicy::Auto`] rule: whether this graph runs faster with its conv regions
/// channels-last.
///
/// It weighs the time channels-last saves in the conv and pooling kernels (their multiply-adds by
/// kind, [`work`], times the measured speedups [`NHWC_SPEEDUP`]) against the time of the transposes
/// the rewrite would leave (counted on a trial rewrite of a copy of the graph, at
/// [`TRANSPOSE_COST`] per element). The trial runs only when something is saved at all. Without
/// `winograd` (the backend's), the convs it would take count as other dense convs.
///
/// Measured with `--winograd off` (`kiln bench --cpu native`, p50, NCHW / NHWC): ResNet-18
/// 88.1-88.6 / 83.2-84.7 ms, SqueezeNet 1.1 16.5-16.8 / 15.3-15.5 ms, YOLO-style 27.7-28.1 /
/// 27.0-27.7 ms (its upsampling keeps transposes); the rule picks channels-last for all three.
fn prefers_nhwc(g: &Graph, winograd: bool) -> Result<bool, PassError> {
    let mut w = work(g);
    if !winograd {
        w.dense += std::mem::take(&mut w.winograd);
    }
    let gain = |work: f64, speedup: f64| work * (1.0 - 1.0 / speedup);
    let saved = gain(w.pointwise, NHWC_SPEEDUP.pointwise)
        + gain(w.dense, NHWC_SPEEDUP.dense)
        + gain(w.winograd, NHWC_SPEEDUP.winograd)
        + gain(w.depthwise, NHWC_SPEEDUP.depthwise)
        + gain(w.pool, NHWC_SPEEDUP.pool);
    if saved <= 0.0 {
        return Ok(false);
    }
    let mut trial = g.clone();
    to_channels_last(&mut trial, &mut Fuel::unlimited())?;
    let added = transposed_elements(&trial).saturating_sub(transposed_elements(g));
    Ok(saved > added as f64 * TRANSPOSE_COST)
}

/// The [`Work`] of the nodes the rewrite would convert (nodes with symbolic shapes count zero).
fn work(g: &Graph) -> Work {
    let mut w = Work::default();
    for id in g.node_ids() {
        if channels_last_op(g, id).is_none() {
            continue;
        }
        let y = Value { node: id, slot: 0 };
        let (Some(x), Some(out)) = (g.input(id, 0).and_then(|x| g.ty(x).dims()), g.ty(y).dims())
        else {
            continue;
        };
        let (inputs, outputs) = (
            x.iter().product::<usize>() as f64,
            out.iter().product::<usize>() as f64,
        );
        match &g.node(id).op {
            Op::Conv(c) => {
                let taps = c.kernel_shape.iter().product::<usize>() as f64;
                let macs = outputs * taps * (x[1] / c.group) as f64;
                if c.group > 1 {
                    w.depthwise += macs;
                } else if taps == 1.0 {
                    w.pointwise += macs;
                } else if winograd_eligible(c, &x, &out) {
                    w.winograd += macs;
                } else {
                    w.dense += macs;
                }
            }
            Op::Pool(p) => w.pool += outputs * p.kernel_shape.iter().product::<usize>() as f64,
            Op::GlobalPool(_) => w.pool += inputs,
            _ => {}
        }
    }
    w
}

/// Whether the backend computes this channels-first conv by Winograd (its rule in
/// backend/src/kernels/winograd.rs, `Winograd::choose`, under `--winograd auto`): 3x3, unit strides
/// and dilations, one group, at least 16 input and output channels and a 7x7 output.
fn winograd_eligible(c: &kiln_ir::ops::Conv, x: &[usize], y: &[usize]) -> bool {
    c.group == 1
        && c.kernel_shape == [3, 3]
        && c.strides == [1, 1]
        && c.dilations == [1, 1]
        && x[1] >= 16
        && y[1] >= 16
        && y[2] * y[3] >= 49
}

/// Elements moved by the graph's transposes.
fn transposed_elements(g: &Graph) -> usize {
    g.node_ids()
        .into_iter()
        .filter(|&id| matches!(g.node(id).op, Op::Transpose(_)))
        .filter_map(|id| g.node(id).outputs[0].ty.num_elements())
        .sum()
}

/// The channels-last version of node `id`, if the backend has a channels-last kernel for it: an f32
/// 2-D conv with `group == 1` or depthwise, or an f32 2-D pooling, still channels-first.
fn channels_last_op(g: &Graph, id: NodeId) -> Option<Op> {
    let x = g.input(id, 0)?;
    let ty = g.ty(x);
    if ty.dtype != DType::F32 || ty.rank() != RANK || g.node(id).outputs.len() != 1 {
        return None;
    }
    match &g.node(id).op {
        Op::Conv(c) if c.layout == Layout::Nchw => {
            let channels = ty.shape[1].as_const()?;
            let m = g.ty(g.input(id, 1)?).shape.first()?.as_const()?;
            (c.group == 1 || (c.group == channels && m == channels)).then(|| {
                Op::Conv(Conv {
                    layout: Layout::Nhwc,
                    ..c.clone()
                })
            })
        }
        Op::Pool(p) if p.layout == Layout::Nchw => Some(Op::Pool(Pool {
            layout: Layout::Nhwc,
            ..p.clone()
        })),
        Op::GlobalPool(p) if p.layout == Layout::Nchw => Some(Op::GlobalPool(GlobalPool {
            layout: Layout::Nhwc,
            ..*p
        })),
        _ => None,
    }
}

/// The whole rewrite (convert, sink, views); returns whether anything changed.
fn to_channels_last(g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError> {
    let mut rw = Rewriter::default();
    let changed = rw.convert(g, fuel)?;
    if changed {
        rw.sink(g, fuel)?;
        rw.views(g, fuel)?;
    }
    rw.remove_dead(g);
    Ok(changed)
}

/// Sweeps of the moving step before giving up on a fixed point. One sweep in topological order moves
/// each `T_back` as far down as it goes; another is needed only when a binary op or concat found an
/// operand not yet channels-last, or a `T_fwd` rose past a transpose already visited, which the
/// models do not nest deeply.
const MAX_SWEEPS: usize = 16;

/// The transpose from channels-first to channels-last.
fn t_fwd() -> Transpose {
    Transpose {
        perm: Layout::Nhwc.from_nchw(RANK),
    }
}

/// The transpose from channels-last back to channels-first.
fn t_back() -> Transpose {
    Transpose {
        perm: Layout::Nhwc.to_nchw(RANK),
    }
}

/// The channels-last input of `v` when `v` is a `T_back` (a transpose NHWC -> NCHW).
fn back_source(g: &Graph, v: Value) -> Option<Value> {
    match &g.node(v.node).op {
        Op::Transpose(t) if v.slot == 0 && t.perm == t_back().perm => g.input(v.node, 0),
        _ => None,
    }
}

/// The channels-last copy of channels-first value `v` that the graph already computes (a `T_fwd`
/// reading it, made for a converted node that reads `v`): a binary op pairing `v` with a `T_back`
/// (the skip connection of a residual block whose input is the graph input) reads it for free.
fn fwd_copy(g: &Graph, v: Value) -> Option<Value> {
    g.users(v)
        .into_iter()
        .find_map(|(u, _)| match &g.node(u).op {
            Op::Transpose(t) if t.perm == t_fwd().perm => Some(Value { node: u, slot: 0 }),
            _ => None,
        })
}

/// The rewrite's state: the nodes it may leave dead, and the constants it has permuted.
#[derive(Default)]
struct Rewriter {
    /// Transposes and constants that lost readers; removed at the end if dead.
    touched: HashSet<NodeId>,
    /// Channels-last copy of each permuted constant, so that a constant read by several nodes is
    /// permuted once.
    consts: HashMap<Value, Value>,
}

impl Rewriter {
    /// Step 1: every eligible node to `T_back(op_nhwc(T_fwd(x)))`.
    fn convert(&mut self, g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError> {
        // One `T_fwd` per source value, shared by all the nodes that read it.
        let mut fwd: HashMap<Value, Value> = HashMap::new();
        let mut changed = false;
        for id in g.topo_order()? {
            let Some(op) = channels_last_op(g, id) else {
                continue;
            };
            let Some(x) = g.input(id, 0) else { continue };
            if !fuel.take() {
                break;
            }
            let xt = match fwd.get(&x) {
                Some(&v) => v,
                None => {
                    let value = format!("{}/nhwc", g.value_name(x));
                    let name = format!("{}/to_nhwc", g.node(x.node).name);
                    let v = g.add_node(name, Op::Transpose(t_fwd()), &[Some(x)], &[&value])?[0];
                    fwd.insert(x, v);
                    v
                }
            };
            g.set_input(id, 0, Some(xt));
            self.relayout(g, id, op)?;
            changed = true;
        }
        Ok(changed)
    }

    /// Node `id`, whose inputs are now channels-last, computes channels-last with `op`: its output is
    /// retyped and renamed `<name>/nhwc`, and a `T_back` carrying the original value name takes over
    /// its readers (and its place among the graph outputs). Returns the `T_back`.
    fn relayout(&mut self, g: &mut Graph, id: NodeId, op: Op) -> Result<NodeId, PassError> {
        let y = Value { node: id, slot: 0 };
        let readers = g.users(y);
        let old = g.node(id).outputs[0].clone();
        let name = g.node(id).name.clone();
        let ty = g.infer(&name, &op, &g.inputs(id))?.remove(0);
        let node = g.node_mut(id);
        node.op = op;
        node.outputs[0] = ValueInfo {
            name: format!("{}/nhwc", old.name),
            ty,
        };
        let back = g.add_node(
            format!("{name}/to_nchw"),
            Op::Transpose(t_back()),
            &[Some(y)],
            &[&old.name],
        )?[0];
        assert_eq!(
            *g.ty(back),
            old.ty,
            "choose-layout: channels-last node changes the type of its value\n{}",
            print_node(g, id)
        );
        for (u, slot) in readers {
            g.set_input(u, slot as usize, Some(back));
        }
        for (_, o) in g.outputs.iter_mut() {
            if *o == y {
                *o = back;
            }
        }
        Ok(back.node)
    }

    /// Step 2: cancel transpose pairs, move each `T_back` below the readers that can take
    /// channels-last input and each `T_fwd` above the producer that can give it, to a fixed point.
    fn sink(&mut self, g: &mut Graph, fuel: &mut Fuel) -> Result<(), PassError> {
        for _ in 0..MAX_SWEEPS {
            let mut changed = false;
            // A stack in reverse topological order: pops go down the graph, and the transposes made
            // by a move are tried next.
            let mut todo: Vec<NodeId> = g.topo_order()?;
            todo.reverse();
            while let Some(t) = todo.pop() {
                if !g.contains(t) {
                    continue;
                }
                let (moved, new) = if back_source(g, Value { node: t, slot: 0 }).is_some() {
                    self.sink_one(g, t, fuel)?
                } else if is_fwd(g, t) {
                    self.hoist_one(g, t, fuel)?
                } else {
                    continue;
                };
                changed |= moved;
                todo.extend(new);
            }
            if !changed {
                break;
            }
        }
        Ok(())
    }

    /// Cancels the `T_fwd`s reading `T_back` node `t`, then sinks `t` below its other readers if every
    /// one of them can take channels-last input and that moves no more elements ([`sink_pays`]), or
    /// else below those of them whose results vanish into `T_fwd`s ([`vanishes`]). Returns whether
    /// anything changed, and the new `T_back`s.
    fn sink_one(
        &mut self,
        g: &mut Graph,
        t: NodeId,
        fuel: &mut Fuel,
    ) -> Result<(bool, Vec<NodeId>), PassError> {
        let tv = Value { node: t, slot: 0 };
        let Some(src) = back_source(g, tv) else {
            return Ok((false, vec![]));
        };
        let mut changed = false;
        for u in readers(g, tv) {
            if is_fwd(g, u) {
                if !fuel.take() {
                    return Ok((changed, vec![]));
                }
                g.replace_all_uses(Value { node: u, slot: 0 }, src);
                g.remove_node(u);
                changed = true;
            }
        }
        self.touched.insert(t);
        let mut rest = readers(g, tv);
        let all = !g.is_output(tv) && rest.iter().all(|&u| sinkable(g, u));
        if !all || !sink_pays(g, t, &rest) {
            // `t` stays. A reader whose result only goes back to channels-last still moves: its own
            // `T_back` will cancel with those `T_fwd`s, so transposes go and none come.
            rest.retain(|&u| sinkable(g, u) && vanishes(g, u));
        }
        let mut new = Vec::new();
        for u in rest {
            if !fuel.take() {
                break;
            }
            new.push(self.convert_elementwise(g, u)?);
            changed = true;
        }
        Ok((changed, new))
    }

    /// Moves `T_fwd` node `f` above its producer when that is an elementwise op or a concat whose
    /// every reader is a `T_fwd` (a concat of an upsampled branch and a skip connection before a
    /// conv): the producer computes channels-last, on its `T_back` operands' sources, permuted
    /// constants, and new `T_fwd`s of its other operands, if those move fewer elements than the
    /// transposes that go. Returns whether it moved, and the new transposes.
    fn hoist_one(
        &mut self,
        g: &mut Graph,
        f: NodeId,
        fuel: &mut Fuel,
    ) -> Result<(bool, Vec<NodeId>), PassError> {
        let Some(x) = g.input(f, 0) else {
            return Ok((false, vec![]));
        };
        let u = x.node;
        if x.slot != 0 || !hoistable(g, u) || g.is_output(x) {
            return Ok((false, vec![]));
        }
        let fwds = readers(g, x);
        if !fwds.iter().all(|&r| is_fwd(g, r)) {
            return Ok((false, vec![]));
        }
        let mut added = 0;
        let mut backs = HashSet::new();
        for v in g.inputs(u).into_iter().flatten() {
            if back_source(g, v).is_some() {
                backs.insert(v.node);
            } else if g.const_value(v).is_none() && fwd_copy(g, v).is_none() {
                added += elements(g, v);
            }
        }
        let removed = fwds
            .iter()
            .map(|&r| elements(g, Value { node: r, slot: 0 }))
            .sum::<usize>()
            + dying(g, &backs, &[u]);
        if added >= removed || !fuel.take() {
            return Ok((false, vec![]));
        }
        let old: HashSet<NodeId> = g.inputs(u).into_iter().flatten().map(|v| v.node).collect();
        let back = self.convert_elementwise(g, u)?;
        let mut new: Vec<NodeId> = g
            .inputs(u)
            .into_iter()
            .flatten()
            .map(|v| v.node)
            .filter(|n| !old.contains(n) && is_fwd(g, *n))
            .collect();
        new.push(back);
        Ok((true, new))
    }

    /// Makes elementwise or concat node `u` compute channels-last: its `T_back` operands are read
    /// through, its constants permuted, its other operands read through a `T_fwd` (the one the graph
    /// has if there is one). Returns its new `T_back`.
    fn convert_elementwise(&mut self, g: &mut Graph, u: NodeId) -> Result<NodeId, PassError> {
        for (slot, v) in g.inputs(u).into_iter().enumerate() {
            let Some(v) = v else { continue };
            let nv = match back_source(g, v).or_else(|| fwd_copy(g, v)) {
                Some(s) => s,
                None if g.const_value(v).is_some() => self.permuted_const(g, u, v)?,
                None => {
                    let value = format!("{}/nhwc", g.value_name(v));
                    let name = format!("{}/to_nhwc", g.node(v.node).name);
                    g.add_node(name, Op::Transpose(t_fwd()), &[Some(v)], &[&value])?[0]
                }
            };
            g.set_input(u, slot, Some(nv));
            self.touched.insert(v.node);
        }
        let op = match &g.node(u).op {
            Op::Concat(c) => Op::Concat(Concat {
                axis: nhwc_axis(c.axis),
            }),
            op => op.clone(),
        };
        self.relayout(g, u, op)
    }

    /// The channels-last copy of constant `v` (an operand of node `u`), permuted as the activations
    /// are after numpy's right-aligned broadcasting: padded with leading 1s to rank 4, transposed,
    /// and stripped of the leading 1s it was padded with. `v` itself when permuting changes nothing
    /// (scalars, `[1]`).
    fn permuted_const(&mut self, g: &mut Graph, u: NodeId, v: Value) -> Result<Value, PassError> {
        if let Some(&p) = self.consts.get(&v) {
            return Ok(p);
        }
        let bug = |g: &Graph, msg: String| {
            PassError::Graph(GraphError::Op {
                node: g.node(u).name.clone(),
                op: g.node(u).op.name().to_string(),
                source: OpError::Invalid(format!("choose-layout: {msg}")),
            })
        };
        let Some(c) = g.const_value(v) else {
            return Err(bug(
                g,
                format!("operand {v} is neither a constant nor a T_back"),
            ));
        };
        let k = c.shape().len();
        if k > RANK {
            return Err(bug(g, format!("constant {v} has rank {k} > {RANK}")));
        }
        let pad = RANK - k;
        let aligned: Vec<usize> = std::iter::repeat_n(1, pad)
            .chain(c.shape().iter().copied())
            .collect();
        let t = Op::Transpose(t_fwd())
            .eval(&[Some(&c.reshaped(aligned))])
            .map_err(|e| bug(g, e.to_string()))?
            .remove(0);
        let strip = t.shape()[..pad].iter().take_while(|&&d| d == 1).count();
        let t: Tensor = t.reshaped(t.shape()[strip..].to_vec());
        let p = if t.shape() == c.shape() && t.bytes() == c.bytes() {
            v
        } else {
            let name = format!("{}/nhwc", g.node(v.node).name);
            g.add_const(name, t)
        };
        self.consts.insert(v, p);
        Ok(p)
    }

    /// Step 3: transposes (of this pass's two permutations) that only move size-1 axes become
    /// reshapes: the same bytes in the same order.
    fn views(&mut self, g: &mut Graph, fuel: &mut Fuel) -> Result<(), PassError> {
        let perms = [t_fwd().perm, t_back().perm];
        for id in g.topo_order()? {
            let Op::Transpose(t) = &g.node(id).op else {
                continue;
            };
            if !perms.contains(&t.perm) {
                continue;
            }
            let out = Value { node: id, slot: 0 };
            let (Some(x), Some(dims)) = (g.input(id, 0), g.ty(out).dims()) else {
                continue;
            };
            let Some(in_dims) = g.ty(x).dims() else {
                continue;
            };
            let moved: Vec<usize> = t
                .perm
                .iter()
                .copied()
                .filter(|&p| in_dims[p] != 1)
                .collect();
            if !moved.windows(2).all(|w| w[0] < w[1]) || !fuel.take() {
                continue;
            }
            g.node_mut(id).op = Op::Reshape(Reshape {
                shape: dims.iter().map(|&d| d as i64).collect(),
                allowzero: dims.contains(&0),
            });
        }
        Ok(())
    }

    /// Removes the touched transposes and constants nothing reads any more (now rather than in `dce`:
    /// a dead reader would stop `fuse-elementwise` from fusing its producer).
    fn remove_dead(&mut self, g: &mut Graph) {
        let mut ids: Vec<NodeId> = self.touched.drain().collect();
        ids.sort();
        for id in ids {
            if !g.contains(id) || !matches!(g.node(id).op, Op::Transpose(_) | Op::Const(_)) {
                continue;
            }
            let v = Value { node: id, slot: 0 };
            if g.users(v).is_empty() && !g.is_output(v) {
                let input = g.input(id, 0);
                g.remove_node(id);
                // A T_fwd of a constant (a conv on a constant input) leaves the constant dead too.
                if let Some(i) = input {
                    if matches!(g.node(i.node).op, Op::Const(_))
                        && g.users(i).is_empty()
                        && !g.is_output(i)
                    {
                        g.remove_node(i.node);
                    }
                }
            }
        }
    }
}

/// The distinct nodes reading `v`, in id order.
fn readers(g: &Graph, v: Value) -> Vec<NodeId> {
    let mut r: Vec<NodeId> = g.users(v).into_iter().map(|(u, _)| u).collect();
    r.dedup();
    r
}

/// Whether a `T_back` after node `u` would vanish: `u`'s output (not a graph output) is read only
/// by `T_fwd`s (with which it cancels) or by f32 unary ops whose outputs vanish in turn (a chain of
/// activations before a conv; followed a few levels deep).
fn vanishes(g: &Graph, u: NodeId) -> bool {
    vanishes_within(g, u, 8)
}

fn vanishes_within(g: &Graph, u: NodeId, depth: usize) -> bool {
    let v = Value { node: u, slot: 0 };
    let users = g.users(v);
    depth > 0
        && !users.is_empty()
        && !g.is_output(v)
        && users.iter().all(|&(r, _)| {
            is_fwd(g, r)
                || (matches!(g.node(r).op, Op::Unary(_))
                    && elementwise_shape(g, r)
                    && vanishes_within(g, r, depth - 1))
        })
}

/// Whether sinking `T_back` node `t` below all of `readers` moves no more elements than before: the
/// `T_back`s it makes (one per reader, but for those whose results [`vanishes`]) against the ones
/// that go (`t`, and the other `T_back` operands of the readers that nothing else reads). Without
/// this, a `T_back` read by two activations that each feed a reshape would become two, and one of
/// a per-channel vector added to a constant feature map would grow to the map's size.
fn sink_pays(g: &Graph, t: NodeId, readers: &[NodeId]) -> bool {
    let created: usize = readers
        .iter()
        .filter(|&&u| !vanishes(g, u))
        .map(|&u| elements(g, Value { node: u, slot: 0 }))
        .sum();
    let mut backs = HashSet::from([t]);
    for &u in readers {
        for v in g.inputs(u).into_iter().flatten() {
            if back_source(g, v).is_some() {
                backs.insert(v.node);
            }
        }
    }
    created <= dying(g, &backs, readers)
}

/// Elements of the `T_back`s among `backs` that nothing but `readers` reads (and that are not graph
/// outputs): the ones that go when `readers` read their sources instead.
fn dying(g: &Graph, backs: &HashSet<NodeId>, readers: &[NodeId]) -> usize {
    backs
        .iter()
        .map(|&b| Value { node: b, slot: 0 })
        .filter(|&v| !g.is_output(v) && g.users(v).iter().all(|(r, _)| readers.contains(r)))
        .map(|v| elements(g, v))
        .sum()
}

/// Elements of a value; 1 when its shape is symbolic (the costs then count transposes).
fn elements(g: &Graph, v: Value) -> usize {
    g.ty(v).num_elements().unwrap_or(1)
}

/// Whether node `id` is a `T_fwd` (a transpose NCHW -> NHWC).
fn is_fwd(g: &Graph, id: NodeId) -> bool {
    matches!(&g.node(id).op, Op::Transpose(t) if t.perm == t_fwd().perm)
}

/// Axis `axis` of a channels-first tensor, in the channels-last one.
fn nhwc_axis(axis: usize) -> usize {
    t_fwd().perm.iter().position(|&p| p == axis).unwrap_or(axis)
}

/// A single-output rank-4 f32 node that is an elementwise op producing floats (unary, binary,
/// `fused_ew`) or a concat: the ops that compute the same in either layout once their operands are
/// permuted alike.
fn elementwise_shape(g: &Graph, u: NodeId) -> bool {
    let node = g.node(u);
    let [out] = node.outputs.as_slice() else {
        return false;
    };
    out.ty.dtype == DType::F32
        && out.ty.rank() == RANK
        && match &node.op {
            Op::Unary(op) => FusedEw::allows_unary(*op),
            Op::Binary(op) => FusedEw::allows_binary(*op),
            Op::FusedEw(_) | Op::Concat(_) => true,
            _ => false,
        }
}

/// Whether node `u` can read channels-last values in place of its `T_back` operands at no cost:
/// an [`elementwise_shape`] node whose every operand is a `T_back`, has a channels-last copy
/// already ([`fwd_copy`]) or is a constant.
fn sinkable(g: &Graph, u: NodeId) -> bool {
    elementwise_shape(g, u)
        && g.inputs(u).iter().all(|v| {
            v.is_some_and(|v| {
                back_source(g, v).is_some()
                    || fwd_copy(g, v).is_some()
                    || g.const_value(v).is_some_and(|c| c.shape().len() <= RANK)
            })
        })
}

/// Whether node `u` can compute channels-last once its channels-first operands get a `T_fwd`: an
/// [`elementwise_shape`] node whose every operand is a constant or of rank 4.
fn hoistable(g: &Graph, u: NodeId) -> bool {
    elementwise_shape(g, u)
        && g.inputs(u).iter().all(|v| {
            v.is_some_and(|v| match g.const_value(v) {
                Some(c) => c.shape().len() <= RANK,
                None => g.ty(v).rank() == RANK,
            })
        })
}
