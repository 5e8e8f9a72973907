//! The Beam integration (integrations/beam) end to end: real pipelines on Beam's local
//! runner with `RuninferModelHandler` driving this build's `runinfer serve`
//! (tests/python/beam_pipeline.py, in a venv that scripts/python-env.sh installs from
//! PyPI).

use super::{python_env, root};
use std::process::Command;

#[test]
fn beam_pipelines_with_the_runinfer_model_handler() {
    use crate::multi_input::{examples, minilm3, reference};
    let python = python_env("requirements-beam.txt", "py-beam");
    // The named-input pipeline's model, examples and onnxruntime's outputs.
    let model = minilm3();
    let input = runinfer_e2e::jsonl(examples().into_iter());
    let files = tempfile::tempdir().unwrap();
    let (examples_path, reference_path) =
        (files.path().join("x.jsonl"), files.path().join("r.jsonl"));
    std::fs::write(&examples_path, &input).unwrap();
    let reference: String = reference(&model, &input)
        .iter()
        .map(|r| format!("{r}\n"))
        .collect();
    std::fs::write(&reference_path, reference).unwrap();
    let out = Command::new(python)
        .arg(root().join("tests/python/beam_pipeline.py"))
        .arg(root())
        .arg(env!("CARGO_BIN_EXE_runinfer"))
        .arg(&model)
        .arg(&examples_path)
        .arg(&reference_path)
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
