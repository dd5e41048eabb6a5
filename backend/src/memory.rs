//! Where every value lives: caller buffers, the arena (planned by `kiln_runtime::plan`), or the
//! weights blob.
//!
//! A value and the views of it share one storage. A computed value that is a graph output is
//! written straight into the caller's output buffer; outputs that cannot be (a graph input or a
//! constant passed through, or a second output of the same bytes) are copied at the end of the run.
//! Everything else gets an arena buffer whose lifetime runs from its producer's step to its last
//! reader's step. An elementwise step whose input dies at that step may take over the input's
//! buffer instead of getting its own (in-place), which the planner sees as one longer-lived buffer.

use crate::lower::{Arg, Lowered};
use crate::weights::Blob;
use kiln_ir::{Graph, Value};
use kiln_runtime::plan::{plan, Buffer};
use std::collections::HashMap;

/// Storage of a value's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Storage {
    /// Graph input `i` (caller's pointer).
    Input(usize),
    /// Graph output `i` (caller's pointer).
    Output(usize),
    /// Arena buffer index.
    Arena(usize),
    /// Byte offset in the weights blob.
    Weights(usize),
    /// Zero bytes: no storage at all.
    Empty,
}

/// The memory layout of a run.
pub(crate) struct Layout {
    /// Storage of every root value (see `Lowered::root`).
    pub storage: HashMap<Value, Storage>,
    /// Arena offset of each buffer.
    pub offsets: Vec<usize>,
    /// Buffer of each `Arg::Scratch`, by (step index, arg index).
    pub scratch: HashMap<(usize, usize), usize>,
    /// Weights offset of each derived constant that is used.
    pub derived: HashMap<usize, usize>,
    /// Output copies run after the last step: (source value, output index).
    pub copies: Vec<(Value, usize)>,
    /// Arena size in bytes.
    pub arena_size: usize,
}

/// Assigns storage. `blob` receives every constant a kernel reads.
pub(crate) fn layout(g: &Graph, l: &Lowered, blob: &mut Blob) -> Layout {
    let bytes = |v: Value| g.ty(v).byte_size().unwrap_or(0);
    let end = l.order.len();
    let mut storage: HashMap<Value, Storage> = HashMap::new();

    // Graph inputs.
    for (i, &id) in g.inputs.iter().enumerate() {
        let v = Value { node: id, slot: 0 };
        storage.insert(
            v,
            if bytes(v) == 0 {
                Storage::Empty
            } else {
                Storage::Input(i)
            },
        );
    }

    // Graph outputs: written in place by their producer when possible, else copied at the end.
    let written: std::collections::HashSet<Value> = l
        .steps
        .iter()
        .flat_map(|s| s.writes.iter().copied())
        .collect();
    let mut copies = Vec::new();
    for (i, (_, v)) in g.outputs.iter().enumerate() {
        let r = l.root[v];
        if bytes(*v) == 0 {
            continue;
        }
        if written.contains(&r) && !storage.contains_key(&r) {
            storage.insert(r, Storage::Output(i));
        } else {
            copies.push((*v, i));
        }
    }

    // Last reader of every root, in step positions; copies read at the very end.
    let mut last_use: HashMap<Value, usize> = HashMap::new();
    for s in &l.steps {
        let t = l.pos[&s.node];
        for a in &s.args {
            if let Arg::Val(v) = a {
                let r = l.root[v];
                let e = last_use.entry(r).or_insert(t);
                *e = (*e).max(t);
            }
        }
    }
    for (v, _) in &copies {
        last_use.insert(l.root[v], end);
    }

    // Arena buffers, with in-place reuse.
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut scratch = HashMap::new();
    for (si, s) in l.steps.iter().enumerate() {
        let t = l.pos[&s.node];
        for &w in &s.writes {
            if storage.contains_key(&w) {
                continue;
            }
            if bytes(w) == 0 {
                storage.insert(w, Storage::Empty);
                continue;
            }
            let last = last_use.get(&w).copied().unwrap_or(t);
            // Take over an input's buffer if it dies here, has the same size, and no other operand of
            // this step reads that buffer at other positions.
            let mut reused = None;
            for &x in &s.inplace {
                let rx = l.root[&x];
                let Some(Storage::Arena(b)) = storage.get(&rx).copied() else {
                    continue;
                };
                if buffers[b].last != t || buffers[b].size != bytes(w) {
                    continue;
                }
                let clash = s.args.iter().any(|a| match a {
                    Arg::Val(v) if !s.inplace.contains(v) => {
                        storage.get(&l.root[v]) == Some(&Storage::Arena(b))
                    }
                    _ => false,
                });
                if !clash {
                    reused = Some(b);
                    break;
                }
            }
            match reused {
                Some(b) => {
                    buffers[b].last = buffers[b].last.max(last);
                    storage.insert(w, Storage::Arena(b));
                }
                None => {
                    buffers.push(Buffer {
                        size: bytes(w),
                        align: 64,
                        first: t,
                        last,
                    });
                    storage.insert(w, Storage::Arena(buffers.len() - 1));
                }
            }
        }
        for (ai, a) in s.args.iter().enumerate() {
            if let Arg::Scratch(n) = a {
                buffers.push(Buffer {
                    size: *n,
                    align: 64,
                    first: t,
                    last: t,
                });
                scratch.insert((si, ai), buffers.len() - 1);
            }
        }
    }
    let p = plan(&buffers);

    // Weights, in order of first use so the blob layout follows the program.
    let mut derived = HashMap::new();
    let intern_value = |v: Value, storage: &mut HashMap<Value, Storage>, blob: &mut Blob| {
        let r = l.root[&v];
        if storage.contains_key(&r) {
            return;
        }
        if let Some(t) = l.consts.get(&r.node) {
            let s = if t.bytes().is_empty() {
                Storage::Empty
            } else {
                Storage::Weights(blob.intern(t.bytes()))
            };
            storage.insert(r, s);
        }
    };
    for s in &l.steps {
        for a in &s.args {
            match a {
                Arg::Val(v) => intern_value(*v, &mut storage, blob),
                Arg::Derived(d) => {
                    let t = &l.derived[*d].tensor;
                    derived.entry(*d).or_insert_with(|| blob.intern(t.bytes()));
                }
                Arg::Scratch(_) => {}
            }
        }
    }
    for (v, _) in &copies {
        intern_value(*v, &mut storage, blob);
    }
    Layout {
        storage,
        offsets: p.offsets,
        scratch,
        derived,
        copies,
        arena_size: p.arena_size,
    }
}
