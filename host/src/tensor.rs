//! Host-owned tensors: the data behind the WIT `tensor` resource.
//!
//! A tensor is a dtype, a shape and little-endian bytes in host memory. Batches are
//! stacked and split here, models read tensors without a copy through the guest, and
//! examples are decoded from / encoded to JSON here, natively.

use serde::ser::{Serialize, SerializeSeq, Serializer};
use std::fmt;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// One byte, 0 or 1.
    #[serde(alias = "bool")]
    Boolean,
}

/// Every dtype with its size and names, in the declaration order of [`DType`] (which
/// is the contract's): the one table the host reads them from.
const DTYPES: [(DType, usize, &str, &str); 11] = [
    // dtype, bytes, name in manifests and JSON, Open Inference Protocol datatype
    (DType::F32, 4, "f32", "FP32"),
    (DType::F64, 8, "f64", "FP64"),
    (DType::I8, 1, "i8", "INT8"),
    (DType::I16, 2, "i16", "INT16"),
    (DType::I32, 4, "i32", "INT32"),
    (DType::I64, 8, "i64", "INT64"),
    (DType::U8, 1, "u8", "UINT8"),
    (DType::U16, 2, "u16", "UINT16"),
    (DType::U32, 4, "u32", "UINT32"),
    (DType::U64, 8, "u64", "UINT64"),
    (DType::Boolean, 1, "boolean", "BOOL"),
];

impl DType {
    fn entry(self) -> &'static (DType, usize, &'static str, &'static str) {
        &DTYPES[self as usize]
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        self.entry().1
    }

    /// The lowercase name used in manifests and JSON.
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// The Open Inference Protocol (KServe v2, Triton) datatype.
    pub fn oip_name(self) -> &'static str {
        self.entry().3
    }

    fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a tensor could not be built or transformed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    /// The data does not fit the shape.
    #[error("{dtype} tensor of shape {shape:?} needs {expected} bytes, got {actual}")]
    Size {
        /// Element type.
        dtype: DType,
        /// Requested shape.
        shape: Vec<usize>,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// Anything else: the message says what.
    #[error("{0}")]
    Invalid(String),
}

/// An n-dimensional array in host memory.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor({} {:?}, {} bytes)",
            self.dtype,
            self.shape,
            self.data.len()
        )
    }
}

