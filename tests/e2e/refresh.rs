//! The drop-in plugin directory under continuous traffic: model refresh, plugin swap,
//! a corrupt model, a new plugin, a removed plugin and a broken one.

use runinfer::decode::decode_example;
use runinfer::dispatch::DispatchOptions;
use runinfer::run::{RunOptions, dispatch_options};
use runinfer::watch::{PluginRoot, PluginStatus};
use runinfer_e2e::*;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
}

/// Writes `bytes` next to `to` under a hidden name, then renames it into place with a
/// modification time `age` from now.
fn publish(bytes: &[u8], to: &Path, age: Duration) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let tmp = to.with_file_name(format!(
        ".{}.tmp",
        to.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, bytes).unwrap();
    let file = std::fs::File::options().write(true).open(&tmp).unwrap();
    file.set_modified(SystemTime::now() + age).unwrap();
    drop(file);
    std::fs::rename(&tmp, to).unwrap();
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

fn options(plugin: &runinfer::Plugin) -> DispatchOptions {
    dispatch_options(plugin, &RunOptions::default())
}

/// One request's outcome: the inference and its model id, or the error.
type Outcome = Result<(Value, Option<String>), String>;

struct Traffic {
    stop: Arc<AtomicBool>,
    answered: Arc<std::sync::atomic::AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<Outcome>>,
}

/// Sends `example` to plugin `name` of `root` over and over (a few requests in flight)
/// until stopped; returns every outcome.
fn traffic(root: &Arc<PluginRoot>, name: &'static str, example: Value) -> Traffic {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (root, flag, count) = (root.clone(), stop.clone(), answered.clone());
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut outcomes = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let mut replies = Vec::new();
                for _ in 0..4 {
                    let Some(live) = root.get(name) else {
                        outcomes.push(Err(format!("plugin {name} is not live")));
                        continue;
                    };
                    let value =
                        decode_example(&example, &live.plugin.info().signature.inputs).unwrap();
                    replies.push(live.dispatcher.submit(None, value).await);
                }
                for reply in replies {
                    outcomes.push(match reply.await {
                        Ok(Ok(out)) => Ok((
                            serde_json::to_value(&out.value).unwrap(),
                            out.model_id.as_deref().map(str::to_string),
                        )),
                        Ok(Err(failure)) => Err(failure.error.to_string()),
                        Err(_) => Err("reply lost".into()),
                    });
                    count.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            outcomes
        })
    });
    Traffic {
        stop,
        answered,
        thread,
    }
}

impl Traffic {
    /// Waits until `n` more requests have been answered: traffic before and after a
    /// change is counted in answers, not in time.
    fn answers(&self, n: usize) {
        let target = self.answered.load(Ordering::Relaxed) + n;
        wait_until("answers", Duration::from_secs(60), || {
            self.answered.load(Ordering::Relaxed) >= target
        });
    }

    fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn mlp_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mlp");
    copy(
        &plugins_dir().join("onnx-tensor/onnx-tensor.wasm"),
        &dir.join("onnx-tensor.wasm"),
    );
    let v1 = std::fs::read(plugins_dir().join("onnx-tensor/models/tiny_mlp.onnx")).unwrap();
    publish(&v1, &dir.join("models/mlp-1.onnx"), Duration::ZERO);
    std::fs::write(
        dir.join("plugin.toml"),
        "name = \"mlp\"\ncomponent = \"onnx-tensor.wasm\"\n[models]\nmodel = \"models/mlp-*.onnx\"\n[args]\noutputs = \"logits\"\n",
    )
    .unwrap();
    root
}

