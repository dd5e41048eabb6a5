//! The textual form: parser (inverse of [`crate::print`]).
//!
//! The grammar, one construct per line (blank lines are ignored):
//!
//! ```text
//! graph "NAME" {
//!   %N: TYPE[, %N.1: TYPE ...] = input {index=I}  # "node name"
//!   %N: TYPE = const [V, V, ...]  # "node name"
//!   %N: TYPE[, %N.1: TYPE ...] = OPNAME(%A, _, %B.1, ...) {KEY=VALUE, ...}  # "node name"
//!   output %N "output name"
//! }
//! ```
//!
//! `TYPE` is `dtype[dim,...]` where a dim is a number, a symbol `name` or a bounded symbol `name<=max`.
//! An attribute `VALUE` is an integer, a float (`1.5`, `1e-5`, `inf`, `-inf`, `nan`), a `[..]` list of
//! either, a quoted string or a dtype name. Strings use Rust's `{:?}` escapes. The `# "..."` comment
//! holds the node name; without it the node is named after its number.
//!
//! Text numbers only name values inside the text: the parser creates nodes in text order, so printing
//! the parsed graph numbers them the same way again. Operands must be defined on an earlier line (the
//! printer emits a topological order), which also rules out cycles. The result is not verified: callers
//! run [`crate::verify`].

use crate::attr::{Attr, Attrs};
use crate::{DType, Dim, Graph, NodeId, Op, Tensor, TensorType, Value, ValueInfo};
use std::collections::HashMap;

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
    let mut p = Parser {
        graph: Graph::default(),
        values: HashMap::new(),
        inputs: Vec::new(),
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty());

    let Some((line, header)) = lines.next() else {
        return Err(ParseError {
            line: 1,
            msg: "empty input: expected `graph \"NAME\" {`".into(),
        });
    };
    p.graph.name = at(line, header_line(header))?;

    let mut closed_at = None;
    for (line, l) in lines.by_ref() {
        let mut c = Cursor::new(l);
        c.skip_ws();
        if c.eat('}') {
            at(line, c.end())?;
            closed_at = Some(line);
            break;
        }
        at(line, p.statement(&mut c, line))?;
    }
    let Some(closed_at) = closed_at else {
        let last = text.lines().count().max(1);
        return Err(ParseError {
            line: last,
            msg: "unexpected end of input: missing closing `}`".into(),
        });
    };
    if let Some((line, _)) = lines.next() {
        return Err(ParseError {
            line,
            msg: format!("text after the closing `}}` of line {closed_at}"),
        });
    }
    p.finish_inputs()?;
    Ok(p.graph)
}

/// Attaches a line number to a line-local error.
fn at<T>(line: usize, r: Result<T, String>) -> Result<T, ParseError> {
    r.map_err(|msg| ParseError { line, msg })
}

fn header_line(l: &str) -> Result<String, String> {
    let mut c = Cursor::new(l);
    c.skip_ws();
    if c.word() != "graph" {
        return Err("expected `graph \"NAME\" {`".into());
    }
    c.skip_ws();
    let name = c.string()?;
    c.skip_ws();
    c.expect('{')?;
    c.end()?;
    Ok(name)
}

struct Parser {
    graph: Graph,
    /// Text number -> node created for it.
    values: HashMap<usize, NodeId>,
    /// Input nodes in text order: (line, declared index, node).
    inputs: Vec<(usize, usize, NodeId)>,
}

impl Parser {
    fn statement(&mut self, c: &mut Cursor, line: usize) -> Result<(), String> {
        if c.peek() == Some('%') {
            return self.node(c, line);
        }
        match c.word() {
            "output" => {
                let v = self.operand(c)?;
                c.skip_ws();
                let name = c.string()?;
                c.end()?;
                self.graph.outputs.push((name, v));
                Ok(())
            }
            "" => Err(format!(
                "expected a node (`%N: ...`), `output` or `}}`, found {}",
                c.found()
            )),
            w => Err(format!(
                "expected a node (`%N: ...`), `output` or `}}`, found `{w}`"
            )),
        }
    }

