//! Loading plugins: the compile cache, one model shared by plugins and instances,
//! and broken plugins reported with a clear reason while the host keeps serving.

use runinfer::compile::CompileSource;
use runinfer::run::RunOptions;
use runinfer::{ErrorCode, PluginError};
use runinfer_e2e::*;
use std::time::Instant;

#[test]
fn a_second_start_loads_the_compiled_component_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let mut reports = Vec::new();
    for _ in 0..2 {
        // A new host each time, as a new process would have.
        let host = host_with_cache(Some(cache.path()));
        let start = Instant::now();
        let plugin = bundled(&host, "iris");
        let ready = start.elapsed();
        reports.push((plugin.load_report().compile, ready));
    }
    assert_eq!(reports[0].0.source, CompileSource::Compiled);
    assert_eq!(reports[1].0.source, CompileSource::Cache);
    eprintln!(
        "iris time to ready: first {:?} (compile {:?}), second {:?} (cache load {:?})",
        reports[0].1, reports[0].0.duration, reports[1].1, reports[1].0.duration
    );
    // Without a cache every start compiles.
    let host = host_with_cache(None);
    assert_eq!(
        bundled(&host, "iris").load_report().compile.source,
        CompileSource::Compiled
    );
}

#[test]
fn a_corrupt_cache_entry_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    bundled(&host_with_cache(Some(cache.path())), "iris");
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let host = host_with_cache(Some(cache.path()));
    let plugin = bundled(&host, "iris");
    assert_eq!(plugin.load_report().compile.source, CompileSource::Compiled);
    let out = run(&plugin, b"[5.1, 3.5, 1.4, 0.2]\n", &RunOptions::default());
    assert_eq!(out.predictions[0]["inference"]["label"], "setosa");
}

#[test]
fn one_model_file_is_loaded_once_for_plugins_and_instances() {
    let host = host();
    let iris = bundled(&host, "iris");
    // A second plugin granting the same file (through its own copy of it).
    let twin = scratch_plugin(
        "iris",
        "name = \"iris-twin\"\ncomponent = \"iris.wasm\"\n[models]\niris = \"models/iris.onnx\"\n",
    );
    let twin = load(&host, twin.path());
    // Several instances of each.
    let instances: Vec<_> = (0..4).map(|_| iris.instantiate().unwrap()).collect();
    let more: Vec<_> = (0..4).map(|_| twin.instantiate().unwrap()).collect();
    assert_eq!(host.models().load_count(), 1);
    assert_eq!(host.models().len(), 1);
    let a = iris.models().next().unwrap();
    let b = twin.models().next().unwrap();
    assert!(std::sync::Arc::ptr_eq(&a.model, &b.model));
    assert_eq!(a.id, b.id);
    drop((instances, more));
    // Both serve.
    for plugin in [&iris, &twin] {
        let out = run(plugin, b"[6.3, 3.3, 6.0, 2.5]\n", &RunOptions::default());
        assert_eq!(out.predictions[0]["inference"]["label"], "virginica");
    }
}

