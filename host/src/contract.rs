//! What a handler declares through the contract (`init`'s `handler-info`), as the
//! host holds it: the input kind every stage decodes by, Beam's batching kwargs,
//! resource hints and namespace. It depends only on the manifest's batching type and
//! on tensors, so the first stage (decoding) depends on it, not on the sandbox.

use crate::manifest::BatchingConfig;
use crate::tensor::DType;

/// Beam's handler description, as the handler's `init` returned it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct HandlerInfo {
    /// The handler's metrics namespace, if it names one.
    pub metrics_namespace: Option<String>,
    /// The handler's batching kwargs.
    pub batching: BatchingConfig,
    /// Minimum memory, in MiB, the handler asks for.
    pub min_ram_mb: Option<u64>,
    /// Accelerator the handler asks for.
    pub accelerator: Option<String>,
    /// Beam's `share_model_across_processes`.
    pub share_model: bool,
    /// How examples are decoded for it.
    pub input: InputKind,
}

/// How the host decodes each example for a handler.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum InputKind {
    /// A nested JSON array (or tensor object) decoded into a tensor.
    Tensor {
        /// Element type.
        dtype: DType,
        /// Expected shape of one example (`None` = free dimension), if fixed.
        shape: Option<Vec<Option<u64>>>,
    },
    /// Any JSON value, as JSON text.
    Json,
    /// A JSON string.
    Text,
    /// A base64 JSON string.
    Bytes,
}