    /// `%N: TYPE[, %N.1: TYPE ...] = BODY  # "name"`.
    fn node(&mut self, c: &mut Cursor, line: usize) -> Result<(), String> {
        let mut number = None;
        let mut types = Vec::new();
        loop {
            c.skip_ws();
            let (n, slot) = c.value_ref()?;
            if *number.get_or_insert(n) != n || slot != types.len() {
                let want = if types.is_empty() {
                    format!("%{}", number.unwrap_or(n))
                } else {
                    format!("%{}.{}", number.unwrap_or(n), types.len())
                };
                return Err(format!(
                    "output {} of this node must be written `{want}`",
                    types.len()
                ));
            }
            c.skip_ws();
            c.expect(':')?;
            c.skip_ws();
            types.push(c.tensor_type()?);
            c.skip_ws();
            if !c.eat(',') {
                break;
            }
        }
        let n = number.unwrap_or_default();
        if self.values.contains_key(&n) {
            return Err(format!("%{n} is defined twice"));
        }
        c.skip_ws();
        c.expect('=')?;
        c.skip_ws();
        let op = c.word();
        if op.is_empty() {
            return Err(format!("expected an op name, found {}", c.found()));
        }
        let id = match op {
            "input" => {
                let attrs = attrs_opt(c)?;
                let name = self.name_comment(c, n)?;
                let index = single_attr(&attrs, "input", "index")?;
                let Attr::Int(index) = index else {
                    return Err("input: `index` must be an integer".into());
                };
                let index =
                    usize::try_from(*index).map_err(|_| format!("input: bad index {index}"))?;
                let [ty] = <[TensorType; 1]>::try_from(types)
                    .map_err(|_| "input: must have exactly one output")?;
                let v = self.graph.add_input(name, ty);
                self.inputs.push((line, index, v.node));
                v.node
            }
            "const" => {
                let [ty] = <[TensorType; 1]>::try_from(types)
                    .map_err(|_| "const: must have exactly one output")?;
                c.skip_ws();
                let t = const_body(c, &ty)?;
                let attrs = attrs_opt(c)?;
                if let Some((k, _)) = attrs.0.first() {
                    return Err(format!("const has no attributes, found `{k}`"));
                }
                let name = self.name_comment(c, n)?;
                self.graph.add_const(name, t).node
            }
            _ => {
                c.skip_ws();
                let operands = self.operands(c)?;
                let attrs = attrs_opt(c)?;
                let name = self.name_comment(c, n)?;
                let op = Op::from_text(op, &attrs).map_err(|e| format!("{op}: {e}"))?;
                check_attr_names(&op, &attrs)?;
                let outputs = types
                    .into_iter()
                    .enumerate()
                    .map(|(i, ty)| ValueInfo {
                        name: format!("{name}:{i}"),
                        ty,
                    })
                    .collect();
                let vs = self.graph.add_node_typed(name, op, &operands, outputs);
                vs[0].node
            }
        };
        self.values.insert(n, id);
        Ok(())
    }

    /// `(%a, _, %b.1)`.
    fn operands(&self, c: &mut Cursor) -> Result<Vec<Option<Value>>, String> {
        c.expect('(')?;
        let mut out = Vec::new();
        c.skip_ws();
        if c.eat(')') {
            return Ok(out);
        }
        loop {
            c.skip_ws();
            if c.eat('_') {
                out.push(None);
            } else {
                out.push(Some(self.operand(c)?));
            }
            c.skip_ws();
            if c.eat(')') {
                return Ok(out);
            }
            c.expect(',')?;
        }
    }

