//! Fused elementwise programs: a chain or tree of f32 unary and binary ops computed in one pass
//! over memory (formed by the `fuse-elementwise` pass, never by the frontend).
//!
//! A [`FusedEw`] has `n` inputs, broadcast numpy-style to the output shape, and a program of
//! instructions. Each instruction applies one [`UnaryOp`] or [`BinaryOp`] to operands that are
//! node inputs or results of earlier instructions; the last instruction's result is the output.
//! The textual form holds the program in one string attribute:
//!
//! ```text
//! %4: f32[2,8] = fused_ew(%0, %1, %2, %3) {program="mul(x0, x1); add(t0, x2); tanh(t1); mul(t2, x3)"}
//! ```
//!
//! `xI` is input `I`, `tK` the result of instruction `K`; op parameters go in braces, as in a
//! node's attributes (strings unquoted): `leaky_relu{alpha=0.01}(t0)`,
//! `clip{min=0.0, max=6.0}(x0)`, `gelu{approximate=tanh}(x0)`.
//!
//! Rules (checked by inference, so by the verifier): at least one instruction; every operand names
//! an input that exists or an earlier instruction; every input and every instruction but the last
//! is read (so the output shape, the broadcast of every input, is also the last instruction's
//! shape); only float-valued ops (no predicates, comparisons or logic); every input is f32.

use super::{broadcast_shapes, invalid, req_t, Fact, OpError};
use super::{BinaryOp, UnaryOp};
use crate::attr::{fmt_f32, Attr, Attrs};
use crate::{DType, Tensor, TensorType};
use std::fmt::Write;

/// Where an instruction reads one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FusedArg {
    /// Input `i` of the node (`xI` in the text).
    Input(usize),
    /// The result of instruction `k` of the program, an earlier one (`tK` in the text).
    Inst(usize),
}

/// One instruction of a fused program.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FusedInst {
    /// `op(a)`.
    Unary(UnaryOp, FusedArg),
    /// `op(a, b)` with numpy broadcasting.
    Binary(BinaryOp, FusedArg, FusedArg),
}

impl FusedInst {
    /// The operands, in order.
    pub fn args(&self) -> Vec<FusedArg> {
        match *self {
            FusedInst::Unary(_, a) => vec![a],
            FusedInst::Binary(_, a, b) => vec![a, b],
        }
    }

    /// The op's textual name.
    pub fn name(&self) -> &'static str {
        match self {
            FusedInst::Unary(u, _) => u.name(),
            FusedInst::Binary(b, ..) => b.name(),
        }
    }
}

/// A fused elementwise op: f32 inputs broadcast together, one program, one f32 output.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedEw {
    /// The instructions; the last one's result is the output.
    pub program: Vec<FusedInst>,
}

impl FusedEw {
    /// Whether a fused program may hold this unary op: the float-valued ones (the predicates give
    /// bools).
    pub fn allows_unary(u: UnaryOp) -> bool {
        !u.is_predicate()
    }

    /// Whether a fused program may hold this binary op: the float-valued ones (not comparisons or
    /// logic, which give bools).
    pub fn allows_binary(b: BinaryOp) -> bool {
        !b.is_comparison() && !b.is_logical()
    }

