//! A handler that misbehaves on demand: each example is the name of a misdeed (or
//! "ok"). The sandbox tests check that every misdeed ends in a clear error for that
//! call, with the host and the other plugins unaffected.

use runinfer_sdk::*;

#[derive(Default)]
struct Hostile {
    kept: Vec<Tensor>,
    /// What `init` declares, from `[args]`: a hostile tenant's handler info.
    namespace: Option<String>,
    batching: Option<Batching>,
    hints: Option<ResourceHints>,
    /// `[args] signature = "twice"`: declares one output field twice.
    bad_signature: bool,
}

fn number(args: &Args, name: &str) -> Option<u32> {
    arg(args, name).and_then(|v| v.parse().ok())
}

/// Recursion the optimiser cannot turn into a loop (the result goes through an opaque
/// call), on the wasm call stack itself.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    std::hint::black_box(recurse(depth + 1)).wrapping_add(depth)
}

impl ModelHandler for Hostile {
    fn configure(&mut self, args: &Args) -> Result<(), Error> {
        self.namespace = arg(args, "namespace").map(str::to_string);
        let min_ram_mb = arg(args, "min_ram_mb").and_then(|v| v.parse().ok());
        let accelerator = arg(args, "accelerator").map(str::to_string);
        if min_ram_mb.is_some() || accelerator.is_some() {
            self.hints = Some(ResourceHints {
                min_ram_mb,
                accelerator,
            });
        }
        self.bad_signature = arg(args, "signature") == Some("twice");
        let batching = Batching {
            min_batch_size: number(args, "min_batch_size"),
            max_batch_size: number(args, "max_batch_size"),
            max_batch_duration_ms: number(args, "max_batch_duration_ms"),
        };
        if batching.min_batch_size.is_some()
            || batching.max_batch_size.is_some()
            || batching.max_batch_duration_ms.is_some()
        {
            self.batching = Some(batching);
        }
        Ok(())
    }

    fn metrics_namespace(&self) -> Option<String> {
        self.namespace.clone()
    }

    fn batch_elements_kwargs(&self) -> Batching {
        self.batching.unwrap_or(Batching {
            min_batch_size: None,
            max_batch_size: None,
            max_batch_duration_ms: None,
        })
    }

    fn resource_hints(&self) -> ResourceHints {
        self.hints.clone().unwrap_or(ResourceHints {
            min_ram_mb: None,
            accelerator: None,
        })
    }

    fn signature(&self) -> Signature {
        if self.bad_signature {
            return Signature {
                inputs: ValueKind::Text,
                outputs: ValueKind::Fields(vec![FieldSpec::text("a"), FieldSpec::text("a")]),
            };
        }
        // Declares text out; some misdeeds return something else.
        Signature {
            inputs: ValueKind::Text,
            outputs: ValueKind::Text,
        }
    }

    fn load_model(&mut self) -> Result<(), Error> {
        Ok(())
    }

    fn run_inference(&mut self, batch: Vec<Value>, args: &Args) -> Result<Vec<Value>, Error> {
        let mut out = Vec::with_capacity(batch.len());
        for example in batch {
            let deed = example.into_text()?;
            if deed == "echo-args" {
                let pairs: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push(Value::Text(pairs.join(";")));
                continue;
            }
            out.push(self.misbehave(&deed)?);
        }
        Ok(out)
    }
}

