//! Helpers shared by the benches: the model list, host targets, run counts, the core clock.
// Each bench uses a different subset.
#![allow(dead_code)]

use kiln::Target;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The host triple at a CPU level (`generic`, `native`, ...).
pub fn host_target(cpu: &str) -> Target {
    Target::parse(&Target::host().triple.to_string(), cpu, &[])
        .expect("the host triple at a known CPU level")
}

/// `tests/models/*.onnx`, then `build/families/*.onnx` when `scripts/export_families.py` has run.
pub fn models() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["tests/models", "build/families"] {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        out.extend(v);
    }
    out
}

/// A model's display name: its file stem.
pub fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Positional command-line arguments (cargo bench passes `--bench`; criterion-style flags are
/// skipped): used as substring filters on case names.
pub fn filters() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect()
}

/// Whether `name` passes the filters (no filter passes everything).
pub fn selected(name: &str, filters: &[String]) -> bool {
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

/// How many timed runs fit in `budget_s` when one takes `once_ns`, within `[min, max]`.
pub fn runs_for(once_ns: f64, budget_s: f64, min: usize, max: usize) -> usize {
    if once_ns <= 0.0 {
        return max;
    }
    ((budget_s * 1e9 / once_ns) as usize).clamp(min, max)
}

/// The median of a sample.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// `cpu MHz` of the first processor in /proc/cpuinfo. Under a hypervisor this is often the nominal
/// (TSC) frequency, not the clock the core actually runs at.
pub fn cpuinfo_mhz() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
}

/// The CPU model name from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The clock the core actually runs at, in GHz: a chain of dependent register-register integer adds
/// retires one add per cycle on every x86_64 and aarch64 core (1-cycle latency, and each add waits
/// for the last; register operands, because some cores fold chains of add-immediate in the
/// renamer), so adds / seconds is cycles / second. The fastest of many short tries, so a try that
/// was descheduled or ran at a lower boost level does not count: this is the highest clock the core
/// reached, turbo included, which makes "% of peak" a conservative figure.
pub fn measured_clock_ghz() -> Option<f64> {
    const ITERS: u64 = 500_000;
    const ADDS_PER_ITER: u64 = 100;
    let mut best = f64::MAX;
    for _ in 0..40 {
        let t = Instant::now();
        if !dependent_adds(ITERS) {
            return None;
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    Some((ITERS * ADDS_PER_ITER) as f64 / best / 1e9)
}

/// Runs `iters` x 100 dependent adds; false on an architecture without an implementation.
#[allow(unused_variables)]
fn dependent_adds(iters: u64) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let mut x: u64 = 0;
        let mut n = iters;
        let one: u64 = 1;
        // SAFETY: register-only arithmetic and a loop on `n`; no memory, no stack.
        unsafe {
            std::arch::asm!(
                "2:",
                ".rept 100",
                "add {x}, {one}",
                ".endr",
                "dec {n}",
                "jnz 2b",
                x = inout(reg) x,
                n = inout(reg) n,
                one = in(reg) one,
                options(nomem, nostack),
            );
        }
        std::hint::black_box((x, n));
        true
    }
    #[cfg(target_arch = "aarch64")]
    {
        let mut x: u64 = 0;
        let mut n = iters;
        let one: u64 = 1;
        // SAFETY: register-only arithmetic and a loop on `n`; no memory, no stack.
        unsafe {
            std::arch::asm!(
                "2:",
                ".rept 100",
                "add {x}, {x}, {one}",
                ".endr",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                x = inout(reg) x,
                n = inout(reg) n,
                one = in(reg) one,
                options(nomem, nostack),
            );
        }
        std::hint::black_box((x, n));
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Nanoseconds as milliseconds with three significant digits: 0.00123, 0.0456, 7.89, 123.
pub fn ms(ns: f64) -> String {
    let v = ns / 1e6;
    if v <= 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (2 - v.log10().floor() as i32).max(0) as usize;
    format!("{v:.digits$}")
}
