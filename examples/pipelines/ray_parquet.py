"""Predict on a Parquet dataset with Ray Data.

``python ray_parquet.py MODEL ROWS OUT --columns f0,f1,...`` starts a local Ray instance; on a
cluster, ``ray.init()`` connects to it instead.
"""

from __future__ import annotations

import argparse

import ray

from modelport.integrations.ray import predict_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("rows", help="Parquet file or directory")
    parser.add_argument("out", help="output directory (Parquet)")
    parser.add_argument("--columns", required=True, help="comma-separated input columns")
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = ray.data.read_parquet(args.rows)
        # Two half-CPU actors leave a CPU for the read tasks on a 2-CPU machine.
        out = predict_dataset(
            rows,
            args.model,
            columns=args.columns.split(","),
            batch_size=args.batch_size,
            concurrency=2,
            num_cpus=0.5,
        )
        out.write_parquet(args.out)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
