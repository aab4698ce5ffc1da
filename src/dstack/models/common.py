"""Base classes shared by every model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """A strict, immutable-by-convention model: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")
