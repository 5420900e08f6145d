"""The ``barrier-plc`` profile family: a barrier controller PLC's register map over Modbus.

A profile is data (``drivers/*.toml``), so a new PLC model of this family needs a new file,
not new code. The wire contract the driver (:mod:`edgegate.devices.modbus`) and the
simulator (:mod:`edgegate.sim.plc`) both implement:

- Commands are three coils, ``open``, ``close`` and ``stop``, used as *levels*: a command
  sets its own coil and clears the other two, and the PLC acts on whichever coil is set
  (stop halts the arm where it is). The pattern stays in the coils, so reading them back
  (FC01) proves the PLC took the command. Contiguous coils are written in one FC15 request,
  others with FC05 one by one, clearing before setting so two are never set at once.
- The inputs (limit switches, the PLC's fault output, the loop detectors) are discrete
  inputs read in ONE FC02 request covering their whole span, so one poll is one consistent
  snapshot. ``invert = true`` marks a normally-closed contact (wire 1 = free/not made).
- Optional inputs in the same read: ``incident_alarm`` (an alarm contact, e.g. the park's
  fire alarm: active switches the gate's incident mode on) and the guard's buttons
  ``open_hold_button``, ``release_button``, ``confirm_button`` and ``refuse_button`` (a
  press is a manual action on the PLC's lane). Wire an alarm normally closed
  (``invert = true``) so that a cut wire reads as an alarm.

Cross-field problems (duplicate or too widely spread addresses) are raised as one pydantic
error of type ``profile_problems`` whose ``ctx["problems"]`` lists ``(key_path, message)``
pairs, so the loader can name each key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic_core import PydanticCustomError

from edgegate.core.events import BarrierCommand
from edgegate.devices.base import PlcInputs
from edgegate.validation import StrictModel

__all__ = [
    "INPUT_NAMES",
    "MAX_READ_BITS",
    "OPTIONAL_INPUTS",
    "BarrierPlcProfile",
    "CoilMap",
    "InputBit",
    "InputMap",
]

#: The most bits one FC01/FC02 request may read (Modbus application protocol, 6.1/6.2).
MAX_READ_BITS = 2000

#: The optional inputs beyond the barrier and its loops (see the module's docstring).
OPTIONAL_INPUTS = (
    "incident_alarm",
    "open_hold_button",
    "release_button",
    "confirm_button",
    "refuse_button",
)

#: PlcInputs field names, in the order a profile lists them.
INPUT_NAMES = (
    "up_limit",
    "down_limit",
    "fault",
    "arming_loop",
    "safety_loop",
    "exit_loop",
    *OPTIONAL_INPUTS,
)

Address = Annotated[StrictInt, Field(ge=0, le=65535)]


def _number(value: object) -> object:
    # TOML writes 20 and 20.0 differently; both are a rate, but true/"20" are not.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return value


def _address_shorthand(value: object) -> object:
    """``up_limit = 3`` is short for ``up_limit = { address = 3 }``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return {"address": value}
    return value


class InputBit(StrictModel):
    """One discrete input: its address and whether the contact is normally closed."""

    address: Address
    invert: StrictBool = False  # NC contact: the wire reads 1 when the input is NOT made


Input = Annotated[InputBit, BeforeValidator(_address_shorthand)]


class CoilMap(StrictModel):
    """``[coils]``: the command coils (FC05/FC15 write, FC01 read back)."""

    open: Address
    close: Address
    stop: Address

    def of(self, command: BarrierCommand) -> int:
        return {
            BarrierCommand.OPEN: self.open,
            BarrierCommand.CLOSE: self.close,
            BarrierCommand.STOP: self.stop,
        }[command]


class InputMap(StrictModel):
    """``[inputs]``: the discrete inputs (FC02), polled together in one request."""

    up_limit: Input
    down_limit: Input
    fault: Input
    arming_loop: Input
    safety_loop: Input
    exit_loop: Input | None = None  # lanes without an exit loop
    incident_alarm: Input | None = None  # active: incident mode on (e.g. the fire alarm)
    open_hold_button: Input | None = None  # the guard's buttons: a press is a manual action
    release_button: Input | None = None
    confirm_button: Input | None = None
    refuse_button: Input | None = None

    def wired(self) -> Iterator[tuple[str, InputBit]]:
        """``(name, input)`` for every input the profile wires, in INPUT_NAMES order."""
        for name in INPUT_NAMES:
            bit: InputBit | None = getattr(self, name)
            if bit is not None:
                yield name, bit


