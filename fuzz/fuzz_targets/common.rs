//! The element types and input kinds a fuzz input's first bytes choose between.

use runinfer::contract::{FieldKind, FieldSpec, TensorSpec, ValueKind};
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

pub fn input_kind(selector: u8) -> ValueKind {
    let dtype = DTYPES[(selector as usize / 9) % DTYPES.len()];
    let tensor = |shape: Option<Vec<Option<u64>>>| TensorSpec { dtype, shape };
    match selector % 9 {
        0 => ValueKind::Tensor(tensor(Some(vec![Some(4)]))),
        1 => ValueKind::Tensor(tensor(Some(vec![None, Some(3)]))),
        2 => ValueKind::Tensor(tensor(None)),
        3 => ValueKind::Json,
        4 => ValueKind::Text,
        5 => ValueKind::Bytes,
        6 => ValueKind::Tensor(tensor(Some(vec![None, None, None]))),
        // A multi-input model: a sequence, its mask and a text field.
        7 => ValueKind::Fields {
            fields: vec![
                FieldSpec {
                    name: "input".into(),
                    kind: FieldKind::Tensor(tensor(Some(vec![None]))),
                },
                FieldSpec {
                    name: "mask".into(),
                    kind: FieldKind::Tensor(TensorSpec {
                        dtype: DType::I64,
                        shape: Some(vec![None]),
                    }),
                },
                FieldSpec {
                    name: "text".into(),
                    kind: FieldKind::Text,
                },
            ],
        },
        _ => ValueKind::Tensor(tensor(Some(vec![]))),
    }
}
