"""Predict on a Parquet dataset with Dask.

``python dask_parquet.py MODEL ROWS OUT --columns f0,f1,...`` starts a local cluster (2 worker
processes); point ``Client`` at your scheduler instead.
"""

from __future__ import annotations

import argparse

import dask.dataframe as dd
from distributed import Client, LocalCluster

from modelport.integrations.dask import predict_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("rows", help="Parquet file or directory")
    parser.add_argument("out", help="output directory (Parquet)")
    parser.add_argument("--columns", required=True, help="comma-separated input columns")
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        rows = dd.read_parquet(args.rows)
        out = predict_frame(
            rows, args.model, columns=args.columns.split(","), batch_size=args.batch_size
        )
        out.to_parquet(args.out)


if __name__ == "__main__":
    main()
