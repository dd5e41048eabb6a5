//! Targets: triple + CPU + features, and the Cranelift ISA they configure.
//!
//! Every setting is explicit so that the same model and the same target give the same bytes on any
//! host, and every setting is recorded (in the report and the header). The CPU names follow the
//! x86-64 psABI levels; `generic` on x86_64 means `x86-64-v2` (SSE4.2 + POPCNT), which every x86
//! machine of the last fifteen years has and which gives Cranelift the SSE4.1 rounding and blend
//! instructions it needs to keep `floor`/`ceil` inline. aarch64 has NEON (and so 128-bit vectors and
//! FMA) in its baseline.

use crate::BackendError;
use cranelift_codegen::isa::{self, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use std::str::FromStr;
use target_lexicon::{Architecture, BinaryFormat, OperatingSystem, Triple};

/// A compilation target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Target triple (x86_64 or aarch64 Linux, ELF).
    pub triple: Triple,
    /// CPU level: on x86_64 `x86-64`, `x86-64-v2` (also spelled `generic`), `x86-64-v3`, `x86-64-v4`;
    /// on aarch64 `generic`; on either `native` (the host's features; only when the host has the
    /// target's architecture).
    pub cpu: String,
    /// Feature overrides applied after the CPU level, e.g. `+avx`, `-fma`, `+dotprod`.
    pub features: Vec<String>,
}

/// The CPU level `generic` stands for on x86_64.
pub const X86_DEFAULT_CPU: &str = "x86-64-v2";

const X86_V2: &[&str] = &[
    "has_sse3",
    "has_ssse3",
    "has_cmpxchg16b",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
];
// Cranelift's own presets leave `has_avx` out; it is set explicitly here because AVX encodings are
// what makes the v3 level worth having.
const X86_V3: &[&str] = &[
    "has_avx",
    "has_avx2",
    "has_fma",
    "has_bmi1",
    "has_bmi2",
    "has_lzcnt",
];
const X86_V4: &[&str] = &["has_avx512f", "has_avx512vl", "has_avx512dq"];

impl Target {
    /// The host's triple with the portable CPU level (`x86-64-v2` on x86_64, `generic` on aarch64).
    pub fn host() -> Self {
        let triple = Triple::host();
        let cpu = if triple.architecture == Architecture::X86_64 {
            X86_DEFAULT_CPU
        } else {
            "generic"
        };
        Target {
            triple,
            cpu: cpu.to_string(),
            features: vec![],
        }
    }

    /// Parses and validates a target. `cpu` `generic` is normalized to the architecture's default
    /// level; every feature must be `+name` or `-name` for a feature Cranelift knows on that
    /// architecture (`sse4.1` and `sse41` are the same).
    pub fn parse(triple: &str, cpu: &str, features: &[String]) -> Result<Self, BackendError> {
        let triple = Triple::from_str(triple)
            .map_err(|e| BackendError::Target(format!("bad triple `{triple}`: {e}")))?;
        match triple.architecture {
            Architecture::X86_64 | Architecture::Aarch64(_) => {}
            a => {
                return Err(BackendError::Target(format!(
                    "architecture {a} is not supported (x86_64 and aarch64 are)"
                )))
            }
        }
        if triple.binary_format != BinaryFormat::Elf
            || triple.operating_system != OperatingSystem::Linux
        {
            return Err(BackendError::Target(format!(
                "{triple}: only Linux ELF targets are supported"
            )));
        }
        let x86 = triple.architecture == Architecture::X86_64;
        let cpu = match (x86, cpu) {
            (true, "generic") => X86_DEFAULT_CPU,
            (true, c @ ("x86-64" | "x86-64-v2" | "x86-64-v3" | "x86-64-v4" | "native")) => c,
            (false, c @ ("generic" | "native")) => c,
            (true, c) => {
                return Err(BackendError::Target(format!(
                    "unknown x86_64 cpu `{c}` (expected generic, x86-64, x86-64-v2, x86-64-v3, x86-64-v4 or native)"
                )))
            }
            (false, c) => return Err(BackendError::Target(format!("unknown aarch64 cpu `{c}` (expected generic or native)"))),
        };
        let t = Target {
            triple,
            cpu: cpu.to_string(),
            features: features.to_vec(),
        };
        // Building the ISA validates the features and the `native` request.
        t.isa_flags()?;
        Ok(t)
    }

