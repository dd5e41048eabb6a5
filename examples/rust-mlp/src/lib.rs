//! A safe Rust wrapper over a model compiled by kiln in `build.rs`.
//!
//! The generated library exports one C function, `mlp_run(inputs, outputs, arena)`. This wrapper owns a
//! 64-byte-aligned arena of the size kiln computed, so a call cannot pass a wrong buffer.

mod sizes {
    include!(concat!(env!("OUT_DIR"), "/mlp_sizes.rs"));
}
pub use sizes::{ARENA_SIZE, INPUT_LEN, OUTPUT_LEN};

mod ffi {
    /// `mlp_inputs` of mlp.h: one pointer per graph input, ONNX order.
    #[repr(C)]
    pub struct Inputs {
        pub input: *const f32,
    }
    /// `mlp_outputs` of mlp.h.
    #[repr(C)]
    pub struct Outputs {
        pub probs: *mut f32,
    }
    extern "C" {
        pub fn mlp_run(inputs: *const Inputs, outputs: *mut Outputs, arena: *mut u8) -> i32;
    }
}

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// The MLP with its scratch memory. One instance per thread; create as many as you like.
pub struct Mlp {
    arena: Vec<Line>,
}

/// A non-zero return code of `mlp_run` (see mlp.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunError(pub i32);

impl Default for Mlp {
    fn default() -> Self {
        Self::new()
    }
}

impl Mlp {
    /// Allocates the arena (the only memory the model needs besides its inputs and outputs).
    pub fn new() -> Self {
        Mlp {
            arena: vec![Line([0; 64]); ARENA_SIZE.div_ceil(64).max(1)],
        }
    }

    /// Runs the model on one input vector and returns the class probabilities.
    pub fn run(&mut self, input: &[f32; INPUT_LEN]) -> Result<[f32; OUTPUT_LEN], RunError> {
        let mut probs = [0f32; OUTPUT_LEN];
        let inputs = ffi::Inputs {
            input: input.as_ptr(),
        };
        let mut outputs = ffi::Outputs {
            probs: probs.as_mut_ptr(),
        };
        // SAFETY: the pointers cover the element counts kiln compiled for; the arena is ARENA_SIZE bytes,
        // 64-byte aligned, and borrowed mutably for the duration of the call.
        let rc = unsafe { ffi::mlp_run(&inputs, &mut outputs, self.arena.as_mut_ptr().cast()) };
        if rc == 0 {
            Ok(probs)
        } else {
            Err(RunError(rc))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(path: &str) -> Vec<f32> {
        std::fs::read(path)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn matches_onnxruntime() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/mlp");
        let input: [f32; INPUT_LEN] = floats(&format!("{dir}/input_0.bin")).try_into().unwrap();
        let want = floats(&format!("{dir}/output_0.bin"));
        let got = Mlp::new().run(&input).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
                "got {got:?}, onnxruntime {want:?}"
            );
        }
        assert!(
            (got.iter().sum::<f32>() - 1.0).abs() < 1e-5,
            "softmax output sums to 1"
        );
    }

    #[test]
    fn two_instances_run_concurrently() {
        let input = [0.25f32; INPUT_LEN];
        let want = Mlp::new().run(&input).unwrap();
        let handles: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(move || Mlp::new().run(&input).unwrap()))
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), want);
        }
    }
}
