"""plugins/text-embed against the reference pipeline users would otherwise run: Python
`tokenizers` on the same tokenizer.json (truncation at 256, padding to the batch's
longest), onnxruntime on the same ONNX model, numpy mean pooling under the attention
mask and L2 normalisation (sentence-transformers' Pooling + Normalize).

`runinfer run` (the real binary) embeds a few hundred varied texts — accents,
punctuation, CJK, emoji, control characters, empty text, texts far past the maximum
length — once with `with_token_ids = true` to compare the tokenizer's ids, once as
bundled; then `runinfer serve` answers tritonclient's BYTES requests with the same
embeddings. Token ids must be identical, embeddings within cosine 0.9999.

Usage: text_embed.py REPO_ROOT RUNINFER_BINARY
"""

import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from checks import check, served

WORDS = (
    "the quick brown fox jumps over a lazy dog while model handlers run inside "
    "WebAssembly sandboxes and tokenizers split unaffordable words into pieces"
).split()
ACCENTED = ["Café", "naïve", "résumé", "Ångström", "façade", "jalapeño", "Dvořák",
            "Zürich", "São Paulo", "Łódź", "crème brûlée", "ÉCOLE", "İstanbul", "Straße"]
CJK = ["我爱自然语言处理", "東京は日本の首都です", "한국어 문장도 있습니다", "机器学习模型",
       "漢字とかなカナ"]
ODD = ["🙂 emoji 🚀!", "tabs\tand\nnewlines", "zero\u200bwidth", "control\u0007bell",
       "x" * 150, "e-mail: someone@example.com, url: https://example.org/a?b=c",
       "3.14159 - 2,718 = 0.423", "¿Qué? ¡Sí!", "«quotes» „and“ “others”", "   spaces   ",
       "UPPER lower MiXeD", "don't won't can't", "ﬁ ligature and ½ fraction", ""]


def texts(count):
    rng = random.Random(7)
    out = list(ACCENTED + CJK + ODD)
    while len(out) < count:
        kind = rng.randrange(12)
        n = rng.randrange(1, 30)
        words = [rng.choice(WORDS) for _ in range(n)]
        if kind == 1:
            words += rng.sample(ACCENTED, 2)
        elif kind == 2:
            words.insert(rng.randrange(len(words)), rng.choice(CJK))
        elif kind == 3:
            words = [w + rng.choice([",", ".", "!", "?", ";", ":", "'s", "-"]) for w in words]
        elif kind == 4:
            # Far past 256 tokens: truncated the same way by both.
            words = [rng.choice(WORDS + ACCENTED + CJK) for _ in range(rng.randrange(200, 600))]
        out.append(" ".join(words))
    return out


