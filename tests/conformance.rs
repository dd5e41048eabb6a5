//! Conformance: every ONNX backend node test that tests/conformance/node.txt records as `pass` must
//! still pass, compiled for x86_64 and run natively (and, with `KILN_CONFORMANCE_AARCH64=1`, compiled
//! for aarch64 and run under qemu). The cases are materialized from the pinned onnx by
//! scripts/conformance_cases.py; without Python or that onnx the test is skipped.
//!
//! To see every case, not only the recorded passes, and to update the manifest:
//! `cargo run --release --bin kiln-conformance -- --write-manifest`.

use kiln::conformance::{self, Manifest, Options, Status};
use kiln::Target;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes the cases if they are missing or stale (quick otherwise). False when they cannot be had.
fn materialize(cases: &Path) -> bool {
    let script = root().join("scripts/conformance_cases.py");
    match Command::new("python3").arg(&script).output() {
        Ok(out) if out.status.success() => true,
        // 3: onnx missing or not the pinned version.
        Ok(out) if out.status.code() == Some(3) => {
            eprintln!(
                "conformance: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            cases.join(".stamp").exists()
        }
        Ok(out) => panic!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            eprintln!("conformance: cannot run python3: {e}");
            cases.join(".stamp").exists()
        }
    }
}

fn run_suite(cases: &Path, names: &[String], triple: &str) {
    let target = Target::parse(triple, "generic", &[]).unwrap();
    let opts = Options {
        target,
        ..Options::default()
    };
    let start = std::time::Instant::now();
    let outcomes = conformance::run_cases(cases, names, &opts, &|_, _, _| {});
    eprintln!(
        "conformance: {} cases for {triple} in {:.1} s",
        names.len(),
        start.elapsed().as_secs_f64()
    );
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.status != Status::Pass)
        .map(|o| format!("  {} {} # {}", o.name, o.status, o.detail))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of the {} cases tests/conformance/node.txt records as `pass` fail for {triple}:\n{}",
        failed.len(),
        names.len(),
        failed.join("\n")
    );
}

#[test]
fn recorded_passes_still_pass() {
    let dir = conformance::conformance_dir();
    let cases = dir.join("cases");
    if !materialize(&cases) {
        eprintln!(
            "SKIP conformance: no cases (needs python3 with onnx from scripts/install-deps.sh)"
        );
        return;
    }
    let manifest = Manifest::read(&dir.join("node.txt")).unwrap();
    let names = manifest.passing();
    assert!(
        !names.is_empty(),
        "tests/conformance/node.txt records no passing case"
    );

    let host = Target::host();
    if let Err(e) = conformance::check_toolchain(&cases, &host) {
        eprintln!("SKIP conformance: {e}");
        return;
    }
    run_suite(&cases, &names, &host.triple.to_string());

    if std::env::var("KILN_CONFORMANCE_AARCH64").is_ok_and(|v| v == "1") {
        let triple = "aarch64-unknown-linux-gnu";
        let target = Target::parse(triple, "generic", &[]).unwrap();
        conformance::check_toolchain(&cases, &target)
            .unwrap_or_else(|e| panic!("KILN_CONFORMANCE_AARCH64=1 but {e}"));
        run_suite(&cases, &names, triple);
    }
}
