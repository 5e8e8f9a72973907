//! The `runinfer` binary end to end: the README's quick start and dead-letter files.

use super::{root, runinfer};
use std::path::PathBuf;
use std::process::Command;

fn root_dir_plugin(name: &str) -> PathBuf {
    root().join("plugins").join(name)
}

/// Sends one line to a streaming `runinfer run` and returns the line it answers.
fn ask_over_pipes(
    stdin: &mut std::process::ChildStdin,
    stdout: &mut std::io::BufReader<std::process::ChildStdout>,
    line: &[u8],
) -> String {
    use std::io::{BufRead, Write};
    stdin.write_all(line).unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
    let mut answer = String::new();
    assert!(
        stdout.read_line(&mut answer).unwrap() > 0,
        "runinfer exited"
    );
    answer
}

fn golden_labels() -> Vec<String> {
    std::fs::read_to_string(root().join("tests/golden/iris.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["label"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn quick_start_prints_one_prediction_per_line_with_the_right_labels() {
    let out = runinfer()
        .args(["run", "iris", "examples/iris.jsonl"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let labels: Vec<String> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["inference"]["label"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(labels, golden_labels());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("150 lines -> 150 predictions, 0 dead letters"),
        "{stderr}"
    );
}

#[test]
fn stdin_input_and_dead_letter_file() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let preds = dir.path().join("preds.jsonl");
    let mut child = runinfer()
        .args(["run", "iris", "--quiet", "--dead-letters"])
        .arg(&dead)
        .arg("--output")
        .arg(&preds)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"[5.1, 3.5, 1.4, 0.2]\n{\"key\": \"b\", \"example\": [1]}\n")
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    let preds = std::fs::read_to_string(preds).unwrap();
    let dead = std::fs::read_to_string(dead).unwrap();
    assert_eq!(preds.lines().count(), 1);
    let d: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(d["line"], 2);
    assert_eq!(d["key"], "b");
    assert_eq!(
        d["error"]["message"],
        "expected a tensor of shape [4], got [1]"
    );
}

/// `run --tenants`: the operator's quota of the plugin's tenant paces a job, which
/// waits where `serve` would refuse; every line still ends as a prediction.
#[test]
fn run_waits_for_its_tenants_request_rate() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = dir.path().join("tenants.toml");
    let input = dir.path().join("input.jsonl");
    let lines: Vec<&str> = include_str!("../../../examples/iris.jsonl")
        .lines()
        .take(60)
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    // A second's worth (40 lines) at once, then 20 more at 40 a second.
    std::fs::write(
        &tenants,
        "[tenants.paced]\nrequests_per_sec = 40\nmax_in_flight = 8\nplugins = [\"iris\"]\n",
    )
    .unwrap();
    let out = runinfer()
        .args(["run", "iris"])
        .arg(&input)
        .arg("--tenants")
        .arg(&tenants)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 60);
    assert!(stderr.contains("60 lines -> 60 predictions"), "{stderr}");
    // The summary's own time (the job, not the start of the process): 60 lines of
    // iris take milliseconds unpaced.
    let seconds: f64 = stderr
        .split(" in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a time in {stderr}"));
    assert!(seconds >= 0.45, "paced 20 lines at 40/s in {seconds} s");
    // A bad file is the operator's error, at once.
    std::fs::write(&tenants, "[tenants.paced]\nrequests_per_sec = -1\n").unwrap();
    let out = runinfer()
        .args(["run", "iris"])
        .arg(&input)
        .arg("--tenants")
        .arg(&tenants)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("requests_per_sec`: expected a number above 0"),
        "{stderr}"
    );
}

/// The scheduling policy and nice value of each thread of a process, by thread name.
#[cfg(target_os = "linux")]
fn thread_priorities(pid: u32) -> Vec<(String, i64, i64)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap();
        let stat = std::fs::read_to_string(path.join("stat")).unwrap();
        // Fields after the command's closing parenthesis start at field 3 (state);
        // nice is field 19 and policy field 41.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        threads.push((
            comm.trim().to_string(),
            fields[16].parse().unwrap(),
            fields[38].parse().unwrap(),
        ));
    }
    threads
}