    /// Number of inputs the program reads (one more than the highest input index).
    pub fn num_inputs(&self) -> usize {
        self.program
            .iter()
            .flat_map(FusedInst::args)
            .filter_map(|a| match a {
                FusedArg::Input(i) => Some(i + 1),
                FusedArg::Inst(_) => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Checks the program's rules for a node with `n` inputs.
    pub fn check(&self, n: usize) -> Result<(), OpError> {
        if self.program.is_empty() {
            return invalid("fused_ew: the program is empty");
        }
        let mut input_used = vec![false; n];
        let mut inst_used = vec![false; self.program.len()];
        for (k, inst) in self.program.iter().enumerate() {
            let ok = match *inst {
                FusedInst::Unary(u, _) => FusedEw::allows_unary(u),
                FusedInst::Binary(b, ..) => FusedEw::allows_binary(b),
            };
            if !ok {
                return invalid(format!(
                    "fused_ew: instruction t{k} ({}) does not give a float",
                    inst.name()
                ));
            }
            for a in inst.args() {
                match a {
                    FusedArg::Input(i) if i < n => input_used[i] = true,
                    FusedArg::Input(i) => {
                        return invalid(format!(
                            "fused_ew: instruction t{k} reads x{i}, but the node has {n} inputs"
                        ))
                    }
                    FusedArg::Inst(j) if j < k => inst_used[j] = true,
                    FusedArg::Inst(j) => {
                        return invalid(format!(
                            "fused_ew: instruction t{k} reads t{j}, which is not an earlier one"
                        ))
                    }
                }
            }
        }
        if let Some(i) = input_used.iter().position(|u| !u) {
            return invalid(format!("fused_ew: input x{i} is never read"));
        }
        let last = self.program.len() - 1;
        if let Some(k) = inst_used[..last].iter().position(|u| !u) {
            return invalid(format!("fused_ew: the result of t{k} is never read"));
        }
        Ok(())
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        self.check(ins.len())?;
        let mut shape = Vec::new();
        for (i, f) in ins.iter().enumerate() {
            let Some(f) = f else {
                return invalid(format!("input {i} is missing"));
            };
            if f.ty.dtype != DType::F32 {
                return invalid(format!(
                    "fused_ew takes f32 inputs only, input {i} is {}",
                    f.ty.dtype
                ));
            }
            shape = broadcast_shapes(&shape, &f.ty.shape)?;
        }
        Ok(vec![TensorType {
            dtype: DType::F32,
            shape,
        }])
    }

    /// Runs the program instruction by instruction on whole tensors with the unary and binary
    /// evaluators, so every intermediate rounds to f32 exactly as the unfused ops do.
    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let inputs: Vec<&Tensor> = (0..ins.len())
            .map(|i| req_t(ins, i))
            .collect::<Result<_, _>>()?;
        let mut temps: Vec<Tensor> = Vec::with_capacity(self.program.len());
        for inst in &self.program {
            let get = |a: FusedArg| -> &Tensor {
                match a {
                    FusedArg::Input(i) => inputs[i],
                    FusedArg::Inst(k) => &temps[k],
                }
            };
            let mut out = match *inst {
                FusedInst::Unary(u, a) => u.eval(&[Some(get(a))])?,
                FusedInst::Binary(b, x, y) => b.eval(&[Some(get(x)), Some(get(y))])?,
            };
            temps.push(out.remove(0));
        }
        Ok(vec![temps
            .pop()
            .expect("inference refused an empty program")])
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![("program", Attr::Str(self.program_text()))]
    }

    pub(crate) fn from_attrs(a: &Attrs) -> Result<FusedEw, OpError> {
        let text = a.string("program", None)?;
        parse_program(&text).map_err(|e| OpError::Invalid(format!("program: {e}")))
    }

    /// The program as the textual IR spells it (`mul(x0, x1); tanh(t0)`).
    pub fn program_text(&self) -> String {
        let arg = |a: FusedArg| match a {
            FusedArg::Input(i) => format!("x{i}"),
            FusedArg::Inst(k) => format!("t{k}"),
        };
        let mut s = String::new();
        for (k, inst) in self.program.iter().enumerate() {
            if k > 0 {
                s.push_str("; ");
            }
            s.push_str(inst.name());
            if let FusedInst::Unary(u, _) = inst {
                let attrs = u.attrs();
                if !attrs.is_empty() {
                    let parts: Vec<String> = attrs
                        .iter()
                        .map(|(k, v)| format!("{k}={}", attr_text(v)))
                        .collect();
                    write!(s, "{{{}}}", parts.join(", ")).unwrap();
                }
            }
            let args: Vec<String> = inst.args().into_iter().map(arg).collect();
            write!(s, "({})", args.join(", ")).unwrap();
        }
        s
    }
}

/// An attribute value inside the program string: strings unquoted (the program is itself a
/// quoted string, and the only string parameter, gelu's `approximate`, is a plain word).
fn attr_text(a: &Attr) -> String {
    match a {
        Attr::Str(s) => s.clone(),
        Attr::Float(v) => fmt_f32(*v),
        other => other.to_string(),
    }
}

/// Reads a program string (the inverse of [`FusedEw::program_text`]). Only the syntax is checked
/// here; the rules are checked by inference.
fn parse_program(text: &str) -> Result<FusedEw, String> {
    let mut c = Cur { s: text, pos: 0 };
    let mut program = Vec::new();
    loop {
        c.ws();
        let name = c.word();
        if name.is_empty() {
            return Err(format!("expected an op name, found {}", c.found()));
        }
        let mut attrs = Attrs::default();
        c.ws();
        if c.eat('{') {
            loop {
                c.ws();
                let key = c.word();
                if key.is_empty() {
                    return Err(format!("expected a parameter name, found {}", c.found()));
                }
                c.ws();
                c.expect('=')?;
                c.ws();
                let v = c.word();
                if v.is_empty() {
                    return Err(format!("`{key}`: expected a value, found {}", c.found()));
                }
                attrs.0.push((key.to_string(), word_attr(v)));
                c.ws();
                if c.eat('}') {
                    break;
                }
                c.expect(',')?;
            }
        }
        c.ws();
        c.expect('(')?;
        let mut args = Vec::new();
        loop {
            c.ws();
            args.push(c.arg()?);
            c.ws();
            if c.eat(')') {
                break;
            }
            c.expect(',')?;
        }
        program.push(instruction(name, &attrs, &args)?);
        c.ws();
        if c.at_end() {
            break;
        }
        c.expect(';')?;
    }
    Ok(FusedEw { program })
}

/// A parameter value: an integer, else a float, else a plain word (string).
fn word_attr(v: &str) -> Attr {
    let digits = v.strip_prefix('-').unwrap_or(v);
    if !digits.is_empty() && digits.chars().all(|ch| ch.is_ascii_digit()) {
        if let Ok(i) = v.parse() {
            return Attr::Int(i);
        }
    }
    match v.parse::<f32>() {
        Ok(f) => Attr::Float(f),
        Err(_) => Attr::Str(v.to_string()),
    }
}

/// Builds one instruction from its name, parameters and operands.
fn instruction(name: &str, attrs: &Attrs, args: &[FusedArg]) -> Result<FusedInst, String> {
    let unary = UnaryOp::from_text(name, attrs).map_err(|e| format!("{name}: {e}"))?;
    let (inst, known) = match (unary, BinaryOp::from_name(name)) {
        (Some(u), _) => match args {
            [a] => (FusedInst::Unary(u, *a), u.attrs()),
            _ => return Err(format!("{name} takes 1 operand, got {}", args.len())),
        },
        (None, Some(b)) => match args {
            [a, c] => (FusedInst::Binary(b, *a, *c), vec![]),
            _ => return Err(format!("{name} takes 2 operands, got {}", args.len())),
        },
        (None, None) => return Err(format!("`{name}` is not an elementwise op")),
    };
    // The constructors ignore parameters they do not know; a typo must not pass silently.
    for (k, _) in &attrs.0 {
        if !known.iter().any(|(n, _)| n == k) {
            return Err(format!("`{name}` has no parameter `{k}`"));
        }
    }
    Ok(inst)
}

/// A cursor over the program string.
struct Cur<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cur<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn ws(&mut self) {
        while let Some(ch) = self.peek().filter(|c| c.is_whitespace()) {
            self.pos += ch.len_utf8();
        }
    }

    fn eat(&mut self, ch: char) -> bool {
        if self.peek() == Some(ch) {
            self.pos += ch.len_utf8();
            true
        } else {
            false
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "the end".into(),
            Some(_) => format!("`{}`", self.rest().chars().take(16).collect::<String>()),
        }
    }

    fn expect(&mut self, ch: char) -> Result<(), String> {
        if self.eat(ch) {
            Ok(())
        } else {
            Err(format!("expected `{ch}`, found {}", self.found()))
        }
    }

    /// A run of name/number characters: `leaky_relu`, `-1.5e-3`, `inf`, `x0`.
    fn word(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(ch) = self
            .peek()
            .filter(|&ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '+' | '-'))
        {
            self.pos += ch.len_utf8();
        }
        &self.s[start..self.pos]
    }