/// Number of elements of a shape, or `None` on overflow.
pub(crate) fn volume(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Most dimensions of a tensor (numpy's classic limit): every nesting level is a
/// JSON array level when the tensor is written out.
pub const MAX_RANK: usize = 32;

/// Most nested arrays an empty tensor may describe: a shape like `[2^40, 0]` holds no
/// data, yet would be written out (or unstacked) as 2^40 empty rows.
pub const MAX_EMPTY_STRUCTURE: usize = 1 << 16;

/// Host bytes counted for each tensor beyond its data (the tensor itself, its shape,
/// its table entry and handle), so that many tiny or empty tensors are not free.
const TENSOR_OVERHEAD: usize = 256;

/// The product of the non-zero dimensions (saturating): how many arrays and values a
/// shape describes when written out, whatever its data.
fn structure(shape: &[usize]) -> usize {
    shape
        .iter()
        .filter(|&&d| d != 0)
        .fold(1usize, |acc, &d| acc.saturating_mul(d))
}

/// Checks a shape's rank and, for an empty tensor, how much structure it describes.
fn check_shape(shape: &[usize], len: usize) -> Result<(), TensorError> {
    if shape.len() > MAX_RANK {
        return Err(TensorError::Invalid(format!(
            "a tensor has at most {MAX_RANK} dimensions, got {}",
            shape.len()
        )));
    }
    if len == 0 && structure(shape) > MAX_EMPTY_STRUCTURE {
        return Err(TensorError::Invalid(format!(
            "shape {shape:?} describes more than {MAX_EMPTY_STRUCTURE} empty arrays"
        )));
    }
    Ok(())
}

impl Tensor {
    /// A tensor from little-endian bytes; the length must match the shape.
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> Result<Self, TensorError> {
        let expected = volume(&shape)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| TensorError::Invalid(format!("shape {shape:?} is too large")))?;
        if expected != data.len() {
            return Err(TensorError::Size {
                dtype,
                shape,
                expected,
                actual: data.len(),
            });
        }
        check_shape(&shape, expected)?;
        if dtype == DType::Boolean && data.iter().any(|&b| b > 1) {
            return Err(TensorError::Invalid(
                "boolean tensor bytes must be 0 or 1".into(),
            ));
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// An `f32` tensor.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Self, TensorError> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::from_bytes(DType::F32, shape, data)
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    /// True for a tensor with no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Host memory the tensor stands for, for the sandbox's caps: its bytes or, for a
    /// tensor of many empty rows, its structure, plus a fixed overhead.
    pub fn footprint(&self) -> usize {
        self.data
            .len()
            .max(structure(&self.shape))
            .saturating_add(TENSOR_OVERHEAD)
    }

    /// The combined [`Tensor::footprint`] of the rows [`Tensor::unstack`] would make,
    /// known before they are made.
    pub fn unstacked_footprint(&self) -> usize {
        let Some((&rows, inner)) = self.shape.split_first() else {
            return 0;
        };
        let row_bytes = self.data.len().checked_div(rows).unwrap_or(0);
        rows.saturating_mul(
            row_bytes
                .max(structure(inner))
                .saturating_add(TENSOR_OVERHEAD),
        )
    }

    /// Takes the dtype, shape and bytes apart.
    pub fn into_parts(self) -> (DType, Vec<usize>, Vec<u8>) {
        (self.dtype, self.shape, self.data)
    }

    /// The values as `f64`, whatever the numeric dtype (exact for every dtype but
    /// 64-bit integers beyond 2^53).
    pub fn to_f64(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.get_f64(i)).collect()
    }

    /// The values converted to `f32`.
    pub fn to_f32(&self) -> Vec<f32> {
        if self.dtype == DType::F32 {
            return self
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect();
        }
        (0..self.len()).map(|i| self.get_f64(i) as f32).collect()
    }

    /// The values converted to `i64`; fails for float tensors.
    pub fn to_i64(&self) -> Result<Vec<i64>, TensorError> {
        if self.dtype.is_float() {
            return Err(TensorError::Invalid(format!(
                "a {} tensor cannot be read as i64",
                self.dtype
            )));
        }
        Ok((0..self.len()).map(|i| self.get_i64(i)).collect())
    }

    fn element(&self, i: usize) -> &[u8] {
        let size = self.dtype.size();
        &self.data[i * size..(i + 1) * size]
    }

    fn get_i64(&self, i: usize) -> i64 {
        let b = self.element(i);
        match self.dtype {
            DType::I8 => b[0] as i8 as i64,
            DType::U8 | DType::Boolean => b[0] as i64,
            DType::I16 => i16::from_le_bytes([b[0], b[1]]) as i64,
            DType::U16 => u16::from_le_bytes([b[0], b[1]]) as i64,
            DType::I32 => i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64,
            DType::U32 => u32::from_le_bytes(b.try_into().expect("4 bytes")) as i64,
            DType::I64 => i64::from_le_bytes(b.try_into().expect("8 bytes")),
            DType::U64 => u64::from_le_bytes(b.try_into().expect("8 bytes")) as i64,
            DType::F32 | DType::F64 => self.get_f64(i) as i64,
        }
    }

    fn get_f64(&self, i: usize) -> f64 {
        let b = self.element(i);
        match self.dtype {
            DType::F32 => f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64,
            DType::F64 => f64::from_le_bytes(b.try_into().expect("8 bytes")),
            DType::U64 => u64::from_le_bytes(b.try_into().expect("8 bytes")) as f64,
            _ => self.get_i64(i) as f64,
        }
    }

    /// Stacks tensors of one dtype and shape along a new leading axis.
    pub fn stack<'a>(items: impl IntoIterator<Item = &'a Tensor>) -> Result<Tensor, TensorError> {
        let mut items = items.into_iter().peekable();
        let first = items
            .peek()
            .ok_or_else(|| TensorError::Invalid("cannot stack an empty list".into()))?;
        let (dtype, shape) = (first.dtype, first.shape.clone());
        let mut data = Vec::new();
        let mut count = 0;
        for (i, t) in items.enumerate() {
            if t.dtype != dtype || t.shape != shape {
                return Err(TensorError::Invalid(format!(
                    "cannot stack: item {i} is {} {:?}, item 0 is {dtype} {shape:?}",
                    t.dtype, t.shape
                )));
            }
            if data.is_empty() {
                data.reserve(t.data.len() * 8);
            }
            data.extend_from_slice(&t.data);
            count += 1;
        }
        let mut stacked_shape = Vec::with_capacity(shape.len() + 1);
        stacked_shape.push(count);
        stacked_shape.extend_from_slice(&shape);
        check_shape(&stacked_shape, data.len())?;
        Ok(Tensor {
            dtype,
            shape: stacked_shape,
            data,
        })
    }

    /// Splits along the leading axis (the inverse of [`Tensor::stack`]).
    pub fn unstack(&self) -> Result<Vec<Tensor>, TensorError> {
        let (&rows, inner) = self
            .shape
            .split_first()
            .ok_or_else(|| TensorError::Invalid("cannot unstack a scalar".into()))?;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let row_bytes = self.data.len() / rows;
        // One tensor per row, also when rows hold no data (a `[3, 0]` tensor has three
        // empty rows).
        Ok((0..rows)
            .map(|i| Tensor {
                dtype: self.dtype,
                shape: inner.to_vec(),
                data: self.data[i * row_bytes..(i + 1) * row_bytes].to_vec(),
            })
            .collect())
    }

    /// Decodes a tensor from JSON: a nested array of numbers (or booleans), or an
    /// explicit `{"dtype": "f32", "shape": [..], "data": [..]}` object with flat data.
    pub fn from_json(value: &serde_json::Value, dtype: DType) -> Result<Tensor, TensorError> {
        if let serde_json::Value::Object(map) = value {
            return Self::from_json_object(map, dtype);
        }
        let mut shape = Vec::new();
        let mut probe = value;
        while let serde_json::Value::Array(items) = probe {
            shape.push(items.len());
            match items.first() {
                Some(first) => probe = first,
                None => break,
            }
        }
        let mut data = Vec::with_capacity(volume(&shape).unwrap_or(0) * dtype.size());
        push_nested(value, &shape, dtype, &mut data, &mut Vec::new())?;
        Tensor::from_bytes(dtype, shape, data)
    }

    fn from_json_object(
        map: &serde_json::Map<String, serde_json::Value>,
        expected: DType,
    ) -> Result<Tensor, TensorError> {
        let field = |name: &str| {
            map.get(name)
                .ok_or_else(|| TensorError::Invalid(format!("tensor object has no `{name}`")))
        };
        let dtype = match map.get("dtype") {
            Some(d) => serde_json::from_value::<DType>(d.clone())
                .map_err(|e| TensorError::Invalid(format!("tensor object `dtype`: {e}")))?,
            None => expected,
        };
        if dtype != expected {
            return Err(TensorError::Invalid(format!(
                "expected a {expected} tensor, got {dtype}"
            )));
        }
        let shape: Vec<usize> = serde_json::from_value(field("shape")?.clone()).map_err(|e| {
            TensorError::Invalid(format!("tensor object `shape`: expected [int], {e}"))
        })?;
        let flat = field("data")?.as_array().ok_or_else(|| {
            TensorError::Invalid("tensor object `data`: expected an array".into())
        })?;
        let mut data = Vec::with_capacity(flat.len() * dtype.size());
        for (i, v) in flat.iter().enumerate() {
            push_scalar(v, dtype, &mut data).map_err(|e| at(&[i], e))?;
        }
        Tensor::from_bytes(dtype, shape, data)
    }
}

impl Tensor {
    /// The fast path of [`Tensor::from_json`] for the common example, a rectangular
    /// nested array of numbers, decoded straight from its JSON text (no
    /// `serde_json::Value` in between). `None` for anything else — tensor objects,
    /// booleans, empty arrays, ragged or out-of-range input, text that is not JSON —
    /// which the caller decodes with [`Tensor::from_json`], whose errors say why.
    pub fn from_json_text(text: &str, dtype: DType) -> Option<Tensor> {
        if dtype == DType::Boolean {
            return None;
        }
        let mut nested = Nested {
            dtype,
            data: Vec::new(),
            dims: Vec::new(),
            rank: None,
        };
        let mut de = serde_json::Deserializer::from_str(text);
        serde::de::DeserializeSeed::deserialize(
            Level {
                nested: &mut nested,
                depth: 0,
            },
            &mut de,
        )
        .ok()?;
        de.end().ok()?;
        let shape = nested.dims.into_iter().collect::<Option<Vec<usize>>>()?;
        (shape.len() == nested.rank?).then_some(())?;
        Tensor::from_bytes(dtype, shape, nested.data).ok()
    }
}

/// What [`Tensor::from_json_text`] has read so far.
struct Nested {
    dtype: DType,
    data: Vec<u8>,
    /// The length of every array seen at each depth (they must agree).
    dims: Vec<Option<usize>>,
    /// The depth of the numbers (they must agree).
    rank: Option<usize>,
}

/// One array level (or the number at the bottom) of a nested array.
struct Level<'n> {
    nested: &'n mut Nested,
    depth: usize,
}

