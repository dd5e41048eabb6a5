//! The C header (`NAME.h`) that comes with every generated library.
//!
//! The C API is fixed; later versions may add to it, never change it:
//!
//! ```c
//! typedef struct { const float *x; } NAME_inputs;   /* one pointer per graph input, in order  */
//! typedef struct { float *y; } NAME_outputs;        /* one pointer per graph output, in order */
//! int NAME_run(const NAME_inputs *in, NAME_outputs *out, void *arena);
//! int NAME_run(const NAME_inputs *in, NAME_outputs *out, void *arena, const void *weights); /* external weights */
//!
//! /* Threads under the caller's control (declared once, however many kiln headers are included). */
//! typedef void (*kiln_task_fn)(void *task_ctx, uint32_t index);
//! typedef void (*kiln_parallel_for_fn)(void *user, uint32_t count, kiln_task_fn task, void *task_ctx);
//! typedef struct kiln_parallel { kiln_parallel_for_fn parallel_for; void *user; uint32_t tasks; } kiln_parallel;
//! int NAME_run_parallel(const NAME_inputs *in, NAME_outputs *out, void *arena, [const void *weights,]
//!                       const kiln_parallel *par);
//! ```
//!
//! The library never creates a thread. `NAME_run_parallel` splits each heavy kernel into
//! `par->tasks` parts and hands them to `par->parallel_for`, which must call `task(task_ctx, i)`
//! once for every `i` in `[0, count)`, on any threads, and return when all have returned. With
//! `par == NULL` or `tasks <= 1` it is `NAME_run`. Parts write disjoint outputs with the same
//! instructions as a serial run, so the results are bitwise identical to `NAME_run`'s.
//!
//! The structs are arrays of pointers in disguise: field `i` of `NAME_inputs` is at byte offset
//! `i * sizeof(void *)`, which is all the generated code relies on. Field names only serve the C
//! programmer, so the header is free to rename a field (see [`c_header`]) without touching the ABI.
//!
//! Everything the header prints is a pure function of the [`HeaderSpec`]: no timestamps, no paths
//! beyond what the spec says, so the same model and flags give a byte-identical header.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use kiln_ir::DType;

/// One graph input or output as the header shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoSpec {
    /// Field name in the `NAME_inputs` / `NAME_outputs` struct (see [`unique_identifiers`]).
    pub c_name: String,
    /// The ONNX value name, shown in comments.
    pub onnx_name: String,
    /// Element type.
    pub dtype: DType,
    /// Concrete shape, outermost first (empty for a scalar).
    pub dims: Vec<usize>,
}

/// Weights kept out of the library, in a file the caller loads and passes to `NAME_run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalWeights {
    /// File name (usually `NAME.weights.bin`).
    pub file: String,
    /// Its size in bytes.
    pub size: usize,
}

/// Everything [`c_header`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderSpec {
    /// The C prefix `NAME` (must be a C identifier: pass it through [`c_identifier`]).
    pub name: String,
    /// Arena size in bytes from the memory plan.
    pub arena_size: usize,
    /// Graph inputs, in `NAME_inputs` order.
    pub inputs: Vec<IoSpec>,
    /// Graph outputs, in `NAME_outputs` order.
    pub outputs: Vec<IoSpec>,
    /// Target triple, e.g. `x86_64-unknown-linux-gnu`.
    pub target: String,
    /// CPU name the code was tuned for, e.g. `generic`.
    pub cpu: String,
    /// Target features the code assumes, e.g. `+sse4.1,+avx2`.
    pub features: String,
    /// Set when the weights live in a separate file.
    pub external_weights: Option<ExternalWeights>,
    /// kiln's version, e.g. `0.1.0`.
    pub kiln_version: String,
    /// The model file the library was compiled from (file name only, for the comment).
    pub model_file: String,
    /// Total bytes of weights (embedded or external), for the comment.
    pub weight_bytes: usize,
}

