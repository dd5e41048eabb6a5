//! kiln's runtime: the parts of a generated library that are not kernels.
//!
//! A library that kiln emits is one object file (plus, optionally, a weights file) that links
//! against nothing at all: no libc, no libm, no allocator. Everything a model needs beyond its
//! kernels is decided or generated at compile time by this crate:
//!
//! - [`math`]: inline Cranelift emitters for `exp`, `log`, `tanh`, `sigmoid`, `erf`, `pow`, `sin`,
//!   `cos` and `tan`, for `f32` scalars and `f32x4` vectors, and the f16/bf16 conversions. They
//!   expand to plain arithmetic, so a `Softmax` or `Gelu` never turns into a call to libm.
//! - [`plan`](mod@plan): the static memory planner that gives every intermediate tensor a fixed offset in a
//!   single caller-provided arena, so the library never allocates.
//! - [`header`]: the C header (`NAME.h`) that defines the fixed C ABI: input/output structs, arena
//!   size, error codes and the `NAME_run` prototype.
//! - [`archive`]: the deterministic `ar` writer that packages the object as `libNAME.a`.
//!
//! Why no libc: the library must drop into any C, C++, Rust or embedded build for its target and
//! behave the same everywhere. A dependency on libm would tie results to the host's libm version and
//! make `-nostdlib` and bare-metal builds impossible; an allocator would make run time and failure
//! modes depend on the host. With no global state and no calls, `NAME_run` is trivially reentrant:
//! two arenas give two independent concurrent runs.
#![deny(missing_docs)]

pub mod archive;
pub mod header;
pub mod math;
pub mod plan;

pub use archive::write_archive;
pub use header::{c_header, c_identifier, unique_identifiers, ExternalWeights, HeaderSpec, IoSpec};
pub use math::MathOpts;
pub use plan::{plan, Buffer, Plan};
