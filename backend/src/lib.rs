//! kiln's backend: lowers a [`kiln_ir::Graph`] with static shapes to a native ELF object with
//! Cranelift, for x86_64 and aarch64 Linux.
//!
//! The object defines two exported symbols, `NAME_run` and `NAME_run_parallel` (the same with a
//! caller-supplied `parallel_for` callback that the heavy kernels split their work through), plus
//! local kernels and a local weights object, and links against nothing: no libc, no libm, no allocator (math is emitted inline by
//! `kiln_runtime::math`, and [`compile`] fails if the object has any undefined symbol). Several
//! models compiled with different names link into one program.
//!
//! How a graph becomes code:
//! - `lower`: every compute node becomes a kernel call with pointer operands; views cost nothing.
//! - `memory`: every value gets a storage (caller buffer, arena offset from
//!   `kiln_runtime::plan`, weights offset); elementwise ops reuse dying inputs' buffers.
//! - `emit`: one Cranelift function per distinct kernel (identical CLIF is emitted once), the
//!   entry `NAME_run_parallel` that checks its arguments and calls the kernels in order (handing
//!   split kernels to the caller's `parallel_for`), `NAME_run` calling it serially, the weights.
//!
//! Settings are explicit and recorded in the [`Report`]: `opt_level=speed`, `is_pic`, one section
//! per function, the verifier in debug builds, and ISA flags from the [`Target`]'s CPU level and
//! features. The same graph and options give the same bytes.
#![deny(missing_docs)]

mod builder;
mod check;
mod emit;
mod kernels;
mod lower;
mod memory;
mod target;
mod weights;

pub use target::{Target, X86_DEFAULT_CPU};

use builder::CodegenCfg;
use kiln_ir::{Graph, Value};
use kiln_runtime::header::{
    c_header, c_identifier, unique_identifiers, ExternalWeights, HeaderSpec, IoSpec,
};
use serde::Serialize;

/// Why compilation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A valid graph uses something the backend does not compile.
    #[error("node \"{node}\" ({op}): unsupported: {reason}")]
    Unsupported {
        /// ONNX node name.
        node: String,
        /// Op name.
        op: String,
        /// What exactly is not supported.
        reason: String,
    },
    /// Several errors, one per offending node.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<BackendError>),
    /// A bad target triple, CPU or feature.
    #[error("target: {0}")]
    Target(String),
    /// Bad options (e.g. a name that is not a C identifier).
    #[error("options: {0}")]
    Options(String),
    /// The graph itself is malformed (cycle, no outputs).
    #[error("graph: {0}")]
    Graph(String),
    /// A compiler bug: code generation failed, or the object has an undefined symbol.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BackendError {
    /// One error as is, several as [`BackendError::Many`].
    pub(crate) fn many(mut v: Vec<BackendError>) -> BackendError {
        if v.len() == 1 {
            v.pop().expect("one error")
        } else {
            BackendError::Many(v)
        }
    }
}

/// Where the weights go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightsMode {
    /// In the object, as the local read-only symbol `NAME_weights`.
    Embedded,
    /// Returned as [`Artifact::weights_blob`]; `NAME_run` takes a pointer to them.
    External,
}

/// Compilation options.
#[derive(Clone, Debug)]
pub struct Options {
    /// C identifier prefixed to every symbol (`NAME_run`).
    pub name: String,
    /// The target.
    pub target: Target,
    /// Where the weights go.
    pub weights: WeightsMode,
    /// Model file name, for the header comment.
    pub model_file: String,
    /// Winograd for dense 3x3 stride-1 convolutions: faster, larger weights.
    pub winograd: Winograd,
}

