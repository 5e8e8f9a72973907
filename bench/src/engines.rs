//! `--suite engines` (P1 of bench/RESULTS.md): `run` through a wasm handler against a
//! native Rust loop that calls the same engine directly, on the same model, input
//! file and batch size, for tract and onnxruntime; and the time to start an instance.
//!
//! Models: the iris MLP (its own handler), the PP-OCR text-direction classifier and
//! MiniLM (the generic onnx-tensor handler); `scripts/fetch-models.sh` and
//! `scripts/install-onnxruntime.sh` must have run (bench/run.sh does). The input
//! files are written to `target/bench/data/` for the other benchmarks to reuse.

use crate::{Args, median};
use anyhow::{Context, Result};
use runinfer::manifest::BatchingConfig;
use runinfer::model::{BackendKind, InputShapes, LoadedModel};
use runinfer::run::{RunOptions, run_jsonl};
use runinfer::tensor::{DType, Tensor};
use runinfer::{Host, HostConfig};
use serde_json::value::RawValue;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// One benchmark model: its file, the handler that runs it and its input.
pub struct BenchModel {
    pub name: &'static str,
    /// The plugin whose component runs it (`iris` or `onnx-tensor`).
    handler: &'static str,
    /// Extra manifest lines (`[args]`).
    manifest_extra: &'static str,
    /// `input_shapes` of its manifest entry: PP-OCR leaves height and width open,
    /// which tract plans best when fixed (README, Engines).
    input_shapes: &'static [(&'static str, &'static [i64])],
    pub file: PathBuf,
    /// Input lines for the throughput runs at batch 1 and at batch 32.
    lines: (usize, usize),
    dtype: DType,
}

pub fn models(root: &Path) -> Vec<BenchModel> {
    let fetched = root.join("target/models");
    vec![
        BenchModel {
            name: "iris",
            handler: "iris",
            manifest_extra: "",
            input_shapes: &[],
            file: root.join("plugins/iris/models/iris.onnx"),
            lines: (20_000, 60_000),
            dtype: DType::F32,
        },
        BenchModel {
            name: "ppocr-cls",
            handler: "onnx-tensor",
            manifest_extra: "",
            input_shapes: &[("x", &[-1, 3, 48, 192])],
            file: fetched.join("ppocr_cls.onnx"),
            lines: (256, 256),
            dtype: DType::F32,
        },
        BenchModel {
            name: "minilm",
            handler: "onnx-tensor",
            manifest_extra: "",
            input_shapes: &[],
            file: fetched.join("minilm.onnx"),
            lines: (128, 256),
            dtype: DType::I64,
        },
    ]
}

/// A small deterministic generator, so that every run and every tool reads the
/// same examples.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() % 10_000) as f64 / 10_000.0
    }
}

/// `lines` JSONL examples for `model`: iris rows from examples/, text-line-like
/// 3x48x192 images scaled to [-1, 1] as PP-OCR feeds its classifier, or 32 token
/// ids ([CLS] words [SEP], padded with 0) for MiniLM.
fn example_lines(root: &Path, model: &str, lines: usize) -> Result<String> {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut out = String::new();
    match model {
        "iris" => {
            let text = std::fs::read_to_string(root.join("examples/iris.jsonl"))?;
            let rows: Vec<&str> = text.lines().collect();
            for i in 0..lines {
                out.push_str(rows[i % rows.len()]);
                out.push('\n');
            }
        }
        "ppocr-cls" => {
            for i in 0..lines {
                let flipped = i % 2 == 1;
                let mut image = Vec::with_capacity(3);
                for _ in 0..3 {
                    let mut channel = Vec::with_capacity(48);
                    for y in 0..48usize {
                        let row = if flipped { 47 - y } else { y };
                        let pixels: Vec<String> = (0..192usize)
                            .map(|x| {
                                let stroke = (8..34).contains(&row) && (x / 6 + i) % 3 != 0;
                                let v = if stroke { 0.1 } else { 0.9 } + 0.1 * rng.unit();
                                format!("{:.3}", v * 2.0 - 1.0)
                            })
                            .collect();
                        channel.push(format!("[{}]", pixels.join(",")));
                    }
                    image.push(format!("[{}]", channel.join(",")));
                }
                out.push_str(&format!("[{}]\n", image.join(",")));
            }
        }
        "minilm" => {
            for _ in 0..lines {
                let words = 8 + (rng.next() % 23) as usize;
                let mut ids = vec![101u64];
                ids.extend((0..words).map(|_| 1996 + rng.next() % 27_000));
                ids.push(102);
                ids.resize(32, 0);
                let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
                out.push_str(&format!("[{}]\n", ids.join(",")));
            }
        }
        other => anyhow::bail!("no example generator for {other}"),
    }
    Ok(out)
}

