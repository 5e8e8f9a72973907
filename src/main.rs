//! The `runinfer` command line.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use runinfer::compile::CompileCache;
use runinfer::dispatch::Dispatcher;
use runinfer::manifest::BatchingConfig;
use runinfer::model::{BackendKind, OnnxruntimeConfig};
use runinfer::run::{RunOptions, RunSummary, dispatch_options, run_async, run_watched};
use runinfer::serve::ServeConfig;
use runinfer::watch::PluginRoot;
use runinfer::{Host, HostConfig, Plugin, PoolingLimits};
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Run model handlers compiled to WebAssembly components.
#[derive(Parser)]
#[command(name = "runinfer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a plugin over JSONL examples: one prediction per line on stdout (or
    /// --output), failures to the dead letters, a summary on stderr.
    Run(Box<RunArgs>),
    /// List the plugins of the plugin root and whether each loads.
    List(CommonArgs),
    /// Serve the plugins of the plugin root over the Open Inference Protocol v2 (HTTP),
    /// watching the root for new plugins and models.
    Serve(ServeArgs),
    /// Show a plugin's handler info, effective batching, models and load times (JSON).
    Inspect {
        /// Plugin name (its directory or its manifest name).
        plugin: String,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Args)]
struct CommonArgs {
    /// Plugin root directory [default: ./plugins if present, else the bundled plugins]
    #[arg(long, env = "RUNINFER_PLUGINS")]
    plugins: Option<PathBuf>,
    /// Compile cache directory [default: $RUNINFER_CACHE_DIR, $XDG_CACHE_HOME/runinfer or ~/.cache/runinfer]
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Compile components at every start instead of caching them.
    #[arg(long, conflicts_with = "cache_dir")]
    no_compile_cache: bool,
    /// Most per-key model sets ([[key_models]]) loaded at once; the least recently
    /// used is evicted.
    #[arg(long, default_value_t = 8)]
    max_key_model_sets: usize,
    /// Instantiate handlers from wasmtime's pooling allocator (pre-reserved slots for
    /// this many instances) instead of allocating on demand.
    #[arg(long, value_name = "INSTANCES")]
    pooling: Option<u32>,
    /// Wasm stack per call, in KiB (one engine serves all plugins).
    #[arg(long, default_value_t = 512)]
    max_wasm_stack_kb: usize,
    /// Engine for models whose plugin.toml entry names none: tract (built in) or
    /// onnxruntime (its shared library loaded at run time).
    #[arg(long, env = "RUNINFER_BACKEND", default_value_t = BackendKind::Tract)]
    backend: BackendKind,
    /// The onnxruntime shared library [default: $ORT_DYLIB_PATH, target/onnxruntime/
    /// as scripts/install-onnxruntime.sh leaves it, then the system's libonnxruntime.so]
    #[arg(long, env = "RUNINFER_ONNXRUNTIME_LIB", value_name = "PATH")]
    onnxruntime_lib: Option<PathBuf>,
    /// Threads one onnxruntime call may use (instances already run in parallel;
    /// 0 lets onnxruntime choose).
    #[arg(long, default_value_t = 1)]
    onnxruntime_threads: usize,
    /// onnxruntime sessions per model at most, shared by the instances that run it
    /// (each holds a copy of the weights) [default: the number of cores]
    #[arg(long, value_name = "N")]
    onnxruntime_sessions: Option<usize>,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: std::net::IpAddr,
    /// Port to listen on (the OIP/KServe v2 HTTP default is 8000).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Longest a request waits for its results, in ms (a request's `timeout`
    /// parameter, in µs as in Triton, may shorten it).
    #[arg(long, default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Override every plugin's largest batch.
    #[arg(long)]
    max_batch_size: Option<u32>,
    /// Override every plugin's longest wait for a batch to fill, in ms; 0 batches
    /// what is queued when an instance frees up (no added latency at low load).
    #[arg(long)]
    max_batch_duration_ms: Option<u32>,
    /// Do not watch the plugin root for changes.
    #[arg(long)]
    no_watch: bool,
    /// How long file events must be quiet before the host looks.
    #[arg(long, default_value_t = 500)]
    settle_ms: u64,
    /// Shut down (gracefully) when standard input closes: a parent that starts the
    /// server holds its stdin, so the server never outlives the parent.
    #[arg(long)]
    exit_on_stdin_eof: bool,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Plugin name (its directory or its manifest name).
    plugin: String,
    /// JSONL input: one example, or {"key": ..., "example": ...}, per line [default: stdin]
    input: Option<PathBuf>,
    /// Write predictions here instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Write dead letters (JSONL, one per failed line) here instead of stderr.
    #[arg(long)]
    dead_letters: Option<PathBuf>,
    /// Override the largest batch.
    #[arg(long)]
    max_batch_size: Option<u32>,
    /// Override the smallest batch formed while input keeps coming.
    #[arg(long)]
    min_batch_size: Option<u32>,
    /// Override the longest wait of a batch's oldest example, in ms.
    #[arg(long)]
    max_batch_duration_ms: Option<u32>,
    /// Size batches adaptively toward this latency per batch, in ms.
    #[arg(long)]
    adaptive_batch_latency_ms: Option<u64>,
    /// Batches run at once on warm instances [default: plugin.toml `instances`, else cores]
    #[arg(long)]
    instances: Option<usize>,
    /// Stop (exit 3) when more than this fraction of lines failed, like Beam's
    /// failure threshold; checked from the 100th line on and at the end.
    #[arg(long, value_parser = parse_ratio)]
    max_failure_ratio: Option<f64>,
    /// Write the run's metrics (Prometheus text) to this file at the end.
    #[arg(long)]
    metrics_out: Option<PathBuf>,
    /// Watch the plugin root while the input streams: a replaced plugin or a newer
    /// model file (a `[models]` pattern) is swapped in without dropping a line.
    /// PLUGIN is then the plugin's directory name.
    #[arg(long)]
    watch: bool,
    /// With --watch: how long file events must be quiet before the host looks.
    #[arg(long, default_value_t = 500)]
    settle_ms: u64,
    /// Inference argument passed to every run-inference call (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    args: Vec<(String, String)>,
    /// Print no summary.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    common: CommonArgs,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("expected a number from 0 to 1, got {s:?}")),
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

impl CommonArgs {
    fn plugin_root(&self) -> PathBuf {
        if let Some(root) = &self.plugins {
            return root.clone();
        }
        let local = PathBuf::from("plugins");
        if local.join("iris").join("plugin.toml").exists() || !bundled_plugins().exists() {
            return local;
        }
        bundled_plugins()
    }

