//! kiln backend (in progress).
