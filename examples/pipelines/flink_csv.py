"""Predict on a CSV file with PyFlink: ``python flink_csv.py MODEL ROWS.csv OUT --columns f0,f1``.

The CSV has a header-less ``id`` column, then the float input columns. PyFlink ships no
Parquet format, so this reads CSV through the filesystem connector; a Kafka source works the
same way. Predictions are printed as ``id`` and ``y``, one row a line, into files under OUT.
"""

from __future__ import annotations

import argparse

from pyflink.table import EnvironmentSettings, TableEnvironment

from modelport.integrations.flink import predict_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("rows", help="CSV file: id, then the input columns")
    parser.add_argument("out", help="output directory")
    parser.add_argument("--columns", required=True, help="comma-separated input columns")
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    columns = args.columns.split(",")
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    fields = ", ".join(["id BIGINT", *(f"{c} FLOAT" for c in columns)])
    t_env.execute_sql(
        f"CREATE TABLE rows_in ({fields}) WITH "
        f"('connector' = 'filesystem', 'path' = '{args.rows}', 'format' = 'csv')"
    )
    t_env.execute_sql(
        "CREATE TABLE predictions (id BIGINT, y STRING) WITH "
        f"('connector' = 'filesystem', 'path' = '{args.out}', 'format' = 'csv')"
    )
    out = predict_table(
        t_env.from_path("rows_in"), args.model, columns=columns, batch_size=args.batch_size
    )
    # CSV holds no arrays: the output array is written as its text.
    t_env.create_temporary_view("predicted", out)
    t_env.execute_sql("INSERT INTO predictions SELECT id, CAST(y AS STRING) FROM predicted").wait()


if __name__ == "__main__":
    main()
