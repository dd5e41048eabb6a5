//! `kiln inspect`: a model summary read from the protobuf directly, so it works on models that do not
//! import (unsupported ops, unbound symbolic dims).

use crate::attrs::Attrs;
use crate::error::{ImportError, UnsupportedNode};
use crate::import::{
    decode_model, import_model, is_default_domain, model_folder, node_name, opset_table,
    producer_of, ImportOptions, NodeCx, MEMORY_LABEL,
};
use crate::onnx::tensor_shape_proto::dimension::Value as DimValue;
use crate::onnx::{type_proto, ModelProto, TensorProto, ValueInfoProto};
use crate::ops;
use crate::tensor::{dtype_from_onnx, onnx_elem_bits, onnx_type_name};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

/// Name, element type and dims of a graph input or output, as the file declares them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TensorInfo {
    /// Value name.
    pub name: String,
    /// Element type in kiln's spelling (`f32`, `i64`, ...), or the lowercase ONNX name for types kiln
    /// does not support (`string`, `float8e4m3fn`), or the kind of a non-tensor (`sequence`, `map`).
    pub dtype: String,
    /// Dims: a number, a symbol (`N`), or `?` when neither is given. `None` when the rank is unknown.
    pub dims: Option<Vec<String>>,
}

/// A summary of a model.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Inspection {
    /// The model file (`<memory>` for bytes).
    pub file: String,
    /// `ir_version`.
    pub ir_version: i64,
    /// Producer name and version.
    pub producer: String,
    /// Imported operator sets, `(domain, version)`, as written.
    pub opsets: Vec<(String, i64)>,
    /// Graph name.
    pub graph_name: String,
    /// Graph inputs the caller must feed (inputs whose initializer makes them constants are left out
    /// when [`ImportOptions::inputs_with_initializer_are_constants`] is set).
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs.
    pub outputs: Vec<TensorInfo>,
    /// Number of nodes of each op type, sorted by op type. Ops outside the default domain are keyed
    /// `domain::op_type`.
    pub op_histogram: Vec<(String, usize)>,
    /// Elements in initializers and `Constant` nodes.
    pub param_count: u64,
    /// Bytes of those elements, densely stored.
    pub param_bytes: u64,
    /// Nodes kiln cannot import, with reasons.
    pub unsupported: Vec<UnsupportedNode>,
    /// What else a full import reports, if anything (a shape mismatch, bad external data, ...). The
    /// trial import binds symbolic dims missing from `--dim` to 1, so shape errors may be artifacts
    /// of that.
    pub problem: Option<String>,
}

/// Summarizes the model in `path`.
pub fn inspect_file(path: &Path, opts: &ImportOptions) -> Result<Inspection, ImportError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        file: file.clone(),
        source,
    })?;
    let m = decode_model(&bytes, &file)?;
    drop(bytes);
    Ok(inspect_model(m, &file, Some(&model_folder(path)), opts))
}

/// Summarizes a model given as bytes; external data is looked up in `base_dir`.
pub fn inspect_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Inspection, ImportError> {
    let m = decode_model(bytes, MEMORY_LABEL)?;
    Ok(inspect_model(m, MEMORY_LABEL, base_dir, opts))
}

