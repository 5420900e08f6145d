"""The daemon's conversion of device configuration into the drivers' own settings, and what
the drivers make of them."""

from __future__ import annotations

from typing import Any

import pytest

from edgegate.config import ModbusRtuDevice, ModbusTcpDevice, SerialPlateReaderDevice
from edgegate.daemon.drivers import plc_settings, serial_line
from edgegate.devices.modbus import BarrierPlc
from edgegate.devices.plc_profile import BarrierPlcProfile
from edgegate.devices.profiles import load_profile, load_reader_profile
from edgegate.devices.settings import ModbusSettings, SerialLine, TcpLine


def _tcp(**fields: Any) -> ModbusTcpDevice:
    base = {"type": "modbus-tcp", "host": "127.0.0.1", "profile": "barrier-plc-generic"}
    return ModbusTcpDevice.model_validate(base | fields)


def _rtu(**fields: Any) -> ModbusRtuDevice:
    base = {"type": "modbus-rtu", "port": "/dev/ttyUSB0", "profile": "barrier-plc-generic"}
    return ModbusRtuDevice.model_validate(base | fields)


def test_tcp_plc_settings_carry_what_the_configuration_sets() -> None:
    settings = plc_settings(
        _tcp(port=1502, unit_id=7, poll_hz=12.5, timeout="200ms", reconnect_max="2s")
    )
    assert settings == ModbusSettings(
        TcpLine("127.0.0.1", 1502),
        timeout=0.2,
        reconnect_max=2.0,
        inter_frame_gap=0.0,
        unit_id=7,
        poll_hz=12.5,
    )


def test_unset_unit_id_and_poll_rate_are_left_to_the_profile() -> None:
    # This profile's unit id and poll rate (2, 10 Hz) differ from the configuration's defaults.
    profile = load_profile("barrier-plc-nc-contacts", family=BarrierPlcProfile)
    assert (profile.unit_id, profile.poll_hz) == (2, 10.0)
    settings = plc_settings(_tcp())
    assert (settings.unit_id, settings.poll_hz) == (None, None)
    plc = BarrierPlc("plc", settings, profile)
    assert (plc.unit_id, plc.poll_hz) == (profile.unit_id, profile.poll_hz)
    # Set to the configuration's default value, they are still the configuration's word.
    chosen = BarrierPlc("plc", plc_settings(_tcp(unit_id=1, poll_hz=20.0)), profile)
    assert (chosen.unit_id, chosen.poll_hz) == (1, 20.0)


def test_rtu_plc_settings_have_the_line_and_the_inter_frame_gap() -> None:
    settings = plc_settings(_rtu(baudrate=9600, parity="E", stopbits=1, bytesize=8))
    assert settings.line == SerialLine("/dev/ttyUSB0", 9600, 8, "E", 1)
    # 3.5 characters of 1 + 8 + 1 + 1 bits at 9600 baud, rounded up to the microsecond.
    assert settings.inter_frame_gap == pytest.approx(0.004011)
    assert plc_settings(_rtu(inter_frame_gap="5ms")).inter_frame_gap == pytest.approx(0.005)
    assert str(settings.line) == "rtu:/dev/ttyUSB0@9600/8E1"


def test_serial_reader_line() -> None:
    device = SerialPlateReaderDevice(
        type="serial-plate-reader",
        port="/dev/ttyS3",
        profile="plate-reader-generic",
        baudrate=19200,
        parity="O",
        stopbits=2,
        bytesize=7,
    )
    assert serial_line(device) == SerialLine("/dev/ttyS3", 19200, 7, "O", 2)


def test_a_plc_profile_is_not_a_reader_profile() -> None:
    with pytest.raises(ValueError, match="is not a plate-reader profile"):
        load_reader_profile("barrier-plc-generic")
