//! The input kinds a fuzz input's first byte chooses between.

use runinfer::instance::InputKind;
use runinfer::tensor::DType;

pub fn input_kind(selector: u8) -> InputKind {
    let dtypes = [
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
    let dtype = dtypes[(selector as usize / 8) % dtypes.len()];
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
