"""The base of every params section, shared by the schema and the architecture modules.

Apart from pipeline/core/params.py so that each architecture module under
pipeline/train/architectures/ can declare its own section without importing the schema that
collects them (which would be an import cycle).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, and so are values of another type.

    Strict: a bool is not an int (``epochs: true`` would train 1 epoch), a float is not an int.
    """

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
