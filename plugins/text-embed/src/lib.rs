//! Sentence embeddings as sentence-transformers computes them for all-MiniLM-L6-v2: a
//! text in, 384 floats out (mean of the token embeddings under the attention mask,
//! L2-normalised). Everything around the model runs here, in the sandbox: BERT
//! WordPiece tokenization (lower-casing, accents, CJK characters, truncation at the
//! model's maximum length) with Hugging Face's `tokenizers` crate from the
//! `tokenizer.json` granted to the plugin, padding per batch to its longest text,
//! and the pooling; the host only runs the transformer.
//!
//! Arguments (`[args]`): `model` (default `minilm`), `tokenizer` (default
//! `/tokenizer/tokenizer.json`, a path in a `[grants]` directory), `max_length`
//! (tokens kept, special tokens included; default 256, sentence-transformers' value
//! for this model), `with_token_ids` (`true`: the inference is
//! `{"embedding": [...], "token_ids": [...]}`, for checking the tokenizer against
//! another implementation; default `false`: the embedding alone).

use runinfer_sdk::*;
use tokenizers::utils::padding::pad_encodings;
use tokenizers::{Encoding, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

const ARGS: [&str; 4] = ["model", "tokenizer", "max_length", "with_token_ids"];

/// Texts per model run: a batch (up to 256 by plugin.toml) is sorted by length and run
/// this many at a time.
const TEXTS_PER_RUN: usize = 16;

#[derive(Default)]
struct TextEmbed {
    model_name: String,
    tokenizer_path: String,
    max_length: usize,
    model: Option<Model>,
    tokenizer: Option<Tokenizer>,
    /// Padding to the longest text of each run (applied per run, not per batch).
    padding: PaddingParams,
    with_token_ids: bool,
    /// Whether the model takes `token_type_ids` (the usual BERT exports do).
    takes_token_types: bool,
    /// The model output of the token states.
    hidden_output: String,
    /// Width of the embedding (the model's hidden size).
    dim: u64,
}

fn config_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid_input(format!("{what}: {e}"))
}

impl ModelHandler for TextEmbed {
    fn configure(&mut self, args: &Args) -> Result<(), Error> {
        if let Some((name, _)) = args.iter().find(|(k, _)| !ARGS.contains(&k.as_str())) {
            return Err(Error::invalid_input(format!(
                "unknown arg `{name}` (text-embed takes {})",
                ARGS.join(", ")
            )));
        }
        self.with_token_ids = match arg(args, "with_token_ids") {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => {
                return Err(Error::invalid_input(format!(
                    "args.with_token_ids: expected true or false, got `{v}`"
                )));
            }
        };
        self.model_name = arg(args, "model").unwrap_or("minilm").to_string();
        self.tokenizer_path = arg(args, "tokenizer")
            .unwrap_or("/tokenizer/tokenizer.json")
            .to_string();
        self.max_length = match arg(args, "max_length") {
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| (3..=512).contains(n))
                .ok_or_else(|| {
                    Error::invalid_input(format!(
                        "args.max_length: expected 3 to 512 tokens, got `{v}`"
                    ))
                })?,
            None => 256,
        };
        Ok(())
    }

    fn signature(&self) -> Signature {
        let embedding = TensorSpec {
            dtype: Dtype::F32,
            shape: Some(vec![Some(self.dim.max(1))]),
        };
        let outputs = if self.with_token_ids {
            ValueKind::Fields(vec![
                FieldSpec {
                    name: "embedding".into(),
                    kind: FieldKind::Tensor(embedding),
                },
                FieldSpec {
                    name: "token_ids".into(),
                    kind: FieldKind::Tensor(TensorSpec {
                        dtype: Dtype::I64,
                        shape: Some(vec![None]),
                    }),
                },
            ])
        } else {
            ValueKind::Tensor(embedding)
        };
        Signature {
            inputs: ValueKind::Text,
            outputs,
        }
    }

    fn load_model(&mut self) -> Result<(), Error> {
        let mut tokenizer = Tokenizer::from_file(&self.tokenizer_path)
            .map_err(|e| config_error(&format!("tokenizer {}", self.tokenizer_path), e))?;
        // sentence-transformers' settings, not the file's (it pads every text to 128).
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: self.max_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| config_error("tokenizer truncation", e))?;
        tokenizer.with_padding(None);
        self.padding = PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        };
        let model = Model::open(&self.model_name)?;
        let names: Vec<String> = model.inputs().into_iter().map(|i| i.name).collect();
        for wanted in ["input_ids", "attention_mask"] {
            if !names.iter().any(|n| n == wanted) {
                return Err(Error::model(format!(
                    "model `{}` has no input `{wanted}` (inputs: {})",
                    self.model_name,
                    names.join(", ")
                )));
            }
        }
        // The token states: `last_hidden_state` as the usual BERT exports name it,
        // else the first output of rank 3.
        let outputs = model.outputs();
        let hidden = outputs
            .iter()
            .find(|o| o.name == "last_hidden_state")
            .or_else(|| outputs.iter().find(|o| o.shape.len() == 3))
            .ok_or_else(|| {
                Error::model(format!(
                    "model `{}` has no [batch, tokens, hidden] output",
                    self.model_name
                ))
            })?;
        self.dim = match hidden.shape.as_slice() {
            [_, _, Some(dim)] if (1..=65_536).contains(dim) => *dim,
            _ => {
                return Err(Error::model(format!(
                    "model `{}`: output `{}` has no fixed hidden size",
                    self.model_name, hidden.name
                )));
            }
        };
        self.hidden_output = hidden.name.clone();
        self.takes_token_types = names.iter().any(|n| n == "token_type_ids");
        self.model = Some(model);
        self.tokenizer = Some(tokenizer);
        Ok(())
    }

    fn run_inference(&mut self, batch: Vec<Value>, _args: &Args) -> Result<Vec<Value>, Error> {
        let Some(tokenizer) = &self.tokenizer else {
            return Err(Error::internal("load_model was not called"));
        };
        let texts = batch
            .into_iter()
            .map(Value::into_text)
            .collect::<Result<Vec<_>, _>>()?;
        let mut encodings = tokenizer
            .encode_batch(texts, true)
            .map_err(|e| Error::invalid_input(format!("cannot tokenize: {e}")))?;
        // Texts of similar length run together, TEXTS_PER_RUN at a time, each run padded
        // to its own longest: the transformer's work is the padded tokens, and a batch
        // padded to its single longest text wastes up to half of it.
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let mut embeddings: Vec<Option<Value>> = (0..encodings.len()).map(|_| None).collect();
        for run in order.chunks(TEXTS_PER_RUN) {
            let mut chunk: Vec<_> = run
                .iter()
                .map(|&i| std::mem::take(&mut encodings[i]))
                .collect();
            pad_encodings(&mut chunk, &self.padding)
                .map_err(|e| Error::internal(format!("cannot pad: {e}")))?;
            for (&i, value) in run.iter().zip(self.embed(&chunk)?) {
                embeddings[i] = Some(value);
            }
        }
        Ok(embeddings
            .into_iter()
            .map(|v| v.expect("every text is in one run"))
            .collect())
    }
}

