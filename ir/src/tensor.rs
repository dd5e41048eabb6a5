//! Constant tensors: weights, folded values and reference-evaluator results.

use crate::{DType, TensorType};
use half::{bf16, f16};
use std::fmt;
use std::sync::Arc;

/// A dense constant tensor.
///
/// Data is stored as little-endian bytes in ONNX layout (row-major); 4-bit types are packed two per byte,
/// low nibble first, exactly as ONNX stores them. The bytes are shared, so cloning is cheap.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Arc<[u8]>,
}

/// Error building a tensor from bytes of the wrong length.
#[derive(Debug, thiserror::Error)]
#[error("tensor of type {dtype}{shape:?} needs {expected} bytes of data, got {actual}")]
pub struct TensorSizeError {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Bytes the shape needs.
    pub expected: usize,
    /// Bytes given.
    pub actual: usize,
}

impl Tensor {
    /// Builds a tensor from raw little-endian bytes, checking their length.
    pub fn from_bytes(
        dtype: DType,
        shape: Vec<usize>,
        data: Vec<u8>,
    ) -> Result<Tensor, TensorSizeError> {
        let count = checked_count(&shape);
        let expected = count.map(|c| dtype.storage_bytes(c));
        if expected != Some(data.len()) {
            return Err(TensorSizeError {
                dtype,
                shape,
                expected: expected.unwrap_or(usize::MAX),
                actual: data.len(),
            });
        }
        Ok(Tensor {
            dtype,
            shape,
            data: data.into(),
        })
    }

