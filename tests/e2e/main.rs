//! The end-to-end tests of the host library with the real plugins, real wasmtime and
//! real models: one test binary (each binary links wasmtime, Cranelift, tract and
//! ort, so one link instead of nine), one module per area; shared helpers live in
//! `tests/support` (the `runinfer_e2e` crate).

mod golden;
mod hostile;
mod languages;
mod onnxruntime;
mod plugin_loading;
mod refresh;
mod run_job;
mod runtime;
mod serve;
