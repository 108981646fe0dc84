//! Pure domain logic: validated values and rules, no I/O.

pub mod filter;
