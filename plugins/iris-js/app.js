// Iris classifier in JavaScript (componentize-js), the same handler as plugins/iris:
// an example is the four measurements of a flower; the inference is the species name
// (`label`) and the probability of each species (`probabilities`, f32 [3]). The
// model runs in the host (tract).
import { Tensor } from "runinfer:handler/types@0.2.0";
import { Model } from "runinfer:handler/inference@0.2.0";

const DEFAULT_LABELS = ["setosa", "versicolor", "virginica"];
let labels = DEFAULT_LABELS;
let model = null;

// A `result` export fails by throwing its error record.
function fail(code, message) {
  return { code, message };
}

export const handlerApi = {
  init(args) {
    const given = new Map(args).get("labels");
    if (given !== undefined) labels = given.split(",").map((l) => l.trim());
    return {
      metricsNamespace: undefined,
      batching: { minBatchSize: 1, maxBatchSize: 64, maxBatchDurationMs: 10 },
      resourceHints: { minRamMb: undefined, accelerator: undefined },
    };
  },

  getSignature() {
    const classes = BigInt(labels.length);
    return {
      inputs: { tag: "tensor", val: { dtype: "f32", shape: [4n] } },
      outputs: {
        tag: "fields",
        val: [
          { name: "label", kind: { tag: "text" } },
          { name: "probabilities", kind: { tag: "tensor", val: { dtype: "f32", shape: [classes] } } },
        ],
      },
    };
  },

  loadModel() {
    model = Model.open("iris");
  },

  updateModelPath(_model, _path) {
    // loadModel follows and opens the model by name again.
  },

  runInference(batch, _args) {
    if (model === null) throw fail("internal", "load_model was not called");
    const tensors = batch.map((example) => {
      if (example.tag !== "tensor") throw fail("invalid-input", "iris takes tensor examples");
      return example.val;
    });
    const outputs = new Map(model.run([["input", Tensor.stack(tensors)]]));
    const predicted = outputs.get("label").toI64();
    // Split in the host: the probabilities never enter guest memory.
    const probabilities = outputs.get("probabilities").unstack();
    if (predicted.length !== batch.length || probabilities.length !== batch.length) {
      throw fail("model", `expected ${batch.length} labels and ${batch.length} rows of probabilities`);
    }
    return Array.from(predicted, (label, row) => {
      const index = Number(label);
      if (!(index >= 0 && index < labels.length)) throw fail("model", `label index ${label} out of range`);
      return {
        tag: "fields",
        val: [
          ["label", { tag: "text", val: labels[index] }],
          ["probabilities", { tag: "tensor", val: probabilities[row] }],
        ],
      };
    });
  },
};
