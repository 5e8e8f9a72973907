//! The onnxruntime backend (the library from the onnxruntime wheel, installed by
//! scripts/install-onnxruntime.sh): the same handler gives the same numbers on both
//! engines, a model tract cannot load runs on onnxruntime, and the host default
//! applies to models whose manifest names no engine.

use prometheus_client::metrics::counter::Counter;
use runinfer::model::{BackendKind, ModelRegistry, OnnxruntimeConfig};
use runinfer::run::RunOptions;
use runinfer::tensor::Tensor;
use runinfer::{Host, HostConfig};
use runinfer_e2e::*;
use serde_json::Value;

/// The library, installed once per test process.
pub(crate) fn library() -> std::path::PathBuf {
    static LIBRARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    LIBRARY
        .get_or_init(|| run_script("scripts/install-onnxruntime.sh", &[]))
        .clone()
}

pub(crate) fn onnxruntime_host(default_backend: BackendKind, max_sessions: usize) -> Host {
    let library = library();
    Host::new({
        let mut value = HostConfig::default();
        value.compile_cache = Some(runinfer::compile::CompileCache::new(
            root().join("target").join("test-compile-cache"),
        ));
        value.default_backend = default_backend;
        value.onnxruntime = {
            let mut value = OnnxruntimeConfig::default();
            value.library = Some(library);
            value.threads = 1;
            value.max_sessions = max_sessions;
            value
        };
        value
    })
    .expect("host starts")
}

/// A plugin directory with the generic onnx-tensor handler on `model` (copied in);
/// `options` go into the model's manifest entry.
pub(crate) fn tensor_plugin(
    name: &str,
    model: &std::path::Path,
    options: &str,
) -> tempfile::TempDir {
    let dir = scratch_plugin(
        "onnx-tensor",
        &format!(
            "name = \"{name}\"\ncomponent = \"onnx-tensor.wasm\"\n\
             [models]\nmodel = {{ path = \"net.onnx\", {options} }}\n\
             [batching]\nmax_batch_size = 4\n"
        ),
    );
    std::fs::copy(model, dir.path().join("net.onnx")).unwrap();
    dir
}

/// Ten text lines rendered with Pillow, every second one turned by 180°, as PP-OCR
/// feeds its classifier, and onnxruntime's own Python API's probabilities for each
/// (tests/python/ppocr_reference.py): the images as JSONL, and the references.
fn text_lines_and_reference(model: &std::path::Path) -> (Vec<u8>, Vec<Value>) {
    let images = tempfile::NamedTempFile::new().unwrap();
    let reference = crate::binary::python_reference(
        "ppocr_reference.py",
        &[model.as_os_str(), images.path().as_os_str()],
    );
    (std::fs::read(images.path()).unwrap(), reference)
}

