//! Lowering of the elementwise family: unary functions and activations, binary arithmetic,
//! comparisons and logic, `where` and casts (kernels in `kernels::elementwise`).

use super::{unsupported, Arg, Lowering, Step};
use crate::kernels::{self, elementwise::EwKind, elementwise::EwSpec};
use crate::BackendError;
use kiln_ir::{NodeId, Op, Value};

impl Lowering<'_> {
    /// The step for a node of this family.
    pub(super) fn elementwise_family(
        &mut self,
        id: NodeId,
        op: &Op,
    ) -> Result<Option<Step>, BackendError> {
        let g = self.g;
        let (kind, arity) = match op {
            Op::Unary(u) => (EwKind::Unary(*u), 1),
            Op::Binary(b) => (EwKind::Binary(*b), 2),
            Op::Cast(_) => (EwKind::Cast, 1),
            Op::Where => (EwKind::Where, 3),
            other => unreachable!("{} is not an elementwise op", other.name()),
        };
        let y = Value { node: id, slot: 0 };
        let ins: Vec<Value> = (0..arity)
            .map(|i| self.input(id, i))
            .collect::<Result<_, _>>()?;
        let spec = EwSpec {
            kind,
            ins: ins.iter().map(|&v| (self.dtype(v), self.dims(v))).collect(),
            out: (self.dtype(y), self.dims(y)),
        };
        spec.check().map_err(|r| unsupported(g, id, r))?;
        let (yd, ydims) = spec.out.clone();
        if kind == EwKind::Cast && spec.ins[0].0 == yd {
            let bytes = yd.storage_bytes(ydims.iter().product());
            return Ok(self.step(
                id,
                "copy",
                vec![Arg::Val(ins[0]), Arg::Val(y)],
                vec![],
                Box::new(move |kb| kernels::layout::copy_kernel(kb, bytes)),
            ));
        }
        // Each element is read before the same position is written, so an input of the output's
        // shape and element size may share its storage.
        let inplace: Vec<Value> = ins
            .iter()
            .zip(&spec.ins)
            .filter(|(_, (d, dims))| *dims == ydims && d.bits() == yd.bits())
            .map(|(&v, _)| v)
            .collect();
        let mut args: Vec<Arg> = ins.iter().map(|&v| Arg::Val(v)).collect();
        args.push(Arg::Val(y));
        let name = spec.name();
        let split = kernels::elementwise::ew_splits(&spec);
        Ok(self
            .step(
                id,
                name,
                args,
                inplace,
                Box::new(move |kb| kernels::elementwise::ew_kernel(kb, &spec)),
            )
            .map(|s| Step { split, ..s }))
    }
}
