//! The C header: a snapshot of a typical header, identifier mangling, and compiling awkward
//! headers with the system C and C++ compilers.

use std::process::Command;

use kiln_ir::DType;
use kiln_runtime::header::{
    c_header, c_identifier, unique_identifiers, ExternalWeights, HeaderSpec, IoSpec,
};

fn io(c_name: &str, onnx_name: &str, dtype: DType, dims: &[usize]) -> IoSpec {
    IoSpec {
        c_name: c_name.into(),
        onnx_name: onnx_name.into(),
        dtype,
        dims: dims.to_vec(),
    }
}

fn resnet() -> HeaderSpec {
    HeaderSpec {
        name: "resnet".into(),
        arena_size: 1_605_632,
        inputs: vec![io("data", "data", DType::F32, &[1, 3, 224, 224])],
        outputs: vec![io(
            "resnetv17_dense0_fwd",
            "resnetv17_dense0_fwd",
            DType::F32,
            &[1, 1000],
        )],
        target: "x86_64-unknown-linux-gnu".into(),
        cpu: "generic".into(),
        features: "+sse4.1".into(),
        external_weights: None,
        kiln_version: "0.1.0".into(),
        model_file: "resnet18-v1-7.onnx".into(),
        weight_bytes: 46_827_520,
    }
}

/// Inputs named the way exporters really name them, plus every kind of collision.
fn awkward(external: bool) -> HeaderSpec {
    let onnx = [
        "input.1",
        "1x",
        "int",
        "input_1",
        "ARENA",
        "x/y:0",
        "class",
        "INT8_MAX",
        "",
        "w\u{e9}ight */ ??/",
    ];
    let outs = ["output", "1x", "mnist_OK", "mnist_out_SIZE", "out"];
    let all: Vec<&str> = onnx.iter().chain(&outs).copied().collect();
    let names = unique_identifiers(&all);
    let dtypes = [
        DType::F32,
        DType::I64,
        DType::Bool,
        DType::F16,
        DType::BF16,
        DType::U8,
        DType::I4,
        DType::F64,
        DType::I8,
        DType::U16,
    ];
    let inputs = onnx
        .iter()
        .enumerate()
        .map(|(i, n)| io(&names[i], n, dtypes[i % dtypes.len()], &[1, i + 1, 3]))
        .collect();
    let outputs = outs
        .iter()
        .enumerate()
        .map(|(i, n)| {
            io(
                &names[onnx.len() + i],
                n,
                dtypes[(i + 3) % dtypes.len()],
                if i == 1 { &[] } else { &[2, 2] },
            )
        })
        .collect();
    HeaderSpec {
        name: "mnist".into(),
        arena_size: 0,
        inputs,
        outputs,
        target: "aarch64-unknown-linux-gnu".into(),
        cpu: "generic".into(),
        features: String::new(),
        external_weights: external.then(|| ExternalWeights {
            file: "mnist.weights.bin".into(),
            size: 1234,
        }),
        kiln_version: "0.1.0".into(),
        model_file: "weird */ name.onnx".into(),
        weight_bytes: 1234,
    }
}

#[test]
fn identifiers_are_mangled_as_documented() {
    assert_eq!(c_identifier("input.1"), "input_1");
    assert_eq!(c_identifier("1x"), "_1x");
    assert_eq!(c_identifier("int"), "int_");
    assert_eq!(c_identifier("class"), "class_");
    assert_eq!(c_identifier("INT8_MAX"), "INT8_MAX_");
    assert_eq!(c_identifier("UINT_LEAST16_MIN"), "UINT_LEAST16_MIN_");
    assert_eq!(c_identifier("INTEGER_MAX"), "INTEGER_MAX");
    assert_eq!(c_identifier(""), "_");
    assert_eq!(c_identifier("a b/c:0"), "a_b_c_0");
    assert_eq!(c_identifier("\u{e9}t\u{e9}"), "_t_");
    assert_eq!(c_identifier("already_fine_9"), "already_fine_9");
}

#[test]
fn identifiers_are_made_unique() {
    assert_eq!(
        unique_identifiers(&["input.1", "input_1", "input:1"]),
        vec!["input_1", "input_1_2", "input_1_3"]
    );
    // A suffixed name never steals a name that appears later.
    assert_eq!(
        unique_identifiers(&["a", "a", "a_2"]),
        vec!["a", "a_3", "a_2"]
    );
    // ARENA and WEIGHTS would clash with NAME_ARENA_SIZE / NAME_WEIGHTS_SIZE.
    assert_eq!(
        unique_identifiers(&["ARENA", "WEIGHTS", "arena"]),
        vec!["ARENA_2", "WEIGHTS_2", "arena"]
    );
}

#[test]
fn header_snapshot() {
    insta::assert_snapshot!("resnet_h", c_header(&resnet()));
}

#[test]
fn header_snapshot_external_weights() {
    let mut spec = resnet();
    spec.external_weights = Some(ExternalWeights {
        file: "resnet.weights.bin".into(),
        size: 46_827_520,
    });
    insta::assert_snapshot!("resnet_external_h", c_header(&spec));
}

#[test]
fn header_is_deterministic() {
    assert_eq!(c_header(&awkward(true)), c_header(&awkward(true)));
}

