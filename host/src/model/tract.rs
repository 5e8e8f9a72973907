//! The built-in engine: tract-onnx, pure Rust.

use super::{Backend, InputShapes, ModelError, TensorInfo};
use crate::tensor::{DType, Tensor};
use std::sync::{Arc, Mutex};
use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable,
    IntoTValue, OutletId, TDim, TVec, Tensor as TractTensor, TractResult, TypedFact, TypedModel,
    TypedRunnableModel,
};
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::infer::GenericFactoid;

pub struct TractModel {
    plans: Plans,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
}

/// The shape of each input of one call.
type InputSizes = Vec<Vec<usize>>;

enum Plans {
    /// One plan for every size (free dimensions are symbols).
    Symbolic(Arc<TypedRunnableModel>),
    /// A plan per input shapes, made on first use, the recent ones kept.
    PerShape {
        unplanned: InferenceModel,
        plans: Mutex<Vec<(InputSizes, Arc<TypedRunnableModel>)>>,
    },
}

fn dtype_of(dt: DatumType) -> Option<DType> {
    Some(match dt {
        DatumType::F32 => DType::F32,
        DatumType::F64 => DType::F64,
        DatumType::I8 => DType::I8,
        DatumType::I16 => DType::I16,
        DatumType::I32 => DType::I32,
        DatumType::I64 => DType::I64,
        DatumType::U8 => DType::U8,
        DatumType::U16 => DType::U16,
        DatumType::U32 => DType::U32,
        DatumType::U64 => DType::U64,
        DatumType::Bool => DType::Boolean,
        // tract folds some integer computations (e.g. ONNX-ML class lookups) into
        // symbolic dimensions; they are plain i64 values by the time they are
        // returned.
        DatumType::TDim => DType::I64,
        _ => return None,
    })
}

fn datum_of(dt: DType) -> DatumType {
    match dt {
        DType::F32 => DatumType::F32,
        DType::F64 => DatumType::F64,
        DType::I8 => DatumType::I8,
        DType::I16 => DatumType::I16,
        DType::I32 => DatumType::I32,
        DType::I64 => DatumType::I64,
        DType::U8 => DatumType::U8,
        DType::U16 => DatumType::U16,
        DType::U32 => DatumType::U32,
        DType::U64 => DatumType::U64,
        DType::Boolean => DatumType::Bool,
    }
}

fn info(name: String, fact: &TypedFact) -> Result<TensorInfo, String> {
    let dtype = dtype_of(fact.datum_type).ok_or_else(|| {
        format!(
            "`{name}` has unsupported element type {:?}",
            fact.datum_type
        )
    })?;
    let shape = fact
        .shape
        .iter()
        .map(|d| d.to_i64().ok().map(|d| d as u64))
        .collect();
    Ok(TensorInfo { name, dtype, shape })
}

/// Sets the manifest's `input_shapes` (-1: a free dimension) on the model's inputs.
fn fix_input_shapes(
    model: &mut InferenceModel,
    input_names: &[String],
    input_shapes: &InputShapes,
) -> Result<(), String> {
    let err = |e: tract_onnx::prelude::TractError| format!("{e:#}");
    for (name, dims) in input_shapes {
        let ix = input_names.iter().position(|n| n == name).ok_or_else(|| {
            format!(
                "input_shapes: the model has no input `{name}` (inputs: {})",
                input_names.join(", ")
            )
        })?;
        let shape: Vec<TDim> = dims
            .iter()
            .map(|&d| match u64::try_from(d) {
                Ok(d) => TDim::Val(d as i64),
                Err(_) => TDim::Sym(model.symbols.new_with_prefix("dim")),
            })
            .collect();
        let fact = model.input_fact(ix).map_err(err)?.clone().with_shape(shape);
        model.set_input_fact(ix, fact).map_err(err)?;
    }
    Ok(())
}

