//! The Beam integration (integrations/beam) end to end: real pipelines on Beam's local
//! runner with `RuninferModelHandler` driving this build's `runinfer serve`
//! (tests/python/beam_pipeline.py, in a venv that scripts/python-env.sh installs from
//! PyPI).

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn beam_pipelines_with_the_runinfer_model_handler() {
    let env = Command::new("bash")
        .arg(root().join("scripts/python-env.sh"))
        .arg(root().join("tests/python/requirements-beam.txt"))
        .arg(root().join("target/py-beam"))
        .output()
        .expect("bash runs scripts/python-env.sh");
    assert!(
        env.status.success(),
        "installing apache-beam (tests/python/requirements-beam.txt from PyPI) failed:\n{}",
        String::from_utf8_lossy(&env.stderr)
    );
    let python = String::from_utf8(env.stdout).unwrap();
    let out = Command::new(python.trim())
        .arg(root().join("tests/python/beam_pipeline.py"))
        .arg(root())
        .arg(env!("CARGO_BIN_EXE_runinfer"))
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