#[test]
fn a_new_model_file_is_swapped_in_under_traffic_and_a_corrupt_one_is_refused() {
    let golden = |v: &str| read_jsonl(&format!("tests/golden/{v}.jsonl"));
    let (v1, v2) = (golden("tiny_mlp"), golden("tiny_mlp_v2"));
    let dir = mlp_root();
    let host = host();
    let root = PluginRoot::open(host.clone(), dir.path(), options);
    let _watch = root
        .watch(Duration::from_millis(100), Duration::from_secs(60))
        .unwrap();
    assert!(root.get("mlp").is_some(), "{:?}", root.status());
    let traffic = traffic(&root, "mlp", v1[0]["example"].clone());
    traffic.answers(50);

    // A new model: write then rename, newer than the current one.
    let model_v2 =
        std::fs::read(plugins_dir().join("onnx-tensor/models/tiny_mlp_v2.onnx")).unwrap();
    let published = Instant::now();
    publish(
        &model_v2,
        &dir.path().join("mlp/models/mlp-2.onnx"),
        Duration::from_secs(1),
    );
    wait_until("the new model", Duration::from_secs(20), || {
        root.get("mlp")
            .unwrap()
            .plugin
            .models()
            .next()
            .unwrap()
            .path
            .ends_with("mlp-2.onnx")
    });
    let swap = published.elapsed();
    traffic.answers(50);

    // A corrupt newer file: the refresh fails and v2 keeps serving.
    publish(
        b"not a model",
        &dir.path().join("mlp/models/mlp-3.onnx"),
        Duration::from_secs(2),
    );
    let m = || prometheus_values(&host.metrics().encode());
    wait_until("the refresh failure", Duration::from_secs(20), || {
        m().get("runinfer_model_refresh_failures_total")
            .copied()
            .unwrap_or(0.0)
            >= 1.0
    });
    traffic.answers(50);
    let outcomes = traffic.finish();

    let failures: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(failures.is_empty(), "{failures:?}");
    let mut first_v2 = None;
    for (i, (value, model_id)) in outcomes.iter().map(|o| o.as_ref().unwrap()).enumerate() {
        let id = model_id.as_deref().unwrap();
        if id.contains("mlp-1.onnx") {
            assert!(first_v2.is_none(), "an old-model answer after the swap");
            assert_all_close(value, &v1[0]["logits"], 1e-5, "v1");
        } else {
            assert!(id.contains("mlp-2.onnx"), "{id}");
            assert_all_close(value, &v2[0]["logits"], 1e-5, "v2");
            first_v2.get_or_insert(i);
        }
    }
    let first_v2 = first_v2.expect("answers from the new model");
    assert!(first_v2 > 0 && first_v2 < outcomes.len() - 1);
    assert!(
        matches!(root.status()["mlp"], PluginStatus::Live { ref model_id } if model_id.contains("mlp-2.onnx"))
    );
    eprintln!(
        "model swap: {} requests, 0 failed; new model serving {swap:?} after its file appeared",
        outcomes.len()
    );
}

#[test]
fn a_replaced_manifest_is_swapped_in_without_failing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let ts = dir.path().join("ts");
    copy(
        &plugins_dir().join("text-stats/text-stats.wasm"),
        &ts.join("text-stats.wasm"),
    );
    let manifest = |n: u32| {
        format!("name = \"ts\"\ncomponent = \"text-stats.wasm\"\n[args]\nmin_word_len = {n}\n")
    };
    std::fs::write(ts.join("plugin.toml"), manifest(1)).unwrap();
    let root = PluginRoot::open(host(), dir.path(), options);
    let _watch = root
        .watch(Duration::from_millis(100), Duration::from_secs(60))
        .unwrap();
    let traffic = traffic(&root, "ts", json!("a few longer words"));
    traffic.answers(50);
    publish(
        manifest(5).as_bytes(),
        &ts.join("plugin.toml"),
        Duration::from_secs(1),
    );
    wait_until("the new manifest", Duration::from_secs(20), || {
        root.get("ts").unwrap().plugin.manifest().args["min_word_len"].as_integer() == Some(5)
    });
    traffic.answers(50);
    let outcomes = traffic.finish();
    let words: Vec<u64> = outcomes
        .iter()
        .map(|o| o.as_ref().expect("no request fails"))
        .map(|(v, _)| v["words"].as_u64().unwrap())
        .collect();
    // 4 words, then only "longer" and "words" are 5+ letters.
    let switch = words
        .iter()
        .position(|&w| w == 2)
        .expect("answers from the new version");
    assert!(switch > 0);
    assert!(words[..switch].iter().all(|&w| w == 4));
    assert!(words[switch..].iter().all(|&w| w == 2), "{words:?}");
}

