//! runinfer: run model handlers compiled to WebAssembly components, the way Apache
//! Beam's `RunInference` runs a `ModelHandler`.
//!
//! The data flow, one module a stage: [`decode`] an input line, [`run`] batches it
//! through a [`plugin::Plugin`]'s [`instance`]s, whose handlers call the [`model`]
//! registry on host [`tensor`]s; results become predictions or dead letters ([`sink`]);
//! [`metrics`] records every stage. See the README's architecture section.
#![deny(missing_docs)]

mod bindings;
pub mod compile;
pub mod decode;
pub mod error;
pub mod host;
pub mod instance;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod plugin;
pub mod run;
pub mod sink;
pub mod tensor;
pub mod value;

pub use error::{ErrorCode, InferenceError, PluginError};
pub use host::{Host, HostConfig};
pub use plugin::Plugin;
