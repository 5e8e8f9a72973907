//! Iris classifier: an example is the four measurements of a flower, in the data
//! set's order (sepal length, sepal width, petal length, petal width, in cm); the
//! inference is the species name (`label`, text) and the probability of each
//! species (`probabilities`, f32 [3], in the order of the `labels` argument).

use runinfer_sdk::*;

const DEFAULT_LABELS: [&str; 3] = ["setosa", "versicolor", "virginica"];

#[derive(Default)]
struct Iris {
    labels: Vec<String>,
    model: Option<Model>,
}

impl ModelHandler for Iris {
    fn configure(&mut self, args: &Args) -> Result<(), Error> {
        self.labels = match arg(args, "labels") {
            Some(list) => list.split(',').map(|l| l.trim().to_string()).collect(),
            None => DEFAULT_LABELS.iter().map(|l| l.to_string()).collect(),
        };
        Ok(())
    }

    fn signature(&self) -> Signature {
        let classes = Some(self.labels.len() as u64);
        Signature {
            inputs: ValueKind::Tensor(TensorSpec::new(Dtype::F32, &[Some(4)])),
            outputs: ValueKind::Fields(vec![
                FieldSpec::text("label"),
                FieldSpec::tensor("probabilities", Dtype::F32, &[classes]),
            ]),
        }
    }

    fn batch_elements_kwargs(&self) -> Batching {
        Batching {
            min_batch_size: Some(1),
            max_batch_size: Some(64),
            max_batch_duration_ms: Some(10),
        }
    }

    fn load_model(&mut self) -> Result<(), Error> {
        self.model = Some(Model::open("iris")?);
        Ok(())
    }

    fn run_inference(&mut self, batch: Vec<Value>, _args: &Args) -> Result<Vec<Value>, Error> {
        let model = self
            .model
            .as_ref()
            .ok_or_else(|| Error::internal("load_model was not called"))?;
        let rows = batch.len();
        let features = Tensor::stack_values(batch)?;
        let mut outputs = model.run_one(&features)?;
        let labels = take_output(&mut outputs, "label")?.to_i64()?;
        // Split in the host: the probabilities never enter guest memory.
        let probabilities = take_output(&mut outputs, "probabilities")?.unstack()?;
        if labels.len() != rows || probabilities.len() != rows {
            return Err(Error::model(format!(
                "expected {rows} labels and {rows} rows of probabilities, got {} and {}",
                labels.len(),
                probabilities.len()
            )));
        }
        labels
            .iter()
            .zip(probabilities)
            .map(|(&label, probs)| {
                let name = usize::try_from(label)
                    .ok()
                    .and_then(|i| self.labels.get(i))
                    .ok_or_else(|| Error::model(format!("label index {label} out of range")))?;
                Ok(Value::Fields(vec![
                    ("label".to_string(), Field::Text(name.clone())),
                    ("probabilities".to_string(), Field::Tensor(probs)),
                ]))
            })
            .collect()
    }
}

export_handler!(Iris);