#[test]
fn plugins_appear_disappear_and_fail_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let host = host();
    let root = PluginRoot::open(host.clone(), dir.path(), options);
    let _watch = root
        .watch(Duration::from_millis(100), Duration::from_secs(60))
        .unwrap();
    assert!(root.status().is_empty());

    // Dropped in: a copy of iris, written in a hidden directory and renamed.
    let staging = dir.path().join(".iris.staging");
    for file in ["plugin.toml", "iris.wasm", "models/iris.onnx"] {
        copy(&plugins_dir().join("iris").join(file), &staging.join(file));
    }
    std::fs::rename(&staging, dir.path().join("iris")).unwrap();
    wait_until("iris to go live", Duration::from_secs(20), || {
        root.get("iris").is_some()
    });
    let iris = root.get("iris").unwrap();
    let out = run(
        &iris.plugin,
        b"[6.3, 3.3, 6.0, 2.5]\n",
        &RunOptions::default(),
    );
    assert_eq!(out.predictions[0]["inference"]["label"], "virginica");

    // A broken plugin is reported and skipped; iris keeps serving.
    std::fs::create_dir(dir.path().join("broken")).unwrap();
    std::fs::write(
        dir.path().join("broken/plugin.toml"),
        "name = \"broken\"\ncomponent = \"missing.wasm\"\n",
    )
    .unwrap();
    wait_until("the failure report", Duration::from_secs(20), || {
        root.status().contains_key("broken")
    });
    match &root.status()["broken"] {
        PluginStatus::Failed {
            reason,
            previous_live,
        } => {
            assert!(reason.contains("missing.wasm"), "{reason}");
            assert!(!previous_live);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        prometheus_values(&host.metrics().encode())["runinfer_plugin_load_failures_total"],
        1.0
    );
    assert!(root.get("iris").is_some());

    // Removed while requests are queued: they all complete, then it is gone.
    let live = root.get("iris").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let replies = runtime.block_on(async {
        let mut replies = Vec::new();
        for _ in 0..200 {
            let value = decode_example(
                &json!([5.1, 3.5, 1.4, 0.2]),
                &live.plugin.info().signature.inputs,
            )
            .unwrap();
            replies.push(live.dispatcher.submit(None, value).await);
        }
        replies
    });
    std::fs::remove_dir_all(dir.path().join("iris")).unwrap();
    wait_until("iris to go", Duration::from_secs(20), || {
        root.get("iris").is_none()
    });
    let answered = runtime.block_on(async {
        let mut ok = 0;
        for reply in replies {
            if matches!(reply.await, Ok(Ok(_))) {
                ok += 1;
            }
        }
        ok
    });
    assert_eq!(answered, 200);
}

#[test]
fn a_refreshed_model_that_changes_the_signature_is_refused() {
    // onnx-tensor states its signature from the model: a newer file of another shape
    // (the iris classifier) would change what the plugin decodes, so the refresh is
    // refused and the old model keeps serving.
    let dir = scratch_plugin(
        "onnx-tensor",
        "name = \"mlp\"\ncomponent = \"onnx-tensor.wasm\"\n[models]\nmodel = \"models/mlp-*.onnx\"\n",
    );
    let v1 = std::fs::read(plugins_dir().join("onnx-tensor/models/tiny_mlp.onnx")).unwrap();
    publish(&v1, &dir.path().join("models/mlp-1.onnx"), Duration::ZERO);
    let host = host();
    let plugin = load(&host, dir.path());
    let iris = std::fs::read(plugins_dir().join("iris/models/iris.onnx")).unwrap();
    publish(
        &iris,
        &dir.path().join("models/mlp-2.onnx"),
        Duration::from_secs(1),
    );
    let err = plugin.refresh_models().unwrap_err().to_string();
    assert_eq!(
        err,
        "plugin `mlp`: signature failed: signature: with this model set the handler declares \
         inputs tensor(f32 [4]) and outputs fields(label: i64 [], probabilities: f32 [3]), but \
         the plugin serves inputs tensor(f32 [2, 3]) and outputs fields(logits: f32 [3], \
         hidden: f32 [5]); a refreshed or per-key model must keep the signature"
    );
    let golden = read_jsonl("tests/golden/tiny_mlp.jsonl");
    let out = run(
        &plugin,
        format!("{}\n", golden[0]["example"]).as_bytes(),
        &RunOptions::default(),
    );
    assert!(
        out.predictions[0]["model_id"]
            .as_str()
            .unwrap()
            .contains("mlp-1.onnx")
    );
    assert_all_close(
        &out.predictions[0]["inference"]["logits"],
        &golden[0]["logits"],
        1e-5,
        "v1",
    );
}
