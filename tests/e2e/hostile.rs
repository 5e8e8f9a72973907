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
    misdeed_with("", deed)
}

/// [`misdeed`] with `extra` manifest text (grants).
fn misdeed_with(extra: &str, deed: &str) -> Value {
    let dir = hostile(extra);
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

/// A sleep is blocked in the host, where the epoch-based time limit does not reach:
/// the host ends the wait itself. The handler asks for 60 s, its limit is 300 ms.
#[test]
fn a_sleep_past_the_time_limit_is_stopped_at_the_limit() {
    let start = std::time::Instant::now();
    let error = misdeed("sleep-long");
    assert_error(&error, "timeout", "ran past its time limit and was stopped");
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
}

/// The same for a raw `wasi:io/streams` `blocking-read` on a socket (a plugin granted
/// the network) that never gets data: the test's listener accepts and never writes
/// (it closes after 60 s, so that without the host's bound the test fails, not hangs).
#[test]
fn a_blocking_read_that_gets_no_data_is_stopped_at_the_time_limit() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((connection, _)) = listener.accept() {
            std::thread::sleep(std::time::Duration::from_secs(60));
            drop(connection);
        }
    });
    let start = std::time::Instant::now();
    let grants = format!("[grants]\nnetwork = true\nenv = {{ HANG_PORT = \"{port}\" }}\n");
    let error = misdeed_with(&grants, "stream-hang");
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
fn files_and_environment_are_not_granted() {
    assert_error(&misdeed("read-file"), "unsupported", "reading /etc/passwd");
    assert_error(
        &misdeed("read-env"),
        "unsupported",
        "the environment is empty",
    );
}

/// Whether a connection is waiting on `listener` (non-blocking).
fn connection_arrived(listener: &std::net::TcpListener) -> bool {
    match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    }
}