/// Whether dense 3x3 stride-1 convolutions are computed by Winograd's minimal filtering
/// (`--winograd`). Winograd F(m x m, 3 x 3) cuts the multiplies 2.25x (m = 2) or 4x (m = 4) at the
/// cost of transformed weights 1.8x (m = 2) or 4x (m = 4) larger than the originals, and slightly
/// larger rounding error (within 1e-5 of the output scale on the model families).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Winograd {
    /// Where it pays, with the tile size chosen per layer by a measured rule (at least 16 input
    /// and output channels and a 7x7 output).
    #[default]
    Auto,
    /// Never: im2col and GEMM only, the smallest weights.
    Off,
    /// F(2x2, 3x3) wherever it applies.
    F2,
    /// F(4x4, 3x3) wherever it applies.
    F4,
}

/// What [`compile`] produces.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The ELF relocatable object.
    pub object: Vec<u8>,
    /// `NAME.h`.
    pub header: String,
    /// The weights file contents, in [`WeightsMode::External`].
    pub weights_blob: Option<Vec<u8>>,
    /// What went where.
    pub report: Report,
}

/// The memory plan and code statistics of a compilation.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Arena bytes the caller provides.
    pub arena_bytes: usize,
    /// Weight bytes (embedded or external), including alignment padding.
    pub weight_bytes: usize,
    /// Machine code bytes over all functions.
    pub code_bytes: usize,
    /// One entry per value, then derived constants and scratch buffers.
    pub tensors: Vec<TensorReport>,
    /// One entry per kernel function (identical kernels are emitted once and serve several
    /// nodes); trampolines and entry points are not listed.
    pub kernels: Vec<KernelReport>,
    /// `Target::describe`.
    pub target: String,
    /// Every code generation setting, in a fixed order.
    pub settings: Vec<(String, String)>,
}

/// One kernel function of the library: its local symbol (what a profiler such as `perf` shows),
/// the nodes it computes, and its machine code size.
#[derive(Clone, Debug, Serialize)]
pub struct KernelReport {
    /// Symbol, `NAME_k<N>_<op>`.
    pub symbol: String,
    /// The nodes it serves, as `node "NAME" (op)`, in execution order.
    pub nodes: Vec<String>,
    /// Machine code bytes (0 when the functions were not compiled).
    pub code_bytes: usize,
}

/// Where one tensor lives.
#[derive(Clone, Debug, Serialize)]
pub struct TensorReport {
    /// Value name.
    pub value: String,
    /// Producing node.
    pub node: String,
    /// Producing op.
    pub op: String,
    /// Element type.
    pub dtype: String,
    /// Shape.
    pub dims: Vec<usize>,
    /// Bytes.
    pub bytes: usize,
    /// Storage.
    pub location: Location,
}

/// Storage of a tensor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Location {
    /// In the arena at this byte offset.
    Arena {
        /// Byte offset.
        offset: usize,
    },
    /// The caller's input buffer.
    Input {
        /// Input index.
        index: usize,
    },
    /// The caller's output buffer.
    Output {
        /// Output index.
        index: usize,
    },
    /// In the weights at this byte offset.
    Weights {
        /// Byte offset.
        offset: usize,
    },
    /// The bytes of another value (reshape, flatten, ...).
    View {
        /// The value that owns the bytes.
        of: String,
    },
    /// A constant nothing reads at run time (absorbed into a derived constant, or unused).
    Folded,
    /// Zero bytes.
    Empty,
}

/// The CLIF of one emitted function.
#[derive(Clone, Debug)]
pub struct KernelClif {
    /// Its symbol.
    pub symbol: String,
    /// The nodes it serves (`node "name" (op)`); empty for the entry points and the trampolines
    /// that run split kernels as parallel tasks.
    pub nodes: Vec<String>,
    /// CLIF text, as built (before optimization).
    pub clif: String,
    func: u32,
}

/// Compiles a graph to an object, a header and a report.
pub fn compile(graph: &Graph, opts: &Options) -> Result<Artifact, BackendError> {
    Compilation::new(graph, opts)?.run()
}

/// The CLIF of every function [`compile`] would emit (kernels, trampolines, then `NAME_run_parallel`
/// and `NAME_run`), with the nodes each
/// kernel serves; nothing is compiled. For snapshots and `--emit clif`.
pub fn compile_clif(graph: &Graph, opts: &Options) -> Result<Vec<KernelClif>, BackendError> {
    let c = Compilation::new(graph, opts)?;
    let (_, _, emitted, _) = c.emit(true, false)?;
    Ok(emitted.clif)
}

