//! The tensor operations a guest can call with values of its choosing (from-bytes,
//! stack, unstack, reading values, writing JSON): a result or an error, never a
//! panic, and the sandbox's accounting bounds what they make.
#![no_main]

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

use common::DTYPES;
use libfuzzer_sys::fuzz_target;
use runinfer::tensor::Tensor;

fuzz_target!(|data: &[u8]| {
    let [dtype, rank, rest @ ..] = data else {
        return;
    };
    let dtype = DTYPES[*dtype as usize % DTYPES.len()];
    let rank = (*rank % 40) as usize;
    // Dimensions: a byte each, 0xff standing for a huge one.
    if rest.len() < rank {
        return;
    }
    let (dims, bytes) = rest.split_at(rank);
    let shape: Vec<usize> = dims
        .iter()
        .map(|&d| if d == 0xff { 1 << 40 } else { d as usize })
        .collect();
    let Ok(t) = Tensor::from_bytes(dtype, shape, bytes.to_vec()) else {
        return;
    };
    assert!(t.footprint() >= t.bytes().len());
    let _ = t.to_f32();
    let _ = t.to_i64();
    let json = serde_json::to_string(&t).expect("a tensor writes as JSON");
    assert!(
        json.len() <= 64 + t.footprint() * 32,
        "JSON out of proportion"
    );
    if t.unstacked_footprint() <= 1 << 24
        && let Ok(rows) = t.unstack()
    {
        assert_eq!(rows.len(), t.shape()[0]);
        if !rows.is_empty() {
            let stacked = Tensor::stack(&rows).expect("rows stack back");
            assert_eq!(stacked, t);
        }
    }
});