fn inspect_model(
    m: ModelProto,
    file: &str,
    base_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Inspection {
    let empty = Default::default();
    let g = m.graph.as_ref().unwrap_or(&empty);
    let init_names: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    let consts_win = opts.inputs_with_initializer_are_constants;
    let inputs = g
        .input
        .iter()
        .filter(|vi| !(consts_win && init_names.contains(vi.name())))
        .map(info)
        .collect();
    let outputs = g.output.iter().map(info).collect();

    let mut hist: BTreeMap<String, usize> = BTreeMap::new();
    for n in &g.node {
        let key = if is_default_domain(n.domain()) {
            n.op_type().to_owned()
        } else {
            format!("{}::{}", n.domain(), n.op_type())
        };
        *hist.entry(key).or_default() += 1;
    }

    let input_names: HashSet<&str> = g.input.iter().map(|vi| vi.name()).collect();
    let mut count = 0u64;
    let mut bytes = 0u64;
    let mut add = |dims: &[i64], elem: i32| {
        let n = dims
            .iter()
            .try_fold(1u64, |a, &d| {
                u64::try_from(d).ok().map(|d| a.saturating_mul(d))
            })
            .unwrap_or(0);
        count = count.saturating_add(n);
        bytes = bytes.saturating_add(n.saturating_mul(onnx_elem_bits(elem)).div_ceil(8));
    };
    for t in &g.initializer {
        // Without constants winning, an input's initializer is only an unused default.
        if consts_win || !input_names.contains(t.name()) {
            add(&t.dims, t.data_type());
        }
    }
    let float = crate::onnx::tensor_proto::DataType::Float as i32;
    let int64 = crate::onnx::tensor_proto::DataType::Int64 as i32;
    for n in g
        .node
        .iter()
        .filter(|n| n.op_type() == "Constant" && is_default_domain(n.domain()))
    {
        for a in &n.attribute {
            match a.name() {
                "value" => {
                    if let Some(TensorProto {
                        dims, data_type, ..
                    }) = &a.t
                    {
                        add(dims, data_type.unwrap_or(0));
                    }
                }
                "value_float" => add(&[], float),
                "value_int" => add(&[], int64),
                "value_floats" => add(&[a.floats.len() as i64], float),
                "value_ints" => add(&[a.ints.len() as i64], int64),
                _ => {}
            }
        }
    }

    let static_unsupported = static_check(&m, file);
    let mut ins = Inspection {
        file: file.to_owned(),
        ir_version: m.ir_version(),
        producer: producer_of(&m),
        opsets: m
            .opset_import
            .iter()
            .map(|o| (o.domain().to_owned(), o.version()))
            .collect(),
        graph_name: g.name().to_owned(),
        inputs,
        outputs,
        op_histogram: hist.into_iter().collect(),
        param_count: count,
        param_bytes: bytes,
        unsupported: Vec::new(),
        problem: None,
    };
    // A trial import finds what the static check cannot (a Reshape whose shape is computed at run
    // time, an unsupported dtype); when it fails for another reason, fall back to the static list.
    match import_model(m, file, base_dir, opts, true) {
        Ok(_) => {}
        Err(ImportError::Unsupported(list)) => ins.unsupported = list,
        Err(e) => {
            ins.unsupported = static_unsupported;
            ins.problem = Some(e.to_string());
        }
    }
    ins
}

/// Unsupported nodes found from the protobuf alone: unknown domains, ops without a mapping, unknown
/// attributes, unsupported outputs that are read.
fn static_check(m: &ModelProto, file: &str) -> Vec<UnsupportedNode> {
    let Some(g) = m.graph.as_ref() else {
        return Vec::new();
    };
    let table = opset_table(m);
    let mut used: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    used.extend(g.output.iter().map(|o| o.name()));
    let mut out = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        let name = node_name(n, i);
        let domain = if is_default_domain(n.domain()) {
            ""
        } else {
            n.domain()
        };
        let opset = table.get(domain).copied().unwrap_or(0);
        let reason = if !domain.is_empty() {
            Some(format!("ops of domain \"{domain}\" are not supported"))
        } else {
            let cx = NodeCx {
                node: n,
                name: name.clone(),
                op_type: n.op_type(),
                opset,
                attrs: Attrs::new(&n.attribute),
            };
            let flags: Vec<bool> = n
                .output
                .iter()
                .map(|o| !o.is_empty() && used.contains(o.as_str()))
                .collect();
            match ops::check_node(&cx, &flags) {
                Err(crate::attrs::NodeError::Unsupported(r)) => Some(r),
                _ => None,
            }
        };
        if let Some(reason) = reason {
            out.push(UnsupportedNode {
                file: file.to_owned(),
                node: name,
                op_type: n.op_type().to_owned(),
                domain: n.domain().to_owned(),
                opset,
                reason,
            });
        }
    }
    out
}