impl KernelClif {
    /// The CLIF with a comment line per node it serves.
    pub fn annotated(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s.push_str(&format!("; {}: {n}\n", self.symbol));
        }
        s.push_str(&self.clif);
        s
    }
}

struct Compilation<'a> {
    graph: &'a Graph,
    opts: &'a Options,
    isa: cranelift_codegen::isa::OwnedTargetIsa,
    settings: Vec<(String, String)>,
    cfg: CodegenCfg,
}

impl<'a> Compilation<'a> {
    fn new(graph: &'a Graph, opts: &'a Options) -> Result<Self, BackendError> {
        if opts.name.is_empty() || c_identifier(&opts.name) != opts.name {
            return Err(BackendError::Options(format!(
                "name `{}` is not a C identifier (try `{}`)",
                opts.name,
                c_identifier(&opts.name)
            )));
        }
        // Lowering relies on the types inference gives (attribute lengths, shapes); a graph that
        // breaks them is rejected here instead of panicking later.
        kiln_ir::verify(graph).map_err(|e| BackendError::Graph(e.to_string()))?;
        let (isa, settings) = opts.target.build_isa()?;
        let flag = |n: &str| {
            isa.isa_flags()
                .iter()
                .find(|v| v.name == n)
                .and_then(|v| v.as_bool())
        };
        let x86 = opts.target.triple.architecture == target_lexicon::Architecture::X86_64;
        let cfg = CodegenCfg {
            fma: !x86 || flag("has_fma") == Some(true),
            round: !x86 || flag("has_sse41") == Some(true),
            aarch64: !x86,
            winograd: opts.winograd,
        };
        Ok(Compilation {
            graph,
            opts,
            isa,
            settings,
            cfg,
        })
    }

    #[allow(clippy::type_complexity)]
    fn emit(
        &self,
        want_clif: bool,
        compile: bool,
    ) -> Result<(lower::Lowered, memory::Layout, emit::Emitted, Vec<u8>), BackendError> {
        let l = lower::lower(self.graph, self.cfg)?;
        let mut blob = weights::Blob::default();
        let lay = memory::layout(self.graph, &l, &mut blob);
        let blob = blob.finish();
        let external = self.opts.weights == WeightsMode::External;
        let eo = emit::EmitOptions {
            name: &self.opts.name,
            embedded: (!external).then_some(&blob[..]),
            external,
            want_clif,
            compile,
        };
        let emitted = emit::emit(self.graph, &l, &lay, self.isa.clone(), self.cfg, &eo)?;
        Ok((l, lay, emitted, blob))
    }

    fn run(self) -> Result<Artifact, BackendError> {
        let (l, lay, emitted, blob) = self.emit(false, true)?;
        check::no_undefined_symbols(&emitted.object)?;
        let g = self.graph;
        let external = self.opts.weights == WeightsMode::External;

        let report = self.report(&l, &lay, &emitted, blob.len());
        let in_vals: Vec<Value> = g
            .inputs
            .iter()
            .map(|&id| Value { node: id, slot: 0 })
            .collect();
        let mut names: Vec<&str> = g
            .inputs
            .iter()
            .map(|&id| g.node(id).name.as_str())
            .collect();
        names.extend(g.outputs.iter().map(|(n, _)| n.as_str()));
        let c_names = unique_identifiers(&names);
        let io = |name: &str, c: &str, v: Value| IoSpec {
            c_name: c.to_string(),
            onnx_name: name.to_string(),
            dtype: g.ty(v).dtype,
            dims: g.ty(v).dims().unwrap_or_default(),
        };
        let inputs: Vec<IoSpec> = in_vals
            .iter()
            .enumerate()
            .map(|(i, &v)| io(names[i], &c_names[i], v))
            .collect();
        let k = in_vals.len();
        let outputs: Vec<IoSpec> = g
            .outputs
            .iter()
            .enumerate()
            .map(|(i, (n, v))| io(n, &c_names[k + i], *v))
            .collect();
        let features = self
            .settings
            .iter()
            .find(|(k, _)| k == "features")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let spec = HeaderSpec {
            name: self.opts.name.clone(),
            arena_size: lay.arena_size,
            inputs,
            outputs,
            target: self.opts.target.triple.to_string(),
            cpu: self.opts.target.cpu.clone(),
            features,
            external_weights: external.then(|| ExternalWeights {
                file: format!("{}.weights.bin", self.opts.name),
                size: blob.len(),
            }),
            kiln_version: env!("CARGO_PKG_VERSION").to_string(),
            model_file: self.opts.model_file.clone(),
            weight_bytes: blob.len(),
        };
        let header = c_header(&spec);
        Ok(Artifact {
            object: emitted.object,
            header,
            weights_blob: external.then_some(blob),
            report,
        })
    }

