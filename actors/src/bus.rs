//! bus (work in progress).