#[test]
fn the_network_is_reached_only_when_granted() {
    // A listener of the test's own: a denied connect must not reach it, a granted one
    // must (a closed port would fail the same way either way).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let deed = format!("connect:{}", listener.local_addr().unwrap().port());
    let error = misdeed(&deed);
    assert_error(&error, "unsupported", "connecting to 127.0.0.1:");
    assert!(
        !connection_arrived(&listener),
        "a denied handler reached the listener"
    );

    let dir = hostile("[grants]\nnetwork = true\n");
    let host = host();
    let plugin = load(&host, dir.path());
    let out = run(
        &plugin,
        format!("{}\n", json!(deed)).as_bytes(),
        &size_only(1),
    );
    assert_eq!(out.predictions.len(), 1, "{:?}", out.dead_letters);
    assert_eq!(out.predictions[0]["inference"], "connected");
    // The handler wrote before it returned, so the connection is there now.
    assert!(
        connection_arrived(&listener),
        "a granted handler did not reach the listener"
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

// What a handler hands the host through values: every one validated, bounded or
// refused, never trusted.

/// Loads the hostile plugin with `[args]` (what its `init` then declares) and returns
/// the load error.
fn refused_at_load(host: &runinfer::Host, args: &str) -> String {
    let dir = hostile(&format!("[args]\n{args}\n"));
    match host.load_plugin(dir.path()) {
        Ok(_) => panic!("a handler declaring {args} must be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn declared_batching_values_are_capped_at_load() {
    let host = host();
    let error = refused_at_load(&host, "max_batch_size = \"4000000000\"");
    assert!(
        error.contains("batch_elements_kwargs: max_batch_size = 4000000000 is more than the host allows (65536)"),
        "{error}"
    );
    let error = refused_at_load(&host, "max_batch_duration_ms = \"4000000000\"");
    assert!(
        error.contains("more than the host allows (600000)"),
        "{error}"
    );
    let error = refused_at_load(&host, "min_batch_size = \"50\"\nmax_batch_size = \"10\"");
    assert!(
        error.contains("min_batch_size 50 is more than max_batch_size 10"),
        "{error}"
    );
    // The host stays usable: the same plugin with sane values loads and answers.
    let dir = hostile("[args]\nmax_batch_size = \"65536\"\n");
    let plugin = load(&host, dir.path());
    assert_eq!(plugin.batching(&Default::default()).max_batch_size, 65536);
    let out = run(&plugin, b"\"ok\"\n", &RunOptions::default());
    assert_eq!(out.predictions.len(), 1);
}

#[test]
fn a_declared_namespace_must_be_a_metric_name_and_its_own() {
    let host = host();
    let error = refused_at_load(&host, "namespace = \"x_total 1\\nforged_total 9\\n\"");
    assert!(error.contains("invalid metrics namespace"), "{error}");
    assert!(!error.contains('\n'), "escaped: {error:?}");
    let error = refused_at_load(&host, "namespace = \"runinfer_model_loads\"");
    assert!(
        error.contains("the prefix `runinfer` is the host's own"),
        "{error}"
    );

    let iris = bundled(&host, "iris");
    let error = refused_at_load(&host, &format!("namespace = \"{}\"", iris.namespace()));
    assert!(error.contains("belongs to another plugin"), "{error}");
    // iris keeps its own series.
    let out = run(&iris, b"[5.1, 3.5, 1.4, 0.2]\n", &RunOptions::default());
    assert_eq!(out.predictions[0]["inference"]["label"], "setosa");
}

/// The names of the metric families in an exposition, each once, else the test fails.
fn families_are_unique(text: &str) {
    let mut seen = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(
                seen.insert(name.to_string()),
                "family {name} twice:\n{text}"
            );
        }
        assert!(!line.starts_with("forged"), "forged line {line:?}");
    }
}

#[test]
fn handler_metrics_cannot_shadow_the_hosts_or_be_non_finite() {
    assert_error(
        &misdeed("metric-reserved"),
        "invalid_input",
        "metric name `num_inferences` is reserved",
    );
    assert_error(
        &misdeed("metric-shadow"),
        "invalid_input",
        "metric name `num_inferences_total` is reserved",
    );
    assert_error(
        &misdeed("metric-infinite"),
        "invalid_input",
        "metric `latency`: inf is not a finite number",
    );
    assert_error(
        &misdeed("metric-nan"),
        "invalid_input",
        "metric `level`: NaN is not a finite number",
    );

    let host = host();
    let dir = hostile("");
    let plugin = load(&host, dir.path());
    let out = run(
        &plugin,
        b"\"metric-reserved\"\n\"metric-shadow\"\n\"metric-infinite\"\n\"metric-ok\"\n\"metric-flood\"\n",
        &size_only(1),
    );
    assert_eq!(out.predictions.len(), 2, "{:?}", out.dead_letters);
    // metric-ok made 2 names; the flood gets the other 62 of the default cap of 64.
    assert_eq!(
        out.predictions[1]["inference"],
        "62 made; metric `m62` would be this plugin's metric number 65, more than limits.max_custom_metrics (64)"
    );
    let text = host.metrics().encode();
    families_are_unique(&text);
    let values = prometheus_values(&text);
    assert_eq!(values["hostile_misdeeds_total"], 1.0);
    assert_eq!(values["hostile_latency_count"], 1.0);
    assert_eq!(values["hostile_latency_sum"], 0.5);
    let inferences: f64 = values
        .iter()
        .filter(|(k, _)| k.starts_with("hostile_num_inferences_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(inferences, 2.0, "only the host counts inferences");
}

#[test]
fn every_plugin_series_exists_at_zero_from_load() {
    let host = host();
    let iris = bundled(&host, "iris");
    let text = host.metrics().encode();
    let ns = iris.namespace();
    for series in [
        "num_inferences_total",
        "failed_batches_counter_total",
        "inference_request_batch_size_count",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{ns}_{series}{{")))
            .unwrap_or_else(|| panic!("{ns}_{series} is exposed before any batch:\n{text}"));
        assert!(line.ends_with(" 0"), "{line}");
    }
}

#[test]
fn json_inferences_are_bounded_in_depth() {
    assert_error(
        &misdeed("deep-json"),
        "internal",
        "JSON nested more than 128 levels deep",
    );
}

#[test]
fn named_tensors_must_have_distinct_names() {
    assert_error(
        &misdeed("duplicate-names"),
        "signature",
        "the handler named two fields \"a\"",
    );
}

#[test]
fn empty_tensors_are_bounded_and_unstack_one_row_each() {
    let dir = hostile("");
    let host = host();
    let plugin = load(&host, dir.path());
    let out = run(&plugin, b"\"empty-rows\"\n", &size_only(1));
    assert_eq!(out.predictions[0]["inference"], "3 rows");
    assert_error(
        &misdeed("empty-giant"),
        "invalid_input",
        "describes more than 65536 empty arrays",
    );
    assert_error(
        &misdeed("empty-rows-bomb"),
        "resource_exhausted",
        "more than limits.max_tensor_mb (32)",
    );
}

#[test]
fn a_refused_example_fails_alone_and_a_trap_on_the_retry_drops_the_instance() {
    let dir = hostile("");
    let host = host();
    let plugin = load(&host, dir.path());
    // One batch of three: the handler refuses the whole batch for its first example;
    // asked one by one, only that example is refused.
    let out = run(&plugin, b"\"bogus\"\n\"ok\"\n\"ok\"\n", &size_only(3));
    assert_eq!(out.predictions.len(), 2, "{:?}", out.dead_letters);
    assert_eq!(out.dead_letters.len(), 1);
    assert_eq!(out.dead_letters[0]["line"], 1);
    assert_error(
        &out.dead_letters[0]["error"],
        "invalid_input",
        "unknown misdeed",
    );
    // A trap while asking one by one fails the whole call and the instance is
    // replaced: the next batch works.
    let out = run(
        &plugin,
        b"\"bogus\"\n\"panic\"\n\"ok\"\n\"ok\"\n",
        &size_only(3),
    );
    assert_eq!(out.dead_letters.len(), 3, "{:?}", out.predictions);
    for dead in &out.dead_letters {
        assert_error(&dead["error"], "trap", "panics on purpose");
    }
    assert_eq!(out.predictions.len(), 1, "{:?}", out.dead_letters);
    assert_eq!(out.predictions[0]["inference"], "ok");
}
