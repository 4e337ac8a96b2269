//! broker (work in progress).
