//! Iris classifier: an example is the four measurements of a flower, in the data
//! set's order (sepal length, sepal width, petal length, petal width, in cm); the
//! inference is the species name and the probability of each species.

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

    fn input_kind(&self) -> InputKind {
        InputKind::Tensor(TensorSpec {
            dtype: Dtype::F32,
            shape: Some(vec![Some(4)]),
        })
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
        let probabilities = take_output(&mut outputs, "probabilities")?.to_f32()?;
        let classes = self.labels.len();
        if labels.len() != rows || probabilities.len() != rows * classes {
            return Err(Error::model(format!(
                "expected {rows} labels and {rows}x{classes} probabilities, got {} and {}",
                labels.len(),
                probabilities.len()
            )));
        }
        labels
            .iter()
            .zip(probabilities.chunks(classes))
            .map(|(&label, probs)| {
                let name = usize::try_from(label)
                    .ok()
                    .and_then(|i| self.labels.get(i))
                    .ok_or_else(|| Error::model(format!("label index {label} out of range")))?;
                Ok(Value::Json(prediction_json(name, &self.labels, probs)))
            })
            .collect()
    }
}

/// `{"label": "setosa", "probabilities": {"setosa": 0.97, ...}}`, written into one
/// buffer (this runs for every example, so no `format!`).
fn prediction_json(label: &str, labels: &[String], probabilities: &[f32]) -> String {
    use std::fmt::Write;
    let mut json = String::with_capacity(96);
    json.push_str("{\"label\":");
    push_json_string(&mut json, label);
    json.push_str(",\"probabilities\":{");
    for (i, (name, p)) in labels.iter().zip(probabilities).enumerate() {
        if i > 0 {
            json.push(',');
        }
        push_json_string(&mut json, name);
        json.push(':');
        if p.is_finite() {
            // Rust prints the shortest decimal that reads back as the same f32.
            let _ = write!(json, "{p}");
        } else {
            json.push_str("null");
        }
    }
    json.push_str("}}");
    json
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

export_handler!(Iris);
