//! Identity removal.

use crate::{Fuel, Pass, PassError};
use kiln_ir::{Graph, Op, Value};

/// Makes readers of an `identity` read its input instead (the node itself is left for `dce`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RemoveIdentity;

impl Pass for RemoveIdentity {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn run(&self, g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError> {
        let mut changed = false;
        for id in g.topo_order()? {
            if g.node(id).op != Op::Identity {
                continue;
            }
            let Some(src) = g.input(id, 0) else { continue };
            let out = Value { node: id, slot: 0 };
            if (g.users(out).is_empty() && !g.is_output(out)) || !fuel.take() {
                continue;
            }
            g.replace_all_uses(out, src);
            changed = true;
        }
        Ok(changed)
    }
}
