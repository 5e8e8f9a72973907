"""onnxruntime's outputs for JSONL examples of a multi-input model, one example at a
time (batch of one), as the reference for runinfer's named-input path.

Each input line is an object with one member per model input (or the keyed form
{"key": ..., "example": {...}}); each output line is an object with one member per
model output, the example's row (the batch axis removed) as nested lists.

    usage: python ort_reference.py MODEL.onnx EXAMPLES.jsonl
"""

import json
import sys

import numpy as np
import onnxruntime as ort

DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


def main():
    model, examples = sys.argv[1], sys.argv[2]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    inputs = {i.name: DTYPES[i.type] for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    for line in open(examples):
        example = json.loads(line)
        if set(example) == {"key", "example"}:
            example = example["example"]
        feed = {name: np.asarray([example[name]], dtype=dtype) for name, dtype in inputs.items()}
        outputs = session.run(names, feed)
        print(json.dumps({name: out[0].astype(float).tolist() for name, out in zip(names, outputs)}))


if __name__ == "__main__":
    main()
