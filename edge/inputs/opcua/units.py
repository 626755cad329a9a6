"""Units of OPC-UA nodes: a node's ``EngineeringUnits`` property (``EUInformation``) read and
checked against the mapping, and the client certificate's URI checked against the application
URI the client presents.

A node's unit comes from the config (``nodes: {sensor: {node, unit}}``) or from the server
(``EngineeringUnits``: the UNECE code in ``UnitId`` when the namespace is the UNECE one, else
the display name). The value is converted to the sensor's catalog unit. A server unit the
mapping contradicts (the config says psi, the node says bar) or one that cannot be the sensor's
(°C for pressure) is a problem of that sensor: its values are ``bad``, the machine reports
unhealthy, the log and ``check-config --probe`` say why, once, instead of a stream of
anomalies from values in the wrong unit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.units import (
    UnitError,
    catalog_unit,
    normalise_unit,
    sensor_converter,
    unece_unit,
)

# The namespace OPC-UA Part 8 gives EUInformation.UnitId as UNECE Rec. 20 codes.
UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"


def eu_unit(eu: Any) -> str:
    """The canonical unit of an ``EUInformation``; ``UnitError`` naming what it says when no
    part of it is a unit of the table."""
    unit_id = getattr(eu, "UnitId", 0) or 0
    namespace = getattr(eu, "NamespaceUri", None)
    texts: list[str] = []
    if unit_id > 0 and namespace in (None, "", UNECE_NAMESPACE):
        try:
            return unece_unit(int(unit_id))
        except UnitError:
            texts.append(f"UnitId {unit_id}")
    for part in ("DisplayName", "Description"):
        text = getattr(getattr(eu, part, None), "Text", None)
        if text:
            try:
                return normalise_unit(text)
            except UnitError:
                texts.append(f"{part} {text!r}")
    raise UnitError(f"EngineeringUnits ({', '.join(texts) or 'empty'}) is no known unit")


@dataclass(frozen=True)
class UnitPlan:
    """How one node's values become the sensor's: ``convert`` (scale, offset and unit
    conversion), or ``problem`` (the sensor is bad until the config or the server is fixed);
    ``note`` is worth a line in the log (an EngineeringUnits the table does not know)."""

    convert: Callable[[float], float]
    source_unit: str | None
    problem: str | None = None
    note: str | None = None


def _bad(value: float) -> float:
    raise AssertionError("a node with a unit problem is never converted")


def plan_unit(
    sensor: str,
    declared: str | None,
    server: str | None,
    server_problem: str | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
) -> UnitPlan:
    """The conversion of ``sensor``'s node: ``declared`` is the config's unit, ``server`` the
    node's EngineeringUnits (canonical), ``server_problem`` why it could not be read."""
    note = None
    if server_problem is not None:
        note = f"{sensor}: {server_problem}; taken as {declared or catalog_unit(sensor) or 'is'}"
    if declared is not None and server is not None and normalise_unit(declared) != server:
        return UnitPlan(
            _bad,
            server,
            f"{sensor}: the node's EngineeringUnits is {server} but the config says unit "
            f"{declared}; fix the mapping (or the server)",
        )
    source = declared or server
    try:
        convert = sensor_converter(sensor, source)
    except UnitError as exc:
        where = "the node's EngineeringUnits" if declared is None else "the config"
        return UnitPlan(_bad, source, f"{sensor}: {where}: {exc}")
    if scale == 1.0 and offset == 0.0:
        return UnitPlan(convert, source, note=note)
    return UnitPlan(lambda raw: convert(raw * scale + offset), source, note=note)


def certificate_uris(path: Path) -> list[str]:
    """The URIs in a certificate's subjectAltName (DER or PEM)."""
    from cryptography import x509

    data = path.read_bytes()
    cert = (
        x509.load_pem_x509_certificate(data)
        if data.lstrip().startswith(b"-----")
        else x509.load_der_x509_certificate(data)
    )
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def certificate_problem(path: Path, application_uri: str) -> str | None:
    """Why a server would refuse this client certificate for ``application_uri``
    (``BadCertificateUriInvalid``), or None."""
    try:
        uris = certificate_uris(path)
    except (OSError, ValueError) as exc:
        return f"certificate {path}: cannot be read: {exc}"
    if application_uri in uris:
        return None
    found = ", ".join(uris) if uris else "no URI"
    return (
        f"certificate {path} has {found} in its subjectAltName but the client's application "
        f"URI is {application_uri}: servers refuse that (BadCertificateUriInvalid); make the "
        "certificate with that URI (edge/inputs/opcua/README.md) or set application_uri"
    )
