//! kiln passes (in progress).
