//! Subcommands of the binary.

pub mod serve;
pub mod train;
