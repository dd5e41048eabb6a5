//! Dimensions, shapes and tensor types.

use crate::DType;
use std::fmt;

/// One dimension of a shape.
///
/// Today every dimension reaching the backend is a constant: the frontend binds symbolic ONNX dims
/// (`dim_param`) with `--dim NAME=VALUE`. `Sym` exists so that bounded dynamic shapes (sequence length
/// up to N, KV caches) can be added without changing the IR's types.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A dimension known at compile time.
    Const(usize),
    /// A named dimension, known only at run time, never larger than `max` when that is given.
    Sym {
        /// Symbol name, as in the ONNX `dim_param`.
        name: String,
        /// Upper bound, used to size the arena.
        max: Option<usize>,
    },
}

impl Dim {
    /// The constant value, if known.
    pub fn as_const(&self) -> Option<usize> {
        match self {
            Dim::Const(n) => Some(*n),
            Dim::Sym { .. } => None,
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Self {
        Dim::Const(n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Const(n) => write!(f, "{n}"),
            Dim::Sym { name, max: None } => write!(f, "{name}"),
            Dim::Sym { name, max: Some(m) } => write!(f, "{name}<={m}"),
        }
    }
}

/// The fact every value carries: element type and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first. Rank 0 is a scalar.
    pub shape: Vec<Dim>,
}

impl TensorType {
    /// A tensor type with constant dimensions.
    pub fn new(dtype: DType, dims: &[usize]) -> Self {
        TensorType {
            dtype,
            shape: dims.iter().map(|&d| Dim::Const(d)).collect(),
        }
    }

    /// Rank (number of dimensions).
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The constant dimensions, or `None` if any is symbolic.
    pub fn dims(&self) -> Option<Vec<usize>> {
        self.shape.iter().map(Dim::as_const).collect()
    }

    /// Element count when every dimension is constant.
    pub fn num_elements(&self) -> Option<usize> {
        self.dims().map(|d| d.iter().product())
    }

    /// Bytes of dense storage when every dimension is constant.
    pub fn byte_size(&self) -> Option<usize> {
        self.num_elements().map(|n| self.dtype.storage_bytes(n))
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}
