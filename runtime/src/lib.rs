//! kiln runtime (in progress).
