"""Predict on Parquet files with Apache Beam.

``python beam_parquet.py MODEL ROWS OUT --columns f0,f1,...`` runs on the DirectRunner; add
Beam's own options (``--runner`` and so on) for Dataflow, Flink or Spark. The rows need an
integer ``id`` column; each output row is that ``id`` and the model's output ``y``.
"""

from __future__ import annotations

import argparse

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from modelport.integrations.beam import ModelportModelHandler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("rows", help="Parquet file pattern")
    parser.add_argument("out", help="output path prefix (Parquet)")
    parser.add_argument("--columns", required=True, help="comma-separated input columns")
    parser.add_argument("--batch-size", type=int, default=1024)
    args, beam_args = parser.parse_known_args()
    columns = args.columns.split(",")
    handler = ModelportModelHandler(args.model, output="y", max_batch_size=args.batch_size)
    schema = pa.schema([("id", pa.int64()), ("y", pa.list_(pa.float32()))])
    with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
        _ = (
            p
            | beam.io.ReadFromParquet(args.rows)
            | beam.Map(lambda r: (r["id"], np.array([r[c] for c in columns], np.float32)))
            | RunInference(KeyedModelHandler(handler))
            | beam.MapTuple(lambda key, result: {"id": key, "y": result.inference.tolist()})
            | beam.io.WriteToParquet(args.out, schema, file_name_suffix=".parquet")
        )


if __name__ == "__main__":
    main()
