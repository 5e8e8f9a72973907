//! The hostile-plugin suite: a handler that misbehaves on demand (tests/plugins/hostile).
//! Every misdeed ends with a clear error for that call; the host stays up, the next
//! call works (a trapped instance is replaced) and other plugins are unaffected.

use runinfer::run::RunOptions;
use runinfer_e2e::*;
use serde_json::{Value, json};

const LIMITS: &str = r#"
[models]
iris = "models/iris.onnx"
[limits]
timeout_ms = 300
memory_mb = 64
max_tensor_mb = 32
max_output_mb = 8
instances = 1
"#;

fn hostile(extra: &str) -> tempfile::TempDir {
    let dir = scratch_test_plugin(
        "hostile",
        &format!("name = \"hostile\"\ncomponent = \"hostile.wasm\"\n{LIMITS}{extra}"),
    );
    // A granted model, to show that only granted ones open.
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    std::fs::copy(
        plugins_dir().join("iris/models/iris.onnx"),
        dir.path().join("models/iris.onnx"),
    )
    .unwrap();
    dir
}

/// Runs `deed` then "ok" through the hostile plugin, one example per batch; returns
/// the dead letter of the misdeed (and checks that "ok" still works after it).
fn misdeed(deed: &str) -> Value {
    let dir = hostile("");
    let host = host();
    let plugin = load(&host, dir.path());
    let input = format!("{}\n\"ok\"\n", json!(deed));
    let out = run(&plugin, input.as_bytes(), &size_only(1));
    assert_eq!(out.dead_letters.len(), 1, "{deed}: {:?}", out.predictions);
    assert_eq!(out.predictions.len(), 1, "{deed}: the next call must work");
    assert_eq!(out.predictions[0]["inference"], "ok");
    let dead = out.dead_letters[0].clone();
    assert_eq!(dead["line"], 1);
    assert_eq!(dead["stage"], "inference");
    dead["error"].clone()
}

fn assert_error(error: &Value, code: &str, contains: &str) {
    assert_eq!(error["code"], code, "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(contains),
        "{message:?} should contain {contains:?}"
    );
}

#[test]
fn an_infinite_loop_is_stopped_at_the_time_limit() {
    let start = std::time::Instant::now();
    let error = misdeed("loop");
    assert_error(&error, "timeout", "ran past its time limit and was stopped");
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn a_memory_bomb_hits_the_memory_cap() {
    let error = misdeed("memory");
    assert_error(&error, "trap", "the handler trapped");
    assert_error(&error, "trap", "memory allocation of 16777216 bytes failed");
}

#[test]
fn deep_recursion_exhausts_the_stack() {
    assert_error(&misdeed("recursion"), "trap", "call stack exhausted");
}

#[test]
fn a_panic_is_a_trap_with_the_panic_message() {
    assert_error(
        &misdeed("panic"),
        "trap",
        "the hostile handler panics on purpose",
    );
}

#[test]
fn a_giant_output_is_refused() {
    assert_error(
        &misdeed("giant-output"),
        "resource_exhausted",
        "the handler returned 20 MiB, more than limits.max_output_mb (8)",
    );
}

#[test]
fn forged_and_stale_handles_are_refused() {
    for deed in ["forged-handle", "reused-handle"] {
        let error = misdeed(deed);
        assert_error(
            &error,
            "trap",
            "the handler was stopped: unknown handle index",
        );
    }
}

#[test]
fn files_environment_and_network_are_not_granted() {
    assert_error(&misdeed("read-file"), "unsupported", "reading /etc/passwd");
    assert_error(
        &misdeed("read-env"),
        "unsupported",
        "the environment is empty",
    );
    assert_error(
        &misdeed("socket"),
        "unsupported",
        "connecting to 127.0.0.1:9",
    );
}

#[test]
fn grants_open_exactly_what_they_name() {
    let dir = hostile(
        "[grants]\nenv = { GREETING = \"hi\" }\ndirs = [{ path = \"data\", guest = \"/data\" }]\n",
    );
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/granted.txt"), "granted content").unwrap();
    let host = host();
    let plugin = load(&host, dir.path());
    let out = run(
        &plugin,
        b"\"read-granted-file\"\n\"read-env\"\n\"read-file\"\n",
        &size_only(1),
    );
    assert_eq!(out.predictions[0]["inference"], "granted content");
    assert_eq!(out.predictions[1]["inference"], "GREETING=hi");
    // Still nothing outside the granted directory.
    assert_eq!(out.dead_letters.len(), 1);
    assert_error(
        &out.dead_letters[0]["error"],
        "unsupported",
        "reading /etc/passwd",
    );
}

#[test]
fn only_granted_models_open_and_names_are_never_paths() {
    assert_error(
        &misdeed("ungranted-model"),
        "not_granted",
        "model `secret` is not granted to plugin `hostile` (granted: iris)",
    );
    assert_error(
        &misdeed("traversal-model"),
        "not_granted",
        "model `../../../etc/passwd` is not granted",
    );
}

#[test]
fn tensor_bytes_must_match_the_shape() {
    assert_error(
        &misdeed("bad-tensor"),
        "invalid_input",
        "f32 tensor of shape [2, 2] needs 16 bytes, got 3",
    );
}

#[test]
fn host_side_tensor_memory_is_capped() {
    assert_error(
        &misdeed("tensor-bomb"),
        "resource_exhausted",
        "more than limits.max_tensor_mb (32)",
    );
}

#[test]
fn a_looping_plugin_does_not_disturb_another_one() {
    let host = host();
    let dir = hostile("");
    let hostile = load(&host, dir.path());
    let iris = bundled(&host, "iris");
    let golden = read_jsonl("tests/golden/iris.jsonl");
    let input: String = golden
        .iter()
        .map(|g| format!("{}\n", g["example"]))
        .collect();
    std::thread::scope(|s| {
        let looping = s.spawn(|| run(&hostile, b"\"loop\"\n\"loop\"\n\"ok\"\n", &size_only(1)));
        for _ in 0..5 {
            let out = run(&iris, input.as_bytes(), &RunOptions::default());
            assert_eq!(out.predictions.len(), 150);
            for (p, g) in out.predictions.iter().zip(&golden) {
                assert_eq!(p["inference"]["label"], g["label"]);
            }
        }
        let out = looping.join().unwrap();
        assert_eq!(out.dead_letters.len(), 2);
        assert_eq!(out.predictions.len(), 1);
    });
}

#[test]
fn tenants_prefix_the_metrics_namespace() {
    let dir = scratch_plugin(
        "text-stats",
        "name = \"ts\"\ncomponent = \"text-stats.wasm\"\ntenant = \"acme\"\n",
    );
    let host = host();
    let plugin = load(&host, dir.path());
    assert_eq!(plugin.namespace(), "acme_ts");
    run(&plugin, b"\"two words\"\n", &RunOptions::default());
    let text = host.metrics().encode();
    assert!(text.contains("acme_ts_words_total 2"), "{text}");
    assert!(text.contains("acme_ts_num_inferences_total"), "{text}");
}