/// Writes the example files once (`target/bench/data/<model>.jsonl`, the larger
/// line count) and returns the path.
pub fn data_file(root: &Path, model: &BenchModel) -> Result<PathBuf> {
    let dir = root.join("target/bench/data");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}.jsonl", model.name));
    let lines = model.lines.0.max(model.lines.1);
    let text = example_lines(root, model.name, lines)?;
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(&path, text)?;
    }
    Ok(path)
}

/// A plugin directory for `model` on `backend`, under `parent`.
fn plugin_dir(
    root: &Path,
    parent: &Path,
    model: &BenchModel,
    backend: BackendKind,
) -> Result<PathBuf> {
    let dir = parent.join(format!("{}-{backend}", model.name));
    std::fs::create_dir_all(&dir)?;
    let component = format!("{}.wasm", model.handler);
    std::fs::copy(
        root.join("plugins").join(model.handler).join(&component),
        dir.join(&component),
    )
    .context("the handler component exists (cargo build)")?;
    if std::fs::hard_link(&model.file, dir.join("model.onnx")).is_err() {
        std::fs::copy(&model.file, dir.join("model.onnx"))
            .with_context(|| format!("{} (run scripts/fetch-models.sh)", model.file.display()))?;
    }
    let model_name = if model.handler == "iris" {
        "iris"
    } else {
        "model"
    };
    let shapes: Vec<String> = model
        .input_shapes
        .iter()
        .map(|(name, dims)| format!("{name} = {dims:?}"))
        .collect();
    std::fs::write(
        dir.join("plugin.toml"),
        format!(
            "name = \"{}-{backend}\"\ncomponent = \"{component}\"\n[models]\n\
             {model_name} = {{ path = \"model.onnx\", backend = \"{backend}\", \
             input_shapes = {{ {} }} }}\n{}",
            model.name,
            shapes.join(", "),
            model.manifest_extra
        ),
    )?;
    Ok(dir)
}

/// One batch from JSONL lines, decoded and stacked by the host's own tensor code.
fn stack_lines(lines: &[&str], dtype: DType) -> Result<Tensor> {
    let examples = lines
        .iter()
        .map(|line| Ok(Tensor::from_json(&serde_json::from_str(line)?, dtype)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&examples)?)
}

/// The limit: parse the JSONL, stack a batch, call the engine, write each row's
/// outputs as JSON — the same job as `run`, with the host's own tensor decoding and
/// encoding, but without wasm, plugin or pipeline.
fn native_run(
    model: &LoadedModel,
    dtype: DType,
    input: &str,
    batch: usize,
    out: &mut Vec<u8>,
) -> Result<usize> {
    let input_name = model.inputs()[0].name.clone();
    let lines: Vec<&str> = input.lines().collect();
    let mut count = 0;
    for chunk in lines.chunks(batch) {
        let stacked = stack_lines(chunk, dtype)?;
        let outputs = model.run_named(vec![(input_name.clone(), &stacked)])?;
        let rows: Vec<Vec<Tensor>> = outputs
            .iter()
            .map(|(_, t)| t.unstack())
            .collect::<Result<_, _>>()?;
        for (i, line) in chunk.iter().enumerate() {
            let example: &RawValue = serde_json::from_str(line)?;
            let inference: std::collections::BTreeMap<&str, &Tensor> = outputs
                .iter()
                .zip(&rows)
                .map(|((name, _), rows)| (name.as_str(), &rows[i]))
                .collect();
            serde_json::to_writer(
                &mut *out,
                &serde_json::json!({"example": example, "inference": inference}),
            )?;
            out.push(b'\n');
            count += 1;
        }
    }
    Ok(count)
}

