//! `write-wasi-adapter OUT`: writes wasmtime's WASI preview1 reactor adapter to OUT.

fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: write-wasi-adapter OUT");
    std::fs::write(
        &out,
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    )
    .unwrap_or_else(|e| panic!("cannot write {out}: {e}"));
}
