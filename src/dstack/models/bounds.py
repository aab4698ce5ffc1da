"""Bounded numbers and strings for request bodies: every value a client sends has a range that
answers 422 when it is outside, rather than an overflow deeper down (a database column, a
file mode, a port).

Integers stored in the database are 32-bit (PostgreSQL `integer`); sizes are 64-bit.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
TEXT_MAX = 1024
JOB_ID_MAX = 32
"""Characters of an id, a label, an executor or a repository id in a request."""

Int32 = Annotated[int, Field(ge=-(2**31), le=INT32_MAX)]
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
Size = Annotated[int, Field(ge=0, le=INT64_MAX)]
Port = Annotated[int, Field(ge=1, le=65535)]
ExitCode = Int32
Text = Annotated[str, Field(max_length=TEXT_MAX)]
