//! Helpers for the end-to-end tests: paths of the bundled plugins and data, a host
//! with a private compile cache, throw-away plugin directories built from the bundled
//! components, and running JSONL through a plugin.

use runinfer::compile::CompileCache;
use runinfer::run::{RunOptions, RunSummary, run_jsonl};
use runinfer::{Host, HostConfig, Plugin};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled plugin root (components built by host/build.rs).
pub fn plugins_dir() -> PathBuf {
    root().join("plugins")
}

/// A host whose compile cache lives in `cache` (or none).
pub fn host_with_cache(cache: Option<&Path>) -> Host {
    Host::new({
        let mut value = HostConfig::default();
        value.compile_cache = cache.map(CompileCache::new);
        value
    })
    .expect("host starts")
}

/// A host with a compile cache shared by the test binaries of this build.
pub fn host() -> Host {
    host_with_cache(Some(&root().join("target").join("test-compile-cache")))
}

/// Loads a bundled plugin.
pub fn bundled(host: &Host, name: &str) -> Arc<Plugin> {
    load(host, &plugins_dir().join(name))
}

/// Loads the plugin in `dir`.
pub fn load(host: &Host, dir: &Path) -> Arc<Plugin> {
    Arc::new(
        host.load_plugin(dir)
            .unwrap_or_else(|e| panic!("plugin {} loads: {e}", dir.display())),
    )
}

/// A temporary plugin directory with the bundled `component_of` component, the given
/// manifest and copies of the bundled plugin's `models/`.
pub fn scratch_plugin(component_of: &str, manifest: &str) -> tempfile::TempDir {
    scratch_plugin_from(&plugins_dir().join(component_of), component_of, manifest)
}

/// A temporary plugin directory with the test plugin `name` (tests/plugins).
pub fn scratch_test_plugin(name: &str, manifest: &str) -> tempfile::TempDir {
    scratch_plugin_from(
        &root().join("tests").join("plugins").join(name),
        name,
        manifest,
    )
}

fn scratch_plugin_from(src: &Path, component_of: &str, manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        src.join(format!("{component_of}.wasm")),
        dir.path().join(format!("{component_of}.wasm")),
    )
    .expect("the component exists (built by host/build.rs)");
    let models = src.join("models");
    if models.is_dir() {
        std::fs::create_dir(dir.path().join("models")).unwrap();
        for entry in std::fs::read_dir(models).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(
                entry.path(),
                dir.path().join("models").join(entry.file_name()),
            )
            .unwrap();
        }
    }
    std::fs::write(dir.path().join("plugin.toml"), manifest).unwrap();
    dir
}

/// Result of running JSONL text through a plugin.
pub struct Output {
    /// Prediction lines, parsed.
    pub predictions: Vec<Value>,
    /// Dead-letter lines, parsed.
    pub dead_letters: Vec<Value>,
    /// The run's summary.
    pub summary: RunSummary,
}

/// Runs JSONL `input` through `plugin`.
pub fn run(plugin: &Arc<Plugin>, input: &[u8], options: &RunOptions) -> Output {
    let mut predictions = Vec::new();
    let mut dead_letters = Vec::new();
    let input = std::io::Cursor::new(input.to_vec());
    let summary = run_jsonl(plugin, input, &mut predictions, &mut dead_letters, options)
        .expect("run completes");
    Output {
        predictions: parse_jsonl(&predictions),
        dead_letters: parse_jsonl(&dead_letters),
        summary,
    }
}

/// Parses JSON lines.
pub fn parse_jsonl(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Reads a JSONL file of the repository.
pub fn read_jsonl(relative: &str) -> Vec<Value> {
    parse_jsonl(&std::fs::read(root().join(relative)).unwrap())
}

/// Asserts two numbers are within `tolerance`.
pub fn assert_close(actual: &Value, expected: &Value, tolerance: f64, what: &str) {
    let (a, e) = (actual.as_f64(), expected.as_f64());
    match (a, e) {
        (Some(a), Some(e)) => assert!(
            (a - e).abs() <= tolerance,
            "{what}: {a} differs from {e} by more than {tolerance}"
        ),
        _ => panic!("{what}: expected numbers, got {actual} and {expected}"),
    }
}

/// Asserts two nested arrays of numbers have one shape and close values.
pub fn assert_all_close(actual: &Value, expected: &Value, tolerance: f64, what: &str) {
    match (actual, expected) {
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "{what}: lengths differ");
            for (i, (a, e)) in a.iter().zip(e).enumerate() {
                assert_all_close(a, e, tolerance, &format!("{what}[{i}]"));
            }
        }
        _ => assert_close(actual, expected, tolerance, what),
    }
}

/// Run options whose batches flush on size or at the end of the input only, so that
/// batch counts do not depend on the machine's speed.
pub fn size_only(max_batch_size: u32) -> RunOptions {
    {
        let mut value = RunOptions::default();
        value.batching = runinfer::manifest::BatchingConfig {
            max_batch_size: Some(max_batch_size),
            max_batch_duration_ms: Some(600_000),
            min_batch_size: None,
        };
        value
    }
}

/// Parses Prometheus text into `name{labels}` -> value.
pub fn prometheus_values(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Runs a script of the repository with bash and returns what it printed on stdout;
/// a failure fails the test with the script's output.
pub fn run_script_output(relative: &str, args: &[&str]) -> String {
    let script = root().join(relative);
    let out = std::process::Command::new("bash")
        .arg(&script)
        .args(args)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{} failed:\n{}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Runs a script of the repository (`scripts/…`) and returns the last line it prints
/// (the scripts print the path of what they installed).
pub fn run_script(relative: &str, args: &[&str]) -> PathBuf {
    let stdout = run_script_output(relative, args);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("the script prints a path")
            .trim(),
    )
}

/// JSONL text with one line per value.
pub fn jsonl(examples: impl Iterator<Item = Value>) -> Vec<u8> {
    examples
        .map(|e| format!("{e}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Asserts iris predictions have the golden label and probabilities of each line
/// (tests/golden/iris.jsonl) within `tolerance`.
pub fn assert_iris_matches_golden(predictions: &[Value], golden: &[Value], tolerance: f64) {
    assert_eq!(predictions.len(), golden.len(), "one prediction per line");
    for (i, (p, g)) in predictions.iter().zip(golden).enumerate() {
        assert_eq!(p["inference"]["label"], g["label"], "line {i}");
        assert_all_close(
            &p["inference"]["probabilities"],
            &g["probabilities"],
            tolerance,
            &format!("line {i} probabilities"),
        );
    }
}
