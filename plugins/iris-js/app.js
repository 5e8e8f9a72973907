// Iris classifier in JavaScript (componentize-js), the same handler as plugins/iris:
// an example is the four measurements of a flower; the inference is the species name
// and the probability of each species. The model runs in the host (tract).
import { Tensor } from "runinfer:handler/types@0.1.0";
import { Model } from "runinfer:handler/inference@0.1.0";

const DEFAULT_LABELS = ["setosa", "versicolor", "virginica"];
let labels = DEFAULT_LABELS;
let model = null;

// A `result` export fails by throwing its error record.
function fail(code, message) {
  return { code, message };
}

// The shortest decimal that reads back as the same f32, as the Rust handler prints.
function f32Repr(x) {
  for (let digits = 6; digits <= 9; digits++) {
    const short = Number(x.toPrecision(digits));
    if (Math.fround(short) === x) return short;
  }
  return x;
}

export const handlerApi = {
  init(args) {
    const given = new Map(args).get("labels");
    if (given !== undefined) labels = given.split(",").map((l) => l.trim());
    return {
      metricsNamespace: undefined,
      batching: { minBatchSize: 1, maxBatchSize: 64, maxBatchDurationMs: 10 },
      resourceHints: { minRamMb: undefined, accelerator: undefined },
      shareModel: true,
      input: { tag: "tensor", val: { dtype: "f32", shape: [4n] } },
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
    const probabilities = outputs.get("probabilities").toF32();
    const classes = labels.length;
    if (predicted.length !== batch.length || probabilities.length !== batch.length * classes) {
      throw fail("model", `expected ${batch.length} labels and ${batch.length}x${classes} probabilities`);
    }
    return Array.from(predicted, (label, row) => {
      const index = Number(label);
      if (!(index >= 0 && index < classes)) throw fail("model", `label index ${label} out of range`);
      const probs = {};
      labels.forEach((name, k) => {
        probs[name] = f32Repr(probabilities[row * classes + k]);
      });
      return { tag: "json", val: JSON.stringify({ label: labels[index], probabilities: probs }) };
    });
  },
};