def plugin_root(root, work, with_token_ids):
    models = subprocess.run([str(root / "scripts" / "fetch-models.sh"), "minilm3", "minilm-tokenizer"],
                            check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([str(root / "scripts" / "install-onnxruntime.sh")], check=True, capture_output=True)
    plugins = work / ("plugins-ids" if with_token_ids else "plugins")
    d = plugins / "text-embed"
    (d / "models").mkdir(parents=True)
    (d / "tokenizer").mkdir()
    shutil.copy(root / "plugins" / "text-embed" / "text-embed.wasm", d)
    shutil.copy(Path(models) / "minilm3.onnx", d / "models")
    for f in ("tokenizer.json", "vocab.txt"):
        shutil.copy(Path(models) / "minilm-tokenizer" / f, d / "tokenizer")
    manifest = (root / "plugins" / "text-embed" / "plugin.toml").read_text()
    if with_token_ids:
        manifest = manifest.replace("max_length = 256", "max_length = 256\nwith_token_ids = true")
    (d / "plugin.toml").write_text(manifest)
    return plugins, Path(models)


def run(binary, plugins, input_path, work):
    out = subprocess.run([str(binary), "run", "text-embed", str(input_path), "--plugins", str(plugins),
                          "--dead-letters", str(work / "dead.jsonl")],
                         capture_output=True, text=True)
    check(out.returncode == 0, f"runinfer run failed: {out.stderr}")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    dead = (work / "dead.jsonl").read_text() if (work / "dead.jsonl").exists() else ""
    check(not dead.strip(), f"dead letters: {dead[:500]}")
    return rows, out.stderr


def serve_embeddings(binary, plugins, batch_texts):
    import tritonclient.http as httpclient

    with served(binary, plugins) as address:
        client = httpclient.InferenceServerClient(address)
        # One request of several texts, then texts one at a time.
        infer = httpclient.InferInput("input", [8], "BYTES")
        infer.set_data_from_numpy(np.array(batch_texts[:8], dtype=object))
        result = client.infer("text-embed", [infer]).as_numpy(client.get_model_metadata("text-embed")["outputs"][0]["name"])
        rows = list(result)
        for text in batch_texts[8:]:
            one = httpclient.InferInput("input", [1], "BYTES")
            one.set_data_from_numpy(np.array([text], dtype=object))
            rows.extend(client.infer("text-embed", [one]).as_numpy(
                client.get_model_metadata("text-embed")["outputs"][0]["name"]))
        return np.array(rows, dtype=np.float32)


def reference(models, batch_texts, batch_size=16):
    tokenizer = Tokenizer.from_file(str(models / "minilm-tokenizer" / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding()  # to the longest of the batch
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(models / "minilm3.onnx"), options)
    ids, embeddings = [], []
    for start in range(0, len(batch_texts), batch_size):
        encodings = tokenizer.encode_batch(batch_texts[start:start + batch_size])
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        hidden = session.run(["last_hidden_state"], {
            "input_ids": input_ids, "attention_mask": mask,
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)})[0]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        embeddings.extend(pooled)
        ids.extend([i for i, a in zip(e.ids, e.attention_mask) if a] for e in encodings)
    return ids, np.array(embeddings)


def main():
    root, binary = Path(sys.argv[1]), Path(sys.argv[2])
    work = Path(tempfile.mkdtemp(prefix="runinfer-text-embed-"))
    try:
        corpus = texts(320)
        input_path = work / "texts.jsonl"
        input_path.write_text("".join(json.dumps(t) + "\n" for t in corpus))
        plugins_ids, models = plugin_root(root, work, with_token_ids=True)
        plugins, _ = plugin_root(root, work, with_token_ids=False)
        want_ids, want = reference(models, corpus)
        check(sum(len(i) == 256 for i in want_ids) >= 10, "the corpus has texts past 256 tokens")

        rows, _ = run(binary, plugins_ids, input_path, work)
        check(len(rows) == len(corpus), f"{len(rows)} predictions for {len(corpus)} texts")
        mismatched = [(r["example"], r["inference"]["token_ids"][:12], w[:12])
                      for r, w in zip(rows, want_ids) if r["inference"]["token_ids"] != w]
        check(not mismatched, f"{len(mismatched)} texts tokenized differently, e.g. {mismatched[:3]}")
        print(f"token ids identical on {len(rows)} texts")

        rows, stderr = run(binary, plugins, input_path, work)
        check([r["example"] for r in rows] == corpus, "predictions in input order")
        got = np.array([r["inference"] for r in rows], dtype=np.float32)
        check(got.shape == (len(corpus), 384), f"embeddings of shape {got.shape}")
        cosine = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        worst = int(np.argmin(cosine))
        check(cosine.min() >= 0.9999, f"cosine {cosine.min():.6f} on {corpus[worst][:80]!r}")
        check(np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4), "unit norm")
        print(f"embeddings: min cosine {cosine.min():.7f} over {len(rows)} texts; {stderr.strip().splitlines()[-1]}")

        # The same handler served: texts as BYTES through tritonclient.
        served = serve_embeddings(binary, plugins, corpus[:24])
        cosine = (served * want[:24]).sum(axis=1) / (
            np.linalg.norm(served, axis=1) * np.linalg.norm(want[:24], axis=1))
        check(cosine.min() >= 0.9999, f"served: cosine {cosine.min():.6f}")
        print(f"served over OIP: min cosine {cosine.min():.7f} over 24 texts")
        print("ok")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