    /// One line: `x86_64-unknown-linux-gnu, cpu x86-64-v2, features +sse3,...`.
    pub fn describe(&self) -> String {
        match self.isa_flags() {
            Ok(f) => format!(
                "{}, cpu {}, features {}",
                self.triple,
                self.cpu,
                feature_string(&f)
            ),
            Err(_) => format!(
                "{}, cpu {}, features {}",
                self.triple,
                self.cpu,
                self.features.join(",")
            ),
        }
    }

    /// The `has_*` ISA flags to enable and disable, in order: CPU level first, then overrides.
    fn isa_flags(&self) -> Result<Vec<(String, bool)>, BackendError> {
        let x86 = self.triple.architecture == Architecture::X86_64;
        let mut flags: Vec<(String, bool)> = Vec::new();
        let on = |flags: &mut Vec<(String, bool)>, list: &[&str]| {
            flags.extend(list.iter().map(|f| (f.to_string(), true)))
        };
        match self.cpu.as_str() {
            // `generic` is the architecture's default level (also when a Target is built by hand
            // rather than by `parse`): x86-64-v2 on x86_64, the NEON baseline on aarch64.
            "generic" if x86 => on(&mut flags, X86_V2),
            "x86-64" | "generic" => {}
            "x86-64-v2" => on(&mut flags, X86_V2),
            "x86-64-v3" => {
                on(&mut flags, X86_V2);
                on(&mut flags, X86_V3);
            }
            "x86-64-v4" => {
                on(&mut flags, X86_V2);
                on(&mut flags, X86_V3);
                on(&mut flags, X86_V4);
            }
            "native" => flags.extend(native_flags(&self.triple)?),
            c => return Err(BackendError::Target(format!("unknown cpu `{c}`"))),
        }
        if !x86 && self.cpu.starts_with("x86") {
            return Err(BackendError::Target(format!(
                "cpu `{}` is not an aarch64 cpu",
                self.cpu
            )));
        }
        for f in &self.features {
            let (enable, name) = match f.as_bytes().first() {
                Some(b'+') => (true, &f[1..]),
                Some(b'-') => (false, &f[1..]),
                _ => {
                    return Err(BackendError::Target(format!(
                        "feature `{f}` must start with + or -"
                    )))
                }
            };
            flags.push((
                format!("has_{}", name.to_ascii_lowercase().replace(['.', '-'], "")),
                enable,
            ));
        }
        // Check every name against Cranelift's list for this architecture.
        let mut b = isa::lookup(self.triple.clone())
            .map_err(|e| BackendError::Target(format!("{}: {e}", self.triple)))?;
        for (name, enable) in &flags {
            b.set(name, if *enable { "true" } else { "false" })
                .map_err(|_| {
                    BackendError::Target(format!(
                        "unknown feature `{}` for {}",
                        name.trim_start_matches("has_"),
                        self.triple.architecture
                    ))
                })?;
        }
        Ok(flags)
    }

    /// The configured Cranelift ISA and the settings it was built with, for the record.
    pub(crate) fn build_isa(
        &self,
    ) -> Result<(OwnedTargetIsa, Vec<(String, String)>), BackendError> {
        let shared_settings: [(&str, String); 8] = [
            ("opt_level", "speed".into()),
            ("is_pic", "true".into()),
            ("enable_verifier", cfg!(debug_assertions).to_string()),
            ("enable_probestack", "false".into()),
            ("unwind_info", "false".into()),
            ("preserve_frame_pointers", "false".into()),
            ("enable_alias_analysis", "true".into()),
            ("regalloc_algorithm", "backtracking".into()),
        ];
        let mut shared = settings::builder();
        for (k, v) in &shared_settings {
            shared
                .set(k, v)
                .map_err(|e| BackendError::Internal(format!("cranelift setting {k}={v}: {e}")))?;
        }
        let flags = self.isa_flags()?;
        let mut b = isa::lookup(self.triple.clone())
            .map_err(|e| BackendError::Target(format!("{}: {e}", self.triple)))?;
        for (name, enable) in &flags {
            b.set(name, if *enable { "true" } else { "false" })
                .map_err(|e| BackendError::Target(format!("feature {name}: {e}")))?;
        }
        let isa = b.finish(settings::Flags::new(shared)).map_err(|e| {
            BackendError::Target(format!("cannot configure {}: {e}", self.describe()))
        })?;
        let mut rec: Vec<(String, String)> = vec![
            ("target".into(), self.triple.to_string()),
            ("cpu".into(), self.cpu.clone()),
            ("features".into(), feature_string(&flags)),
        ];
        rec.extend(
            shared_settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone())),
        );
        rec.push(("per_function_sections".into(), "true".into()));
        for v in isa.isa_flags() {
            rec.push((v.name.to_string(), v.value_string()));
        }
        Ok((isa, rec))
    }
}

