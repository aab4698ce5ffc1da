"""Writes a tiny synthetic data set: y = 3x + 1 plus noise."""

import random
from pathlib import Path

random.seed(0)
Path("data").mkdir(exist_ok=True)
rows = [(x / 100, 3 * x / 100 + 1 + random.gauss(0, 0.05)) for x in range(100)]
Path("data/train.csv").write_text("".join(f"{x},{y}\n" for x, y in rows))
print(f"prepared {len(rows)} rows in data/train.csv")
