//! Validated values and pure rules, free of HTTP and database concerns.

pub mod email;
pub mod filter;
pub mod ids;
pub mod password;
