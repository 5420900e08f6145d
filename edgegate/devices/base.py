"""What drivers report to the daemon, and the errors they raise.

Drivers own their connection and reconnect by themselves; they report through a ``sink``
callback (synchronous, must not block) with the core's event objects: ``DeviceFault``,
``DeviceRecovered``, ``FrameRejected``, ``PlateRead`` — and ``PlcInputs`` for a PLC's inputs.
The daemon adds the lane, logs them and feeds the lane machines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgegate.core.events import DeviceFault, DeviceRecovered, FrameRejected, PlateRead


@dataclass(frozen=True, slots=True)
class PlcInputs:
    """One poll of a barrier PLC's discrete inputs (True = made/occupied).

    ``exit_loop`` is None when the profile wires no exit loop. The optional inputs after it
    (the incident alarm contact, the guard's buttons) are None when the profile does not
    wire them.
    """

    device: str
    up_limit: bool
    down_limit: bool
    fault: bool
    arming_loop: bool
    safety_loop: bool
    exit_loop: bool | None
    incident_alarm: bool | None = None
    open_hold_button: bool | None = None
    release_button: bool | None = None
    confirm_button: bool | None = None
    refuse_button: bool | None = None


DeviceSignal = PlcInputs | PlateRead | FrameRejected | DeviceFault | DeviceRecovered
Sink = Callable[[DeviceSignal], None]


class DeviceError(Exception):
    """A device did not do what it was asked. ``code`` is stable, for fault events."""

    code = "device-error"

    def __init__(self, device: str, message: str) -> None:
        super().__init__(f"{device}: {message}")
        self.device = device
        self.message = message


class DeviceTimeout(DeviceError):
    code = "timeout"


class DeviceUnavailable(DeviceError):
    """Not connected (refused, unplugged, absent)."""

    code = "unavailable"


class ModbusExceptionResponse(DeviceError):
    """The PLC answered with a Modbus exception code."""

    code = "modbus-exception"

    def __init__(self, device: str, function: int, exception_code: int) -> None:
        super().__init__(
            device, f"function 0x{function:02x} answered exception code {exception_code}"
        )
        self.function = function
        self.exception_code = exception_code


class CommandNotConfirmed(DeviceError):
    """A command was written but reading it back did not show it."""

    code = "command-not-confirmed"
