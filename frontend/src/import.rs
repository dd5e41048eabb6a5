//! ONNX model -> [`kiln_ir::Graph`].
//!
//! The import runs in fixed stages, each of which can fail with an [`ImportError`] naming the file and
//! the node or value at fault:
//!
//! 1. decode the protobuf;
//! 2. check value names: every name defined once, every node input defined somewhere;
//! 3. order the nodes topologically ourselves (ONNX requires files to be sorted, not every exporter
//!    complies), reporting a node on a cycle if there is one;
//! 4. add graph inputs (binding symbolic dims from `--dim`), initializers, then every node through the
//!    op mapping in [`crate::ops`], which runs the IR's own type inference;
//! 5. map and check the graph outputs.
//!
//! Unsupported nodes do not stop stage 4: their outputs become *unknown*, nodes that read an unknown
//! value are skipped silently (they are not the cause), and the import ends with
//! [`ImportError::Unsupported`] listing every culprit.

use crate::attrs::{Attrs, NResult, NodeError};
use crate::error::{ImportError, UnsupportedNode};
use crate::onnx::tensor_shape_proto::dimension::Value as DimValue;
use crate::onnx::{type_proto, GraphProto, ModelProto, NodeProto, ValueInfoProto};
use crate::ops;
use crate::tensor::{self, DataSource, TensorError};
use kiln_ir::{DType, Dim, Graph, GraphError, Op, OpError, Tensor, TensorType, Value, ValueInfo};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// What the caller decides about a model that the file leaves open.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportOptions {
    /// Values of symbolic input dimensions (`--dim NAME=VALUE`). An input axis with neither a size
    /// nor a name is bound by the key `input:axis`.
    pub dims: BTreeMap<String, usize>,
    /// Graph inputs that also have an initializer become constants (the initializer is their value).
    /// When false they stay real inputs and the initializer is only a default, which kiln ignores.
    pub inputs_with_initializer_are_constants: bool,
    /// Largest tensor accepted (initializer, input or intermediate value), in bytes. Checked before
    /// anything is allocated, so absurd dims fail fast.
    pub max_tensor_bytes: u64,
    /// Graph inputs frozen to a value (`--freeze NAME=FILE.npy`): they become constants and leave the
    /// C API. For inputs that set shapes (axes, sizes, pads) and so must be known at compile time.
    pub frozen_inputs: BTreeMap<String, kiln_ir::Tensor>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            dims: BTreeMap::new(),
            inputs_with_initializer_are_constants: true,
            max_tensor_bytes: 4 << 30,
            frozen_inputs: BTreeMap::new(),
        }
    }
}

/// An imported model.
#[derive(Clone, Debug)]
pub struct Model {
    /// The graph: inputs, constants and op nodes, with ONNX node and value names kept.
    pub graph: Graph,
    /// The model's `ir_version`.
    pub ir_version: i64,
    /// Imported operator sets, `(domain, version)` as written in the file (`""` is the default domain).
    pub opsets: Vec<(String, i64)>,
    /// `producer_name` and `producer_version`, space separated.
    pub producer: String,
    /// Unsupported nodes that did not prevent the import. Always empty today: any unsupported node
    /// fails the import with [`ImportError::Unsupported`]. Kept so a lenient mode can report them.
    pub unsupported: Vec<UnsupportedNode>,
}

/// The label used in messages for a model imported from memory.
pub(crate) const MEMORY_LABEL: &str = "<memory>";

/// Imports the ONNX model in `path`. External data files are resolved relative to its folder.
pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<Model, ImportError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        file: file.clone(),
        source,
    })?;
    let base = model_folder(path);
    let m = decode_model(&bytes, &file)?;
    drop(bytes);
    import_model(m, &file, Some(&base), opts, false)
}

/// Imports an ONNX model from its bytes. External data is resolved relative to `base_dir`, and refused
/// when it is `None`.
pub fn import_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Model, ImportError> {
    let m = decode_model(bytes, MEMORY_LABEL)?;
    import_model(m, MEMORY_LABEL, base_dir, opts, false)
}

/// The folder a model file's external data is relative to.
pub(crate) fn model_folder(path: &Path) -> std::path::PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

/// Decodes model bytes, refusing anything that is not plausibly an ONNX model. Random bytes sometimes
/// decode as a protobuf with only unknown fields, so a model must also carry `ir_version` and a graph.
pub(crate) fn decode_model(bytes: &[u8], file: &str) -> Result<ModelProto, ImportError> {
    let m = ModelProto::decode(bytes).map_err(|e| ImportError::Decode {
        file: file.to_owned(),
        msg: e.to_string(),
    })?;
    if m.ir_version() <= 0 {
        return Err(ImportError::Decode {
            file: file.to_owned(),
            msg: "no ir_version: this is not an ONNX model (truncated or another file type?)"
                .into(),
        });
    }
    if m.graph.is_none() {
        return Err(ImportError::Decode {
            file: file.to_owned(),
            msg: "the model has no graph (truncated or another file type?)".into(),
        });
    }
    Ok(m)
}

