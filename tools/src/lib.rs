//! The library behind the `loam` command line. Each subcommand is a function here; `main.rs`
//! only parses arguments and prints.

pub mod selftest;
