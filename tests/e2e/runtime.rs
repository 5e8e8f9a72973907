//! The RunInference runtime end to end: parallel instances keep input order, keys are
//! re-attached, per-key models with LRU eviction, exact metrics, failure ratio.

use runinfer::compile::CompileCache;
use runinfer::run::RunOptions;
use runinfer::{Host, HostConfig};
use runinfer_e2e::*;
use serde_json::{Value, json};

fn iris_lines(n: usize) -> Vec<Value> {
    let rows = read_jsonl("examples/iris.jsonl");
    (0..n).map(|i| rows[i % rows.len()].clone()).collect()
}

fn to_input(values: &[Value]) -> Vec<u8> {
    values
        .iter()
        .map(|v| format!("{v}\n"))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn parallel_instances_keep_input_order() {
    let host = host();
    let plugin = bundled(&host, "iris");
    let lines = iris_lines(1000);
    let golden = read_jsonl("tests/golden/iris.jsonl");
    for (instances, batch) in [(1, 1), (4, 7), (3, 64)] {
        let options = {
            let mut value = size_only(batch);
            value.instances = Some(instances);
            value
        };
        let out = run(&plugin, &to_input(&lines), &options);
        assert_eq!(out.predictions.len(), 1000);
        assert_eq!(out.summary.batches, 1000u64.div_ceil(batch as u64));
        for (i, p) in out.predictions.iter().enumerate() {
            assert_eq!(p["example"], lines[i], "line {i}, instances {instances}");
            assert_eq!(
                p["inference"]["label"],
                golden[i % 150]["label"],
                "line {i}"
            );
        }
    }
}

#[test]
fn time_based_flushes_lose_nothing_and_keep_order() {
    // Tiny waits force many partial batches while lines are still arriving.
    let host = host();
    let plugin = bundled(&host, "iris");
    let lines = iris_lines(600);
    let options = {
        let mut value = RunOptions::default();
        value.instances = Some(2);
        value.batching = runinfer::manifest::BatchingConfig {
            max_batch_size: Some(50),
            max_batch_duration_ms: Some(1),
            min_batch_size: Some(1),
        };
        value
    };
    let out = run(&plugin, &to_input(&lines), &options);
    assert_eq!(out.predictions.len(), 600);
    for (i, p) in out.predictions.iter().enumerate() {
        assert_eq!(p["example"], lines[i]);
    }
}

#[test]
fn keyed_and_unkeyed_lines_mix_and_keys_come_back() {
    let host = host();
    let plugin = bundled(&host, "iris");
    let lines = iris_lines(300);
    let mixed: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(i, ex)| match i % 3 {
            0 => ex.clone(),
            1 => json!({"key": format!("k{i}"), "example": ex}),
            _ => json!({"key": {"id": i, "tags": ["a"]}, "example": ex}),
        })
        .collect();
    let out = run(&plugin, &to_input(&mixed), &{
        let mut value = size_only(16);
        value.instances = Some(3);
        value
    });
    assert_eq!(out.predictions.len(), 300);
    for (i, p) in out.predictions.iter().enumerate() {
        assert_eq!(p["example"], lines[i]);
        match i % 3 {
            0 => assert!(p.get("key").is_none()),
            1 => assert_eq!(p["key"], format!("k{i}")),
            _ => assert_eq!(p["key"], json!({"id": i, "tags": ["a"]})),
        }
    }
}

fn keyed_plugin() -> tempfile::TempDir {
    scratch_plugin(
        "onnx-tensor",
        r#"
        name = "per-key"
        component = "onnx-tensor.wasm"
        [models]
        model = "models/tiny_mlp.onnx"
        [args]
        outputs = "logits"
        [[key_models]]
        keys = ["v2", 2]
        models = { model = "models/tiny_mlp_v2.onnx" }
        [[key_models]]
        keys = ["v3"]
        models = { model = "models/tiny_mlp_v3.onnx" }
        "#,
    )
}