/// `+sse3,+ssse3,-fma`: the net effect of a flag list, in first-mention order.
fn feature_string(flags: &[(String, bool)]) -> String {
    let mut net: Vec<(String, bool)> = Vec::new();
    for (n, e) in flags {
        match net.iter_mut().find(|(m, _)| m == n) {
            Some(x) => x.1 = *e,
            None => net.push((n.clone(), *e)),
        }
    }
    net.iter()
        .map(|(n, e)| {
            let n = n.trim_start_matches("has_");
            let n = match n {
                "sse41" => "sse4.1",
                "sse42" => "sse4.2",
                other => other,
            };
            format!("{}{n}", if *e { '+' } else { '-' })
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The host's features, for `cpu = native`. Only meaningful when the host runs the target's
/// architecture.
fn native_flags(triple: &Triple) -> Result<Vec<(String, bool)>, BackendError> {
    let host = Triple::host();
    if host.architecture != triple.architecture {
        return Err(BackendError::Target(format!(
            "cpu `native` needs a {} host, this one is {}",
            triple.architecture, host.architecture
        )));
    }
    #[allow(unused_mut)]
    let mut v: Vec<(String, bool)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! det {
            ($($f:tt => $n:expr),*) => {
                $( v.push(($n.to_string(), std::arch::is_x86_feature_detected!($f))); )*
            };
        }
        det!("sse3" => "has_sse3", "ssse3" => "has_ssse3", "cmpxchg16b" => "has_cmpxchg16b",
            "sse4.1" => "has_sse41", "sse4.2" => "has_sse42", "popcnt" => "has_popcnt",
            "avx" => "has_avx", "avx2" => "has_avx2", "fma" => "has_fma", "bmi1" => "has_bmi1",
            "bmi2" => "has_bmi2", "lzcnt" => "has_lzcnt", "avx512f" => "has_avx512f",
            "avx512vl" => "has_avx512vl", "avx512dq" => "has_avx512dq");
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! det {
            ($($f:tt => $n:expr),*) => {
                $( v.push(($n.to_string(), std::arch::is_aarch64_feature_detected!($f))); )*
            };
        }
        det!("lse" => "has_lse", "fp16" => "has_fp16", "dotprod" => "has_dotprod", "i8mm" => "has_i8mm");
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_x86_is_v2() {
        let t = Target::parse("x86_64-unknown-linux-gnu", "generic", &[]).unwrap();
        assert_eq!(t.cpu, "x86-64-v2");
        let d = t.describe();
        assert!(
            d.contains("+sse4.1") && d.contains("+popcnt") && !d.contains("avx"),
            "{d}"
        );
    }

    #[test]
    fn v3_sets_avx_and_features_override() {
        let t = Target::parse("x86_64-unknown-linux-gnu", "x86-64-v3", &["-fma".into()]).unwrap();
        let (isa, rec) = t.build_isa().unwrap();
        let get = |n: &str| {
            isa.isa_flags()
                .into_iter()
                .find(|v| v.name == n)
                .and_then(|v| v.as_bool())
        };
        assert_eq!(get("has_avx"), Some(true));
        assert_eq!(get("has_avx2"), Some(true));
        assert_eq!(get("has_fma"), Some(false));
        assert!(rec.iter().any(|(k, v)| k == "opt_level" && v == "speed"));
        assert!(rec.iter().any(|(k, v)| k == "is_pic" && v == "true"));
    }

    #[test]
    fn aarch64_features() {
        let t =
            Target::parse("aarch64-unknown-linux-gnu", "generic", &["+dotprod".into()]).unwrap();
        assert!(t.describe().contains("+dotprod"));
        assert!(Target::parse("aarch64-unknown-linux-gnu", "x86-64-v3", &[]).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Target::parse("riscv64gc-unknown-linux-gnu", "generic", &[]).is_err());
        assert!(Target::parse("x86_64-apple-darwin", "generic", &[]).is_err());
        assert!(Target::parse("x86_64-unknown-linux-gnu", "pentium", &[]).is_err());
        assert!(Target::parse("x86_64-unknown-linux-gnu", "generic", &["avx".into()]).is_err());
        assert!(Target::parse(
            "x86_64-unknown-linux-gnu",
            "generic",
            &["+frobnicate".into()]
        )
        .is_err());
    }
}
