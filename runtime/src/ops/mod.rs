//! Operators. Each op has its own module holding the parameter types, the validation done once
//! before running, a portable `reference` kernel that defines the result, and the per-ISA fast
//! paths beside it.

pub mod fully_connected;
