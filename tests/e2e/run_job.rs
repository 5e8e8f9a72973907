//! The run job: every input line ends as exactly one prediction or one dead letter
//! with its reason; keys pass through; predictions keep input order.

use runinfer::run::RunOptions;
use runinfer_e2e::*;
use serde_json::{Value, json};

#[test]
fn every_line_is_a_prediction_or_a_dead_letter_with_the_reason() {
    let host = host();
    let plugin = bundled(&host, "iris");
    let mut input = Vec::new();
    for line in [
        "[5.1, 3.5, 1.4, 0.2]",                              // 1 ok
        "not json",                                          // 2 not JSON
        "[5.1, 3.5, 1.4]",                                   // 3 wrong shape
        "",                                                  // 4 empty
        r#"{"key": "k5", "example": [6.3, 3.3, 6.0, 2.5]}"#, // 5 ok, keyed
        r#"[5.1, "x", 1.4, 0.2]"#,                           // 6 not a number
        "[[5.1, 3.5], [1.4, 0.2]]",                          // 7 wrong rank
        r#"{"key": "k8", "example": [1, 2]}"#,               // 8 keyed, wrong shape
        "[7.0, 3.2, 4.7, 1.4]",                              // 9 ok
    ] {
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
    }
    input.extend_from_slice(b"[\xff\xfe]\n"); // 10 invalid UTF-8
    input.extend_from_slice(b"[6.3, 2.5, 5.0, 1.9]"); // 11 ok, no final newline

    let out = run(&plugin, &input, &RunOptions::default());
    assert_eq!(out.summary.lines, 11);
    assert_eq!(out.predictions.len() + out.dead_letters.len(), 11);
    assert_eq!(out.summary.predictions, 4);
    assert_eq!(out.summary.dead_letters, 7);
    assert_eq!(out.summary.decode_failures, 7);

    let dead: Vec<(u64, String)> = out
        .dead_letters
        .iter()
        .map(|d| {
            (
                d["line"].as_u64().unwrap(),
                d["error"]["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let lines: Vec<u64> = dead.iter().map(|d| d.0).collect();
    assert_eq!(lines, vec![2, 3, 4, 6, 7, 8, 10]);
    assert!(dead[0].1.starts_with("not JSON"), "{:?}", dead[0]);
    assert_eq!(dead[1].1, "expected a tensor of shape [4], got [3]");
    assert_eq!(dead[2].1, "empty line");
    assert_eq!(
        dead[3].1,
        "at [1]: expected a number for a f32 tensor, got a string"
    );
    assert_eq!(dead[4].1, "expected a tensor of shape [4], got [2, 2]");
    for d in &out.dead_letters {
        assert_eq!(d["stage"], "decode");
        assert_eq!(d["error"]["code"], "invalid_input");
    }
    assert_eq!(out.dead_letters[1]["input"], "[5.1, 3.5, 1.4]");
    assert_eq!(out.dead_letters[5]["key"], "k8");

    // Predictions in input order, keys re-attached, examples echoed.
    let labels: Vec<&str> = out
        .predictions
        .iter()
        .map(|p| p["inference"]["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        vec!["setosa", "virginica", "versicolor", "virginica"]
    );
    assert_eq!(out.predictions[1]["key"], "k5");
    assert_eq!(out.predictions[1]["example"], json!([6.3, 3.3, 6.0, 2.5]));
    assert!(out.predictions[0].get("key").is_none());
}

#[test]
fn an_inference_that_contradicts_the_signature_dead_letters_its_batch() {
    // The hostile handler declares text outputs; `wrong-output` returns a tensor.
    let host = host();
    let dir = scratch_test_plugin("hostile", "name = \"liar\"\ncomponent = \"hostile.wasm\"\n");
    let plugin = load(&host, dir.path());
    let input = "\"ok\"\n\"wrong-output\"\n\"ok\"\n";
    let out = run(&plugin, input.as_bytes(), &size_only(32));
    assert_eq!(
        out.predictions.len(),
        0,
        "nothing that contradicts it is written"
    );
    assert_eq!(out.dead_letters.len(), 3);
    assert_eq!(out.summary.failed_batches, 1);
    for (d, line) in out.dead_letters.iter().zip(1..) {
        assert_eq!(d["line"], line);
        assert_eq!(d["stage"], "inference");
        assert_eq!(d["error"]["code"], "signature");
        assert_eq!(
            d["error"]["message"],
            "inference 1 does not match the handler's declared outputs: expected text, got tensor"
        );
    }
    // The plugin keeps serving after a failed batch.
    let out = run(&plugin, b"\"ok\"\n", &RunOptions::default());
    assert_eq!(out.predictions.len(), 1);
    assert_eq!(out.predictions[0]["inference"], "ok");
}

#[test]
fn examples_that_contradict_a_model_derived_signature_are_refused_at_decode() {
    let host = host();
    let plugin = bundled(&host, "onnx-tensor");
    // onnx-tensor declares the model's input without its batch axis: f32 [2, 3].
    let out = run(&plugin, b"[[1,2,3,4]]\n", &RunOptions::default());
    assert_eq!(out.dead_letters.len(), 1);
    let d = &out.dead_letters[0];
    assert_eq!(d["stage"], "decode");
    assert_eq!(d["error"]["code"], "invalid_input");
    assert_eq!(
        d["error"]["message"],
        "expected a tensor of shape [2, 3], got [1, 4]"
    );
}

#[test]
fn text_handler_without_a_model_runs_logic_in_the_guest() {
    let host = host();
    let plugin = bundled(&host, "text-stats");
    let input = [
        json!("The service was great. Fast and friendly staff!"),
        json!({"key": 2, "example": "Terrible, slow and broken. Bad bad bad."}),
        json!(42),
    ]
    .iter()
    .map(|v| format!("{v}\n"))
    .collect::<String>();
    let out = run(&plugin, input.as_bytes(), &RunOptions::default());
    assert_eq!(out.predictions.len(), 2);
    let first = &out.predictions[0];
    assert_eq!(first["inference"]["words"], 8);
    assert_eq!(first["inference"]["sentences"], 2);
    assert_eq!(first["inference"]["label"], "positive");
    assert_eq!(first["model_id"], Value::Null);
    let second = &out.predictions[1];
    assert_eq!(second["key"], 2);
    assert_eq!(
        second["inference"]["top_word"],
        json!({"word": "bad", "count": 3})
    );
    assert_eq!(second["inference"]["sentiment"], -6);
    assert_eq!(
        out.dead_letters[0]["error"]["message"],
        "expected a JSON string, got a number"
    );
    // The handler's own metric, under its namespace.
    assert_eq!(
        host.metrics().counter_value("text-stats", "words"),
        Some(8 + 7)
    );
    assert!(
        host.metrics()
            .encode()
            .contains("text_stats_words_total 15")
    );
}

#[test]
fn manifest_args_and_namespace_reach_the_handler() {
    let dir = scratch_plugin(
        "text-stats",
        "name = \"long-words\"\ncomponent = \"text-stats.wasm\"\nmetrics_namespace = \"lw\"\n[args]\nmin_word_len = 5\n",
    );
    let host = host();
    let plugin = load(&host, dir.path());
    assert_eq!(plugin.namespace(), "lw");
    let out = run(
        &plugin,
        b"\"a tiny sentence with several longer words\"\n",
        &RunOptions::default(),
    );
    assert_eq!(out.predictions[0]["inference"]["words"], 4);
    assert_eq!(host.metrics().counter_value("lw", "words"), Some(4));
}

#[test]
fn inference_args_reach_the_handler() {
    let host = host();
    let dir = scratch_test_plugin("hostile", "name = \"echo\"\ncomponent = \"hostile.wasm\"\n");
    let plugin = load(&host, dir.path());
    let options = {
        let mut value = RunOptions::default();
        value.inference_args = vec![("temperature".into(), "0.5".into())];
        value
    };
    let out = run(&plugin, b"\"echo-args\"\n", &options);
    assert_eq!(out.predictions[0]["inference"], "temperature=0.5");
}

#[test]
fn a_run_with_batches_formed_ahead_ends_on_few_core_slots() {
    // A run forms batches ahead of its workers; batches of 1 on fewer core slots than
    // workers, or as many, must all end (a slot reserved for a batch queued behind a
    // worker waiting for one would never be used nor given back: an earlier design
    // that reserved slots where batches form hung here).
    let lines: Vec<u8> = (0..3000)
        .flat_map(|i| format!("[{}.1, 3.5, 1.4, 0.2]\n", 4 + i % 4).into_bytes())
        .collect();
    for (slots, instances) in [(1, 1), (2, 1), (1, 3), (2, 3)] {
        let host = runinfer::Host::new({
            let mut config = runinfer::HostConfig::default();
            config.compile_cache = Some(runinfer::compile::CompileCache::new(
                root().join("target").join("test-compile-cache"),
            ));
            config.workers = slots;
            config
        })
        .unwrap();
        let plugin = bundled(&host, "iris");
        let mut options = size_only(1);
        options.instances = Some(instances);
        let (done, finished) = std::sync::mpsc::channel();
        let input = lines.clone();
        std::thread::spawn(move || {
            let _ = done.send(run(&plugin, &input, &options));
        });
        let out = finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .unwrap_or_else(|_| {
                panic!("{slots} slots, {instances} instances: the job did not end in 120 s")
            });
        assert_eq!(
            out.predictions.len(),
            3000,
            "{slots} slots, {instances} instances"
        );
        assert!(
            out.dead_letters.is_empty(),
            "{:?}",
            out.dead_letters.first()
        );
    }
}