/// Words that cannot name a struct field or a macro in a header that must compile as C89..C23 and
/// as C++: keywords of both languages, plus the object-like macros `<stdint.h>` defines and the
/// names GNU C predefines as macros (`linux`, `unix`, ...), which would expand inside the struct.
const RESERVED: &[&str] = &[
    // C
    "auto",
    "break",
    "case",
    "char",
    "const",
    "continue",
    "default",
    "do",
    "double",
    "else",
    "enum",
    "extern",
    "float",
    "for",
    "goto",
    "if",
    "inline",
    "int",
    "long",
    "register",
    "restrict",
    "return",
    "short",
    "signed",
    "sizeof",
    "static",
    "struct",
    "switch",
    "typedef",
    "union",
    "unsigned",
    "void",
    "volatile",
    "while",
    "_Bool",
    "_Complex",
    "_Imaginary",
    "_Alignas",
    "_Alignof",
    "_Atomic",
    "_Generic",
    "_Noreturn",
    "_Static_assert",
    "_Thread_local",
    "_BitInt",
    "_Decimal32",
    "_Decimal64",
    "_Decimal128",
    // C23 and C++
    "alignas",
    "alignof",
    "bool",
    "constexpr",
    "false",
    "nullptr",
    "static_assert",
    "thread_local",
    "true",
    "typeof",
    "typeof_unqual",
    "asm",
    "catch",
    "class",
    "const_cast",
    "delete",
    "dynamic_cast",
    "explicit",
    "export",
    "friend",
    "mutable",
    "namespace",
    "new",
    "noexcept",
    "operator",
    "private",
    "protected",
    "public",
    "reinterpret_cast",
    "static_cast",
    "template",
    "this",
    "throw",
    "try",
    "typeid",
    "typename",
    "using",
    "virtual",
    "wchar_t",
    "char8_t",
    "char16_t",
    "char32_t",
    "concept",
    "consteval",
    "constinit",
    "co_await",
    "co_return",
    "co_yield",
    "decltype",
    "requires",
    "and",
    "and_eq",
    "bitand",
    "bitor",
    "compl",
    "not",
    "not_eq",
    "or",
    "or_eq",
    "xor",
    "xor_eq",
    // predefined or standard object-like macros
    "linux",
    "unix",
    "i386",
    "NULL",
    "EOF",
    "errno",
    "stdin",
    "stdout",
    "stderr",
    "SIZE_MAX",
    "PTRDIFF_MIN",
    "PTRDIFF_MAX",
    "SIG_ATOMIC_MIN",
    "SIG_ATOMIC_MAX",
    "WCHAR_MIN",
    "WCHAR_MAX",
    "WINT_MIN",
    "WINT_MAX",
];

/// `<stdint.h>` limit macros (`INT8_MAX`, `UINT_LEAST16_MAX`, `INTPTR_MIN`, ...).
fn is_stdint_limit(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("UINT").or_else(|| s.strip_prefix("INT")) else {
        return false;
    };
    let rest = rest
        .strip_prefix("_LEAST")
        .or_else(|| rest.strip_prefix("_FAST"))
        .unwrap_or(rest);
    let Some((width, suffix)) = rest.split_once('_') else {
        return false;
    };
    matches!(width, "8" | "16" | "32" | "64" | "PTR" | "MAX") && matches!(suffix, "MAX" | "MIN")
}

/// Makes any string a valid C (and C++) identifier: every character outside `[A-Za-z0-9_]` becomes
/// `_`, a leading digit gets a `_` prefix, a keyword or reserved macro name (see the source) gets a
/// `_` suffix, and the empty string becomes `_`. Identity on names that already qualify.
pub fn c_identifier(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        return "_".to_string();
    }
    if out.as_bytes()[0].is_ascii_digit() {
        out.insert(0, '_');
    }
    if RESERVED.contains(&out.as_str()) || is_stdint_limit(&out) {
        out.push('_');
    }
    out
}

/// The guard of the parallel-API declarations every kiln header shares: whichever header comes
/// first declares them, the others skip them.
const PARALLEL_GUARD: &str = "KILN_PARALLEL_API_V1";

/// Names every kiln header declares without the `NAME_` prefix (the parallel API).
const SHARED_NAMES: &[&str] = &[
    PARALLEL_GUARD,
    "kiln_task_fn",
    "kiln_parallel_for_fn",
    "kiln_parallel",
];

/// Field names the header itself uses as `NAME_<word>_SIZE`, so no field may be called that.
const HEADER_WORDS: &[&str] = &["ARENA", "WEIGHTS"];