/// Whether `domain` names the default ONNX operator set.
pub(crate) fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// The opset table of a model: domain -> version, with both spellings of the default domain mapped to
/// `""`.
pub(crate) fn opset_table(m: &ModelProto) -> HashMap<String, i64> {
    let mut t = HashMap::new();
    for o in &m.opset_import {
        let d = if is_default_domain(o.domain()) {
            ""
        } else {
            o.domain()
        };
        t.insert(d.to_owned(), o.version());
    }
    // Models before IR version 3 had no opset_import and meant opset 1.
    if !t.contains_key("") && m.ir_version() < 3 {
        t.insert(String::new(), 1);
    }
    t
}

/// The name kiln uses for node `index`: its ONNX name, or `op_type_index` when it has none.
pub(crate) fn node_name(n: &NodeProto, index: usize) -> String {
    if n.name().is_empty() {
        format!("{}_{index}", n.op_type())
    } else {
        n.name().to_owned()
    }
}

/// What kiln knows about an ONNX value name during import.
#[derive(Clone, Copy, Debug)]
enum Slot {
    /// An IR value.
    Known(Value),
    /// Produced by an unsupported node (or one downstream of it).
    Unknown,
}

/// Where a value name is defined, for duplicate and dangling checks.
#[derive(Clone, Copy, Debug)]
enum Def {
    Input,
    Initializer,
    Node(usize),
}

/// One node being mapped: the ONNX node and what the importer knows about it.
pub(crate) struct NodeCx<'n> {
    /// The ONNX node.
    pub node: &'n NodeProto,
    /// The node's name in kiln (the ONNX name or a generated one).
    pub name: String,
    /// The ONNX op type.
    pub op_type: &'n str,
    /// The version of the node's domain in force.
    pub opset: i64,
    /// Its attributes.
    pub attrs: Attrs<'n>,
}

/// The import state.
pub(crate) struct Importer<'a> {
    file: String,
    opts: &'a ImportOptions,
    base_dir: Option<&'a Path>,
    /// Inspect mode: bind unbound symbolic dims to 1 and keep large initializers out of memory, to
    /// find unsupported nodes cheaply. The resulting graph is thrown away.
    lenient: bool,
    graph: Graph,
    values: HashMap<String, Slot>,
    /// Value names something reads (a node input or a graph output).
    used: HashSet<String>,
    /// Results of on-demand constant evaluation.
    const_cache: HashMap<Value, Option<Tensor>>,
    unsupported: Vec<UnsupportedNode>,
    /// Model-local functions, `(domain, name)`: nodes calling them get a precise reason.
    functions: HashSet<(String, String)>,
}

/// Initializers above this size become placeholder inputs in inspect mode: shape parameters are
/// tiny, weights are not needed to find unsupported nodes.
const LENIENT_MAX_CONST_BYTES: u64 = 1 << 20;

/// Constant evaluation refuses inputs above this size: it serves shape parameters, which are small,
/// and must not turn an import into a run of the model on its weights.
const EVAL_MAX_BYTES: usize = 64 << 20;

/// Imports a decoded model. `lenient` is inspect mode (see [`Importer::lenient`]).
pub(crate) fn import_model(
    mut m: ModelProto,
    file: &str,
    base_dir: Option<&Path>,
    opts: &ImportOptions,
    lenient: bool,
) -> Result<Model, ImportError> {
    let ir_version = m.ir_version();
    let opsets: Vec<(String, i64)> = m
        .opset_import
        .iter()
        .map(|o| (o.domain().to_owned(), o.version()))
        .collect();
    let producer = producer_of(&m);
    let table = opset_table(&m);
    let Some(g) = m.graph.take() else {
        return Err(ImportError::Decode {
            file: file.to_owned(),
            msg: "the model has no graph".into(),
        });
    };
    let mut imp = Importer {
        file: file.to_owned(),
        opts,
        base_dir,
        lenient,
        graph: Graph::new(if g.name().is_empty() {
            "main"
        } else {
            g.name()
        }),
        values: HashMap::new(),
        used: HashSet::new(),
        const_cache: HashMap::new(),
        unsupported: Vec::new(),
        functions: HashSet::new(),
    };
    imp.functions = m
        .functions
        .iter()
        .map(|f| (f.domain().to_owned(), f.name().to_owned()))
        .collect();
    let graph = imp.run(g, &table)?;
    Ok(Model {
        graph,
        ir_version,
        opsets,
        producer,
        unsupported: Vec::new(),
    })
}

/// `producer_name producer_version`.
pub(crate) fn producer_of(m: &ModelProto) -> String {
    let mut p = m.producer_name().to_owned();
    if !m.producer_version().is_empty() {
        if !p.is_empty() {
            p.push(' ');
        }
        p.push_str(m.producer_version());
    }
    p
}

