//! Spark and Ray end to end (integrations/spark, integrations/ray): real engines from
//! PyPI on local clusters — Spark's `local-cluster[2,1,1024]` (two executor JVMs, Java
//! from scripts/java.sh) and a Ray head plus a second node started with `ray start` —
//! running the bundled plugins through `predict_batch_udf` and `map_batches` on this
//! build's binary; predictions checked against the golden files, the machine's
//! server killed mid-job and replaced, nothing left running afterwards
//! (tests/python/spark_job.py, tests/python/ray_job.py).

use super::{plugin_copy, python_env, root};
use std::process::Command;

/// A plugin root with the bundled iris and onnx-tensor plugins.
fn plugin_root() -> tempfile::TempDir {
    let plugins = tempfile::tempdir().unwrap();
    for name in ["iris", "onnx-tensor"] {
        let from = root().join("plugins").join(name);
        let manifest = std::fs::read_to_string(from.join("plugin.toml")).unwrap();
        plugin_copy(
            &from,
            &format!("{name}.wasm"),
            &plugins.path().join(name),
            &manifest,
        );
    }
    plugins
}

fn run_job(script: &str) {
    let python = python_env("requirements-scale.txt", "py-scale");
    let plugins = plugin_root();
    // Where the machine's shared server keeps its address: one per test.
    let machine = tempfile::tempdir().unwrap();
    let out = Command::new(python)
        .arg(root().join("tests/python").join(script))
        .arg(root())
        .arg(env!("CARGO_BIN_EXE_runinfer"))
        .arg(plugins.path())
        .arg(machine.path())
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

#[test]
fn spark_predict_batch_udf_on_a_local_cluster() {
    let java = Command::new("bash")
        .arg(root().join("scripts/java.sh"))
        .output()
        .unwrap();
    assert!(
        java.status.success(),
        "scripts/java.sh: {}",
        String::from_utf8_lossy(&java.stderr)
    );
    run_job("spark_job.py");
}

#[test]
fn ray_map_batches_on_a_two_node_cluster() {
    run_job("ray_job.py");
}