    /// A reference to a value defined on an earlier line.
    fn operand(&self, c: &mut Cursor) -> Result<Value, String> {
        c.skip_ws();
        let (n, slot) = c.value_ref()?;
        let shown = if slot == 0 {
            format!("%{n}")
        } else {
            format!("%{n}.{slot}")
        };
        let &node = self
            .values
            .get(&n)
            .ok_or_else(|| format!("{shown} is not defined on an earlier line"))?;
        let outputs = self.graph.node(node).outputs.len();
        if slot >= outputs {
            return Err(format!(
                "{shown} names output {slot}, but %{n} has {outputs} output(s)"
            ));
        }
        Ok(Value {
            node,
            slot: slot as u32,
        })
    }

    /// The optional `# "name"` comment, then the end of the line.
    fn name_comment(&self, c: &mut Cursor, n: usize) -> Result<String, String> {
        c.skip_ws();
        let name = if c.eat('#') {
            c.skip_ws();
            c.string()?
        } else {
            format!("v{n}")
        };
        c.end()?;
        Ok(name)
    }

    /// Makes `graph.inputs` follow the declared indices. Inputs are created in text order (so that
    /// node ids follow the text and printing reproduces it), which need not be index order.
    fn finish_inputs(&mut self) -> Result<(), ParseError> {
        let k = self.inputs.len();
        let mut slots: Vec<Option<NodeId>> = vec![None; k];
        for &(line, index, id) in &self.inputs {
            match slots.get_mut(index) {
                Some(s @ None) => *s = Some(id),
                Some(Some(_)) => {
                    return Err(ParseError {
                        line,
                        msg: format!("input index {index} is used twice"),
                    })
                }
                None => {
                    return Err(ParseError {
                        line,
                        msg: format!(
                            "input index {index} is out of range: the graph has {k} inputs"
                        ),
                    });
                }
            }
        }
        // Every slot is filled: k inputs with distinct indices below k.
        self.graph.inputs = slots.into_iter().flatten().collect();
        for (i, id) in self.graph.inputs.clone().into_iter().enumerate() {
            self.graph.node_mut(id).op = Op::Input(i);
        }
        Ok(())
    }
}

/// An optional `{k=v, ...}`.
fn attrs_opt(c: &mut Cursor) -> Result<Attrs, String> {
    c.skip_ws();
    let mut attrs = Attrs::default();
    if !c.eat('{') {
        return Ok(attrs);
    }
    c.skip_ws();
    if c.eat('}') {
        return Ok(attrs);
    }
    loop {
        c.skip_ws();
        let key = c.word();
        if key.is_empty()
            || !key
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        {
            return Err(format!(
                "expected an attribute name, found {}",
                if key.is_empty() {
                    c.found()
                } else {
                    format!("`{key}`")
                }
            ));
        }
        if attrs.0.iter().any(|(k, _)| k == key) {
            return Err(format!("attribute `{key}` is given twice"));
        }
        c.skip_ws();
        c.expect('=')?;
        c.skip_ws();
        let value = c
            .attr_value()
            .map_err(|e| format!("attribute `{key}`: {e}"))?;
        attrs.0.push((key.to_string(), value));
        c.skip_ws();
        if c.eat('}') {
            return Ok(attrs);
        }
        c.expect(',')?;
    }
}

/// An op chain as the `post` attribute spells it: `name{k=v, ...}, name, ...` (the empty string is
/// the empty chain). Each entry's attributes use the attribute grammar of a node line.
pub(crate) fn op_chain(text: &str) -> Result<Vec<(String, Attrs)>, String> {
    let mut c = Cursor::new(text);
    let mut out = Vec::new();
    c.skip_ws();
    if c.peek().is_none() {
        return Ok(out);
    }
    loop {
        c.skip_ws();
        let name = c.word();
        if name.is_empty() {
            return Err(format!("expected an op name, found {}", c.found()));
        }
        let attrs = attrs_opt(&mut c)?;
        out.push((name.to_string(), attrs));
        c.skip_ws();
        if c.peek().is_none() {
            return Ok(out);
        }
        c.expect(',')?;
    }
}

