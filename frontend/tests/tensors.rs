//! Initializers in every ONNX encoding, and `Constant` nodes in every attribute form.

mod common;

use common::*;
use kiln_frontend::builder::{attr, elem, tensor_f16, tensor_f32, tensor_raw, ModelBuilder};
use kiln_frontend::onnx::TensorProto;
use kiln_frontend::ImportError;
use kiln_ir::{DType, Op, Tensor};

/// A tensor with no data yet.
fn bare(elem_type: i32, dims: &[i64]) -> TensorProto {
    TensorProto {
        name: Some("t".into()),
        data_type: Some(elem_type),
        dims: dims.to_vec(),
        ..Default::default()
    }
}

/// A model whose only output is the initializer `t` (named "t").
fn model_of(t: TensorProto) -> ModelBuilder {
    let dims = t.dims.clone();
    let et = t.data_type();
    let mut b = ModelBuilder::new("g");
    b.initializer(t).output("t", et, &dims);
    b
}

/// Imports a model whose output is initializer `t` and returns its value.
fn load(t: TensorProto) -> Tensor {
    out_const(&ok(&model_of(t)), "t")
}

/// The import error of a model with initializer `t`.
fn load_err(t: TensorProto) -> ImportError {
    err(&model_of(t))
}

#[test]
fn raw_data_f32_and_f16() {
    let t = load(tensor_f32("t", &[2, 2], &[1.5, -2.0, 0.25, 8.0]));
    assert_eq!((t.dtype(), t.shape()), (DType::F32, &[2usize, 2][..]));
    assert_eq!(t.to_f32_vec(), [1.5, -2.0, 0.25, 8.0]);

    let h = [half::f16::from_f32(1.0), half::f16::from_f32(-0.5)];
    let t = load(tensor_f16("t", &[2], &h));
    assert_eq!(t.dtype(), DType::F16);
    // 1.0 = 0x3C00, -0.5 = 0xB800, little-endian.
    assert_eq!(t.bytes(), [0x00, 0x3c, 0x00, 0xb8]);
}

#[test]
fn float_data() {
    let t = load(TensorProto {
        float_data: vec![1.5, -2.0, 3.0, 4.0],
        ..bare(elem::FLOAT, &[2, 2])
    });
    assert_eq!(t.to_f32_vec(), [1.5, -2.0, 3.0, 4.0]);
}

#[test]
fn int32_data_for_narrow_integers_and_bool() {
    let t = load(TensorProto {
        int32_data: vec![-128, 127, 5],
        ..bare(elem::INT8, &[3])
    });
    assert_eq!(
        (t.dtype(), t.bytes()),
        (DType::I8, &[0x80u8, 0x7f, 0x05][..])
    );

    let t = load(TensorProto {
        int32_data: vec![0, 255, 7],
        ..bare(elem::UINT8, &[3])
    });
    assert_eq!((t.dtype(), t.bytes()), (DType::U8, &[0u8, 255, 7][..]));

    let t = load(TensorProto {
        int32_data: vec![-32768, 32767],
        ..bare(elem::INT16, &[2])
    });
    assert_eq!(
        (t.dtype(), t.bytes()),
        (DType::I16, &[0x00u8, 0x80, 0xff, 0x7f][..])
    );

    let t = load(TensorProto {
        int32_data: vec![65535, 1],
        ..bare(elem::UINT16, &[2])
    });
    assert_eq!(
        (t.dtype(), t.bytes()),
        (DType::U16, &[0xffu8, 0xff, 0x01, 0x00][..])
    );

    let t = load(TensorProto {
        int32_data: vec![1, 0, 1],
        ..bare(elem::BOOL, &[3])
    });
    assert_eq!((t.dtype(), t.bytes()), (DType::Bool, &[1u8, 0, 1][..]));

    let t = load(TensorProto {
        int32_data: vec![-7, 1 << 30],
        ..bare(elem::INT32, &[2])
    });
    assert_eq!(t.to_i64_vec(), [-7, 1 << 30]);
}

#[test]
fn int32_data_for_half_floats_holds_bit_patterns() {
    // f16: 1.0 = 0x3C00, -2.0 = 0xC000 (written unsigned by onnx.helper).
    let t = load(TensorProto {
        int32_data: vec![0x3c00, 0xc000],
        ..bare(elem::FLOAT16, &[2])
    });
    assert_eq!(t.dtype(), DType::F16);
    assert_eq!(t.to_f64_vec(), [1.0, -2.0]);
    // bf16: 1.0 = 0x3F80, -3.0 = 0xC040.
    let t = load(TensorProto {
        int32_data: vec![0x3f80, 0xc040],
        ..bare(elem::BFLOAT16, &[2])
    });
    assert_eq!(t.dtype(), DType::BF16);
    assert_eq!(t.to_f64_vec(), [1.0, -3.0]);
}

