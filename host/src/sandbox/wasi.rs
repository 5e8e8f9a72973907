//! What an instance may reach outside its own memory: the WASI context built from the
//! manifest's `[grants]` (nothing by default), a bounded capture of what the guest
//! prints, so that a panic's message reaches the dead letter, and waits that give
//! the core slot up and end at the time limit.

use crate::manifest::Grants;
use crate::schedule::Slot;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;
use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::io::poll as async_poll;
use wasmtime_wasi::p2::bindings::io::streams::{
    HostInputStream as AsyncInput, HostOutputStream as AsyncOutput,
};
use wasmtime_wasi::p2::bindings::sync::io::poll as sync_poll;
use wasmtime_wasi::p2::bindings::sync::io::streams as sync_streams;
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, DynPollable, OutputStream, Pollable, StreamError, StreamResult,
};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

/// Bytes of guest output kept (the most recent).
const TAIL_BYTES: usize = 4096;

/// The last few KiB a guest wrote to stdout or stderr. Writes never fail and never
/// grow memory past the bound.
#[derive(Clone, Default)]
pub(crate) struct OutputTail(Arc<Mutex<Vec<u8>>>);

impl OutputTail {
    fn append(&self, bytes: &[u8]) {
        let mut tail = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tail.extend_from_slice(bytes);
        if tail.len() > TAIL_BYTES {
            let cut = tail.len() - TAIL_BYTES;
            tail.drain(..cut);
        }
    }

    /// Forgets what was written (before each call).
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The last non-empty lines written, joined, if any (for error messages).
    pub(crate) fn last_lines(&self, max_chars: usize) -> Option<String> {
        let tail = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&tail);
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let start = text.len().saturating_sub(max_chars);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        // What a guest printed reaches logs and `runinfer list`: escaped, like its
        // log lines.
        Some(crate::untrusted::escape_control(&text[start..].replace('\n', " | ")).into_owned())
    }
}

impl IsTerminal for OutputTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputTail {
    async fn ready(&mut self) {}
}

impl OutputStream for OutputTail {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for OutputTail {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.append(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The WASI context of one instance: only what `grants` names; stdout and stderr go
/// to `output`.
pub(crate) fn wasi_context(
    grants: &Grants,
    plugin_dir: &Path,
    output: &OutputTail,
) -> anyhow::Result<WasiCtx> {
    let mut builder = WasiCtxBuilder::new();
    builder.stdout(output.clone()).stderr(output.clone());
    for (key, value) in &grants.env {
        builder.env(key, value);
    }
    for dir in &grants.dirs {
        builder.preopened_dir(plugin_dir.join(&dir.path), &dir.guest, FsPerms::ReadOnly)?;
    }
    if grants.network {
        // wasmtime-wasi allows no TCP or UDP unless asked, even with every address
        // permitted: all three are what `network = true` grants.
        builder
            .inherit_network()
            .allow_ip_name_lookup(true)
            .allow_tcp(true)
            .allow_udp(true);
    }
    Ok(builder.build())
}

/// What `wasi:io/poll` and `wasi:io/streams` work on for one instance: the same calls
/// as wasmtime-wasi's, but a call blocked in them (a sleep, a wait for I/O, a
/// `blocking-read` on a granted socket) gives its core slot up while it waits and is
/// stopped at its time limit. Without this a sleeping handler would
/// keep a core slot from every other tenant, and sleep past its limit: the time limit
/// is otherwise checked only while wasm runs.
pub(crate) struct BlockingIo<'a> {
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) slot: Option<&'a mut Slot>,
    /// When the call must end; extended by the time it then waits for a slot again.
    pub(crate) deadline: &'a mut Instant,
}

/// [`HasData`] of [`BlockingIo`], to add it to a linker.
pub(crate) struct BlockingIoData;

impl HasData for BlockingIoData {
    type Data<'a> = BlockingIo<'a>;
}

impl BlockingIo<'_> {
    /// Runs a wait of `wasi:io/poll`: at once if it is ready at once (a clock
    /// already past, a stream with room), else without the core slot and until the
    /// call's deadline at most.
    fn wait<R, E>(
        &mut self,
        wait: impl AsyncFnOnce(&mut ResourceTable) -> Result<R, E>,
        trap: impl FnOnce(wasmtime::Error) -> E,
    ) -> Result<R, E> {
        let deadline = *self.deadline;
        let (table, slot) = (&mut *self.table, &mut self.slot);
        let (outcome, paused) = wasmtime_wasi::runtime::in_tokio(async move {
            let mut wait = std::pin::pin!(wait(table));
            let ready = std::future::poll_fn(|cx| {
                Poll::Ready(match wait.as_mut().poll(cx) {
                    Poll::Ready(result) => Some(result),
                    Poll::Pending => None,
                })
            })
            .await;
            if let Some(result) = ready {
                return (Some(result), false);
            }
            let paused = match slot {
                Some(slot) => {
                    slot.pause();
                    true
                }
                None => false,
            };
            let result = tokio::time::timeout_at(deadline.into(), wait).await.ok();
            (result, paused)
        });
        if paused && let Some(slot) = self.slot.as_mut() {
            *self.deadline += slot.resume();
        }
        // Past the time limit while blocked: stopped like a call that ran too long.
        outcome.unwrap_or_else(|| Err(trap(wasmtime::Trap::Interrupt.into())))
    }
}

