//! Every end-to-end test, with the real plugins, real wasmtime and real models: the
//! library (`golden`, `hostile`, ...) and the `runinfer` binary as a user runs it
//! (`binary`). One test binary: each links wasmtime, Cranelift, tract and ort, so
//! one link instead of thirteen. Shared helpers live in `tests/support` (the
//! `runinfer_e2e` crate).

mod binary;
mod golden;
mod hostile;
mod languages;
mod multi_input;
mod onnxruntime;
mod plugin_loading;
mod refresh;
mod run_job;
mod runtime;
mod serve;
