//! Einsum: sums of products over labelled axes, numpy's `einsum` semantics (explicit `->` output or
//! the implicit one, `...` for broadcast batch axes, repeated labels in one operand for diagonals).
//!
//! [`Einsum::plan`] turns the equation and the input shapes into loops: the output axes, the summed
//! axes, and for each operand its stride (in elements) along each of them. A label repeated within an
//! operand sums its strides, which walks the diagonal; a broadcast axis of size 1 gets stride 0. The
//! reference evaluator and the backend both run that plan.

use super::{dims_of, invalid, req, req_t, Fact, OpError};
use crate::attr::{Attr, Attrs};
use crate::{Tensor, TensorType};

/// `output[o...] = sum over r... of prod_j input_j[...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Einsum {
    /// The equation as ONNX writes it (`"ij,jk->ik"`, `"...ii->...i"`).
    pub equation: String,
}

/// The loops of an einsum for given input shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EinsumPlan {
    /// Output dims (also the outer loops).
    pub out: Vec<usize>,
    /// Summed dims (inner loops).
    pub sum: Vec<usize>,
    /// Per input: strides (elements) along the output axes.
    pub out_strides: Vec<Vec<usize>>,
    /// Per input: strides (elements) along the summed axes.
    pub sum_strides: Vec<Vec<usize>>,
}

/// A label: a letter, or the `i`-th broadcast (ellipsis) axis, counted from the left of the widest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Label {
    Ellipsis(usize),
    Letter(char),
}

/// One term: its letters, and where `...` sits (letter position) if present.
struct Term {
    letters: Vec<char>,
    ellipsis: Option<usize>,
}

fn parse_term(s: &str) -> Result<Term, OpError> {
    let mut letters = Vec::new();
    let mut ellipsis = None;
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("...") {
            if ellipsis.is_some() {
                return invalid(format!("einsum term `{s}` has two ellipses"));
            }
            ellipsis = Some(letters.len());
            rest = &rest[3..];
        } else if c.is_ascii_alphabetic() {
            letters.push(c);
            rest = &rest[1..];
        } else {
            return invalid(format!("einsum term `{s}` has an unexpected `{c}`"));
        }
    }
    Ok(Term { letters, ellipsis })
}

impl Term {
    /// The labels of an operand of rank `rank` whose ellipsis covers `width - e..width` of the widest.
    fn labels(&self, rank: usize, width: usize) -> Result<Vec<Label>, OpError> {
        let n = self.letters.len();
        let e = match self.ellipsis {
            None if rank != n => {
                return invalid(format!(
                    "einsum term with {n} labels for an input of rank {rank}"
                ))
            }
            None => 0,
            Some(_) if rank < n => {
                return invalid(format!(
                    "einsum term with {n} labels for an input of rank {rank}"
                ))
            }
            Some(_) => rank - n,
        };
        let at = self.ellipsis.unwrap_or(n);
        let mut v: Vec<Label> = self.letters[..at]
            .iter()
            .map(|&c| Label::Letter(c))
            .collect();
        v.extend((width - e..width).map(Label::Ellipsis));
        v.extend(self.letters[at..].iter().map(|&c| Label::Letter(c)));
        Ok(v)
    }
}

