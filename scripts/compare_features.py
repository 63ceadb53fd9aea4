#!/usr/bin/env python3
"""Compares two Quiver output directories view by view: the same feature rows (matched on the
view's non-feature columns) with float features equal within a relative tolerance.

    python3 scripts/compare_features.py OUT_A OUT_B [--rtol 1e-9]

Needs pyarrow and numpy. Exits 1 on any difference and prints what differs.
"""
import argparse
import pathlib
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def load(view_dir):
    files = sorted(view_dir.glob("*.parquet"))
    if not files:
        sys.exit(f"no Parquet files in {view_dir}")
    return pa.concat_tables([pq.read_table(f) for f in files])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a", type=pathlib.Path)
    ap.add_argument("b", type=pathlib.Path)
    ap.add_argument("--rtol", type=float, default=1e-9)
    args = ap.parse_args()
    views = sorted(d.name for d in args.a.iterdir() if d.is_dir() and not d.name.startswith("_"))
    if not views:
        sys.exit(f"no view directories in {args.a}")
    failed = False
    for view in views:
        a, b = load(args.a / view), load(args.b / view)
        if a.num_rows != b.num_rows or a.schema.names != b.schema.names:
            print(f"{view}: {a.num_rows} vs {b.num_rows} rows, columns {a.schema.names} vs {b.schema.names}")
            failed = True
            continue
        floats = [f.name for f in a.schema if pa.types.is_floating(f.type)]
        # Rows are matched on every non-float column (keys, event time, ids, counts).
        order = [(name, "ascending") for name in a.schema.names if name not in floats]
        a = a.sort_by(order)
        b = b.sort_by(order)
        worst, mismatched = 0.0, 0
        for name in a.schema.names:
            x, y = a[name], b[name]
            if name in floats:
                xv = x.to_numpy(zero_copy_only=False).astype(float)
                yv = y.to_numpy(zero_copy_only=False).astype(float)
                xn, yn = np.isnan(xv), np.isnan(yv)
                both = ~xn & ~yn
                denom = np.maximum(np.abs(yv[both]), 1e-300)
                rel = np.abs(xv[both] - yv[both]) / denom
                rel[xv[both] == yv[both]] = 0.0
                # nulls arrive as NaN from to_numpy: compare the null masks too.
                nulls = pc.is_null(x).to_numpy(zero_copy_only=False) != pc.is_null(y).to_numpy(zero_copy_only=False)
                bad = int((rel > args.rtol).sum()) + int((xn != yn).sum()) + int(nulls.sum())
                worst = max(worst, float(rel.max()) if rel.size else 0.0)
            else:
                bad = 0 if x.equals(y) else int(pc.sum(pc.invert(pc.fill_null(pc.equal(x, y), False))).as_py() or 0)
            if bad:
                print(f"{view}.{name}: {bad} rows differ")
                mismatched += bad
        print(f"{view}: {a.num_rows:,} rows, {mismatched} differing values, largest relative difference {worst:.2e}")
        failed |= mismatched > 0
    sys.exit(1 if failed else 0)


main()