impl sync_poll::Host for BlockingIo<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        self.wait(
            async |table| async_poll::Host::poll(table, pollables).await,
            |e| e,
        )
    }
}

impl sync_poll::HostPollable for BlockingIo<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        wasmtime_wasi::runtime::in_tokio(async_poll::HostPollable::ready(
            &mut *self.table,
            pollable,
        ))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        self.wait(
            async |table| async_poll::HostPollable::block(table, pollable).await,
            |e| e,
        )
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(&mut *self.table, pollable)
    }
}

impl sync_streams::Host for BlockingIo<'_> {
    fn convert_stream_error(
        &mut self,
        err: StreamError,
    ) -> wasmtime::Result<sync_streams::StreamError> {
        sync_streams::Host::convert_stream_error(&mut *self.table, err)
    }
}

impl sync_streams::HostOutputStream for BlockingIo<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        sync_streams::HostOutputStream::drop(&mut *self.table, stream)
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        sync_streams::HostOutputStream::check_write(&mut *self.table, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        sync_streams::HostOutputStream::write(&mut *self.table, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        self.wait(
            async |table| AsyncOutput::blocking_write_and_flush(table, stream, bytes).await,
            StreamError::Trap,
        )
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        self.wait(
            async |table| AsyncOutput::blocking_write_zeroes_and_flush(table, stream, len).await,
            StreamError::Trap,
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        sync_streams::HostOutputStream::subscribe(&mut *self.table, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        sync_streams::HostOutputStream::write_zeroes(&mut *self.table, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        sync_streams::HostOutputStream::flush(&mut *self.table, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        self.wait(
            async |table| AsyncOutput::blocking_flush(table, stream).await,
            StreamError::Trap,
        )
    }

    fn splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        sync_streams::HostOutputStream::splice(&mut *self.table, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        self.wait(
            async |table| AsyncOutput::blocking_splice(table, dst, src, len).await,
            StreamError::Trap,
        )
    }
}

impl sync_streams::HostInputStream for BlockingIo<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        sync_streams::HostInputStream::drop(&mut *self.table, stream)
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        sync_streams::HostInputStream::read(&mut *self.table, stream, len)
    }

    fn blocking_read(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        self.wait(
            async |table| AsyncInput::blocking_read(table, stream, len).await,
            StreamError::Trap,
        )
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        sync_streams::HostInputStream::skip(&mut *self.table, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        self.wait(
            async |table| AsyncInput::blocking_skip(table, stream, len).await,
            StreamError::Trap,
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynInputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        sync_streams::HostInputStream::subscribe(&mut *self.table, stream)
    }
}