/// Any error: the caller falls back to the slow path for the message.
#[derive(Debug)]
struct NotFast;

impl std::fmt::Display for NotFast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a plain nested array")
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Level<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Level<'_> {
    fn leaf<E: serde::de::Error>(
        self,
        push: impl FnOnce(&mut Vec<u8>, DType) -> Option<()>,
    ) -> Result<(), E> {
        let nested = self.nested;
        match nested.rank {
            None => nested.rank = Some(self.depth),
            Some(rank) if rank != self.depth => return Err(E::custom(NotFast)),
            Some(_) => {}
        }
        push(&mut nested.data, nested.dtype).ok_or_else(|| E::custom(NotFast))
    }
}

/// `v` as an integer of the dtype, little-endian; `None` when it does not fit.
fn push_int(out: &mut Vec<u8>, dtype: DType, v: i128) -> Option<()> {
    macro_rules! int {
        ($t:ty) => {
            out.extend_from_slice(&<$t>::try_from(v).ok()?.to_le_bytes())
        };
    }
    match dtype {
        DType::F32 => out.extend_from_slice(&(v as f64 as f32).to_le_bytes()),
        DType::F64 => out.extend_from_slice(&(v as f64).to_le_bytes()),
        DType::I8 => int!(i8),
        DType::I16 => int!(i16),
        DType::I32 => int!(i32),
        DType::I64 => int!(i64),
        DType::U8 => int!(u8),
        DType::U16 => int!(u16),
        DType::U32 => int!(u32),
        DType::U64 => int!(u64),
        DType::Boolean => return None,
    }
    Some(())
}

