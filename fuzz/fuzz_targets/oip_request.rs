//! An Open Inference Protocol request body (JSON, or JSON + binary tensor data with
//! `Inference-Header-Content-Length`): examples or a clear 400, never a panic, never
//! more rows than allowed.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use runinfer::serve::fuzz_decode_request;

const MAX_ROWS: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let [selector, lo, hi, body @ ..] = data else {
        return;
    };
    let kind = common::input_kind(*selector);
    // 0xffff: no header; else the JSON part's length.
    let length = u16::from_le_bytes([*lo, *hi]);
    let header = (length != u16::MAX).then(|| length.to_string());
    if let Ok(examples) = fuzz_decode_request(header.as_deref(), body, &kind, MAX_ROWS) {
        assert!(examples.len() <= MAX_ROWS);
    }
});
