//! The `kiln` command.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use kiln::{npy, Compiler, Error, Target, WeightsMode};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

macro_rules! outln {
    ($out:expr, $($arg:tt)*) => { writeln!($out, $($arg)*).expect("formatting into a String") };
}
macro_rules! outp {
    ($out:expr, $($arg:tt)*) => { write!($out, $($arg)*).expect("formatting into a String") };
}

/// kiln compiles an ONNX model into a self-contained native static library and C header.
///
/// Exit codes: 0 success, 2 bad input (malformed or unsupported model, bad flag), 1 internal error.
#[derive(Parser)]
#[command(name = "kiln", version, about, long_about = None, after_help = "Examples:\n  kiln inspect model.onnx\n  kiln compile model.onnx --out-dir build/            # build/libmodel.a + build/model.h for the host\n  kiln compile model.onnx --target aarch64-unknown-linux-gnu --out-dir build/arm64\n  kiln run model.onnx --input x.npy                   # compile for the host, run once, print outputs\n  kiln ir model.onnx --after const-fold               # textual IR after a pass\n  kiln bench model.onnx --cpu native --threads 2      # NAME_run_parallel on 2 threads\n  kiln bench model.onnx --cpu native --layout nhwc    # conv regions channels-last")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a model's inputs, outputs, op histogram, parameters, opsets and unsupported ops.
    Inspect {
        /// The ONNX model.
        model: PathBuf,
        #[command(flatten)]
        import: ImportArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the textual IR (after the whole pipeline, or after one pass).
    Ir {
        /// The ONNX model.
        model: PathBuf,
        #[command(flatten)]
        import: ImportArgs,
        #[arg(long, value_name = "PASS", help = after_pass_help())]
        after: Option<String>,
        #[command(flatten)]
        passes: PassArgs,
        /// The `--winograd` the graph is for (the `auto` layout weighs it).
        #[command(flatten)]
        codegen: CodegenArgs,
        /// Print every constant in full (the parser needs this).
        #[arg(long)]
        full_consts: bool,
        /// Stop after N rewrites (to bisect a bad rewrite).
        #[arg(long, value_name = "N")]
        fuel: Option<u64>,
        /// Print each pass's time and node count to stderr.
        #[arg(long)]
        timings: bool,
    },
    /// Compile to DIR/libNAME.a and DIR/NAME.h.
    Compile {
        /// The ONNX model.
        model: PathBuf,
        #[command(flatten)]
        import: ImportArgs,
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        passes: PassArgs,
        #[command(flatten)]
        codegen: CodegenArgs,
        /// Output folder (created if missing).
        #[arg(long, short = 'o', value_name = "DIR")]
        out_dir: PathBuf,
        /// C prefix and library name (default: the model file's stem as a C identifier).
        #[arg(long)]
        name: Option<String>,
        /// `embedded`: weights in the library's read-only data; `file`: DIR/NAME.weights.bin, passed to
        /// NAME_run at run time.
        #[arg(long, value_name = "MODE", default_value = "embedded", value_parser = ["embedded", "file"])]
        weights: String,
        /// Print the memory plan, the sizes, and every kernel function with the nodes it computes (the symbols a profiler shows).
        #[arg(long)]
        report: bool,
        /// Write the report as JSON to this file (`-` for stdout).
        #[arg(long, value_name = "FILE")]
        report_json: Option<PathBuf>,
    },
    /// Compile for the host and measure: cold first run, p50/p95/p99 latency over N warm runs, arena,
    /// weight and code bytes, peak RSS. Needs a C compiler (`cc`) to link the driver.
    Bench {
        /// The ONNX model.
        model: PathBuf,
        #[command(flatten)]
        import: ImportArgs,
        /// CPU: generic (x86-64-v2 on x86_64), x86-64-v3, native, ...
        #[arg(long, default_value = "generic")]
        cpu: String,
        /// Extra target features, comma separated.
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
        features: Vec<String>,
        #[command(flatten)]
        passes: PassArgs,
        #[command(flatten)]
        codegen: CodegenArgs,
        /// Warm runs measured (after the cold one).
        #[arg(long, short = 'n', default_value_t = 100)]
        runs: usize,
        #[command(flatten)]
        threads: ThreadArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Compile for the host, run once on the given inputs, print (and optionally save) the outputs.
    /// Needs a C compiler (`cc`) to link the driver.
    Run {
        /// The ONNX model.
        model: PathBuf,
        #[command(flatten)]
        import: ImportArgs,
        /// Input as .npy, one per graph input in ONNX order (or NAME=FILE.npy). Missing inputs are
        /// filled with a fixed pseudo-random pattern.
        #[arg(long = "input", short = 'i', value_name = "FILE")]
        inputs: Vec<String>,
        /// Save each output as DIR/<output name>.npy.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
        /// Elements of each output to print.
        #[arg(long, default_value_t = 10)]
        show: usize,
        #[command(flatten)]
        threads: ThreadArgs,
        #[command(flatten)]
        passes: PassArgs,
        #[command(flatten)]
        codegen: CodegenArgs,
    },
}

#[derive(Args)]
struct ThreadArgs {
    /// Run on N threads: the driver calls NAME_run_parallel with a pthread pool of N threads
    /// (examples/c/kiln_pool.h) and each heavy kernel split into N parts. Without it, NAME_run on
    /// one thread. The library itself never creates threads.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: Option<u32>,
}

impl ThreadArgs {
    fn runner(&self, compiled: &kiln::Compiled) -> Result<kiln::runner::Runner, Error> {
        let mut r = kiln::runner::Runner::build(compiled)?;
        r.set_threads(self.threads.unwrap_or(0) as usize);
        Ok(r)
    }
}

/// The `--after` help of `kiln ir`: the pass names, listed from the pipeline itself.
fn after_pass_help() -> String {
    let names: Vec<&str> = kiln_passes::pipeline().iter().map(|p| p.name()).collect();
    format!(
        "Print the IR after this pass (`input` = as imported). Passes, in order: {}",
        names.join(", ")
    )
}

#[derive(Args)]
struct PassArgs {
    /// Activation layout of the conv regions: `auto` (the choose-layout pass decides per model),
    /// `nchw` (channels-first, as ONNX), `nhwc` (channels-last wherever kiln has the kernels). The
    /// library's inputs and outputs stay NCHW either way.
    #[arg(long, value_name = "LAYOUT", default_value = "auto", value_parser = parse_layout)]
    layout: kiln::LayoutPolicy,
}

#[derive(Args)]
struct CodegenArgs {
    /// Winograd for dense 3x3 stride-1 convs: `auto` (where it pays), `off` (im2col only: the
    /// smallest weights; Winograd's are 1.8x to 4x larger), `f2` or `f4` (force that tile size).
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = parse_winograd)]
    winograd: kiln::Winograd,
}

