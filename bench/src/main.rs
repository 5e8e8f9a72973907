//! Measures the runinfer host on the bundled iris plugin, side by side with a native
//! Rust loop that calls tract directly on the same model, inputs and batch sizes.
//!
//!   cargo run --release -p runinfer-bench -- [--reps N] [--lines N] [--suite S]
//!
//! Prints a Markdown report. `foundation`: plugin load time (compiled and cached),
//! instance start time, the handler call alone (decoded examples in, values out),
//! and `run` throughput vs the native loop (median of N alternating runs); `calls`:
//! only the handler call at batch 32 (for profiling). `runtime`: throughput of `run` and open-loop latency through
//! the dispatcher against batch size and max wait, on iris and onnx-tensor.

use anyhow::{Context, Result};
use runinfer::compile::{CompileCache, CompileSource};
use runinfer::manifest::BatchingConfig;
use runinfer::run::{RunOptions, run_jsonl};
use runinfer::{Host, HostConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod engines;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Args {
    reps: usize,
    lines: usize,
    suite: String,
    /// The engines suite's models (all when empty).
    models: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        reps: 7,
        lines: 60_000,
        suite: "all".into(),
        models: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--reps" => args.reps = value.parse()?,
            "--lines" => args.lines = value.parse()?,
            "--suite" => args.suite = value,
            "--models" => args.models = value.split(',').map(str::to_string).collect(),
            other => anyhow::bail!(
                "unknown option {other} (use --reps N, --lines N, --suite foundation|calls|runtime|sandbox|engines|signature|all, --models iris,ppocr-cls,minilm)"
            ),
        }
    }
    Ok(args)
}

fn host(cache: &Path) -> Result<Host> {
    Host::new({
        let mut value = HostConfig::default();
        value.compile_cache = Some(CompileCache::new(cache));
        value
    })
}

/// The examples of examples/iris.jsonl, repeated to `lines` lines.
fn input(root: &Path, lines: usize) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(root.join("examples/iris.jsonl"))?;
    let rows: Vec<&str> = text.lines().collect();
    Ok((0..lines)
        .map(|i| format!("{}\n", rows[i % rows.len()]))
        .collect::<String>()
        .into_bytes())
}

/// The limit: the same job written directly against tract, no wasm, no plugin.
struct Native {
    plan: Arc<TypedRunnableModel>,
    labels: [&'static str; 3],
}

impl Native {
    fn load(path: &Path) -> Result<Native> {
        let mut model = tract_onnx::onnx().model_for_path(path)?;
        let batch = model.symbols.sym("N");
        model.set_input_fact(0, f32::fact([TDim::Sym(batch), 4.into()]).into())?;
        let plan = model.into_optimized()?.into_runnable()?;
        Ok(Native {
            plan,
            labels: ["setosa", "versicolor", "virginica"],
        })
    }

    /// Reads JSONL examples, runs batches of `batch`, writes JSONL predictions.
    fn run(&self, input: &[u8], batch: usize, out: &mut Vec<u8>) -> Result<usize> {
        #[derive(serde::Serialize)]
        struct Inference<'a> {
            label: &'a str,
            probabilities: &'a [f32],
        }
        #[derive(serde::Serialize)]
        struct Prediction<'a> {
            example: &'a Value,
            inference: Inference<'a>,
            model_id: &'a str,
        }
        let lines: Vec<&[u8]> = input
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let mut count = 0;
        for chunk in lines.chunks(batch) {
            let examples: Vec<Value> = chunk
                .iter()
                .map(|l| serde_json::from_slice(l))
                .collect::<Result<_, _>>()?;
            let mut features = Vec::with_capacity(chunk.len() * 4);
            for e in &examples {
                let row: Vec<f32> = serde_json::from_value(e.clone())?;
                anyhow::ensure!(row.len() == 4, "bad example");
                features.extend(row);
            }
            let x = Tensor::from_shape(&[chunk.len(), 4], &features)?;
            let outputs = self.plan.run(tvec![x.into_tvalue()])?;
            let labels = outputs[0].cast_to::<i64>()?;
            let labels = labels.try_as_plain_ram()?;
            let labels = labels.as_slice::<i64>()?;
            let probs = outputs[1].try_as_plain_ram()?;
            let probs = probs.as_slice::<f32>()?;
            for (i, example) in examples.iter().enumerate() {
                let p = Prediction {
                    example,
                    inference: Inference {
                        label: self.labels[labels[i] as usize],
                        probabilities: &probs[i * 3..i * 3 + 3],
                    },
                    model_id: "models/iris.onnx",
                };
                serde_json::to_writer(&mut *out, &p)?;
                out.push(b'\n');
                count += 1;
            }
        }
        Ok(count)
    }
}

