//! `runinfer serve` in process: the Open Inference Protocol v2 routes, batching across
//! requests, backpressure, timeouts and draining on shutdown.

use runinfer::dispatch::Load;
use runinfer::run::{RunOptions, dispatch_options};
use runinfer::serve::{ServeConfig, router, serve};
use runinfer::watch::PluginRoot;
use runinfer_e2e::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

struct Server {
    addr: SocketAddr,
    root: std::sync::Arc<PluginRoot>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(plugins: &[(&str, &str, Option<&str>)], timeout: Duration) -> Server {
        let mut config = ServeConfig::default();
        config.request_timeout = timeout;
        Server::start_with(plugins, config)
    }

    fn start_with(plugins: &[(&str, &str, Option<&str>)], config: ServeConfig) -> Server {
        let dir = tempfile::tempdir().unwrap();
        for (name, from, manifest) in plugins {
            let src = if *from == "hostile" {
                root().join("tests/plugins/hostile")
            } else {
                plugins_dir().join(from)
            };
            let dest = dir.path().join(name);
            std::fs::create_dir_all(dest.join("models")).unwrap();
            // What a handler may be granted to read the test's signal from.
            std::fs::create_dir_all(dest.join("signal")).unwrap();
            std::fs::copy(
                src.join(format!("{from}.wasm")),
                dest.join(format!("{from}.wasm")),
            )
            .unwrap();
            if let Ok(models) = std::fs::read_dir(src.join("models")) {
                for m in models {
                    let m = m.unwrap();
                    std::fs::copy(m.path(), dest.join("models").join(m.file_name())).unwrap();
                }
            }
            let manifest = match manifest {
                Some(m) => m.to_string(),
                None => std::fs::read_to_string(src.join("plugin.toml")).unwrap(),
            };
            std::fs::write(dest.join("plugin.toml"), manifest).unwrap();
        }
        let host = host();
        // As `runinfer serve` does: the operator's tenants file says who is who.
        config.quotas.apply_to(&host);
        let root = PluginRoot::open(host.clone(), dir.path(), |p| {
            dispatch_options(p, &RunOptions::default())
        });
        let served = root.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = router(root, host, config);
                serve(listener, app, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = ready_rx.recv().unwrap();
        Server {
            addr,
            root: served,
            stop: Some(stop),
            thread: Some(thread),
            dir,
        }
    }

    /// Sends one request; returns the status and the body (JSON, or text).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        call(self.addr, method, path, body)
    }

    /// The directory plugin `model` reads its signal from (granted as `/signal`).
    fn signal_dir(&self, model: &str) -> std::path::PathBuf {
        self.dir.path().join(model).join("signal")
    }

    /// Lets the handlers of `slow` that wait for the signal go on.
    fn signal(&self) {
        std::fs::write(self.signal_dir("slow").join("go"), "").unwrap();
    }

    /// Waits until the dispatcher of `model` is in the state `done` asks for: tests
    /// wait on events, never on time (the deadline only bounds a broken build).
    fn wait_for(&self, model: &str, what: &str, done: impl Fn(Load) -> bool) {
        let dispatcher = self.root.get(model).unwrap().dispatcher.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !done(dispatcher.load()) {
            assert!(
                std::time::Instant::now() < deadline,
                "{model}: never {what} ({:?})",
                dispatcher.load()
            );
            std::thread::yield_now();
        }
    }

    fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

/// Sends one request; returns the status and the body (JSON, or text).
fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status: u16 = response[9..12].parse().unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string())),
    )
}

fn infer_body(datatype: &str, shape: &[usize], data: Value) -> Value {
    json!({"id": "r1", "inputs": [{"name": "input", "datatype": datatype, "shape": shape, "data": data}]})
}

