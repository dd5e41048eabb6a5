//! The object must link with nothing: no libc, no libm, no allocator. Cranelift silently turns some
//! instructions into calls (`fma` without FMA, `floor` without SSE4.1, stack probes), so the object
//! is parsed back and any undefined symbol is a compiler bug.

use crate::BackendError;
use object::{Object, ObjectSymbol};

/// Fails naming every undefined symbol of the object.
pub(crate) fn no_undefined_symbols(obj: &[u8]) -> Result<(), BackendError> {
    let file = object::File::parse(obj)
        .map_err(|e| BackendError::Internal(format!("cannot parse the emitted object: {e}")))?;
    let undefined: Vec<String> = file
        .symbols()
        .filter(|s| s.is_undefined() && !s.name().unwrap_or("").is_empty())
        .map(|s| s.name().unwrap_or("?").to_string())
        .collect();
    if undefined.is_empty() {
        Ok(())
    } else {
        Err(BackendError::Internal(format!(
            "the object references undefined symbols {}: the library must link with nothing",
            undefined.join(", ")
        )))
    }
}
