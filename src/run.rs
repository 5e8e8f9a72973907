//! `runinfer run`: a JSONL job through one plugin.

use anyhow::{Context, Result, bail};
use clap::Args;
use runinfer::Plugin;
use runinfer::dispatch::Dispatcher;
use runinfer::manifest::BatchingConfig;
use runinfer::quota::Quotas;
use runinfer::run::{RunOptions, RunSummary, run_async, run_dispatch_options, run_watched};
use runinfer::watch::PluginRoot;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::{CommonArgs, check_batch_flags};

#[derive(Args)]
pub(crate) struct RunArgs {
    /// Plugin name (its directory or its manifest name).
    pub(crate) plugin: String,
    /// JSONL input: one example, or {"key": ..., "example": ...}, per line [default: stdin]
    pub(crate) input: Option<PathBuf>,
    /// Write predictions here instead of stdout.
    #[arg(short, long)]
    pub(crate) output: Option<PathBuf>,
    /// Write dead letters (JSONL, one per failed line) here instead of stderr.
    #[arg(long)]
    pub(crate) dead_letters: Option<PathBuf>,
    /// Override the largest batch.
    #[arg(long)]
    pub(crate) max_batch_size: Option<u32>,
    /// Override the smallest batch formed while input keeps coming.
    #[arg(long)]
    pub(crate) min_batch_size: Option<u32>,
    /// Override the longest wait of a batch's oldest example, in ms.
    #[arg(long)]
    pub(crate) max_batch_duration_ms: Option<u32>,
    /// Size batches adaptively toward this latency per batch, in ms.
    #[arg(long)]
    pub(crate) adaptive_batch_latency_ms: Option<u64>,
    /// Batches run at once on warm instances [default: plugin.toml `instances`, else cores]
    #[arg(long)]
    pub(crate) instances: Option<usize>,
    /// Stop (exit 3) when more than this fraction of lines failed, like Beam's
    /// failure threshold; checked from the 100th line on and at the end.
    #[arg(long, value_parser = parse_ratio)]
    pub(crate) max_failure_ratio: Option<f64>,
    /// Write the run's metrics (Prometheus text) to this file at the end.
    #[arg(long)]
    pub(crate) metrics_out: Option<PathBuf>,
    /// Watch the plugin root while the input streams: a replaced plugin or a newer
    /// model file (a `[models]` pattern) is swapped in without dropping a line.
    /// PLUGIN is then the plugin's directory name.
    #[arg(long)]
    pub(crate) watch: bool,
    /// With --watch: how long file events must be quiet before the host looks.
    #[arg(long, default_value_t = 500)]
    pub(crate) settle_ms: u64,
    /// How often remote models (object stores, HTTP) are checked for a new version.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub(crate) model_poll_secs: u64,
    /// Inference argument passed to every run-inference call (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) args: Vec<(String, String)>,
    /// The operator's tenants file (as `serve --tenants`): the plugin's tenant's
    /// `requests_per_sec` paces the lines (a line is a request; the run waits, it
    /// never refuses), `max_in_flight` caps the lines in flight, and `plugins`
    /// settles which tenant the plugin is.
    #[arg(long, value_name = "FILE")]
    pub(crate) tenants: Option<PathBuf>,
    /// Print no summary.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    #[command(flatten)]
    pub(crate) common: CommonArgs,
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

pub(crate) fn run(args: RunArgs) -> Result<std::process::ExitCode> {
    check_batch_flags(&[
        ("--max-batch-size", args.max_batch_size),
        ("--min-batch-size", args.min_batch_size),
        ("--max-batch-duration-ms", args.max_batch_duration_ms),
    ])?;
    // Read first: a bad file is the operator's error, at once.
    let quotas = match &args.tenants {
        Some(path) => Quotas::load(path).map_err(anyhow::Error::msg)?,
        None => Quotas::default(),
    };
    let host = args.common.host()?;
    quotas.apply_to(&host);
    let root = args.common.plugin_root();
    let (input, mut predictions, mut dead_letters) = open_run_files(&args)?;
    let mut options = RunOptions::default();
    options.batching = BatchingConfig {
        max_batch_size: args.max_batch_size,
        min_batch_size: args.min_batch_size,
        max_batch_duration_ms: args.max_batch_duration_ms,
    };
    options.adaptive_batch_latency = args.adaptive_batch_latency_ms.map(Duration::from_millis);
    options.instances = args.instances;
    options.inference_args = args.args.clone();
    options.max_failure_ratio = args.max_failure_ratio;
    options.progress = !args.quiet && std::io::stderr().is_terminal();
    // Guest code runs on worker threads; the runtime only moves data between them.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (plugin, summary) = if args.watch {
        let run_options = options.clone();
        let plugins = PluginRoot::open(host.clone(), &root, move |p| {
            run_dispatch_options(p, &run_options)
        });
        let _watch = plugins
            .watch(
                Duration::from_millis(args.settle_ms),
                Duration::from_secs(args.model_poll_secs.max(1)),
            )
            .with_context(|| format!("cannot watch {}", root.display()))?;
        let Some(live) = plugins.get(&args.plugin) else {
            bail!(
                "no live plugin directory `{}` in {}: {:?}",
                args.plugin,
                root.display(),
                plugins.status()
            );
        };
        options.tenant_quota = quotas.quota(live.plugin.tenant()).cloned();
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
        options.tenant_quota = quotas.quota(plugin.tenant()).cloned();
        let summary = runtime.block_on(async {
            let dispatcher =
                Dispatcher::new(plugin.clone(), run_dispatch_options(&plugin, &options))?;
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
pub(crate) fn open_run_files(
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
pub(crate) fn print_summary(plugin: &Plugin, summary: &RunSummary) {
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
