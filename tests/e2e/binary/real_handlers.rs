//! Real handlers for real models against the reference pipelines their users would
//! otherwise run: the text-embed plugin's tokenizer and pooling in the guest, the
//! transformer in onnxruntime in the host, compared with Python `tokenizers` +
//! onnxruntime + numpy (tests/python/text_embed.py); the ocr plugin's image decoding
//! and PP-OCR pre- and post-processing in the guest, its three models in the host,
//! compared with rapidocr-onnxruntime (tests/python/ocr.py).

use super::run_python_job;

#[test]
fn text_embed_matches_python_tokenizers_and_onnxruntime() {
    run_python_job("requirements.txt", "py-clients", "text_embed.py", &[]);
}

#[test]
fn ocr_reads_the_lines_rapidocr_reads() {
    run_python_job("requirements-ocr.txt", "py-ocr", "ocr.py", &[]);
}
