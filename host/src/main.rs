//! The `runinfer` command line.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use runinfer::compile::CompileCache;
use runinfer::manifest::BatchingConfig;
use runinfer::run::{RunOptions, run_jsonl};
use runinfer::{Host, HostConfig};
use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::path::PathBuf;

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
    Run(RunArgs),
    /// List the plugins of the plugin root and whether each loads.
    List(CommonArgs),
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
    /// Override the batch size limit.
    #[arg(long)]
    max_batch_size: Option<u32>,
    /// Inference argument passed to every run-inference call (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    args: Vec<(String, String)>,
    /// Print no summary.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    common: CommonArgs,
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
            ..HostConfig::default()
        })
    }
}

/// The plugins bundled with the source tree this binary was built from.
fn bundled_plugins() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins"))
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNINFER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
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
        Command::Run(args) => run(args),
        Command::List(common) => list(common),
        Command::Inspect { plugin, common } => inspect(&plugin, common),
    }
}

fn run(args: RunArgs) -> Result<std::process::ExitCode> {
    let host = args.common.host()?;
    let root = args.common.plugin_root();
    let plugin = host.load_plugin_named(&root, &args.plugin)?;
    let input: Box<dyn std::io::BufRead> = match &args.input {
        Some(path) => Box::new(BufReader::new(
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("runinfer: reading JSONL examples from stdin (ctrl-d ends)");
            }
            Box::new(std::io::stdin().lock())
        }
    };
    let mut predictions: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let mut dead_letters: Box<dyn Write> = match &args.dead_letters {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::stderr()),
    };
    let options = RunOptions {
        batching: BatchingConfig {
            max_batch_size: args.max_batch_size,
            ..BatchingConfig::default()
        },
        inference_args: args.args.clone(),
    };
    if args.max_batch_size == Some(0) {
        bail!("--max-batch-size must be at least 1");
    }
    let summary = run_jsonl(
        &plugin,
        input,
        &mut predictions,
        &mut dead_letters,
        &options,
    )?;
    drop(predictions);
    drop(dead_letters);
    if !args.quiet {
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
    Ok(std::process::ExitCode::SUCCESS)
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
                let models: Vec<&str> = plugin.models().map(|m| m.id.as_str()).collect();
                println!(
                    "{:<16} ok      tenant={} namespace={} models=[{}]",
                    plugin.name(),
                    plugin.manifest().tenant,
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
                println!("{name:<16} FAILED  {e}");
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