/// A model tract plans only for known sizes (`symbolic_error` says why not for free
/// ones): plans for the free dimensions set to 1 and to 2 tell which output
/// dimensions follow them (and that the graph plans at all), inputs of those sizes
/// use them, and real inputs get plans of their own on first use.
fn plan_per_shape(
    unplanned: InferenceModel,
    input_names: Vec<String>,
    output_names: Vec<String>,
    symbolic_error: String,
) -> Result<TractModel, String> {
    let err = |e: tract_onnx::prelude::TractError| format!("{e:#}");
    let inputs = input_names
        .into_iter()
        .enumerate()
        .map(|(ix, name)| inference_info(name, unplanned.input_fact(ix).map_err(err)?))
        .collect::<Result<Vec<_>, String>>()?;
    // With every dimension known there is nothing to plan per size.
    if inputs.iter().all(|i| i.shape.iter().all(Option::is_some)) {
        return Err(symbolic_error);
    }
    let with_free = |size: usize| -> Vec<Vec<usize>> {
        inputs
            .iter()
            .map(|i| {
                i.shape
                    .iter()
                    .map(|d| d.map_or(size, |d| d as usize))
                    .collect()
            })
            .collect()
    };
    let plan_for = |shapes: &[Vec<usize>]| {
        plan_for_shapes(&unplanned, shapes)
            .map_err(|e| format!("{symbolic_error}\n(and for fixed sizes {shapes:?}: {e})"))
    };
    let (one, two) = (with_free(1), with_free(2));
    let (plan_one, plan_two) = (plan_for(&one)?, plan_for(&two)?);
    let outputs = output_names
        .into_iter()
        .enumerate()
        .map(|(ix, name)| {
            let facts = [&plan_one, &plan_two].map(|p| {
                p.model()
                    .output_fact(ix)
                    .map(|f| (f.datum_type, f.shape.as_concrete().map(<[usize]>::to_vec)))
                    .map_err(err)
            });
            let [(dt, Some(a)), (_, Some(b))] = [facts[0].clone()?, facts[1].clone()?] else {
                return Err(format!("`{name}` has no known shape"));
            };
            let dtype = dtype_of(dt)
                .ok_or_else(|| format!("`{name}` has unsupported element type {dt:?}"))?;
            let shape = a
                .iter()
                .zip(&b)
                .map(|(&a, &b)| (a == b).then_some(a as u64))
                .collect();
            Ok(TensorInfo { name, dtype, shape })
        })
        .collect::<Result<Vec<_>, String>>()?;
    tracing::debug!("tract plans this model per input size: {symbolic_error}");
    Ok(TractModel {
        plans: Plans::PerShape {
            unplanned,
            plans: Mutex::new(vec![(one, plan_one), (two, plan_two)]),
        },
        inputs,
        outputs,
    })
}

/// Exporters such as skl2onnx declare a free batch dimension without a name,
/// which tract cannot type; give each such dimension a symbol of its own.
fn free_unknown_dims(model: &mut InferenceModel) -> TractResult<()> {
    for ix in 0..model.input_outlets()?.len() {
        let mut fact = model.input_fact(ix)?.clone();
        let unknown: Vec<usize> = fact
            .shape
            .dims()
            .enumerate()
            .filter(|(_, d)| matches!(d, GenericFactoid::Any))
            .map(|(i, _)| i)
            .collect();
        if fact.shape.is_open() || unknown.is_empty() {
            continue;
        }
        for i in unknown {
            let symbol = model.symbols.new_with_prefix("dim");
            fact.shape.set_dim(i, TDim::Sym(symbol));
        }
        model.set_input_fact(ix, fact)?;
    }
    Ok(())
}

