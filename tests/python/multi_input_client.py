"""Drives `runinfer serve` with Triton's `tritonclient[http]` (or `tritonclient[grpc]`
when the address is `grpc://HOST:PORT`) on a model of three named inputs, as a client
that reads the model metadata first: it sends one input per name the metadata
declares (INT64; over HTTP in the JSON and the binary tensor form), asks for
every declared output, checks each returned output against its declaration and
every number against onnxruntime's (tests/python/ort_reference.py). Exits non-zero
with the reason on the first mismatch.

    usage: python multi_input_client.py HOST:PORT|grpc://HOST:PORT REPO_ROOT EXAMPLES.jsonl REFERENCE.jsonl MODEL...
"""

import json
import sys
from collections import defaultdict

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

TOLERANCE = 1e-5
PAD_TOLERANCE = 1e-4  # states of padded positions: see tests/e2e/multi_input.rs
DTYPES = {"INT64": np.int64, "FP32": np.float32}


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def fits(shape, declared):
    return len(shape) == len(declared) and all(d in (-1, s) for s, d in zip(shape, declared))


def compare(model, got, want, masks):
    emb = got["sentence_embedding"]
    ref = np.array([w["sentence_embedding"] for w in want])
    check(np.allclose(emb, ref, atol=TOLERANCE, rtol=0), f"{model} embedding: max diff {np.abs(emb - ref).max()}")
    states = got["last_hidden_state"]
    ref = np.array([w["last_hidden_state"] for w in want])
    check(states.shape == ref.shape, f"{model} states shape {states.shape} vs {ref.shape}")
    diff = np.abs(states - ref).max(axis=-1)
    tokens = masks == 1
    check(diff[tokens].max() <= TOLERANCE, f"{model} token states: max diff {diff[tokens].max()}")
    if (~tokens).any():
        check(diff[~tokens].max() <= PAD_TOLERANCE, f"{model} padded states: max diff {diff[~tokens].max()}")


def main():
    url, _root, examples_path, reference_path, *models = sys.argv[1:]
    examples = []
    for line in open(examples_path):
        example = json.loads(line)
        examples.append(example.get("example", example) if set(example) == {"key", "example"} else example)
    reference = [json.loads(line) for line in open(reference_path)]
    # One request per sequence length: a tensor input has one shape for all its rows.
    by_length = defaultdict(list)
    for i, example in enumerate(examples):
        by_length[len(example["input_ids"])].append(i)

    grpc = url.startswith("grpc://")
    protocol = grpcclient if grpc else httpclient
    client = protocol.InferenceServerClient(url=url.removeprefix("grpc://"))
    for model in models:
        if grpc:
            meta = client.get_model_metadata(model, as_json=True)
            # Protobuf's JSON writes 64-bit integers as strings.
            for tensor in meta["inputs"] + meta["outputs"]:
                tensor["shape"] = [int(d) for d in tensor["shape"]]
            meta = {"inputs": meta["inputs"], "outputs": meta["outputs"]}
        else:
            meta = client.get_model_metadata(model)
        check(
            meta["inputs"]
            == [{"name": n, "datatype": "INT64", "shape": [-1, -1]} for n in ("input_ids", "attention_mask", "token_type_ids")],
            f"{model} inputs: {meta}",
        )
        check(
            meta["outputs"]
            == [
                {"name": "last_hidden_state", "datatype": "FP32", "shape": [-1, -1, 384]},
                {"name": "sentence_embedding", "datatype": "FP32", "shape": [-1, 384]},
            ],
            f"{model} outputs: {meta}",
        )
        rows = 0
        encodings = (True,) if grpc else (True, False)
        for indices in by_length.values():
            for binary in encodings:
                inputs = []
                for declared in meta["inputs"]:
                    data = np.array([examples[i][declared["name"]] for i in indices], dtype=DTYPES[declared["datatype"]])
                    inp = protocol.InferInput(declared["name"], list(data.shape), declared["datatype"])
                    if grpc:
                        inp.set_data_from_numpy(data)
                    else:
                        inp.set_data_from_numpy(data, binary_data=binary)
                    inputs.append(inp)
                if grpc:
                    wanted = [grpcclient.InferRequestedOutput(o["name"]) for o in meta["outputs"]]
                    result = client.infer(model, inputs, outputs=wanted)
                    returned = [
                        {"name": o.name, "datatype": o.datatype, "shape": list(o.shape)}
                        for o in result.get_response().outputs
                    ]
                else:
                    wanted = [httpclient.InferRequestedOutput(o["name"], binary_data=binary) for o in meta["outputs"]]
                    result = client.infer(model, inputs, outputs=wanted)
                    returned = result.get_response()["outputs"]
                for o, declared in zip(returned, meta["outputs"], strict=True):
                    check(o["name"] == declared["name"] and o["datatype"] == declared["datatype"], f"{o} vs {declared}")
                    check(fits(o["shape"], declared["shape"]), f"{model} {o['name']} shape {o['shape']} vs {declared}")
                got = {o["name"]: result.as_numpy(o["name"]) for o in meta["outputs"]}
                masks = np.array([examples[i]["attention_mask"] for i in indices])
                compare(model, got, [reference[i] for i in indices], masks)
                rows += len(indices)
        check(rows == len(encodings) * len(examples), f"{model}: {rows} rows")
        print(f"{model}: {len(examples)} examples x {len(encodings)} encodings match onnxruntime")

        # A missing input and inputs of different row counts are refused, naming why.
        ids = protocol.InferInput("input_ids", [1, 3], "INT64")
        ids.set_data_from_numpy(np.array([[101, 2000, 102]], dtype=np.int64))
        mask = protocol.InferInput("attention_mask", [2, 3], "INT64")
        mask.set_data_from_numpy(np.ones((2, 3), dtype=np.int64))
        for inputs, why in (
            ([ids], "input 'attention_mask' is missing"),
            ([ids, mask], "input 'attention_mask': has 2 rows, the other inputs 1"),
        ):
            try:
                client.infer(model, inputs)
                check(False, f"{model}: {why} must fail")
            except InferenceServerException as e:
                status = "StatusCode.INVALID_ARGUMENT" if grpc else "400"
                check(why in e.message() and e.status() == status, f"{model}: {e}")
    print("ok")


if __name__ == "__main__":
    main()