pub fn engines(args: &Args) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cache = tempfile::tempdir()?;
    let plugins = tempfile::tempdir()?;
    let host = Host::new({
        let mut value = HostConfig::default();
        value.compile_cache = Some(runinfer::compile::CompileCache::new(cache.path()));
        value
    })?;
    println!("### P1: overhead against the limit\n");
    println!(
        "`runinfer run` (in process: read JSONL, decode, batch, wasm handler, engine, write JSONL; 1 instance) \
         against a native Rust loop doing the same job on the same engine and model object (parse JSONL, stack \
         the batch, call the engine, write JSONL), alternating, median of {} runs; and against the engine alone \
         (the same batches already decoded and stacked: the absolute limit). Engines use 1 thread per call. `run` \
         decodes JSON on its reader side while the instance runs the previous batch; the native loop does one \
         thing at a time, so with large examples (a PP-OCR line is 27,648 numbers) `run` can beat it.\n",
        args.reps
    );
    println!(
        "| model | engine | batch | lines | `run`, wasm handler ex/s | native loop ex/s | ratio | engine alone ex/s | ratio |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut starts = Vec::new();
    let chosen = models(&root)
        .into_iter()
        .filter(|m| args.models.is_empty() || args.models.iter().any(|name| name == m.name));
    for model in chosen {
        let data = std::fs::read_to_string(data_file(&root, &model)?)?;
        for backend in [BackendKind::Tract, BackendKind::Onnxruntime] {
            let dir = plugin_dir(&root, plugins.path(), &model, backend)?;
            let plugin = Arc::new(host.load_plugin(&dir)?);
            let shapes: InputShapes = model
                .input_shapes
                .iter()
                .map(|(name, dims)| (name.to_string(), dims.to_vec()))
                .collect();
            // The plugin's own model object (the registry shares it).
            let loaded = host
                .models()
                .load(&dir.join("model.onnx"), backend, &shapes)?;
            for (batch, lines) in [(1usize, model.lines.0), (32, model.lines.1)] {
                let text: String = data.lines().take(lines).map(|l| format!("{l}\n")).collect();
                let options = {
                    let mut value = RunOptions::default();
                    value.batching = BatchingConfig {
                        max_batch_size: Some(batch as u32),

                        max_batch_duration_ms: Some(600_000),
                        min_batch_size: None,
                    };
                    value.instances = Some(1);
                    value
                };
                let batches = text
                    .lines()
                    .collect::<Vec<_>>()
                    .chunks(batch)
                    .map(|chunk| stack_lines(chunk, model.dtype))
                    .collect::<Result<Vec<_>>>()?;
                let input_name = loaded.inputs()[0].name.clone();
                let (mut wasm, mut native, mut engine) = (vec![], vec![], vec![]);
                for _ in 0..args.reps {
                    let (mut out, mut dead) = (Vec::new(), Vec::new());
                    let start = Instant::now();
                    let summary = run_jsonl(
                        &plugin,
                        std::io::Cursor::new(text.clone().into_bytes()),
                        &mut out,
                        &mut dead,
                        &options,
                    )?;
                    wasm.push(summary.predictions as f64 / start.elapsed().as_secs_f64());
                    anyhow::ensure!(
                        summary.predictions as usize == lines,
                        "{}: {}",
                        model.name,
                        String::from_utf8_lossy(&dead[..dead.len().min(500)])
                    );
                    let mut out = Vec::new();
                    let start = Instant::now();
                    let n = native_run(&loaded, model.dtype, &text, batch, &mut out)?;
                    native.push(n as f64 / start.elapsed().as_secs_f64());
                    let start = Instant::now();
                    for stacked in &batches {
                        loaded.run_named(vec![(input_name.clone(), stacked)])?;
                    }
                    engine.push(lines as f64 / start.elapsed().as_secs_f64());
                }
                let (wasm, native, engine) = (median(wasm), median(native), median(engine));
                println!(
                    "| {} | {backend} | {batch} | {lines} | {wasm:.1} | {native:.1} | {:.2} | {engine:.1} | {:.2} |",
                    model.name,
                    wasm / native,
                    wasm / engine
                );
                std::io::stdout().flush()?;
            }
            // Instance start: instantiate + init + load-model (the model is loaded).
            let mut times = Vec::new();
            for _ in 0..50 {
                let start = Instant::now();
                drop(plugin.instantiate()?);
                times.push(start.elapsed().as_secs_f64() * 1e6);
            }
            starts.push((model.name, backend, median(times)));
        }
    }
    println!("\n### P3 (in process): instance start\n");
    println!(
        "Instantiate from the pre-linked component + `init` + `load-model` (model already in the registry), median of 50.\n"
    );
    println!("| model | engine | µs |");
    println!("|---|---|---:|");
    for (model, backend, us) in starts {
        println!("| {model} | {backend} | {us:.0} |");
    }
    Ok(())
}