/// [`c_identifier`] of each name, made unique: the first holder of a name keeps it, later ones get
/// `_2`, `_3`, ... (skipping any name already taken). Also avoids `ARENA` and `WEIGHTS`, whose
/// `_SIZE` macros the header defines. Pass inputs and outputs together: their macros share one
/// namespace.
pub fn unique_identifiers(names: &[&str]) -> Vec<String> {
    let base: Vec<String> = names.iter().map(|n| c_identifier(n)).collect();
    dedupe(&base, HEADER_WORDS.iter().map(|s| s.to_string()).collect())
}

/// First occurrence keeps its name unless it is in `reserved`; everything else gets the lowest
/// free `_k` suffix. Names that will be kept are claimed up front so a suffixed name never steals
/// a later name (`[a, a, a_2]` -> `[a, a_3, a_2]`).
fn dedupe(base: &[String], reserved: BTreeSet<String>) -> Vec<String> {
    let mut taken = reserved.clone();
    let mut keeps = vec![false; base.len()];
    for (i, b) in base.iter().enumerate() {
        if !taken.contains(b) {
            taken.insert(b.clone());
            keeps[i] = true;
        }
    }
    base.iter()
        .zip(keeps)
        .map(|(b, keep)| {
            if keep {
                return b.clone();
            }
            let mut k = 2;
            loop {
                let cand = format!("{b}_{k}");
                if taken.insert(cand.clone()) {
                    return cand;
                }
                k += 1;
            }
        })
        .collect()
}

/// The C spelling of a pointer to `dtype` elements, and a note for types C has no name for.
fn c_type(dtype: DType) -> (&'static str, Option<&'static str>) {
    match dtype {
        DType::F32 => ("float", None),
        DType::F64 => ("double", None),
        DType::F16 => ("uint16_t", Some("IEEE binary16 bit patterns")),
        DType::BF16 => ("uint16_t", Some("bfloat16 bit patterns")),
        DType::I64 => ("int64_t", None),
        DType::I32 => ("int32_t", None),
        DType::I16 => ("int16_t", None),
        DType::I8 => ("int8_t", None),
        DType::U64 => ("uint64_t", None),
        DType::U32 => ("uint32_t", None),
        DType::U16 => ("uint16_t", None),
        DType::U8 => ("uint8_t", None),
        DType::Bool => ("uint8_t", Some("bool, one byte each, 0 or 1")),
        DType::I4 => ("uint8_t", Some("int4, two per byte, low nibble first")),
        DType::U4 => ("uint8_t", Some("uint4, two per byte, low nibble first")),
    }
}

/// Text safe inside a `/* ... */` comment on one line: printable ASCII only (other characters
/// become `\u{..}`), and no `*/` or `??` (trigraphs under `-std=c99`).
fn comment_text(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            ' '..='~' => {
                if (c == '/' && out.ends_with('*')) || (c == '?' && out.ends_with('?')) {
                    out.push(' ');
                }
                out.push(c);
            }
            _ => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    out
}

/// `f32[1,3,224,224]`.
fn type_text(io: &IoSpec) -> String {
    let dims: Vec<String> = io.dims.iter().map(|d| d.to_string()).collect();
    format!("{}[{}]", io.dtype.name(), dims.join(","))
}

/// The header's field names: the spec's `c_name`s, repaired if they are not valid, not unique, or
/// would collide with a macro or type the header defines (a field called `NAME_OK` would be
/// macro-expanded). Renaming a field does not change the ABI, only what the C programmer types.
fn field_names(spec: &HeaderSpec) -> Vec<String> {
    let name = &spec.name;
    let ios: Vec<&IoSpec> = spec.inputs.iter().chain(&spec.outputs).collect();
    let base: Vec<String> = ios.iter().map(|io| c_identifier(&io.c_name)).collect();
    let mut reserved: BTreeSet<String> = HEADER_WORDS.iter().map(|s| s.to_string()).collect();
    for w in [
        "inputs",
        "outputs",
        "run",
        "OK",
        "ERR_NULL_ARG",
        "ERR_ARENA_ALIGN",
        "ERR_WEIGHTS",
        "ARENA_SIZE",
        "ARENA_ALIGN",
        "WEIGHTS_SIZE",
        "WEIGHTS_ALIGN",
        "NUM_INPUTS",
        "NUM_OUTPUTS",
        "run_parallel",
        "ERR_PARALLEL",
    ] {
        reserved.insert(format!("{name}_{w}"));
    }
    // The shared parallel-API names: a field spelled like the guard macro would be expanded away.
    reserved.extend(SHARED_NAMES.iter().map(|s| s.to_string()));
    let mut fields = dedupe(&base, reserved.clone());
    // Per-field macros are `NAME_<field>_<SUFFIX>`; a field spelled like one of them must move.
    // Renaming changes that field's own macros, so repeat until nothing collides (in practice
    // once; the bound only guards against a pathological input looping).
    for _ in 0..8 {
        let macros: BTreeSet<String> = ios
            .iter()
            .zip(&fields)
            .flat_map(|(io, f)| field_macros(name, f, io.dims.len()))
            .collect();
        if !fields.iter().any(|f| macros.contains(f)) {
            break;
        }
        let mut r = reserved.clone();
        r.extend(macros);
        fields = dedupe(&fields, r);
    }
    fields
}