fn foundation(args: &Args) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugin_dir = root.join("plugins/iris");
    anyhow::ensure!(
        plugin_dir.join("iris.wasm").exists(),
        "plugins/iris/iris.wasm is missing: build the host first (cargo build)"
    );

    // Plugin load: compiled (empty cache) vs cached (second start), new host each time.
    let (mut compiled, mut cached, mut compile_only, mut cache_only) =
        (vec![], vec![], vec![], vec![]);
    let load_reps = if args.suite == "calls" { 1 } else { args.reps };
    for _ in 0..load_reps {
        let cache = tempfile::tempdir()?;
        for (total, part, expect) in [
            (&mut compiled, &mut compile_only, CompileSource::Compiled),
            (&mut cached, &mut cache_only, CompileSource::Cache),
        ] {
            let host = host(cache.path())?;
            let start = Instant::now();
            let plugin = host.load_plugin(&plugin_dir)?;
            total.push(ms(start.elapsed()));
            anyhow::ensure!(plugin.load_report().compile.source == expect);
            part.push(ms(plugin.load_report().compile.duration));
        }
    }

    // Instance start: instantiate from InstancePre + init + load-model.
    let cache = tempfile::tempdir()?;
    let host = host(cache.path())?;
    let plugin = std::sync::Arc::new(host.load_plugin(&plugin_dir)?);
    let mut starts = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        let instance = plugin.instantiate()?;
        starts.push(start.elapsed().as_secs_f64() * 1e6);
        drop(instance);
    }

    // The handler call alone (decoded examples in, inferences out), no pipeline.
    let decoded: Vec<Value> = std::str::from_utf8(&input(&root, 3200)?)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let set = plugin.model_set(runinfer::plugin::Route::Base)?;
    let mut call_rates = Vec::new();
    let call_batches: &[usize] = if args.suite == "calls" {
        &[32]
    } else {
        &[1, 32]
    };
    for &batch in call_batches {
        let mut rates = Vec::new();
        for _ in 0..args.reps {
            let batches: Vec<Vec<runinfer::value::Value>> = decoded
                .chunks(batch)
                .map(|c| {
                    c.iter()
                        .map(|v| {
                            runinfer::decode::decode_example(v, &plugin.info().signature.inputs)
                                .unwrap()
                        })
                        .collect()
                })
                .collect();
            let start = Instant::now();
            let mut n = 0;
            for b in batches {
                n += plugin.run_batch(&set, b, &[])?.values.len();
            }
            rates.push(n as f64 / start.elapsed().as_secs_f64());
        }
        call_rates.push((batch, median(rates)));
    }
    if args.suite == "calls" {
        println!("handler calls alone, batch 32: {:.0} ex/s", call_rates[0].1);
        return Ok(());
    }

    // Throughput: runinfer run (wasm handler) vs the native loop, alternating.
    let data = input(&root, args.lines)?;
    let native = Native::load(&plugin_dir.join("models/iris.onnx"))?;
    let mut rows = Vec::new();
    for batch in [1u32, 32] {
        // The same job as the native loop: one instance (the loop is one thread) and
        // exact chunks of `batch` lines (batches flush on size or at the end of the
        // input only, never on the handler's wait).
        let options = {
            let mut value = RunOptions::default();
            value.batching = BatchingConfig {
                max_batch_size: Some(batch),
                min_batch_size: Some(batch),
                max_batch_duration_ms: Some(600_000),
            };
            value.instances = Some(1);
            value
        };
        let (mut wasm, mut direct) = (vec![], vec![]);
        for _ in 0..args.reps {
            let mut out = Vec::with_capacity(data.len() * 4);
            let mut dead = Vec::new();
            let input = std::io::Cursor::new(data.clone());
            let start = Instant::now();
            let summary = run_jsonl(&plugin, input, &mut out, &mut dead, &options)?;
            wasm.push(summary.predictions as f64 / start.elapsed().as_secs_f64());
            anyhow::ensure!(summary.predictions as usize == args.lines && dead.is_empty());

            let mut out = Vec::with_capacity(data.len() * 4);
            let start = Instant::now();
            let n = native.run(&data, batch as usize, &mut out)?;
            direct.push(n as f64 / start.elapsed().as_secs_f64());
        }
        rows.push((batch, median(wasm), median(direct)));
    }

    println!("## runinfer foundation benchmark\n");
    println!(
        "`cargo run --release -p runinfer-bench -- --reps {} --lines {}` (median of {} runs; iris MLP, tract 0.23.9)\n",
        args.reps, args.lines, args.reps
    );
    println!("| plugin load (new host) | total ms | component ms |");
    println!("|---|---|---|");
    println!(
        "| first start (compile) | {:.2} | {:.2} |",
        median(compiled),
        median(compile_only)
    );
    println!(
        "| second start (cache) | {:.2} | {:.2} |",
        median(cached),
        median(cache_only)
    );
    println!(
        "\ninstance start (instantiate + init + load-model): median {:.1} µs over 200\n",
        median(starts)
    );
    for (batch, rate) in &call_rates {
        println!(
            "handler calls alone, batch {batch}: {rate:.0} ex/s (decoded examples in, inference values out)\n"
        );
    }
    println!(
        "Same job both ways: parse JSONL, run iris in exact chunks of `batch` lines, write JSONL; \
         one thread each (`run` with 1 instance, batches flushed on size only).\n"
    );
    println!(
        "| batch | runinfer run (wasm handler) ex/s | native tract loop ex/s | runinfer / native |"
    );
    println!("|---|---|---|---|");
    for (batch, wasm, direct) in rows {
        println!(
            "| {batch} | {wasm:.0} | {direct:.0} | {:.2} |",
            wasm / direct
        );
    }
    Ok(())
}

