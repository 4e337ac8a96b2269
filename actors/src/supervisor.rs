//! supervisor (work in progress).