/// `prediction` holds `logits` (within 1e-5) and came from `models/<file>.onnx`.
fn assert_served_by(prediction: &Value, logits: &Value, file: &str) {
    assert_all_close(&prediction["inference"], logits, 1e-5, file);
    assert!(
        prediction["model_id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("models/{file}.onnx@")),
        "{prediction}"
    );
}

fn keyed_input(golden: &[Value], key: Option<Value>) -> Vec<u8> {
    let lines: Vec<Value> = golden
        .iter()
        .map(|g| match &key {
            Some(k) => json!({"key": k, "example": g["example"]}),
            None => g["example"].clone(),
        })
        .collect();
    to_input(&lines)
}

#[test]
fn per_key_models_with_lru_eviction() {
    let cache = root().join("target").join("test-compile-cache");
    let host = Host::new({
        let mut value = HostConfig::default();
        value.compile_cache = Some(CompileCache::new(cache));
        value.max_key_model_sets = 1;
        value
    })
    .unwrap();
    let dir = keyed_plugin();
    let plugin = load(&host, dir.path());
    let golden = |v: &str| read_jsonl(&format!("tests/golden/{v}.jsonl"));
    let (base, v2, v3) = (
        golden("tiny_mlp"),
        golden("tiny_mlp_v2"),
        golden("tiny_mlp_v3"),
    );
    assert_eq!(host.models().load_count(), 1);

    let check = |out: &Output, expected: &[Value], file: &str| {
        assert_eq!(
            out.predictions.len(),
            expected.len(),
            "{:?}",
            out.dead_letters
        );
        for (p, g) in out.predictions.iter().zip(expected) {
            assert_served_by(p, &g["logits"], file);
        }
    };
    // Unkeyed lines and unmapped keys use [models].
    check(
        &run(&plugin, &keyed_input(&base, None), &size_only(8)),
        &base,
        "tiny_mlp",
    );
    check(
        &run(
            &plugin,
            &keyed_input(&base, Some(json!("other"))),
            &size_only(8),
        ),
        &base,
        "tiny_mlp",
    );
    // "v2" and 2 map to the same set: loaded once.
    check(
        &run(&plugin, &keyed_input(&v2, Some(json!("v2"))), &size_only(8)),
        &v2,
        "tiny_mlp_v2",
    );
    check(
        &run(&plugin, &keyed_input(&v2, Some(json!(2))), &size_only(8)),
        &v2,
        "tiny_mlp_v2",
    );
    assert_eq!(host.models().load_count(), 2);
    // Cap 1: loading v3 evicts v2; v2 again evicts v3 and loads v2 again.
    check(
        &run(&plugin, &keyed_input(&v3, Some(json!("v3"))), &size_only(8)),
        &v3,
        "tiny_mlp_v3",
    );
    check(
        &run(&plugin, &keyed_input(&v2, Some(json!("v2"))), &size_only(8)),
        &v2,
        "tiny_mlp_v2",
    );
    assert_eq!(host.models().load_count(), 4);
    // The base model and v2 are loaded; v3 was freed with its evicted set.
    assert_eq!(host.models().len(), 2);

    let m = prometheus_values(&host.metrics().encode());
    assert_eq!(m["runinfer_model_loads_total"], 4.0);
    assert_eq!(m["runinfer_model_evictions_total"], 2.0);
    let v2_label = "{model_id=\"models/tiny_mlp_v2.onnx@";
    let loaded: Vec<(&String, &f64)> = m
        .iter()
        .filter(|(k, _)| k.starts_with("per_key_model_loaded{"))
        .collect();
    assert_eq!(loaded.len(), 3, "{loaded:?}");
    for (k, v) in loaded {
        let expect = if k.contains("tiny_mlp_v3") { 0.0 } else { 1.0 };
        assert_eq!(*v, expect, "{k}");
    }
    // 64 examples per run, three runs on v2.
    let v2_count = m
        .iter()
        .find(|(k, _)| k.starts_with("per_key_num_inferences_total") && k.contains(v2_label))
        .map(|(_, v)| *v);
    assert_eq!(v2_count, Some(192.0));
}

#[test]
fn model_sets_with_full_queues_share_the_batch_slots_of_a_run() {
    // Three model sets (keys) of one plugin share its batches formed ahead; a bulk
    // job's batcher takes several of those slots at once when its queue is full.
    // Batches of 1 over long runs of each key: every line must end, on its key's model.
    let host = host();
    let dir = keyed_plugin();
    let plugin = load(&host, dir.path());
    let sets = [
        (None, read_jsonl("tests/golden/tiny_mlp.jsonl"), "tiny_mlp"),
        (
            Some(json!("v2")),
            read_jsonl("tests/golden/tiny_mlp_v2.jsonl"),
            "tiny_mlp_v2",
        ),
        (
            Some(json!("v3")),
            read_jsonl("tests/golden/tiny_mlp_v3.jsonl"),
            "tiny_mlp_v3",
        ),
    ];
    // Runs of 400 lines per key (more than a chunk, fewer than a queue), 3600 lines.
    let order: Vec<(usize, usize)> = (0..3600).map(|i| ((i / 400) % 3, i % 64)).collect();
    let lines: Vec<Value> = order
        .iter()
        .map(|&(set, row)| {
            let example = sets[set].1[row]["example"].clone();
            match &sets[set].0 {
                Some(key) => json!({"key": key, "example": example}),
                None => example,
            }
        })
        .collect();
    let mut options = size_only(1);
    options.instances = Some(2);
    let out = run(&plugin, &to_input(&lines), &options);
    assert!(
        out.dead_letters.is_empty(),
        "{:?}",
        out.dead_letters.first()
    );
    assert_eq!(out.predictions.len(), 3600);
    for (p, &(set, row)) in out.predictions.iter().zip(&order) {
        let (_, golden, file) = &sets[set];
        assert_served_by(p, &golden[row]["logits"], file);
    }
}

#[test]
fn metrics_have_exact_values_after_a_known_run() {
    let host = host();
    let dir = scratch_plugin(
        "iris",
        "name = \"iris-metrics\"\ncomponent = \"iris.wasm\"\n[models]\niris = \"models/iris.onnx\"\n",
    );
    let plugin = load(&host, dir.path());
    let lines = iris_lines(10);
    let mut input = to_input(&lines);
    input.extend_from_slice(b"[1, 2]\n"); // undecodable: never reaches a batch
    let out = run(&plugin, &input, &{
        let mut value = size_only(4);
        value.instances = Some(1);
        value
    });
    assert_eq!(out.predictions.len(), 10);
    let id = plugin.models().next().unwrap().id.clone();
    let l = format!("{{model_id=\"{id}\"}}");
    let m = prometheus_values(&host.metrics().encode());
    let get = |name: &str| m.get(&format!("iris_metrics_{name}{l}")).copied();
    assert_eq!(get("num_inferences_total"), Some(10.0));
    assert_eq!(get("inference_request_batch_size_count"), Some(3.0));
    assert_eq!(get("inference_request_batch_size_sum"), Some(10.0));
    // 4 f32 features per example.
    assert_eq!(get("inference_request_batch_byte_size_sum"), Some(160.0));
    assert_eq!(get("inference_batch_latency_micro_secs_count"), Some(3.0));
    assert_eq!(get("queue_wait_micro_secs_count"), Some(10.0));
    assert_eq!(get("element_latency_micro_secs_count"), Some(10.0));
    assert_eq!(
        get("model_byte_size"),
        Some(
            std::fs::metadata(dir.path().join("models/iris.onnx"))
                .unwrap()
                .len() as f64
        )
    );
    assert_eq!(get("model_loaded"), Some(1.0));
    assert_eq!(get("load_model_latency_milli_secs_count"), Some(1.0));
    // Exposed from load at 0 (an absent series breaks rates and alerts).
    assert_eq!(get("failed_batches_counter_total"), Some(0.0));

    // A failing batch is counted under the plugin's model id label.
    let dir = scratch_test_plugin(
        "hostile",
        "name = \"failing-metrics\"\ncomponent = \"hostile.wasm\"\n",
    );
    let plugin = load(&host, dir.path());
    let out = run(&plugin, b"\"no-such-misdeed\"\n", &RunOptions::default());
    assert_eq!(out.dead_letters.len(), 1);
    let id = plugin.model_id();
    let m = prometheus_values(&host.metrics().encode());
    assert_eq!(
        m[&format!("failing_metrics_failed_batches_counter_total{{model_id=\"{id}\"}}")],
        1.0
    );
}

#[test]
fn max_failure_ratio_stops_the_run() {
    let host = host();
    let plugin = bundled(&host, "iris");
    let mut input = String::new();
    for i in 0..1000 {
        input.push_str(if i % 2 == 0 {
            "[5.1, 3.5, 1.4, 0.2]\n"
        } else {
            "[1]\n"
        });
    }
    let options = {
        let mut value = RunOptions::default();
        value.max_failure_ratio = Some(0.2);
        value
    };
    let out = run(&plugin, input.as_bytes(), &options);
    let reason = out.summary.stopped.expect("stopped");
    assert_eq!(out.summary.lines, 100);
    assert_eq!(
        reason,
        "50 of 100 lines failed (50.0%), more than the allowed 20.0%"
    );
    assert_eq!(out.predictions.len() + out.dead_letters.len(), 100);

    // Under the ratio, the run completes.
    let options = {
        let mut value = RunOptions::default();
        value.max_failure_ratio = Some(0.6);
        value
    };
    let out = run(&plugin, input.as_bytes(), &options);
    assert!(out.summary.stopped.is_none());
    assert_eq!(out.summary.lines, 1000);
}

/// Batch sizes of the plugin's runs so far, from its batch-size histogram:
/// (batches of at most 2 examples, all batches).
fn small_and_all_batches(host: &runinfer::Host) -> (f64, f64) {
    let m = prometheus_values(&host.metrics().encode());
    let get = |prefix: &str, label: &str| {
        m.iter()
            .filter(|(k, _)| k.starts_with(prefix) && k.contains(label))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    (
        get(
            "iris_metrics_inference_request_batch_size_bucket{",
            "le=\"2.0\"",
        ),
        get("iris_metrics_inference_request_batch_size_count{", ""),
    )
}

#[test]
fn adaptive_batching_starts_small_and_grows_through_the_dispatcher() {
    let lines = iris_lines(2000);
    // Batches flush on size or at the end of the input only (no timers), so the
    // counts below do not depend on the machine's speed.
    let run_with = |adaptive: Option<std::time::Duration>| {
        let host = host();
        let dir = scratch_plugin(
            "iris",
            "name = \"iris-metrics\"\ncomponent = \"iris.wasm\"\n[models]\niris = \"models/iris.onnx\"\n[args]\nlabels = \"setosa,versicolor,virginica\"\n",
        );
        let plugin = load(&host, dir.path());
        let options = {
            let mut value = size_only(256);
            value.adaptive_batch_latency = adaptive;
            value.instances = Some(2);
            value
        };
        let out = run(&plugin, &to_input(&lines), &options);
        assert_eq!(out.predictions.len(), 2000);
        assert!(out.dead_letters.is_empty());
        for (i, p) in out.predictions.iter().enumerate() {
            assert_eq!(p["example"], lines[i]);
        }
        (out.summary.batches, small_and_all_batches(&host))
    };
    // Fixed: 7 full batches of 256 and the rest; none small.
    let (batches, (small, all)) = run_with(None);
    assert_eq!((batches, small, all), (8, 0.0, 8.0));
    // Adaptive: the first batch has min_batch_size (1) examples, sizes grow from
    // there (at most doubling), so there are more batches than fixed sizing makes.
    let (batches, (small, all)) = run_with(Some(std::time::Duration::from_millis(2)));
    assert!(
        small >= 1.0,
        "no batch of 1 or 2: adaptive sizing did not start small"
    );
    assert!(
        batches > 8,
        "{batches} batches: sizes never started below 256"
    );
    assert_eq!(all, batches as f64);
}

#[test]
fn tenants_are_accounted_their_examples_calls_and_cpu_time() {
    let host = host();
    let iris = scratch_plugin(
        "iris",
        "name = \"acct-iris\"\ncomponent = \"iris.wasm\"\ntenant = \"acct-models\"\n[models]\niris = \"models/iris.onnx\"\n",
    );
    let stats = scratch_plugin(
        "text-stats",
        "name = \"acct-stats\"\ncomponent = \"text-stats.wasm\"\ntenant = \"acct-text\"\n",
    );
    let busy = scratch_test_plugin(
        "hostile",
        "name = \"acct-busy\"\ncomponent = \"hostile.wasm\"\n",
    );
    let idle = scratch_test_plugin(
        "hostile",
        "name = \"acct-idle\"\ncomponent = \"hostile.wasm\"\n",
    );
    let one_instance = |size| {
        let mut value = size_only(size);
        value.instances = Some(1);
        value
    };
    let out = run(
        &load(&host, iris.path()),
        &to_input(&iris_lines(10)),
        &one_instance(4),
    );
    assert_eq!(out.predictions.len(), 10);
    let text = b"\"The cat sat.\"\n\"Dogs bark loudly!\"\n\"\"\n\"a b c\"\n\"Hello, world.\"\n\"x\"\n\"One. Two.\"\n";
    let out = run(&load(&host, stats.path()), text, &one_instance(8));
    assert_eq!(out.predictions.len(), 7);
    let out = run(&load(&host, busy.path()), b"\"slow\"\n", &one_instance(1));
    assert_eq!(out.predictions.len(), 1, "{:?}", out.dead_letters);
    let out = run(&load(&host, idle.path()), b"\"ok\"\n", &one_instance(1));
    assert_eq!(out.predictions.len(), 1, "{:?}", out.dead_letters);

    let m = prometheus_values(&host.metrics().encode());
    let get = |name: &str, tenant: &str| {
        m.get(&format!(
            "runinfer_tenant_{name}_total{{tenant=\"{tenant}\"}}"
        ))
        .copied()
        .unwrap_or_else(|| panic!("no {name} for {tenant}"))
    };
    // The manifest's tenant, else the plugin's name.
    assert_eq!(get("examples", "acct-models"), 10.0);
    assert_eq!(get("handler_calls", "acct-models"), 3.0);
    assert_eq!(get("examples", "acct-text"), 7.0);
    assert_eq!(get("handler_calls", "acct-text"), 1.0);
    assert_eq!(get("examples", "acct-busy"), 1.0);
    // iris runs its model in the engine; text-stats has none.
    assert!(get("engine_cpu_seconds", "acct-models") > 0.0);
    assert!(get("handler_cpu_seconds", "acct-models") > 0.0);
    assert_eq!(get("engine_cpu_seconds", "acct-text"), 0.0);
    assert!(get("handler_cpu_seconds", "acct-text") > 0.0);
    // 200 ms of busy work in the handler is charged to its tenant, not to the
    // tenant whose call answered at once.
    assert!(
        get("handler_cpu_seconds", "acct-busy") > 10.0 * get("handler_cpu_seconds", "acct-idle"),
        "busy {} idle {}",
        get("handler_cpu_seconds", "acct-busy"),
        get("handler_cpu_seconds", "acct-idle")
    );
}

/// Two tenants with weights 1 and 3 keep the host's two core slots busy with the
/// same fixed-work handler and as many instances each: while both wait for cores,
/// the heavier gets about three times the CPU and gets about three times the rows
/// done.
#[test]
fn tenants_weighted_one_and_three_share_the_cores_one_to_three() {
    let host = Host::new({
        let mut value = HostConfig::default();
        value.compile_cache = Some(CompileCache::new(
            root().join("target").join("test-compile-cache"),
        ));
        value.workers = 2;
        value
    })
    .expect("host starts");
    host.scheduler().set_weight("share-three", 3);
    let plugin = |name: &str, tenant: &str| {
        scratch_test_plugin(
            "hostile",
            &format!("name = \"{name}\"\ncomponent = \"hostile.wasm\"\ntenant = \"{tenant}\"\n"),
        )
    };
    let one = plugin("share-a", "share-one");
    let three = plugin("share-b", "share-three");
    let (one, three) = (load(&host, one.path()), load(&host, three.path()));
    let options = {
        let mut value = size_only(1);
        value.instances = Some(4);
        value
    };
    let rows = 60;
    let input = "\"work\"\n".repeat(rows).into_bytes();
    // One tenant's counter (0 until the tenant has run something).
    let tenant_total = |counter: &str, tenant: &str| {
        prometheus_values(&host.metrics().encode())
            .get(&format!(
                "runinfer_tenant_{counter}_total{{tenant=\"{tenant}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    let examples = |tenant: &str| tenant_total("examples", tenant);
    let cpu = |tenant: &str| tenant_total("handler_cpu_seconds", tenant);
    let (done_one, cpu_one, cpu_three) = std::thread::scope(|scope| {
        let light = scope.spawn(|| run(&one, &input, &options));
        let heavy = run(&three, &input, &options);
        assert_eq!(heavy.predictions.len(), rows, "{:?}", heavy.dead_letters);
        // Measured the moment the heavier tenant is done, while both were busy.
        let seen = (examples("share-one"), cpu("share-one"), cpu("share-three"));
        let light = light.join().expect("no panic");
        assert_eq!(light.predictions.len(), rows, "{:?}", light.dead_letters);
        seen
    });
    let row_ratio = rows as f64 / done_one;
    let cpu_ratio = cpu_three / cpu_one;
    eprintln!(
        "weights 3:1 — rows {rows}:{done_one} ({row_ratio:.2}), handler CPU \
         {cpu_three:.3}s:{cpu_one:.3}s ({cpu_ratio:.2})"
    );
    assert!(
        (2.0..=4.5).contains(&row_ratio) && (2.0..=4.5).contains(&cpu_ratio),
        "rows {rows} vs {done_one} (ratio {row_ratio:.2}), CPU {cpu_three:.3}s vs \
         {cpu_one:.3}s (ratio {cpu_ratio:.2})"
    );
    // Nothing is lost: both tenants' calls, and every slot is given back.
    let usage = host.scheduler().usage();
    assert!(
        usage.iter().all(|(_, u)| u.running == 0 && u.waiting == 0),
        "{usage:?}"
    );
    assert_eq!(examples("share-one"), rows as f64);
}

/// A handler blocked in a sleep uses no core, so it must not keep one: on a host
/// with a single core slot, a tenant's call that sleeps for 60 s (its time limit is
/// 10 s) leaves the slot to another tenant, whose calls are answered at once — not
/// after the sleep, as they were when a sleeping call kept its slot.
#[test]
fn a_sleeping_handler_leaves_its_core_slot_to_other_tenants() {
    let host = Host::new({
        let mut value = HostConfig::default();
        value.compile_cache = Some(CompileCache::new(
            root().join("target").join("test-compile-cache"),
        ));
        value.workers = 1;
        value
    })
    .expect("host starts");
    let limit = std::time::Duration::from_secs(10);
    let sleeper = scratch_test_plugin(
        "hostile",
        &format!(
            "name = \"sleeper\"\ncomponent = \"hostile.wasm\"\ntenant = \"sleepy\"\n\
             [limits]\ntimeout_ms = {}\n",
            limit.as_millis()
        ),
    );
    let other = scratch_test_plugin(
        "hostile",
        "name = \"other\"\ncomponent = \"hostile.wasm\"\ntenant = \"busy\"\n",
    );
    let (sleeping, busy) = (load(&host, sleeper.path()), load(&host, other.path()));
    let running = |tenant: &str| {
        let usage = host.scheduler().usage();
        usage
            .iter()
            .find(|(t, _)| t == tenant)
            .map(|(_, u)| u.running)
    };
    std::thread::scope(|scope| {
        let asleep = scope.spawn(|| run(&sleeping, b"\"sleep-long\"\n", &size_only(1)));
        // The sleeper has had the only slot before the other tenant asks for it.
        while running("sleepy").is_none() {
            std::thread::yield_now();
        }
        let asked = std::time::Instant::now();
        let answered = run(&busy, b"\"ok\"\n\"ok\"\n", &size_only(1));
        let took = asked.elapsed();
        assert_eq!(answered.predictions.len(), 2, "{:?}", answered.dead_letters);
        // Answered while the sleeper slept: before its time limit could end it.
        assert!(
            took < limit,
            "the other tenant waited {took:?} for the slot"
        );
        assert!(!asleep.is_finished());
        assert_eq!(running("sleepy"), Some(0));
        // The sleep itself ends at the sleeper's time limit, not after 60 s.
        let slept = asleep.join().expect("no panic");
        assert_eq!(slept.dead_letters.len(), 1, "{:?}", slept.predictions);
        assert_eq!(slept.dead_letters[0]["error"]["code"], "timeout");
    });
    let usage = host.scheduler().usage();
    assert!(
        usage.iter().all(|(_, u)| u.running == 0 && u.waiting == 0),
        "{usage:?}"
    );
}
