"""Reproduce the shipped calibration: `python -m perfmodel.fit_report` fits the published set,
prints the per-row report and MAPE, and writes perfmodel/data/calibration.json (--no-write to only print)."""
from perfmodel.calibration import main

if __name__ == "__main__":
    raise SystemExit(main())