fn parse_winograd(s: &str) -> Result<kiln::Winograd, String> {
    match s {
        "auto" => Ok(kiln::Winograd::Auto),
        "off" => Ok(kiln::Winograd::Off),
        "f2" => Ok(kiln::Winograd::F2),
        "f4" => Ok(kiln::Winograd::F4),
        other => Err(format!("`{other}` is not one of auto, off, f2, f4")),
    }
}

fn parse_layout(s: &str) -> Result<kiln::LayoutPolicy, String> {
    s.parse()
}

#[derive(Args)]
struct ImportArgs {
    /// Bind a symbolic dimension: --dim batch=1 (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
    dims: Vec<(String, usize)>,
    /// Freeze a graph input to the value in a .npy file: it becomes a constant and leaves the C API.
    /// For inputs that set shapes (axes, pads, sizes), which kiln must know at compile time.
    #[arg(long = "freeze", value_name = "NAME=FILE.npy")]
    freeze: Vec<String>,
}

impl ImportArgs {
    fn map(&self) -> BTreeMap<String, usize> {
        self.dims.iter().cloned().collect()
    }

    fn frozen(&self) -> Result<BTreeMap<String, kiln_ir::Tensor>, Error> {
        let mut m = BTreeMap::new();
        for spec in &self.freeze {
            let (name, file) = spec.split_once('=').ok_or_else(|| {
                Error::Usage(format!("--freeze takes NAME=FILE.npy, got {spec:?}"))
            })?;
            let bytes = std::fs::read(file).map_err(|source| Error::Io {
                path: file.into(),
                source,
            })?;
            let a = npy::parse(&bytes).map_err(|source| Error::Io {
                path: file.into(),
                source,
            })?;
            let t = kiln_ir::Tensor::from_bytes(a.dtype, a.shape, a.data)
                .map_err(|e| Error::Usage(format!("{file}: {e}")))?;
            m.insert(name.to_string(), t);
        }
        Ok(m)
    }