/// The only attribute of an op that has exactly one.
fn single_attr<'a>(attrs: &'a Attrs, op: &str, name: &str) -> Result<&'a Attr, String> {
    match attrs.0.as_slice() {
        [(k, v)] if k == name => Ok(v),
        _ => Err(format!("{op}: expected exactly the attribute `{name}`")),
    }
}

/// Rejects attributes the op does not have (its constructor would silently ignore them). Some
/// attributes are printed only when they differ from their default, so their default is accepted too.
fn check_attr_names(op: &Op, attrs: &Attrs) -> Result<(), String> {
    const PRINTED_WHEN_SET: [(&str, &str); 5] = [
        ("shape", "end"),
        ("reshape", "allowzero"),
        ("softmax", "flatten"),
        ("conv", "post"),
        ("gemm", "post"),
    ];
    let known = op.attrs();
    for (k, _) in &attrs.0 {
        let ok = known.iter().any(|(n, _)| n == k)
            || PRINTED_WHEN_SET.contains(&(op.name(), k.as_str()));
        if !ok {
            return Err(format!("`{}` has no attribute `{k}`", op.name()));
        }
    }
    Ok(())
}

/// `[v, v, ...]` for a constant of type `ty`.
fn const_body(c: &mut Cursor, ty: &TensorType) -> Result<Tensor, String> {
    if c.peek() == Some('<') {
        return Err(
            "this constant was elided by the printer (`<N values, hash=...>`); print with \
                    `PrintOptions { max_const_elems: usize::MAX }` to get text the parser can read"
                .into(),
        );
    }
    let dims = ty
        .dims()
        .ok_or_else(|| format!("a constant's type must have constant dims, got {ty}"))?;
    // The type parser already refused shapes whose element count overflows.
    let count: usize = dims.iter().product();
    c.expect('[')?;
    let mut toks = Vec::new();
    c.skip_ws();
    if !c.eat(']') {
        loop {
            c.skip_ws();
            let t = c.word();
            if t.is_empty() {
                return Err(format!("expected a number, found {}", c.found()));
            }
            // Refuse more values than the type holds before collecting them all.
            if toks.len() == count {
                return Err(format!("{ty} holds {count} values, but more are given"));
            }
            toks.push(t);
            c.skip_ws();
            if c.eat(']') {
                break;
            }
            c.expect(',')?;
        }
    }
    if toks.len() != count {
        return Err(format!(
            "{ty} holds {count} values, but {} are given",
            toks.len()
        ));
    }
    let dtype = ty.dtype;
    let bad = |t: &str| format!("`{t}` is not a valid {dtype} value");
    if dtype == DType::F64 {
        let v: Vec<f64> = toks
            .iter()
            .map(|t| t.parse::<f64>().map_err(|_| bad(t)))
            .collect::<Result<_, _>>()?;
        return Ok(Tensor::from_f64(dtype, dims, &v));
    }
    if dtype.is_float() {
        // The printer writes f32/f16/bf16 elements as the shortest text that reads back as the same
        // f32; going through f32 (exact in f64) then rounding to the dtype gives back the same bits.
        let v: Vec<f64> = toks
            .iter()
            .map(|t| t.parse::<f32>().map(f64::from).map_err(|_| bad(t)))
            .collect::<Result<_, _>>()?;
        return Ok(Tensor::from_f64(dtype, dims, &v));
    }
    let v: Vec<i64> = toks
        .iter()
        .map(|t| {
            if dtype == DType::U64 {
                // u64 is stored by its bits; from_i64 writes them back unchanged.
                return t.parse::<u64>().map(|u| u as i64).map_err(|_| bad(t));
            }
            let x = t.parse::<i64>().map_err(|_| bad(t))?;
            let (lo, hi) = int_range(dtype);
            if x < lo || x > hi {
                return Err(format!("{x} is out of range for {dtype}"));
            }
            Ok(x)
        })
        .collect::<Result<_, _>>()?;
    Ok(Tensor::from_i64(dtype, dims, &v))
}

