//! Minimal `.npy` reading and writing (C-order, little-endian), for `kiln run`.

use kiln_ir::DType;
use std::io;

/// An n-d array as raw little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian element bytes, row-major.
    pub data: Vec<u8>,
}

fn descr(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I16 => "<i2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
        _ => return None,
    })
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Parses `.npy` bytes (format versions 1-3).
pub fn parse(bytes: &[u8]) -> io::Result<Array> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file (bad magic)"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
        v => return Err(bad(format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + hlen)
        .ok_or_else(|| bad("truncated .npy header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("non-UTF-8 .npy header"))?;
    let field = |key: &str| -> io::Result<&str> {
        let at = header
            .find(&format!("'{key}'"))
            .ok_or_else(|| bad(format!(".npy header lacks '{key}'")))?;
        Ok(header[at + key.len() + 2..]
            .trim_start()
            .trim_start_matches(':')
            .trim_start())
    };
    let d = field("descr")?;
    let d = d
        .strip_prefix('\'')
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| bad("bad descr"))?;
    let d = d.replace('=', "<");
    let dtype = DType::ALL
        .into_iter()
        .find(|&t| {
            descr(t)
                .map(|s| s == d || s.replace('|', "<") == d.replace('|', "<"))
                .unwrap_or(false)
        })
        .ok_or_else(|| bad(format!("unsupported .npy dtype {d}")))?;
    if field("fortran_order")?.starts_with("True") {
        return Err(bad(
            "Fortran-order .npy arrays are not supported; save with np.ascontiguousarray",
        ));
    }
    let s = field("shape")?;
    let s = s
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("bad shape"))?;
    let shape = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<usize>()
                .map_err(|_| bad(format!("bad dimension {p:?}")))
        })
        .collect::<io::Result<Vec<usize>>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| bad("shape overflows"))?;
    let need = dtype.storage_bytes(count);
    let data = bytes
        .get(start + hlen..)
        .ok_or_else(|| bad("truncated .npy data"))?;
    if data.len() != need {
        return Err(bad(format!(
            "{} bytes of data for shape {shape:?} of {d}, expected {need}",
            data.len()
        )));
    }
    Ok(Array {
        dtype,
        shape,
        data: data.to_vec(),
    })
}

/// Serializes an array as `.npy` version 1.0.
pub fn write(a: &Array) -> io::Result<Vec<u8>> {
    let d = descr(a.dtype).ok_or_else(|| bad(format!("cannot write {} as .npy", a.dtype)))?;
    let shape = match a.shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", a.shape[0]),
        _ => format!(
            "({})",
            a.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{d}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&a.data);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let a = Array {
            dtype: DType::F32,
            shape: vec![2, 3],
            data: (0..24).collect(),
        };
        let b = parse(&write(&a).unwrap()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn parses_numpy_written_header() {
        // Header as numpy 1.x/2.x writes it for np.zeros((1, 2), np.float32).
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        let mut h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }".to_string();
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(&[0u8; 8]);
        let a = parse(&bytes).unwrap();
        assert_eq!((a.dtype, a.shape), (DType::F32, vec![1, 2]));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"hello").is_err());
        assert!(parse(b"\x93NUMPY\x01\x00\xff\xff").is_err());
    }
}
