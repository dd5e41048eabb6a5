//! The math emitters must never turn into calls: an object built from all of them, for every
//! supported target configuration, has no undefined symbols (what `nm -u` would print).

mod common;

use common::{define, isa, ALL, TYPES};
use cranelift_object::{ObjectBuilder, ObjectModule};
use kiln_runtime::math::MathOpts;
use object::{Object, ObjectSymbol};

/// Builds every emitter, scalar and vector, into one object; returns the undefined symbols.
fn undefined_symbols(triple: &str, isa_flags: &[&str], opts: &MathOpts) -> Vec<String> {
    let builder = ObjectBuilder::new(
        isa(triple, isa_flags),
        "math",
        cranelift_module::default_libcall_names(),
    )
    .unwrap();
    let mut module = ObjectModule::new(builder);
    for f in ALL {
        for ty in TYPES {
            define(
                &mut module,
                &format!("kiln_{}_{}", f.name(), ty),
                f,
                ty,
                opts,
            );
        }
    }
    let bytes = module.finish().emit().unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let defined: Vec<String> = file
        .symbols()
        .filter(|s| s.is_definition())
        .map(|s| s.name().unwrap().to_string())
        .collect();
    // Sanity: the functions are really in there.
    assert!(defined.iter().any(|n| n == "kiln_pow_f32x4"), "{defined:?}");
    file.symbols()
        .filter(|s| s.is_undefined() && !s.name().unwrap_or("").is_empty())
        .map(|s| s.name().unwrap().to_string())
        .collect()
}

#[test]
fn x86_64_baseline_needs_nothing() {
    let u = undefined_symbols("x86_64-unknown-linux-gnu", &[], &MathOpts::default());
    assert!(u.is_empty(), "undefined: {u:?}");
}

#[test]
fn x86_64_sse41_needs_nothing() {
    let u = undefined_symbols(
        "x86_64-unknown-linux-gnu",
        &["has_sse41"],
        &MathOpts::default(),
    );
    assert!(u.is_empty(), "undefined: {u:?}");
}

#[test]
fn x86_64_with_fma_needs_nothing() {
    let flags = [
        "has_sse3",
        "has_ssse3",
        "has_sse41",
        "has_sse42",
        "has_avx",
        "has_fma",
    ];
    let u = undefined_symbols("x86_64-unknown-linux-gnu", &flags, &MathOpts { fma: true });
    assert!(u.is_empty(), "undefined: {u:?}");
}

#[test]
fn aarch64_needs_nothing() {
    for opts in [MathOpts::default(), MathOpts { fma: true }] {
        let u = undefined_symbols("aarch64-unknown-linux-gnu", &[], &opts);
        assert!(u.is_empty(), "undefined with {opts:?}: {u:?}");
    }
}

/// The check above can fail: asking for FMA on an x86 without it produces a call to `fmaf`,
/// which is exactly why `MathOpts::fma` defaults to false.
#[test]
fn fma_without_the_feature_is_caught() {
    let u = undefined_symbols(
        "x86_64-unknown-linux-gnu",
        &["has_sse41"],
        &MathOpts { fma: true },
    );
    assert!(
        u.iter().any(|s| s == "fmaf"),
        "expected a call to fmaf, got {u:?}"
    );
}
