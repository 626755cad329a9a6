"""The constrained identifiers of the API, defined once and used in paths, queries and bodies.

Machine and edge ids follow the wire format (``shared/message.py``), so an id the API takes
is one a reading can carry: an admin cannot mint a key for an edge whose readings ingest
would refuse. Each type is a plain ``Annotated`` alias: FastAPI reads it as a path, query or
body field alike, validates it with pydantic (422 naming the parameter) and puts the pattern
in ``/openapi.json``.

Response models use plain ``str`` for the same ids on purpose: rows written before a rule
was tightened (or by ``rig-cloud user add``) must still be listable.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from cloud.accounts import USERNAME_RE
from shared.message import CUSTOM_NAME_RE, EDGE_ID_RE, MACHINE_ID_RE

MachineId = Annotated[
    str, Field(pattern=MACHINE_ID_RE.pattern, description="machine id", examples=["A"])
]
EdgeId = Annotated[
    str, Field(pattern=EDGE_ID_RE.pattern, description="edge (rig) id", examples=["rig-1"])
]
Username = Annotated[str, Field(pattern=USERNAME_RE.pattern, description="user name")]
CustomSensorName = Annotated[
    str, Field(pattern=CUSTOM_NAME_RE.pattern, description="custom sensor name")
]
# Every core sensor name also matches the custom-name rule (shared/catalog.py), so one pattern
# admits both; whether a name is core decides elsewhere (core sensors cannot be annotated).
SensorName = Annotated[
    str,
    Field(pattern=CUSTOM_NAME_RE.pattern, description="core or custom sensor name"),
]
KeyId = Annotated[str, Field(pattern=r"^[0-9a-f]{12}$", description="ingest key id")]
# Database row ids (BIGINT identity columns): larger numbers would overflow the query.
RowId = Annotated[int, Field(ge=1, le=2**63 - 1)]
