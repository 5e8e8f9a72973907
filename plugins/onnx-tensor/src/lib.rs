//! The generic numeric handler, like Beam's `OnnxModelHandlerNumpy` and its keyed
//! tensor variants: the signature comes from the model. A model with one input takes
//! a tensor per example (a nested JSON array); a model with several takes named
//! tensors (`{"input_ids": [...], "attention_mask": [...]}`). Each batch is stacked
//! per input in the host, run once, and split back into one row per example: a
//! tensor for a single output, named tensors otherwise.
//!
//! Arguments (`[args]` in plugin.toml): `model` (default `model`), `outputs`
//! (comma-separated names to return; default all of the model's outputs).

use runinfer_sdk::*;

#[derive(Default)]
struct OnnxTensor {
    model_name: String,
    wanted_outputs: Option<Vec<String>>,
    model: Option<Model>,
    /// The model's inputs and the outputs returned, as one example sees them.
    inputs: Vec<(String, TensorSpec)>,
    outputs: Vec<(String, TensorSpec)>,
}

/// One example's part of a model tensor; a model that states no batch axis gets a
/// spec of any rank.
fn example_spec(info: &TensorInfo) -> TensorSpec {
    info.example_spec().unwrap_or(TensorSpec {
        dtype: info.dtype,
        shape: None,
    })
}

/// A single tensor, or named tensors when there are several.
fn value_kind(parts: &[(String, TensorSpec)]) -> ValueKind {
    match parts {
        [(_, only)] => ValueKind::Tensor(only.clone()),
        several => ValueKind::Fields(
            several
                .iter()
                .map(|(name, spec)| FieldSpec {
                    name: name.clone(),
                    kind: FieldKind::Tensor(spec.clone()),
                })
                .collect(),
        ),
    }
}

impl ModelHandler for OnnxTensor {
    fn configure(&mut self, args: &Args) -> Result<(), Error> {
        // A misspelt or outdated argument would otherwise be ignored without a word.
        if let Some((name, _)) = args.iter().find(|(k, _)| k != "model" && k != "outputs") {
            let why = if name == "dtype" {
                "; the input dtypes come from the model since contract 0.2"
            } else {
                ""
            };
            return Err(Error::invalid_input(format!(
                "unknown arg `{name}` (onnx-tensor takes `model` and `outputs`){why}"
            )));
        }
        self.model_name = arg(args, "model").unwrap_or("model").to_string();
        self.wanted_outputs = arg(args, "outputs")
            .map(|list| list.split(',').map(|o| o.trim().to_string()).collect());
        Ok(())
    }

    fn signature(&self) -> Signature {
        Signature {
            inputs: value_kind(&self.inputs),
            outputs: value_kind(&self.outputs),
        }
    }

    fn load_model(&mut self) -> Result<(), Error> {
        let model = Model::open(&self.model_name)?;
        let inputs = model.inputs();
        if inputs.is_empty() {
            return Err(Error::model(format!(
                "model `{}` has no inputs",
                self.model_name
            )));
        }
        self.inputs = inputs
            .iter()
            .map(|i| (i.name.clone(), example_spec(i)))
            .collect();
        let outputs = model.outputs();
        self.outputs = match &self.wanted_outputs {
            None => outputs
                .iter()
                .map(|o| (o.name.clone(), example_spec(o)))
                .collect(),
            Some(wanted) => wanted
                .iter()
                .map(|name| {
                    let info = outputs.iter().find(|o| o.name == *name).ok_or_else(|| {
                        Error::invalid_input(format!(
                            "args.outputs: model `{}` has no output `{name}`",
                            self.model_name
                        ))
                    })?;
                    Ok((name.clone(), example_spec(info)))
                })
                .collect::<Result<_, Error>>()?,
        };
        self.model = Some(model);
        Ok(())
    }

    fn run_inference(&mut self, batch: Vec<Value>, _args: &Args) -> Result<Vec<Value>, Error> {
        let model = self
            .model
            .as_ref()
            .ok_or_else(|| Error::internal("load_model was not called"))?;
        let rows = batch.len();
        let stacked = match self.inputs.as_slice() {
            [(name, _)] => vec![(name.clone(), Tensor::stack_values(batch)?)],
            _ => Tensor::stack_fields(batch)?,
        };
        let feed: Vec<(String, &Tensor)> = stacked.iter().map(|(n, t)| (n.clone(), t)).collect();
        let mut outputs = model.run(&feed)?;
        // Split every returned output into rows, in the host.
        let mut columns = Vec::with_capacity(self.outputs.len());
        for (name, _) in &self.outputs {
            let split = take_output(&mut outputs, name)?.unstack()?;
            if split.len() != rows {
                return Err(Error::model(format!(
                    "output `{name}` has {} rows for a batch of {rows}",
                    split.len()
                )));
            }
            columns.push((name.clone(), split.into_iter()));
        }
        if let [(_, only)] = columns.as_mut_slice() {
            return Ok(only.map(Value::Tensor).collect());
        }
        Ok((0..rows)
            .map(|_| {
                Value::Fields(
                    columns
                        .iter_mut()
                        .map(|(name, rows)| {
                            let row = rows.next().expect("row count checked");
                            (name.clone(), Field::Tensor(row))
                        })
                        .collect(),
                )
            })
            .collect())
    }
}

export_handler!(OnnxTensor);
