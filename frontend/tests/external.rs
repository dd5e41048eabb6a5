//! External tensor data: loading a range of a file next to the model, and refusing every way out of
//! the model's folder.

mod common;

use common::*;
use kiln_frontend::builder::{elem, ModelBuilder};
use kiln_frontend::onnx::tensor_proto::DataLocation;
use kiln_frontend::onnx::{StringStringEntryProto, TensorProto};
use kiln_frontend::{import_bytes, import_file, ImportError, ImportOptions};
use std::path::Path;

/// An f32 initializer "w" of `n` elements stored externally.
fn external(n: i64, entries: &[(&str, &str)]) -> TensorProto {
    TensorProto {
        name: Some("w".into()),
        dims: vec![n],
        data_type: Some(elem::FLOAT),
        data_location: Some(DataLocation::External as i32),
        external_data: entries
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.to_string()),
                value: Some(v.to_string()),
            })
            .collect(),
        ..Default::default()
    }
}

fn model(t: TensorProto) -> ModelBuilder {
    let n = t.dims[0];
    let mut b = ModelBuilder::new("g");
    b.initializer(t).output("w", elem::FLOAT, &[n]);
    b
}

/// Writes `model.onnx` into `dir` and imports it from the file.
fn import_in(dir: &Path, t: TensorProto) -> Result<kiln_frontend::Model, ImportError> {
    let path = dir.join("model.onnx");
    std::fs::write(&path, model(t).to_bytes()).unwrap();
    import_file(&path, &ImportOptions::default())
}

/// 8 bytes of padding, then 1.0, 2.0, 3.0, 4.0, then 4 bytes of padding.
fn data_file() -> Vec<u8> {
    let mut v = vec![0xaa; 8];
    for x in [1.0f32, 2.0, 3.0, 4.0] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(&[0xbb; 4]);
    v
}

fn external_msg(r: Result<kiln_frontend::Model, ImportError>) -> String {
    match r {
        Err(e @ ImportError::ExternalData { .. }) => {
            let m = e.to_string();
            assert!(m.contains("\"w\""), "{m}");
            m
        }
        Err(e) => panic!("expected an ExternalData error, got: {e}"),
        Ok(_) => panic!("import succeeded"),
    }
}

#[test]
fn loads_a_range_of_a_file_next_to_the_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), data_file()).unwrap();
    let m = import_in(
        dir.path(),
        external(
            4,
            &[("location", "w.bin"), ("offset", "8"), ("length", "16")],
        ),
    )
    .unwrap();
    assert_eq!(out_const(&m, "w").to_f32_vec(), [1.0, 2.0, 3.0, 4.0]);

    // Subfolders and `..` that stay inside the folder are fine; `length` may be left out when the
    // data runs to the end of the file.
    std::fs::create_dir(dir.path().join("weights")).unwrap();
    std::fs::write(dir.path().join("weights/tail.bin"), &data_file()[8..24]).unwrap();
    let m = import_in(
        dir.path(),
        external(4, &[("location", "sub/../weights/tail.bin")]),
    )
    .unwrap();
    assert_eq!(out_const(&m, "w").to_f32_vec(), [1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn import_bytes_resolves_against_base_dir_and_refuses_without_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), data_file()).unwrap();
    let bytes = model(external(
        2,
        &[("location", "w.bin"), ("offset", "12"), ("length", "8")],
    ))
    .to_bytes();
    let m = import_bytes(&bytes, Some(dir.path()), &ImportOptions::default()).unwrap();
    assert_eq!(out_const(&m, "w").to_f32_vec(), [2.0, 3.0]);

    let msg = external_msg(import_bytes(&bytes, None, &ImportOptions::default()));
    assert!(msg.contains("memory"), "{msg}");
}

#[test]
fn ranges_past_the_end_or_of_the_wrong_length_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), data_file()).unwrap(); // 28 bytes
    let msg = external_msg(import_in(
        dir.path(),
        external(4, &[("location", "w.bin"), ("offset", "100")]),
    ));
    assert!(msg.contains("past the end"), "{msg}");
    let msg = external_msg(import_in(
        dir.path(),
        external(
            4,
            &[("location", "w.bin"), ("offset", "20"), ("length", "16")],
        ),
    ));
    assert!(msg.contains("past the end"), "{msg}");
    let msg = external_msg(import_in(
        dir.path(),
        external(4, &[("location", "w.bin"), ("length", "12")]),
    ));
    assert!(msg.contains("need 16"), "{msg}");
    let msg = external_msg(import_in(
        dir.path(),
        external(
            4,
            &[
                ("location", "w.bin"),
                ("offset", "18446744073709551615"),
                ("length", "16"),
            ],
        ),
    ));
    assert!(msg.contains("past the end"), "{msg}");
    let msg = external_msg(import_in(
        dir.path(),
        external(4, &[("location", "w.bin"), ("offset", "-1")]),
    ));
    assert!(msg.contains("offset"), "{msg}");
    let msg = external_msg(import_in(
        dir.path(),
        external(4, &[("location", "missing.bin")]),
    ));
    assert!(msg.contains("missing.bin"), "{msg}");
    let msg = external_msg(import_in(dir.path(), external(4, &[("offset", "0")])));
    assert!(msg.contains("location"), "{msg}");
}

#[test]
fn paths_out_of_the_model_folder_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(root.path().join("secret.bin"), data_file()).unwrap();

    let abs = root.path().join("secret.bin");
    let msg = external_msg(import_in(
        &dir,
        external(4, &[("location", abs.to_str().unwrap()), ("offset", "8")]),
    ));
    assert!(msg.contains("absolute"), "{msg}");

    let msg = external_msg(import_in(
        &dir,
        external(4, &[("location", "../secret.bin"), ("offset", "8")]),
    ));
    assert!(msg.contains("escapes"), "{msg}");

    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(root.path().join("secret.bin"), dir.join("link.bin")).unwrap();
        let msg = external_msg(import_in(
            &dir,
            external(4, &[("location", "link.bin"), ("offset", "8")]),
        ));
        assert!(msg.contains("outside"), "{msg}");

        // A symlink that stays inside the folder is fine.
        std::fs::write(dir.join("real.bin"), data_file()).unwrap();
        std::os::unix::fs::symlink(dir.join("real.bin"), dir.join("alias.bin")).unwrap();
        let m = import_in(
            &dir,
            external(
                4,
                &[("location", "alias.bin"), ("offset", "8"), ("length", "16")],
            ),
        )
        .unwrap();
        assert_eq!(out_const(&m, "w").to_f32_vec(), [1.0, 2.0, 3.0, 4.0]);
    }
}

#[test]
fn size_limit_applies_before_reading_external_data() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), data_file()).unwrap();
    let path = dir.path().join("model.onnx");
    std::fs::write(
        &path,
        model(external(4, &[("location", "w.bin"), ("offset", "8")])).to_bytes(),
    )
    .unwrap();
    let opts = ImportOptions {
        max_tensor_bytes: 15,
        ..Default::default()
    };
    match import_file(&path, &opts) {
        Err(e @ ImportError::Tensor { .. }) => assert!(e.to_string().contains("limit"), "{e}"),
        other => panic!("expected a size error, got {other:?}"),
    }
}
