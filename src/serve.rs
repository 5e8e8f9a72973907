//! `runinfer serve`: the Open Inference Protocol over HTTP on the plugin root.

use anyhow::{Context, Result};
use clap::Args;
use runinfer::manifest::BatchingConfig;
use runinfer::quota::Quotas;
use runinfer::run::{RunOptions, dispatch_options};
use runinfer::serve::ServeConfig;
use runinfer::watch::PluginRoot;
use std::path::PathBuf;
use std::time::Duration;

use crate::{CommonArgs, check_batch_flags};

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) address: std::net::IpAddr,
    /// Port to listen on (the OIP/KServe v2 HTTP default is 8000).
    #[arg(long, default_value_t = 8000)]
    pub(crate) port: u16,
    /// Port of the OIP gRPC service (`inference.GRPCInferenceService`, Triton's
    /// default 8001); 0 picks a free port. Defaults to 8001, or to a free port when
    /// `--port` is 0.
    #[arg(long)]
    pub(crate) grpc_port: Option<u16>,
    /// Serve HTTP only.
    #[arg(long, conflicts_with = "grpc_port")]
    pub(crate) no_grpc: bool,
    /// Longest a request waits for its results, in ms (a request's `timeout`
    /// parameter, in µs as in Triton, may shorten it).
    #[arg(long, default_value_t = 30_000)]
    pub(crate) request_timeout_ms: u64,
    /// Override every plugin's largest batch.
    #[arg(long)]
    pub(crate) max_batch_size: Option<u32>,
    /// Override every plugin's longest wait for a batch to fill, in ms; 0 batches
    /// what is queued when an instance frees up (no added latency at low load).
    #[arg(long)]
    pub(crate) max_batch_duration_ms: Option<u32>,
    /// Do not watch the plugin root for changes.
    #[arg(long)]
    pub(crate) no_watch: bool,
    /// How long file events must be quiet before the host looks.
    #[arg(long, default_value_t = 500)]
    pub(crate) settle_ms: u64,
    /// How often remote models (object stores, HTTP) are checked for a new version.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub(crate) model_poll_secs: u64,
    /// The operator's per-tenant quotas and shares (TOML: `[tenants.NAME]` with
    /// `requests_per_sec`, `max_in_flight`, `weight`, `plugins`); requests past a
    /// quota get 429, contended cores go to tenants in proportion to their weights,
    /// and a tenant that lists its plugins is only those.
    #[arg(long, value_name = "FILE")]
    pub(crate) tenants: Option<PathBuf>,
    /// Shut down (gracefully) when standard input closes: a parent that starts the
    /// server holds its stdin, so the server never outlives the parent.
    #[arg(long)]
    pub(crate) exit_on_stdin_eof: bool,
    #[command(flatten)]
    pub(crate) common: CommonArgs,
}

pub(crate) fn serve(args: ServeArgs) -> Result<std::process::ExitCode> {
    check_batch_flags(&[
        ("--max-batch-size", args.max_batch_size),
        ("--max-batch-duration-ms", args.max_batch_duration_ms),
    ])?;
    // Read first: a bad file is the operator's error, at once.
    let quotas = match &args.tenants {
        Some(path) => std::sync::Arc::new(Quotas::load(path).map_err(anyhow::Error::msg)?),
        None => std::sync::Arc::<Quotas>::default(),
    };
    let host = args.common.host()?;
    quotas.apply_to(&host);
    let root = args.common.plugin_root();
    let mut options = RunOptions::default();
    options.batching = BatchingConfig {
        max_batch_size: args.max_batch_size,
        max_batch_duration_ms: args.max_batch_duration_ms,
        ..BatchingConfig::default()
    };
    let plugins = PluginRoot::open(host.clone(), &root, move |p| dispatch_options(p, &options));
    let _watch = if args.no_watch {
        None
    } else {
        Some(
            plugins
                .watch(
                    Duration::from_millis(args.settle_ms),
                    Duration::from_secs(args.model_poll_secs.max(1)),
                )
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
        let mut config = ServeConfig::default();
        config.request_timeout = Duration::from_millis(args.request_timeout_ms);
        config.quotas = quotas;
        // One shutdown for both servers: each stops accepting, then finishes its
        // requests in flight.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|&s| s).await;
            }
        };
        let grpc = match (args.no_grpc, args.grpc_port) {
            (true, _) => None,
            (false, port) => {
                let port = port.unwrap_or(if args.port == 0 { 0 } else { 8001 });
                let address = std::net::SocketAddr::new(args.address, port);
                let listener = tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on {address} (gRPC)"))?;
                eprintln!(
                    "runinfer: OIP gRPC (inference.GRPCInferenceService) on {}",
                    listener.local_addr()?
                );
                let service =
                    runinfer::serve::grpc::service(plugins.clone(), host.clone(), config.clone());
                Some(tokio::spawn(runinfer::serve::grpc::serve(
                    listener,
                    service,
                    until_stopped(),
                )))
            }
        };
        let address = std::net::SocketAddr::new(args.address, args.port);
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        eprintln!(
            "runinfer: serving {} on http://{}",
            root.display(),
            listener.local_addr()?
        );
        let router = runinfer::serve::router(plugins.clone(), host.clone(), config);
        let stdin_closed = stdin_eof(args.exit_on_stdin_eof);
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = stdin_closed => {}
            }
            let _ = stop.send(true);
        });
        runinfer::serve::serve(listener, router, until_stopped()).await?;
        if let Some(grpc) = grpc {
            grpc.await?.context("the gRPC server failed")?;
        }
        eprintln!("runinfer: stopped after finishing the requests in flight");
        anyhow::Ok(())
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Resolves when standard input reaches its end (never unless `enabled`).
pub(crate) async fn stdin_eof(enabled: bool) {
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
pub(crate) async fn shutdown_signal() {
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