def _duplicates(table: str, addresses: Sequence[tuple[str, int]]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    first: dict[int, str] = {}
    for name, address in addresses:
        other = first.setdefault(address, name)
        if other != name:
            problems.append(
                (f"{table}.{name}", f"address {address} is already used by {table}.{other}")
            )
    return problems


def _span(table: str, addresses: Sequence[tuple[str, int]], what: str) -> list[tuple[str, str]]:
    low_name, low = min(addresses, key=lambda item: item[1])
    high_name, high = max(addresses, key=lambda item: item[1])
    count = high - low + 1
    if count <= MAX_READ_BITS:
        return []
    return [
        (
            f"{table}.{high_name}",
            f"address {high} puts the {table} {count} bits apart ({table}.{low_name} is at "
            f"{low}); one {what} request reads at most {MAX_READ_BITS}, so keep them closer",
        )
    ]


class BarrierPlcProfile(StrictModel):
    """A barrier PLC model's register map and defaults (``type = "barrier-plc"``)."""

    type: Literal["barrier-plc"]
    description: StrictStr = ""
    # Used when the gate configuration does not set unit_id / poll_hz for the device.
    unit_id: Annotated[StrictInt, Field(ge=1, le=247)] = 1
    poll_hz: Annotated[float, BeforeValidator(_number), Field(gt=0, le=100)] = 20.0
    coils: CoilMap
    inputs: InputMap

    @model_validator(mode="after")
    def _check_addresses(self) -> BarrierPlcProfile:
        coils = [(c, self.coils.of(BarrierCommand(c))) for c in ("open", "close", "stop")]
        inputs = [(name, bit.address) for name, bit in self.inputs.wired()]
        problems = _duplicates("coils", coils) + _duplicates("inputs", inputs)
        problems += _span("coils", coils, "FC01 read-back")
        problems += _span("inputs", inputs, "FC02")
        if problems:
            raise PydanticCustomError(
                "profile_problems",
                "{summary}",
                {"summary": "; ".join(f"{k}: {m}" for k, m in problems), "problems": problems},
            )
        return self

    # --- the one FC02 read and the one FC01 read-back ---------------------------------------

    @property
    def input_start(self) -> int:
        return min(bit.address for _, bit in self.inputs.wired())

    @property
    def input_count(self) -> int:
        return max(bit.address for _, bit in self.inputs.wired()) - self.input_start + 1

    @property
    def coil_start(self) -> int:
        return min(self.coils.open, self.coils.close, self.coils.stop)

    @property
    def coil_count(self) -> int:
        return max(self.coils.open, self.coils.close, self.coils.stop) - self.coil_start + 1

    @property
    def coils_contiguous(self) -> bool:
        """Three adjacent coils: one FC15 writes the whole pattern at once."""
        return self.coil_count == 3

    def coil_pattern(self, command: BarrierCommand) -> dict[int, bool]:
        """Coil address -> level for a command: its own coil set, the other two cleared."""
        return {self.coils.of(c): c is command for c in BarrierCommand}

    def decode_inputs(self, device: str, bits: Sequence[bool]) -> PlcInputs:
        """PlcInputs from the bits of the FC02 read starting at :attr:`input_start`."""
        # Called on every poll: work the derived addresses out once, not once per input.
        start, count = self.input_start, self.input_count
        if len(bits) < count:
            raise ValueError(f"expected {count} input bits, got {len(bits)}")
        values: dict[str, Any] = {"exit_loop": None}
        for name, bit in self.inputs.wired():
            values[name] = bool(bits[bit.address - start]) != bit.invert
        return PlcInputs(device=device, **values)

    def encode_inputs(self, values: Mapping[str, bool]) -> dict[int, bool]:
        """Wire level per input address for logical values by input name (for simulators)."""
        return {
            bit.address: bool(values.get(name, False)) != bit.invert
            for name, bit in self.inputs.wired()
        }
