"""Examples/s of batch inference on Spark and Ray, side by side in one run: the usual
way (onnxruntime in each Python worker, inside `predict_batch_udf` / a `map_batches`
class) against the same engine with runinfer (`runinfer_spark.runinfer_udf`,
`runinfer_ray.RuninferPredictor`: one shared `runinfer serve` per machine), on iris
(the MLP, tract in runinfer) and on PP-OCR's direction classifier (onnxruntime in
both, [3, 48, 192] images). Each job runs once to warm up, then `--reps` times in
alternation; medians. See bench/scale_out.sh.

    python bench/scale_out.py BINARY PLUGIN_ROOT ONNXRUNTIME_LIB [--reps N] [--iris-rows N] [--ocr-rows N]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "integrations" / "client"))
sys.path.insert(0, str(ROOT / "integrations" / "spark"))
sys.path.insert(0, str(ROOT / "integrations" / "ray"))
PYTHONPATH = ":".join(str(ROOT / "integrations" / d) for d in ("client", "spark", "ray")) + f":{ROOT / 'bench'}"
LABELS = np.array(["setosa", "versicolor", "virginica"], dtype=object)


def iris_rows(n):
    import json

    golden = [json.loads(l) for l in (ROOT / "tests" / "golden" / "iris.jsonl").read_text().splitlines() if l.strip()]
    features = np.array([g["example"] for g in golden], dtype=np.float32)
    return np.resize(features, (n, 4))


def ocr_rows(n):
    return np.random.default_rng(0).random((n, 3, 48, 192), dtype=np.float32)


class OrtIris:
    """The usual way: onnxruntime in the worker, the iris MLP's label and probabilities."""

    def __init__(self, model):
        import onnxruntime as ort

        self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])

    def __call__(self, x):
        label, probabilities = self.session.run(None, {"input": x})
        return LABELS[label], probabilities


class OrtOcr:
    def __init__(self, model):
        import onnxruntime as ort

        self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])

    def __call__(self, x):
        return self.session.run(None, {"x": x})[0]


# --- Spark ---


def spark_jobs(args, spark):
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import types as T
    from runinfer_spark import runinfer_udf

    iris_model = str(ROOT / "plugins" / "iris" / "models" / "iris.onnx")
    ocr_model = str(ROOT / "target" / "models" / "ppocr_cls.onnx")
    serve = ["--onnxruntime-lib", args.onnxruntime_lib]
    import pandas as pd

    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    frame = lambda column, rows: pd.DataFrame({column: list(rows.reshape(len(rows), -1))})
    iris_df = spark.createDataFrame(frame("features", iris_rows(args.iris_rows)), "features array<float>").repartition(4).cache()
    ocr_df = spark.createDataFrame(frame("x", ocr_rows(args.ocr_rows)), "x array<float>").repartition(4).cache()
    iris_df.count(), ocr_df.count()

    def make_ort_iris():
        predict = OrtIris(iris_model)

        def run(x):
            label, probabilities = predict(x)
            return {"label": label, "probabilities": probabilities}

        return run

    def make_ort_ocr():
        return OrtOcr(ocr_model)

    iris_type = T.StructType([T.StructField("label", T.StringType()), T.StructField("probabilities", T.ArrayType(T.FloatType()))])
    ort_iris = predict_batch_udf(make_ort_iris, return_type=iris_type, batch_size=64, input_tensor_shapes=[[4]])
    ort_ocr = predict_batch_udf(make_ort_ocr, return_type=T.ArrayType(T.FloatType()), batch_size=32, input_tensor_shapes=[[3, 48, 192]])
    ri_iris = runinfer_udf("iris", args.plugins, args.binary, batch_size=64, serve_args=serve)
    ri_ocr = runinfer_udf("ppocr-cls", args.plugins, args.binary, batch_size=32, serve_args=serve)

    def job(df, udf, column):
        def run():
            df.select(udf(column).alias("p")).write.format("noop").mode("overwrite").save()

        return run

    return {
        ("iris", "onnxruntime in the worker"): (job(iris_df, ort_iris, "features"), args.iris_rows),
        ("iris", "runinfer"): (job(iris_df, ri_iris, "features"), args.iris_rows),
        ("PP-OCR cls", "onnxruntime in the worker"): (job(ocr_df, ort_ocr, "x"), args.ocr_rows),
        ("PP-OCR cls", "runinfer"): (job(ocr_df, ri_ocr, "x"), args.ocr_rows),
    }


# --- Ray ---