    fn compiler(&self, model: &Path) -> Result<Compiler, Error> {
        Ok(Compiler::new(model)
            .dims(&self.map())
            .freeze_inputs(&self.frozen()?))
    }
}

fn parse_dim(s: &str) -> Result<(String, usize), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    let v = v
        .trim()
        .parse::<usize>()
        .map_err(|_| format!("{v:?} is not a non-negative integer"))?;
    Ok((k.trim().to_string(), v))
}

#[derive(Args)]
struct TargetArgs {
    /// Target triple: x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu (default: the host).
    #[arg(long, value_name = "TRIPLE")]
    target: Option<String>,
    /// CPU: generic (x86-64-v2 on x86_64), x86-64-v3, native, ...
    #[arg(long, default_value = "generic")]
    cpu: String,
    /// Extra target features, comma separated: +avx,+fma / +dotprod.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    features: Vec<String>,
}

impl TargetArgs {
    fn target(&self) -> Result<Target, Error> {
        let triple = self
            .target
            .clone()
            .unwrap_or_else(|| Target::host().triple.to_string());
        Ok(Target::parse(&triple, &self.cpu, &self.features)?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.downcast_ref::<Error>().map_or(1, Error::exit_code);
            eprintln!("error: {e:#}");
            ExitCode::from(code as u8)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut out = String::new();
    match cli.command {
        Cmd::Inspect {
            model,
            import,
            json,
        } => {
            let opts = kiln::ImportOptions {
                dims: import.map(),
                frozen_inputs: import.frozen()?,
                ..Default::default()
            };
            let ins = kiln_frontend::inspect_file(&model, &opts).map_err(Error::from)?;
            if json {
                outln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&ins).context("serializing the inspection")?
                );
            } else {
                outp!(out, "{ins}");
            }
        }
        Cmd::Ir {
            model,
            import,
            after,
            passes,
            codegen,
            full_consts,
            fuel,
            timings,
        } => {
            let mut driver = kiln_passes::Driver {
                fuel,
                ..Default::default()
            };
            if full_consts {
                driver.print_options.max_const_elems = usize::MAX;
            }
            driver.print_after = after.clone();
            let compiler = import
                .compiler(&model)?
                .layout(passes.layout)
                .winograd(codegen.winograd)
                .driver(driver.clone());
            let (graph, report) = compiler.optimized_graph()?;
            if timings {
                for p in &report.passes {
                    eprintln!(
                        "{:>12}  {:>9.3} ms  {:>6} nodes  {}",
                        p.name,
                        p.time.as_secs_f64() * 1e3,
                        p.nodes_after,
                        if p.changed { "changed" } else { "" }
                    );
                }
            }
            match report.printed {
                Some(text) => out.push_str(&text),
                None => out.push_str(&kiln_ir::print(&graph, driver.print_options)),
            }
        }
        Cmd::Compile {
            model,
            import,
            target,
            passes,
            codegen,
            out_dir,
            name,
            weights,
            report,
            report_json,
        } => {
            let mut c = import
                .compiler(&model)?
                .layout(passes.layout)
                .winograd(codegen.winograd)
                .target(target.target()?);
            if let Some(n) = &name {
                c = c.name(n);
            }
            if weights == "file" {
                c = c.weights(WeightsMode::External);
            }
            let (compiled, written) = c.write_to(&out_dir)?;
            eprintln!(
                "wrote {} and {}{} ({})",
                written.library.display(),
                written.header.display(),
                written
                    .weights
                    .as_ref()
                    .map(|w| format!(" and {}", w.display()))
                    .unwrap_or_default(),
                compiled.target.describe()
            );
            let r = &compiled.report;
            if report {
                outln!(
                    out,
                    "arena   {:>12} bytes\nweights {:>12} bytes\ncode    {:>12} bytes",
                    r.arena_bytes,
                    r.weight_bytes,
                    r.code_bytes
                );
                outln!(
                    out,
                    "{:<40} {:<24} {:<14} {:>10}  location",
                    "tensor",
                    "type",
                    "op",
                    "bytes"
                );
                for t in &r.tensors {
                    outln!(
                        out,
                        "{:<40} {:<24} {:<14} {:>10}  {}",
                        t.value,
                        format!("{}{:?}", t.dtype, t.dims),
                        t.op,
                        t.bytes,
                        location(&t.location)
                    );
                }
                outln!(out, "{:<40} {:>10}  nodes", "kernel", "code bytes");
                for k in &r.kernels {
                    outln!(
                        out,
                        "{:<40} {:>10}  {}",
                        k.symbol,
                        k.code_bytes,
                        k.nodes.join(", ")
                    );
                }
            }
            if let Some(path) = report_json {
                let text = serde_json::to_string_pretty(r)?;
                if path == Path::new("-") {
                    outln!(out, "{text}");
                } else {
                    std::fs::write(&path, text).map_err(|source| Error::Io {
                        path: path.clone(),
                        source,
                    })?;
                }
            }
        }
        Cmd::Bench {
            model,
            import,
            cpu,
            features,
            passes,
            codegen,
            runs,
            threads,
            json,
        } => {
            let target = Target::parse(&Target::host().triple.to_string(), &cpu, &features)?;
            let start = std::time::Instant::now();
            let compiled = import
                .compiler(&model)?
                .layout(passes.layout)
                .winograd(codegen.winograd)
                .target(target)
                .compile()?;
            let compile_s = start.elapsed().as_secs_f64();
            let inputs: Vec<Vec<u8>> = compiled.inputs.iter().map(kiln::runner::pattern).collect();
            let runner = threads.runner(&compiled)?;
            let t = runner.bench(&inputs, runs + 1)?;
            let r = &compiled.report;
            let summary = serde_json::json!({
                "model": model.display().to_string(),
                "target": compiled.target.describe(),
                "runs": runs,
                "threads": threads.threads.unwrap_or(1),
                "cold_ms": t.runs_ns[0] / 1e6,
                "p50_ms": t.quantile(0.50) / 1e6,
                "p95_ms": t.quantile(0.95) / 1e6,
                "p99_ms": t.quantile(0.99) / 1e6,
                "min_ms": t.quantile(0.0) / 1e6,
                "arena_bytes": r.arena_bytes,
                "weight_bytes": r.weight_bytes,
                "code_bytes": r.code_bytes,
                "library_bytes": compiled.archive.len(),
                "peak_rss_kib": t.peak_rss_kib,
                "compile_s": compile_s,
            });
            if json {
                outln!(out, "{}", serde_json::to_string_pretty(&summary)?);
            } else {
                outln!(
                    out,
                    "{} ({}{})",
                    model.display(),
                    compiled.target.describe(),
                    match threads.threads {
                        Some(n) => format!(", {n} thread{}", if n == 1 { "" } else { "s" }),
                        None => String::new(),
                    }
                );
                outln!(out, "  compile        {:>10.3} s", compile_s);
                outln!(out, "  cold run       {:>10.3} ms", t.runs_ns[0] / 1e6);
                for (q, name) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
                    outln!(
                        out,
                        "  {name} ({runs} runs) {:>8.3} ms",
                        t.quantile(q) / 1e6
                    );
                }
                outln!(out, "  arena          {:>10} bytes", r.arena_bytes);
                outln!(out, "  weights        {:>10} bytes", r.weight_bytes);
                outln!(out, "  code           {:>10} bytes", r.code_bytes);
                outln!(out, "  libNAME.a      {:>10} bytes", compiled.archive.len());
                outln!(
                    out,
                    "  peak RSS       {:>10} KiB (whole driver process)",
                    t.peak_rss_kib
                );
            }
        }
        Cmd::Run {
            model,
            import,
            inputs,
            output_dir,
            show,
            threads,
            passes,
            codegen,
        } => {
            let compiled = import
                .compiler(&model)?
                .layout(passes.layout)
                .winograd(codegen.winograd)
                .compile()?;
            let mut data = Vec::new();
            for (i, io) in compiled.inputs.iter().enumerate() {
                let given = inputs.iter().find_map(|s| {
                    s.split_once('=')
                        .filter(|(n, _)| *n == io.name)
                        .map(|(_, f)| f.to_string())
                });
                let given =
                    given.or_else(|| inputs.iter().filter(|s| !s.contains('=')).nth(i).cloned());
                match given {
                    Some(file) => {
                        let bytes = std::fs::read(&file).map_err(|source| Error::Io {
                            path: file.clone().into(),
                            source,
                        })?;
                        let a = npy::parse(&bytes).map_err(|source| Error::Io {
                            path: file.clone().into(),
                            source,
                        })?;
                        if a.dtype != io.dtype || a.shape != io.dims {
                            return Err(Error::Usage(format!(
                                "{file}: {}{:?} given, input {:?} takes {}{:?}",
                                a.dtype, a.shape, io.name, io.dtype, io.dims
                            ))
                            .into());
                        }
                        data.push(a.data);
                    }
                    None => data.push(kiln::runner::pattern(io)),
                }
            }
            let runner = threads.runner(&compiled)?;
            let outs = runner.run(&data, 1)?;
            for (io, bytes) in compiled.outputs.iter().zip(&outs) {
                let t = kiln_ir::Tensor::from_bytes(io.dtype, io.dims.clone(), bytes.clone())
                    .map_err(|e| Error::Run(e.to_string()))?;
                let vals: Vec<String> = (0..t.len().min(show))
                    .map(|i| format!("{:.6}", t.get_f64(i)))
                    .collect();
                outln!(
                    out,
                    "{} {}{:?}: [{}{}]",
                    io.name,
                    io.dtype,
                    io.dims,
                    vals.join(", "),
                    if t.len() > show { ", ..." } else { "" }
                );
                if let Some(dir) = &output_dir {
                    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                        path: dir.clone(),
                        source,
                    })?;
                    let p = dir.join(format!(
                        "{}.npy",
                        kiln_runtime::header::c_identifier(&io.name)
                    ));
                    let a = npy::Array {
                        dtype: io.dtype,
                        shape: io.dims.clone(),
                        data: bytes.clone(),
                    };
                    std::fs::write(&p, npy::write(&a)?).map_err(|source| Error::Io {
                        path: p.clone(),
                        source,
                    })?;
                }
            }
        }
    }
    write_stdout(&out)
}

/// Writes the command's output; a closed pipe (`kiln ir model.onnx | head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn location(l: &kiln_backend::Location) -> String {
    use kiln_backend::Location as L;
    match l {
        L::Arena { offset } => format!("arena+{offset}"),
        L::Input { index } => format!("input {index}"),
        L::Output { index } => format!("output {index}"),
        L::Weights { offset } => format!("weights+{offset}"),
        L::View { of } => format!("view of {of}"),
        L::Folded => "folded".into(),
        L::Empty => "empty".into(),
    }
}