#[test]
fn raw_bfloat16() {
    let t = load(tensor_raw(
        "t",
        elem::BFLOAT16,
        &[2],
        vec![0x80, 0x3f, 0x40, 0xc0],
    ));
    assert_eq!(t.to_f64_vec(), [1.0, -3.0]);
}

#[test]
fn int64_double_and_uint64_data() {
    let t = load(TensorProto {
        int64_data: vec![-5, 1 << 40],
        ..bare(elem::INT64, &[2])
    });
    assert_eq!((t.dtype(), t.to_i64_vec()), (DType::I64, vec![-5, 1 << 40]));

    let t = load(TensorProto {
        double_data: vec![0.1, -2.5],
        ..bare(elem::DOUBLE, &[2])
    });
    assert_eq!((t.dtype(), t.to_f64_vec()), (DType::F64, vec![0.1, -2.5]));

    let t = load(TensorProto {
        uint64_data: vec![u64::MAX],
        ..bare(elem::UINT64, &[1])
    });
    assert_eq!((t.dtype(), t.bytes()), (DType::U64, &[0xffu8; 8][..]));

    let t = load(TensorProto {
        uint64_data: vec![4_000_000_000],
        ..bare(elem::UINT32, &[1])
    });
    assert_eq!(
        (t.dtype(), t.bytes()),
        (DType::U32, &4_000_000_000u32.to_le_bytes()[..])
    );
}

#[test]
fn int4_and_uint4_packed_and_unpacked() {
    // [-1, 7, -8] packs low nibble first: 0xF | 0x7 << 4 = 0x7F, then 0x8 (as onnx.helper writes).
    let packed = load(TensorProto {
        int32_data: vec![0x7f, 0x08],
        ..bare(elem::INT4, &[3])
    });
    assert_eq!(
        (packed.dtype(), packed.to_i64_vec()),
        (DType::I4, vec![-1, 7, -8])
    );
    assert_eq!(packed.bytes(), [0x7f, 0x08]);
    // One element per int32 is accepted too and packs to the same bytes.
    let unpacked = load(TensorProto {
        int32_data: vec![-1, 7, -8],
        ..bare(elem::INT4, &[3])
    });
    assert_eq!(unpacked, packed);

    // uint4 [1, 2, 15] raw: 0x21, then 0x0F.
    let raw = load(tensor_raw("t", elem::UINT4, &[3], vec![0x21, 0x0f]));
    assert_eq!((raw.dtype(), raw.to_i64_vec()), (DType::U4, vec![1, 2, 15]));
    let unpacked = load(TensorProto {
        int32_data: vec![1, 2, 15],
        ..bare(elem::UINT4, &[3])
    });
    assert_eq!(unpacked, raw);
    // The unused high nibble of an odd-length tensor is cleared.
    let dirty = load(tensor_raw("t", elem::UINT4, &[3], vec![0x21, 0xff]));
    assert_eq!(dirty, raw);
}

fn tensor_msg(e: ImportError) -> String {
    match e {
        ImportError::Tensor { ref tensor, .. } => {
            assert_eq!(tensor, "t");
            e.to_string()
        }
        e => panic!("expected a Tensor error, got: {e}"),
    }
}

#[test]
fn data_that_does_not_fit_the_dims_is_an_error_naming_the_tensor() {
    let m = tensor_msg(load_err(TensorProto {
        float_data: vec![0.0; 5],
        ..bare(elem::FLOAT, &[2, 2])
    }));
    assert!(
        m.contains("4 elements") && m.contains("float_data has 5"),
        "{m}"
    );

    let m = tensor_msg(load_err(tensor_raw("t", elem::FLOAT, &[2], vec![0; 7])));
    assert!(m.contains("8 bytes") && m.contains("raw_data has 7"), "{m}");

    let m = tensor_msg(load_err(bare(elem::FLOAT, &[2])));
    assert!(m.contains("no data"), "{m}");

    let m = tensor_msg(load_err(TensorProto {
        float_data: vec![1.0],
        ..bare(elem::INT64, &[1])
    }));
    assert!(m.contains("int64_data") && m.contains("float_data"), "{m}");

    let m = tensor_msg(load_err(TensorProto {
        int32_data: vec![300],
        ..bare(elem::INT8, &[1])
    }));
    assert!(m.contains("300") && m.contains("out of range"), "{m}");

    let m = tensor_msg(load_err(TensorProto {
        int32_data: vec![1, 2],
        ..bare(elem::INT4, &[5])
    }));
    assert!(m.contains("4-bit"), "{m}");
}

