//! Recognizes the decomposed GELU exporters write and replaces it by `gelu`.
//!
//! Exporters spell GELU with the same few ops in many orders: `x * 0.5 * (1 + erf(x / 1.4142))`,
//! `(0.5 * x) * (1 + erf(x * 0.7071))`, `0.5 * x * (1 + tanh(0.7979 * (x + 0.044715 * x^3)))` with
//! `x^3` as `Pow(x, 3)` or `x * x * x`, `x * 0.7979 * (1 + 0.044715 * x * x)` inside the tanh, or
//! `x * sigmoid(1.5958 * (x + 0.044715 * x^3))`. Rather than list every order, the pass reads the
//! arithmetic around each `Erf`/`Tanh`/`Sigmoid` as a polynomial with numeric coefficients and
//! compares it with GELU's:
//!
//! - the argument, as a polynomial in `x`: `x / sqrt(2)` (erf), `k x + 0.044715 k x^3` with
//!   `k = sqrt(2 / pi)` (tanh), or twice that (sigmoid);
//! - the result, as a polynomial in `x` and `t` (the erf/tanh/sigmoid output): `0.5 x + 0.5 x t`,
//!   or `x t` for the sigmoid form.
//!
//! Only `Add`, `Sub`, `Mul`, `Neg`, `Div` by a scalar constant and `Pow` by a small integer constant
//! are read; every operand is `x`, `t`, an op of those kinds, or a single-element f32 constant, and
//! every intermediate has `x`'s type (so no broadcast hides in the pattern).

use crate::recognize::{fused_name, has_type, is_private, only_user, out0, replace, scalar_f32};
use crate::{Fuel, Pass, PassError};
use kiln_ir::ops::{BinaryOp, UnaryOp};
use kiln_ir::{DType, Graph, NodeId, Op, TensorType, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// Replaces decomposed GELU subgraphs (erf form, tanh approximation) by `gelu`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecognizeGelu;

impl Pass for RecognizeGelu {
    fn name(&self) -> &'static str {
        "recognize-gelu"
    }

    fn run(&self, g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError> {
        let mut changed = false;
        for id in g.topo_order()? {
            if !g.contains(id) {
                continue;
            }
            let Some(m) = match_gelu(g, id) else { continue };
            if !fuel.take() {
                return Ok(changed);
            }
            let name = fused_name(g, &m.region, m.root, "Gelu");
            let op = Op::Unary(UnaryOp::Gelu { tanh: m.tanh });
            changed |= replace(g, &m.region, m.root, name, op, &[Some(m.x)]).is_some();
        }
        Ok(changed)
    }
}

/// Relative tolerance on each coefficient. Exporters write the constants in f32 (`1.4142135`,
/// `0.7978846`), a few ulps from the exact values; a model that means something else (`0.6`) is far.
const COEF_TOL: f64 = 1e-5;

/// Most ops read while looking for one polynomial: GELU's decompositions take at most eight.
const MAX_NODES: usize = 16;

/// Highest degree in each variable (`x^3` is the highest GELU needs).
const MAX_DEGREE: u8 = 6;

/// A polynomial in up to two variables: `(degree of x, degree of t) -> coefficient`.
#[derive(Clone, Debug, Default, PartialEq)]
struct Poly(BTreeMap<(u8, u8), f64>);

impl Poly {
    fn constant(c: f64) -> Poly {
        Poly(BTreeMap::from([((0, 0), c)]))
    }

    fn var(i: usize) -> Poly {
        Poly(BTreeMap::from([(
            if i == 0 { (1, 0) } else { (0, 1) },
            1.0,
        )]))
    }

    fn terms(terms: &[((u8, u8), f64)]) -> Poly {
        Poly(terms.iter().copied().collect())
    }

    fn add(&self, o: &Poly, sign: f64) -> Poly {
        let mut r = self.0.clone();
        for (&k, &c) in &o.0 {
            *r.entry(k).or_insert(0.0) += sign * c;
        }
        Poly(r)
    }

    fn scale(&self, s: f64) -> Poly {
        Poly(self.0.iter().map(|(&k, &c)| (k, c * s)).collect())
    }

    fn mul(&self, o: &Poly) -> Option<Poly> {
        let mut r = BTreeMap::new();
        for (&(a, b), &c) in &self.0 {
            for (&(p, q), &d) in &o.0 {
                let k = (a + p, b + q);
                if k.0 > MAX_DEGREE || k.1 > MAX_DEGREE {
                    return None;
                }
                *r.entry(k).or_insert(0.0) += c * d;
            }
        }
        Some(Poly(r))
    }

    /// Every coefficient within [`COEF_TOL`] of `want`'s, and the monomials `want` lacks zero.
    fn matches(&self, want: &Poly) -> bool {
        let keys: HashSet<(u8, u8)> = self.0.keys().chain(want.0.keys()).copied().collect();
        keys.into_iter().all(|k| {
            let a = self.0.get(&k).copied().unwrap_or(0.0);
            match want.0.get(&k) {
                Some(&w) => (a - w).abs() <= COEF_TOL * w.abs(),
                None => a == 0.0,
            }
        })
    }
}

/// Reads the arithmetic computing one value as a polynomial in `vars`.
struct Reader<'g> {
    g: &'g Graph,
    /// The variables: `x`, then (for the outer product) `t`.
    vars: Vec<Value>,
    /// The type every intermediate must have (`x`'s).
    ty: &'g TensorType,
    /// The op nodes read.
    region: Vec<NodeId>,
    memo: HashMap<Value, Poly>,
}

