//! The pass driver and the pipeline list.

use crate::{ConstFold, DeadNodes, Fuel, LayoutPolicy, Pass, PassError, RemoveIdentity};
use kiln_ir::{print, verify, Graph, PrintOptions};
use std::time::{Duration, Instant};

/// The choices a pipeline leaves to its user. The default is what `kiln` does without flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipelineOptions {
    /// Activation layout of the conv regions (`--layout`): see [`crate::ChooseLayout`].
    pub layout: LayoutPolicy,
    /// Whether the backend will compute dense 3x3 stride-1 convs by Winograd (true unless
    /// `--winograd off`), which the `auto` layout rule weighs: see [`crate::ChooseLayout`].
    pub winograd: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            layout: LayoutPolicy::default(),
            winograd: true,
        }
    }
}

/// The default pipeline, in order: [`pipeline_with`] the default [`PipelineOptions`].
pub fn pipeline() -> Vec<Box<dyn Pass>> {
    pipeline_with(&PipelineOptions::default())
}

/// The pipeline, in order, with the given options. Every pipeline kiln runs is listed here; the
/// options change what passes do, never which passes run (so `--after PASS` always finds them).
pub fn pipeline_with(opts: &PipelineOptions) -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(ConstFold::default()),
        Box::new(RemoveIdentity),
        // Structural folds first: they expose the patterns the fusion passes look for.
        Box::new(crate::FoldBatchNorm),
        Box::new(crate::FoldPad),
        // The bias joins the gemm as its C: the epilogue loads it next to its use instead of keeping
        // it in registers through the k loop. Measured (p50 of single-thread CPU time, ten
        // alternating rounds): bert_style 21.5 -> 21.4 ms, gpt2_style 1.69 -> 1.64 ms (with C held
        // in registers it had cost bert_style +16% instructions per run).
        Box::new(crate::MatMulToGemm { bias_as_c: true }),
        Box::new(crate::SimplifyLayout),
        // Decomposed LayerNorm/GELU/Softmax back to single ops, before fusion splits them up.
        Box::new(crate::RecognizeLayerNorm),
        Box::new(crate::RecognizeGelu),
        Box::new(crate::RecognizeSoftmax),
        // After the folds and recognitions: bias adds and activations join the conv/gemm epilogue.
        // Relu and clip join the gemm microkernel's epilogue too (see `FuseActivation`).
        Box::new(crate::FuseActivation::default()),
        // After fuse-activation, so activations move with their conv into channels-last; before
        // fuse-elementwise, so the elementwise ops it moves into the channels-last region still fuse.
        Box::new(crate::ChooseLayout {
            policy: opts.layout,
            winograd: opts.winograd,
        }),
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
