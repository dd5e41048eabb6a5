//! Graph passes and the driver that runs them.
//!
//! A pass is a [`Pass`]: a name and a `run` that rewrites the graph in place and says whether it changed
//! anything. Every rewrite keeps every value's type (shape inference is an invariant, not a pass), and
//! asks the [`Fuel`] first, so `--fuel N` stops after N rewrites to bisect a bad one. The pipelines are
//! listed in one place, [`pipeline_with`] ([`pipeline`] with the default [`PipelineOptions`]). The
//! [`Driver`] verifies the graph after each pass (in debug builds and whenever asked), times each
//! pass, and can capture the IR after a named pass.
#![deny(missing_docs)]

mod choose_layout;
mod const_fold;
mod dce;
mod driver;
mod fold_batchnorm;
mod fold_pad;
mod fuse_activation;
mod fuse_elementwise;
mod identity;
mod matmul_to_gemm;
mod recognize;
mod recognize_gelu;
mod recognize_layernorm;
mod recognize_softmax;
mod simplify_layout;

pub use choose_layout::{ChooseLayout, LayoutPolicy};
pub use const_fold::ConstFold;
pub use dce::DeadNodes;
pub use driver::{pipeline, pipeline_with, Driver, PassRecord, PipelineOptions, PipelineReport};
pub use fold_batchnorm::FoldBatchNorm;
pub use fold_pad::FoldPad;
pub use fuse_activation::FuseActivation;
pub use fuse_elementwise::FuseElementwise;
pub use identity::RemoveIdentity;
pub use matmul_to_gemm::MatMulToGemm;
pub use recognize_gelu::RecognizeGelu;
pub use recognize_layernorm::RecognizeLayerNorm;
pub use recognize_softmax::RecognizeSoftmax;
pub use simplify_layout::SimplifyLayout;

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
