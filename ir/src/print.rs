//! The textual form: printer.
//!
//! ```text
//! graph "mlp" {
//!   %0: f32[1,4] = input {index=0}  # "x"
//!   %1: f32[4,2] = const [..]  # "w"
//!   %2: f32[1,2] = matmul(%0, %1)  # "/fc/MatMul"
//!   output %2 "y"
//! }
//! ```
//!
//! Values are numbered densely in topological order, so the text does not depend on the ids left behind
//! by rewrites. An absent optional input prints as `_`. Constants print in full up to
//! [`PrintOptions::max_const_elems`] elements, then as `<N values, hash=...>` (which the parser refuses).

use crate::attr::fmt_f32;
use crate::{DType, Graph, NodeId, Op, Tensor, Value};
use std::collections::HashMap;
use std::fmt::Write;

/// Printer options.
#[derive(Clone, Copy, Debug)]
pub struct PrintOptions {
    /// Constants with more elements than this are elided to a hash. `usize::MAX` prints all (needed for a
    /// round trip through the parser).
    pub max_const_elems: usize,
}

impl Default for PrintOptions {
    fn default() -> Self {
        PrintOptions {
            max_const_elems: 16,
        }
    }
}

/// Prints the whole graph. Panics if the graph has a cycle (run [`crate::verify`] first on untrusted
/// graphs).
pub fn print(g: &Graph, opts: PrintOptions) -> String {
    let order = g.topo_order().expect("print: graph has a cycle");
    let numbers: HashMap<NodeId, usize> =
        order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut s = String::new();
    writeln!(s, "graph {:?} {{", g.name).unwrap();
    for &id in &order {
        s.push_str("  ");
        s.push_str(&node_line(g, id, &numbers, opts));
        s.push('\n');
    }
    for (name, v) in &g.outputs {
        writeln!(s, "  output {} {:?}", value_ref(*v, &numbers), name).unwrap();
    }
    s.push_str("}\n");
    s
}

/// Prints one node's line, numbering values by their node index (for error messages).
pub fn print_node(g: &Graph, id: NodeId) -> String {
    let numbers: HashMap<NodeId, usize> =
        g.node_ids().into_iter().map(|n| (n, n.index())).collect();
    node_line(g, id, &numbers, PrintOptions::default())
}

fn value_ref(v: Value, numbers: &HashMap<NodeId, usize>) -> String {
    let n = numbers.get(&v.node).copied().unwrap_or(usize::MAX);
    if v.slot == 0 {
        format!("%{n}")
    } else {
        format!("%{n}.{}", v.slot)
    }
}

fn node_line(
    g: &Graph,
    id: NodeId,
    numbers: &HashMap<NodeId, usize>,
    opts: PrintOptions,
) -> String {
    let node = g.node(id);
    let mut s = String::new();
    for (slot, out) in node.outputs.iter().enumerate() {
        if slot > 0 {
            s.push_str(", ");
        }
        write!(
            s,
            "{}: {}",
            value_ref(
                Value {
                    node: id,
                    slot: slot as u32
                },
                numbers
            ),
            out.ty
        )
        .unwrap();
    }
    write!(s, " = {}", node.op.name()).unwrap();
    match &node.op {
        Op::Const(t) => {
            s.push(' ');
            s.push_str(&const_body(t, opts));
        }
        Op::Input(_) => {}
        _ => {
            let ins: Vec<String> = g
                .inputs(id)
                .iter()
                .map(|v| v.map_or_else(|| "_".to_string(), |v| value_ref(v, numbers)))
                .collect();
            write!(s, "({})", ins.join(", ")).unwrap();
        }
    }
    let attrs = node.op.attrs();
    if !attrs.is_empty() {
        let parts: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(s, " {{{}}}", parts.join(", ")).unwrap();
    }
    write!(s, "  # {:?}", node.name).unwrap();
    s
}

fn const_body(t: &Tensor, opts: PrintOptions) -> String {
    if t.len() > opts.max_const_elems {
        return format!("<{} values, hash={:016x}>", t.len(), t.content_hash());
    }
    let items: Vec<String> = (0..t.len())
        .map(|i| match t.dtype() {
            DType::F64 => format!("{:?}", t.get_f64(i)),
            d if d.is_float() => fmt_f32(t.get_f64(i) as f32),
            DType::U64 => format!("{}", t.get_i64(i) as u64),
            _ => format!("{}", t.get_i64(i)),
        })
        .collect();
    format!("[{}]", items.join(", "))
}
