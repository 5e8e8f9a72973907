//! The bundled plugins, run by the real host in wasmtime on the real ONNX models,
//! reproduce onnxruntime's outputs (tests/golden, made by scripts/make_models.py).

use runinfer::run::RunOptions;
use runinfer_e2e::*;
use serde_json::Value;

const TOLERANCE: f64 = 1e-5;

#[test]
fn iris_matches_onnxruntime() {
    let golden = read_jsonl("tests/golden/iris.jsonl");
    let host = host();
    let plugin = bundled(&host, "iris");
    let input = jsonl(golden.iter().map(|g| g["example"].clone()));
    let out = run(&plugin, &input, &RunOptions::default());
    assert_eq!(
        out.predictions.len(),
        golden.len(),
        "dead letters: {:?}",
        out.dead_letters
    );
    assert!(out.dead_letters.is_empty());
    let model_id = out.predictions[0]["model_id"].as_str().unwrap().to_string();
    assert!(model_id.starts_with("models/iris.onnx@"), "{model_id}");
    assert_iris_matches_golden(&out.predictions, &golden, TOLERANCE);
    for (i, (p, g)) in out.predictions.iter().zip(&golden).enumerate() {
        assert_eq!(p["example"], g["example"], "line {i}");
        assert_eq!(p["model_id"], model_id.as_str());
    }
    // The model is a real classifier: it gets most of the data set right.
    let correct = golden.iter().filter(|g| g["label"] == g["species"]).count();
    assert!(correct >= 140, "{correct}/150");
}

#[test]
fn iris_batch_size_does_not_change_results() {
    let golden = read_jsonl("tests/golden/iris.jsonl");
    let host = host();
    let plugin = bundled(&host, "iris");
    let input = jsonl(golden.iter().map(|g| g["example"].clone()));
    let mut by_size = Vec::new();
    for size in [1, 7, 150] {
        // Batches flush on size or at the end of the input only, so their number
        // does not depend on the machine's speed.
        let options = {
            let mut value = RunOptions::default();
            value.batching = runinfer::manifest::BatchingConfig {
                max_batch_size: Some(size),
                max_batch_duration_ms: Some(600_000),
                ..Default::default()
            };
            value
        };
        let out = run(&plugin, &input, &options);
        assert_eq!(out.summary.batches, 150u64.div_ceil(size as u64));
        // Every line answered, at every size: a run whose batches all failed has
        // the same number of batches.
        assert!(
            out.dead_letters.is_empty(),
            "size {size}: {:?}",
            out.dead_letters
        );
        assert_iris_matches_golden(&out.predictions, &golden, TOLERANCE);
        by_size.push(out.predictions);
    }
    for (a, b) in by_size[0]
        .iter()
        .zip(&by_size[1])
        .chain(by_size[0].iter().zip(&by_size[2]))
    {
        assert_eq!(a["inference"]["label"], b["inference"]["label"]);
        assert_all_close(
            &a["inference"]["probabilities"],
            &b["inference"]["probabilities"],
            TOLERANCE,
            "probabilities",
        );
    }
}

#[test]
fn onnx_tensor_returns_every_output_row_like_onnxruntime() {
    let golden = read_jsonl("tests/golden/tiny_mlp.jsonl");
    let host = host();
    let plugin = bundled(&host, "onnx-tensor");
    let input = jsonl(golden.iter().map(|g| g["example"].clone()));
    let out = run(&plugin, &input, &RunOptions::default());
    assert_eq!(
        out.predictions.len(),
        golden.len(),
        "dead letters: {:?}",
        out.dead_letters
    );
    // 64 examples with max_batch_size = 32 from plugin.toml.
    assert_eq!(out.summary.batches, 2);
    for (i, (p, g)) in out.predictions.iter().zip(&golden).enumerate() {
        assert_all_close(
            &p["inference"]["logits"],
            &g["logits"],
            TOLERANCE,
            &format!("line {i} logits"),
        );
        assert_all_close(
            &p["inference"]["hidden"],
            &g["hidden"],
            TOLERANCE,
            &format!("line {i} hidden"),
        );
        assert!(
            p["model_id"]
                .as_str()
                .unwrap()
                .starts_with("models/tiny_mlp.onnx@")
        );
    }
}

#[test]
fn onnx_tensor_with_one_output_returns_the_row_itself() {
    let golden = read_jsonl("tests/golden/tiny_mlp.jsonl");
    let dir = scratch_plugin(
        "onnx-tensor",
        r#"
        name = "logits-only"
        component = "onnx-tensor.wasm"
        [models]
        mlp = "models/tiny_mlp.onnx"
        [args]
        model = "mlp"
        outputs = "logits"
        "#,
    );
    let host = host();
    let plugin = load(&host, dir.path());
    // Explicit tensor objects are accepted as well as nested arrays.
    let input: String = golden
        .iter()
        .map(|g| {
            let flat: Vec<Value> = g["example"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|row| row.as_array().unwrap().clone())
                .collect();
            format!(
                "{}\n",
                serde_json::json!({"dtype": "f32", "shape": [2, 3], "data": flat})
            )
        })
        .collect();
    let out = run(&plugin, input.as_bytes(), &RunOptions::default());
    assert_eq!(
        out.predictions.len(),
        golden.len(),
        "dead letters: {:?}",
        out.dead_letters
    );
    for (i, (p, g)) in out.predictions.iter().zip(&golden).enumerate() {
        assert_all_close(
            &p["inference"],
            &g["logits"],
            TOLERANCE,
            &format!("line {i}"),
        );
    }
}