/// Value range of a non-float dtype other than u64.
fn int_range(d: DType) -> (i64, i64) {
    match d {
        DType::I32 => (i32::MIN.into(), i32::MAX.into()),
        DType::I16 => (i16::MIN.into(), i16::MAX.into()),
        DType::I8 => (i8::MIN.into(), i8::MAX.into()),
        DType::U32 => (0, u32::MAX.into()),
        DType::U16 => (0, u16::MAX.into()),
        DType::U8 => (0, u8::MAX.into()),
        DType::Bool => (0, 1),
        DType::I4 => (-8, 7),
        DType::U4 => (0, 15),
        _ => (i64::MIN, i64::MAX),
    }
}

/// A cursor over one line.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn eat(&mut self, ch: char) -> bool {
        if self.peek() == Some(ch) {
            self.bump();
            true
        } else {
            false
        }
    }

    /// What is at the cursor, for error messages.
    fn found(&self) -> String {
        match self.peek() {
            None => "the end of the line".into(),
            Some(_) => {
                let r = self.rest();
                let shown: String = r.chars().take(20).collect();
                if shown.len() < r.len() {
                    format!("`{shown}...`")
                } else {
                    format!("`{shown}`")
                }
            }
        }
    }

    fn expect(&mut self, ch: char) -> Result<(), String> {
        if self.eat(ch) {
            Ok(())
        } else {
            Err(format!("expected `{ch}`, found {}", self.found()))
        }
    }

    /// Only whitespace may follow.
    fn end(&mut self) -> Result<(), String> {
        self.skip_ws();
        if self.peek().is_some() {
            return Err(format!(
                "unexpected {} at the end of the line",
                self.found()
            ));
        }
        Ok(())
    }

    /// A run of name/number characters: `relu`, `f32`, `-1.5e-3`, `inf`.
    fn word(&mut self) -> &'a str {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '+' | '-'))
        {
            self.bump();
        }
        &self.s[start..self.pos]
    }

    fn number<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, String> {
        let start = self.pos;
        while self.peek().is_some_and(|ch| ch.is_ascii_digit()) {
            self.bump();
        }
        let digits = &self.s[start..self.pos];
        if digits.is_empty() {
            return Err(format!("expected {what}, found {}", self.found()));
        }
        digits
            .parse()
            .map_err(|_| format!("{what} `{digits}` is too large"))
    }

    /// `%N` or `%N.S`, as (N, S).
    fn value_ref(&mut self) -> Result<(usize, usize), String> {
        if !self.eat('%') {
            return Err(format!("expected a value (`%N`), found {}", self.found()));
        }
        let n = self.number("a value number")?;
        let slot = if self.eat('.') {
            self.number("an output slot")?
        } else {
            0
        };
        Ok((n, slot))
    }

    /// `dtype[dim,...]`.
    fn tensor_type(&mut self) -> Result<TensorType, String> {
        let start = self.pos;
        while self.peek().is_some_and(|ch| ch.is_ascii_alphanumeric()) {
            self.bump();
        }
        let name = &self.s[start..self.pos];
        let dtype = DType::from_name(name).ok_or_else(|| format!("unknown dtype `{name}`"))?;
        self.expect('[')?;
        let mut shape = Vec::new();
        self.skip_ws();
        if !self.eat(']') {
            loop {
                self.skip_ws();
                shape.push(self.dim()?);
                self.skip_ws();
                if self.eat(']') {
                    break;
                }
                self.expect(',')?;
            }
        }
        // Element counts are computed with plain products all over the compiler; refuse types whose
        // count does not fit so that no later arithmetic can overflow on parsed text.
        let count = shape
            .iter()
            .filter_map(Dim::as_const)
            .try_fold(1usize, |a, d| a.checked_mul(d));
        if count.is_none_or(|n| n > i64::MAX as usize) {
            return Err(format!("type {dtype}[..] has too many elements"));
        }
        Ok(TensorType { dtype, shape })
    }

    /// `123`, `name` or `name<=max`.
    fn dim(&mut self) -> Result<Dim, String> {
        if self.peek().is_some_and(|ch| ch.is_ascii_digit()) {
            return Ok(Dim::Const(self.number("a dimension")?));
        }
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|ch| !matches!(ch, ',' | ']' | '<') && !ch.is_whitespace())
        {
            self.bump();
        }
        let name = &self.s[start..self.pos];
        if name.is_empty() {
            return Err(format!("expected a dimension, found {}", self.found()));
        }
        let max = if self.rest().starts_with("<=") {
            self.pos += 2;
            Some(self.number("a dimension bound")?)
        } else {
            None
        };
        Ok(Dim::Sym {
            name: name.to_string(),
            max,
        })
    }

    /// A quoted string with Rust `{:?}` escapes.
    fn string(&mut self) -> Result<String, String> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err("unterminated string".into()),
                Some('"') => return Ok(out),
                Some('\\') => out.push(self.escape()?),
                Some(ch) => out.push(ch),
            }
        }
    }

    fn escape(&mut self) -> Result<char, String> {
        Ok(match self.bump() {
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some('0') => '\0',
            Some('\\') => '\\',
            Some('"') => '"',
            Some('\'') => '\'',
            Some('u') => {
                self.expect('{')?;
                let start = self.pos;
                while self.peek().is_some_and(|ch| ch.is_ascii_hexdigit()) {
                    self.bump();
                }
                let hex = &self.s[start..self.pos];
                self.expect('}')?;
                u32::from_str_radix(hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("bad unicode escape `\\u{{{hex}}}`"))?
            }
            Some(ch) => return Err(format!("unknown escape `\\{ch}`")),
            None => return Err("unterminated string".into()),
        })
    }

    /// An attribute value: number, list of numbers, string or dtype.
    fn attr_value(&mut self) -> Result<Attr, String> {
        match self.peek() {
            Some('"') => Ok(Attr::Str(self.string()?)),
            Some('[') => {
                self.bump();
                let mut items = Vec::new();
                self.skip_ws();
                if !self.eat(']') {
                    loop {
                        self.skip_ws();
                        match self.scalar()? {
                            a @ (Attr::Int(_) | Attr::Float(_)) => items.push(a),
                            _ => return Err("lists hold numbers only".into()),
                        }
                        self.skip_ws();
                        if self.eat(']') {
                            break;
                        }
                        self.expect(',')?;
                    }
                }
                // Floats print with a `.`, an exponent, `inf` or `nan`, so a list with no float token is
                // an integer list (including the empty list, which the float getters accept too).
                if items.iter().all(|a| matches!(a, Attr::Int(_))) {
                    Ok(Attr::Ints(
                        items
                            .into_iter()
                            .map(|a| if let Attr::Int(v) = a { v } else { 0 })
                            .collect(),
                    ))
                } else {
                    Ok(Attr::Floats(
                        items
                            .into_iter()
                            .map(|a| match a {
                                Attr::Int(v) => v as f32,
                                Attr::Float(v) => v,
                                _ => 0.0,
                            })
                            .collect(),
                    ))
                }
            }
            _ => self.scalar(),
        }
    }

    /// An integer, a float or a dtype name.
    fn scalar(&mut self) -> Result<Attr, String> {
        let w = self.word();
        if w.is_empty() {
            return Err(format!("expected a value, found {}", self.found()));
        }
        let digits = w.strip_prefix('-').unwrap_or(w);
        if !digits.is_empty() && digits.chars().all(|ch| ch.is_ascii_digit()) {
            return w
                .parse()
                .map(Attr::Int)
                .map_err(|_| format!("integer `{w}` is out of range"));
        }
        if let Some(d) = DType::from_name(w) {
            return Ok(Attr::Type(d));
        }
        w.parse::<f32>()
            .map(Attr::Float)
            .map_err(|_| format!("`{w}` is not a number or dtype"))
    }
}