impl<'de> serde::de::Visitor<'de> for Level<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a nested array of numbers")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(|out, dtype| push_int(out, dtype, i128::from(v)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(|out, dtype| push_int(out, dtype, i128::from(v)))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(|out, dtype| {
            match dtype {
                // Past f32's range `as` gives infinity: the slow path says so.
                DType::F32 => {
                    let narrowed = v as f32;
                    (!narrowed.is_infinite()).then_some(())?;
                    out.extend_from_slice(&narrowed.to_le_bytes());
                }
                DType::F64 => out.extend_from_slice(&v.to_le_bytes()),
                _ => return None,
            }
            Some(())
        })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error as _;
        let (nested, depth) = (self.nested, self.depth);
        if nested.rank.is_some_and(|rank| depth >= rank) || depth >= MAX_RANK {
            return Err(A::Error::custom(NotFast));
        }
        let mut len = 0;
        while seq
            .next_element_seed(Level {
                nested: &mut *nested,
                depth: depth + 1,
            })?
            .is_some()
        {
            len += 1;
        }
        if len == 0 {
            return Err(A::Error::custom(NotFast));
        }
        if nested.dims.len() <= depth {
            nested.dims.resize(depth + 1, None);
        }
        match nested.dims[depth] {
            None => nested.dims[depth] = Some(len),
            Some(known) if known != len => return Err(A::Error::custom(NotFast)),
            Some(_) => {}
        }
        Ok(())
    }
}

