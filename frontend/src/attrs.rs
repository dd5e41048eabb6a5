//! Typed access to a node's ONNX attributes, and the error type of one node's mapping.

use crate::onnx::attribute_proto::AttributeType;
use crate::onnx::{AttributeProto, TensorProto};

/// Why one node could not be mapped.
#[derive(Debug)]
pub(crate) enum NodeError {
    /// Legal ONNX kiln does not handle yet: collected, and import goes on past the node.
    Unsupported(String),
    /// The node breaks its op's rules: import stops.
    Invalid(String),
}

/// Result of mapping one node.
pub(crate) type NResult<T> = Result<T, NodeError>;

/// Shorthand for an [`NodeError::Invalid`].
pub(crate) fn invalid<T>(msg: impl Into<String>) -> NResult<T> {
    Err(NodeError::Invalid(msg.into()))
}

/// Shorthand for an [`NodeError::Unsupported`].
pub(crate) fn unsupported<T>(msg: impl Into<String>) -> NResult<T> {
    Err(NodeError::Unsupported(msg.into()))
}

/// A node's attributes.
#[derive(Clone, Copy)]
pub(crate) struct Attrs<'n> {
    list: &'n [AttributeProto],
}

/// The kind of an attribute. Very old writers leave `type` out, so fall back to whichever value field
/// is present.
pub(crate) fn kind(a: &AttributeProto) -> AttributeType {
    match a.r#type() {
        AttributeType::Undefined => {
            if a.f.is_some() {
                AttributeType::Float
            } else if a.i.is_some() {
                AttributeType::Int
            } else if a.s.is_some() {
                AttributeType::String
            } else if a.t.is_some() {
                AttributeType::Tensor
            } else if a.g.is_some() {
                AttributeType::Graph
            } else if !a.floats.is_empty() {
                AttributeType::Floats
            } else if !a.ints.is_empty() {
                AttributeType::Ints
            } else if !a.strings.is_empty() {
                AttributeType::Strings
            } else {
                AttributeType::Undefined
            }
        }
        t => t,
    }
}

impl<'n> Attrs<'n> {
    pub(crate) fn new(list: &'n [AttributeProto]) -> Self {
        Attrs { list }
    }

    /// The attribute named `name`, if present.
    pub(crate) fn get(&self, name: &str) -> Option<&'n AttributeProto> {
        self.list.iter().find(|a| a.name() == name)
    }

    /// Whether `name` is present.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn typed(&self, name: &str, want: AttributeType) -> NResult<Option<&'n AttributeProto>> {
        let Some(a) = self.get(name) else {
            return Ok(None);
        };
        let k = kind(a);
        let list_kind = matches!(
            want,
            AttributeType::Ints | AttributeType::Floats | AttributeType::Strings
        );
        // An empty list written without a type is indistinguishable from any other empty list.
        if k == want || (k == AttributeType::Undefined && list_kind) {
            Ok(Some(a))
        } else {
            invalid(format!(
                "attribute `{name}` must be {}, got {}",
                want.as_str_name(),
                k.as_str_name()
            ))
        }
    }

    /// An `INT` attribute.
    pub(crate) fn int(&self, name: &str) -> NResult<Option<i64>> {
        Ok(self.typed(name, AttributeType::Int)?.map(|a| a.i()))
    }

    /// An `INT` attribute with a default.
    pub(crate) fn int_or(&self, name: &str, default: i64) -> NResult<i64> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    /// An `INT` attribute used as a flag: 0 or 1.
    pub(crate) fn flag(&self, name: &str, default: bool) -> NResult<bool> {
        match self.int(name)? {
            None => Ok(default),
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(v) => invalid(format!("attribute `{name}` must be 0 or 1, got {v}")),
        }
    }

    /// An `INTS` attribute.
    pub(crate) fn ints(&self, name: &str) -> NResult<Option<&'n [i64]>> {
        Ok(self
            .typed(name, AttributeType::Ints)?
            .map(|a| a.ints.as_slice()))
    }

    /// A `FLOAT` attribute.
    pub(crate) fn float(&self, name: &str) -> NResult<Option<f32>> {
        Ok(self.typed(name, AttributeType::Float)?.map(|a| a.f()))
    }

    /// A `FLOAT` attribute with a default.
    pub(crate) fn float_or(&self, name: &str, default: f32) -> NResult<f32> {
        Ok(self.float(name)?.unwrap_or(default))
    }

    /// A `FLOATS` attribute.
    pub(crate) fn floats(&self, name: &str) -> NResult<Option<&'n [f32]>> {
        Ok(self
            .typed(name, AttributeType::Floats)?
            .map(|a| a.floats.as_slice()))
    }

    /// A `STRING` attribute, which must be UTF-8.
    pub(crate) fn string(&self, name: &str) -> NResult<Option<&'n str>> {
        match self.typed(name, AttributeType::String)? {
            None => Ok(None),
            Some(a) => std::str::from_utf8(a.s())
                .map(Some)
                .map_err(|_| NodeError::Invalid(format!("attribute `{name}` is not UTF-8"))),
        }
    }

    /// A `TENSOR` attribute.
    pub(crate) fn tensor(&self, name: &str) -> NResult<Option<&'n TensorProto>> {
        Ok(self
            .typed(name, AttributeType::Tensor)?
            .and_then(|a| a.t.as_ref()))
    }

    /// Every attribute name, in file order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &'n str> {
        self.list.iter().map(|a| a.name())
    }

    /// The first name that appears twice, if any.
    pub(crate) fn duplicate(&self) -> Option<&'n str> {
        let mut seen = std::collections::HashSet::new();
        self.names().find(|n| !seen.insert(*n))
    }

    /// An attribute that refers to an enclosing function's attribute (only legal inside functions).
    pub(crate) fn reference(&self) -> Option<&'n AttributeProto> {
        self.list.iter().find(|a| !a.ref_attr_name().is_empty())
    }
}