#[test]
fn negative_and_absurd_dims_fail_before_any_allocation() {
    let m = tensor_msg(load_err(bare(elem::FLOAT, &[2, -3])));
    assert!(m.contains("negative"), "{m}");
    // 10^12 floats: refused by size, although the tensor carries no data at all.
    let m = tensor_msg(load_err(bare(elem::FLOAT, &[1_000_000_000_000])));
    assert!(m.contains("limit"), "{m}");
    let m = tensor_msg(load_err(bare(elem::FLOAT, &[1 << 40, 1 << 40])));
    assert!(m.contains("overflow"), "{m}");
}

#[test]
fn string_initializers_are_listed_as_unsupported() {
    let t = TensorProto {
        string_data: vec![b"a".to_vec()],
        ..bare(elem::STRING, &[1])
    };
    let list = unsupported(&model_of(t));
    assert_eq!(
        (list[0].node.as_str(), list[0].op_type.as_str()),
        ("t", "initializer")
    );
    assert!(list[0].reason.contains("STRING"));
}

/// A model whose output `y` is a `Constant` node with the given attributes.
fn constant(
    attrs: Vec<kiln_frontend::onnx::AttributeProto>,
    out_elem: i32,
    dims: &[i64],
) -> ModelBuilder {
    let mut b = ModelBuilder::new("g");
    b.node_named("c", "", "Constant", &[], &["y"], attrs)
        .output("y", out_elem, dims);
    b
}

#[test]
fn constant_node_forms() {
    let m = ok(&constant(
        vec![attr::tensor("value", tensor_f32("", &[2], &[1.0, 2.0]))],
        elem::FLOAT,
        &[2],
    ));
    assert_eq!(out_const(&m, "y").to_f32_vec(), [1.0, 2.0]);
    assert_eq!(out_node(&m, "y").name, "c");
    assert_eq!(m.graph.value_name(output(&m, "y")), "y");

    let typed = TensorProto {
        int64_data: vec![3, 4],
        ..bare(elem::INT64, &[2])
    };
    let m = ok(&constant(
        vec![attr::tensor("value", typed)],
        elem::INT64,
        &[2],
    ));
    assert_eq!(out_const(&m, "y").to_i64_vec(), [3, 4]);

    let m = ok(&constant(
        vec![attr::float("value_float", 2.5)],
        elem::FLOAT,
        &[],
    ));
    let t = out_const(&m, "y");
    assert_eq!(
        (t.dtype(), t.shape(), t.to_f32_vec()),
        (DType::F32, &[][..], vec![2.5])
    );

    let m = ok(&constant(
        vec![attr::floats("value_floats", &[1.0, -1.0, 0.5])],
        elem::FLOAT,
        &[3],
    ));
    assert_eq!(out_const(&m, "y").to_f32_vec(), [1.0, -1.0, 0.5]);

    let m = ok(&constant(
        vec![attr::int("value_int", -7)],
        elem::INT64,
        &[],
    ));
    let t = out_const(&m, "y");
    assert_eq!(
        (t.dtype(), t.shape(), t.to_i64_vec()),
        (DType::I64, &[][..], vec![-7])
    );

    let m = ok(&constant(
        vec![attr::ints("value_ints", &[5, 6])],
        elem::INT64,
        &[2],
    ));
    assert_eq!(out_const(&m, "y").to_i64_vec(), [5, 6]);
    assert!(matches!(out_op(&m, "y"), Op::Const(_)));
}

#[test]
fn constant_node_errors() {
    let list = unsupported(&constant(
        vec![attr::string("value_string", "hi")],
        elem::STRING,
        &[],
    ));
    assert_eq!(
        (list[0].node.as_str(), list[0].op_type.as_str()),
        ("c", "Constant")
    );

    let e = err(&constant(
        vec![attr::int("value_int", 1), attr::float("value_float", 1.0)],
        elem::FLOAT,
        &[],
    ));
    let m = e.to_string();
    assert!(
        matches!(e, ImportError::Node { .. }) && m.contains("\"c\"") && m.contains("exactly one"),
        "{m}"
    );

    let e = err(&constant(vec![], elem::FLOAT, &[]));
    assert!(e.to_string().contains("exactly one"), "{e}");

    let bad = TensorProto {
        float_data: vec![1.0; 3],
        ..bare(elem::FLOAT, &[2])
    };
    let e = err(&constant(
        vec![attr::tensor("value", bad)],
        elem::FLOAT,
        &[2],
    ));
    let m = e.to_string();
    assert!(
        m.contains("\"c\"") && m.contains("Constant") && m.contains("float_data has 3"),
        "{m}"
    );
}