    fn report(
        &self,
        l: &lower::Lowered,
        lay: &memory::Layout,
        emitted: &emit::Emitted,
        weight_bytes: usize,
    ) -> Report {
        let g = self.graph;
        let loc_of = |s: Option<&memory::Storage>| match s {
            Some(memory::Storage::Input(i)) => Location::Input { index: *i },
            Some(memory::Storage::Output(i)) => Location::Output { index: *i },
            Some(memory::Storage::Arena(b)) => Location::Arena {
                offset: lay.offsets[*b],
            },
            Some(memory::Storage::Weights(o)) => Location::Weights { offset: *o },
            Some(memory::Storage::Empty) => Location::Empty,
            None => Location::Folded,
        };
        let mut tensors = Vec::new();
        for &id in &l.order {
            let n = g.node(id);
            for (slot, o) in n.outputs.iter().enumerate() {
                let v = Value {
                    node: id,
                    slot: slot as u32,
                };
                let r = l.root[&v];
                let bytes = o.ty.byte_size().unwrap_or(0);
                let location = if r != v {
                    Location::View {
                        of: g.value_name(r).to_string(),
                    }
                } else if bytes == 0 {
                    Location::Empty
                } else {
                    loc_of(lay.storage.get(&v))
                };
                tensors.push(TensorReport {
                    value: o.name.clone(),
                    node: n.name.clone(),
                    op: n.op.name().to_string(),
                    dtype: o.ty.dtype.name().to_string(),
                    dims: o.ty.dims().unwrap_or_default(),
                    bytes,
                    location,
                });
            }
        }
        for (i, d) in l.derived.iter().enumerate() {
            let Some(&off) = lay.derived.get(&i) else {
                continue;
            };
            let n = g.node(d.node);
            tensors.push(TensorReport {
                value: d.name.clone(),
                node: n.name.clone(),
                op: n.op.name().to_string(),
                dtype: d.tensor.dtype().name().to_string(),
                dims: d.tensor.shape().to_vec(),
                bytes: d.tensor.bytes().len(),
                location: Location::Weights { offset: off },
            });
        }
        let mut scratch: Vec<(&(usize, usize), &usize)> = lay.scratch.iter().collect();
        scratch.sort();
        for (&(si, ai), &b) in scratch {
            let s = &l.steps[si];
            let n = g.node(s.node);
            let bytes = match s.args[ai] {
                lower::Arg::Scratch(b) => b,
                _ => 0,
            };
            tensors.push(TensorReport {
                value: format!("{}:scratch", n.name),
                node: n.name.clone(),
                op: n.op.name().to_string(),
                dtype: "u8".into(),
                dims: vec![bytes],
                bytes,
                location: Location::Arena {
                    offset: lay.offsets[b],
                },
            });
        }
        Report {
            arena_bytes: lay.arena_size,
            weight_bytes,
            code_bytes: emitted.code_bytes,
            tensors,
            kernels: emitted.kernels.clone(),
            target: self.opts.target.describe(),
            settings: self.settings.clone(),
        }
    }
}
