//! The textual form: parser (inverse of [`crate::print`]).

use crate::Graph;

/// A syntax or semantic error in textual IR, with its line number.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

/// Parses the textual form printed by [`crate::print`] with all constants in full.
pub fn parse(text: &str) -> Result<Graph, ParseError> {
    let _ = text;
    Err(ParseError { line: 0, msg: "PARSER-PENDING".into() })
}
