//! Errors of the host library.

use std::path::PathBuf;

/// What kind of failure an inference error is; recorded in dead letters and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The example or an argument is malformed (also: an input line that cannot be
    /// decoded).
    InvalidInput,
    /// A model failed to load or run.
    Model,
    /// The handler asked for a model its manifest does not grant.
    NotGranted,
    /// The handler does not support the operation or value kind.
    Unsupported,
    /// A sandbox limit was reached.
    ResourceExhausted,
    /// A handler bug or a broken contract (wrong number of results, bad JSON, ...).
    Internal,
    /// The handler trapped (panic, out of bounds, out of memory, ...); the instance
    /// was discarded.
    Trap,
    /// The handler ran past its time limit and was stopped; the instance was discarded.
    Timeout,
    /// The handler returned an inference that contradicts its declared signature.
    Signature,
}

impl ErrorCode {
    /// The snake_case name used in dead letters.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::Model => "model",
            ErrorCode::NotGranted => "not_granted",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::Internal => "internal",
            ErrorCode::Trap => "trap",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Signature => "signature",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed call into a handler, or a failed example.
#[derive(Clone, Debug, PartialEq, thiserror::Error, serde::Serialize)]
#[error("{code}: {message}")]
pub struct InferenceError {
    /// The kind of failure.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
}

impl InferenceError {
    /// A new error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        InferenceError {
            code,
            message: message.into(),
        }
    }

    /// True when the instance that produced the error cannot be used again.
    pub fn instance_lost(&self) -> bool {
        matches!(self.code, ErrorCode::Trap | ErrorCode::Timeout)
    }
}

/// A plugin that cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// `plugin.toml` is missing or invalid.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    /// The component file cannot be read or is not a valid component.
    #[error("plugin `{plugin}`: component {path}: {message}")]
    Component {
        /// Plugin name.
        plugin: String,
        /// The component file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The component does not implement the runinfer handler world.
    #[error(
        "plugin `{plugin}`: component {path} does not fit the runinfer:handler world: {message}"
    )]
    WrongWorld {
        /// Plugin name.
        plugin: String,
        /// The component file.
        path: PathBuf,
        /// What does not match.
        message: String,
    },
    /// The component was built against another version of the contract.
    #[error(
        "plugin `{plugin}`: component {path} was built against runinfer:handler@{found}, this host implements runinfer:handler@{expected}; rebuild the handler against wit/handler.wit of this host (Rust: the guest-sdk of this version; Python, JavaScript, C: regenerate the bindings with componentize-py, componentize-js or wit-bindgen)",
        expected = crate::contract::CONTRACT_VERSION
    )]
    ContractVersion {
        /// Plugin name.
        plugin: String,
        /// The component file.
        path: PathBuf,
        /// The version the component names.
        found: String,
    },
    /// A granted model cannot be loaded.
    #[error("plugin `{plugin}`: model `{model}`: {source}")]
    Model {
        /// Plugin name.
        plugin: String,
        /// Model name in the manifest.
        model: String,
        /// Why.
        source: crate::model::ModelError,
    },
    /// Instantiating the handler, `init` or `load-model` failed.
    #[error("plugin `{plugin}`: {stage} failed: {source}")]
    Start {
        /// Plugin name.
        plugin: String,
        /// `instantiate`, `init` or `load-model`.
        stage: &'static str,
        /// Why.
        source: InferenceError,
    },
    /// `update_model_path` named no model of the plugin, or a path it may not use.
    #[error("plugin `{plugin}`: update_model_path: {message}")]
    ModelPath {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// No plugin of that name in the plugin root.
    #[error("no plugin `{name}` in {root} (plugins there: {available})")]
    NotFound {
        /// Requested name.
        name: String,
        /// The plugin root.
        root: PathBuf,
        /// Names found.
        available: String,
    },
}