impl<'a> Importer<'a> {
    /// Makes graph input `vi` the constant `t`, after checking `t` against the declared type (a
    /// symbolic or unknown declared dim accepts any size).
    fn freeze_input(
        &mut self,
        vi: &ValueInfoProto,
        t: &kiln_ir::Tensor,
    ) -> Result<(), ImportError> {
        let bad = |msg: String| ImportError::Model {
            file: self.file.clone(),
            msg,
        };
        if let Some(type_proto::Value::TensorType(tt)) =
            vi.r#type.as_ref().and_then(|t| t.value.as_ref())
        {
            let declared = tensor::dtype_from_onnx(tt.elem_type()).ok();
            if declared.is_some_and(|d| d != t.dtype()) {
                return Err(bad(format!(
                    "frozen input {:?} is {} but the model declares {:?}",
                    vi.name(),
                    t.dtype(),
                    declared.unwrap()
                )));
            }
            if let Some(shape) = &tt.shape {
                let dims: Vec<Option<i64>> = shape
                    .dim
                    .iter()
                    .map(|d| match d.value {
                        Some(DimValue::DimValue(v)) => Some(v),
                        _ => None,
                    })
                    .collect();
                let fits = dims.len() == t.shape().len()
                    && dims
                        .iter()
                        .zip(t.shape())
                        .all(|(d, &n)| d.is_none_or(|d| d == n as i64));
                if !fits {
                    return Err(bad(format!(
                        "frozen input {:?} has shape {:?}, the model declares {dims:?}",
                        vi.name(),
                        t.shape()
                    )));
                }
            }
        }
        let v = self.graph.add_const(vi.name(), t.clone());
        self.values.insert(vi.name().to_owned(), Slot::Known(v));
        Ok(())
    }

    fn run(
        &mut self,
        mut g: GraphProto,
        table: &HashMap<String, i64>,
    ) -> Result<Graph, ImportError> {
        let order = self.check_names_and_sort(&g)?;

        let initializer_names: HashSet<String> =
            g.initializer.iter().map(|t| t.name().to_owned()).collect();
        for n in &g.node {
            self.used
                .extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
        }
        self.used
            .extend(g.output.iter().map(|o| o.name().to_owned()));

        // Graph inputs. Those with an initializer are constants unless the options say otherwise.
        let consts_win = self.opts.inputs_with_initializer_are_constants;
        for vi in &g.input {
            if consts_win && initializer_names.contains(vi.name()) {
                continue;
            }
            if let Some(t) = self.opts.frozen_inputs.get(vi.name()) {
                self.freeze_input(vi, t)?;
                continue;
            }
            match self.input_type(vi)? {
                Ok(ty) => {
                    let v = self.graph.add_input(vi.name(), ty);
                    self.values.insert(vi.name().to_owned(), Slot::Known(v));
                }
                Err(reason) => {
                    self.report(vi.name(), "graph input", "", 0, reason);
                    self.values.insert(vi.name().to_owned(), Slot::Unknown);
                }
            }
        }

        // Initializers, moved out of the proto so their data is not copied.
        for t in std::mem::take(&mut g.initializer) {
            let name = t.name().to_owned();
            if self.values.contains_key(&name) {
                // A real input whose initializer is only a default.
                continue;
            }
            if self.lenient {
                if let Some(ty) = self.lenient_placeholder(&t) {
                    let v = self.graph.add_input(name.clone(), ty);
                    self.values.insert(name, Slot::Known(v));
                    continue;
                }
            }
            let src = DataSource {
                base_dir: self.base_dir,
                max_bytes: self.opts.max_tensor_bytes,
            };
            match tensor::decode(t, src) {
                Ok(tensor) => {
                    let v = self.graph.add_const(name.clone(), tensor);
                    self.values.insert(name, Slot::Known(v));
                }
                Err(TensorError::Unsupported(reason)) => {
                    self.report(&name, "initializer", "", 0, reason);
                    self.values.insert(name, Slot::Unknown);
                }
                Err(TensorError::Invalid(msg)) => {
                    return Err(ImportError::Tensor {
                        file: self.file.clone(),
                        tensor: name,
                        msg,
                    })
                }
                Err(TensorError::External(msg)) => {
                    return Err(ImportError::ExternalData {
                        file: self.file.clone(),
                        tensor: name,
                        msg,
                    })
                }
            }
        }

        for st in &g.sparse_initializer {
            let name = st.values.as_ref().map_or("", |v| v.name()).to_owned();
            if self.values.contains_key(&name) {
                // A graph input whose sparse initializer is only a default.
                continue;
            }
            self.report(
                &name,
                "initializer",
                "",
                0,
                "sparse initializers are not supported".into(),
            );
            self.values.insert(name, Slot::Unknown);
        }

        // Nodes, in dependency order.
        let default_opset = table.get("").copied();
        for &i in &order {
            let n = &g.node[i];
            self.import_node(n, i, table, default_opset)?;
        }

        // Outputs.
        for vi in &g.output {
            let name = vi.name();
            match self.values.get(name) {
                Some(Slot::Known(v)) => {
                    let v = *v;
                    self.check_declared_output(vi, v)?;
                    self.graph.outputs.push((name.to_owned(), v));
                }
                // Its producer is already in the unsupported list.
                Some(Slot::Unknown) => {}
                None => {
                    return Err(ImportError::Output {
                        file: self.file.clone(),
                        output: name.to_owned(),
                        msg: "no node, graph input or initializer defines it".into(),
                    })
                }
            }
        }

        if !self.unsupported.is_empty() {
            return Err(ImportError::Unsupported(std::mem::take(
                &mut self.unsupported,
            )));
        }
        Ok(std::mem::take(&mut self.graph))
    }