#[test]
fn broken_plugins_are_reported_with_the_reason() {
    let host = host();

    let bad_manifest = scratch_plugin(
        "iris",
        "name = \"x\"\ncomponent = \"iris.wasm\"\n[batching]\nmax_batch_size = -1\n",
    );
    let err = host.load_plugin(bad_manifest.path()).err().unwrap();
    assert!(matches!(err, PluginError::Manifest(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("plugin.toml") && msg.contains("max_batch_size"),
        "{msg}"
    );

    let missing_model = scratch_plugin(
        "iris",
        "name = \"x\"\ncomponent = \"iris.wasm\"\n[models]\niris = \"models/nope.onnx\"\n",
    );
    let err = host.load_plugin(missing_model.path()).err().unwrap();
    assert!(matches!(err, PluginError::Model { .. }), "{err}");
    assert!(err.to_string().contains("models/nope.onnx"), "{err}");

    let corrupt_model = scratch_plugin(
        "iris",
        "name = \"x\"\ncomponent = \"iris.wasm\"\n[models]\niris = \"models/iris.onnx\"\n",
    );
    std::fs::write(
        corrupt_model.path().join("models/iris.onnx"),
        b"not a model",
    )
    .unwrap();
    let err = host.load_plugin(corrupt_model.path()).err().unwrap();
    assert!(err.to_string().contains("tract cannot load model"), "{err}");

    let not_wasm = scratch_plugin("iris", "name = \"x\"\ncomponent = \"iris.wasm\"\n");
    std::fs::write(not_wasm.path().join("iris.wasm"), b"\0asm garbage").unwrap();
    let err = host.load_plugin(not_wasm.path()).err().unwrap();
    assert!(matches!(err, PluginError::Component { .. }), "{err}");

    // A real component of another world: the guest SDK's plugins all fit, so use
    // a core module wrapped as nothing at all - wasm bytes of an empty component.
    let wrong_world = scratch_plugin("iris", "name = \"x\"\ncomponent = \"iris.wasm\"\n");
    std::fs::write(
        wrong_world.path().join("iris.wasm"),
        [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00],
    )
    .unwrap();
    let err = host.load_plugin(wrong_world.path()).err().unwrap();
    assert!(matches!(err, PluginError::WrongWorld { .. }), "{err}");
    assert!(err.to_string().contains("runinfer:handler"), "{err}");

    // A component built against contract 0.1 (tests/fixtures: the C iris handler of
    // that version) is refused before it runs, with what to do.
    let old = scratch_plugin("iris", "name = \"old\"\ncomponent = \"old.wasm\"\n");
    std::fs::copy(
        root().join("tests/fixtures/handler-0.1.wasm"),
        old.path().join("old.wasm"),
    )
    .unwrap();
    let err = host.load_plugin(old.path()).err().unwrap();
    assert!(matches!(err, PluginError::ContractVersion { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("was built against runinfer:handler@0.1.0, this host implements runinfer:handler@0.2.0; rebuild the handler"),
        "{msg}"
    );

    // Resource hints the host cannot meet, and a signature it cannot act on, are
    // refused at load rather than failing later.
    for (i, (args, stage, why)) in [
        (
            "min_ram_mb = \"4096\"",
            "init",
            "the handler's resource hint min_ram_mb (4096) is more than its instance may use: [limits] memory_mb = 256",
        ),
        (
            "accelerator = \"gpu\"",
            "init",
            "the handler's resource hint asks for accelerator \"gpu\"; this host runs models on the CPU only",
        ),
        (
            "signature = \"twice\"",
            "load-model",
            "the handler's signature: outputs declares field `a` twice",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = scratch_test_plugin(
            "hostile",
            &format!(
                "name = \"refused-{i}\"\ncomponent = \"hostile.wasm\"\n[limits]\nmemory_mb = 256\n[args]\n{args}\n"
            ),
        );
        match host.load_plugin(dir.path()).err().unwrap() {
            PluginError::Start {
                stage: s, source, ..
            } => {
                assert_eq!((s, source.message.as_str()), (stage, why));
            }
            other => panic!("{other}"),
        }
    }

    // The handler opens a model its manifest does not grant.
    let ungranted = scratch_plugin(
        "iris",
        "name = \"x\"\ncomponent = \"iris.wasm\"\n[models]\nother = \"models/iris.onnx\"\n",
    );
    let err = host.load_plugin(ungranted.path()).err().unwrap();
    match &err {
        PluginError::Start { stage, source, .. } => {
            assert_eq!(*stage, "load-model");
            assert_eq!(source.code, ErrorCode::NotGranted);
            assert_eq!(
                source.message,
                "model `iris` is not granted to plugin `x` (granted: other)"
            );
        }
        other => panic!("{other}"),
    }

    // A failing init (bad handler args) is reported too.
    let bad_args = scratch_plugin(
        "text-stats",
        "name = \"x\"\ncomponent = \"text-stats.wasm\"\n[args]\nmin_word_len = \"many\"\n",
    );
    let err = host.load_plugin(bad_args.path()).err().unwrap();
    assert_eq!(
        err.to_string(),
        "plugin `x`: init failed: invalid_input: args.min_word_len: expected an integer, got `many`"
    );

    // An argument the handler does not know is refused, not ignored (`dtype` was
    // onnx-tensor's before its signature came from the model).
    let outdated = scratch_plugin(
        "onnx-tensor",
        "name = \"y\"\ncomponent = \"onnx-tensor.wasm\"\n[models]\nmodel = \"models/tiny_mlp.onnx\"\n[args]\ndtype = \"f32\"\n",
    );
    let err = host.load_plugin(outdated.path()).err().unwrap();
    assert_eq!(
        err.to_string(),
        "plugin `y`: init failed: invalid_input: unknown arg `dtype` (onnx-tensor takes `model` and `outputs`); the input dtypes come from the model since contract 0.2"
    );

    // The host still serves the good plugins.
    let out = run(
        &bundled(&host, "iris"),
        b"[5.1, 3.5, 1.4, 0.2]\n",
        &RunOptions::default(),
    );
    assert_eq!(out.predictions.len(), 1);
}

#[test]
fn plugins_are_found_by_directory_or_manifest_name() {
    let host = host();
    assert_eq!(
        host.load_plugin_named(&plugins_dir(), "text-stats")
            .unwrap()
            .name(),
        "text-stats"
    );
    let err = host
        .load_plugin_named(&plugins_dir(), "nope")
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("no plugin `nope`") && msg.contains("iris"),
        "{msg}"
    );
}

#[test]
fn update_model_path_serves_the_new_file() {
    // A plugin whose model is the newest file of a pattern; a newer file with other
    // weights arrives, and the refresh (new instance: update-model-path, load-model)
    // must serve it: the outputs change to the new model's, checked against
    // onnxruntime's golden values of each file.
    let dir = scratch_plugin(
        "onnx-tensor",
        "name = \"mlp\"\ncomponent = \"onnx-tensor.wasm\"\n[models]\nmodel = \"models/mlp-*.onnx\"\n[args]\noutputs = \"logits\"\n",
    );
    let models = dir.path().join("models");
    std::fs::copy(models.join("tiny_mlp.onnx"), models.join("mlp-1.onnx")).unwrap();
    let host = host();
    let plugin = load(&host, dir.path());
    let logits = |plugin: &runinfer::Plugin, golden: &serde_json::Value| {
        let mut instance = plugin.instantiate().unwrap();
        let example =
            runinfer::decode::decode_example(&golden["example"], &plugin.info().signature.inputs)
                .unwrap();
        let result = instance.run_inference(vec![example], &[]).unwrap();
        (
            serde_json::to_value(result.values[0].as_ref().unwrap()).unwrap(),
            result.model_ids,
        )
    };
    let v1 = read_jsonl("tests/golden/tiny_mlp.jsonl");
    let v2 = read_jsonl("tests/golden/tiny_mlp_v2.jsonl");
    let (value, ids) = logits(&plugin, &v1[0]);
    assert_all_close(&value, &v1[0]["logits"], 1e-5, "v1");
    assert!(ids[0].starts_with("models/mlp-1.onnx@"), "{ids:?}");
    assert_eq!(plugin.refresh_models().unwrap(), None, "nothing new yet");

    let staged = models.join(".mlp-2.tmp");
    std::fs::copy(models.join("tiny_mlp_v2.onnx"), &staged).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&staged)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(1))
        .unwrap();
    std::fs::rename(&staged, models.join("mlp-2.onnx")).unwrap();
    let id = plugin
        .refresh_models()
        .unwrap()
        .expect("the new file is swapped in");
    assert!(id.starts_with("models/mlp-2.onnx@"), "{id}");
    let (value, ids) = logits(&plugin, &v2[0]);
    assert_all_close(&value, &v2[0]["logits"], 1e-5, "v2");
    assert_eq!(ids, vec![id]);
    // v1's outputs differ from v2's, so the check above tells the files apart.
    let (value, _) = logits(&plugin, &v1[0]);
    assert!(
        (value[0].as_f64().unwrap() - v1[0]["logits"][0].as_f64().unwrap()).abs() > 1e-3,
        "the old model still serves"
    );
}
