//! The Beam integration (integrations/beam) end to end: real pipelines on Beam's local
//! runner with `RuninferModelHandler` driving this build's `runinfer serve`
//! (tests/python/beam_pipeline.py, in a venv that scripts/python-env.sh installs from
//! PyPI).

use super::{python_env, root};
use std::process::Command;

#[test]
fn beam_pipelines_with_the_runinfer_model_handler() {
    let python = python_env("requirements-beam.txt", "py-beam");
    // The named-input pipeline's model, examples and onnxruntime's outputs.
    let files = crate::multi_input::example_files();
    let out = Command::new(python)
        .arg(root().join("tests/python/beam_pipeline.py"))
        .arg(root())
        .arg(env!("CARGO_BIN_EXE_runinfer"))
        .arg(&files.model)
        .arg(&files.examples)
        .arg(&files.reference)
        .env(
            "RUNINFER_CACHE_DIR",
            root().join("target/test-compile-cache"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.ends_with("ok\n"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
}
