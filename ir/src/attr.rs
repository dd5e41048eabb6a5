//! Op attributes as the textual IR spells them: `{strides=[1,1], alpha=0.01, to=f32}`.

use crate::DType;
use std::fmt;

/// One attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// An integer.
    Int(i64),
    /// A float. Printed with Rust's shortest round-tripping form.
    Float(f32),
    /// A list of integers.
    Ints(Vec<i64>),
    /// A list of floats.
    Floats(Vec<f32>),
    /// A string (printed quoted).
    Str(String),
    /// An element type.
    Type(DType),
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Int(v) => write!(f, "{v}"),
            Attr::Float(v) => write!(f, "{}", fmt_f32(*v)),
            Attr::Ints(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
            Attr::Floats(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}", fmt_f32(*x))?;
                }
                f.write_str("]")
            }
            Attr::Str(s) => write!(f, "{s:?}"),
            Attr::Type(t) => write!(f, "{t}"),
        }
    }
}

/// Formats a float so that it parses back to the same bits and always reads as a float
/// (`1.0`, not `1`; `inf`, `-inf`, `nan`).
pub fn fmt_f32(v: f32) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        format!("{v:?}")
    }
}

/// The attributes of one op, in print order, with typed getters for op constructors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attrs(pub Vec<(String, Attr)>);

/// An attribute that is missing or of the wrong kind.
#[derive(Debug, thiserror::Error)]
#[error("attribute `{name}`: {msg}")]
pub struct AttrError {
    /// Attribute name.
    pub name: String,
    /// What is wrong.
    pub msg: String,
}

impl Attrs {
    fn get(&self, name: &str) -> Option<&Attr> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }

    fn err(name: &str, msg: &str) -> AttrError {
        AttrError {
            name: name.into(),
            msg: msg.into(),
        }
    }

    /// An integer attribute, or `default` when absent.
    pub fn int(&self, name: &str, default: Option<i64>) -> Result<i64, AttrError> {
        match self.get(name) {
            Some(Attr::Int(v)) => Ok(*v),
            Some(_) => Err(Self::err(name, "expected an integer")),
            None => default.ok_or_else(|| Self::err(name, "missing")),
        }
    }

    /// A non-negative integer attribute as `usize` (axes, group counts), or `default` when absent.
    /// A negative value is an error rather than a huge `usize`.
    pub fn usize(&self, name: &str, default: Option<usize>) -> Result<usize, AttrError> {
        match self.get(name) {
            Some(Attr::Int(v)) => {
                usize::try_from(*v).map_err(|_| Self::err(name, "expected a non-negative integer"))
            }
            Some(_) => Err(Self::err(name, "expected an integer")),
            None => default.ok_or_else(|| Self::err(name, "missing")),
        }
    }

    /// A float attribute (an integer literal is accepted), or `default` when absent.
    pub fn float(&self, name: &str, default: Option<f32>) -> Result<f32, AttrError> {
        match self.get(name) {
            Some(Attr::Float(v)) => Ok(*v),
            Some(Attr::Int(v)) => Ok(*v as f32),
            Some(_) => Err(Self::err(name, "expected a float")),
            None => default.ok_or_else(|| Self::err(name, "missing")),
        }
    }

    /// An integer-list attribute, or `default` when absent.
    pub fn ints(&self, name: &str, default: Option<Vec<i64>>) -> Result<Vec<i64>, AttrError> {
        match self.get(name) {
            Some(Attr::Ints(v)) => Ok(v.clone()),
            Some(_) => Err(Self::err(name, "expected a list of integers")),
            None => default.ok_or_else(|| Self::err(name, "missing")),
        }
    }

    /// A list of non-negative integers as `usize`.
    pub fn usizes(&self, name: &str, default: Option<Vec<usize>>) -> Result<Vec<usize>, AttrError> {
        match self.get(name) {
            Some(Attr::Ints(v)) => v
                .iter()
                .map(|&x| {
                    usize::try_from(x)
                        .map_err(|_| Self::err(name, "expected non-negative integers"))
                })
                .collect(),
            Some(_) => Err(Self::err(name, "expected a list of integers")),
            None => default.ok_or_else(|| Self::err(name, "missing")),
        }
    }

    /// A float-list attribute.
    pub fn floats(&self, name: &str, default: Option<Vec<f32>>) -> Result<Vec<f32>, AttrError> {
        match self.get(name) {
            Some(Attr::Floats(v)) => Ok(v.clone()),
            Some(Attr::Ints(v)) => Ok(v.iter().map(|&x| x as f32).collect()),
            Some(_) => Err(Self::err(name, "expected a list of floats")),
            None => default.ok_or_else(|| Self::err(name, "missing")),
        }
    }

    /// A dtype attribute.
    pub fn dtype(&self, name: &str) -> Result<DType, AttrError> {
        match self.get(name) {
            Some(Attr::Type(t)) => Ok(*t),
            Some(_) => Err(Self::err(name, "expected a dtype")),
            None => Err(Self::err(name, "missing")),
        }
    }

    /// A string attribute.
    pub fn string(&self, name: &str, default: Option<&str>) -> Result<String, AttrError> {
        match self.get(name) {
            Some(Attr::Str(s)) => Ok(s.clone()),
            Some(_) => Err(Self::err(name, "expected a string")),
            None => default
                .map(str::to_string)
                .ok_or_else(|| Self::err(name, "missing")),
        }
    }

    /// A boolean stored as 0/1.
    pub fn bool(&self, name: &str, default: bool) -> Result<bool, AttrError> {
        Ok(self.int(name, Some(default as i64))? != 0)
    }
}
