//! broker (work in progress).

pub mod dead_letter;
