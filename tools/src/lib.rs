//! The library behind the `loam` command line: each subcommand is a module here, and
//! `main.rs` only parses arguments and prints.

pub mod bench;
pub mod boards;
pub mod checkpoint;
pub mod data;
pub mod finetune;
pub mod graph;
pub mod inspect;
pub mod metrics;
pub mod model_file;
pub mod npy;
pub mod onnx;
pub mod peers;
pub mod project;
pub mod quantize;
pub mod quickstart;
pub mod report;
pub mod run;
pub mod selftest;
pub mod sources;
pub mod train;
pub mod train_bench;
pub mod trainable;
pub mod verify;
pub mod zoo;
