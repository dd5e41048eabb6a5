//! The pass driver and the pipeline list.

use crate::{ConstFold, DeadNodes, Fuel, Pass, PassError, RemoveIdentity};
use kiln_ir::{print, verify, Graph, PrintOptions};
use std::time::{Duration, Instant};

/// The default pipeline, in order. Every pipeline kiln runs is listed here.
pub fn pipeline() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(ConstFold::default()),
        Box::new(RemoveIdentity),
        // Structural folds first: they expose the patterns the fusion passes look for.
        Box::new(crate::FoldBatchNorm),
        Box::new(crate::FoldPad),
        // The bias stays a separate add for now: with a C addend one of bert_style's gemm kernels
        // spills heavily (2361 instructions, 654 stack accesses, against at most 464 and 46 without
        // C): +16% instructions per run on bert_style, +12% on gpt2_style. Turn it on once the
        // kernel keeps C out of its registers.
        Box::new(crate::MatMulToGemm { bias_as_c: false }),
        Box::new(crate::SimplifyLayout),
        // Decomposed LayerNorm/GELU/Softmax back to single ops, before fusion splits them up.
        Box::new(crate::RecognizeLayerNorm),
        Box::new(crate::RecognizeGelu),
        Box::new(crate::RecognizeSoftmax),
        // After the folds and recognitions: bias adds and activations join the conv/gemm epilogue.
        Box::new(crate::FuseActivation::default()),
        // Last rewrite: what is left of the elementwise chains runs as one loop per chain.
        Box::new(crate::FuseElementwise),
        Box::new(DeadNodes),
    ]
}

/// What one pass did.
#[derive(Clone, Debug)]
pub struct PassRecord {
    /// Pass name.
    pub name: &'static str,
    /// Wall time.
    pub time: Duration,
    /// Whether it changed the graph.
    pub changed: bool,
    /// Nodes after the pass.
    pub nodes_after: usize,
}

/// What a pipeline run did.
#[derive(Clone, Debug, Default)]
pub struct PipelineReport {
    /// One record per pass, in order.
    pub passes: Vec<PassRecord>,
    /// The IR captured after the pass named by [`Driver::print_after`], if any.
    pub printed: Option<String>,
    /// Rewrites done.
    pub rewrites: u64,
}

/// Runs passes with verification, timing, IR capture and fuel.
#[derive(Clone, Debug)]
pub struct Driver {
    /// Verify after every pass (always on in debug builds).
    pub verify: bool,
    /// Capture the IR after this pass (`"input"` captures it before any pass).
    pub print_after: Option<String>,
    /// Rewrite budget (`None` = unlimited).
    pub fuel: Option<u64>,
    /// Options for the captured IR.
    pub print_options: PrintOptions,
}

impl Default for Driver {
    fn default() -> Self {
        Driver {
            verify: cfg!(debug_assertions),
            print_after: None,
            fuel: None,
            print_options: PrintOptions::default(),
        }
    }
}

impl Driver {
    /// Runs `passes` over `g` in order.
    pub fn run(
        &self,
        g: &mut Graph,
        passes: &[Box<dyn Pass>],
    ) -> Result<PipelineReport, PassError> {
        let names: Vec<&str> = passes.iter().map(|p| p.name()).collect();
        if let Some(want) = &self.print_after {
            if want != "input" && !names.contains(&want.as_str()) {
                return Err(PassError::UnknownPass(
                    want.clone(),
                    format!("input, {}", names.join(", ")),
                ));
            }
        }
        let mut fuel = self.fuel.map_or_else(Fuel::unlimited, Fuel::limited);
        let mut report = PipelineReport::default();
        if self.verify {
            verify(g).map_err(|source| PassError::Verify {
                pass: "input",
                source,
            })?;
        }
        if self.print_after.as_deref() == Some("input") {
            report.printed = Some(print(g, self.print_options));
        }
        for pass in passes {
            let start = Instant::now();
            let changed = pass.run(g, &mut fuel)?;
            let time = start.elapsed();
            if self.verify {
                verify(g).map_err(|source| PassError::Verify {
                    pass: pass.name(),
                    source,
                })?;
            }
            report.passes.push(PassRecord {
                name: pass.name(),
                time,
                changed,
                nodes_after: g.node_count(),
            });
            if self.print_after.as_deref() == Some(pass.name()) {
                report.printed = Some(print(g, self.print_options));
            }
        }
        report.rewrites = fuel.used();
        Ok(report)
    }
}
