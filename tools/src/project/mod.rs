//! A loam project: the `loam.toml` file, the model templates it names, and the lifecycle
//! commands over it (`loam init`, `loam train`, `loam eval`, `loam tune`).

pub mod config;
pub mod init;
pub mod pipeline;
pub mod templates;
pub mod tune;

pub use config::Project;