    fn host(&self) -> Result<Host> {
        let compile_cache = if self.no_compile_cache {
            None
        } else {
            self.cache_dir
                .clone()
                .or_else(CompileCache::default_dir)
                .map(CompileCache::new)
        };
        Host::new(HostConfig {
            compile_cache,
            max_key_model_sets: self.max_key_model_sets.max(1),
            max_wasm_stack: self.max_wasm_stack_kb.max(64) * 1024,
            pooling: self.pooling.map(|instances| PoolingLimits {
                instances: instances.max(1),
                ..PoolingLimits::default()
            }),
            default_backend: self.backend,
            onnxruntime: OnnxruntimeConfig {
                library: self.onnxruntime_lib.clone(),
                threads: self.onnxruntime_threads,
                max_sessions: self
                    .onnxruntime_sessions
                    .unwrap_or(OnnxruntimeConfig::default().max_sessions),
            },
            ..HostConfig::default()
        })
    }
}

/// The plugins bundled with the source tree this binary was built from.
fn bundled_plugins() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/plugins"))
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNINFER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match real_main() {
        Ok(code) => code,
        // `runinfer run ... | head` is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("runinfer: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<std::process::ExitCode> {
    match Cli::parse().command {
        Command::Run(args) => run(*args),
        Command::List(common) => list(common),
        Command::Serve(args) => serve(args),
        Command::Inspect { plugin, common } => inspect(&plugin, common),
    }
}

/// Batching flags get the same caps as a manifest's `[batching]`.
fn check_batch_flags(flags: &[(&str, Option<u32>)]) -> Result<()> {
    for (key, value) in flags {
        runinfer::untrusted::check_batching_value(key, *value).map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok(())
}

fn run(args: RunArgs) -> Result<std::process::ExitCode> {
    check_batch_flags(&[
        ("--max-batch-size", args.max_batch_size),
        ("--min-batch-size", args.min_batch_size),
        ("--max-batch-duration-ms", args.max_batch_duration_ms),
    ])?;
    let host = args.common.host()?;
    let root = args.common.plugin_root();
    let (input, mut predictions, mut dead_letters) = open_run_files(&args)?;
    let options = RunOptions {
        batching: BatchingConfig {
            max_batch_size: args.max_batch_size,
            min_batch_size: args.min_batch_size,
            max_batch_duration_ms: args.max_batch_duration_ms,
        },
        adaptive_batch_latency: args.adaptive_batch_latency_ms.map(Duration::from_millis),
        instances: args.instances,
        inference_args: args.args.clone(),
        max_failure_ratio: args.max_failure_ratio,
        progress: !args.quiet && std::io::stderr().is_terminal(),
    };
    // Guest code runs on worker threads; the runtime only moves data between them.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (plugin, summary) = if args.watch {
        let run_options = options.clone();
        let plugins = PluginRoot::open(host.clone(), &root, move |p| {
            dispatch_options(p, &run_options)
        });
        let _watch = plugins
            .watch(Duration::from_millis(args.settle_ms))
            .with_context(|| format!("cannot watch {}", root.display()))?;
        let Some(live) = plugins.get(&args.plugin) else {
            bail!(
                "no live plugin directory `{}` in {}: {:?}",
                args.plugin,
                root.display(),
                plugins.status()
            );
        };
        let summary = runtime.block_on(run_watched(
            &plugins,
            &args.plugin,
            input,
            &mut predictions,
            &mut dead_letters,
            &options,
        ))?;
        (live.plugin.clone(), summary)
    } else {
        let plugin = Arc::new(host.load_plugin_named(&root, &args.plugin)?);
        let summary = runtime.block_on(async {
            let dispatcher = Dispatcher::new(plugin.clone(), dispatch_options(&plugin, &options))?;
            run_async(
                &dispatcher,
                input,
                &mut predictions,
                &mut dead_letters,
                &options,
            )
            .await
        })?;
        (plugin, summary)
    };
    drop(predictions);
    drop(dead_letters);
    if let Some(path) = &args.metrics_out {
        std::fs::write(path, host.metrics().encode())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !args.quiet {
        print_summary(&plugin, &summary);
    }
    if let Some(reason) = summary.stopped {
        eprintln!("runinfer: stopped: {reason} (--max-failure-ratio)");
        return Ok(std::process::ExitCode::from(3));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// A `run`'s streams: input (file or stdin), predictions (file or stdout) and dead
/// letters (file or stderr).
#[allow(clippy::type_complexity)]
fn open_run_files(
    args: &RunArgs,
) -> Result<(
    Box<dyn std::io::Read + Send>,
    Box<dyn Write + Send>,
    Box<dyn Write + Send>,
)> {
    let input: Box<dyn std::io::Read + Send> = match &args.input {
        Some(path) => {
            Box::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
        }
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("runinfer: reading JSONL examples from stdin (ctrl-d ends)");
            }
            Box::new(std::io::stdin())
        }
    };
    let create = |path: &std::path::Path| -> Result<Box<dyn Write + Send>> {
        Ok(Box::new(BufWriter::new(File::create(path).with_context(
            || format!("cannot create {}", path.display()),
        )?)))
    };
    let predictions = match &args.output {
        Some(path) => create(path)?,
        None => Box::new(BufWriter::new(std::io::stdout())),
    };
    let dead_letters = match &args.dead_letters {
        Some(path) => create(path)?,
        None => Box::new(std::io::stderr()),
    };
    Ok((input, predictions, dead_letters))
}

/// The one-line summary of a `run` on stderr.
fn print_summary(plugin: &Plugin, summary: &RunSummary) {
    let report = plugin.load_report();
    let secs = summary.elapsed.as_secs_f64();
    eprintln!(
        "runinfer: {} lines -> {} predictions, {} dead letters ({} undecodable, {} of {} batches failed) in {:.3} s ({:.0} lines/s); plugin `{}` ready in {:.1} ms (component {:?} in {:.1} ms)",
        summary.lines,
        summary.predictions,
        summary.dead_letters,
        summary.decode_failures,
        summary.failed_batches,
        summary.batches,
        secs,
        summary.lines as f64 / secs.max(1e-9),
        plugin.name(),
        (report.compile.duration + report.models + report.first_instance).as_secs_f64() * 1e3,
        report.compile.source,
        report.compile.duration.as_secs_f64() * 1e3,
    );
}

fn serve(args: ServeArgs) -> Result<std::process::ExitCode> {
    check_batch_flags(&[
        ("--max-batch-size", args.max_batch_size),
        ("--max-batch-duration-ms", args.max_batch_duration_ms),
    ])?;
    let host = args.common.host()?;
    let root = args.common.plugin_root();
    let options = RunOptions {
        batching: BatchingConfig {
            max_batch_size: args.max_batch_size,
            max_batch_duration_ms: args.max_batch_duration_ms,
            ..BatchingConfig::default()
        },
        ..RunOptions::default()
    };
    let plugins = PluginRoot::open(host.clone(), &root, move |p| dispatch_options(p, &options));
    let _watch = if args.no_watch {
        None
    } else {
        Some(
            plugins
                .watch(Duration::from_millis(args.settle_ms))
                .with_context(|| format!("cannot watch {}", root.display()))?,
        )
    };
    for (name, status) in plugins.status() {
        eprintln!("runinfer: {name}: {}", serde_json::to_string(&status)?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let address = std::net::SocketAddr::new(args.address, args.port);
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        eprintln!(
            "runinfer: serving {} on http://{}",
            root.display(),
            listener.local_addr()?
        );
        let config = ServeConfig {
            request_timeout: Duration::from_millis(args.request_timeout_ms),
        };
        let router = runinfer::serve::router(plugins.clone(), host.clone(), config);
        let stdin_closed = stdin_eof(args.exit_on_stdin_eof);
        let shutdown = async move {
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = stdin_closed => {}
            }
        };
        runinfer::serve::serve(listener, router, shutdown).await?;
        eprintln!("runinfer: stopped after finishing the requests in flight");
        anyhow::Ok(())
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Resolves when standard input reaches its end (never unless `enabled`).
async fn stdin_eof(enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    let (closed, eof) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = closed.send(());
    });
    let _ = eof.await;
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

fn list(common: CommonArgs) -> Result<std::process::ExitCode> {
    let host = common.host()?;
    let root = common.plugin_root();
    let dirs = runinfer::host::plugin_dirs(&root);
    if dirs.is_empty() {
        bail!(
            "no plugins (directories with a plugin.toml) in {}",
            root.display()
        );
    }
    let mut failed = false;
    for dir in dirs {
        match host.load_plugin(&dir) {
            Ok(plugin) => {
                let models: Vec<String> = plugin.models().map(|m| m.id.clone()).collect();
                println!(
                    "{:<16} ok      tenant={} namespace={} models=[{}]",
                    plugin.name(),
                    plugin.manifest().tenant.as_deref().unwrap_or("-"),
                    plugin.namespace(),
                    models.join(", ")
                );
            }
            Err(e) => {
                failed = true;
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // A plugin's error may quote its model file's names: one line each.
                let reason = runinfer::untrusted::escape_control(&e.to_string()).into_owned();
                println!("{name:<16} FAILED  {reason}");
            }
        }
    }
    Ok(if failed {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

fn inspect(name: &str, common: CommonArgs) -> Result<std::process::ExitCode> {
    let host = common.host()?;
    let plugin = host.load_plugin_named(&common.plugin_root(), name)?;
    let models: Vec<serde_json::Value> = plugin
        .models()
        .map(|m| {
            serde_json::json!({
                "name": m.name,
                "id": m.id,
                "bytes": m.model.byte_size(),
                "backend": m.model.backend(),
                "inputs": m.model.inputs(),
                "outputs": m.model.outputs(),
            })
        })
        .collect();
    let report = serde_json::json!({
        "name": plugin.name(),
        "dir": plugin.dir(),
        "tenant": plugin.manifest().tenant,
        "namespace": plugin.namespace(),
        "handler": plugin.info(),
        "batching": plugin.batching(&BatchingConfig::default()),
        "limits": {
            "memory_mb": plugin.manifest().limits.memory_mb,
            "timeout_ms": plugin.manifest().limits.timeout_ms,
        },
        "models": models,
        "load": plugin.load_report(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(std::process::ExitCode::SUCCESS)
}
