//! Corrupted models: every single-byte mutation of a model with many ops imports or fails with an
//! error, and never panics.

use kiln_frontend::builder::{attr, elem, tensor_i64, ModelBuilder};
use kiln_frontend::{import_bytes, inspect_bytes, ImportOptions};

fn varied_model() -> ModelBuilder {
    let mut b = ModelBuilder::new("g").opset("", 13);
    b.input("x", elem::FLOAT, &[1, 2, 6, 6])
        .initializer_f32("w", &[4, 2, 3, 3], &[0.1; 72])
        .initializer_f32("bias", &[4], &[0.0; 4])
        .initializer_i64("shape", &[2], &[1, -1])
        .initializer(tensor_i64("starts", &[1], &[1]))
        .initializer(tensor_i64("ends", &[1], &[3]))
        .initializer(tensor_i64("axes", &[1], &[1]))
        .node(
            "Conv",
            &["x", "w", "bias"],
            &["c"],
            vec![
                attr::ints("pads", &[1, 1, 1, 1]),
                attr::ints("strides", &[1, 1]),
            ],
        )
        .node("Relu", &["c"], &["r"], vec![])
        .node(
            "MaxPool",
            &["r"],
            &["p"],
            vec![
                attr::ints("kernel_shape", &[2, 2]),
                attr::ints("strides", &[2, 2]),
            ],
        )
        .node("Slice", &["p", "starts", "ends", "axes"], &["s"], vec![])
        .node("Shape", &["s"], &["sh"], vec![])
        .node("Reshape", &["s", "shape"], &["f"], vec![])
        .node("Softmax", &["f"], &["sm"], vec![attr::int("axis", -1)])
        .node("Transpose", &["sm"], &["t"], vec![])
        .node("Unsqueeze", &["t", "axes"], &["u"], vec![])
        .node("Concat", &["u", "u"], &["cat"], vec![attr::int("axis", 0)])
        .output("cat", elem::FLOAT, &[36, 1, 1])
        .output("sh", elem::INT64, &[4]);
    b
}

#[test]
fn the_unmutated_model_imports() {
    import_bytes(&varied_model().to_bytes(), None, &ImportOptions::default()).unwrap();
}

