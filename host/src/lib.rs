//! runinfer: run model handlers compiled to WebAssembly components, the way Apache
//! Beam's `RunInference` runs a `ModelHandler`.
//!
//! The data flow, one module a stage: [`decode`] an input line; the plugin's
//! [`dispatch::Dispatcher`] routes it to a model set, [`batch`]es it and runs the batch
//! on one of the [`plugin::Plugin`]'s warm [`instance`]s, whose handler calls the
//! [`model`] registry on host [`tensor`]s; [`run`] writes predictions and dead letters
//! ([`sink`]) in input order; [`metrics`] records every stage. See the README's
//! architecture section.
#![deny(missing_docs)]

pub mod batch;
mod bindings;
pub mod compile;
pub mod contract;
pub mod decode;
pub mod dispatch;
pub mod error;
pub mod host;
pub mod instance;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod plugin;
pub mod run;
mod sandbox;
pub mod serve;
pub mod sink;
pub mod tensor;
pub mod untrusted;
pub mod value;
pub mod watch;

pub use error::{ErrorCode, InferenceError, PluginError};
pub use host::{Host, HostConfig, PoolingLimits};
pub use plugin::Plugin;
