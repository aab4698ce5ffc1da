"""Base classes shared by every model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """A strict, immutable-by-convention model: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")


class LazyModel(Model):
    """A `Model` whose validator is built on its first use instead of when its module is
    imported: for the models that `dstack run` imports with the ones it uses but never uses
    itself (building one costs 0.3-2.5 ms of every command's start). A model that another,
    eagerly built one holds as a field gains nothing from it: its schema is built with that
    one's anyway."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
