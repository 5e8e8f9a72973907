//! Real handlers for real models against the reference pipelines their users would
//! otherwise run (tests/python/text_embed.py): the text-embed plugin's tokenizer and
//! pooling in the guest, the transformer in onnxruntime in the host, compared with
//! Python `tokenizers` + onnxruntime + numpy.

use super::run_python_job;

#[test]
fn text_embed_matches_python_tokenizers_and_onnxruntime() {
    run_python_job("requirements.txt", "py-clients", "text_embed.py", &[]);
}
