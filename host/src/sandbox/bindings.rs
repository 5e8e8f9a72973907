//! Host-side bindings generated from the WIT contract in `wit/`.
//!
//! WIT resources map to host types kept in each instance's `ResourceTable`: `tensor`
//! to [`crate::tensor::Tensor`], `model` to [`crate::model::ModelHandle`].

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    imports: { default: trappable },
    // A host import fails with the guest's `error` or traps: one Rust type for both.
    trappable_error_type: {
        "runinfer:handler/types.error" => HostError,
    },
    with: {
        "runinfer:handler/types.tensor": crate::tensor::Tensor,
        "runinfer:handler/inference.model": crate::model::ModelHandle,
    },
});

pub use self::runinfer::handler::{inference, log, metrics, types};
use crate::tensor::TensorError;
pub use exports::runinfer::handler::handler_api as api;

/// What a host import fails with: an `error` the guest gets back as a value, or a trap
/// (a forged handle, a full table) that stops the call. wasmtime's
/// `trappable_error_type` turns it into one or the other (`types::Host::convert_error`).
pub enum HostError {
    /// Returned to the guest.
    Guest(types::Error),
    /// Stops the call.
    Trap(wasmtime::Error),
}

impl From<types::Error> for HostError {
    fn from(e: types::Error) -> Self {
        HostError::Guest(e)
    }
}

impl From<wasmtime::Error> for HostError {
    fn from(e: wasmtime::Error) -> Self {
        HostError::Trap(e)
    }
}

impl From<wasmtime::component::ResourceTableError> for HostError {
    fn from(e: wasmtime::component::ResourceTableError) -> Self {
        HostError::Trap(e.into())
    }
}

impl From<TensorError> for HostError {
    fn from(e: TensorError) -> Self {
        HostError::Guest(types::Error {
            code: types::ErrorCode::InvalidInput,
            message: e.to_string(),
        })
    }
}