fn info(vi: &ValueInfoProto) -> TensorInfo {
    let name = vi.name().to_owned();
    let (dtype, dims) = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(tt)) => {
            let dtype = match dtype_from_onnx(tt.elem_type()) {
                Ok(d) => d.name().to_owned(),
                Err(_) => onnx_type_name(tt.elem_type()).to_ascii_lowercase(),
            };
            let dims = tt.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(DimValue::DimValue(v)) => v.to_string(),
                        Some(DimValue::DimParam(p)) if !p.is_empty() => p.clone(),
                        _ => "?".to_owned(),
                    })
                    .collect()
            });
            (dtype, dims)
        }
        Some(type_proto::Value::SequenceType(_)) => ("sequence".into(), None),
        Some(type_proto::Value::MapType(_)) => ("map".into(), None),
        Some(type_proto::Value::OptionalType(_)) => ("optional".into(), None),
        Some(type_proto::Value::SparseTensorType(_)) => ("sparse_tensor".into(), None),
        Some(type_proto::Value::OpaqueType(_)) => ("opaque".into(), None),
        None => ("?".into(), None),
    };
    TensorInfo { name, dtype, dims }
}

impl fmt::Display for TensorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dims {
            Some(d) => write!(f, "{}: {}[{}]", self.name, self.dtype, d.join(",")),
            None => write!(f, "{}: {}[...]", self.name, self.dtype),
        }
    }
}

/// Bytes in a human unit.
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// The text `kiln inspect` prints.
impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "model:      {}", self.file)?;
        writeln!(f, "ir_version: {}", self.ir_version)?;
        writeln!(
            f,
            "producer:   {}",
            if self.producer.is_empty() {
                "-"
            } else {
                &self.producer
            }
        )?;
        let opsets: Vec<String> = self
            .opsets
            .iter()
            .map(|(d, v)| format!("{} {v}", if d.is_empty() { "ai.onnx" } else { d }))
            .collect();
        writeln!(f, "opsets:     {}", opsets.join(", "))?;
        writeln!(f, "graph:      {:?}", self.graph_name)?;
        writeln!(f, "inputs:")?;
        for i in &self.inputs {
            writeln!(f, "  {i}")?;
        }
        writeln!(f, "outputs:")?;
        for o in &self.outputs {
            writeln!(f, "  {o}")?;
        }
        writeln!(
            f,
            "parameters: {} ({})",
            self.param_count,
            human_bytes(self.param_bytes)
        )?;
        let nodes: usize = self.op_histogram.iter().map(|(_, n)| n).sum();
        writeln!(f, "ops:        {nodes} nodes")?;
        let width = self
            .op_histogram
            .iter()
            .map(|(k, _)| k.len())
            .max()
            .unwrap_or(0);
        // Coverage at a glance: every op type says whether kiln compiles all of its nodes.
        for (op, n) in &self.op_histogram {
            let bad = self.unsupported.iter().filter(|u| u.op_type == *op).count();
            let mark = match bad {
                0 => "supported".to_string(),
                b if b == *n => "UNSUPPORTED".to_string(),
                b => format!("{b} of {n} nodes unsupported"),
            };
            writeln!(f, "  {op:<width$}  {n:>5}  {mark}")?;
        }
        if self.unsupported.is_empty() {
            writeln!(f, "unsupported: none")?;
        } else {
            writeln!(f, "unsupported: {}", self.unsupported.len())?;
            for u in &self.unsupported {
                writeln!(f, "  {u}")?;
            }
        }
        if let Some(p) = &self.problem {
            writeln!(f, "problem:    {p}")?;
        }
        Ok(())
    }
}
