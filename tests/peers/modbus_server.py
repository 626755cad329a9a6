"""A plant PLC's register map served by uModbus, a Modbus TCP server nobody here wrote (not
built on pymodbus, which the edge's client uses): ``python -m tests.peers.modbus_server
--port N``. Serves unit id 1 until killed.

The map has what register maps of real PLCs have and the simulator does not: a float in psi,
a tenths-of-°C integer, a status word of bits, BCD, an ASCII number, coils and discrete
inputs. ``EXPECTED`` is what the edge must store for the matching config (``PEER_CONFIG``,
written in 4xxxx notation as the PLC programmer's documentation would give it).
"""

from __future__ import annotations

import argparse
import struct
import sys
from socketserver import TCPServer, ThreadingMixIn
from typing import Any

PSI = 150.0  # holding 0-1, float32: a pressure in psi
TENTHS_C = 215  # holding 2, int16 x 0.1 °C: 21.5 °C
STATUS = 0b0000_0000_0010_0101  # holding 3: bit 0 pump running, bit 2 valve open, bits 4-5 = 2
BCD16 = 0x1234  # holding 4: 1234 rpm in BCD
BCD32 = (0x0012, 0x3456)  # holding 5-6: batch 123456 in BCD
TEXT = b"71.25\x00\x00\x00"  # holding 10-13: a weighing terminal's reading as ASCII
FLOW_TENTHS_GPM = 660  # input register 0: 66.0 gpm
COILS = {0: 1, 1: 0, 5: 1}
DISCRETE = {0: 1, 3: 1}


def holding_registers() -> dict[int, int]:
    words: dict[int, int] = dict.fromkeys(range(32), 0)
    hi, lo = struct.unpack(">HH", struct.pack(">f", PSI))
    words.update({0: hi, 1: lo, 2: TENTHS_C, 3: STATUS, 4: BCD16, 5: BCD32[0], 6: BCD32[1]})
    for i in range(0, len(TEXT), 2):
        words[10 + i // 2] = int.from_bytes(TEXT[i : i + 2], "big")
    return words


PEER_CONFIG: dict[str, Any] = {
    "machine_id": "P",
    "unit_id": 1,
    "address_notation": "modicon",
    "poll_interval_s": 0.05,
    "fields": [
        {"name": "pressure", "address": "40001", "type": "float32", "unit": "psi"},
        {"name": "temperature", "address": "40003", "type": "int16", "scale": 0.1, "unit": "degC"},
        {"name": "pump_running", "address": "40004", "bit": 0},
        {"name": "valve_open", "address": "40004", "bit": 2},
        {"name": "pump_mode", "address": "40004", "bit": 4, "bits": 2},
        {"name": "rpm", "address": "40005", "type": "bcd16"},
        {"name": "batch_number", "address": "40006", "type": "bcd32"},
        {"name": "scale_weight", "address": "40011", "type": "string", "length": 4},
        {"name": "flow_rate", "address": "30001", "type": "uint16", "scale": 0.1, "unit": "gpm"},
        {"name": "motor_on", "address": "00001"},
        {"name": "alarm_acknowledged", "address": "00002"},
        {"name": "horn", "address": "00006"},
        {"name": "door_closed", "address": "10001"},
        {"name": "estop_ok", "address": "10004"},
        {"name": "guard_closed", "address": "10002"},
    ],
}

EXPECTED: dict[str, float] = {
    "pressure": PSI * 6894.757293168 / 1e5,  # bar
    "temperature": 21.5 * 1.8 + 32.0,  # °F
    "pump_running": 1.0,
    "valve_open": 1.0,
    "pump_mode": 2.0,
    "rpm": 1234.0,
    "batch_number": 123456.0,
    "scale_weight": 71.25,
    "flow_rate": 66.0 * 3.785411784,  # L/min
    "motor_on": 1.0,
    "alarm_acknowledged": 0.0,
    "horn": 1.0,
    "door_closed": 1.0,
    "estop_ok": 1.0,
    "guard_closed": 0.0,
}


class _Server(ThreadingMixIn, TCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(port: int) -> None:
    from umodbus.server.tcp import RequestHandler, get_server

    app = get_server(_Server, ("127.0.0.1", port), RequestHandler)
    holding = holding_registers()

    @app.route(slave_ids=[1], function_codes=[3], addresses=list(holding))  # type: ignore[misc]
    def read_holding(slave_id: int, function_code: int, address: int) -> int:
        return holding[address]

    @app.route(slave_ids=[1], function_codes=[4], addresses=list(range(8)))  # type: ignore[misc]
    def read_input(slave_id: int, function_code: int, address: int) -> int:
        return FLOW_TENTHS_GPM if address == 0 else 0

    @app.route(slave_ids=[1], function_codes=[1], addresses=list(range(16)))  # type: ignore[misc]
    def read_coil(slave_id: int, function_code: int, address: int) -> int:
        return COILS.get(address, 0)

    @app.route(slave_ids=[1], function_codes=[2], addresses=list(range(16)))  # type: ignore[misc]
    def read_discrete(slave_id: int, function_code: int, address: int) -> int:
        return DISCRETE.get(address, 0)

    print(f"umodbus serving on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    try:
        app.serve_forever()
    finally:
        app.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    serve(parser.parse_args().port)


if __name__ == "__main__":
    main()