/// Throughput of `run` (closed loop: the whole file as fast as it goes) and latency
/// of examples offered at a fixed rate (open loop), against batch size and max wait.
fn runtime(args: &Args) -> Result<()> {
    use runinfer::decode::decode_example;
    use runinfer::dispatch::BatchPolicy;
    use runinfer::dispatch::{DispatchOptions, Dispatcher};

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cache = tempfile::tempdir()?;
    let host = host(cache.path())?;
    let instances = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("## runinfer runtime benchmark\n");
    println!(
        "`cargo run --release -p runinfer-bench -- --suite runtime --reps {} --lines {}`; {instances} instances; \
         throughput: median of {} runs of `run` over {} lines; latency: examples offered at a fixed rate for 1 s, \
         time from submit to result (p50/p99)\n",
        args.reps, args.lines, args.reps, args.lines
    );
    println!(
        "| plugin | max batch | max wait ms | run ex/s | offered ex/s | p50 µs | p99 µs | mean batch |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, data_file, rate) in [
        ("iris", "examples/iris.jsonl", 20_000.0),
        ("onnx-tensor", "examples/tensors.jsonl", 20_000.0),
    ] {
        let plugin = std::sync::Arc::new(host.load_plugin(&root.join("plugins").join(name))?);
        let rows: Vec<String> = std::fs::read_to_string(root.join(data_file))?
            .lines()
            .map(str::to_string)
            .collect();
        let data: Vec<u8> = (0..args.lines)
            .map(|i| format!("{}\n", rows[i % rows.len()]))
            .collect::<String>()
            .into_bytes();
        let examples: Vec<Value> = rows
            .iter()
            .map(|r| serde_json::from_str(r))
            .collect::<Result<_, _>>()?;
        for max_batch in [1u32, 8, 32, 128] {
            for wait_ms in [1u32, 10] {
                let options = {
                    let mut value = RunOptions::default();
                    value.batching = BatchingConfig {
                        max_batch_size: Some(max_batch),
                        max_batch_duration_ms: Some(wait_ms),
                        min_batch_size: Some(1),
                    };
                    value.instances = Some(instances);
                    value
                };
                let mut rates = Vec::new();
                for _ in 0..args.reps {
                    let (mut out, mut dead) = (Vec::new(), Vec::new());
                    let input = std::io::Cursor::new(data.clone());
                    let start = Instant::now();
                    let summary = run_jsonl(&plugin, input, &mut out, &mut dead, &options)?;
                    anyhow::ensure!(summary.predictions as usize == args.lines);
                    rates.push(summary.predictions as f64 / start.elapsed().as_secs_f64());
                }

                // Open loop: one example every 1/rate s for 1 s.
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()?;
                let policy = BatchPolicy {
                    min_batch_size: 1,
                    max_batch_size: max_batch as usize,
                    max_batch_duration: Duration::from_millis(wait_ms.into()),
                    adaptive_target: None,
                };
                let (latencies, batches) = runtime.block_on(async {
                    let dispatcher = Dispatcher::new(
                        plugin.clone(),
                        DispatchOptions::new(policy, instances, 100_000),
                    )
                    .expect("worker threads start");
                    let count = rate as usize;
                    let period = Duration::from_secs_f64(1.0 / rate);
                    let start = tokio::time::Instant::now();
                    let mut waits = Vec::with_capacity(count);
                    for i in 0..count {
                        tokio::time::sleep_until(start + period * i as u32).await;
                        let value = decode_example(
                            &examples[i % examples.len()],
                            &plugin.info().signature.inputs,
                        )
                        .map_err(|e| anyhow::anyhow!(e))?;
                        let submitted = Instant::now();
                        let reply = dispatcher.submit(None, value).await;
                        waits.push(tokio::spawn(async move {
                            let _ = reply.await;
                            submitted.elapsed()
                        }));
                    }
                    let mut latencies = Vec::with_capacity(count);
                    for w in waits {
                        latencies.push(w.await?.as_secs_f64() * 1e6);
                    }
                    dispatcher.close();
                    let (batches, _) = dispatcher.batch_counts();
                    anyhow::Ok((latencies, batches))
                })?;
                let mut sorted = latencies.clone();
                sorted.sort_by(|a, b| a.total_cmp(b));
                let pct = |p: f64| sorted[((sorted.len() - 1) as f64 * p) as usize];
                println!(
                    "| {name} | {max_batch} | {wait_ms} | {:.0} | {rate:.0} | {:.0} | {:.0} | {:.1} |",
                    median(rates),
                    pct(0.5),
                    pct(0.99),
                    latencies.len() as f64 / batches.max(1) as f64
                );
            }
        }
    }
    Ok(())
}