fn at(path: &[usize], message: String) -> TensorError {
    let index: String = path.iter().map(|i| format!("[{i}]")).collect();
    TensorError::Invalid(format!("at {index}: {message}"))
}

/// Appends the elements of a nested array of exactly `shape`, checking that it is
/// rectangular.
fn push_nested(
    value: &serde_json::Value,
    shape: &[usize],
    dtype: DType,
    out: &mut Vec<u8>,
    path: &mut Vec<usize>,
) -> Result<(), TensorError> {
    match (shape.split_first(), value) {
        (None, v) => push_scalar(v, dtype, out).map_err(|e| at(path, e)),
        (Some((&len, rest)), serde_json::Value::Array(items)) => {
            if items.len() != len {
                return Err(at(
                    path,
                    format!("ragged array: expected {len} items, got {}", items.len()),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                path.push(i);
                push_nested(item, rest, dtype, out, path)?;
                path.pop();
            }
            Ok(())
        }
        (Some(_), other) => Err(at(
            path,
            format!("ragged array: expected an array, got {}", json_kind(other)),
        )),
    }
}

fn push_scalar(value: &serde_json::Value, dtype: DType, out: &mut Vec<u8>) -> Result<(), String> {
    let not_a = |what: &str| {
        format!(
            "expected {what} for a {dtype} tensor, got {}",
            json_kind(value)
        )
    };
    macro_rules! int {
        ($t:ty) => {{
            let v = value
                .as_i64()
                .map(i128::from)
                .or_else(|| value.as_u64().map(i128::from))
                .ok_or_else(|| not_a("an integer"))?;
            let v = <$t>::try_from(v).map_err(|_| format!("{v} does not fit in {dtype}"))?;
            out.extend_from_slice(&v.to_le_bytes());
        }};
    }
    match dtype {
        DType::F32 => {
            let v = value.as_f64().ok_or_else(|| not_a("a number"))?;
            // Past f32's range `as` gives infinity, which JSON cannot even write back.
            let narrowed = v as f32;
            if narrowed.is_infinite() {
                return Err(format!("{v:e} does not fit in {dtype}"));
            }
            out.extend_from_slice(&narrowed.to_le_bytes());
        }
        DType::F64 => {
            let v = value.as_f64().ok_or_else(|| not_a("a number"))?;
            out.extend_from_slice(&v.to_le_bytes());
        }
        DType::I8 => int!(i8),
        DType::I16 => int!(i16),
        DType::I32 => int!(i32),
        DType::I64 => int!(i64),
        DType::U8 => int!(u8),
        DType::U16 => int!(u16),
        DType::U32 => int!(u32),
        DType::U64 => int!(u64),
        DType::Boolean => {
            let v = value.as_bool().ok_or_else(|| not_a("true or false"))?;
            out.push(v as u8);
        }
    }
    Ok(())
}

/// The JSON type of a value, for error messages.
pub(crate) fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Serializes a tensor as a nested JSON array, floats in their shortest form
/// (an `f32` 0.1 is written `0.1`, not `0.10000000149011612`); NaN and infinities
/// become `null`.
impl Serialize for Tensor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        NestedRows {
            tensor: self,
            axis: 0,
            offset: 0,
        }
        .serialize(serializer)
    }
}

struct NestedRows<'a> {
    tensor: &'a Tensor,
    axis: usize,
    offset: usize,
}