#[cfg(target_os = "linux")]
#[test]
fn handler_threads_run_at_the_handler_priority_and_the_rest_do_not() {
    const SCHED_OTHER: i64 = 0;
    const SCHED_IDLE: i64 = 5;
    for (flag, policy, nice) in [("idle", SCHED_IDLE, None), ("12", SCHED_OTHER, Some(12))] {
        let mut child = runinfer()
            .args([
                "run",
                "iris",
                "-q",
                "--instances",
                "2",
                "--handler-priority",
                flag,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        // One prediction back: the handler threads have started and run.
        let answer = ask_over_pipes(&mut stdin, &mut stdout, b"[5.1, 3.5, 1.4, 0.2]");
        assert!(answer.contains("setosa"), "{answer}");
        let threads = thread_priorities(child.id());
        drop(stdin);
        assert!(child.wait().unwrap().success());
        let handlers: Vec<_> = threads
            .iter()
            .filter(|(name, ..)| name.starts_with("runinfer-iris"))
            .collect();
        assert_eq!(handlers.len(), 2, "{threads:?}");
        for (name, thread_nice, thread_policy) in &handlers {
            assert_eq!(*thread_policy, policy, "{name}: {threads:?}");
            if let Some(nice) = nice {
                assert!(*thread_nice >= nice, "{name}: {threads:?}");
            }
        }
        // The host's own threads (main, the reader, the async runtime) keep theirs,
        // as inherited from this test.
        let inherited = thread_priorities(std::process::id())
            .into_iter()
            .map(|(_, nice, _)| nice)
            .min()
            .unwrap();
        let others: Vec<_> = threads
            .iter()
            .filter(|(name, ..)| !name.starts_with("runinfer-iris"))
            .collect();
        assert!(!others.is_empty());
        for (name, thread_nice, thread_policy) in others {
            assert_eq!(
                (*thread_policy, *thread_nice),
                (SCHED_OTHER, inherited),
                "{name}: {threads:?}"
            );
        }
    }
    let out = runinfer()
        .args([
            "run",
            "iris",
            "examples/iris.jsonl",
            "--handler-priority",
            "25",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("normal, idle, or a nice value 1-19"),
        "{stderr}"
    );
}

#[test]
fn list_and_inspect_describe_the_bundled_plugins() {
    // The Rust plugins, which `cargo build` builds (the other languages' plugins are
    // built by their build.sh; see tests/languages.rs).
    let root = tempfile::tempdir().unwrap();
    for name in ["iris", "onnx-tensor", "text-stats"] {
        let dest = root.path().join(name);
        std::fs::create_dir_all(dest.join("models")).unwrap();
        let src = root_dir_plugin(name);
        for file in ["plugin.toml", &format!("{name}.wasm")] {
            std::fs::copy(src.join(file), dest.join(file)).unwrap();
        }
        if let Ok(models) = std::fs::read_dir(src.join("models")) {
            for m in models {
                let m = m.unwrap();
                std::fs::copy(m.path(), dest.join("models").join(m.file_name())).unwrap();
            }
        }
    }
    let out = runinfer()
        .arg("list")
        .arg("--plugins")
        .arg(root.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, signature) in [
        (
            "iris",
            "signature=tensor(f32 [4]) -> fields(label: text, probabilities: f32 [3])",
        ),
        (
            "onnx-tensor",
            "signature=tensor(f32 [2, 3]) -> fields(logits: f32 [3], hidden: f32 [5])",
        ),
        ("text-stats", "signature=text -> json"),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(name) && l.contains(" ok ") && l.ends_with(signature)),
            "{name}: {signature}\n{stdout}"
        );
    }
    // A plugin of sources and a build script, not built yet: failed, with the hint.
    let unbuilt = root.path().join("unbuilt");
    std::fs::create_dir(&unbuilt).unwrap();
    std::fs::write(
        unbuilt.join("plugin.toml"),
        "name = \"unbuilt\"\ncomponent = \"unbuilt.wasm\"\n",
    )
    .unwrap();
    std::fs::write(unbuilt.join("build.sh"), "#!/bin/sh\n").unwrap();
    let out = runinfer()
        .arg("list")
        .arg("--plugins")
        .arg(root.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("(not built yet: run ") && stdout.contains("unbuilt/build.sh)"),
        "{stdout}"
    );

    let out = runinfer().args(["inspect", "iris"]).output().unwrap();
    assert!(out.status.success());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The handler's signature: what `run` and `serve` take and return.
    assert_eq!(
        info["handler"]["signature"],
        serde_json::json!({
            "inputs": {"kind": "tensor", "dtype": "f32", "shape": [4]},
            "outputs": {"kind": "fields", "fields": [
                {"name": "label", "kind": "text"},
                {"name": "probabilities", "kind": "tensor", "dtype": "f32", "shape": [3]},
            ]},
        })
    );
    assert_eq!(info["models"][0]["inputs"][0]["name"], "input");
    assert_eq!(info["models"][0]["outputs"][1]["name"], "probabilities");
}

#[test]
fn an_unknown_plugin_is_a_clear_error() {
    let out = runinfer()
        .args(["run", "nope", "examples/iris.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no plugin `nope`"), "{stderr}");
}

#[test]
fn metrics_out_and_failure_ratio_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.prom");
    let input = dir.path().join("in.jsonl");
    let mut text = String::new();
    for i in 0..200 {
        text.push_str(if i % 4 == 0 {
            "[1, 2]\n"
        } else {
            "[5.1, 3.5, 1.4, 0.2]\n"
        });
    }
    std::fs::write(&input, text).unwrap();
    let out = runinfer()
        .args([
            "run",
            "iris",
            "-q",
            "--max-failure-ratio",
            "0.1",
            "--dead-letters",
            "/dev/null",
            "--metrics-out",
        ])
        .arg(&metrics)
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stopped: 25 of 100 lines failed (25.0%)"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("# TYPE iris_num_inferences counter"),
        "{text}"
    );
    assert!(
        text.contains("iris_inference_batch_latency_micro_secs_bucket"),
        "{text}"
    );

    let out = runinfer()
        .args([
            "run",
            "iris",
            "-q",
            "--max-failure-ratio",
            "0.3",
            "--dead-letters",
            "/dev/null",
        ])
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 150);
}

