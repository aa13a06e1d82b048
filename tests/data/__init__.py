"""Input files kept inside the project, so a clone anywhere runs its suite."""

from pathlib import Path

DATA = Path(__file__).resolve().parent
SAMPLES = DATA / "billing-samples"
FOCUS_REAL = SAMPLES / "focus-1.0-real" / "focus_sample.csv"
AWS_CUR_LEGACY = (
    SAMPLES / "native-aws-cur-legacy" / "sample-anonymous-aws-export-dataset.csv"
)
ECB_RATES = DATA / "fx" / "eurofxref-hist-sample.csv"
PLAIN_RATES = DATA / "fx" / "rates.csv"
