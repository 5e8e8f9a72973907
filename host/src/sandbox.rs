//! One handler instance in its sandbox: the WIT bindings, the host side of every
//! import with the checks on what a guest hands over ([`instance`]), and the WASI
//! context that grants only what the manifest lists ([`wasi`]).

pub(crate) mod bindings;
pub mod instance;
pub(crate) mod wasi;