#[test]
fn run_watch_swaps_in_a_new_model_while_stdin_streams() {
    let plugins = tempfile::tempdir().unwrap();
    let dir = plugins.path().join("mlp");
    std::fs::create_dir_all(dir.join("models")).unwrap();
    let bundled = root().join("plugins/onnx-tensor");
    std::fs::copy(
        bundled.join("onnx-tensor.wasm"),
        dir.join("onnx-tensor.wasm"),
    )
    .unwrap();
    std::fs::copy(
        bundled.join("models/tiny_mlp.onnx"),
        dir.join("models/mlp-1.onnx"),
    )
    .unwrap();
    std::fs::write(
        dir.join("plugin.toml"),
        "name = \"mlp\"\ncomponent = \"onnx-tensor.wasm\"\n[models]\nmodel = \"models/mlp-*.onnx\"\n[args]\noutputs = \"logits\"\n[batching]\nmax_batch_duration_ms = 1\n",
    )
    .unwrap();
    let mut child = runinfer()
        .args([
            "run",
            "mlp",
            "--watch",
            "--settle-ms",
            "100",
            "-q",
            "--plugins",
        ])
        .arg(plugins.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Request and answer over the pipes: each line's prediction is read before the
    // next line is sent, so what is observed depends on events, not on timing.
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut ask = || {
        let answer = ask_over_pipes(&mut stdin, &mut stdout, b"[[1,2,3],[4,5,6]]");
        serde_json::from_str::<serde_json::Value>(&answer).unwrap()["model_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for _ in 0..20 {
        assert!(ask().starts_with("models/mlp-1.onnx@"));
    }
    // Write then rename: the host never sees half a model.
    std::fs::copy(
        bundled.join("models/tiny_mlp_v2.onnx"),
        dir.join("models/.mlp-2.tmp"),
    )
    .unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(dir.join("models/.mlp-2.tmp"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(1))
        .unwrap();
    drop(f);
    std::fs::rename(dir.join("models/.mlp-2.tmp"), dir.join("models/mlp-2.onnx")).unwrap();
    // Until the swap, the old model answers; from the first new answer on, only the
    // new one does. (The deadline only bounds a broken build.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut old_answers = 0;
    loop {
        let id = ask();
        if id.starts_with("models/mlp-2.onnx@") {
            break;
        }
        assert!(id.starts_with("models/mlp-1.onnx@"), "{id}");
        old_answers += 1;
        assert!(
            std::time::Instant::now() < deadline,
            "the new model never served ({old_answers} answers after it appeared)"
        );
    }
    for _ in 0..20 {
        let id = ask();
        assert!(
            id.starts_with("models/mlp-2.onnx@"),
            "an old answer after the swap: {id}"
        );
    }
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn backend_flag_runs_models_on_onnxruntime() {
    let install = Command::new("bash")
        .arg(root().join("scripts/install-onnxruntime.sh"))
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let library = String::from_utf8(install.stdout)
        .unwrap()
        .trim()
        .to_string();
    let onnxruntime = ["--backend", "onnxruntime", "--onnxruntime-lib", &library];

    let out = runinfer()
        .args(["run", "iris", "examples/iris.jsonl"])
        .args(onnxruntime)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let labels: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let p: serde_json::Value = serde_json::from_str(l).unwrap();
            p["inference"]["label"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(labels, golden_labels());

    for (args, engine) in [(&onnxruntime[..], "onnxruntime"), (&[][..], "tract")] {
        let out = runinfer()
            .args(["inspect", "iris"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(info["models"][0]["backend"], engine);
    }

    let out = runinfer()
        .args(["run", "iris", "examples/iris.jsonl", "--backend", "onnx"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown backend `onnx`"), "{stderr}");
}

/// A plugin root in a temporary directory holding the hostile test handler.
fn hostile_root(manifest_extra: &str) -> tempfile::TempDir {
    let root_dir = tempfile::tempdir().unwrap();
    let dir = root_dir.path().join("hostile");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(
        root().join("tests/plugins/hostile/hostile.wasm"),
        dir.join("hostile.wasm"),
    )
    .expect("built by host/build.rs");
    std::fs::write(
        dir.join("plugin.toml"),
        format!("name = \"hostile\"\ncomponent = \"hostile.wasm\"\n{manifest_extra}"),
    )
    .unwrap();
    root_dir
}

#[test]
fn guest_logs_are_rate_limited_escaped_and_never_pass_for_dead_letters() {
    let plugins = hostile_root("[limits]\ninstances = 1\n");
    let mut child = runinfer()
        .args(["run", "hostile", "--max-batch-size", "1", "--plugins"])
        .arg(plugins.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"\"log-forge\"\n\"log-flood\"\n\"ok\"\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    // 200,000 messages of ~40 bytes were sent: the limit (100 a second) lets through
    // a few hundred lines at most.
    assert!(
        out.stderr.len() < 256 * 1024,
        "{} bytes of stderr",
        out.stderr.len()
    );
    assert!(
        !out.stderr.contains(&0x1b),
        "a terminal escape reached stderr"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("guest log messages dropped"), "{stderr}");
    // The only dead-letter-shaped lines are real dead letters (there are none here).
    for line in stderr.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_err(),
            "a guest forged a JSON line: {line}"
        );
        if line.contains("forged") {
            assert!(line.contains("runinfer::guest"), "unmarked: {line}");
            assert!(line.contains(r#"forged\n{"line":7"#), "escaped: {line}");
        }
    }
    assert!(
        stderr.contains("3 lines -> 3 predictions, 0 dead letters"),
        "{stderr}"
    );
}

#[test]
fn a_missing_onnxruntime_library_fails_only_the_plugin_that_needs_it() {
    // A process of its own: a process loads one onnxruntime library, on the first model
    // that asks for it, so the path given here is the one tried.
    let plugins = tempfile::tempdir().unwrap();
    for (name, entry) in [
        (
            "needs-ort",
            "{ path = \"models/iris.onnx\", backend = \"onnxruntime\" }",
        ),
        ("tract-only", "\"models/iris.onnx\""),
    ] {
        let dir = plugins.path().join(name);
        std::fs::create_dir_all(dir.join("models")).unwrap();
        let iris = root_dir_plugin("iris");
        std::fs::copy(iris.join("iris.wasm"), dir.join("iris.wasm")).unwrap();
        std::fs::copy(iris.join("models/iris.onnx"), dir.join("models/iris.onnx")).unwrap();
        std::fs::write(
            dir.join("plugin.toml"),
            format!(
                "name = \"{name}\"\ncomponent = \"iris.wasm\"\n[models]\niris = {entry}\n[args]\nlabels = \"setosa,versicolor,virginica\"\n"
            ),
        )
        .unwrap();
    }
    let out = runinfer()
        .args([
            "list",
            "--onnxruntime-lib",
            "/nonexistent/libonnxruntime.so",
            "--plugins",
        ])
        .arg(plugins.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} listed: {stdout}"))
            .to_string()
    };
    let failed = line("needs-ort");
    assert!(
        failed.contains("onnxruntime cannot load model")
            && failed.contains("/nonexistent/libonnxruntime.so")
            && failed.contains("scripts/install-onnxruntime.sh"),
        "{failed}"
    );
    // The host goes on serving tract models.
    assert!(line("tract-only").contains("ok"), "{stdout}");
    let input = plugins.path().join("one.jsonl");
    std::fs::write(&input, "[5.1, 3.5, 1.4, 0.2]\n").unwrap();
    let out = runinfer()
        .args(["run", "tract-only"])
        .arg(&input)
        .args([
            "--onnxruntime-lib",
            "/nonexistent/libonnxruntime.so",
            "--plugins",
        ])
        .arg(plugins.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prediction: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(prediction["inference"]["label"], "setosa");
}
