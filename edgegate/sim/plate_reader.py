"""A simulated serial plate reader on a pseudo-terminal, speaking any reader profile.

The driver opens :attr:`PlateReaderSimulator.port`, a symlink in a temporary directory to the
pty's slave side, as ``/dev/serial/by-id/...`` links to a USB adapter. :meth:`unplug` closes
the pty and removes the link (the driver sees the adapter vanish); :meth:`replug` opens a new
pty, which gets a new ``/dev/pts/N``, and points the link at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import tty
from pathlib import Path
from types import TracebackType

from edgegate.core.domain import PlateColour
from edgegate.devices.framing import FrameDecoder, decoder_for
from edgegate.devices.reader_profile import ReaderProfile

__all__ = ["PlateReaderSimulator"]


class PlateReaderSimulator:
    """A plate reader on a pty; use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        profile: ReaderProfile,
        *,
        directory: Path | None = None,
        name: str = "plate-reader",
        plugged: bool = True,
    ) -> None:
        """``directory`` holds the port link (default: a new temporary directory, removed by
        :meth:`close`); ``plugged=False`` starts with the adapter absent."""
        self.encoder: FrameDecoder = decoder_for(profile)
        self._own_dir = directory is None
        self._dir = (
            Path(tempfile.mkdtemp(prefix="edgegate-sim-")) if directory is None else directory
        )
        self._link = self._dir / name
        self._master: int | None = None
        self._slave: int | None = None
        if plugged:
            self.replug()

    @property
    def port(self) -> str:
        """The stable port path the driver opens."""
        return str(self._link)

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def replug(self) -> None:
        """Plug a (new) adapter in: a fresh pty behind the port link."""
        self.unplug()
        master, slave = os.openpty()
        # Raw from the start: no echo, no CR/LF translation, no XON/XOFF swallowing bytes.
        tty.setraw(slave)
        os.set_blocking(master, False)
        # The simulator keeps the slave open too, so the pty lives while the driver reopens.
        self._master, self._slave = master, slave
        tmp = self._dir / f".{self._link.name}.new"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self._link)  # atomic: the driver never sees a half-made link

    def unplug(self) -> None:
        """Pull the adapter: close the pty and remove the port link."""
        with contextlib.suppress(FileNotFoundError):
            self._link.unlink()
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None

    def close(self) -> None:
        self.unplug()
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> PlateReaderSimulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def send_read(
        self,
        plate: str,
        colour: PlateColour = PlateColour.UNKNOWN,
        confidence: float = 1.0,
        image_ref: str = "",
    ) -> bytes:
        """Send one read as the profile frames it; returns the frame's bytes."""
        frame = self.encoder.encode(plate, colour, confidence, image_ref)
        await self.send_raw(frame)
        return frame

    async def send_raw(self, data: bytes) -> None:
        """Put bytes on the line as they are (garbage, broken frames...)."""
        view = memoryview(data)
        while view:
            if self._master is None:
                raise OSError("the simulated reader is unplugged")
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                # The pty's buffer is full until the driver reads.
                await asyncio.sleep(0.001)
                continue
            view = view[written:]
