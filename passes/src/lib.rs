//! Graph passes and the driver that runs them.
//!
//! A pass is a [`Pass`]: a name and a `run` that rewrites the graph in place and says whether it changed
//! anything. Every rewrite keeps every value's type (shape inference is an invariant, not a pass), and
//! asks the [`Fuel`] first, so `--fuel N` stops after N rewrites to bisect a bad one. The pipelines are
//! listed in one place, [`pipeline`]. The [`Driver`] verifies the graph after each pass (in debug builds
//! and whenever asked), times each pass, and can capture the IR after a named pass.
#![deny(missing_docs)]

mod const_fold;
mod dce;
mod driver;
mod identity;

pub use const_fold::ConstFold;
pub use dce::DeadNodes;
pub use driver::{pipeline, Driver, PassRecord, PipelineReport};
pub use identity::RemoveIdentity;

use kiln_ir::Graph;

/// A graph rewrite.
pub trait Pass {
    /// Short name, used by `--print-after` and in timings.
    fn name(&self) -> &'static str;
    /// Rewrites `g` in place; returns whether anything changed.
    fn run(&self, g: &mut Graph, fuel: &mut Fuel) -> Result<bool, PassError>;
}

/// A budget of rewrites. Unlimited by default; a limit makes every pass stop rewriting once it is spent,
/// which bisects a miscompile to a single rewrite.
#[derive(Clone, Debug)]
pub struct Fuel {
    left: Option<u64>,
    used: u64,
}

impl Fuel {
    /// No limit.
    pub fn unlimited() -> Self {
        Fuel {
            left: None,
            used: 0,
        }
    }

    /// At most `n` rewrites.
    pub fn limited(n: u64) -> Self {
        Fuel {
            left: Some(n),
            used: 0,
        }
    }

    /// Asks for one rewrite; false once the budget is spent.
    pub fn take(&mut self) -> bool {
        match &mut self.left {
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                self.used += 1;
                true
            }
            None => {
                self.used += 1;
                true
            }
        }
    }

    /// Rewrites done so far.
    pub fn used(&self) -> u64 {
        self.used
    }
}

/// A pass failed. Passes only fail on compiler bugs or on limits (a pass never rejects a valid graph).
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The graph broke an invariant after the named pass.
    #[error("after pass `{pass}`: {source}")]
    Verify {
        /// The pass that just ran.
        pass: &'static str,
        /// What the verifier said.
        #[source]
        source: kiln_ir::VerifyError,
    },
    /// The graph itself is malformed (a cycle, an op that rejects its inputs).
    #[error(transparent)]
    Graph(#[from] kiln_ir::GraphError),
    /// `--print-after` named no pass of the pipeline.
    #[error("no pass named `{0}` in the pipeline (passes: {1})")]
    UnknownPass(String, String),
}