impl Einsum {
    pub(crate) fn from_attrs(a: &Attrs) -> Result<Einsum, OpError> {
        Ok(Einsum {
            equation: a.string("equation", None)?,
        })
    }

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![("equation", Attr::Str(self.equation.clone()))]
    }

    /// The loops for inputs of dims `shapes`.
    pub fn plan(&self, shapes: &[Vec<usize>]) -> Result<EinsumPlan, OpError> {
        let eq: String = self
            .equation
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let (lhs, rhs) = match eq.split_once("->") {
            Some((l, r)) => (l, Some(r)),
            None => (eq.as_str(), None),
        };
        let terms = lhs
            .split(',')
            .map(parse_term)
            .collect::<Result<Vec<_>, _>>()?;
        if terms.len() != shapes.len() {
            return invalid(format!(
                "einsum `{}` has {} operands but {} inputs",
                self.equation,
                terms.len(),
                shapes.len()
            ));
        }
        // Width of the broadcast (ellipsis) axes.
        let width = terms
            .iter()
            .zip(shapes)
            .map(|(t, s)| {
                if t.ellipsis.is_some() {
                    s.len().saturating_sub(t.letters.len())
                } else {
                    0
                }
            })
            .max()
            .unwrap_or(0);
        let labels = terms
            .iter()
            .zip(shapes)
            .map(|(t, s)| t.labels(s.len(), width))
            .collect::<Result<Vec<_>, _>>()?;
        // Size of each label: letters must agree; broadcast axes may be 1.
        let mut sizes: Vec<(Label, usize)> = Vec::new();
        for (ls, s) in labels.iter().zip(shapes) {
            for (&l, &d) in ls.iter().zip(s) {
                match sizes.iter_mut().find(|(x, _)| *x == l) {
                    None => sizes.push((l, d)),
                    Some((_, have)) if *have == d => {}
                    Some((Label::Ellipsis(_), have)) if *have == 1 || d == 1 => {
                        *have = (*have).max(d)
                    }
                    Some((_, have)) => {
                        return invalid(format!(
                            "einsum `{}`: label {l:?} has sizes {have} and {d}",
                            self.equation
                        ))
                    }
                }
            }
        }
        let size = |l: Label| sizes.iter().find(|(x, _)| *x == l).map_or(1, |s| s.1);
        let out_labels: Vec<Label> = match rhs {
            Some(r) => {
                let t = parse_term(r)?;
                if t.ellipsis.is_none() && width > 0 {
                    // numpy sums broadcast axes the output omits only when they are all size 1.
                    if (0..width).any(|i| size(Label::Ellipsis(i)) != 1) {
                        return Err(OpError::Unsupported(format!(
                            "einsum `{}` sums over broadcast axes",
                            self.equation
                        )));
                    }
                }
                let mut seen = Vec::new();
                for &c in &t.letters {
                    if seen.contains(&c) {
                        return invalid(format!("einsum output repeats `{c}`"));
                    }
                    if !labels.iter().flatten().any(|&l| l == Label::Letter(c)) {
                        return invalid(format!("einsum output label `{c}` is in no input"));
                    }
                    seen.push(c);
                }
                t.labels(
                    t.letters.len() + if t.ellipsis.is_some() { width } else { 0 },
                    width,
                )?
            }
            None => {
                // Implicit output: broadcast axes, then the letters used once, alphabetically.
                let mut v: Vec<Label> = (0..width).map(Label::Ellipsis).collect();
                let mut once: Vec<char> = Vec::new();
                for (l, _) in &sizes {
                    if let Label::Letter(c) = l {
                        if labels.iter().flatten().filter(|&&x| x == *l).count() == 1 {
                            once.push(*c);
                        }
                    }
                }
                once.sort_unstable();
                v.extend(once.into_iter().map(Label::Letter));
                v
            }
        };
        let sum_labels: Vec<Label> = sizes
            .iter()
            .map(|(l, _)| *l)
            .filter(|l| !out_labels.contains(l))
            .collect();
        let stride_along = |ls: &[Label], s: &[usize], l: Label| -> usize {
            let st = super::strides_of(s);
            ls.iter()
                .zip(s)
                .zip(&st)
                .filter(|((&x, &d), _)| x == l && d != 1)
                .map(|(_, &st)| st)
                .sum()
        };
        Ok(EinsumPlan {
            out: out_labels.iter().map(|&l| size(l)).collect(),
            sum: sum_labels.iter().map(|&l| size(l)).collect(),
            out_strides: labels
                .iter()
                .zip(shapes)
                .map(|(ls, s)| out_labels.iter().map(|&l| stride_along(ls, s, l)).collect())
                .collect(),
            sum_strides: labels
                .iter()
                .zip(shapes)
                .map(|(ls, s)| sum_labels.iter().map(|&l| stride_along(ls, s, l)).collect())
                .collect(),
        })
    }

    pub(crate) fn infer(&self, ins: &[Option<Fact>]) -> Result<Vec<TensorType>, OpError> {
        let first = req(ins, 0)?;
        let mut shapes = Vec::new();
        for (i, f) in ins.iter().enumerate() {
            let f = f
                .as_ref()
                .ok_or_else(|| OpError::Invalid(format!("input {i} is missing")))?;
            if f.ty.dtype != first.ty.dtype {
                return invalid(format!("input {i} is {} but input 0 is {}", f.ty, first.ty));
            }
            shapes.push(dims_of(f.ty)?);
        }
        if !first.ty.dtype.is_float() && !first.ty.dtype.is_int() {
            return invalid(format!("einsum of {}", first.ty.dtype));
        }
        let p = self.plan(&shapes)?;
        Ok(vec![TensorType::new(first.ty.dtype, &p.out)])
    }

    pub(crate) fn eval(&self, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let ts: Vec<&Tensor> = (0..ins.len())
            .map(|i| req_t(ins, i))
            .collect::<Result<_, _>>()?;
        let shapes: Vec<Vec<usize>> = ts.iter().map(|t| t.shape().to_vec()).collect();
        let p = self.plan(&shapes)?;
        let vals: Vec<Vec<f64>> = ts.iter().map(|t| t.to_f64_vec()).collect();
        let mut out = Vec::with_capacity(p.out.iter().product());
        super::for_each_index(&p.out, |o| {
            let base: Vec<usize> = p
                .out_strides
                .iter()
                .map(|s| o.iter().zip(s).map(|(i, s)| i * s).sum())
                .collect();
            let mut acc = 0.0;
            let mut term = |r: &[usize]| {
                let mut prod = 1.0;
                for (j, v) in vals.iter().enumerate() {
                    let at: usize = base[j]
                        + r.iter()
                            .zip(&p.sum_strides[j])
                            .map(|(i, s)| i * s)
                            .sum::<usize>();
                    prod *= v[at];
                }
                acc += prod;
            };
            // An empty sum list still runs once (a product with nothing summed).
            super::for_each_index(&p.sum, &mut term);
            out.push(acc);
        });
        Ok(vec![Tensor::from_f64(ts[0].dtype(), p.out, &out)])
    }
}
