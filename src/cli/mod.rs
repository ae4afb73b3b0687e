//! The command line: flags and environment variables, and the subcommands.

pub mod app;
pub mod config;