#[test]
fn ppocr_classifier_gives_the_same_outputs_on_tract_and_onnxruntime() {
    let models = run_script("scripts/fetch-models.sh", &["ppocr"]);
    let model = models.join("ppocr_cls.onnx");
    let host = onnxruntime_host(BackendKind::Tract, 2);
    let (input, reference) = text_lines_and_reference(&model);
    assert_eq!(reference.len(), 10);
    let mut outputs = Vec::new();
    // The export leaves height and width open, and computes a shape from them that
    // tract folds only for known sizes: it plans per input size unless input_shapes
    // fixes them.
    let configs = [
        "backend = \"onnxruntime\"",
        "backend = \"tract\"",
        "backend = \"tract\", input_shapes = { x = [-1, 3, 48, 192] }",
    ];
    for (n, options) in configs.iter().enumerate() {
        let dir = tensor_plugin(&format!("ppocr-{n}"), &model, options);
        let plugin = load(&host, dir.path());
        // Batches by size only: a debug build on a slow machine decodes a line in
        // more than 3 ms, so the default 10 ms wait flushed batches of 3.
        let out = run(&plugin, &input, &size_only(4));
        assert!(
            out.dead_letters.is_empty(),
            "{options}: {:?}",
            out.dead_letters
        );
        assert_eq!(out.predictions.len(), 10);
        // 10 examples at max_batch_size 4: batches of 4, 4 and 2.
        assert_eq!(out.summary.batches, 3);
        outputs.push(out.predictions);
    }
    for (i, o) in outputs[0].iter().enumerate() {
        let probabilities = o["inference"].as_array().expect("a [2] row");
        assert_eq!(probabilities.len(), 2, "line {i}");
        let sum: f64 = probabilities.iter().map(|p| p.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4, "line {i}: softmax sums to {sum}");
        for (tract, config) in outputs[1..].iter().zip(&configs[1..]) {
            assert_all_close(
                &tract[i]["inference"],
                &o["inference"],
                1e-4,
                &format!("line {i}, {config} vs onnxruntime"),
            );
        }
    }
    // Distinct inputs get distinct scores: the model really ran on each image.
    assert_ne!(outputs[0][0]["inference"], outputs[0][1]["inference"]);

    // Against the independent reference, and the classifier's meaning: upright
    // lines are class 0, lines turned by 180° class 1.
    for (config, run) in configs.iter().zip(&outputs) {
        for (i, (p, r)) in run.iter().zip(&reference).enumerate() {
            assert_all_close(
                &p["inference"],
                &r["probabilities"],
                1e-4,
                &format!("line {i}, {config} vs onnxruntime in Python"),
            );
            let scores = p["inference"].as_array().unwrap();
            let turned = scores[1].as_f64().unwrap() > scores[0].as_f64().unwrap();
            assert_eq!(turned, r["turned"], "line {i}, {config}: {scores:?}");
        }
    }
}

#[test]
fn a_model_tract_cannot_load_runs_on_onnxruntime() {
    let golden = read_jsonl("tests/golden/iris_scaler.jsonl");
    let model = root().join("tests/models/iris_scaler.onnx");
    // One session for four instances: they take turns with it.
    let host = onnxruntime_host(BackendKind::Tract, 1);

    let dir = tensor_plugin("scaler-tract", &model, "backend = \"tract\"");
    let err = host
        .load_plugin(dir.path())
        .err()
        .expect("tract lacks Scaler");
    let message = format!("{err:#}");
    assert!(
        message.contains("tract cannot load model")
            && message.contains("backend = \"onnxruntime\""),
        "{message}"
    );

    let dir = tensor_plugin("scaler-onnxruntime", &model, "backend = \"onnxruntime\"");
    let plugin = load(&host, dir.path());
    let input = jsonl(golden.iter().map(|g| g["example"].clone()));
    let out = run(&plugin, &input, &RunOptions::default());
    assert_eq!(
        out.predictions.len(),
        golden.len(),
        "{:?}",
        out.dead_letters
    );
    for (i, (p, g)) in out.predictions.iter().zip(&golden).enumerate() {
        assert_eq!(p["inference"]["label"], g["label"], "line {i}");
        assert_all_close(
            &p["inference"]["probabilities"],
            &g["probabilities"],
            1e-5,
            &format!("line {i}"),
        );
    }
}

#[test]
fn the_host_default_backend_runs_models_whose_entry_names_none() {
    // A model only onnxruntime runs (ONNX-ML's Scaler) behind a bare path: it fails
    // on a host whose default is tract and loads on one whose default is onnxruntime,
    // so the default engine is known to have run it.
    let scaler = scratch_plugin(
        "onnx-tensor",
        "name = \"scaler\"\ncomponent = \"onnx-tensor.wasm\"\n[models]\nmodel = \"net.onnx\"\n",
    );
    std::fs::copy(
        root().join("tests/models/iris_scaler.onnx"),
        scaler.path().join("net.onnx"),
    )
    .unwrap();
    let error = onnxruntime_host(BackendKind::Tract, 2)
        .load_plugin(scaler.path())
        .err()
        .expect("tract lacks Scaler");
    assert!(
        format!("{error:#}").contains("tract cannot load model"),
        "{error:#}"
    );
    let host = onnxruntime_host(BackendKind::Onnxruntime, 2);
    let plugin = load(&host, scaler.path());
    let golden = read_jsonl("tests/golden/iris_scaler.jsonl");
    let out = run(
        &plugin,
        &jsonl(golden.iter().map(|g| g["example"].clone())),
        &RunOptions::default(),
    );
    assert_eq!(
        out.predictions.len(),
        golden.len(),
        "{:?}",
        out.dead_letters
    );
    for (i, (p, g)) in out.predictions.iter().zip(&golden).enumerate() {
        assert_eq!(p["inference"]["label"], g["label"], "line {i}");
    }

    let golden = read_jsonl("tests/golden/iris.jsonl");
    let host = onnxruntime_host(BackendKind::Onnxruntime, 2);
    // plugins/iris/plugin.toml gives a bare path: the host default decides.
    let plugin = bundled(&host, "iris");
    let input = jsonl(golden.iter().map(|g| g["example"].clone()));
    let out = run(&plugin, &input, &RunOptions::default());
    assert_eq!(
        out.predictions.len(),
        golden.len(),
        "{:?}",
        out.dead_letters
    );
    assert_iris_matches_golden(&out.predictions, &golden, 1e-5);
    // One model, loaded by onnxruntime: the registry keys models by engine too.
    assert_eq!(host.models().load_count(), 1);
}

