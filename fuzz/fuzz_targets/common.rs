//! The element types and input kinds a fuzz input's first bytes choose between.

use runinfer::instance::InputKind;
use runinfer::tensor::DType;

/// Every element type.
pub const DTYPES: [DType; 11] = [
    DType::F32,
    DType::F64,
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U16,
    DType::U32,
    DType::U64,
    DType::Boolean,
];

pub fn input_kind(selector: u8) -> InputKind {
    let dtype = DTYPES[(selector as usize / 8) % DTYPES.len()];
    match selector % 8 {
        0 => InputKind::Tensor {
            dtype,
            shape: Some(vec![Some(4)]),
        },
        1 => InputKind::Tensor {
            dtype,
            shape: Some(vec![None, Some(3)]),
        },
        2 => InputKind::Tensor { dtype, shape: None },
        3 => InputKind::Json,
        4 => InputKind::Text,
        5 => InputKind::Bytes,
        6 => InputKind::Tensor {
            dtype,
            shape: Some(vec![None, None, None]),
        },
        _ => InputKind::Tensor {
            dtype,
            shape: Some(vec![]),
        },
    }
}