impl<'g> Reader<'g> {
    fn new(g: &'g Graph, vars: Vec<Value>, ty: &'g TensorType) -> Self {
        Reader {
            g,
            vars,
            ty,
            region: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn read(&mut self, v: Value) -> Option<Poly> {
        if let Some(i) = self.vars.iter().position(|&x| x == v) {
            return Some(Poly::var(i));
        }
        if let Some(c) = scalar_f32(self.g, v) {
            return Some(Poly::constant(c));
        }
        if let Some(p) = self.memo.get(&v) {
            return Some(p.clone());
        }
        let g = self.g;
        let id = v.node;
        if self.region.len() >= MAX_NODES || !has_type(g, v, self.ty) {
            return None;
        }
        self.region.push(id);
        let ins = g.inputs(id);
        let input = |i: usize| ins.get(i).copied().flatten();
        let p = match g.node(id).op {
            Op::Binary(BinaryOp::Add) => self.read(input(0)?)?.add(&self.read(input(1)?)?, 1.0),
            Op::Binary(BinaryOp::Sub) => self.read(input(0)?)?.add(&self.read(input(1)?)?, -1.0),
            Op::Binary(BinaryOp::Mul) => self.read(input(0)?)?.mul(&self.read(input(1)?)?)?,
            Op::Binary(BinaryOp::Div) => {
                let den = scalar_f32(g, input(1)?).filter(|&d| d != 0.0 && d.is_finite())?;
                self.read(input(0)?)?.scale(1.0 / den)
            }
            Op::Binary(BinaryOp::Pow) => {
                let e = scalar_f32(g, input(1)?)?;
                if !(e.fract() == 0.0 && (1.0..=4.0).contains(&e)) {
                    return None;
                }
                let base = self.read(input(0)?)?;
                let mut r = base.clone();
                for _ in 1..e as usize {
                    r = r.mul(&base)?;
                }
                r
            }
            Op::Unary(UnaryOp::Neg) => self.read(input(0)?)?.scale(-1.0),
            _ => return None,
        };
        self.memo.insert(v, p.clone());
        Some(p)
    }
}

/// Whether the node is one of the ops [`Reader`] reads.
fn is_arith(g: &Graph, id: NodeId) -> bool {
    matches!(
        g.node(id).op,
        Op::Binary(BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Pow)
            | Op::Unary(UnaryOp::Neg)
    )
}

/// A matched GELU.
struct Match {
    x: Value,
    tanh: bool,
    region: Vec<NodeId>,
    root: NodeId,
}

/// GELU anchored at its `Erf`, `Tanh` or `Sigmoid`.
fn match_gelu(g: &Graph, t_node: NodeId) -> Option<Match> {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let c = 0.044715;
    let (arg_want, out_want, tanh) = match g.node(t_node).op {
        Op::Unary(UnaryOp::Erf) => (
            Poly::terms(&[((1, 0), std::f64::consts::FRAC_1_SQRT_2)]),
            Poly::terms(&[((1, 0), 0.5), ((1, 1), 0.5)]),
            false,
        ),
        Op::Unary(UnaryOp::Tanh) => (
            Poly::terms(&[((1, 0), k), ((3, 0), k * c)]),
            Poly::terms(&[((1, 0), 0.5), ((1, 1), 0.5)]),
            true,
        ),
        // 0.5 (1 + tanh(z)) = sigmoid(2 z).
        Op::Unary(UnaryOp::Sigmoid) => (
            Poly::terms(&[((1, 0), 2.0 * k), ((3, 0), 2.0 * k * c)]),
            Poly::terms(&[((1, 1), 1.0)]),
            true,
        ),
        _ => return None,
    };
    let arg = g.input(t_node, 0)?;
    let ty = g.ty(arg);
    if ty.dtype != DType::F32 {
        return None;
    }
    let t = out0(t_node);

    // Which value is `x`: the nearest one, walking back from the argument, that the argument is the
    // expected polynomial of. The nearest wins so that `x` computed by arithmetic itself (a bias
    // add) stays outside the pattern.
    let (x, arg_region) = candidates(g, arg)
        .into_iter()
        .filter(|&v| has_type(g, v, ty))
        .find_map(|x| {
            let mut r = Reader::new(g, vec![x], ty);
            let p = r.read(arg)?;
            p.matches(&arg_want).then_some((x, r.region))
        })?;

    // The result: the first node up the single-reader chain from `t` whose value is the expected
    // polynomial of `x` and `t`.
    let mut at = t;
    for _ in 0..MAX_NODES {
        let u = only_user(g, at)?;
        if !is_arith(g, u) {
            return None;
        }
        let mut r = Reader::new(g, vec![x, t], ty);
        if r.read(out0(u)).is_some_and(|p| p.matches(&out_want)) {
            let mut region = arg_region;
            region.push(t_node);
            region.extend(r.region);
            return is_private(g, &region, u).then_some(Match {
                x,
                tanh,
                region,
                root: u,
            });
        }
        at = out0(u);
    }
    None
}

/// Non-constant values reachable backwards from `arg` through arithmetic, nearest first.
fn candidates(g: &Graph, arg: Value) -> Vec<Value> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([arg]);
    while let Some(v) = queue.pop_front() {
        if out.len() >= MAX_NODES || !seen.insert(v) || g.const_value(v).is_some() {
            continue;
        }
        out.push(v);
        if is_arith(g, v.node) {
            queue.extend(g.inputs(v.node).into_iter().flatten());
        }
    }
    out
}
