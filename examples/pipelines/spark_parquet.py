"""Predict on a Parquet dataset with Spark.

``python spark_parquet.py MODEL ROWS OUT --columns f0,f1,...`` runs on ``local[2]``; drop
``.master(...)`` and ``spark-submit`` it for a cluster.
"""

from __future__ import annotations

import argparse

from pyspark.sql import SparkSession

from modelport.integrations.spark import with_predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("rows", help="Parquet file or directory")
    parser.add_argument("out", help="output directory (Parquet)")
    parser.add_argument("--columns", required=True, help="comma-separated input columns")
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    spark = (
        SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
    )
    try:
        rows = spark.read.parquet(args.rows)
        out = with_predictions(
            rows, args.model, columns=args.columns.split(","), batch_size=args.batch_size
        )
        out.write.mode("overwrite").parquet(args.out)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