#[test]
fn header_macros_match_the_spec() {
    let h = c_header(&resnet());
    for line in [
        "#define resnet_ARENA_SIZE 1605632",
        "#define resnet_ARENA_ALIGN 64",
        "#define resnet_OK 0",
        "#define resnet_ERR_NULL_ARG 1",
        "#define resnet_ERR_ARENA_ALIGN 2",
        "#define resnet_ERR_WEIGHTS 3",
        "#define resnet_data_RANK 4",
        "#define resnet_data_SIZE 150528",
        "#define resnet_data_DIM1 3",
        "#define resnet_resnetv17_dense0_fwd_SIZE 1000",
        "int resnet_run(const resnet_inputs *in, resnet_outputs *out, void *arena);",
    ] {
        assert!(
            h.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in\n{h}"
        );
    }
    assert!(h.contains("    const float *data; /* ONNX \"data\": f32[1,3,224,224] */"));
}

#[test]
fn header_with_zero_arena_still_asks_for_memory() {
    assert!(c_header(&awkward(false)).contains("#define mnist_ARENA_SIZE 64\n"));
}

#[test]
fn awkward_field_names_are_repaired_in_the_header() {
    let h = c_header(&awkward(false));
    // The output called "mnist_OK" would be expanded by the macro of the same name.
    assert!(!h.contains("*mnist_OK;"), "{h}");
    assert!(h.contains("*mnist_OK_2;"), "{h}");
    // "mnist_out_SIZE" collides with the SIZE macro of the output "out" and is renamed.
    assert!(!h.contains("*mnist_out_SIZE;"), "{h}");
    // Comments cannot be closed early by a name.
    assert!(!h.contains("weird */"), "{h}");
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Compiles `NAME.h` plus a translation unit that uses its macros and types.
fn compile(compiler: &str, std: &str, spec: &HeaderSpec, lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let n = &spec.name;
    std::fs::write(dir.path().join(format!("{n}.h")), c_header(spec)).unwrap();
    // Including twice checks the guard; the arrays check the macros are integer constants.
    let first = &spec.outputs[0].c_name;
    let src = format!(
        "#include \"{n}.h\"\n#include \"{n}.h\"\n\
         static unsigned char arena_bytes[{n}_ARENA_SIZE];\n\
         static int check_size[{n}_{first}_SIZE > 0 ? 1 : -1];\n\
         int call(const {n}_inputs *in, {n}_outputs *out);\n\
         int call(const {n}_inputs *in, {n}_outputs *out) {{ (void)in; (void)out; (void)check_size; (void)arena_bytes; return {n}_OK + {n}_ERR_ARENA_ALIGN * 0; }}\n"
    );
    let file = dir.path().join(format!("use.{lang}"));
    std::fs::write(&file, src).unwrap();
    let out = Command::new(compiler)
        .args([
            std,
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{compiler} {std} rejected the header:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c_header(spec)
    );
}

#[test]
fn awkward_header_compiles_as_c() {
    if !have("cc") {
        eprintln!("no cc: skipped");
        return;
    }
    for external in [false, true] {
        for std in ["-std=c99", "-std=c11", "-std=gnu99"] {
            compile("cc", std, &awkward(external), "c");
        }
    }
    compile("cc", "-std=c99", &resnet(), "c");
    let mut no_inputs = resnet();
    no_inputs.inputs.clear();
    compile("cc", "-std=c99", &no_inputs, "c");
}

#[test]
fn awkward_header_compiles_as_cpp() {
    if !have("c++") {
        eprintln!("no c++: skipped");
        return;
    }
    for external in [false, true] {
        compile("c++", "-std=c++11", &awkward(external), "cpp");
    }
}

/// Two kiln headers in one translation unit: the shared parallel API is declared once, and a
/// parallel_for written against it serves both models' `NAME_run_parallel`.
fn two_headers(compiler: &str, std: &str, lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let a = resnet();
    let mut b = awkward(true);
    b.name = "other".into();
    for s in [&a, &b] {
        std::fs::write(dir.path().join(format!("{}.h", s.name)), c_header(s)).unwrap();
    }
    let src = "#include \"resnet.h\"\n#include \"other.h\"\n\
        static void pf(void *user, uint32_t count, kiln_task_fn task, void *ctx) {\n\
            uint32_t i; (void)user; for (i = 0; i < count; i++) task(ctx, i);\n\
        }\n\
        int both(const resnet_inputs *ri, resnet_outputs *ro, const other_inputs *oi, other_outputs *oo, void *arena, const void *w);\n\
        int both(const resnet_inputs *ri, resnet_outputs *ro, const other_inputs *oi, other_outputs *oo, void *arena, const void *w) {\n\
            kiln_parallel par = { pf, 0, 2 };\n\
            int rc = resnet_run_parallel(ri, ro, arena, &par);\n\
            if (rc != resnet_OK) return rc;\n\
            return other_run_parallel(oi, oo, arena, w, &par) + other_ERR_PARALLEL * 0;\n\
        }\n";
    let file = dir.path().join(format!("use.{lang}"));
    std::fs::write(&file, src).unwrap();
    let out = Command::new(compiler)
        .args([
            std,
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{compiler} {std} rejected two headers together:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_headers_share_the_parallel_api() {
    if have("cc") {
        two_headers("cc", "-std=c99", "c");
        two_headers("cc", "-std=c11", "c");
    }
    if have("c++") {
        two_headers("c++", "-std=c++11", "cpp");
    }
}

#[test]
fn fields_named_like_the_parallel_api_are_renamed() {
    let mut spec = resnet();
    spec.inputs = vec![
        io("kiln_parallel", "kiln_parallel", DType::F32, &[2]),
        io(
            "KILN_PARALLEL_API_V1",
            "KILN_PARALLEL_API_V1",
            DType::F32,
            &[2],
        ),
    ];
    let h = c_header(&spec);
    assert!(h.contains("const float *kiln_parallel_2;"), "{h}");
    assert!(h.contains("const float *KILN_PARALLEL_API_V1_2;"), "{h}");
    if have("cc") {
        compile("cc", "-std=c99", &spec, "c");
    }
}
