//! `kiln-conformance`: runs the ONNX backend node tests of the edge set through kiln (compile, link,
//! run, compare), prints a summary of what fails and why, and checks the manifest for regressions.
//!
//! Exit codes: 0 no regression, 1 a case the manifest records as `pass` no longer passes, 2 bad usage or
//! a missing tool.

use anyhow::{bail, Context};
use clap::Parser;
use kiln::conformance::{self, Manifest, Options, Outcome, Status};
use kiln::Target;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// Runs the ONNX backend node tests (tests/conformance/edge_set.txt) through kiln and compares the
/// results with the manifest tests/conformance/node.txt.
#[derive(Parser)]
#[command(
    name = "kiln-conformance",
    after_help = "Examples:\n  cargo run --release --bin kiln-conformance -- --write-manifest\n  cargo run --release --bin kiln-conformance -- --filter test_conv --verbose\n  cargo run --release --bin kiln-conformance -- --target aarch64-unknown-linux-gnu"
)]
struct Cli {
    /// Target triple (aarch64 runs under qemu-aarch64).
    #[arg(long, default_value_t = Target::host().triple.to_string())]
    target: String,
    /// Only the cases whose name contains this (repeatable: any of them).
    #[arg(long, value_name = "SUBSTR")]
    filter: Vec<String>,
    /// Record the outcomes in the manifest (x86_64 only: the manifest records x86_64 results).
    #[arg(long)]
    write_manifest: bool,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Seconds one run of a compiled case may take.
    #[arg(long, default_value_t = conformance::DEFAULT_TIMEOUT.as_secs())]
    timeout: u64,
    /// Print every case that does not pass, as it finishes.
    #[arg(long, short)]
    verbose: bool,
    /// How many ops/categories the summary lists.
    #[arg(long, default_value_t = 25)]
    top: usize,
    /// The manifest.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// The cases to choose from (default: tests/conformance/edge_set.txt).
    #[arg(long, value_name = "FILE")]
    list: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln-conformance: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let dir = conformance::conformance_dir();
    let cases_dir = dir.join("cases");
    let manifest_path = cli.manifest.clone().unwrap_or_else(|| dir.join("node.txt"));
    let list_path = cli.list.clone().unwrap_or_else(|| dir.join("edge_set.txt"));
    let target = Target::parse(&cli.target, "generic", &[]).context("--target")?;
    let arch = target.triple.architecture.to_string();
    if cli.write_manifest && arch != "x86_64" {
        bail!("--write-manifest records x86_64 results; this run is for {arch}");
    }

    materialize_cases(&cases_dir)?;
    let all = conformance::read_case_list(&list_path)?;
    let names: Vec<String> = all
        .iter()
        .filter(|n| cli.filter.is_empty() || cli.filter.iter().any(|f| n.contains(f.as_str())))
        .cloned()
        .collect();
    if names.is_empty() {
        bail!(
            "no case of {} matches {:?}",
            list_path.display(),
            cli.filter
        );
    }
    conformance::check_toolchain(&cases_dir, &target)?;

    let opts = Options {
        target,
        jobs: cli.jobs.max(1),
        timeout: Duration::from_secs(cli.timeout),
    };
    eprintln!(
        "kiln-conformance: {} cases for {} on {} threads",
        names.len(),
        cli.target,
        opts.jobs
    );
    let start = Instant::now();
    let verbose = cli.verbose;
    let outcomes =
        conformance::run_cases(&cases_dir, &names, &opts, &|done, total, o: &Outcome| {
            if verbose && o.status != Status::Pass {
                eprintln!("{} {} # {}", o.name, o.status, o.detail);
            }
            if done % 100 == 0 || done == total {
                eprintln!("[{done}/{total}] {:.0} s", start.elapsed().as_secs_f64());
            }
        });
    let elapsed = start.elapsed();

    print!("{}", conformance::summary(&outcomes, cli.top));
    println!(
        "{} cases for {} in {:.1} s",
        outcomes.len(),
        cli.target,
        elapsed.as_secs_f64()
    );

    let mut manifest = Manifest::read(&manifest_path)?;
    let regressions = conformance::regressions(&manifest, &outcomes);
    let fixed = conformance::newly_passing(&manifest, &outcomes);
    if !fixed.is_empty() {
        println!(
            "{} cases pass that {} does not record as passing:",
            fixed.len(),
            manifest_path.display()
        );
        for o in fixed.iter().take(50) {
            println!("  {}", o.name);
        }
        if fixed.len() > 50 {
            println!("  ... and {} more", fixed.len() - 50);
        }
        if !cli.write_manifest {
            println!("(rerun with --write-manifest to record them)");
        }
    }
    let regression_lines: Vec<String> = regressions
        .iter()
        .map(|o| format!("  {} {} # {}", o.name, o.status, o.detail))
        .collect();
    if cli.write_manifest {
        manifest.update(&outcomes);
        manifest.retain(&all.iter().cloned().collect::<BTreeSet<_>>());
        manifest.write(&manifest_path)?;
        println!(
            "wrote {} ({} cases, {} pass)",
            manifest_path.display(),
            manifest.entries.len(),
            manifest.passing().len()
        );
    }
    if regression_lines.is_empty() {
        println!("no regressions");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} REGRESSIONS (recorded as pass in {}):",
            regression_lines.len(),
            manifest_path.display()
        );
        for l in regression_lines {
            println!("{l}");
        }
        Ok(ExitCode::from(1))
    }
}

/// Writes the cases with scripts/conformance_cases.py (quick when they are up to date). Without
/// Python or the pinned onnx, existing cases are used as they are.
fn materialize_cases(cases_dir: &std::path::Path) -> anyhow::Result<()> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/conformance_cases.py");
    let status = Command::new("python3").arg(&script).status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ if cases_dir.join(".stamp").exists() => {
            eprintln!(
                "kiln-conformance: warning: {} failed; using the existing cases",
                script.display()
            );
            Ok(())
        }
        Ok(s) => bail!(
            "{} failed ({s}) and there are no cases in {}",
            script.display(),
            cases_dir.display()
        ),
        Err(e) => bail!("cannot run python3 {}: {e}", script.display()),
    }
}