#[test]
fn single_byte_mutations_never_panic() {
    let bytes = varied_model().to_bytes();
    // Small limits so mutated dims fail fast instead of building large constants.
    let opts = ImportOptions {
        max_tensor_bytes: 1 << 20,
        ..Default::default()
    };
    let mut failures = Vec::new();
    for pos in 0..bytes.len() {
        for val in [0x00u8, 0x01, 0x7f, 0x80, 0xff, bytes[pos] ^ 0x04] {
            if val == bytes[pos] {
                continue;
            }
            let mut m = bytes.clone();
            m[pos] = val;
            let r = std::panic::catch_unwind(|| {
                let _ = import_bytes(&m, None, &opts);
                let _ = inspect_bytes(&m, None, &opts);
            });
            if r.is_err() {
                failures.push((pos, val));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "panics at (position, byte): {failures:?}"
    );
}

#[test]
fn truncations_and_removed_ranges_never_panic() {
    let bytes = varied_model().to_bytes();
    let opts = ImportOptions::default();
    for cut in (0..bytes.len()).step_by(3) {
        for len in [1usize, 2, 7] {
            let end = (cut + len).min(bytes.len());
            let mut m = bytes[..cut].to_vec();
            m.extend_from_slice(&bytes[end..]);
            let r = std::panic::catch_unwind(|| {
                let _ = import_bytes(&m, None, &opts);
            });
            assert!(r.is_ok(), "panic with bytes {cut}..{end} removed");
        }
    }
}

/// Extreme integer values for every integer attribute of the mapped ops, alone and in lists of the
/// lengths the ops expect.
#[test]
fn extreme_attribute_values_never_panic() {
    const VALUES: [i64; 10] = [
        i64::MIN,
        -(1 << 40),
        -3,
        -1,
        0,
        1,
        2,
        1 << 31,
        1 << 62,
        i64::MAX,
    ];
    // (op, opset, input dims of x, extra initializers, inputs, int attributes, ints attributes)
    type Case = (
        &'static str,
        i64,
        &'static [i64],
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    );
    let cases: &[Case] = &[
        (
            "Conv",
            13,
            &[1, 2, 5, 5],
            &["x", "w"],
            &["group"],
            &["kernel_shape", "strides", "dilations", "pads"],
        ),
        (
            "MaxPool",
            13,
            &[1, 2, 5, 5],
            &["x"],
            &["ceil_mode", "storage_order"],
            &["kernel_shape", "strides", "dilations", "pads"],
        ),
        (
            "AveragePool",
            13,
            &[1, 2, 5, 5],
            &["x"],
            &["ceil_mode", "count_include_pad"],
            &["kernel_shape", "strides", "pads"],
        ),
        ("Flatten", 13, &[2, 3], &["x"], &["axis"], &[]),
        ("Softmax", 11, &[2, 3], &["x"], &["axis"], &[]),
        ("Concat", 13, &[2, 3], &["x", "x"], &["axis"], &[]),
        ("Gather", 13, &[2, 3], &["x", "i"], &["axis"], &[]),
        ("Transpose", 13, &[2, 3, 4], &["x"], &[], &["perm"]),
        ("Squeeze", 11, &[1, 3], &["x"], &[], &["axes"]),
        ("Unsqueeze", 11, &[3], &["x"], &[], &["axes"]),
        (
            "Slice",
            9,
            &[4, 5],
            &["x"],
            &[],
            &["starts", "ends", "axes"],
        ),
        ("Reshape", 4, &[2, 3], &["x"], &[], &["shape"]),
        ("Shape", 15, &[2, 3], &["x"], &["start", "end"], &[]),
        ("Cast", 13, &[2, 3], &["x"], &["to"], &[]),
        ("Gemm", 13, &[2, 2], &["x", "x"], &["transA", "transB"], &[]),
        (
            "BatchNormalization",
            7,
            &[1, 2, 2],
            &["x", "p", "p", "p", "p"],
            &["spatial", "is_test"],
            &[],
        ),
        ("Dropout", 6, &[2], &["x"], &["is_test"], &[]),
        ("Relu", 5, &[2], &["x"], &[], &["consumed_inputs"]),
        ("Add", 6, &[2, 3], &["x", "x"], &["broadcast", "axis"], &[]),
    ];
    let opts = ImportOptions {
        max_tensor_bytes: 1 << 24,
        ..Default::default()
    };
    let mut panics = Vec::new();
    for &(op, opset, dims, inputs, int_attrs, ints_attrs) in cases {
        let mut attrs_to_try = Vec::new();
        for &v in &VALUES {
            for &a in int_attrs {
                attrs_to_try.push(vec![attr::int(a, v)]);
            }
            for &a in ints_attrs {
                for len in [1, 2, 3, 4] {
                    attrs_to_try.push(vec![attr::ints(a, &vec![v; len])]);
                    let mut mixed = vec![1; len];
                    mixed[len - 1] = v;
                    attrs_to_try.push(vec![attr::ints(a, &mixed)]);
                }
            }
        }
        for attrs in attrs_to_try {
            let mut b = ModelBuilder::new("g").opset("", opset);
            b.input("x", elem::FLOAT, dims)
                .initializer_f32("w", &[2, 2, 3, 3], &[0.0; 36])
                .initializer_f32("p", &[2], &[1.0; 2])
                .initializer_i64("i", &[2], &[0, -1])
                .node(op, inputs, &["y"], attrs.clone());
            b.output("y", elem::FLOAT, &[-1]);
            let bytes = b.to_bytes();
            if std::panic::catch_unwind(|| import_bytes(&bytes, None, &opts)).is_err() {
                panics.push(format!(
                    "{op} {:?}",
                    attrs
                        .iter()
                        .map(|a| (a.name(), a.i(), a.ints.clone()))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
}

/// Extreme values in the constant parameter inputs of Slice, Reshape, Squeeze and Unsqueeze.
#[test]
fn extreme_parameter_inputs_never_panic() {
    const VALUES: [i64; 9] = [i64::MIN, -(1 << 40), -5, -1, 0, 1, 3, 1 << 40, i64::MAX];
    let opts = ImportOptions {
        max_tensor_bytes: 1 << 24,
        ..Default::default()
    };
    let mut panics = Vec::new();
    for &a in &VALUES {
        for &b2 in &VALUES {
            for (op, inputs) in [
                ("Slice", &["x", "p", "q"][..]),
                ("Slice", &["x", "p", "q", "r", "q"][..]),
                ("Slice", &["x", "p", "q", "", "p"][..]),
                ("Reshape", &["x", "p"][..]),
                ("Squeeze", &["x", "p"][..]),
                ("Unsqueeze", &["x", "p"][..]),
                ("Clip", &["x", "s", "s"][..]),
            ] {
                let mut b = ModelBuilder::new("g").opset("", 13);
                b.input("x", elem::FLOAT, &[1, 4, 3])
                    .initializer_i64("p", &[2], &[a, b2])
                    .initializer_i64("q", &[2], &[b2, a])
                    .initializer_i64("r", &[2], &[0, a])
                    .initializer_f32("s", &[], &[a as f32])
                    .node(op, inputs, &["y"], vec![]);
                b.output("y", elem::FLOAT, &[-1]);
                let bytes = b.to_bytes();
                if std::panic::catch_unwind(|| import_bytes(&bytes, None, &opts)).is_err() {
                    panics.push(format!("{op} {inputs:?} with {a}, {b2}"));
                }
            }
        }
    }
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
}
