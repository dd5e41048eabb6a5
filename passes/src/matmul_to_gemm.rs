//! Turning `MatMul` by a constant matrix (plus a constant bias) into `Gemm`.
//!
//! PyTorch exports every `nn.Linear` on a 3-D activation (BERT, GPT-2) as `MatMul(x, W) + b`. As
//! `Reshape -> Gemm(x, W, b) -> Reshape` (the reshapes are free views) the layer is the op the backend
//! packs weights for and whose epilogue takes the bias and fused activations.

use crate::{Fuel, Pass, PassError};
use kiln_ir::ops::{BinaryOp, Gemm, Reshape};
use kiln_ir::{DType, Graph, NodeId, Op, Tensor, TensorType, Value, ValueInfo};

/// Rewrites `matmul(A, B)` with B a constant f32 `[K, N]` matrix and A of rank >= 2 with static shape
/// into `gemm` (A 2-D) or `reshape(A, [prod(leading), K]) -> gemm -> reshape` back. With
/// [`MatMulToGemm::bias_as_c`], an `add` of a constant bias that varies along the last axis only, and
/// is the matmul's only reader, becomes the gemm's C.
#[derive(Clone, Copy, Debug)]
pub struct MatMulToGemm {
    /// Fold a following bias `add` into the gemm's C (on by default and in the pipeline: the gemm
    /// epilogue adds C as it stores, which measured no slower than the separate add and saves its
    /// pass; the numbers are in `pipeline`).
    pub bias_as_c: bool,
}

impl Default for MatMulToGemm {
    fn default() -> Self {
        MatMulToGemm { bias_as_c: true }
    }
}

impl Pass for MatMulToGemm {
    fn name(&self) -> &'static str {
        "matmul-to-gemm"
    }

    fn run(&self, g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError> {
        let mut changed = false;
        for mm in g.topo_order()? {
            if !g.contains(mm) || g.node(mm).op != Op::MatMul {
                continue;
            }
            let Some(plan) = plan(g, mm, self.bias_as_c) else {
                continue;
            };
            if !fuel.take() {
                break;
            }
            apply(g, mm, plan)?;
            changed = true;
        }
        Ok(changed)
    }
}

/// A checked rewrite.
struct Plan {
    a: Value,
    b: Value,
    /// Dims of A.
    a_dims: Vec<usize>,
    /// `[K, N]`.
    k: usize,
    /// The bias as the gemm's C (`[N]` or `[1]`) and the `add` it comes from.
    bias: Option<(Bias, NodeId)>,
}

/// The gemm's C.
enum Bias {
    /// The add's own 1-D constant.
    Value(Value),
    /// A 1-D copy of a bias with leading unit axes.
    Reshaped(Tensor),
}

/// The only reader of `v`: exactly one consumer slot, and `v` is not a graph output.
fn sole_user(g: &Graph, v: Value) -> Option<(NodeId, u32)> {
    match g.users(v).as_slice() {
        [u] if !g.is_output(v) => Some(*u),
        _ => None,
    }
}