    /// `xI` or `tK`.
    fn arg(&mut self) -> Result<FusedArg, String> {
        let w = self.word();
        let bad = || format!("expected an operand (`x0`, `t1`, ...), found `{w}`");
        let (kind, digits) = w.split_at_checked(1).ok_or_else(bad)?;
        if digits.is_empty() || !digits.chars().all(|ch| ch.is_ascii_digit()) {
            return Err(bad());
        }
        let n: usize = digits.parse().map_err(|_| bad())?;
        match kind {
            "x" => Ok(FusedArg::Input(n)),
            "t" => Ok(FusedArg::Inst(n)),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, print, verify, Graph, Op, PrintOptions};

    fn x(i: usize) -> FusedArg {
        FusedArg::Input(i)
    }

    fn t(k: usize) -> FusedArg {
        FusedArg::Inst(k)
    }

    /// `tanh(x0 * x1 + x2) * x3`.
    fn chain() -> FusedEw {
        FusedEw {
            program: vec![
                FusedInst::Binary(BinaryOp::Mul, x(0), x(1)),
                FusedInst::Binary(BinaryOp::Add, t(0), x(2)),
                FusedInst::Unary(UnaryOp::Tanh, t(1)),
                FusedInst::Binary(BinaryOp::Mul, t(2), x(3)),
            ],
        }
    }

    fn fact(ty: &TensorType) -> Option<Fact<'_>> {
        Some(Fact { ty, value: None })
    }

