"""Puts tools/ on sys.path: tests import tools/series.py as `series`."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))
