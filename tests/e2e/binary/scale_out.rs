//! Spark and Ray end to end (integrations/spark, integrations/ray): real engines from
//! PyPI on local clusters — Spark's `local-cluster[2,1,1024]` (two executor JVMs, Java
//! from scripts/java.sh) and a Ray head plus a second node started with `ray start` —
//! running the bundled plugins through `predict_batch_udf` and `map_batches` on this
//! build's binary; predictions checked against the golden files, the machine's
//! server killed mid-job and replaced, nothing left running afterwards
//! (tests/python/spark_job.py, tests/python/ray_job.py).

use super::{bundled_copy, root, run_python_job};
use std::process::Command;

fn run_job(script: &str) {
    let plugins = tempfile::tempdir().unwrap();
    bundled_copy(&["iris", "onnx-tensor"], plugins.path());
    // Where the machine's shared server keeps its address: one per test.
    let machine = tempfile::tempdir().unwrap();
    run_python_job(
        "requirements-scale.txt",
        "py-scale",
        script,
        &[plugins.path().as_os_str(), machine.path().as_os_str()],
    );
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
