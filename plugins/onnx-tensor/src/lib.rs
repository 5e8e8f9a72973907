//! The generic numeric handler, like Beam's `OnnxModelHandlerNumpy`: an example is a
//! tensor (a nested JSON array, decoded by the host), the batch is stacked in the host
//! and run through the model, and each example gets its row of the outputs: a tensor
//! for a single-output model, named tensors otherwise.
//!
//! Arguments (`[args]` in plugin.toml): `model` (default `model`), `dtype` of the
//! input (default `f32`), `outputs` (comma-separated names; default all). The
//! inference arg `outputs` overrides the last one for a call.

use runinfer_sdk::*;

#[derive(Default)]
struct OnnxTensor {
    model_name: String,
    dtype: Option<Dtype>,
    wanted_outputs: Option<Vec<String>>,
    model: Option<Model>,
    input_name: String,
}

impl ModelHandler for OnnxTensor {
    fn configure(&mut self, args: &Args) -> Result<(), Error> {
        self.model_name = arg(args, "model").unwrap_or("model").to_string();
        self.dtype = Some(match arg(args, "dtype").unwrap_or("f32") {
            "f32" => Dtype::F32,
            "f64" => Dtype::F64,
            "i32" => Dtype::I32,
            "i64" => Dtype::I64,
            other => {
                return Err(Error::invalid_input(format!(
                    "args.dtype: expected f32, f64, i32 or i64, got `{other}`"
                )));
            }
        });
        self.wanted_outputs = arg(args, "outputs")
            .map(|list| list.split(',').map(|o| o.trim().to_string()).collect());
        Ok(())
    }

    fn input_kind(&self) -> InputKind {
        InputKind::Tensor(TensorSpec {
            dtype: self.dtype.unwrap_or(Dtype::F32),
            shape: None,
        })
    }

    fn load_model(&mut self) -> Result<(), Error> {
        let model = Model::open(&self.model_name)?;
        let inputs = model.inputs();
        let [input] = inputs.as_slice() else {
            return Err(Error::model(format!(
                "onnx-tensor needs a model with one input, `{}` has {}",
                self.model_name,
                inputs.len()
            )));
        };
        self.input_name = input.name.clone();
        self.model = Some(model);
        Ok(())
    }

    fn run_inference(&mut self, batch: Vec<Value>, args: &Args) -> Result<Vec<Value>, Error> {
        let model = self
            .model
            .as_ref()
            .ok_or_else(|| Error::internal("load_model was not called"))?;
        let rows = batch.len();
        let input = Tensor::stack_values(batch)?;
        let mut outputs = model.run(&[(self.input_name.clone(), &input)])?;
        let per_call = arg(args, "outputs")
            .map(|list| list.split(',').map(|o| o.trim().to_string()).collect());
        if let Some(wanted) = per_call.as_ref().or(self.wanted_outputs.as_ref()) {
            outputs = wanted
                .iter()
                .map(|name| Ok((name.clone(), take_output(&mut outputs, name)?)))
                .collect::<Result<_, Error>>()?;
        }
        // Split every output into rows, in the host.
        let mut columns = Vec::with_capacity(outputs.len());
        for (name, tensor) in outputs {
            let split = tensor.unstack()?;
            if split.len() != rows {
                return Err(Error::model(format!(
                    "output `{name}` has {} rows for a batch of {rows}",
                    split.len()
                )));
            }
            columns.push((name, split.into_iter()));
        }
        if let [(_, only)] = columns.as_mut_slice() {
            return Ok(only.map(Value::Tensor).collect());
        }
        Ok((0..rows)
            .map(|_| {
                Value::Tensors(
                    columns
                        .iter_mut()
                        .map(|(name, rows)| (name.clone(), rows.next().expect("row count checked")))
                        .collect(),
                )
            })
            .collect())
    }
}

export_handler!(OnnxTensor);