    /// Checks that every value name is defined once and every node input is defined, then orders the
    /// nodes so that producers come before consumers (file order among independent nodes).
    fn check_names_and_sort(&self, g: &GraphProto) -> Result<Vec<usize>, ImportError> {
        let file = || self.file.clone();
        let describe = |d: Def| match d {
            Def::Input => "a graph input".to_string(),
            Def::Initializer => "an initializer".to_string(),
            Def::Node(i) => format!(
                "node \"{}\" ({})",
                node_name(&g.node[i], i),
                g.node[i].op_type()
            ),
        };
        let mut defs: HashMap<&str, Def> = HashMap::new();
        for vi in &g.input {
            if vi.name().is_empty() {
                return Err(ImportError::Model {
                    file: file(),
                    msg: "a graph input has no name".into(),
                });
            }
            if let Some(&d) = defs.get(vi.name()) {
                return Err(ImportError::DuplicateValue {
                    file: file(),
                    value: vi.name().into(),
                    first: describe(d),
                    second: describe(Def::Input),
                });
            }
            defs.insert(vi.name(), Def::Input);
        }
        let mut inits: HashSet<&str> = HashSet::new();
        for t in &g.initializer {
            if t.name().is_empty() {
                return Err(ImportError::Model {
                    file: file(),
                    msg: "an initializer has no name".into(),
                });
            }
            if !inits.insert(t.name()) {
                return Err(ImportError::DuplicateValue {
                    file: file(),
                    value: t.name().into(),
                    first: describe(Def::Initializer),
                    second: describe(Def::Initializer),
                });
            }
            // An initializer may share its name with a graph input: it is that input's value or default.
            defs.entry(t.name()).or_insert(Def::Initializer);
        }
        for st in &g.sparse_initializer {
            let name = st.values.as_ref().map_or("", |v| v.name());
            if let Some(&d) = defs.get(name).filter(|d| !matches!(d, Def::Input)) {
                return Err(ImportError::DuplicateValue {
                    file: file(),
                    value: name.into(),
                    first: describe(d),
                    second: describe(Def::Initializer),
                });
            }
            defs.entry(name).or_insert(Def::Initializer);
        }
        for (i, n) in g.node.iter().enumerate() {
            for out in n.output.iter().filter(|s| !s.is_empty()) {
                if let Some(&d) = defs.get(out.as_str()) {
                    return Err(ImportError::DuplicateValue {
                        file: file(),
                        value: out.clone(),
                        first: describe(d),
                        second: describe(Def::Node(i)),
                    });
                }
                defs.insert(out, Def::Node(i));
            }
        }

        // Kahn's algorithm over node indices; ready nodes leave in file order.
        let mut indeg = vec![0usize; g.node.len()];
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); g.node.len()];
        for (i, n) in g.node.iter().enumerate() {
            for inp in n.input.iter().filter(|s| !s.is_empty()) {
                match defs.get(inp.as_str()) {
                    None => {
                        return Err(ImportError::Dangling {
                            file: file(),
                            node: node_name(n, i),
                            op_type: n.op_type().into(),
                            value: inp.clone(),
                        })
                    }
                    Some(Def::Node(p)) => {
                        indeg[i] += 1;
                        consumers[*p].push(i);
                    }
                    Some(_) => {}
                }
            }
        }
        let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..g.node.len())
            .filter(|&i| indeg[i] == 0)
            .map(std::cmp::Reverse)
            .collect();
        let mut order = Vec::with_capacity(g.node.len());
        while let Some(std::cmp::Reverse(i)) = ready.pop() {
            order.push(i);
            for &c in &consumers[i] {
                indeg[c] -= 1;
                if indeg[c] == 0 {
                    ready.push(std::cmp::Reverse(c));
                }
            }
        }
        if order.len() < g.node.len() {
            let on_cycle = find_cycle_node(g, &defs, &indeg);
            let n = &g.node[on_cycle];
            return Err(ImportError::Cycle {
                file: file(),
                node: node_name(n, on_cycle),
                op_type: n.op_type().into(),
            });
        }
        Ok(order)
    }

    /// The IR type of a graph input, with symbolic dims bound. `Ok(Err(reason))` is an input kiln
    /// cannot represent (not a tensor, unsupported dtype).
    fn input_type(&self, vi: &ValueInfoProto) -> Result<Result<TensorType, String>, ImportError> {
        let name = vi.name();
        let Some(type_proto::Value::TensorType(tt)) =
            vi.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Ok(Err(match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                None => "the input has no type".to_string(),
                Some(_) => "only tensor inputs are supported (not sequences, maps, optionals or sparse tensors)".into(),
            }));
        };
        let dtype = match tensor::dtype_from_onnx(tt.elem_type()) {
            Ok(d) => d,
            Err(reason) => return Ok(Err(reason)),
        };
        let Some(shape) = tt.shape.as_ref() else {
            return Err(ImportError::Model {
                file: self.file.clone(),
                msg: format!("graph input \"{name}\" has no shape (not even a rank); kiln needs static shapes"),
            });
        };
        let mut dims = Vec::with_capacity(shape.dim.len());
        for (axis, d) in shape.dim.iter().enumerate() {
            let n = match &d.value {
                Some(DimValue::DimValue(v)) => {
                    usize::try_from(*v).map_err(|_| ImportError::Model {
                        file: self.file.clone(),
                        msg: format!(
                            "graph input \"{name}\" has negative dimension {v} at axis {axis}"
                        ),
                    })?
                }
                Some(DimValue::DimParam(p)) if !p.is_empty() => {
                    match self.opts.dims.get(p.as_str()) {
                        Some(&n) => n,
                        None if self.lenient => 1,
                        None => {
                            return Err(ImportError::UnboundDim {
                                file: self.file.clone(),
                                input: name.into(),
                                dim: p.clone(),
                            })
                        }
                    }
                }
                _ => {
                    let key = format!("{name}:{axis}");
                    match self.opts.dims.get(&key) {
                        Some(&n) => n,
                        None if self.lenient => 1,
                        None => {
                            return Err(ImportError::UnknownDim {
                                file: self.file.clone(),
                                input: name.into(),
                                axis,
                                key,
                            })
                        }
                    }
                }
            };
            dims.push(n);
        }
        let ty = TensorType::new(dtype, &dims);
        if let Err(msg) = self.check_size(&ty) {
            return Err(ImportError::Model {
                file: self.file.clone(),
                msg: format!("graph input \"{name}\": {msg}"),
            });
        }
        Ok(Ok(ty))
    }

    /// In inspect mode, the type of a large initializer that stands in as a placeholder input.
    fn lenient_placeholder(&self, t: &crate::onnx::TensorProto) -> Option<TensorType> {
        let dtype = tensor::dtype_from_onnx(t.data_type()).ok()?;
        let count = tensor::checked_numel(&t.dims).ok()?;
        let bytes = tensor::storage_bytes(count, dtype.bits() as u64)?;
        if bytes <= LENIENT_MAX_CONST_BYTES {
            return None;
        }
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        Some(TensorType::new(dtype, &dims))
    }

    /// Refuses types whose dense storage exceeds the limit, with checked arithmetic.
    fn check_size(&self, ty: &TensorType) -> Result<(), String> {
        let mut count: u64 = 1;
        for d in &ty.shape {
            let Dim::Const(n) = d else { continue };
            count = count
                .checked_mul(*n as u64)
                .ok_or_else(|| format!("{ty} overflows a 64-bit element count"))?;
        }
        let bytes = tensor::storage_bytes(count, ty.dtype.bits() as u64)
            .ok_or_else(|| format!("{ty} overflows a 64-bit byte count"))?;
        if bytes > self.opts.max_tensor_bytes {
            return Err(format!(
                "{ty} needs {bytes} bytes, more than the limit of {} bytes",
                self.opts.max_tensor_bytes
            ));
        }
        Ok(())
    }

    fn report(&mut self, node: &str, op_type: &str, domain: &str, opset: i64, reason: String) {
        self.unsupported.push(UnsupportedNode {
            file: self.file.clone(),
            node: node.to_owned(),
            op_type: op_type.to_owned(),
            domain: domain.to_owned(),
            opset,
            reason,
        });
    }

    fn mark_unknown(&mut self, n: &NodeProto) {
        for out in n.output.iter().filter(|s| !s.is_empty()) {
            self.values.insert(out.clone(), Slot::Unknown);
        }
    }

    fn import_node(
        &mut self,
        n: &NodeProto,
        index: usize,
        table: &HashMap<String, i64>,
        default_opset: Option<i64>,
    ) -> Result<(), ImportError> {
        let name = node_name(n, index);
        let op_type = n.op_type();
        let domain = n.domain();
        if op_type.is_empty() {
            return Err(ImportError::Node {
                file: self.file.clone(),
                node: name,
                op_type: "?".into(),
                opset: default_opset.unwrap_or(0),
                msg: "the node has no op_type".into(),
            });
        }
        // Downstream of an unsupported node the node cannot be typed. It is reported only when it is
        // unsupported in itself (by op, domain or attributes); otherwise it is not a cause.
        let downstream = n
            .input
            .iter()
            .any(|s| matches!(self.values.get(s.as_str()), Some(Slot::Unknown)));
        if self
            .functions
            .contains(&(domain.to_owned(), op_type.to_owned()))
        {
            let opset = table
                .get(if is_default_domain(domain) {
                    ""
                } else {
                    domain
                })
                .copied()
                .unwrap_or(0);
            let reason = format!(
                "calls the model-local function `{op_type}`; functions are not supported yet"
            );
            self.report(&name, op_type, domain, opset, reason);
            self.mark_unknown(n);
            return Ok(());
        }
        if !is_default_domain(domain) {
            let (opset, reason) = match table.get(domain) {
                Some(&v) => (v, format!("ops of domain \"{domain}\" are not supported")),
                None => (
                    0,
                    format!("domain \"{domain}\" is neither imported by the model nor supported"),
                ),
            };
            self.report(&name, op_type, domain, opset, reason);
            self.mark_unknown(n);
            return Ok(());
        }
        let Some(opset) = default_opset else {
            return Err(ImportError::Model {
                file: self.file.clone(),
                msg: format!(
                    "node \"{name}\" ({op_type}) is in the default ONNX domain, but the model imports no version of it"
                ),
            });
        };
        let cx = NodeCx {
            node: n,
            name,
            op_type,
            opset,
            attrs: Attrs::new(&n.attribute),
        };
        let used: Vec<bool> = n
            .output
            .iter()
            .map(|o| !o.is_empty() && self.used.contains(o))
            .collect();
        if downstream {
            if let Err(NodeError::Unsupported(reason)) = ops::check_node(&cx, &used) {
                self.report(&cx.name, op_type, domain, opset, reason);
            }
            self.mark_unknown(n);
            return Ok(());
        }
        let result = ops::check_node(&cx, &used).and_then(|()| ops::map_node(self, &cx));
        match result {
            Ok(vals) => {
                for (k, out) in n.output.iter().enumerate() {
                    if out.is_empty() {
                        continue;
                    }
                    match vals.get(k) {
                        Some(v) => {
                            self.values.insert(out.clone(), Slot::Known(*v));
                        }
                        // check_node refused the node if this output were read.
                        None => {
                            self.values.insert(out.clone(), Slot::Unknown);
                        }
                    }
                }
                Ok(())
            }
            Err(NodeError::Unsupported(reason)) => {
                self.report(&cx.name, op_type, domain, opset, reason);
                self.mark_unknown(n);
                Ok(())
            }
            Err(NodeError::Invalid(msg)) => Err(ImportError::Node {
                file: self.file.clone(),
                node: cx.name,
                op_type: op_type.into(),
                opset,
                msg,
            }),
        }
    }

    /// Checks a graph output's declared type (when the file gives one) against the computed one.
    fn check_declared_output(&self, vi: &ValueInfoProto, v: Value) -> Result<(), ImportError> {
        let err = |msg: String| ImportError::Output {
            file: self.file.clone(),
            output: vi.name().into(),
            msg,
        };
        let Some(type_proto::Value::TensorType(tt)) =
            vi.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Ok(());
        };
        let have = self.graph.ty(v);
        if tt.elem_type() != 0 {
            match tensor::dtype_from_onnx(tt.elem_type()) {
                Ok(d) if d == have.dtype => {}
                _ => {
                    return Err(err(format!(
                        "declared as {} but the graph computes {}",
                        tensor::onnx_type_name(tt.elem_type()),
                        have
                    )))
                }
            }
        }
        let Some(shape) = tt.shape.as_ref() else {
            return Ok(());
        };
        if shape.dim.len() != have.rank() {
            return Err(err(format!(
                "declared with rank {} but the graph computes {have}",
                shape.dim.len()
            )));
        }
        for (axis, (d, h)) in shape.dim.iter().zip(&have.shape).enumerate() {
            let want = match &d.value {
                Some(DimValue::DimValue(n)) => Some(*n),
                Some(DimValue::DimParam(p)) => self.opts.dims.get(p.as_str()).map(|&n| n as i64),
                None => None,
            };
            if let (Some(want), Dim::Const(h)) = (want, h) {
                if want != *h as i64 {
                    return Err(err(format!(
                        "declared with size {want} at axis {axis} but the graph computes {have}"
                    )));
                }
            }
        }
        Ok(())
    }

    // ---- services for the op mappings in `crate::ops` ----

    /// Input `i` of the node, `None` when absent (empty name or past the end).
    pub(crate) fn input(&self, cx: &NodeCx, i: usize) -> Option<Value> {
        let name = cx.node.input.get(i).filter(|s| !s.is_empty())?;
        match self.values.get(name.as_str()) {
            Some(Slot::Known(v)) => Some(*v),
            // Unknown inputs skip the node before mapping, and undefined names fail the import.
            _ => None,
        }
    }

    /// Input `i`, which the op requires.
    pub(crate) fn req(&self, cx: &NodeCx, i: usize, what: &str) -> NResult<Value> {
        self.input(cx, i)
            .ok_or_else(|| NodeError::Invalid(format!("required input {i} (`{what}`) is missing")))
    }

    /// Number of inputs listed (including empty ones).
    pub(crate) fn num_inputs(&self, cx: &NodeCx) -> usize {
        cx.node.input.len()
    }

    /// Type of a value.
    pub(crate) fn ty(&self, v: Value) -> &TensorType {
        self.graph.ty(v)
    }

    /// Constant dims of a value; a symbolic one is unsupported.
    pub(crate) fn static_dims(&self, v: Value, what: &str) -> NResult<Vec<usize>> {
        self.graph.ty(v).dims().ok_or_else(|| {
            NodeError::Unsupported(format!(
                "`{what}` has symbolic dims {}; kiln needs static shapes",
                self.graph.ty(v)
            ))
        })
    }

    /// Adds the node's op with the node's name; its outputs take the ONNX output names.
    pub(crate) fn add(
        &mut self,
        cx: &NodeCx,
        op: Op,
        inputs: &[Option<Value>],
    ) -> NResult<Vec<Value>> {
        let names: Vec<String> = (0..cx.node.output.len().max(1))
            .map(|k| match cx.node.output.get(k) {
                Some(s) if !s.is_empty() => s.clone(),
                _ => format!("{}:{k}", cx.name),
            })
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.add_named(cx.name.clone(), op, inputs, &refs)
    }

    /// Adds a helper node of a node that maps to several IR nodes (a chain of binary ops). It is named
    /// `node/suffix` so the origin stays visible.
    pub(crate) fn add_aux(
        &mut self,
        cx: &NodeCx,
        suffix: &str,
        op: Op,
        inputs: &[Option<Value>],
    ) -> NResult<Value> {
        let name = format!("{}/{suffix}", cx.name);
        let out = format!("{name}:0");
        let vals = self.add_named(name, op, inputs, &[out.as_str()])?;
        vals.first()
            .copied()
            .ok_or_else(|| NodeError::Invalid("helper node has no output".into()))
    }

    fn add_named(
        &mut self,
        name: String,
        op: Op,
        inputs: &[Option<Value>],
        names: &[&str],
    ) -> NResult<Vec<Value>> {
        let types = self.graph.infer(&name, &op, inputs).map_err(graph_error)?;
        for (k, ty) in types.iter().enumerate() {
            self.check_size(ty)
                .map_err(|m| NodeError::Invalid(format!("output {k} would be too large: {m}")))?;
        }
        let outputs = types
            .into_iter()
            .enumerate()
            .map(|(k, ty)| ValueInfo {
                name: names
                    .get(k)
                    .map_or_else(|| format!("{name}:{k}"), |s| s.to_string()),
                ty,
            })
            .collect();
        Ok(self.graph.add_node_typed(name, op, inputs, outputs))
    }

    /// Adds a `Constant` node's value, named after the node, its value named after the node's output.
    pub(crate) fn add_constant(&mut self, cx: &NodeCx, t: Tensor) -> NResult<Vec<Value>> {
        let ty = t.ty();
        self.check_size(&ty).map_err(NodeError::Invalid)?;
        let out = match cx.node.output.first() {
            Some(s) if !s.is_empty() => s.clone(),
            _ => format!("{}:0", cx.name),
        };
        Ok(self.graph.add_node_typed(
            cx.name.clone(),
            Op::Const(t),
            &[],
            vec![ValueInfo { name: out, ty }],
        ))
    }

    /// The largest tensor accepted, in bytes.
    pub(crate) fn max_tensor_bytes(&self) -> u64 {
        self.opts.max_tensor_bytes
    }

    /// Decodes a tensor that is part of a node (a `Constant`'s value).
    pub(crate) fn decode_tensor(&self, t: &crate::onnx::TensorProto) -> NResult<Tensor> {
        let src = DataSource {
            base_dir: self.base_dir,
            max_bytes: self.opts.max_tensor_bytes,
        };
        tensor::decode(t.clone(), src).map_err(|e| match e {
            TensorError::Unsupported(m) => NodeError::Unsupported(m),
            TensorError::Invalid(m) => NodeError::Invalid(format!("tensor: {m}")),
            TensorError::External(m) => NodeError::Invalid(format!("tensor: external data: {m}")),
        })
    }

    /// The compile-time value of input `i`, which the op needs as a parameter (`what` names it in
    /// messages, e.g. "Reshape: `shape`"). `Ok(None)` when the input is absent; unsupported when it is
    /// computed at run time.
    pub(crate) fn const_input(
        &mut self,
        cx: &NodeCx,
        i: usize,
        what: &str,
    ) -> NResult<Option<Tensor>> {
        let Some(v) = self.input(cx, i) else {
            return Ok(None);
        };
        match self.const_value(v)? {
            Some(t) => Ok(Some(t)),
            None => Err(NodeError::Unsupported(format!(
                "{}: {what} input is computed at run time (dynamic shapes not supported yet)",
                cx.op_type
            ))),
        }
    }

    /// The value of `root` if it is known at compile time: a constant, the shape of a statically
    /// shaped value, or the result of evaluating producers whose inputs are all such values. Results
    /// are cached; the graph keeps the original nodes (later passes fold and remove them).
    pub(crate) fn const_value(&mut self, root: Value) -> NResult<Option<Tensor>> {
        // An explicit stack rather than recursion: shape subgraphs can be deep.
        let mut stack = vec![(root, false)];
        while let Some((v, expanded)) = stack.pop() {
            if self.const_cache.contains_key(&v) {
                continue;
            }
            let node = self.graph.node(v.node);
            match &node.op {
                Op::Const(t) => {
                    self.const_cache.insert(v, Some(t.clone()));
                    continue;
                }
                Op::Input(_) => {
                    self.const_cache.insert(v, None);
                    continue;
                }
                Op::Shape(s) => {
                    let t = self
                        .graph
                        .input(v.node, 0)
                        .and_then(|x| self.graph.ty(x).dims())
                        .map(|d| shape_tensor(&d, s));
                    self.const_cache.insert(v, t);
                    continue;
                }
                _ => {}
            }
            let ins = self.graph.inputs(v.node);
            if !expanded {
                stack.push((v, true));
                for i in ins.iter().flatten() {
                    if !self.const_cache.contains_key(i) {
                        stack.push((*i, false));
                    }
                }
                continue;
            }
            let mut tensors: Vec<Option<Tensor>> = Vec::with_capacity(ins.len());
            let mut all_known = true;
            let mut bytes = 0usize;
            for i in &ins {
                match i {
                    None => tensors.push(None),
                    Some(i) => match self.const_cache.get(i).cloned().flatten() {
                        Some(t) => {
                            bytes = bytes.saturating_add(t.bytes().len());
                            tensors.push(Some(t));
                        }
                        None => {
                            all_known = false;
                            break;
                        }
                    },
                }
            }
            if !all_known || bytes > EVAL_MAX_BYTES {
                self.const_cache.insert(v, None);
                continue;
            }
            let refs: Vec<Option<&Tensor>> = tensors.iter().map(Option::as_ref).collect();
            let outs = node.op.eval(&refs).map_err(|e| {
                let what = format!(
                    "evaluating node \"{}\" ({}) at compile time: {e}",
                    node.name,
                    node.op.name()
                );
                match e {
                    OpError::Unsupported(_) => NodeError::Unsupported(what),
                    _ => NodeError::Invalid(what),
                }
            })?;
            for (slot, t) in outs.into_iter().enumerate() {
                self.const_cache.insert(
                    Value {
                        node: v.node,
                        slot: slot as u32,
                    },
                    Some(t),
                );
            }
            self.const_cache.entry(v).or_insert(None);
        }
        Ok(self.const_cache.get(&root).cloned().flatten())
    }
}