impl TextEmbed {
    /// One model run on texts padded to the same length: their embeddings.
    fn embed(&self, encodings: &[Encoding]) -> Result<Vec<Value>, Error> {
        let Some(model) = &self.model else {
            return Err(Error::internal("load_model was not called"));
        };
        let rows = encodings.len();
        let tokens = encodings.first().map_or(0, |e| e.get_ids().len());
        let column = |get: fn(&Encoding) -> &[u32]| -> Vec<u8> {
            encodings
                .iter()
                .flat_map(|e| get(e).iter().flat_map(|&v| i64::from(v).to_le_bytes()))
                .collect()
        };
        let shape = [rows as u64, tokens as u64];
        let ids = Tensor::from_bytes(Dtype::I64, &shape, &column(|e| e.get_ids()))?;
        let mask = Tensor::from_bytes(Dtype::I64, &shape, &column(|e| e.get_attention_mask()))?;
        let types = if self.takes_token_types {
            Some(Tensor::from_bytes(
                Dtype::I64,
                &shape,
                &column(|e| e.get_type_ids()),
            )?)
        } else {
            None
        };
        let mut feed = vec![
            ("input_ids".to_string(), &ids),
            ("attention_mask".to_string(), &mask),
        ];
        if let Some(types) = &types {
            feed.push(("token_type_ids".to_string(), types));
        }
        let mut outputs = model.run(&feed)?;
        let hidden = take_output(&mut outputs, &self.hidden_output)?;
        let dim = self.dim as usize;
        if hidden.shape() != [rows as u64, tokens as u64, dim as u64] {
            return Err(Error::model(format!(
                "the model returned shape {:?} for {rows} texts of {tokens} tokens",
                hidden.shape()
            )));
        }
        let hidden = hidden.to_f32()?;
        encodings
            .iter()
            .enumerate()
            .map(|(row, encoding)| {
                let states = &hidden[row * tokens * dim..(row + 1) * tokens * dim];
                let pooled = mean_pool(states, encoding.get_attention_mask(), dim);
                let embedding = Tensor::from_f32(&[dim as u64], &pooled)?;
                if !self.with_token_ids {
                    return Ok(Value::Tensor(embedding));
                }
                // The tokens of this text alone, without the run's padding.
                let ids: Vec<u8> = encoding
                    .get_ids()
                    .iter()
                    .zip(encoding.get_attention_mask())
                    .filter(|&(_, &m)| m == 1)
                    .flat_map(|(&id, _)| i64::from(id).to_le_bytes())
                    .collect();
                let count = ids.len() as u64 / 8;
                let ids = Tensor::from_bytes(Dtype::I64, &[count], &ids)?;
                Ok(Value::Fields(vec![
                    ("embedding".into(), Field::Tensor(embedding)),
                    ("token_ids".into(), Field::Tensor(ids)),
                ]))
            })
            .collect()
    }
}

/// The mean of the token states under the attention mask, L2-normalised (what
/// sentence-transformers' Pooling and Normalize modules do).
fn mean_pool(states: &[f32], mask: &[u32], dim: usize) -> Vec<f32> {
    let mut sum = vec![0f32; dim];
    let mut count = 0f32;
    for (token, &m) in states.chunks_exact(dim).zip(mask) {
        if m == 0 {
            continue;
        }
        count += 1.0;
        for (s, v) in sum.iter_mut().zip(token) {
            *s += v;
        }
    }
    // sentence-transformers clamps the count at 1e-9 and the norm at 1e-12.
    let count = count.max(1e-9);
    for s in &mut sum {
        *s /= count;
    }
    let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    for s in &mut sum {
        *s /= norm;
    }
    sum
}

export_handler!(TextEmbed);
