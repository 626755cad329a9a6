import struct

from shared.catalog import CORE_SENSORS
from simulator.register_map import (
    INT16_SCALE_EXP,
    decode_float32_be,
    edge_modbus_source_config,
    encode_float32_be,
    encode_int16_scaled,
    float32,
)


def test_float32_round_trip_abcd() -> None:
    values = float32([s.typical for s in CORE_SENSORS])
    registers = encode_float32_be(values)
    assert len(registers) == 100
    assert decode_float32_be(registers) == values
    # ABCD: the first register holds the high half of the IEEE-754 big-endian bytes.
    raw = struct.pack(">f", values[0])
    assert registers[0] == int.from_bytes(raw[:2], "big")


def test_int16_scaling_fits_and_keeps_precision() -> None:
    typical = [s.typical for s in CORE_SENSORS]
    for spec, raw in zip(CORE_SENSORS, encode_int16_scaled(typical), strict=True):
        signed = raw - 0x10000 if raw & 0x8000 else raw
        decoded = signed / 10 ** INT16_SCALE_EXP[spec.name]
        assert abs(decoded - spec.typical) <= 0.5 * 10 ** -INT16_SCALE_EXP[spec.name] + 1e-9
        assert abs(spec.max_value) * 10 ** INT16_SCALE_EXP[spec.name] <= 32767


def test_edge_source_config_covers_every_sensor_once() -> None:
    doc = edge_modbus_source_config("127.0.0.1", 5020, ["A", "B"])
    assert [d["unit_id"] for d in doc["devices"]] == [1, 2]
    fields = doc["devices"][0]["fields"]
    assert [f["name"] for f in fields] == [s.name for s in CORE_SENSORS]
    assert fields[-1]["address"] + 2 == 110


def test_int16_clamps_and_marks_missing() -> None:
    from simulator.register_map import INT16_MISSING

    values = [s.typical for s in CORE_SENSORS]
    values[0] = 1e9  # far above anything int16 can hold at this sensor's scale
    values[1] = -1e9
    values[2] = float("nan")
    raw = encode_int16_scaled(values)
    assert raw[0] == 32767
    assert raw[1] == (-32767) & 0xFFFF
    assert raw[2] == INT16_MISSING


def test_words_units_and_block() -> None:
    from simulator.register_map import SAMPLE_BLOCK, uint32_words, uint64_words, unit_id_for

    assert uint32_words(0x12345678) == [0x1234, 0x5678]
    assert uint64_words(0x0123456789ABCDEF) == [0x0123, 0x4567, 0x89AB, 0xCDEF]
    assert [unit_id_for(m, ["A", "B", "C", "D"]) for m in "ABCD"] == [1, 2, 3, 4]
    assert SAMPLE_BLOCK == (0, 110)