/// A model whose weight points at a file of the host (ONNX external data) is refused
/// before any engine reads it: onnxruntime, given the model as bytes, read the file
/// from its working directory into the weight and out through the inferences.
#[test]
fn a_model_may_not_read_files_through_external_data() {
    let fixture = root().join("tests/fixtures/external-data.onnx");
    for backend in ["onnxruntime", "tract"] {
        let host = onnxruntime_host(BackendKind::Tract, 1);
        let dir = tensor_plugin(
            &format!("external-{backend}"),
            &fixture,
            &format!("backend = \"{backend}\""),
        );
        let error = host
            .load_plugin(dir.path())
            .err()
            .expect("refused")
            .to_string();
        assert!(
            error.contains("tensor `w` keeps its data in another file (\"Cargo.toml\")"),
            "{backend}: {error}"
        );
    }
}

/// A model's sessions share its weights (onnxruntime's `AddInitializer` and one
/// pre-packed weights container): each of three sessions opened at once must still
/// give onnxruntime-in-Python's own numbers for every image.
#[test]
fn sessions_opened_at_once_share_the_weights_and_give_the_reference_outputs() {
    let models = run_script("scripts/fetch-models.sh", &["ppocr"]);
    let path = models.join("ppocr_cls.onnx");
    let (images, reference) = text_lines_and_reference(&path);
    let images: Vec<Tensor> = images
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            let nested: Value = serde_json::from_slice(line).unwrap();
            let mut values = Vec::new();
            flatten(&nested, &mut values);
            Tensor::from_f32(vec![1, 3, 48, 192], &values).unwrap()
        })
        .collect();
    assert_eq!(images.len(), reference.len());
    let registry = ModelRegistry::new(Counter::default(), {
        let mut config = OnnxruntimeConfig::default();
        config.library = Some(library());
        config.threads = 1;
        config.max_sessions = 3;
        config
    });
    let model = registry
        .load(&path, BackendKind::Onnxruntime, &Default::default())
        .expect("loads");
    let input = model.inputs()[0].name.clone();
    // Three threads released together: the pool opens more sessions (one at a time,
    // on the shared weights) while the first ones run.
    let start = std::sync::Barrier::new(3);
    std::thread::scope(|scope| {
        for thread in 0..3 {
            let (model, images, reference, input, start) =
                (&model, &images, &reference, &input, &start);
            scope.spawn(move || {
                start.wait();
                for round in 0..3 {
                    for (i, (image, r)) in images.iter().zip(reference).enumerate() {
                        let outputs = model.run_named(vec![(input.clone(), image)]).unwrap();
                        let got: Vec<f64> = outputs[0]
                            .1
                            .to_f32()
                            .iter()
                            .map(|&p| f64::from(p))
                            .collect();
                        assert_all_close(
                            &serde_json::json!(got),
                            &r["probabilities"],
                            1e-4,
                            &format!("thread {thread}, round {round}, image {i}"),
                        );
                    }
                }
            });
        }
    });
}

fn flatten(value: &Value, out: &mut Vec<f32>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        v => out.push(v.as_f64().expect("a number") as f32),
    }
}
