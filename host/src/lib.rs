//! runinfer: run model handlers compiled to WebAssembly components, the way Apache
//! Beam's `RunInference` runs a `ModelHandler`.
//!
//! The data flow, one module a stage: [`decode`] an input line; the plugin's
//! [`dispatch::Dispatcher`] routes it to a model set, batches it and runs the batch
//! on one of the [`plugin::Plugin`]'s warm sandboxed instances, whose handler calls the
//! [`model`] registry on host [`tensor`]s; [`run`] writes predictions and dead letters
//! in input order; [`metrics`] records every stage. See the README's
//! architecture section.
//!
//! Embedding the host: load a plugin directory and run JSONL through it (what
//! `runinfer run` does). This example runs as a test.
//!
//! ```
//! use runinfer::run::{RunOptions, run_jsonl};
//! use runinfer::{Host, HostConfig};
//! use std::sync::Arc;
//!
//! # fn main() -> anyhow::Result<()> {
//! let host = Host::new(HostConfig::default())?;
//! // A plugin directory: plugin.toml, the component, its models.
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/iris");
//! let plugin = Arc::new(host.load_plugin(&dir)?);
//! let (mut predictions, mut dead_letters) = (Vec::new(), Vec::new());
//! let input: &[u8] = b"[5.1, 3.5, 1.4, 0.2]\nnot json\n";
//! let summary = run_jsonl(
//!     &plugin,
//!     input,
//!     &mut predictions,
//!     &mut dead_letters,
//!     &RunOptions::default(),
//! )?;
//! assert_eq!((summary.predictions, summary.dead_letters), (1, 1));
//! let prediction: serde_json::Value = serde_json::from_slice(&predictions)?;
//! assert_eq!(prediction["inference"]["label"], "setosa");
//! // The metrics of every plugin, in the Prometheus text format.
//! assert!(host.metrics().encode().contains("iris_num_inferences_total"));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

// The layout follows the data flow: `frontends` (run, serve, watch) feed the
// `pipeline` (decode, dispatch, batch, sink), whose batches run in the `sandbox` on a
// `plugin`'s instances, which run models of the `model` registry on host `tensor`s;
// every call holds one of the host's core slots, handed out fairly by `schedule`.
// Leaves below them: `manifest`, `contract`, `untrusted`, `error`, `value`.
// The public API is the modules below and the re-exports after them; the stages'
// internals (batch forming, the sink, the sandbox's instances and bindings) stay
// private. Types that will grow (configs, options, error codes, value kinds) are
// `#[non_exhaustive]`: build them from `Default` and set fields.
mod frontends;
mod pipeline;
mod sandbox;

pub mod contract;
pub mod error;
pub mod host;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod plugin;
pub mod schedule;
pub mod tensor;
pub mod untrusted;
pub mod value;

pub use frontends::{quota, run, serve, watch};
pub use pipeline::{decode, dispatch};
pub use plugin::compile;

pub use error::{ErrorCode, InferenceError, PluginError};
pub use host::{Host, HostConfig, PoolingLimits};
pub use plugin::Plugin;
pub use schedule::HandlerPriority;