/// Latencies (µs, sorted) of iris examples offered at `rate` for `secs` through a
/// dispatcher.
fn open_loop(plugin: &std::sync::Arc<runinfer::Plugin>, rate: f64, secs: f64) -> Result<Vec<f64>> {
    use runinfer::dispatch::BatchPolicy;
    use runinfer::dispatch::{DispatchOptions, Dispatcher};
    let example = runinfer::decode::decode_example(
        &serde_json::json!([6.3, 3.3, 6.0, 2.5]),
        &plugin.info().signature.inputs,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut latencies = runtime.block_on(async {
        let dispatcher = Dispatcher::new(
            plugin.clone(),
            DispatchOptions::new(
                BatchPolicy {
                    min_batch_size: 1,
                    max_batch_size: 8,
                    max_batch_duration: Duration::from_millis(1),
                    adaptive_target: None,
                },
                1,
                100_000,
            ),
        )
        .expect("worker threads start");
        let count = (rate * secs) as usize;
        let period = Duration::from_secs_f64(1.0 / rate);
        let start = tokio::time::Instant::now();
        let mut waits = Vec::with_capacity(count);
        for i in 0..count {
            tokio::time::sleep_until(start + period * i as u32).await;
            let value = match &example {
                runinfer::value::Value::Tensor(t) => runinfer::value::Value::Tensor(t.clone()),
                _ => unreachable!("iris takes tensors"),
            };
            let submitted = Instant::now();
            let reply = dispatcher.submit(None, value).await;
            waits.push(tokio::spawn(async move {
                let ok = matches!(reply.await, Ok(Ok(_)));
                (ok, submitted.elapsed())
            }));
        }
        let mut latencies = Vec::with_capacity(count);
        for w in waits {
            let (ok, latency) = w.await?;
            anyhow::ensure!(ok, "a well-behaved example failed");
            latencies.push(latency.as_secs_f64() * 1e6);
        }
        dispatcher.close();
        anyhow::Ok(latencies)
    })?;
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(latencies)
}

/// Sandbox costs: instantiate time with and without the pooling allocator, and the
/// latency of a well-behaved plugin alone and next to one that loops.
fn sandbox(args: &Args) -> Result<()> {
    use runinfer::PoolingLimits;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cache = tempfile::tempdir()?;
    println!("## runinfer sandbox benchmark\n");
    println!(
        "`cargo run --release -p runinfer-bench -- --suite sandbox --reps {}`\n",
        args.reps
    );
    println!("| allocator | instance start µs (median of 1000) | p99 µs |");
    println!("|---|---|---|");
    for (name, pooling) in [
        ("on demand", None),
        ("pooling", Some(PoolingLimits::default())),
    ] {
        let host = Host::new({
            let mut value = HostConfig::default();
            value.compile_cache = Some(CompileCache::new(cache.path()));
            value.pooling = pooling;
            value
        })?;
        let plugin = host.load_plugin(&root.join("plugins/iris"))?;
        let mut starts = Vec::new();
        for _ in 0..1000 {
            let start = Instant::now();
            drop(plugin.instantiate()?);
            starts.push(start.elapsed().as_secs_f64() * 1e6);
        }
        starts.sort_by(|a, b| a.total_cmp(b));
        println!("| {name} | {:.1} | {:.1} |", starts[500], starts[990]);
    }

    // A hostile plugin that loops until its 200 ms limit, again and again.
    let hostile_dir = tempfile::tempdir()?;
    std::fs::copy(
        root.join("tests/plugins/hostile/hostile.wasm"),
        hostile_dir.path().join("hostile.wasm"),
    )
    .context("tests/plugins/hostile/hostile.wasm (built by `cargo build`)")?;
    std::fs::write(
        hostile_dir.path().join("plugin.toml"),
        "name = \"hostile\"\ncomponent = \"hostile.wasm\"\n[limits]\ntimeout_ms = 200\ninstances = 1\n",
    )?;
    let host = host(cache.path())?;
    let iris = std::sync::Arc::new(host.load_plugin(&root.join("plugins/iris"))?);
    let hostile = std::sync::Arc::new(host.load_plugin(hostile_dir.path())?);
    let rate = 2000.0;
    println!(
        "\nwell-behaved iris, {rate:.0} examples/s offered for 3 s, 1 instance, max batch 8, max wait 1 ms:\n"
    );
    println!("| next to it | p50 µs | p99 µs | max µs | hostile calls stopped |");
    println!("|---|---|---|---|---|");
    for _ in 0..args.reps.min(3) {
        let alone = open_loop(&iris, rate, 3.0)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let looping = {
            let (hostile, stop) = (hostile.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut stopped = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let input = std::io::Cursor::new(b"\"loop\"\n".to_vec());
                    let (mut out, mut dead) = (Vec::new(), Vec::new());
                    if let Ok(s) =
                        run_jsonl(&hostile, input, &mut out, &mut dead, &RunOptions::default())
                    {
                        stopped += s.dead_letters;
                    }
                }
                stopped
            })
        };
        let busy = open_loop(&iris, rate, 3.0)?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let stopped = looping
            .join()
            .map_err(|_| anyhow::anyhow!("looping thread panicked"))?;
        let p = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q) as usize];
        println!(
            "| nothing | {:.0} | {:.0} | {:.0} | - |",
            p(&alone, 0.5),
            p(&alone, 0.99),
            alone[alone.len() - 1]
        );
        println!(
            "| a plugin looping into its time limit | {:.0} | {:.0} | {:.0} | {stopped} |",
            p(&busy, 0.5),
            p(&busy, 0.99),
            busy[busy.len() - 1]
        );
    }
    Ok(())
}