/// `Shape(x)[start..end]` for static dims `d`, following ONNX's clamping of `start` and `end`.
fn shape_tensor(d: &[usize], s: &kiln_ir::ops::ShapeOf) -> Tensor {
    let r = d.len() as i64;
    let fix = |v: i64| (if v < 0 { v.saturating_add(r) } else { v }).clamp(0, r) as usize;
    let start = fix(s.start);
    let end = fix(s.end.unwrap_or(r)).max(start);
    let v: Vec<i64> = d[start..end].iter().map(|&x| x as i64).collect();
    Tensor::from_i64(DType::I64, vec![v.len()], &v)
}

/// An IR inference error as a node error: the IR's "unsupported" stays unsupported.
fn graph_error(e: GraphError) -> NodeError {
    match e {
        GraphError::Op {
            source: OpError::Unsupported(m),
            ..
        } => NodeError::Unsupported(m),
        GraphError::Op { source, .. } => NodeError::Invalid(source.to_string()),
        other => NodeError::Invalid(other.to_string()),
    }
}

/// A node on a cycle, given the in-degrees left after Kahn's algorithm: walk backwards through
/// unfinished producers until a node repeats (every unfinished node has an unfinished producer).
fn find_cycle_node(g: &GraphProto, defs: &HashMap<&str, Def>, indeg: &[usize]) -> usize {
    let Some(mut cur) = (0..indeg.len()).find(|&i| indeg[i] > 0) else {
        return 0;
    };
    let mut seen = vec![false; indeg.len()];
    while !seen[cur] {
        seen[cur] = true;
        let next = g.node[cur]
            .input
            .iter()
            .find_map(|inp| match defs.get(inp.as_str()) {
                Some(Def::Node(p)) if indeg[*p] > 0 => Some(*p),
                _ => None,
            });
        match next {
            Some(p) => cur = p,
            None => break,
        }
    }
    cur
}
