//! Matching helpers shared by the `recognize_*` passes, which find the decomposed forms exporters
//! write for LayerNorm, GELU and Softmax and replace each by the single IR op.
//!
//! A decomposed pattern is only replaced when it is *private*: every intermediate value is read by
//! nodes of the pattern alone and is not a graph output. Otherwise the intermediate nodes would have
//! to stay, and the rewrite would compute the same thing twice.

use kiln_ir::{DType, Graph, NodeId, Op, TensorType, Value, ValueInfo};
use std::collections::HashSet;

/// The value of a single-element f32 constant (any shape of one element: `[]`, `[1]`, `[1,1]`).
/// Callers check that broadcasting it did not grow the other operand's shape.
pub(crate) fn scalar_f32(g: &Graph, v: Value) -> Option<f64> {
    let t = g.const_value(v)?;
    (t.dtype() == DType::F32 && t.len() == 1).then(|| t.get_f64(0))
}

/// Whether `v` is the single-element f32 constant `want` (to within `rel` relative error).
pub(crate) fn scalar_is(g: &Graph, v: Value, want: f64, rel: f64) -> bool {
    scalar_f32(g, v).is_some_and(|c| close(c, want, rel))
}

/// `|a - b| <= rel * |b|`.
pub(crate) fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs()
}

/// The one node reading `v`, if exactly one node reads it (through exactly one input slot) and `v`
/// is not a graph output.
pub(crate) fn only_user(g: &Graph, v: Value) -> Option<NodeId> {
    match g.users(v).as_slice() {
        [(n, _)] if !g.is_output(v) => Some(*n),
        _ => None,
    }
}

/// Output 0 of a node.
pub(crate) fn out0(id: NodeId) -> Value {
    Value { node: id, slot: 0 }
}

/// The two inputs of a binary node of kind `op`.
pub(crate) fn binary(g: &Graph, id: NodeId, op: kiln_ir::ops::BinaryOp) -> Option<(Value, Value)> {
    if g.node(id).op != Op::Binary(op) {
        return None;
    }
    Some((g.input(id, 0)?, g.input(id, 1)?))
}

/// The input of a unary node of kind `op`.
pub(crate) fn unary(g: &Graph, id: NodeId, op: kiln_ir::ops::UnaryOp) -> Option<Value> {
    if g.node(id).op != Op::Unary(op) {
        return None;
    }
    g.input(id, 0)
}

/// If `(a, b)` is `(v, other)` or `(other, v)`, the other one.
pub(crate) fn other_operand((a, b): (Value, Value), v: Value) -> Option<Value> {
    if a == v {
        Some(b)
    } else if b == v {
        Some(a)
    } else {
        None
    }
}

/// Whether `v` has exactly the type `ty` (f32 patterns check every intermediate against the
/// pattern's input, so a broadcast that grows a shape never slips through).
pub(crate) fn has_type(g: &Graph, v: Value, ty: &TensorType) -> bool {
    g.ty(v) == ty
}

/// Whether every node of `region` except `root` is private to the region: not a graph output, and
/// read only by nodes of the region. `root`'s readers are what the rewrite redirects.
pub(crate) fn is_private(g: &Graph, region: &[NodeId], root: NodeId) -> bool {
    let set: HashSet<NodeId> = region.iter().copied().collect();
    region.iter().filter(|&&id| id != root).all(|&id| {
        (0..g.node(id).outputs.len() as u32).all(|slot| {
            let v = Value { node: id, slot };
            !g.is_output(v) && g.users(v).iter().all(|(u, _)| set.contains(u))
        })
    })
}

/// A parameter the fused op may read: a constant or a graph input, never a value computed from the
/// pattern itself (which would make the fused node depend on its own output).
pub(crate) fn is_param_source(g: &Graph, v: Value) -> bool {
    matches!(g.node(v.node).op, Op::Const(_) | Op::Input(_))
}

/// A name for the fused node: the exporter's scope shared by the pattern's nodes (`/layers.0/` for
/// `/layers.0/Div`, `/layers.0/Erf`, ...) followed by `what`, or the root's name when they share no
/// scope. Users find the fused node by the module it came from.
pub(crate) fn fused_name(g: &Graph, region: &[NodeId], root: NodeId, what: &str) -> String {
    let names: Vec<&str> = region.iter().map(|&id| g.node(id).name.as_str()).collect();
    let first = names.first().copied().unwrap_or("");
    let mut common = first.len();
    for n in names.iter().skip(1) {
        common = common.min(
            first
                .char_indices()
                .zip(n.chars())
                .find(|((_, a), b)| a != b)
                .map_or(first.len().min(n.len()), |((i, _), _)| i),
        );
    }
    match first[..common].rfind('/') {
        Some(i) => format!("{}{what}", &first[..=i]),
        _ => g.node(root).name.clone(),
    }
}

/// Replaces the pattern: adds `op` on `inputs` (its output 0 must have `root`'s type, else nothing
/// happens and `None` is returned), makes every reader of `root`'s output read output 0 instead, and
/// removes the region's nodes. Constants the region read are left for `dce` (others may share them).
pub(crate) fn replace(
    g: &mut Graph,
    region: &[NodeId],
    root: NodeId,
    name: String,
    op: Op,
    inputs: &[Option<Value>],
) -> Option<NodeId> {
    let types = g.infer(&name, &op, inputs).ok()?;
    let root_out = out0(root);
    if types.first() != Some(g.ty(root_out)) {
        return None;
    }
    let outputs: Vec<ValueInfo> = types
        .into_iter()
        .enumerate()
        .map(|(i, ty)| ValueInfo {
            // Output 0 takes over the root's value name, so names seen in the C header or in
            // `kiln ir` stay those of the model.
            name: if i == 0 {
                g.value_name(root_out).to_string()
            } else {
                format!("{name}:{i}")
            },
            ty,
        })
        .collect();
    let new = g.add_node_typed(name, op, inputs, outputs)[0];
    g.replace_all_uses(root_out, new);
    let mut seen = HashSet::new();
    for &id in region {
        if seen.insert(id) && g.contains(id) {
            g.remove_node(id);
        }
    }
    Some(new.node)
}
