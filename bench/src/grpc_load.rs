//! A closed-loop gRPC load generator for `bench/serve.sh`: `concurrency` connections,
//! each sending its next call as soon as the last one is answered (what wrk does for
//! HTTP), for `seconds`. Calls `ServerLive` (the gRPC floor) or `ModelInfer` with
//! one iris-shaped row (FP32 [1, 4] in `raw_input_contents`). Prints one JSON line:
//! calls/s, p50 and p99 in µs, failed calls.
//!
//!   grpc-load HOST:PORT live|MODEL CONCURRENCY SECONDS

use anyhow::{Context, Result, bail};
use runinfer::serve::grpc::{
    GrpcInferenceServiceClient, ModelInferRequest, ServerLiveRequest, model_infer_request,
};
use std::time::{Duration, Instant};

fn request(model: &str) -> ModelInferRequest {
    let row: Vec<u8> = [5.1f32, 3.5, 1.4, 0.2]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![row],
        ..Default::default()
    }
}

/// One connection's loop: latencies of the calls answered, and calls failed.
async fn connection(address: String, call: String, until: Instant) -> Result<(Vec<u32>, u64)> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {address}"))?;
    let mut client = GrpcInferenceServiceClient::new(channel);
    let infer = request(&call);
    let (mut latencies, mut failed) = (Vec::new(), 0);
    while Instant::now() < until {
        let start = Instant::now();
        let ok = if call == "live" {
            client.server_live(ServerLiveRequest {}).await.is_ok()
        } else {
            client.model_infer(infer.clone()).await.is_ok()
        };
        if ok {
            latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
        } else {
            failed += 1;
        }
    }
    Ok((latencies, failed))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, call, concurrency, seconds] = args.as_slice() else {
        bail!("usage: grpc-load HOST:PORT live|MODEL CONCURRENCY SECONDS");
    };
    let concurrency: usize = concurrency.parse()?;
    let seconds: f64 = seconds.parse()?;
    // Two threads at most, as bench/serve.sh gives wrk (`-t2`).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(concurrency.clamp(1, 2))
        .enable_all()
        .build()?;
    let (mut latencies, failed) = runtime.block_on(async {
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| tokio::spawn(connection(address.clone(), call.clone(), until)))
            .collect();
        let (mut all, mut failed) = (Vec::new(), 0);
        for task in tasks {
            let (latencies, f) = task.await??;
            all.extend(latencies);
            failed += f;
        }
        anyhow::Ok((all, failed))
    })?;
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{}",
        serde_json::json!({
            "rps": latencies.len() as f64 / seconds,
            "p50": percentile(0.50),
            "p99": percentile(0.99),
            "failed": failed,
        })
    );
    Ok(())
}
