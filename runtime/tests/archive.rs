//! The archive writer: members and symbols as the system binutils see them, byte-identical
//! output, and a C program that links against the archive.

mod common;

use std::process::Command;

use common::{define, isa, Fun};
use cranelift_codegen::ir::types;
use cranelift_object::{ObjectBuilder, ObjectModule};
use kiln_runtime::archive::write_archive;
use kiln_runtime::math::MathOpts;

/// The host triple as Cranelift spells it (tests only run on the supported hosts).
fn host() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "aarch64-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    }
}

/// An object for the host defining `symbol(x, y, out)` that computes `*out = fun(*x, *y)`.
fn object(symbol: &str, fun: Fun) -> Vec<u8> {
    let builder = ObjectBuilder::new(
        isa(host(), &[]),
        symbol,
        cranelift_module::default_libcall_names(),
    )
    .unwrap();
    let mut module = ObjectModule::new(builder);
    define(&mut module, symbol, fun, types::F32, &MathOpts::default());
    module.finish().emit().unwrap()
}

fn members() -> Vec<(String, Vec<u8>)> {
    vec![
        ("exp.o".to_string(), object("kiln_test_exp", Fun::Exp)),
        ("pow.o".to_string(), object("kiln_test_pow", Fun::Pow)),
    ]
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn archive_is_deterministic() {
    let a = write_archive(&members()).unwrap();
    let b = write_archive(&members()).unwrap();
    assert_eq!(a, b);
    assert!(a.starts_with(b"!<arch>\n"));
}

#[test]
fn archive_header_fields_are_fixed() {
    let a = write_archive(&members()).unwrap();
    // Each member header is 60 bytes: name 16, mtime 12, uid 6, gid 6, mode 8, size 10, "`\n".
    // Walk them and check the fields that could leak build-time state.
    let mut pos = 8;
    let mut names = Vec::new();
    while pos + 60 <= a.len() {
        let h = &a[pos..pos + 60];
        let field =
            |r: std::ops::Range<usize>| String::from_utf8_lossy(&h[r]).trim_end().to_string();
        assert_eq!(&h[58..60], b"`\n", "bad member header at {pos}");
        let name = field(0..16);
        if name != "/" && name != "//" {
            assert_eq!(field(16..28), "0", "mtime of {name}");
            assert_eq!(field(28..34), "0", "uid of {name}");
            assert_eq!(field(34..40), "0", "gid of {name}");
            assert_eq!(field(40..48), "644", "mode of {name}");
        }
        names.push(name);
        let size: usize = field(48..58).parse().unwrap();
        pos += 60 + size + (size & 1);
    }
    assert_eq!(pos, a.len());
    // The symbol table comes first, then the members in order.
    assert_eq!(names, vec!["/", "exp.o/", "pow.o/"]);
}

#[test]
fn binutils_see_members_and_symbols() {
    if !have("ar") || !have("nm") {
        eprintln!("no binutils: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libkilntest.a");
    std::fs::write(&lib, write_archive(&members()).unwrap()).unwrap();
    assert_eq!(run(Command::new("ar").arg("t").arg(&lib)), "exp.o\npow.o\n");
    // The archive index (what the linker searches) maps each function to its member.
    let index = run(Command::new("nm").arg("--print-armap").arg(&lib));
    assert!(index.contains("kiln_test_exp in exp.o"), "{index}");
    assert!(index.contains("kiln_test_pow in pow.o"), "{index}");
    // And the library needs nothing from outside.
    assert_eq!(
        run(Command::new("nm").arg("-u").arg(&lib))
            .lines()
            .filter(|l| !l.is_empty() && !l.ends_with(':'))
            .count(),
        0
    );
}

#[test]
fn c_program_links_against_the_archive() {
    if !have("cc") {
        eprintln!("no cc: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("libkilntest.a"),
        write_archive(&members()).unwrap(),
    )
    .unwrap();
    let main = dir.path().join("main.c");
    std::fs::write(
        &main,
        "#include <stdio.h>\n\
         void kiln_test_exp(const float *x, const float *y, float *out);\n\
         void kiln_test_pow(const float *x, const float *y, float *out);\n\
         int main(void) {\n\
           float one = 1.0f, two = 2.0f, ten = 10.0f, e, p;\n\
           kiln_test_exp(&one, &one, &e);\n\
           kiln_test_pow(&two, &ten, &p);\n\
           printf(\"%.6f %.1f\\n\", e, p);\n\
           return 0;\n\
         }\n",
    )
    .unwrap();
    let exe = dir.path().join("main");
    run(Command::new("cc")
        .arg(&main)
        .arg("-L")
        .arg(dir.path())
        .arg("-lkilntest")
        .arg("-o")
        .arg(&exe));
    // e = 2.718282 to six places; 2^10 = 1024.
    assert_eq!(run(&mut Command::new(&exe)), "2.718282 1024.0\n");
}
