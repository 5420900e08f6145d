"""The gate's configuration, converted into the device drivers' own settings.

The drivers (``edgegate.devices``) take small settings types of their own
(``edgegate.devices.settings``) so that they know nothing of the configuration's models.
"""

from __future__ import annotations

from edgegate.config import ModbusRtuDevice, ModbusTcpDevice, SerialPlateReaderDevice
from edgegate.devices.settings import ModbusSettings, SerialLine, TcpLine


def plc_settings(device: ModbusTcpDevice | ModbusRtuDevice) -> ModbusSettings:
    """A configured barrier PLC's settings. Unit id and poll rate are passed on only where
    the configuration sets them: otherwise the device's profile decides."""
    line: TcpLine | SerialLine
    gap = 0.0
    if isinstance(device, ModbusTcpDevice):
        line = TcpLine(device.host, device.port)
    else:
        line = serial_line(device)
        gap = device.effective_inter_frame_gap().total_seconds()
    chosen = device.model_fields_set
    return ModbusSettings(
        line,
        timeout=device.timeout.total_seconds(),
        reconnect_max=device.reconnect_max.total_seconds(),
        inter_frame_gap=gap,
        unit_id=device.unit_id if "unit_id" in chosen else None,
        poll_hz=device.poll_hz if "poll_hz" in chosen else None,
    )


def serial_line(device: ModbusRtuDevice | SerialPlateReaderDevice) -> SerialLine:
    """A configured serial device's port and line settings."""
    return SerialLine(device.port, device.baudrate, device.bytesize, device.parity, device.stopbits)
