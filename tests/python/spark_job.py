"""Spark end to end: runinfer plugins through `predict_batch_udf` on a local-cluster
master (two executor JVMs, each with its own Python workers), every prediction checked
against the golden files; then the machine's server is killed mid-job, started again
by the workers, and the job completes; after `spark.stop()` no server is left.

    usage: python spark_job.py REPO_ROOT RUNINFER_BINARY PLUGIN_ROOT MACHINE_DIR
"""

import os
import sys
import time
from pathlib import Path

ROOT = Path(sys.argv[1])
sys.path.insert(0, str(ROOT / "integrations" / "client"))
sys.path.insert(0, str(ROOT / "integrations" / "spark"))
sys.path.insert(0, str(Path(__file__).parent))

from pyspark.ml.functions import predict_batch_udf  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from runinfer_spark import make_predict_fn, map_in_pandas, return_type, runinfer_udf  # noqa: E402
from checks import check, check_iris, check_mlp, golden  # noqa: E402
from scale_common import Killer, servers, wait_gone  # noqa: E402


def slow_predict_fn(plugin, plugin_dir, binary):
    """The plugin's predict_fn, 50 ms slower a batch: a job long enough to kill its
    server in the middle of."""
    make = make_predict_fn(plugin, plugin_dir, binary)

    def make_slow():
        predict = make()

        def slow(*columns):
            time.sleep(0.05)
            return predict(*columns)

        return slow

    return make_slow


def main():
    _, binary, plugins, machine = sys.argv[1:5]
    path = f"{ROOT / 'integrations' / 'client'}:{ROOT / 'integrations' / 'spark'}"
    # The executors' Python workers run this venv's Python (numpy, pandas, pyarrow).
    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master("local-cluster[2,1,1024]")
        .appName("runinfer-spark-test")
        .config("spark.ui.enabled", "false")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
        .config("spark.executorEnv.PYTHONPATH", path)
        .config("spark.executorEnv.RUNINFER_MACHINE_DIR", machine)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    iris = golden(ROOT, "iris.jsonl")
    df = spark.createDataFrame([(i, [float(x) for x in g["example"]]) for i, g in enumerate(iris)], "id long, features array<float>")
    df = df.repartition(4)

    udf = runinfer_udf("iris", plugins, binary, batch_size=16)
    rows = sorted(df.withColumn("p", udf("features")).select("id", "p.label", "p.probabilities").collect())
    check(len(rows) == 150, f"{len(rows)} rows")
    check_iris([r.label for r in rows], [r.probabilities for r in rows], iris, "spark iris")
    pids = {s["server"] for s in servers(machine)}
    check(len(pids) == 1, f"one server for the machine's workers, got {servers(machine)}")
    print("spark iris: 150 rows through predict_batch_udf match the golden labels and probabilities")

    # The same through mapInPandas.
    fn = map_in_pandas("iris", ["features"], plugins, binary)
    schema = "id long, features array<float>, label string, probabilities array<float>"
    rows = sorted(df.mapInPandas(fn, schema).select("id", "label", "probabilities").collect())
    check_iris([r.label for r in rows], [r.probabilities for r in rows], iris, "spark iris mapInPandas")
    print("spark iris: 150 rows through mapInPandas match")

    mlp = golden(ROOT, "tiny_mlp.jsonl")
    frame = spark.createDataFrame(
        [(i, [float(x) for row in g["example"] for x in row]) for i, g in enumerate(mlp)], "id long, x array<float>"
    ).repartition(2)
    udf = runinfer_udf("onnx-tensor", plugins, binary, batch_size=8)
    rows = sorted(frame.withColumn("p", udf("x")).select("id", "p.logits", "p.hidden").collect())
    check_mlp([r.logits for r in rows], [r.hidden for r in rows], mlp, "spark onnx-tensor")
    print(f"spark onnx-tensor: {len(mlp)} rows ([2, 3] each) match the golden logits and hidden states")

    # The machine's server killed mid-job: the workers start another, the job completes.
    slow = predict_batch_udf(
        slow_predict_fn("iris", plugins, binary),
        return_type=return_type("iris", plugins, binary),
        batch_size=5,
        input_tensor_shapes=[[4]],
    )
    killer = Killer(machine, "iris", after=20)
    killer.start()
    rows = sorted(df.withColumn("p", slow("features")).select("id", "p.label", "p.probabilities").collect())
    killer.join(timeout=5)
    check(killer.killed is not None, "the server was not killed during the job")
    check_iris([r.label for r in rows], [r.probabilities for r in rows], iris, "spark iris after a kill")
    after = servers(machine)
    check(after and all(s["server"] != killer.killed["server"] for s in after), f"a new server serves: {after}")
    pids |= {s["server"] for s in after} | {s["supervisor"] for s in after}
    print(f"spark kill: server {killer.killed['server']} killed mid-job, {after[0]['server']} started, 150 rows match")

    spark.stop()
    wait_gone(machine, pids)
    print("spark stopped: no runinfer server left")
    print("ok")


if __name__ == "__main__":
    main()
