"""Input files kept inside the project, so a clone anywhere runs its suite."""

from pathlib import Path

DATA = Path(__file__).resolve().parent
SAMPLES = DATA / "billing-samples"
FOCUS_REAL = SAMPLES / "focus-1.0-real" / "focus_sample.csv"
