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
        "runinfer:handler/types.error" => crate::sandbox::instance::HostError,
    },
    with: {
        "runinfer:handler/types.tensor": crate::tensor::Tensor,
        "runinfer:handler/inference.model": crate::model::ModelHandle,
    },
});

pub use self::runinfer::handler::{inference, log, metrics, types};
pub use exports::runinfer::handler::handler_api as api;
