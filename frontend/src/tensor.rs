//! ONNX `TensorProto` -> [`kiln_ir::Tensor`]: element types, every data encoding, external data.
//!
//! Sizes are computed with checked arithmetic from the dims alone and compared with the limit before a
//! single byte is allocated or read, so a model that claims a 10^12-element tensor costs nothing.

use crate::onnx::tensor_proto::{DataLocation, DataType};
use crate::onnx::TensorProto;
use crate::ImportError;
use kiln_ir::{DType, Tensor};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// Why a tensor could not be decoded.
#[derive(Debug)]
pub(crate) enum TensorError {
    /// The tensor is malformed.
    Invalid(String),
    /// Legal ONNX kiln does not handle (string tensors, segments, float8, ...).
    Unsupported(String),
    /// External data that cannot be read safely.
    External(String),
}

/// Where external data may come from and how large a tensor may be.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DataSource<'a> {
    /// The model file's folder; `None` refuses external data.
    pub base_dir: Option<&'a Path>,
    /// Largest tensor accepted, in bytes.
    pub max_bytes: u64,
}

/// The IR dtype of an ONNX element type code, or why kiln cannot represent it.
pub(crate) fn dtype_from_onnx(code: i32) -> Result<DType, String> {
    let dt = DataType::try_from(code).map_err(|_| format!("unknown element type code {code}"))?;
    Ok(match dt {
        DataType::Float => DType::F32,
        DataType::Uint8 => DType::U8,
        DataType::Int8 => DType::I8,
        DataType::Uint16 => DType::U16,
        DataType::Int16 => DType::I16,
        DataType::Int32 => DType::I32,
        DataType::Int64 => DType::I64,
        DataType::Bool => DType::Bool,
        DataType::Float16 => DType::F16,
        DataType::Double => DType::F64,
        DataType::Uint32 => DType::U32,
        DataType::Uint64 => DType::U64,
        DataType::Bfloat16 => DType::BF16,
        DataType::Uint4 => DType::U4,
        DataType::Int4 => DType::I4,
        DataType::Undefined => return Err("element type is not set".into()),
        other => {
            return Err(format!(
                "element type {} is not supported",
                other.as_str_name()
            ))
        }
    })
}

/// The ONNX spelling of an element type code (`FLOAT`, `INT64`, ...), for messages and `inspect`.
pub(crate) fn onnx_type_name(code: i32) -> String {
    DataType::try_from(code).map_or_else(|_| format!("type#{code}"), |d| d.as_str_name().to_owned())
}

/// Bits per element of an ONNX element type, for parameter byte counts. Strings count as 0 (their size
/// is not a function of the shape).
pub(crate) fn onnx_elem_bits(code: i32) -> u64 {
    match DataType::try_from(code) {
        Ok(DataType::Double | DataType::Int64 | DataType::Uint64 | DataType::Complex64) => 64,
        Ok(DataType::Complex128) => 128,
        Ok(DataType::Float | DataType::Int32 | DataType::Uint32) => 32,
        Ok(DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16) => 16,
        Ok(DataType::Uint4 | DataType::Int4 | DataType::Float4e2m1) => 4,
        Ok(DataType::String | DataType::Undefined) | Err(_) => 0,
        Ok(_) => 8,
    }
}

/// Element count of `dims`, refusing negative dims and overflow.
pub(crate) fn checked_numel(dims: &[i64]) -> Result<u64, String> {
    let mut n: u64 = 1;
    for &d in dims {
        let d = u64::try_from(d).map_err(|_| format!("negative dimension {d} in {dims:?}"))?;
        n = n
            .checked_mul(d)
            .ok_or_else(|| format!("dims {dims:?} overflow a 64-bit element count"))?;
    }
    Ok(n)
}

/// Bytes of dense storage for `count` elements of `bits` each (sub-byte types round up).
pub(crate) fn storage_bytes(count: u64, bits: u64) -> Option<u64> {
    Some(count.checked_mul(bits)?.div_ceil(8))
}