    #[test]
    fn infers_the_broadcast_of_every_input() {
        let tys = [
            TensorType::new(DType::F32, &[2, 3]),
            TensorType::new(DType::F32, &[]),
            TensorType::new(DType::F32, &[1, 1]),
            TensorType::new(DType::F32, &[3]),
        ];
        let facts: Vec<_> = tys.iter().map(fact).collect();
        let out = Op::FusedEw(chain()).infer(&facts).unwrap();
        assert_eq!(out, vec![TensorType::new(DType::F32, &[2, 3])]);
    }

    #[test]
    fn evaluates_like_the_formula() {
        let xs = [0.0f32, 1.0, -2.0, 3.0, 0.25, -0.5];
        let ys = [2.0f32, -1.0, 0.5];
        let a = Tensor::from_f32(vec![2, 3], &xs);
        let half = Tensor::from_f32(vec![], &[0.5]);
        let one = Tensor::from_f32(vec![1], &[1.0]);
        let y = Tensor::from_f32(vec![3], &ys);
        let got = Op::FusedEw(chain())
            .eval(&[Some(&a), Some(&half), Some(&one), Some(&y)])
            .unwrap();
        assert_eq!(got[0].shape(), &[2, 3]);
        // tanh(x * 0.5 + 1) * y, with y repeating along the last axis. Every step is exact in f32
        // except tanh, which rounds once.
        let want: Vec<f32> = xs
            .iter()
            .enumerate()
            .map(|(i, &v)| (((v as f64) * 0.5 + 1.0).tanh() as f32) * ys[i % 3])
            .collect();
        assert_eq!(got[0].to_f32_vec(), want);
    }

    #[test]
    fn shared_input_and_parameters() {
        // gelu-like tree: x0 * (erf(x0 * x1) + 1), then a clip.
        let f = FusedEw {
            program: vec![
                FusedInst::Binary(BinaryOp::Mul, x(0), x(1)),
                FusedInst::Unary(UnaryOp::Erf, t(0)),
                FusedInst::Binary(BinaryOp::Add, t(1), x(2)),
                FusedInst::Binary(BinaryOp::Mul, x(0), t(2)),
                FusedInst::Unary(UnaryOp::Clip { min: 0.0, max: 1.5 }, t(3)),
            ],
        };
        let xs = [-1.0f32, 0.0, 0.5, 2.0];
        let a = Tensor::from_f32(vec![4], &xs);
        let k = Tensor::from_f32(vec![], &[0.5]);
        let one = Tensor::from_f32(vec![], &[1.0]);
        let got = Op::FusedEw(f)
            .eval(&[Some(&a), Some(&k), Some(&one)])
            .unwrap();
        // erf(-0.5) = -0.5204998778, erf(0.25) = 0.2763263902, erf(1) = 0.8427007929 (tables).
        let e = [-0.520_499_877_8f64, 0.0, 0.276_326_390_2, 0.842_700_792_9];
        for (i, g) in got[0].to_f32_vec().into_iter().enumerate() {
            let w = (xs[i] as f64 * (e[i] + 1.0)).clamp(0.0, 1.5);
            assert!((g as f64 - w).abs() < 1e-6, "{i}: {g} vs {w}");
        }
    }

    #[test]
    fn verify_rules() {
        let f32s = [
            TensorType::new(DType::F32, &[4]),
            TensorType::new(DType::F32, &[4]),
        ];
        let facts: Vec<_> = f32s.iter().map(fact).collect();
        let bad = |program: Vec<FusedInst>| {
            Op::FusedEw(FusedEw { program })
                .infer(&facts)
                .unwrap_err()
                .to_string()
        };
        let add = |a, b| FusedInst::Binary(BinaryOp::Add, a, b);
        assert!(bad(vec![]).contains("empty"));
        assert!(bad(vec![add(x(0), x(2))]).contains("reads x2"));
        assert!(bad(vec![add(x(0), t(0))]).contains("not an earlier one"));
        assert!(bad(vec![FusedInst::Unary(UnaryOp::Relu, x(0))]).contains("x1 is never read"));
        let dead = vec![
            add(x(0), x(1)),
            FusedInst::Unary(UnaryOp::Exp, x(0)),
            add(t(1), x(1)),
        ];
        assert!(bad(dead).contains("t0 is never read"));
        let cmp = vec![FusedInst::Binary(BinaryOp::Less, x(0), x(1))];
        assert!(bad(cmp).contains("does not give a float"));
        let isnan = vec![FusedInst::Unary(UnaryOp::IsNaN, x(0)), add(t(0), x(1))];
        assert!(bad(isnan).contains("does not give a float"));
        // Every input must be f32.
        let mixed = [
            TensorType::new(DType::F32, &[4]),
            TensorType::new(DType::F16, &[4]),
        ];
        let facts: Vec<_> = mixed.iter().map(fact).collect();
        let err = Op::FusedEw(FusedEw {
            program: vec![add(x(0), x(1))],
        })
        .infer(&facts)
        .unwrap_err();
        assert!(err.to_string().contains("f32 inputs only"), "{err}");
    }

