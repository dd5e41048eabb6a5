//! kiln: an ahead-of-time compiler from ONNX models to self-contained native static libraries.
//!
//! `model.onnx` in, `libNAME.a` + `NAME.h` out: no interpreter, no runtime library, no malloc, memory
//! known at compile time. This crate is the facade over the pipeline
//! `kiln_frontend` (ONNX -> IR) -> `kiln_passes` -> `kiln_backend` (+ `kiln_runtime`), used by the `kiln`
//! command and by `build.rs` scripts:
//!
//! ```no_run
//! // in build.rs's main():
//! kiln::Compiler::new("model/mnist.onnx")
//!     .name("mnist")
//!     .build_rs()
//!     .expect("kiln failed to compile the model");
//! ```
//!
//! See `docs/DESIGN.md` for the crate map and the design.
#![deny(missing_docs)]

pub mod conformance;
pub mod npy;
pub mod runner;

pub use kiln_backend::{Report, Target, WeightsMode, Winograd};
pub use kiln_frontend::ImportOptions;
pub use kiln_passes::{LayoutPolicy, PipelineOptions};

use kiln_ir::{DType, Graph};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Everything that can go wrong, split by whose fault it is (see [`Error::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model is malformed or uses something kiln does not support.
    #[error(transparent)]
    Import(#[from] kiln_frontend::ImportError),
    /// A graph pass failed (a compiler bug unless the graph itself is broken).
    #[error(transparent)]
    Pass(#[from] kiln_passes::PassError),
    /// Code generation failed.
    #[error(transparent)]
    Backend(#[from] kiln_backend::BackendError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A bad option or argument.
    #[error("{0}")]
    Usage(String),
    /// Running a compiled model failed (`kiln run`, tests).
    #[error("{0}")]
    Run(String),
}

impl Error {
    /// Process exit code: 2 for bad input (the model, a flag, a file), 1 for an internal error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Import(_) | Error::Usage(_) | Error::Io { .. } => 2,
            Error::Backend(e) => backend_exit_code(e),
            _ => 1,
        }
    }
}

fn backend_exit_code(e: &kiln_backend::BackendError) -> i32 {
    use kiln_backend::BackendError as B;
    match e {
        B::Unsupported { .. } | B::Target(_) | B::Options(_) | B::Graph(_) => 2,
        B::Many(v) => v.iter().map(backend_exit_code).min().unwrap_or(1),
        B::Internal(_) => 1,
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One graph input or output as the C API sees it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct IoInfo {
    /// ONNX name.
    pub name: String,
    /// Element type.
    #[serde(serialize_with = "ser_dtype")]
    pub dtype: DType,
    /// Dimensions.
    pub dims: Vec<usize>,
}

fn ser_dtype<S: serde::Serializer>(d: &DType, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(d.name())
}

impl IoInfo {
    /// Bytes of dense storage.
    pub fn byte_size(&self) -> usize {
        self.dtype.storage_bytes(self.dims.iter().product())
    }
}

/// A compiled model, in memory.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The C identifier prefix (`NAME_run`, `libNAME.a`).
    pub name: String,
    /// The static archive (`libNAME.a`).
    pub archive: Vec<u8>,
    /// The object inside it.
    pub object: Vec<u8>,
    /// The C header (`NAME.h`).
    pub header: String,
    /// The weights file contents, with [`WeightsMode::External`].
    pub weights: Option<Vec<u8>>,
    /// Memory plan and sizes.
    pub report: Report,
    /// Graph inputs, ONNX order.
    pub inputs: Vec<IoInfo>,
    /// Graph outputs, ONNX order.
    pub outputs: Vec<IoInfo>,
    /// The target compiled for.
    pub target: Target,
}

/// Paths written by [`Compiler::write_to`].
#[derive(Clone, Debug)]
pub struct Written {
    /// `DIR/libNAME.a`.
    pub library: PathBuf,
    /// `DIR/NAME.h`.
    pub header: PathBuf,
    /// `DIR/NAME.weights.bin` with external weights.
    pub weights: Option<PathBuf>,
}

/// Compiles one ONNX model. A builder: set what you need, then [`Compiler::compile`],
/// [`Compiler::write_to`] or [`Compiler::build_rs`].
#[derive(Clone, Debug)]
pub struct Compiler {
    model: PathBuf,
    name: Option<String>,
    target: Option<Target>,
    import: ImportOptions,
    weights: WeightsMode,
    driver: kiln_passes::Driver,
    pipeline: PipelineOptions,
    winograd: Winograd,
}

/// Makes a file stem into a C identifier (the default NAME).
pub fn default_name(model: &Path) -> String {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    kiln_runtime::header::c_identifier(&stem)
}

impl Compiler {
    /// A compiler for the model at `path`, for the host, with default options.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Compiler {
            model: path.as_ref().to_path_buf(),
            name: None,
            target: None,
            import: ImportOptions::default(),
            weights: WeightsMode::Embedded,
            driver: kiln_passes::Driver::default(),
            pipeline: PipelineOptions::default(),
            winograd: Winograd::Auto,
        }
    }

    /// The C prefix and library name (default: the model file's stem as a C identifier).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// The target (default: the host).
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// Binds a symbolic dimension (`dim_param`) to a value.
    pub fn dim(mut self, name: &str, value: usize) -> Self {
        self.import.dims.insert(name.to_string(), value);
        self
    }

    /// Binds several symbolic dimensions.
    pub fn dims(mut self, dims: &BTreeMap<String, usize>) -> Self {
        self.import
            .dims
            .extend(dims.iter().map(|(k, v)| (k.clone(), *v)));
        self
    }

    /// Freezes graph inputs to values: they become constants and leave the C API (for inputs that
    /// set shapes, which kiln must know at compile time).
    pub fn freeze_inputs(mut self, values: &BTreeMap<String, kiln_ir::Tensor>) -> Self {
        self.import
            .frozen_inputs
            .extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    /// Where the weights go: in the library's read-only data (default) or a separate file.
    pub fn weights(mut self, mode: WeightsMode) -> Self {
        self.weights = mode;
        self
    }

    /// Options for the pass driver (verification, IR capture, fuel).
    pub fn driver(mut self, driver: kiln_passes::Driver) -> Self {
        self.driver = driver;
        self
    }

    /// The activation layout of the model's convolution regions (`--layout`):
    /// [`LayoutPolicy::Auto`] (default) lets the `choose-layout` pass decide once per graph,
    /// [`LayoutPolicy::Nchw`] keeps ONNX's channels-first layout, [`LayoutPolicy::Nhwc`] runs every
    /// conv and pooling it can channels-last. The compiled library's inputs and outputs are
    /// channels-first whatever the choice: only the kernels inside change.
    pub fn layout(mut self, policy: LayoutPolicy) -> Self {
        self.pipeline.layout = policy;
        self
    }

    /// Winograd for dense 3x3 stride-1 convolutions (`--winograd`): [`Winograd::Auto`] (default)
    /// where it pays, [`Winograd::Off`] for the smallest weights (Winograd's transformed weights are
    /// 1.8x to 4x the size of the originals), `F2`/`F4` to force a tile size.
    pub fn winograd(mut self, mode: Winograd) -> Self {
        self.winograd = mode;
        self
    }

    /// All the pipeline options at once (see [`PipelineOptions`]; [`Compiler::layout`] sets one).
    pub fn pipeline_options(mut self, options: PipelineOptions) -> Self {
        self.pipeline = options;
        self
    }

    /// The resolved C name.
    pub fn resolved_name(&self) -> Result<String> {
        match &self.name {
            Some(n) if kiln_runtime::header::c_identifier(n) == *n && !n.is_empty() => {
                Ok(n.clone())
            }
            Some(n) => Err(Error::Usage(format!(
                "--name {n:?} is not a C identifier (try {:?})",
                kiln_runtime::header::c_identifier(n)
            ))),
            None => Ok(default_name(&self.model)),
        }
    }

    /// Imports the model and runs the pass pipeline; returns the optimized graph and the pass report.
    pub fn optimized_graph(&self) -> Result<(Graph, kiln_passes::PipelineReport)> {
        let model = kiln_frontend::import_file(&self.model, &self.import)?;
        let mut graph = model.graph;
        // The layout rule weighs Winograd only if the backend will use it.
        let options = PipelineOptions {
            winograd: self.pipeline.winograd && self.winograd != Winograd::Off,
            ..self.pipeline
        };
        let passes = kiln_passes::pipeline_with(&options);
        let report = self.driver.run(&mut graph, &passes)?;
        Ok((graph, report))
    }

    /// Compiles in memory.
    pub fn compile(&self) -> Result<Compiled> {
        let name = self.resolved_name()?;
        let (graph, _) = self.optimized_graph()?;
        let target = self.target.clone().unwrap_or_else(Target::host);
        let opts = kiln_backend::Options {
            winograd: self.winograd,
            name: name.clone(),
            target: target.clone(),
            weights: self.weights,
            model_file: self
                .model
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let art = kiln_backend::compile(&graph, &opts)?;
        let member = format!("{name}.o");
        let archive = kiln_runtime::archive::write_archive(&[(member, art.object.clone())])
            .map_err(|source| Error::Io {
                path: PathBuf::from(format!("lib{name}.a")),
                source,
            })?;
        let io = |v: kiln_ir::Value, n: &str| {
            let ty = graph.ty(v);
            IoInfo {
                name: n.to_string(),
                dtype: ty.dtype,
                dims: ty.dims().unwrap_or_default(),
            }
        };
        let inputs = graph
            .inputs
            .iter()
            .map(|&id| io(kiln_ir::Value { node: id, slot: 0 }, &graph.node(id).name))
            .collect();
        let outputs = graph.outputs.iter().map(|(n, v)| io(*v, n)).collect();
        Ok(Compiled {
            name,
            archive,
            object: art.object,
            header: art.header,
            weights: art.weights_blob,
            report: art.report,
            inputs,
            outputs,
            target,
        })
    }

    /// Compiles and writes `DIR/libNAME.a`, `DIR/NAME.h` (and `DIR/NAME.weights.bin`). Nothing is
    /// written unless compilation succeeds; each file appears whole (written to a temporary file in
    /// `DIR`, then renamed).
    pub fn write_to(&self, dir: &Path) -> Result<(Compiled, Written)> {
        let c = self.compile()?;
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let library = dir.join(format!("lib{}.a", c.name));
        let header = dir.join(format!("{}.h", c.name));
        let weights = c
            .weights
            .as_ref()
            .map(|_| dir.join(format!("{}.weights.bin", c.name)));
        let mut files: Vec<(&Path, &[u8])> =
            vec![(&library, &c.archive), (&header, c.header.as_bytes())];
        if let (Some(p), Some(w)) = (&weights, &c.weights) {
            files.push((p, w));
        }
        // Stage every file first, then rename them all: a failure leaves no partial output.
        let mut staged = Vec::new();
        for (path, bytes) in &files {
            let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
            tmp.write_all(bytes).map_err(io_err(path))?;
            staged.push((tmp, *path));
        }
        for (tmp, path) in staged {
            tmp.persist(path).map_err(|e| Error::Io {
                path: path.to_path_buf(),
                source: e.error,
            })?;
        }
        Ok((
            c,
            Written {
                library,
                header,
                weights,
            },
        ))
    }

    /// For `build.rs`: compiles for the Cargo target into `OUT_DIR`, tells Cargo to link `libNAME.a`, and
    /// to rerun when the model changes. The header lands in `OUT_DIR/NAME.h`.
    pub fn build_rs(self) -> Result<(Compiled, Written)> {
        let out = std::env::var_os("OUT_DIR").ok_or_else(|| {
            Error::Usage("OUT_DIR is not set: build_rs() is for build scripts".into())
        })?;
        let mut me = self;
        if me.target.is_none() {
            if let Ok(t) = std::env::var("TARGET") {
                me.target = Some(Target::parse(&t, "generic", &[])?);
            }
        }
        println!("cargo:rerun-if-changed={}", me.model.display());
        let (c, w) = me.write_to(Path::new(&out))?;
        println!(
            "cargo:rustc-link-search=native={}",
            Path::new(&out).display()
        );
        println!("cargo:rustc-link-lib=static={}", c.name);
        Ok((c, w))
    }
}