/// Decodes a tensor, checking its size against `src.max_bytes` before reading or allocating its data.
pub(crate) fn decode(mut t: TensorProto, src: DataSource<'_>) -> Result<Tensor, TensorError> {
    let dtype = dtype_from_onnx(t.data_type()).map_err(TensorError::Unsupported)?;
    let count = checked_numel(&t.dims).map_err(TensorError::Invalid)?;
    let bytes = storage_bytes(count, dtype.bits() as u64)
        .ok_or_else(|| TensorError::Invalid(format!("dims {:?} are too large", t.dims)))?;
    if bytes > src.max_bytes {
        return Err(TensorError::Invalid(format!(
            "dims {:?} need {bytes} bytes of {dtype}, more than the limit of {} bytes",
            t.dims, src.max_bytes
        )));
    }
    // Both fit in usize now: they are at most max_bytes elements/bytes on a 64-bit host, and on a
    // 32-bit host the conversion below fails cleanly instead of truncating.
    let count = usize::try_from(count)
        .map_err(|_| TensorError::Invalid("tensor too large for this host".into()))?;
    let nbytes = usize::try_from(bytes)
        .map_err(|_| TensorError::Invalid("tensor too large for this host".into()))?;
    if t.segment.is_some() {
        return Err(TensorError::Unsupported(
            "segmented tensors are not supported".into(),
        ));
    }
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();

    let data = match DataLocation::try_from(t.data_location.unwrap_or(0)) {
        Ok(DataLocation::External) => read_external(&t, src.base_dir, nbytes)?,
        Ok(DataLocation::Default) => {
            let raw = t.raw_data.take().unwrap_or_default();
            if !raw.is_empty() || (count > 0 && typed_fields_empty(&t)) {
                if raw.len() != nbytes {
                    return Err(TensorError::Invalid(if raw.is_empty() {
                        format!(
                            "dims {:?} hold {count} elements but the tensor has no data",
                            t.dims
                        )
                    } else {
                        format!(
                            "dims {:?} need {nbytes} bytes of {dtype} but raw_data has {}",
                            t.dims,
                            raw.len()
                        )
                    }));
                }
                raw
            } else {
                from_typed(&t, dtype, count)?
            }
        }
        Err(_) => {
            return Err(TensorError::Invalid(format!(
                "unknown data_location {}",
                t.data_location.unwrap_or(0)
            )))
        }
    };
    let data = clear_pad_nibble(dtype, count, data);
    Tensor::from_bytes(dtype, shape, data).map_err(|e| TensorError::Invalid(e.to_string()))
}

/// Decodes one serialized `TensorProto` on its own (an ONNX test-data `.pb` file, say) into its name
/// and value. `file` labels the messages; external data is refused and a tensor larger than
/// `max_bytes` is rejected before anything is allocated. An element type kiln cannot represent is
/// [`ImportError::Unsupported`], so callers can tell "not yet" from "broken".
pub fn decode_tensor_bytes(
    bytes: &[u8],
    file: &str,
    max_bytes: u64,
) -> Result<(String, Tensor), ImportError> {
    use prost::Message;
    let t = TensorProto::decode(bytes).map_err(|e| ImportError::Tensor {
        file: file.to_owned(),
        tensor: String::new(),
        msg: format!("not a TensorProto: {e}"),
    })?;
    let name = t.name().to_owned();
    let src = DataSource {
        base_dir: None,
        max_bytes,
    };
    match decode(t, src) {
        Ok(v) => Ok((name, v)),
        Err(TensorError::Unsupported(reason)) => {
            Err(ImportError::Unsupported(vec![crate::UnsupportedNode {
                file: file.to_owned(),
                node: name,
                op_type: "tensor".to_owned(),
                domain: String::new(),
                opset: 0,
                reason,
            }]))
        }
        Err(TensorError::Invalid(msg) | TensorError::External(msg)) => Err(ImportError::Tensor {
            file: file.to_owned(),
            tensor: name,
            msg,
        }),
    }
}

/// 4-bit tensors of odd length leave the high nibble of their last byte unused; zero it so equal
/// tensors have equal bytes (and hashes).
fn clear_pad_nibble(dtype: DType, count: usize, mut data: Vec<u8>) -> Vec<u8> {
    if dtype.bits() == 4 && count % 2 == 1 {
        if let Some(last) = data.last_mut() {
            *last &= 0x0f;
        }
    }
    data
}

fn typed_fields_empty(t: &TensorProto) -> bool {
    t.float_data.is_empty()
        && t.int32_data.is_empty()
        && t.int64_data.is_empty()
        && t.double_data.is_empty()
        && t.uint64_data.is_empty()
        && t.string_data.is_empty()
}