impl TractModel {
    pub fn load(bytes: &[u8], input_shapes: &InputShapes) -> Result<Self, String> {
        let err = |e: tract_onnx::prelude::TractError| format!("{e:#}");
        let onnx = tract_onnx::onnx();
        let mut model = onnx.model_for_read(&mut &bytes[..]).map_err(err)?;
        // Names as the ONNX file has them: optimisation may rename nodes.
        let input_names = model
            .input_outlets()
            .map_err(err)?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect::<Vec<_>>();
        fix_input_shapes(&mut model, &input_names, input_shapes)?;
        free_unknown_dims(&mut model).map_err(err)?;
        let output_names = model
            .output_outlets()
            .map_err(err)?
            .iter()
            .map(|&o| {
                model
                    .outlet_label(o)
                    .map(str::to_string)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect::<Vec<_>>();
        // Keep the unplanned graph: some exports (PP-OCR's classifier) compute shapes
        // that tract can only fold for known sizes, and then get a plan per size.
        let unplanned = model.clone();
        let symbolic_error = match model.into_optimized() {
            Ok(typed) => {
                let inputs = describe(&typed, input_names, typed.input_outlets().map_err(err)?)?;
                let outputs = describe(&typed, output_names, typed.output_outlets().map_err(err)?)?;
                let plan = typed.into_runnable().map_err(err)?;
                return Ok(TractModel {
                    plans: Plans::Symbolic(plan),
                    inputs,
                    outputs,
                });
            }
            Err(e) => err(e),
        };
        plan_per_shape(unplanned, input_names, output_names, symbolic_error)
    }

    /// The plan for these input shapes.
    fn plan(&self, shapes: Vec<Vec<usize>>) -> Result<Arc<TypedRunnableModel>, String> {
        let (unplanned, plans) = match &self.plans {
            Plans::Symbolic(plan) => return Ok(plan.clone()),
            Plans::PerShape { unplanned, plans } => (unplanned, plans),
        };
        let mut plans = plans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = plans.iter().position(|(s, _)| *s == shapes) {
            // Most recently used last.
            let entry = plans.remove(at);
            let plan = entry.1.clone();
            plans.push(entry);
            return Ok(plan);
        }
        // Planning holds the lock: instances asking for the same new size wait for
        // one plan rather than each making their own.
        let plan = plan_for_shapes(unplanned, &shapes).map_err(|e| format!("{e:#}"))?;
        if plans.len() >= MAX_PLANS {
            plans.remove(0);
        }
        plans.push((shapes, plan.clone()));
        Ok(plan)
    }
}

/// Plans kept per model planned by size: batch sizes seen recently.
const MAX_PLANS: usize = 16;

fn plan_for_shapes(
    unplanned: &InferenceModel,
    shapes: &[Vec<usize>],
) -> TractResult<Arc<TypedRunnableModel>> {
    let mut model = unplanned.clone();
    for (ix, shape) in shapes.iter().enumerate() {
        let fact = model.input_fact(ix)?.clone().with_shape(shape.clone());
        model.set_input_fact(ix, fact)?;
    }
    model.into_optimized()?.into_runnable()
}

fn describe(
    typed: &TypedModel,
    names: Vec<String>,
    outlets: &[OutletId],
) -> Result<Vec<TensorInfo>, String> {
    names
        .into_iter()
        .zip(outlets)
        .map(|(name, &o)| info(name, typed.outlet_fact(o).map_err(|e| format!("{e:#}"))?))
        .collect()
}

/// Name, type and shape of an input of the unplanned graph (free dimensions: `None`).
fn inference_info(name: String, fact: &InferenceFact) -> Result<TensorInfo, String> {
    let dt = fact
        .datum_type
        .concretize()
        .ok_or_else(|| format!("`{name}` has no known element type"))?;
    let dtype =
        dtype_of(dt).ok_or_else(|| format!("`{name}` has unsupported element type {dt:?}"))?;
    let shape = fact
        .shape
        .dims()
        .map(|d| {
            d.concretize()
                .and_then(|d| d.to_i64().ok())
                .map(|d| d as u64)
        })
        .collect();
    Ok(TensorInfo { name, dtype, shape })
}

impl Backend for TractModel {
    fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    fn run(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, ModelError> {
        let run_err = |message: String| ModelError::Run {
            backend: "tract",
            message,
        };
        let values = inputs
            .iter()
            .map(|t| {
                // Safety: the bytes hold exactly `shape` plain little-endian values
                // of the dtype (checked when the host tensor was built), and every
                // dtype here is plain old data.
                unsafe { TractTensor::from_raw_dt(datum_of(t.dtype()), t.shape(), t.bytes()) }
                    .map(|t| t.into_tvalue())
                    .map_err(|e| run_err(format!("{e:#}")))
            })
            .collect::<Result<TVec<_>, _>>()?;
        let plan = self
            .plan(inputs.iter().map(|t| t.shape().to_vec()).collect())
            .map_err(run_err)?;
        let outputs = plan.run(values).map_err(|e| run_err(format!("{e:#}")))?;
        outputs
            .into_iter()
            .map(|v| {
                let dtype = dtype_of(v.datum_type()).ok_or_else(|| {
                    run_err(format!(
                        "unsupported output element type {:?}",
                        v.datum_type()
                    ))
                })?;
                let t = v
                    .cast_to_dt(datum_of(dtype))
                    .map_err(|e| run_err(format!("{e:#}")))?;
                Tensor::from_bytes(dtype, t.shape().to_vec(), t.as_bytes().to_vec())
                    .map_err(|e| run_err(e.to_string()))
            })
            .collect()
    }
}