/// What checking one inference against the declared outputs costs, next to what the
/// whole per-example path of `run` costs in the same process (iris, batch 32).
fn signature_check(args: &Args) -> Result<()> {
    use runinfer::contract::{FieldKind, FieldSpec, TensorSpec, ValueKind};
    use runinfer::tensor::{DType, Tensor};
    use runinfer::value::{Field, Value as Inference};
    let f32_tensor = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        Tensor::from_f32(shape.to_vec(), &vec![0.5; n])
    };
    let spec = |name: &str, shape: &[Option<u64>]| FieldSpec {
        name: name.into(),
        kind: FieldKind::Tensor(TensorSpec {
            dtype: DType::F32,
            shape: Some(shape.to_vec()),
        }),
    };
    let cases: Vec<(&str, ValueKind, Inference)> = vec![
        (
            "one tensor, f32 [3]",
            ValueKind::Tensor(TensorSpec {
                dtype: DType::F32,
                shape: Some(vec![Some(3)]),
            }),
            Inference::Tensor(f32_tensor(&[3])?),
        ),
        (
            "iris: label text, probabilities f32 [3]",
            ValueKind::Fields {
                fields: vec![
                    FieldSpec {
                        name: "label".into(),
                        kind: FieldKind::Text,
                    },
                    spec("probabilities", &[Some(3)]),
                ],
            },
            Inference::Fields(vec![
                ("label".into(), Field::Text("setosa".into())),
                ("probabilities".into(), Field::Tensor(f32_tensor(&[3])?)),
            ]),
        ),
        (
            "MiniLM: last_hidden_state f32 [?, 384], sentence_embedding f32 [384]",
            ValueKind::Fields {
                fields: vec![
                    spec("last_hidden_state", &[None, Some(384)]),
                    spec("sentence_embedding", &[Some(384)]),
                ],
            },
            Inference::Fields(vec![
                (
                    "last_hidden_state".into(),
                    Field::Tensor(f32_tensor(&[16, 384])?),
                ),
                (
                    "sentence_embedding".into(),
                    Field::Tensor(f32_tensor(&[384])?),
                ),
            ]),
        ),
    ];
    const CHECKS: u32 = 1_000_000;
    let check_ns = |kind: &ValueKind, value: &Inference| -> Result<f64> {
        let mut runs = Vec::new();
        for _ in 0..args.reps {
            let start = Instant::now();
            for _ in 0..CHECKS {
                std::hint::black_box(kind.check(std::hint::black_box(value)))
                    .map_err(anyhow::Error::msg)?;
            }
            runs.push(start.elapsed().as_nanos() as f64 / f64::from(CHECKS));
        }
        Ok(median(runs))
    };

    // The whole per-example path, for scale: `run` on iris in process, batch 32.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cache = tempfile::tempdir()?;
    let plugin = Arc::new(host(cache.path())?.load_plugin(&root.join("plugins/iris"))?);
    let lines = 60_000;
    let input = input(&root, lines)?;
    let mut per_example = Vec::new();
    for _ in 0..args.reps {
        let options = {
            let mut value = RunOptions::default();
            value.batching = BatchingConfig {
                max_batch_size: Some(32),
                min_batch_size: Some(32),
                max_batch_duration_ms: Some(600_000),
            };
            value.instances = Some(1);
            value
        };
        let (mut out, mut dead) = (Vec::new(), Vec::new());
        let start = Instant::now();
        let summary = run_jsonl(
            &plugin,
            std::io::Cursor::new(input.clone()),
            &mut out,
            &mut dead,
            &options,
        )?;
        anyhow::ensure!(summary.predictions == lines as u64, "{summary:?}");
        per_example.push(start.elapsed().as_nanos() as f64 / lines as f64);
    }
    let run_ns = median(per_example);
    println!("### Checking inferences against the declared outputs");
    println!();
    println!(
        "`ValueKind::check` on one inference, {CHECKS} times in a loop, median of {} runs; the share is of the whole per-example time of `run` on iris (JSONL in, batch 32, 1 instance, JSONL out: {run_ns:.0} ns per example in the same run). The check reads names, dtypes and shapes, never the data, so its cost does not grow with tensor size.",
        args.reps
    );
    println!();
    println!("| declared outputs | ns per inference | share of `run` per example |");
    println!("|---|---:|---:|");
    for (name, kind, value) in &cases {
        let ns = check_ns(kind, value)?;
        println!("| {name} | {ns:.0} | {:.1}% |", ns / run_ns * 100.0);
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if args.suite == "signature" {
        return signature_check(&args);
    }
    if args.suite == "sandbox" {
        return sandbox(&args);
    }
    if args.suite == "engines" {
        return engines::engines(&args);
    }
    if matches!(args.suite.as_str(), "foundation" | "all" | "calls") {
        foundation(&args)?;
        println!();
    }
    if matches!(args.suite.as_str(), "runtime" | "all") {
        runtime(&args)?;
        println!();
    }
    if args.suite == "all" {
        sandbox(&args)?;
    }
    Ok(())
}
