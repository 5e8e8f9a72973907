// Iris classifier in JavaScript (componentize-js), the same handler as plugins/iris:
// an example is the four measurements of a flower; the inference is the species name
// (`label`) and the probability of each species (`probabilities`, f32 [3]). The
// model runs in the host (tract).
import { Tensor } from "runinfer:handler/types@0.2.0";
import { Model } from "runinfer:handler/inference@0.2.0";

const dispose = Symbol.dispose ?? Symbol.for("dispose");
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
    // Host resources are not garbage collected: every tensor owned here is dropped
    // (Symbol.dispose) unless it is returned, or the host keeps counting it against
    // the instance's tensor limit.
    const owned = [];
    try {
      const tensors = batch.map((example) => {
        if (example.tag !== "tensor") throw fail("invalid-input", "iris takes tensor examples");
        owned.push(example.val);
        return example.val;
      });
      const features = Tensor.stack(tensors);
      owned.push(features);
      const outputs = new Map(model.run([["input", features]]));
      owned.push(...outputs.values());
      const predicted = outputs.get("label").toI64();
      // Split in the host: the probabilities never enter guest memory.
      const probabilities = outputs.get("probabilities").unstack();
      if (predicted.length !== batch.length || probabilities.length !== batch.length) {
        owned.push(...probabilities);
        throw fail("model", `expected ${batch.length} labels and ${batch.length} rows of probabilities`);
      }
      if (!predicted.every((label) => label >= 0n && label < BigInt(labels.length))) {
        owned.push(...probabilities);
        throw fail("model", "label index out of range");
      }
      // Each row of probabilities moves into its inference.
      return Array.from(predicted, (label, row) => ({
        tag: "fields",
        val: [
          ["label", { tag: "text", val: labels[Number(label)] }],
          ["probabilities", { tag: "tensor", val: probabilities[row] }],
        ],
      }));
    } finally {
      for (const tensor of owned) tensor[dispose]();
    }
  },
};
