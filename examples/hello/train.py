"""Fits y = w*x + b by gradient descent; EPOCHS and LEARNING_RATE come from variables.yaml."""

import os
from pathlib import Path

epochs = int(os.environ.get("EPOCHS", "3"))
lr = float(os.environ.get("LEARNING_RATE", "0.1"))

# `data/` is the artifact of `prepare`, placed here before this job starts.
lines = Path("data/train.csv").read_text().splitlines()
rows = [tuple(map(float, line.split(","))) for line in lines]

w = b = 0.0
for epoch in range(1, epochs + 1):
    for _ in range(200):
        gw = sum(2 * (w * x + b - y) * x for x, y in rows) / len(rows)
        gb = sum(2 * (w * x + b - y) for x, y in rows) / len(rows)
        w, b = w - lr * gw, b - lr * gb
    loss = sum((w * x + b - y) ** 2 for x, y in rows) / len(rows)
    print(f"epoch {epoch}/{epochs}: loss {loss:.4f}  w={w:.3f} b={b:.3f}", flush=True)

Path("model").mkdir(exist_ok=True)
Path("model/weights.txt").write_text(f"{w} {b}\n")
print("saved model/weights.txt")
