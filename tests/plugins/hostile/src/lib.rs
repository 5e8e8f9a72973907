//! A handler that misbehaves on demand: each example is the name of a misdeed (or
//! "ok"). The sandbox tests check that every misdeed ends in a clear error for that
//! call, with the host and the other plugins unaffected.

use runinfer_sdk::*;

#[derive(Default)]
struct Hostile {
    kept: Vec<Tensor>,
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
    fn input_kind(&self) -> InputKind {
        InputKind::Text
    }

    fn load_model(&mut self) -> Result<(), Error> {
        Ok(())
    }

    fn run_inference(&mut self, batch: Vec<Value>, _args: &Args) -> Result<Vec<Value>, Error> {
        let mut out = Vec::with_capacity(batch.len());
        for example in batch {
            let deed = example.into_text()?;
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
            "socket" => std::net::TcpStream::connect("127.0.0.1:9")
                .map(|_| Value::Text("connected".into()))
                .map_err(|e| denied("connecting to 127.0.0.1:9", &e)),
            "ungranted-model" => Model::open("secret").map(|m| Value::Text(m.id())),
            "traversal-model" => Model::open("../../../etc/passwd").map(|m| Value::Text(m.id())),
            "bad-tensor" => Tensor::from_bytes(Dtype::F32, &[2, 2], &[0; 3])
                .map(|_| Value::Text("accepted".into())),
            "tensor-bomb" => loop {
                // Host memory, not guest memory: the host must count it.
                let t = Tensor::from_bytes(Dtype::U8, &[8 << 20], &vec![0; 8 << 20])?;
                self.kept.push(t);
            },
            other => Err(Error::invalid_input(format!("unknown misdeed {other:?}"))),
        }
    }
}

export_handler!(Hostile);