class RayOrtIris:
    def __init__(self, model):
        self.predict = OrtIris(model)

    def __call__(self, batch):
        batch["label"], batch["probabilities"] = self.predict(batch["features"])
        return batch


class RayOrtOcr:
    def __init__(self, model):
        self.predict = OrtOcr(model)

    def __call__(self, batch):
        batch["output"] = self.predict(batch["x"])
        return batch


def ray_jobs(args, ray):
    from runinfer_ray import RuninferPredictor

    serve = ["--onnxruntime-lib", args.onnxruntime_lib]
    iris_ds = ray.data.from_numpy(iris_rows(args.iris_rows)).rename_columns({"data": "features"}).materialize()
    ocr_ds = ray.data.from_numpy(ocr_rows(args.ocr_rows)).rename_columns({"data": "x"}).materialize()
    pool = ray.data.ActorPoolStrategy(size=2)

    def job(ds, cls, kwargs, batch_size):
        def run():
            for _ in ds.map_batches(cls, fn_constructor_kwargs=kwargs, compute=pool, batch_size=batch_size, batch_format="numpy").iter_batches():
                pass

        return run

    iris_model = str(ROOT / "plugins" / "iris" / "models" / "iris.onnx")
    ocr_model = str(ROOT / "target" / "models" / "ppocr_cls.onnx")
    ri = {"plugin_dir": args.plugins, "binary": args.binary, "serve_args": serve, "keep_inputs": False}
    return {
        ("iris", "onnxruntime in the worker"): (job(iris_ds, RayOrtIris, {"model": iris_model}, 64), args.iris_rows),
        ("iris", "runinfer"): (job(iris_ds, RuninferPredictor, {"plugin": "iris", "columns": ["features"], **ri}, 64), args.iris_rows),
        ("PP-OCR cls", "onnxruntime in the worker"): (job(ocr_ds, RayOrtOcr, {"model": ocr_model}, 32), args.ocr_rows),
        ("PP-OCR cls", "runinfer"): (job(ocr_ds, RuninferPredictor, {"plugin": "ppocr-cls", "columns": ["x"], **ri}, 32), args.ocr_rows),
    }


def measure(jobs, reps):
    """Warm-up once, then `reps` alternating rounds; median examples/s per job."""
    for run, _ in jobs.values():
        run()
    times = {key: [] for key in jobs}
    for _ in range(reps):
        for key, (run, _) in jobs.items():
            start = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - start)
    return {key: jobs[key][1] / statistics.median(t) for key, t in times.items()}


def table(engine, rates):
    lines = [f"| engine | model | the usual way (onnxruntime in the worker), examples/s | runinfer, examples/s | runinfer ÷ usual |", "|---|---|---:|---:|---:|"]
    for model in ("iris", "PP-OCR cls"):
        usual, ours = rates[(model, "onnxruntime in the worker")], rates[(model, "runinfer")]
        lines.append(f"| {engine} | {model} | {usual:,.0f} | {ours:,.0f} | {ours / usual:.2f}× |")
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("plugins")
    parser.add_argument("onnxruntime_lib")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--iris-rows", type=int, default=60000)
    parser.add_argument("--ocr-rows", type=int, default=1000)
    args = parser.parse_args()
    machine = tempfile.mkdtemp(prefix="runinfer-machine-")
    os.environ.update({"RUNINFER_MACHINE_DIR": machine, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": PYTHONPATH})
    lines = []

    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local-cluster[2,1,2048]")
        .config("spark.ui.enabled", "false")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
        .config("spark.executorEnv.PYTHONPATH", PYTHONPATH)
        .config("spark.executorEnv.RUNINFER_MACHINE_DIR", machine)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    lines += table("Spark `predict_batch_udf` (local-cluster[2,1,2048])", measure(spark_jobs(args, spark), args.reps))
    spark.stop()

    import ray

    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"RUNINFER_MACHINE_DIR": machine, "PYTHONPATH": PYTHONPATH}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    lines += table("Ray Data `map_batches` (2 actors)", measure(ray_jobs(args, ray), args.reps))[2:]
    ray.shutdown()

    header = (
        f"`bench/scale_out.sh --reps {args.reps} --iris-rows {args.iris_rows} --ocr-rows {args.ocr_rows}` on "
        f"{os.uname().nodename}, {os.cpu_count()} cores: one warm-up, then {args.reps} alternating runs, medians. "
        "iris batches of 64, PP-OCR cls batches of 32 ([3, 48, 192] float32 images)."
    )
    text = "\n".join([header, ""] + lines) + "\n"
    out = ROOT / "target" / "bench" / "scale_out.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
