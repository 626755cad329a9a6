"""Unit planning of OPC-UA nodes, browse-name matching and the certificate URI check."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
from asyncua import ua

from edge.inputs.opcua.config import OpcUaInputConfig
from edge.inputs.opcua.input import sensor_for_browse_name
from edge.inputs.opcua.units import certificate_problem, eu_unit, plan_unit
from shared.units import UnitError, unece_unit_id


def _eu(code: str | None = None, display: str | None = None) -> ua.EUInformation:
    return ua.EUInformation(
        NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
        UnitId=unece_unit_id(code) if code else -1,
        DisplayName=ua.LocalizedText(display),
        Description=ua.LocalizedText(None),
    )


def test_engineering_units_by_unece_code_then_display_name() -> None:
    assert eu_unit(_eu("PS", "whatever")) == "psi"
    assert eu_unit(_eu(None, "°C")) == "°C"
    assert eu_unit(_eu("ZZZ", "bar")) == "bar"  # unknown code, known name
    with pytest.raises(UnitError, match="'furlong'"):
        eu_unit(_eu(None, "furlong"))


def test_plans() -> None:
    # EngineeringUnits alone: converted
    plan = plan_unit("pressure", None, "psi")
    assert plan.problem is None and math.isclose(plan.convert(14.5037738), 1.0, rel_tol=1e-7)
    # declared with scale and offset: value = raw * scale + offset in °C, stored in °F
    plan = plan_unit("temperature", "degC", "°C", scale=0.1, offset=-10.0)
    assert plan.problem is None and math.isclose(plan.convert(315.0), 70.7)
    # neither: taken as the catalog unit
    assert plan_unit("pressure", None, None).convert(3.0) == 3.0
    # the node says °C for pressure
    problem = plan_unit("pressure", None, "°C").problem
    assert problem is not None and "pressure: the node's EngineeringUnits" in problem
    # the config and the node disagree
    problem = plan_unit("pressure", "bar", "psi").problem
    assert problem is not None and "EngineeringUnits is psi but the config says unit bar" in problem
    # an EngineeringUnits the table does not know: a note, the declared unit is used
    plan = plan_unit("pressure", "psi", None, "EngineeringUnits ('x') is no known unit")
    assert plan.problem is None and plan.note is not None


@pytest.mark.parametrize(
    ("browse_name", "sensor"),
    [
        ("Temperature", "temperature"),
        ("temperature", "temperature"),
        ("PRESSURE", "pressure"),
        ("BearingTemp", "bearing_temp"),
        ("RPM", "rpm"),
        ("Co2Level", "co2_level"),
        ("gearbox_oil_temp", "gearbox_oil_temp"),  # snake_case custom, as before
        ("SerialNumber", None),
        ("State", None),
    ],
)
def test_browse_names(browse_name: str, sensor: str | None) -> None:
    assert sensor_for_browse_name(browse_name) == sensor


def test_application_uri_default_and_override() -> None:
    base = {"endpoint": "opc.tcp://h:4840/", "machines": [{"machine_id": "A", "browse_root": "x"}]}
    assert OpcUaInputConfig.model_validate(base).client_uri("e-1") == "urn:rig-alpha:edge:e-1"
    config = OpcUaInputConfig.model_validate({**base, "application_uri": "urn:plant:edge7"})
    assert config.client_uri("e-1") == "urn:plant:edge7"
    with pytest.raises(ValueError, match="application_uri"):
        OpcUaInputConfig.model_validate({**base, "application_uri": "not a uri"})


def test_certificate_uri_check(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(tmp_path / "k.pem"), "-out", str(cert), "-subj", "/CN=t",
            "-addext", "subjectAltName=URI:urn:rig-alpha:edge:e-1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    assert certificate_problem(cert, "urn:rig-alpha:edge:e-1") is None
    problem = certificate_problem(cert, "urn:rig-alpha:edge:e-2")
    assert problem is not None and "urn:rig-alpha:edge:e-1" in problem
    assert "BadCertificateUriInvalid" in problem
    missing = certificate_problem(tmp_path / "nope.der", "urn:x")
    assert missing is not None and "cannot be read" in missing