fn plan(g: &Graph, mm: NodeId, bias_as_c: bool) -> Option<Plan> {
    let (a, b) = (g.input(mm, 0)?, g.input(mm, 1)?);
    // Gemm is compiled for f32 only; other matmuls stay matmuls.
    let w = g.const_value(b)?;
    if w.dtype() != DType::F32 || g.ty(a).dtype != DType::F32 || w.shape().len() != 2 {
        return None;
    }
    let (k, n) = (w.shape()[0], w.shape()[1]);
    let a_dims = g.ty(a).dims()?;
    // Empty tensors gain nothing, and a 0 in a reshape target means "copy" in ONNX.
    if a_dims.len() < 2 || a_dims.last() != Some(&k) || a_dims.contains(&0) || n == 0 {
        return None;
    }
    let out = Value { node: mm, slot: 0 };
    let bias = sole_user(g, out)
        .filter(|_| bias_as_c)
        .and_then(|(add, slot)| {
            if g.node(add).op != Op::Binary(BinaryOp::Add) {
                return None;
            }
            let other = g.input(add, 1 - slot as usize)?;
            let t = g.const_value(other)?;
            // The add must not broadcast the product up, and the bias must vary along N only.
            if g.ty(Value { node: add, slot: 0 }) != g.ty(out) || t.dtype() != DType::F32 {
                return None;
            }
            let d = t.shape();
            if d.len() > a_dims.len() || d.iter().rev().skip(1).any(|&x| x != 1) {
                return None;
            }
            let last = d.last().copied().unwrap_or(1);
            if last != n && last != 1 {
                return None;
            }
            // A 1-D bias is the gemm's C as it is; others are reshaped to 1-D copies.
            let c = if d.len() == 1 {
                Bias::Value(other)
            } else {
                Bias::Reshaped(t.reshaped(vec![last]))
            };
            Some((c, add))
        });
    Some(Plan {
        a,
        b,
        a_dims,
        k,
        bias,
    })
}

fn apply(g: &mut Graph, mm: NodeId, plan: Plan) -> Result<(), PassError> {
    let name = g.node(mm).name.clone();
    let out = Value { node: mm, slot: 0 };
    // The value the rewrite replaces: the add's output when the bias folds, else the product.
    let (replaced, last_name) = match &plan.bias {
        Some((_, add)) => (
            Value {
                node: *add,
                slot: 0,
            },
            g.node(*add).name.clone(),
        ),
        None => (out, format!("{name}/to_nd")),
    };
    let info: ValueInfo = g.node(replaced.node).outputs[0].clone();
    let c = plan.bias.as_ref().map(|(b, _)| match b {
        Bias::Value(v) => *v,
        Bias::Reshaped(t) => g.add_const(format!("{name}/bias"), t.clone()),
    });
    let gemm = Op::Gemm(Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: false,
        post: Vec::new(),
    });
    let rank = plan.a_dims.len();
    let result = if rank == 2 {
        // The gemm's output keeps the replaced value's name (the add's when it stands for the add).
        g.add_node(&name, gemm, &[Some(plan.a), Some(plan.b), c], &[&info.name])?[0]
    } else {
        let lead: usize = plan.a_dims[..rank - 1].iter().product();
        let as_i64 = |d: &[usize]| d.iter().map(|&x| x as i64).collect::<Vec<_>>();
        let flat_ty = TensorType::new(DType::F32, &[lead, plan.k]);
        // Q, K and V projections read the same activation: they share one flattening view.
        let existing = g.users(plan.a).into_iter().find(|&(u, slot)| {
            slot == 0
                && matches!(g.node(u).op, Op::Reshape(_))
                && g.node(u).outputs[0].ty == flat_ty
        });
        let flat = match existing {
            Some((u, _)) => Value { node: u, slot: 0 },
            None => g.add_node(
                format!("{name}/to_2d"),
                Op::Reshape(Reshape {
                    shape: as_i64(&[lead, plan.k]),
                    allowzero: false,
                }),
                &[Some(plan.a)],
                &[&format!("{name}/to_2d")],
            )?[0],
        };
        let prod = g.add_node(
            &name,
            gemm,
            &[Some(flat), Some(plan.b), c],
            &[&format!("{name}/gemm")],
        )?[0];
        let out_dims = info.ty.dims().expect("static: A and B are static");
        g.add_node(
            last_name,
            Op::Reshape(Reshape {
                shape: as_i64(&out_dims),
                allowzero: false,
            }),
            &[Some(prod)],
            &[&info.name],
        )?[0]
    };
    assert_eq!(
        *g.ty(result),
        info.ty,
        "matmul-to-gemm changed the type of {:?}",
        info.name
    );
    g.replace_all_uses(replaced, result);
    if let Some((_, add)) = plan.bias {
        g.remove_node(add);
    }
    g.remove_node(mm);
    Ok(())
}