impl Serialize for NestedRows<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let t = self.tensor;
        if self.axis == t.shape.len() {
            let i = self.offset;
            return match t.dtype {
                DType::F32 => f32::from_le_bytes(t.element(i).try_into().expect("4 bytes"))
                    .serialize(serializer),
                DType::F64 => t.get_f64(i).serialize(serializer),
                DType::Boolean => (t.data[i] != 0).serialize(serializer),
                DType::U64 => u64::from_le_bytes(t.element(i).try_into().expect("8 bytes"))
                    .serialize(serializer),
                _ => t.get_i64(i).serialize(serializer),
            };
        }
        let len = t.shape[self.axis];
        let stride = volume(&t.shape[self.axis + 1..]).unwrap_or(0);
        let mut seq = serializer.serialize_seq(Some(len))?;
        for i in 0..len {
            seq.serialize_element(&NestedRows {
                tensor: t,
                axis: self.axis + 1,
                offset: self.offset + i * stride,
            })?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_dtype_table_is_in_declaration_order() {
        for (i, (dtype, ..)) in DTYPES.iter().enumerate() {
            assert_eq!(*dtype as usize, i, "{dtype}");
        }
    }

    #[test]
    fn numbers_past_f32_range_are_refused_not_made_infinite() {
        // Found by the jsonl_decode fuzz target (fuzz/corpus/jsonl_decode/f32-overflow).
        let err = Tensor::from_json(&json!([[5.381e38]]), DType::F32).unwrap_err();
        assert_eq!(err.to_string(), "at [0][0]: 5.381e38 does not fit in f32");
        assert!(Tensor::from_json(&json!([3.4e38, -3.4e38]), DType::F32).is_ok());
    }

    #[test]
    fn rows_without_data_are_still_one_tensor_per_row() {
        let t = Tensor::from_bytes(DType::F32, vec![3, 0], Vec::new()).unwrap();
        let rows = t.unstack().unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r.shape() == [0] && r.is_empty()));
        assert_eq!(serde_json::to_string(&t).unwrap(), "[[],[],[]]");
    }

    #[test]
    fn shapes_that_describe_more_than_they_hold_are_refused() {
        let huge_empty = Tensor::from_bytes(DType::F32, vec![1 << 40, 0], Vec::new());
        assert!(
            huge_empty
                .unwrap_err()
                .to_string()
                .contains("describes more than 65536 empty arrays")
        );
        let deep = Tensor::from_bytes(DType::U8, vec![1; MAX_RANK + 1], vec![0]);
        assert!(
            deep.unwrap_err()
                .to_string()
                .contains("at most 32 dimensions")
        );
        let overflow = Tensor::from_bytes(DType::F32, vec![1 << 62, 1 << 62], Vec::new());
        assert!(overflow.unwrap_err().to_string().contains("too large"));
        // Empty rows are not free for the sandbox's accounting.
        let t = Tensor::from_bytes(DType::F32, vec![1 << 16, 0], Vec::new()).unwrap();
        assert!(t.footprint() >= 1 << 16);
        assert!(t.unstacked_footprint() >= (1 << 16) * 256);
    }

    #[test]
    fn nested_json_round_trips_with_shortest_floats() {
        let t =
            Tensor::from_json(&json!([[0.1, 2.0, -3.5], [4.0, 5.25, 6.0]]), DType::F32).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.to_f32(), vec![0.1, 2.0, -3.5, 4.0, 5.25, 6.0]);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "[[0.1,2.0,-3.5],[4.0,5.25,6.0]]"
        );
    }

    #[test]
    fn ragged_and_mistyped_arrays_are_rejected_with_their_position() {
        let err = Tensor::from_json(&json!([[1, 2], [3]]), DType::F32).unwrap_err();
        assert_eq!(
            err.to_string(),
            "at [1]: ragged array: expected 2 items, got 1"
        );
        let err = Tensor::from_json(&json!([1, "x"]), DType::F32).unwrap_err();
        assert_eq!(
            err.to_string(),
            "at [1]: expected a number for a f32 tensor, got a string"
        );
        let err = Tensor::from_json(&json!([300]), DType::U8).unwrap_err();
        assert_eq!(err.to_string(), "at [0]: 300 does not fit in u8");
    }

    #[test]
    fn explicit_tensor_objects_are_checked_against_their_shape() {
        let t = Tensor::from_json(
            &json!({"dtype": "i64", "shape": [2, 2], "data": [1, 2, 3, 4]}),
            DType::I64,
        )
        .unwrap();
        assert_eq!(t.to_i64().unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(serde_json::to_string(&t).unwrap(), "[[1,2],[3,4]]");
        let err =
            Tensor::from_json(&json!({"shape": [3], "data": [1, 2]}), DType::F32).unwrap_err();
        assert!(
            matches!(
                err,
                TensorError::Size {
                    expected: 12,
                    actual: 8,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn stack_and_unstack_are_inverse() {
        let a = Tensor::from_f32(vec![2], &[1.0, 2.0]).unwrap();
        let b = Tensor::from_f32(vec![2], &[3.0, 4.0]).unwrap();
        let s = Tensor::stack([&a, &b]).unwrap();
        assert_eq!(s.shape(), &[2, 2]);
        assert_eq!(s.unstack().unwrap(), vec![a.clone(), b]);
        let c = Tensor::from_f32(vec![3], &[1.0, 2.0, 3.0]).unwrap();
        assert!(Tensor::stack([&a, &c]).is_err());
        assert!(Tensor::stack(std::iter::empty()).is_err());
    }

    #[test]
    fn bytes_must_match_the_shape() {
        let err = Tensor::from_bytes(DType::F32, vec![2, 2], vec![0; 15]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "f32 tensor of shape [2, 2] needs 16 bytes, got 15"
        );
        assert!(Tensor::from_bytes(DType::Boolean, vec![1], vec![2]).is_err());
        assert!(Tensor::from_bytes(DType::F32, vec![usize::MAX, 2], vec![]).is_err());
    }

    #[test]
    fn conversions_cover_integer_dtypes() {
        let t = Tensor::from_bytes(
            DType::I16,
            vec![2],
            [(-2i16).to_le_bytes(), 7i16.to_le_bytes()].concat(),
        )
        .unwrap();
        assert_eq!(t.to_i64().unwrap(), vec![-2, 7]);
        assert_eq!(t.to_f32(), vec![-2.0, 7.0]);
        assert!(Tensor::from_f32(vec![1], &[1.5]).unwrap().to_i64().is_err());
    }

    #[test]
    fn the_text_fast_path_decodes_what_the_value_path_decodes() {
        for (text, dtype) in [
            ("[5.1, 3.5, 1.4, 0.2]", DType::F32),
            ("[[1, 2, 3], [4, 5, 6]]", DType::I64),
            ("[[[0.5]], [[-1e3]]]", DType::F64),
            ("7", DType::U8),
            ("[255, 0]", DType::U8),
            ("[-3, 2]", DType::I8),
            ("[1.5, 2]", DType::F32),
            ("[18446744073709551615]", DType::U64),
        ] {
            let fast = Tensor::from_json_text(text, dtype).expect(text);
            let slow = Tensor::from_json(&serde_json::from_str(text).unwrap(), dtype).unwrap();
            assert_eq!(
                (fast.shape(), fast.bytes()),
                (slow.shape(), slow.bytes()),
                "{text}"
            );
        }
        // Everything else goes the value path, which says why it fails (or decodes it).
        for (text, dtype) in [
            ("[[1, 2], [3]]", DType::F32),
            ("[[1], 2]", DType::F32),
            ("[1, [2]]", DType::F32),
            ("[]", DType::F32),
            ("[[], []]", DType::F32),
            ("[1.5]", DType::I32),
            ("[256]", DType::U8),
            ("[-1]", DType::U32),
            ("[1e39]", DType::F32),
            ("[true]", DType::Boolean),
            ("[1, \"x\"]", DType::F32),
            (
                "{\"dtype\": \"f32\", \"shape\": [1], \"data\": [1]}",
                DType::F32,
            ),
            ("[1, 2] x", DType::F32),
            ("[null]", DType::F64),
        ] {
            assert!(Tensor::from_json_text(text, dtype).is_none(), "{text}");
        }
    }
}