#[test]
fn health_metadata_and_inference() {
    let server = Server::start(
        &[
            ("iris", "iris", None),
            ("onnx-tensor", "onnx-tensor", None),
            ("text-stats", "text-stats", None),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(server.call("GET", "/v2/health/live", None).0, 200);
    assert_eq!(server.call("GET", "/v2/health/ready", None).0, 200);
    let (status, meta) = server.call("GET", "/v2", None);
    assert_eq!((status, meta["name"].as_str()), (200, Some("runinfer")));

    let (status, meta) = server.call("GET", "/v2/models/iris", None);
    assert_eq!(status, 200);
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "input", "datatype": "FP32", "shape": [-1, 4]})
    );
    // The handler's signature, not the model's: what `infer` returns.
    assert_eq!(
        meta["outputs"],
        json!([
            {"name": "label", "datatype": "BYTES", "shape": [-1], "parameters": {"content_type": "str"}},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ])
    );
    assert_eq!(
        server
            .call("GET", "/v2/models/iris/versions/1/ready", None)
            .0,
        200
    );
    // Triton's model configuration: the same signature, batching and instances in force.
    let (status, config) = server.call("GET", "/v2/models/iris/config", None);
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["max_batch_size"], 64);
    assert_eq!(
        config["input"],
        json!([{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}])
    );
    assert_eq!(
        config["output"],
        json!([
            {"name": "label", "data_type": "TYPE_STRING", "dims": [1], "reshape": {"shape": []}},
            {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [3]},
        ])
    );
    assert_eq!(
        config["dynamic_batching"]["max_queue_delay_microseconds"],
        10_000
    );
    assert_eq!(config["instance_group"][0]["kind"], "KIND_CPU");
    assert!(config["instance_group"][0]["count"].as_u64().unwrap() >= 1);
    let (status, _) = server.call("GET", "/v2/models/nope/config", None);
    assert_eq!(status, 404);
    let (status, err) = server.call("GET", "/v2/models/nope", None);
    assert_eq!(status, 404);
    assert_eq!(err["error"], "unknown model: 'nope'");
    assert_eq!(
        server.call("GET", "/v2/models/iris/versions/7", None).0,
        404
    );
    let (status, err) = server.call("GET", "/v3", None);
    assert_eq!(
        (status, err["error"].as_str()),
        (404, Some("no such route: /v3"))
    );

    // iris: 150 rows in one request, labels as onnxruntime's.
    let golden = read_jsonl("tests/golden/iris.jsonl");
    let flat: Vec<Value> = golden
        .iter()
        .flat_map(|g| g["example"].as_array().unwrap().clone())
        .collect();
    let (status, out) = server.call(
        "POST",
        "/v2/models/iris/infer",
        Some(&infer_body("FP32", &[150, 4], json!(flat))),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["id"], "r1");
    assert!(
        out["parameters"]["model_id"]
            .as_str()
            .unwrap()
            .starts_with("models/iris.onnx@")
    );
    // Exactly the declared outputs, in order, with their declared types.
    let outputs = out["outputs"].as_array().unwrap();
    let described: Vec<(&Value, &Value, &Value)> = outputs
        .iter()
        .map(|o| (&o["name"], &o["datatype"], &o["shape"]))
        .collect();
    assert_eq!(
        described,
        [
            (&json!("label"), &json!("BYTES"), &json!([150])),
            (&json!("probabilities"), &json!("FP32"), &json!([150, 3])),
        ]
    );
    // Every row back, label and probabilities as onnxruntime's.
    let probabilities = outputs[1]["data"].as_array().unwrap();
    let predictions: Vec<Value> = outputs[0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(probabilities.chunks(3))
        .map(|(label, p)| json!({"inference": {"label": label, "probabilities": p}}))
        .collect();
    assert_iris_matches_golden(&predictions, &golden, 1e-5);
    // A client asking for an output by the name the metadata gives gets just that.
    let mut body = infer_body("FP32", &[1, 4], golden[0]["example"].clone());
    body["outputs"] = json!([{"name": "label"}]);
    let (status, out) = server.call("POST", "/v2/models/iris/infer", Some(&body));
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["outputs"],
        json!([{"name": "label", "datatype": "BYTES", "shape": [1], "data": ["setosa"]}])
    );

    // Triton's statistics count what was served: 151 rows, every one a success,
    // queued, then computed in batches whose sizes add up to them.
    let (status, stats) = server.call("GET", "/v2/models/iris/stats", None);
    assert_eq!(status, 200, "{stats}");
    let iris = &stats["model_stats"][0];
    assert_eq!(
        (&iris["name"], &iris["version"]),
        (&json!("iris"), &json!("1"))
    );
    assert_eq!(iris["inference_count"], 151);
    let inference = &iris["inference_stats"];
    assert_eq!(inference["success"]["count"], 151);
    assert_eq!(inference["fail"]["count"], 0);
    assert_eq!(inference["queue"]["count"], 151);
    assert_eq!(inference["compute_infer"]["count"], 151);
    assert!(
        inference["success"]["ns"].as_u64().unwrap()
            >= inference["compute_infer"]["ns"].as_u64().unwrap() / 151
    );
    let batches = iris["batch_stats"].as_array().unwrap();
    let rows: u64 = batches
        .iter()
        .map(|b| b["batch_size"].as_u64().unwrap() * b["compute_infer"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, 151);
    assert_eq!(
        batches
            .iter()
            .map(|b| b["compute_infer"]["count"].as_u64().unwrap())
            .sum::<u64>(),
        iris["execution_count"].as_u64().unwrap()
    );
    let (_, all) = server.call("GET", "/v2/models/stats", None);
    let names: Vec<&str> = all["model_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["iris", "onnx-tensor", "text-stats"]);

    // onnx-tensor: named outputs as tensors, [2, 2, 3] in, nested data accepted.
    let golden = read_jsonl("tests/golden/tiny_mlp.jsonl");
    let body = infer_body(
        "FP32",
        &[2, 2, 3],
        json!([golden[0]["example"], golden[1]["example"]]),
    );
    let (status, out) = server.call(
        "POST",
        "/v2/models/onnx-tensor/versions/1/infer",
        Some(&body),
    );
    assert_eq!(status, 200, "{out}");
    let logits = out["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "logits")
        .unwrap();
    assert_eq!(logits["shape"], json!([2, 3]));
    assert_eq!(logits["datatype"], "FP32");
    let expected: Vec<Value> = golden[..2]
        .iter()
        .flat_map(|g| g["logits"].as_array().unwrap().clone())
        .collect();
    assert_all_close(&logits["data"], &json!(expected), 1e-5, "logits");

    // A text handler through BYTES.
    let (status, out) = server.call(
        "POST",
        "/v2/models/text-stats/infer",
        Some(&infer_body("BYTES", &[2], json!(["great and fast", "bad"]))),
    );
    assert_eq!(status, 200, "{out}");
    let first: Value =
        serde_json::from_str(out["outputs"][0]["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(first["label"], "positive");

    // Bad requests say why.
    let (status, err) = server.call(
        "POST",
        "/v2/models/iris/infer",
        Some(&infer_body("INT64", &[1, 4], json!([1, 2, 3, 4]))),
    );
    assert_eq!(
        (status, err["error"].as_str().unwrap()),
        (400, "input 'input': expected datatype FP32, got INT64")
    );
    let (status, err) = server.call(
        "POST",
        "/v2/models/iris/infer",
        Some(&infer_body("FP32", &[2, 4], json!([1, 2, 3]))),
    );
    assert_eq!(
        (status, err["error"].as_str().unwrap()),
        (400, "input 'input': shape [2, 4] needs 8 values, got 3")
    );
    let (status, _) = server.call(
        "POST",
        "/v2/models/iris/infer",
        Some(&json!({"inputs": "x"})),
    );
    assert_eq!(status, 400);

    // Metrics in Prometheus text.
    let (status, text) = server.call("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        text.as_str().unwrap().contains("iris_num_inferences_total"),
        "{text}"
    );
    server.stop();
}

const SLOW: &str = "name = \"slow\"\ncomponent = \"hostile.wasm\"\n[limits]\ninstances = 1\ntimeout_ms = 20000\nqueue_size = 2\n[batching]\nmax_batch_size = 1\n[grants]\ndirs = [{ path = \"signal\", guest = \"/signal\" }]\n";

#[test]
fn a_full_queue_is_refused_at_once_and_a_timeout_is_clear() {
    let short = SLOW
        .replace("\"slow\"", "\"slow-short\"")
        .replace("queue_size", "request_timeout_ms = 100\nqueue_size");
    let server = Server::start(
        &[
            ("slow", "hostile", Some(SLOW)),
            ("slow-short", "hostile", Some(&short)),
        ],
        Duration::from_secs(30),
    );
    // 1 instance, batches of 1, a queue of 2. The handler waits for the test's
    // signal. A's two rows go straight to the worker (one running, one formed ahead),
    // B's two fill the queue, so C is refused at once: a queued C would have been
    // answered 200 after the others.
    let send = |rows: usize| {
        let addr = server.addr;
        std::thread::spawn(move || {
            let body = infer_body("BYTES", &[rows], json!(vec!["wait"; rows]));
            call(addr, "POST", "/v2/models/slow/infer", Some(&body))
        })
    };
    let a = send(2);
    server.wait_for("slow", "took A's rows", |l| {
        l == Load {
            queued: 0,
            batches: 2,
        }
    });
    let b = send(2);
    server.wait_for("slow", "queued B's rows", |l| l.queued == 2);
    let (status, err) = server.call(
        "POST",
        "/v2/models/slow/infer",
        Some(&infer_body("BYTES", &[1], json!(["wait"]))),
    );
    assert_eq!(status, 503, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("queue (2 examples) has no room"),
        "{err}"
    );
    // Go: the admitted requests are answered in full.
    server.signal();
    for request in [a, b] {
        let (status, out) = request.join().unwrap();
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["outputs"][0]["data"], json!(["waited", "waited"]));
    }
    // More rows than the queue ever holds: a client error, not "retry later".
    let (status, err) = server.call(
        "POST",
        "/v2/models/slow/infer",
        Some(&infer_body("BYTES", &[3], json!(["ok", "ok", "ok"]))),
    );
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("3 rows are more than model 'slow' queues at once (2"),
        "{err}"
    );

    // A request may shorten its timeout (microseconds, as in Triton).
    let mut body = infer_body("BYTES", &[1], json!(["slow"]));
    body["parameters"] = json!({"timeout": 50_000});
    let (status, err) = server.call("POST", "/v2/models/slow/infer", Some(&body));
    assert_eq!(
        (status, err["error"].as_str().unwrap()),
        (503, "request timed out after 50 ms")
    );

    // The manifest's request timeout is the default for its model.
    let (status, err) = server.call(
        "POST",
        "/v2/models/slow-short/infer",
        Some(&infer_body("BYTES", &[1], json!(["slow"]))),
    );
    assert_eq!(
        (status, err["error"].as_str()),
        (503, Some("request timed out after 100 ms")),
        "{err}"
    );
    server.stop();
}

#[test]
fn shutdown_finishes_the_requests_in_flight() {
    let server = Server::start(&[("slow", "hostile", Some(SLOW))], Duration::from_secs(30));
    let signal = server.signal_dir("slow");
    let addr = server.addr;
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let body = infer_body("BYTES", &[2], json!(["wait", "wait"])).to_string();
        write!(
            stream,
            "POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    });
    // Stop once the request's rows are in the plugin's hands, waiting for the signal.
    server.wait_for("slow", "took the rows", |l| {
        l == Load {
            queued: 0,
            batches: 2,
        }
    });
    let stopping = std::thread::spawn(move || server.stop()); // waits for the server
    std::fs::write(signal.join("go"), "").unwrap();
    stopping.join().unwrap();
    let response = client.join().unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("waited"), "{response}");
}

/// The server's metrics, parsed.
fn metrics(server: &Server) -> std::collections::HashMap<String, f64> {
    let (status, text) = server.call("GET", "/metrics", None);
    assert_eq!(status, 200);
    prometheus_values(text.as_str().unwrap())
}

#[test]
fn requests_given_up_never_reach_the_handler() {
    let manifest = SLOW.replace("queue_size = 2", "queue_size = 8");
    let server = Server::start(
        &[("slow", "hostile", Some(&manifest))],
        Duration::from_secs(30),
    );
    // A's two rows hold the one instance (one running, one formed ahead).
    let addr = server.addr;
    let a = std::thread::spawn(move || {
        let body = infer_body("BYTES", &[2], json!(["wait", "wait"]));
        call(addr, "POST", "/v2/models/slow/infer", Some(&body))
    });
    server.wait_for("slow", "took A's rows", |l| l.batches == 2);
    // B's rows are queued behind A's, and B times out: they are dropped unrun.
    let mut b = infer_body("BYTES", &[2], json!(["metric-ok", "metric-ok"]));
    b["parameters"] = json!({"timeout": 20_000});
    let (status, err) = server.call("POST", "/v2/models/slow/infer", Some(&b));
    assert_eq!(status, 503, "{err}");
    // C's client goes away while its row is queued.
    let body = infer_body("BYTES", &[1], json!(["metric-ok"])).to_string();
    let mut c = TcpStream::connect(server.addr).unwrap();
    write!(
        c,
        "POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    server.wait_for("slow", "queued B's and C's rows", |l| l.queued == 3);
    assert_eq!(metrics(&server).get("slow_pending_requests"), Some(&2.0));
    drop(c);
    // Only once the server has seen C go (A alone pending) may A's rows finish, or
    // the batcher could reach C's row before its client's departure is noticed.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metrics(&server).get("slow_pending_requests") != Some(&1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "C's departure never noticed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    server.signal();
    let (status, out) = a.join().unwrap();
    assert_eq!(status, 200, "{out}");
    // The rows given up are counted once the batcher reaches them, and no handler
    // ran them: `metric-ok` would have counted a misdeed.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let values = metrics(&server);
        let cancelled = values.get("slow_cancelled_examples_total").copied();
        if cancelled == Some(3.0) {
            assert!(
                !values.keys().any(|k| k.contains("misdeeds")),
                "a cancelled row ran: {values:?}"
            );
            let ran: f64 = values
                .iter()
                .filter(|(k, _)| k.starts_with("slow_num_inferences_total"))
                .map(|(_, v)| v)
                .sum();
            assert_eq!(ran, 2.0, "{values:?}");
            assert_eq!(values.get("slow_pending_requests"), Some(&0.0));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cancelled rows not counted: {cancelled:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();
}

const KEYED: &str = "name = \"keyed\"\ncomponent = \"onnx-tensor.wasm\"\n[models]\nmodel = \"models/tiny_mlp.onnx\"\n[[key_models]]\nkeys = [\"de\", 7]\nmodels = { model = \"models/tiny_mlp_v2.onnx\" }\n";

#[test]
fn a_request_key_chooses_the_model_set() {
    let server = Server::start(
        &[("keyed", "onnx-tensor", Some(KEYED))],
        Duration::from_secs(30),
    );
    let base = read_jsonl("tests/golden/tiny_mlp.jsonl");
    let v2 = read_jsonl("tests/golden/tiny_mlp_v2.jsonl");
    for (key, golden, file) in [
        (None, &base, "tiny_mlp.onnx"),
        (Some(json!("de")), &v2, "tiny_mlp_v2.onnx"),
        (Some(json!(7)), &v2, "tiny_mlp_v2.onnx"),
        (Some(json!("fr")), &base, "tiny_mlp.onnx"),
    ] {
        let mut body = infer_body("FP32", &[1, 2, 3], json!([v2[3]["example"]]));
        if let Some(key) = &key {
            body["parameters"] = json!({"key": key});
        }
        let (status, out) = server.call("POST", "/v2/models/keyed/infer", Some(&body));
        assert_eq!(status, 200, "{out}");
        let model_id = out["parameters"]["model_id"].as_str().unwrap();
        assert!(
            model_id.starts_with(&format!("models/{file}@")),
            "{key:?}: {model_id}"
        );
        let logits = out["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "logits")
            .unwrap();
        // Both goldens hold the same examples; only the model differs.
        assert_eq!(golden[3]["example"], v2[3]["example"]);
        assert_all_close(&logits["data"], &golden[3]["logits"], 1e-5, "logits");
    }
    let mut body = infer_body("FP32", &[1, 2, 3], json!([v2[3]["example"]]));
    body["parameters"] = json!({"key": [1]});
    let (status, err) = server.call("POST", "/v2/models/keyed/infer", Some(&body));
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("string or an integer")
    );
    server.stop();
}

#[test]
fn repository_load_unload_and_warm_up() {
    let warm = "name = \"warm\"\ncomponent = \"hostile.wasm\"\nwarmup = \"signal/warmup.jsonl\"\n";
    let server = Server::start(
        &[("iris", "iris", None), ("warm", "hostile", Some(warm))],
        Duration::from_secs(30),
    );
    // No warm-up file yet: the plugin failed, with the reason, and is not ready.
    let (_, index) = server.call("POST", "/v2/repository/index", None);
    assert_eq!(
        index[0],
        json!({"name": "iris", "version": "1", "state": "READY", "reason": ""})
    );
    assert_eq!(index[1]["state"], "UNAVAILABLE", "{index}");
    assert!(
        index[1]["reason"]
            .as_str()
            .unwrap()
            .contains("warm-up failed"),
        "{index}"
    );
    let (status, _) = server.call("GET", "/v2/models/warm/ready", None);
    assert_eq!(status, 404);
    let (_, ready) = server.call(
        "POST",
        "/v2/repository/index",
        Some(&json!({"ready": true})),
    );
    assert_eq!(ready.as_array().unwrap().len(), 1, "{ready}");

    // A warm-up example that fails: load reports why.
    std::fs::write(
        server.signal_dir("warm").join("warmup.jsonl"),
        "\"panic\"\n",
    )
    .unwrap();
    let (status, err) = server.call("POST", "/v2/repository/models/warm/load", None);
    assert_eq!(status, 400, "{err}");
    let reason = err["error"].as_str().unwrap();
    assert!(
        reason.contains("warm-up failed") && reason.contains("panic"),
        "{reason}"
    );

    // Warm-up examples run before the plugin is ready: the handler's metric counts
    // them before any request.
    std::fs::write(
        server.signal_dir("warm").join("warmup.jsonl"),
        "\"metric-ok\"\n\n\"metric-ok\"\n",
    )
    .unwrap();
    let (status, out) = server.call("POST", "/v2/repository/models/warm/load", None);
    assert_eq!(status, 200, "{out}");
    let (status, _) = server.call("GET", "/v2/models/warm/ready", None);
    assert_eq!(status, 200);
    let misdeeds: f64 = metrics(&server)
        .iter()
        .filter(|(k, _)| k.ends_with("_misdeeds_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(misdeeds, 2.0);

    // Unload drains and stays unloaded (a rescan leaves it alone) until loaded.
    let (status, _) = server.call("POST", "/v2/repository/models/iris/unload", None);
    assert_eq!(status, 200);
    server.root.rescan();
    let (status, err) = server.call(
        "POST",
        "/v2/models/iris/infer",
        Some(&infer_body("FP32", &[1, 4], json!([5.1, 3.5, 1.4, 0.2]))),
    );
    assert_eq!(status, 404, "{err}");
    let (_, index) = server.call("POST", "/v2/repository/index", None);
    assert_eq!(
        index[0],
        json!({"name": "iris", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"})
    );
    let (status, _) = server.call("POST", "/v2/repository/models/iris/load", None);
    assert_eq!(status, 200);
    let (status, out) = server.call(
        "POST",
        "/v2/models/iris/infer",
        Some(&infer_body("FP32", &[1, 4], json!([5.1, 3.5, 1.4, 0.2]))),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outputs"][0]["data"], json!(["setosa"]));

    for path in [
        "/v2/repository/models/nope/load",
        "/v2/repository/models/nope/unload",
    ] {
        let (status, err) = server.call("POST", path, None);
        assert_eq!(status, 404, "{path}: {err}");
    }
    server.stop();
}

#[test]
fn a_tenant_over_its_request_rate_gets_429_with_the_reason() {
    let mut config = ServeConfig::default();
    config.quotas = std::sync::Arc::new(
        runinfer::quota::Quotas::parse(
            "[tenants.metered]\nrequests_per_sec = 0.001\nplugins = [\"metered-iris\"]\n",
        )
        .unwrap(),
    );
    let iris = |name: &str, tenant: &str| {
        format!(
            "name = \"{name}\"\ncomponent = \"iris.wasm\"\ntenant = \"{tenant}\"\n[models]\niris = \"models/iris.onnx\"\n"
        )
    };
    let (metered, free) = (iris("metered-iris", "metered"), iris("free-iris", "free"));
    // Claims the metered tenant, which the operator closed to its listed plugins.
    let sneaky = iris("sneaky-iris", "metered");
    let server = Server::start_with(
        &[
            ("metered-iris", "iris", Some(&metered)),
            ("free-iris", "iris", Some(&free)),
            ("sneaky-iris", "iris", Some(&sneaky)),
        ],
        config,
    );
    let body = infer_body(
        "FP32",
        &[2, 4],
        json!([5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]),
    );
    // The impostor neither uses up the metered tenant's quota nor is counted as it.
    for _ in 0..2 {
        let (status, out) = server.call("POST", "/v2/models/sneaky-iris/infer", Some(&body));
        assert_eq!(status, 200, "{out}");
    }
    // A bucket of one request, refilled once in 1000 s: the second is refused.
    let (status, out) = server.call("POST", "/v2/models/metered-iris/infer", Some(&body));
    assert_eq!(status, 200, "{out}");
    let (status, err) = server.call("POST", "/v2/models/metered-iris/infer", Some(&body));
    assert_eq!(status, 429, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("tenant `metered` is over its quota of 0.001 requests/s"),
        "{err}"
    );
    // Another tenant is not affected.
    for _ in 0..3 {
        let (status, out) = server.call("POST", "/v2/models/free-iris/infer", Some(&body));
        assert_eq!(status, 200, "{out}");
    }
    let values = metrics(&server);
    let refused = |what: &str, tenant: &str| {
        values
            .get(&format!(
                "runinfer_tenant_refused_{what}_total{{tenant=\"{tenant}\"}}"
            ))
            .copied()
    };
    assert_eq!(refused("requests", "metered"), Some(1.0));
    assert_eq!(refused("examples", "metered"), Some(2.0));
    assert_eq!(refused("requests", "free"), None);
    // Accounting counts what ran: 2 rows of metered, 6 of free.
    let ran =
        |tenant: &str| values[&format!("runinfer_tenant_examples_total{{tenant=\"{tenant}\"}}")];
    assert_eq!((ran("metered"), ran("free")), (2.0, 6.0));
    assert_eq!(ran("~sneaky-iris"), 4.0);
    // The status says the same, per tenant, with what the operator set.
    let (status, tenants) = server.call("GET", "/v2/tenants", None);
    assert_eq!(status, 200, "{tenants}");
    let tenant = |name: &str| {
        tenants["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {tenants}"))
            .clone()
    };
    let metered = tenant("metered");
    assert_eq!(metered["plugins"], json!(["metered-iris"]), "{metered}");
    assert_eq!(metered["quota"]["requests_per_sec"], 0.001);
    assert_eq!(metered["weight"], 1);
    assert_eq!(metered["in_flight"], 0);
    assert_eq!(
        (&metered["examples"], &metered["handler_calls"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(
        (&metered["refused_requests"], &metered["refused_examples"]),
        (&json!(1), &json!(2))
    );
    assert_eq!(metered["core_slots"]["running"], 0);
    let sneaky = tenant("~sneaky-iris");
    assert_eq!(sneaky["plugins"], json!(["sneaky-iris"]), "{sneaky}");
    assert_eq!(
        (&sneaky["examples"], &sneaky["quota"]["requests_per_sec"]),
        (&json!(4), &Value::Null)
    );
    let free = tenant("free");
    assert_eq!(
        (&free["examples"], &free["refused_requests"]),
        (&json!(6), &json!(0))
    );
    for t in [&metered, &sneaky, &free] {
        let cpu = t["handler_cpu_seconds"].as_f64().unwrap();
        assert!(
            cpu > 0.0 && t["core_slots"]["used_seconds"].as_f64().unwrap() > 0.0,
            "{t}"
        );
    }
    server.stop();
}