/// Data from the typed repeated fields, as little-endian bytes of `dtype`.
fn from_typed(t: &TensorProto, dtype: DType, count: usize) -> Result<Vec<u8>, TensorError> {
    let field = match dtype {
        DType::F32 => "float_data",
        DType::F64 => "double_data",
        DType::I64 => "int64_data",
        DType::U32 | DType::U64 => "uint64_data",
        _ => "int32_data",
    };
    let len = match field {
        "float_data" => t.float_data.len(),
        "double_data" => t.double_data.len(),
        "int64_data" => t.int64_data.len(),
        "uint64_data" => t.uint64_data.len(),
        _ => t.int32_data.len(),
    };
    let dims = &t.dims;
    if len == 0 && count > 0 {
        let present = [
            ("float_data", t.float_data.len()),
            ("int32_data", t.int32_data.len()),
            ("int64_data", t.int64_data.len()),
            ("double_data", t.double_data.len()),
            ("uint64_data", t.uint64_data.len()),
            ("string_data", t.string_data.len()),
        ]
        .into_iter()
        .find(|&(_, n)| n > 0);
        return Err(TensorError::Invalid(match present {
            Some((other, _)) => format!("{dtype} data must be in {field}, but it is in {other}"),
            None => format!("dims {dims:?} hold {count} elements but the tensor has no data"),
        }));
    }
    let mismatch = |have: usize| {
        TensorError::Invalid(format!(
            "dims {dims:?} hold {count} elements but {field} has {have}"
        ))
    };
    let out_of_range =
        |v: i64| TensorError::Invalid(format!("{field} value {v} is out of range for {dtype}"));

    let mut out = Vec::with_capacity(dtype.storage_bytes(count));
    match dtype {
        DType::F32 => {
            if len != count {
                return Err(mismatch(len));
            }
            t.float_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        DType::F64 => {
            if len != count {
                return Err(mismatch(len));
            }
            t.double_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        DType::I64 => {
            if len != count {
                return Err(mismatch(len));
            }
            t.int64_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        DType::U64 => {
            if len != count {
                return Err(mismatch(len));
            }
            t.uint64_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        DType::U32 => {
            if len != count {
                return Err(mismatch(len));
            }
            for &v in &t.uint64_data {
                let v = u32::try_from(v).map_err(|_| out_of_range(v as i64))?;
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        DType::I4 | DType::U4 => {
            let packed_len = count.div_ceil(2);
            if len == packed_len {
                // The ONNX encoding: each int32 holds one byte of two packed elements, low nibble
                // first. Writers may sign-extend the byte, so accept -128..=255 and keep 8 bits.
                for &v in &t.int32_data {
                    if !(-128..=255).contains(&v) {
                        return Err(out_of_range(v as i64));
                    }
                    out.push(v as u8);
                }
            } else if len == count {
                // One element per int32, as some writers produce: pack them here.
                let range = if dtype == DType::I4 { -8..=7 } else { 0..=15 };
                for pair in t.int32_data.chunks(2) {
                    let mut byte = 0u8;
                    for (k, &v) in pair.iter().enumerate() {
                        if !range.contains(&v) {
                            return Err(out_of_range(v as i64));
                        }
                        byte |= ((v as u8) & 0x0f) << (4 * k);
                    }
                    out.push(byte);
                }
            } else {
                return Err(TensorError::Invalid(format!(
                    "dims {dims:?} hold {count} 4-bit elements: {field} must have {packed_len} packed \
                     entries (or {count} unpacked), but has {len}"
                )));
            }
        }
        _ => {
            if len != count {
                return Err(mismatch(len));
            }
            let (lo, hi, width): (i64, i64, usize) = match dtype {
                DType::I32 => (i32::MIN as i64, i32::MAX as i64, 4),
                DType::I16 => (-32768, 32767, 2),
                DType::U16 => (0, 65535, 2),
                // Half floats are stored as their bit pattern; accept a sign-extended one too.
                DType::F16 | DType::BF16 => (-32768, 65535, 2),
                DType::I8 => (-128, 127, 1),
                DType::U8 => (0, 255, 1),
                DType::Bool => (0, 1, 1),
                // Every other dtype was handled above.
                _ => return Err(TensorError::Unsupported(format!("{dtype} in {field}"))),
            };
            for &v in &t.int32_data {
                let v = v as i64;
                if v < lo || v > hi {
                    return Err(out_of_range(v));
                }
                out.extend_from_slice(&v.to_le_bytes()[..width]);
            }
        }
    }
    Ok(out)
}

/// Reads the `nbytes` of a tensor whose data lives in a file next to the model.
fn read_external(
    t: &TensorProto,
    base_dir: Option<&Path>,
    nbytes: usize,
) -> Result<Vec<u8>, TensorError> {
    let err = |m: String| TensorError::External(m);
    let Some(base_dir) = base_dir else {
        return Err(err(
            "the model was loaded from memory without a folder, so external data files cannot be located".into(),
        ));
    };
    let get = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key() == key)
            .map(|e| e.value().to_owned())
    };
    let location = get("location").ok_or_else(|| err("no `location` entry".into()))?;
    let parse = |key: &str| -> Result<Option<u64>, TensorError> {
        match get(key) {
            None => Ok(None),
            Some(s) => s
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| err(format!("`{key}` is {s:?}, not a non-negative integer"))),
        }
    };
    let offset = parse("offset")?.unwrap_or(0);
    let length = parse("length")?;

    let rel = safe_relative_path(&location).map_err(err)?;
    let base = base_dir.canonicalize().map_err(|e| {
        err(format!(
            "cannot resolve the model's folder {}: {e}",
            base_dir.display()
        ))
    })?;
    let joined = base.join(&rel);
    let real = joined.canonicalize().map_err(|e| {
        err(format!(
            "cannot open {location:?} ({}): {e}",
            joined.display()
        ))
    })?;
    // Lexical checks cannot see symlinks; the resolved path must still be inside the folder.
    if !real.starts_with(&base) {
        return Err(err(format!(
            "{location:?} resolves to {}, outside the model's folder {}; refused",
            real.display(),
            base.display()
        )));
    }
    let mut file =
        File::open(&real).map_err(|e| err(format!("cannot open {}: {e}", real.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| err(format!("cannot stat {}: {e}", real.display())))?;
    if !meta.is_file() {
        return Err(err(format!("{} is not a regular file", real.display())));
    }
    let file_len = meta.len();
    if offset > file_len {
        return Err(err(format!(
            "offset {offset} is past the end of {location:?} ({file_len} bytes)"
        )));
    }
    let length = length.unwrap_or(file_len - offset);
    if length != nbytes as u64 {
        return Err(err(format!(
            "length is {length} bytes but the tensor's dims need {nbytes}"
        )));
    }
    match offset.checked_add(length) {
        Some(end) if end <= file_len => {}
        _ => {
            return Err(err(format!(
                "range {offset}..{} is past the end of {location:?} ({file_len} bytes)",
                offset as u128 + length as u128
            )))
        }
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| err(format!("cannot seek in {location:?}: {e}")))?;
    let mut buf = vec![0u8; nbytes];
    file.read_exact(&mut buf).map_err(|e| {
        err(format!(
            "cannot read {nbytes} bytes at offset {offset} of {location:?}: {e}"
        ))
    })?;
    Ok(buf)
}

/// A location relative to the model's folder that cannot leave it lexically: no absolute paths, and
/// `..` only where it stays inside (`a/../b` is fine, `../b` is not).
fn safe_relative_path(location: &str) -> Result<PathBuf, String> {
    if location.is_empty() {
        return Err("`location` is empty".into());
    }
    let p = Path::new(location);
    if p.is_absolute() || p.has_root() {
        return Err(format!(
            "absolute path {location:?} refused: external data must be relative to the model's folder"
        ));
    }
    let mut out = PathBuf::new();
    let mut depth = 0usize;
    for c in p.components() {
        match c {
            Component::Normal(s) => {
                out.push(s);
                depth += 1;
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return Err(format!(
                        "{location:?} escapes the model's folder through `..`; refused"
                    ));
                }
                out.pop();
                depth -= 1;
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("absolute path {location:?} refused"));
            }
        }
    }
    if depth == 0 {
        return Err(format!("{location:?} names the model's folder, not a file"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(safe_relative_path("w.bin").unwrap(), PathBuf::from("w.bin"));
        assert_eq!(
            safe_relative_path("./a/../b/w.bin").unwrap(),
            PathBuf::from("b/w.bin")
        );
        assert!(safe_relative_path("../w.bin")
            .unwrap_err()
            .contains("escapes"));
        assert!(safe_relative_path("a/../../w.bin")
            .unwrap_err()
            .contains("escapes"));
        assert!(safe_relative_path("/etc/passwd")
            .unwrap_err()
            .contains("absolute"));
        assert!(safe_relative_path("").is_err());
        assert!(safe_relative_path("a/..").is_err());
    }

    #[test]
    fn numel_is_checked() {
        assert_eq!(checked_numel(&[2, 3, 4]), Ok(24));
        assert_eq!(checked_numel(&[]), Ok(1));
        assert!(checked_numel(&[2, -1]).unwrap_err().contains("negative"));
        assert!(checked_numel(&[1 << 40, 1 << 40])
            .unwrap_err()
            .contains("overflow"));
    }
}
