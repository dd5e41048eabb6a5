//! Lowering of `fused_ew`: a chain of f32 elementwise ops run as one kernel (`kernels::fused`).

use super::{unsupported, Arg, Lowering, Step};
use crate::kernels::fused::{fused_kernel, FusedSpec};
use crate::BackendError;
use kiln_ir::ops::FusedEw;
use kiln_ir::{DType, NodeId, Value};

impl Lowering<'_> {
    /// The step for a `fused_ew` node.
    pub(super) fn fused(&mut self, id: NodeId, f: &FusedEw) -> Result<Option<Step>, BackendError> {
        let g = self.g;
        let y = Value { node: id, slot: 0 };
        let n = g.inputs(id).len();
        // Inference checks the program too, but the backend may get a graph nobody verified; a bad
        // program must be an error here, not an out-of-bounds operand in the kernel.
        f.check(n).map_err(|e| unsupported(g, id, e.to_string()))?;
        let ins: Vec<Value> = (0..n)
            .map(|i| self.input(id, i))
            .collect::<Result<_, _>>()?;
        for (i, &v) in ins.iter().enumerate() {
            let d = self.dtype(v);
            if d != DType::F32 {
                return Err(unsupported(
                    g,
                    id,
                    format!("input {i} is {d} (fused_ew is f32 only)"),
                ));
            }
        }
        let ydims = self.dims(y);
        let spec = FusedSpec {
            program: f.program.clone(),
            ins: ins.iter().map(|&v| self.dims(v)).collect(),
            out: ydims.clone(),
        };
        // Each output element is written after every input element at its position is read, so
        // an input of the output's shape may hand its storage to the output when it dies here.
        let inplace: Vec<Value> = ins
            .iter()
            .zip(&spec.ins)
            .filter(|(_, d)| **d == ydims)
            .map(|(&v, _)| v)
            .collect();
        let mut args: Vec<Arg> = ins.iter().map(|&v| Arg::Val(v)).collect();
        args.push(Arg::Val(y));
        let split = spec.splits();
        Ok(self
            .step(
                id,
                "fused_ew",
                args,
                inplace,
                Box::new(move |kb| fused_kernel(kb, &spec)),
            )
            .map(|s| Step { split, ..s }))
    }
}