fn field_macros(name: &str, field: &str, rank: usize) -> Vec<String> {
    let mut v: Vec<String> = ["RANK", "SIZE", "BYTES"]
        .iter()
        .map(|s| format!("{name}_{field}_{s}"))
        .collect();
    v.extend((0..rank).map(|k| format!("{name}_{field}_DIM{k}")));
    v
}

/// The complete `NAME.h`. `spec.name` is used verbatim as the prefix (the caller validates it
/// with [`c_identifier`]); field names are the `c_name`s unless they need repair (see the module
/// docs). `NAME_ARENA_SIZE` is never below 64 so that allocating it never asks for 0 bytes.
pub fn c_header(spec: &HeaderSpec) -> String {
    let n = &spec.name;
    let fields = field_names(spec);
    let (in_fields, out_fields) = fields.split_at(spec.inputs.len());
    let arena = spec.arena_size.max(64).div_ceil(64) * 64;
    let guard = format!("KILN_{}_H", n.to_ascii_uppercase());
    let mut h = String::new();
    let w = &mut h;

    macro_rules! line {
        ($($t:tt)*) => {{ let _ = writeln!(w, $($t)*); }};
    }

    line!("/* {n}.h: C interface of a model compiled by kiln. Generated file: do not edit.");
    line!(" *");
    line!(" *   model:    {}", comment_text(&spec.model_file));
    line!(" *   target:   {}", comment_text(&spec.target));
    line!(
        " *   cpu:      {} (features: {})",
        comment_text(&spec.cpu),
        if spec.features.is_empty() {
            "none".to_string()
        } else {
            comment_text(&spec.features)
        }
    );
    match &spec.external_weights {
        None => line!(
            " *   weights:  {} bytes, embedded in the library",
            spec.weight_bytes
        ),
        Some(x) => line!(
            " *   weights:  {} bytes, in the file {} (external)",
            x.size,
            comment_text(&x.file)
        ),
    }
    line!(" *   kiln:     {}", comment_text(&spec.kiln_version));
    line!(" *");
    line!(" * How to call:");
    line!(" *");
    line!(" *   #include <stdlib.h>");
    line!(" *   #include \"{n}.h\"");
    line!(" *");
    line!(" *   void *arena = aligned_alloc({n}_ARENA_ALIGN, {n}_ARENA_SIZE);  (C11; or posix_memalign)");
    if let Some(x) = &spec.external_weights {
        line!(
            " *   const void *weights = ...;  the bytes of {}, at a {n}_WEIGHTS_ALIGN-aligned",
            comment_text(&x.file)
        );
        line!(" *                               address (aligned_alloc + fread, or mmap)");
    }
    line!(" *   {n}_inputs in = {{ ... }};    one pointer per input, in the order below");
    line!(" *   {n}_outputs out = {{ ... }};  one pointer per output, to caller-allocated memory");
    if spec.external_weights.is_some() {
        line!(" *   int rc = {n}_run(&in, &out, arena, weights);");
    } else {
        line!(" *   int rc = {n}_run(&in, &out, arena);");
    }
    line!(" *   if (rc != {n}_OK) ...  see the error codes below");
    line!(" *");
    line!(" * Threads: the library never creates one. To spread a run over your own threads or thread");
    line!(" * pool, call {n}_run_parallel with a kiln_parallel: it splits each heavy kernel into `tasks`");
    line!(" * parts and calls your parallel_for(user, count, task, task_ctx), which must call");
    line!(" * task(task_ctx, i) once for each i in [0, count), possibly concurrently, and return when all");
    line!(" * are done. With par == NULL or tasks <= 1 it runs serially, like {n}_run. The results are");
    line!(
        " * bitwise identical to {n}_run's whatever the split. A minimal pthread version (a real"
    );
    line!(" * program keeps its threads in a pool; examples/c/kiln_pool.h in the kiln repository has one):");
    line!(" *");
    line!(" *   #include <pthread.h>");
    line!(" *   typedef struct {{ kiln_task_fn task; void *ctx; uint32_t i; }} job;");
    line!(" *   static void *one(void *p) {{ job *j = p; j->task(j->ctx, j->i); return NULL; }}");
    line!(" *   static void my_parallel_for(void *user, uint32_t count, kiln_task_fn task, void *ctx) {{");
    line!(" *       pthread_t th[64]; job jobs[64]; uint32_t i;  here count = tasks <= 64");
    line!(" *       (void)user;");
    line!(" *       for (i = 1; i < count; i++) {{");
    line!(" *           jobs[i].task = task; jobs[i].ctx = ctx; jobs[i].i = i;");
    line!(" *           pthread_create(&th[i], NULL, one, &jobs[i]);");
    line!(" *       }}");
    line!(" *       task(ctx, 0);  the calling thread does part 0");
    line!(" *       for (i = 1; i < count; i++) pthread_join(th[i], NULL);");
    line!(" *   }}");
    line!(" *   kiln_parallel par = {{ my_parallel_for, NULL, 4 }};  4 parts per kernel");
    if spec.external_weights.is_some() {
        line!(" *   int rc = {n}_run_parallel(&in, &out, arena, weights, &par);");
    } else {
        line!(" *   int rc = {n}_run_parallel(&in, &out, arena, &par);");
    }
    line!(" *");
    line!(" * - Tensors are dense, row-major, in ONNX layout (the last dimension is contiguous), with the");
    line!(" *   element types of the struct fields. Outputs must not alias inputs, each other or the arena.");
    line!(" * - The arena is scratch memory: {n}_ARENA_SIZE bytes aligned to {n}_ARENA_ALIGN. It need not");
    line!(" *   be initialized and holds nothing useful after the call; reuse it freely between runs.");
    line!(
        " * - {n}_run is reentrant: the library has no global mutable state, so runs with distinct"
    );
    line!(" *   arenas and outputs may proceed concurrently on different threads.");
    line!(" *   {n}_run_parallel is reentrant too, given a parallel_for that is.");
    line!(" * - The library allocates nothing and calls nothing, not even libc.");
    line!(" * - The return value is {n}_OK or one of the error codes below. Arguments are checked");
    line!(" *   before any work starts, so on error nothing has been written.");
    line!(" */");
    line!("#ifndef {guard}");
    line!("#define {guard}");
    line!();
    line!("#include <stdint.h>");
    line!();
    line!("#ifdef __cplusplus");
    line!("extern \"C\" {{");
    line!("#endif");
    line!();
    line!("/* Scratch memory for one run. */");
    line!("#define {n}_ARENA_SIZE {arena}");
    line!("#define {n}_ARENA_ALIGN 64");
    line!();
    line!("/* Threads under the caller's control, shared by every kiln header (see the top of this file).");
    line!(" * parallel_for must call task(task_ctx, i) once for each i in [0, count), possibly");
    line!(" * concurrently, and return when all calls have returned. `tasks` is how many parts each heavy");
    line!(" * kernel is split into (count == tasks), usually the number of threads. */");
    line!("#ifndef {PARALLEL_GUARD}");
    line!("#define {PARALLEL_GUARD}");
    line!("typedef void (*kiln_task_fn)(void *task_ctx, uint32_t index);");
    line!("typedef void (*kiln_parallel_for_fn)(void *user, uint32_t count, kiln_task_fn task, void *task_ctx);");
    line!("typedef struct kiln_parallel {{");
    line!("    kiln_parallel_for_fn parallel_for; /* may be NULL when tasks <= 1 */");
    line!("    void *user;                        /* passed to parallel_for as is */");
    line!("    uint32_t tasks;                    /* parts per heavy kernel */");
    line!("}} kiln_parallel;");
    line!("#endif");
    if let Some(x) = &spec.external_weights {
        line!();
        line!(
            "/* External weights: load the file {} (exactly {n}_WEIGHTS_SIZE bytes) at an",
            comment_text(&x.file)
        );
        line!(" * address aligned to {n}_WEIGHTS_ALIGN bytes and pass it to every run. It is only read,");
        line!(" * so concurrent runs may share one copy. */");
        line!("#define {n}_WEIGHTS_SIZE {}", x.size);
        line!("#define {n}_WEIGHTS_ALIGN 64");
    }
    line!();
    line!("/* Return codes of {n}_run. */");
    line!("#define {n}_OK 0");
    line!("#define {n}_ERR_NULL_ARG 1 /* a null struct or tensor pointer */");
    line!("#define {n}_ERR_ARENA_ALIGN 2 /* a null arena, or not aligned to {n}_ARENA_ALIGN */");
    line!(
        "#define {n}_ERR_WEIGHTS 3 /* external weights only: null, or not aligned to 64 bytes */"
    );
    line!("#define {n}_ERR_PARALLEL 4 /* {n}_run_parallel: par->tasks > 1 but no parallel_for */");
    line!();
    line!("#define {n}_NUM_INPUTS {}", spec.inputs.len());
    line!("#define {n}_NUM_OUTPUTS {}", spec.outputs.len());

    let ios = spec
        .inputs
        .iter()
        .zip(in_fields)
        .map(|(io, f)| ("Input", io, f));
    let ios = ios.chain(
        spec.outputs
            .iter()
            .zip(out_fields)
            .map(|(io, f)| ("Output", io, f)),
    );
    for (kind, io, f) in ios {
        let elems: usize = io.dims.iter().product();
        line!();
        line!(
            "/* {kind} \"{}\": {} */",
            comment_text(&io.onnx_name),
            type_text(io)
        );
        line!("#define {n}_{f}_RANK {}", io.dims.len());
        line!("#define {n}_{f}_SIZE {elems} /* elements */");
        let packed = if io.dtype.bits() < 8 {
            ", two elements per byte"
        } else {
            ""
        };
        line!(
            "#define {n}_{f}_BYTES {} /* bytes{packed} */",
            io.dtype.storage_bytes(elems)
        );
        for (k, d) in io.dims.iter().enumerate() {
            line!("#define {n}_{f}_DIM{k} {d}");
        }
    }

    for (kind, list, names, cst) in [
        ("inputs", &spec.inputs, in_fields, "const "),
        ("outputs", &spec.outputs, out_fields, ""),
    ] {
        line!();
        line!("/* The model's {kind}, in graph order. */");
        line!("typedef struct {{");
        if list.is_empty() {
            line!(
                "    const void *unused; /* the model has no {kind}; pass any non-null struct */"
            );
        }
        for (io, f) in list.iter().zip(names) {
            let (cty, note) = c_type(io.dtype);
            let note = note.map(|t| format!(", {t}")).unwrap_or_default();
            line!(
                "    {cst}{cty} *{f}; /* ONNX \"{}\": {}{note} */",
                comment_text(&io.onnx_name),
                type_text(io)
            );
        }
        line!("}} {n}_{kind};");
    }

    line!();
    line!("/* Runs the model once: reads `in`, writes `out`, uses `arena` as scratch. */");
    let w = if spec.external_weights.is_some() {
        " const void *weights,"
    } else {
        ""
    };
    if spec.external_weights.is_some() {
        line!("int {n}_run(const {n}_inputs *in, {n}_outputs *out, void *arena, const void *weights);");
    } else {
        line!("int {n}_run(const {n}_inputs *in, {n}_outputs *out, void *arena);");
    }
    line!();
    line!("/* The same, with the heavy kernels split into par->tasks parts run through");
    line!(" * par->parallel_for (see the top of this file). par == NULL or tasks <= 1 runs serially. */");
    line!(
        "int {n}_run_parallel(const {n}_inputs *in, {n}_outputs *out, void *arena,{w} const kiln_parallel *par);"
    );
    line!();
    line!("#ifdef __cplusplus");
    line!("}}");
    line!("#endif");
    line!();
    line!("#endif /* {guard} */");
    h
}

/// The symbol `NAME_run` that the library must export for this header.
pub fn run_symbol(name: &str) -> String {
    format!("{name}_run")
}

/// The symbol `NAME_run_parallel`, the library's other export.
pub fn run_parallel_symbol(name: &str) -> String {
    format!("{name}_run_parallel")
}