    #[test]
    fn program_text_round_trips() {
        let f = FusedEw {
            program: vec![
                FusedInst::Unary(UnaryOp::LeakyRelu { alpha: 0.01 }, x(0)),
                FusedInst::Unary(
                    UnaryOp::Clip {
                        min: f32::NEG_INFINITY,
                        max: 6.0,
                    },
                    t(0),
                ),
                FusedInst::Unary(UnaryOp::Gelu { tanh: true }, t(1)),
                FusedInst::Binary(BinaryOp::Pow, t(2), x(1)),
                FusedInst::Unary(
                    UnaryOp::Selu {
                        alpha: 1.67,
                        gamma: 1.05,
                    },
                    t(3),
                ),
            ],
        };
        let text = f.program_text();
        assert_eq!(
            text,
            "leaky_relu{alpha=0.01}(x0); clip{min=-inf, max=6.0}(t0); \
             gelu{approximate=tanh}(t1); pow(t2, x1); selu{alpha=1.67, gamma=1.05}(t3)"
        );
        assert_eq!(parse_program(&text).unwrap(), f);
    }

    #[test]
    fn bad_program_text_is_an_error() {
        for (text, want) in [
            ("", "expected an op name"),
            ("mul(x0)", "takes 2 operands"),
            ("tanh(x0, x1)", "takes 1 operand"),
            ("frob(x0)", "not an elementwise op"),
            ("tanh(y0)", "expected an operand"),
            ("tanh(x)", "expected an operand"),
            ("tanh(x0) tanh(t0)", "expected `;`"),
            ("leaky_relu{beta=1.0}(x0)", "alpha"),
            ("relu{alpha=1.0}(x0)", "no parameter `alpha`"),
            ("gelu{approximate=fast}(x0)", "unknown approximate"),
            ("tanh(x0", "expected `,`"),
            ("tanh(x99999999999999999999999)", "expected an operand"),
        ] {
            let err = parse_program(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn graph_text_round_trips() {
        let mut g = Graph::new("fused");
        let a = g.add_input("a", TensorType::new(DType::F32, &[2, 3]));
        let y = g.add_input("y", TensorType::new(DType::F32, &[3]));
        let half = g.add_const("half", Tensor::from_f32(vec![], &[0.5]));
        let one = g.add_const("one", Tensor::from_f32(vec![1], &[1.0]));
        let out = g
            .add_node(
                "/act/Mul",
                Op::FusedEw(chain()),
                &[Some(a), Some(half), Some(one), Some(y)],
                &["out"],
            )
            .unwrap()[0];
        g.outputs.push(("out".into(), out));
        verify(&g).unwrap();
        let full = PrintOptions {
            max_const_elems: usize::MAX,
        };
        let text = print(&g, full);
        assert!(
            text.contains(
                "%4: f32[2,3] = fused_ew(%0, %2, %3, %1) \
                 {program=\"mul(x0, x1); add(t0, x2); tanh(t1); mul(t2, x3)\"}  # \"/act/Mul\""
            ),
            "{text}"
        );
        let parsed = parse(&text).unwrap();
        verify(&parsed).unwrap();
        assert_eq!(print(&parsed, full), text);
        let id = parsed.outputs[0].1.node;
        assert_eq!(parsed.node(id).op, Op::FusedEw(chain()));
    }

    #[test]
    fn parser_reports_bad_programs_with_the_line() {
        let text = "graph \"g\" {\n  %0: f32[2] = input {index=0}  # \"a\"\n  \
                    %1: f32[2] = fused_ew(%0) {program=\"tanh(x0); less(t0, x0)\"}  # \"f\"\n  \
                    output %1 \"f\"\n}\n";
        // The syntax is fine; the verifier refuses the comparison.
        let g = parse(text).unwrap();
        let err = verify(&g).unwrap_err();
        assert!(err.to_string().contains("does not give a float"), "{err}");
        let text = text.replace("less(t0, x0)", "less(t0 x0)");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.msg.contains("program"), "{}", err.msg);
    }
}