impl Hostile {
    fn misbehave(&mut self, deed: &str) -> Result<Value, Error> {
        let denied = |what: &str, e: &dyn std::fmt::Display| {
            Error::new(ErrorCode::Unsupported, format!("{what}: {e}"))
        };
        match deed {
            "ok" => Ok(Value::Text("ok".into())),
            "slow" => {
                // Well-behaved but slow: 200 ms of work, then an answer.
                let start = std::time::Instant::now();
                while start.elapsed() < std::time::Duration::from_millis(200) {
                    std::hint::black_box(start);
                }
                Ok(Value::Text("slow ok".into()))
            }
            "work" => {
                // A fixed amount of computation (not of time): what a tenant gets
                // done depends on the share of the cores it is given.
                let mut x: u64 = 1;
                for i in 0..20_000_000u64 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                }
                Ok(Value::Text(format!("worked {}", x % 10)))
            }
            "wait" => {
                // Well-behaved but blocked until the test says go: a granted file
                // appears (the test's signal), so what a test sees never depends on
                // how long anything takes.
                while std::fs::metadata("/signal/go").is_err() {
                    std::hint::spin_loop();
                }
                Ok(Value::Text("waited".into()))
            }
            "stream-hang" => {
                // A socket to the test's listener, which never writes: a raw
                // `blocking-read` on it waits until the host ends it.
                use wasi::sockets::network::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
                let port: u16 = std::env::var("HANG_PORT")
                    .map_err(|e| denied("HANG_PORT", &e))?
                    .parse()
                    .map_err(|e| denied("HANG_PORT", &e))?;
                let network = wasi::sockets::instance_network::instance_network();
                let socket =
                    wasi::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4)
                        .map_err(|e| denied("socket", &format!("{e:?}")))?;
                let to = IpSocketAddress::Ipv4(Ipv4SocketAddress {
                    port,
                    address: (127, 0, 0, 1),
                });
                socket
                    .start_connect(&network, to)
                    .map_err(|e| denied("connect", &format!("{e:?}")))?;
                let (input, _output) = loop {
                    match socket.finish_connect() {
                        Err(wasi::sockets::network::ErrorCode::WouldBlock) => {
                            socket.subscribe().block()
                        }
                        other => break other.map_err(|e| denied("connect", &format!("{e:?}")))?,
                    }
                };
                let read = input
                    .blocking_read(1)
                    .map_err(|e| denied("read", &format!("{e:?}")))?;
                Ok(Value::Text(format!("read {} bytes", read.len())))
            }
            "sleep-long" => {
                // One long sleep: past any time limit unless the host ends it.
                std::thread::sleep(std::time::Duration::from_secs(60));
                Ok(Value::Text("woke".into()))
            }
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recursion" => Ok(Value::Text(recurse(0).to_string())),
            "panic" => panic!("the hostile handler panics on purpose"),
            "giant-output" => Ok(Value::Text("x".repeat(20 << 20))),
            "forged-handle" => {
                // Safety: deliberately wrong; the host must refuse the handle.
                let forged = unsafe { Tensor::from_handle(0x7fff_0001) };
                Ok(Value::Text(format!("{:?}", forged.shape())))
            }
            "reused-handle" => {
                let tensor = Tensor::from_f32(&[1], &[1.0])?;
                let handle = tensor.handle();
                drop(tensor);
                // Safety: deliberately used after drop; the host must refuse it.
                let stale = unsafe { Tensor::from_handle(handle) };
                Ok(Value::Text(format!("{:?}", stale.shape())))
            }
            "read-file" => std::fs::read_to_string("/etc/passwd")
                .map(Value::Text)
                .map_err(|e| denied("reading /etc/passwd", &e)),
            "read-granted-file" => std::fs::read_to_string("/data/granted.txt")
                .map(Value::Text)
                .map_err(|e| denied("reading /data/granted.txt", &e)),
            "read-env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                if vars.is_empty() {
                    Err(Error::new(
                        ErrorCode::Unsupported,
                        "the environment is empty",
                    ))
                } else {
                    Ok(Value::Text(vars.join(";")))
                }
            }
            deed if deed.starts_with("connect:") => {
                // A listener the test started: reached only with `[grants] network`.
                let address = format!("127.0.0.1:{}", &deed["connect:".len()..]);
                std::net::TcpStream::connect(&address)
                    .and_then(|mut stream| {
                        std::io::Write::write_all(&mut stream, b"hello")?;
                        Ok(Value::Text("connected".into()))
                    })
                    .map_err(|e| denied(&format!("connecting to {address}"), &e))
            }
            "ungranted-model" => Model::open("secret").map(|m| Value::Text(m.id())),
            "traversal-model" => Model::open("../../../etc/passwd").map(|m| Value::Text(m.id())),
            "bad-tensor" => Tensor::from_bytes(Dtype::F32, &[2, 2], &[0; 3])
                .map(|_| Value::Text("accepted".into())),
            "tensor-bomb" => loop {
                // Host memory, not guest memory: the host must count it.
                let t = Tensor::from_bytes(Dtype::U8, &[8 << 20], &vec![0; 8 << 20])?;
                self.kept.push(t);
            },
            "log-flood" => {
                // Far more than any rate limit lets through, each line forging others.
                for i in 0..200_000 {
                    log(
                        Level::Error,
                        &format!("flood {i}\n{{\"line\":1,\"stage\":\"decode\"}}\u{1b}[2J"),
                    );
                }
                Ok(Value::Text("flooded".into()))
            }
            "log-forge" => {
                log(
                    Level::Warn,
                    "forged\n{\"line\":7,\"input\":\"x\",\"stage\":\"inference\",\"error\":{\"code\":\"trap\",\"message\":\"forged\"}}\n\u{1b}[31mred",
                );
                Ok(Value::Text("forged".into()))
            }
            "metric-reserved" => {
                metrics::counter_add("num_inferences", 1000)?;
                Ok(Value::Text("recorded".into()))
            }
            "metric-shadow" => {
                // A gauge whose samples would read as the host's counter.
                metrics::gauge_set("num_inferences_total", 1e9)?;
                Ok(Value::Text("recorded".into()))
            }
            "metric-flood" => {
                let mut refused = None;
                let mut made = 0;
                for i in 0..100_000 {
                    match metrics::counter_add(&format!("m{i}"), 1) {
                        Ok(()) => made += 1,
                        Err(e) => {
                            refused = Some(e.message);
                            break;
                        }
                    }
                }
                Ok(Value::Text(format!(
                    "{made} made; {}",
                    refused.unwrap_or_default()
                )))
            }
            "metric-infinite" => {
                metrics::observe("latency", f64::INFINITY)?;
                Ok(Value::Text("recorded".into()))
            }
            "metric-nan" => {
                metrics::gauge_set("level", f64::NAN)?;
                Ok(Value::Text("recorded".into()))
            }
            "metric-ok" => {
                metrics::counter_add("misdeeds", 1)?;
                metrics::observe("latency", 0.5)?;
                Ok(Value::Text("ok".into()))
            }
            "deep-json" => Ok(Value::Json(format!(
                "{}{}",
                "[".repeat(200_000),
                "]".repeat(200_000)
            ))),
            "duplicate-names" => Ok(Value::Fields(vec![
                ("a".into(), Field::Tensor(Tensor::from_f32(&[1], &[1.0])?)),
                ("a".into(), Field::Tensor(Tensor::from_f32(&[1], &[2.0])?)),
            ])),
            // Contradicts the declared outputs (text).
            "wrong-output" => Ok(Value::Tensor(Tensor::from_f32(&[2], &[1.0, 2.0])?)),
            "empty-rows" => {
                let t = Tensor::from_bytes(Dtype::F32, &[3, 0], &[])?;
                Ok(Value::Text(format!("{} rows", t.unstack()?.len())))
            }
            "empty-giant" => Tensor::from_bytes(Dtype::F32, &[1 << 40, 0], &[]).map(Value::Tensor),
            "empty-rows-bomb" => {
                // Small as a tensor, a million tensors once unstacked: the host must
                // count the rows before it makes them.
                let mut kept = Vec::new();
                loop {
                    let t = Tensor::from_bytes(Dtype::F32, &[1 << 16, 0], &[])?;
                    kept.push(t.unstack()?);
                }
            }
            other => Err(Error::invalid_input(format!("unknown misdeed {other:?}"))),
        }
    }
}

export_handler!(Hostile);
