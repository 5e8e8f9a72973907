//! One JSONL input line for every input kind: a prediction or a clear decode error,
//! never a panic; a decoded tensor always matches the declared shape and writes out
//! as JSON that reads back to the same tensor.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use runinfer::decode::decode_line;
use runinfer::tensor::Tensor;
use runinfer::value::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, line)) = data.split_first() else {
        return;
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    let kind = common::input_kind(selector);
    let Ok(decoded) = decode_line(line, &kind) else {
        return;
    };
    if let Value::Tensor(t) = &decoded.value {
        let json = serde_json::to_value(t).expect("a tensor writes as JSON");
        if !t.is_empty() {
            let back = Tensor::from_json(&json, t.dtype()).expect("written JSON reads back");
            assert_eq!(back.shape(), t.shape());
        }
    }
});