    /// A tensor of zeros.
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            dtype,
            data: vec![0u8; dtype.storage_bytes(n)].into(),
            shape,
        }
    }

    /// Builds a tensor from f64 values, converting to `dtype` (rounding to nearest for floats,
    /// truncating toward zero and wrapping for integers, as a C cast would; bool is `v != 0`).
    pub fn from_f64(dtype: DType, shape: Vec<usize>, values: &[f64]) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "from_f64: shape/value count mismatch"
        );
        let mut out = Vec::with_capacity(dtype.storage_bytes(values.len()));
        match dtype {
            DType::F32 => values
                .iter()
                .for_each(|&v| out.extend_from_slice(&(v as f32).to_le_bytes())),
            DType::F64 => values
                .iter()
                .for_each(|&v| out.extend_from_slice(&v.to_le_bytes())),
            // Through f32 rounded to odd, so that the one rounding to nearest even that follows is
            // correct (`half`'s own f64 conversions round twice).
            DType::F16 => values.iter().for_each(|&v| {
                out.extend_from_slice(&f16::from_f32(f64_to_f32_odd(v)).to_le_bytes())
            }),
            DType::BF16 => values.iter().for_each(|&v| {
                out.extend_from_slice(&bf16::from_f32(f64_to_f32_odd(v)).to_le_bytes())
            }),
            DType::Bool => values.iter().for_each(|&v| out.push((v != 0.0) as u8)),
            _ => {
                let ints: Vec<i64> = values.iter().map(|&v| float_to_int(v, dtype)).collect();
                return Tensor::from_i64(dtype, shape, &ints);
            }
        }
        Tensor {
            dtype,
            shape,
            data: out.into(),
        }
    }

    /// Builds a tensor from f32 values.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Tensor {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::from_bytes(DType::F32, shape, data).expect("from_f32: shape/value count mismatch")
    }

    /// Builds a tensor from i64 values, converting to `dtype` (integers wrap as a C cast would).
    pub fn from_i64(dtype: DType, shape: Vec<usize>, values: &[i64]) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "from_i64: shape/value count mismatch"
        );
        let mut out = Vec::with_capacity(dtype.storage_bytes(values.len()));
        match dtype {
            DType::F32 | DType::F64 | DType::F16 | DType::BF16 => {
                let f: Vec<f64> = values.iter().map(|&v| v as f64).collect();
                return Tensor::from_f64(dtype, shape, &f);
            }
            DType::I64 | DType::U64 => values
                .iter()
                .for_each(|&v| out.extend_from_slice(&v.to_le_bytes())),
            DType::I32 | DType::U32 => values
                .iter()
                .for_each(|&v| out.extend_from_slice(&(v as i32).to_le_bytes())),
            DType::I16 | DType::U16 => values
                .iter()
                .for_each(|&v| out.extend_from_slice(&(v as i16).to_le_bytes())),
            DType::I8 | DType::U8 => values.iter().for_each(|&v| out.push(v as u8)),
            DType::Bool => values.iter().for_each(|&v| out.push((v != 0) as u8)),
            DType::I4 | DType::U4 => {
                for pair in values.chunks(2) {
                    let lo = (pair[0] as u8) & 0xf;
                    let hi = pair.get(1).map_or(0, |&v| (v as u8) & 0xf);
                    out.push(lo | (hi << 4));
                }
            }
        }
        Tensor {
            dtype,
            shape,
            data: out.into(),
        }
    }

    /// A scalar (rank 0) tensor.
    pub fn scalar_f64(dtype: DType, v: f64) -> Tensor {
        Tensor::from_f64(dtype, vec![], &[v])
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The tensor's type.
    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype, &self.shape)
    }

    /// Same data, new shape (element count must match).
    pub fn reshaped(&self, shape: Vec<usize>) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.len(),
            "reshaped: element count mismatch"
        );
        Tensor {
            dtype: self.dtype,
            shape,
            data: self.data.clone(),
        }
    }

    /// Element `i` as f64 (integers converted exactly where they fit).
    pub fn get_f64(&self, i: usize) -> f64 {
        let d = &self.data;
        match self.dtype {
            DType::F32 => f32::from_le_bytes(d[i * 4..i * 4 + 4].try_into().unwrap()) as f64,
            DType::F64 => f64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().unwrap()),
            DType::F16 => f16::from_le_bytes([d[i * 2], d[i * 2 + 1]]).to_f64(),
            DType::BF16 => bf16::from_le_bytes([d[i * 2], d[i * 2 + 1]]).to_f64(),
            DType::U64 => u64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().unwrap()) as f64,
            _ => self.get_i64(i) as f64,
        }
    }

    /// Element `i` as i64 (floats truncated toward zero, u64 reinterpreted).
    pub fn get_i64(&self, i: usize) -> i64 {
        let d = &self.data;
        match self.dtype {
            DType::F32 | DType::F64 | DType::F16 | DType::BF16 => self.get_f64(i) as i64,
            DType::I64 | DType::U64 => i64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().unwrap()),
            DType::I32 => i32::from_le_bytes(d[i * 4..i * 4 + 4].try_into().unwrap()) as i64,
            DType::U32 => u32::from_le_bytes(d[i * 4..i * 4 + 4].try_into().unwrap()) as i64,
            DType::I16 => i16::from_le_bytes([d[i * 2], d[i * 2 + 1]]) as i64,
            DType::U16 => u16::from_le_bytes([d[i * 2], d[i * 2 + 1]]) as i64,
            DType::I8 => d[i] as i8 as i64,
            DType::U8 | DType::Bool => d[i] as i64,
            DType::I4 | DType::U4 => {
                let nib = (d[i / 2] >> ((i % 2) * 4)) & 0xf;
                if self.dtype == DType::I4 {
                    ((nib << 4) as i8 >> 4) as i64
                } else {
                    nib as i64
                }
            }
        }
    }

    /// All elements as f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.get_f64(i)).collect()
    }

    /// All elements as f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        (0..self.len()).map(|i| self.get_f64(i) as f32).collect()
    }

    /// All elements as i64.
    pub fn to_i64_vec(&self) -> Vec<i64> {
        (0..self.len()).map(|i| self.get_i64(i)).collect()
    }

    /// Converts to another dtype (ONNX `Cast` semantics for the supported pairs).
    pub fn cast(&self, to: DType) -> Tensor {
        if to == self.dtype {
            return self.clone();
        }
        if self.dtype.is_float() {
            Tensor::from_f64(to, self.shape.clone(), &self.to_f64_vec())
        } else if to == DType::F32 {
            // Straight to f32 (correctly rounded), not through f64, which would round twice for
            // 64-bit integers above 2^53; u64 is read unsigned.
            let v: Vec<f32> = (0..self.len())
                .map(|i| match self.dtype {
                    DType::U64 => self.get_i64(i) as u64 as f32,
                    _ => self.get_i64(i) as f32,
                })
                .collect();
            Tensor::from_f32(self.shape.clone(), &v)
        } else if self.dtype == DType::U64 && to.is_float() {
            Tensor::from_f64(to, self.shape.clone(), &self.to_f64_vec())
        } else {
            Tensor::from_i64(to, self.shape.clone(), &self.to_i64_vec())
        }
    }

    /// A tensor of this dtype and `shape` whose element `k` is element `picks[k]` of this tensor.
    /// Bits are copied exactly (NaN payloads, `-0.0`), so data movement ops never round.
    ///
    /// Panics if `picks.len()` differs from the element count of `shape` or an index is out of range.
    pub fn take(&self, shape: Vec<usize>, picks: &[usize]) -> Tensor {
        Tensor::take_from(self.dtype, shape, &[self], picks.iter().map(|&i| (0, i)))
    }

    /// A tensor of `dtype` and `shape` whose element `k` is element `e` of `sources[s]`, where `(s, e)`
    /// is the `k`-th item of `picks`. Every source must have `dtype` (Concat joins several tensors).
    pub(crate) fn take_from(
        dtype: DType,
        shape: Vec<usize>,
        sources: &[&Tensor],
        picks: impl Iterator<Item = (usize, usize)>,
    ) -> Tensor {
        let n: usize = shape.iter().product();
        assert!(
            sources.iter().all(|t| t.dtype == dtype),
            "take_from: sources of different dtypes"
        );
        if dtype.bits().is_multiple_of(8) {
            let w = dtype.bits() / 8;
            let mut out = Vec::with_capacity(n * w);
            for (s, e) in picks {
                out.extend_from_slice(&sources[s].data[e * w..(e + 1) * w]);
            }
            assert_eq!(
                out.len(),
                n * w,
                "take_from: pick count differs from the shape"
            );
            Tensor {
                dtype,
                shape,
                data: out.into(),
            }
        } else {
            // Packed 4-bit types: go through the integer value, which from_i64 packs back exactly.
            let vals: Vec<i64> = picks.map(|(s, e)| sources[s].get_i64(e)).collect();
            Tensor::from_i64(dtype, shape, &vals)
        }
    }

    /// A stable 64-bit FNV-1a hash of dtype, shape and bytes (used to name and deduplicate weights).
    pub fn content_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: u8| {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        };
        eat(self.dtype as u8);
        for &d in &self.shape {
            d.to_le_bytes().into_iter().for_each(&mut eat);
        }
        self.data.iter().copied().for_each(eat);
        h
    }
}

/// `v` rounded to f32 toward zero, with the last bit set when that was inexact ("round to odd").
/// Rounding the result to nearest once more, to a format with at least two fewer significant bits
/// (binary16, bfloat16), gives the correctly rounded value of `v`.
fn f64_to_f32_odd(v: f64) -> f32 {
    let r = v as f32;
    if v.is_nan() || r as f64 == v {
        return r;
    }
    let mut bits = r.to_bits();
    if (r as f64).abs() > v.abs() {
        // Rounded away from zero (possibly to inf): step back toward zero.
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}

fn float_to_int(v: f64, dtype: DType) -> i64 {
    if v.is_nan() {
        return 0;
    }
    match dtype {
        DType::U64 => (v as u64) as i64,
        _ => v as i64,
    }
}

fn checked_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({}, {} bytes)", self.ty(), self.data.len())
    }
}
