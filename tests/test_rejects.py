"""Coalescing of rejected frames: one report a second at most, nothing lost."""

from __future__ import annotations

import pytest

from edgegate.devices.framing import MAX_REPORTED_BYTES, FrameError, FrameErrorKind
from edgegate.devices.rejects import RejectCoalescer

K = FrameErrorKind


def err(kind: FrameErrorKind = K.GARBAGE, data: bytes = b"x") -> FrameError:
    return FrameError.of(kind, f"{len(data)} bytes", data)


def test_a_lone_bad_frame_is_reported_at_once_with_all_its_bytes() -> None:
    c = RejectCoalescer("r1")
    report = c.add(err(K.BAD_CHECKSUM, b"$abc*00\r\n"), now=10.0)
    assert report is not None
    assert (report.count, report.kinds, report.data, report.size) == (
        1,
        ("bad-checksum",),
        b"$abc*00\r\n",
        9,
    )
    assert report.reason == "bad-checksum: 9 bytes"
    assert report.device == "r1"
    assert not report.truncated
    assert c.due is None


def test_rejections_within_the_interval_are_counted_into_one_report_when_it_ends() -> None:
    c = RejectCoalescer("r1", interval=1.0)
    assert c.add(err(), now=10.0) is not None
    assert c.add(err(K.INCOMPLETE, b"$"), now=10.2) is None
    assert c.add(err(K.BAD_CRC, b"\x02\x03"), now=10.5) is None
    assert c.add(err(K.INCOMPLETE, b"$"), now=10.9) is None
    assert c.due == pytest.approx(11.0)
    report = c.flush(now=11.0)
    assert report is not None
    assert report.count == 3
    assert report.kinds == ("bad-crc", "incomplete")
    assert report.reason == "incomplete: 1 bytes"  # the first of the three
    assert report.data == b"$\x02\x03$"
    assert report.size == 4
    assert c.due is None and c.flush(now=11.5) is None
    # Within a second of that report: counted again.
    assert c.add(err(), now=11.5) is None
    assert c.due == pytest.approx(12.0)


def test_a_rejection_after_the_interval_reports_what_was_pending_with_it() -> None:
    c = RejectCoalescer("r1", interval=1.0)
    c.add(err(), now=0.0)
    assert c.add(err(), now=0.5) is None
    report = c.add(err(), now=1.2)  # the flush came late: this one reports both
    assert report is not None and report.count == 2


def test_the_sample_is_bounded_and_the_size_counts_every_byte() -> None:
    c = RejectCoalescer("r1")
    c.add(err(), now=0.0)
    for i in range(1, 101):
        c.add(err(data=b"y" * 100), now=i / 1000)
    report = c.flush(now=1.0)
    assert report is not None
    assert len(report.data) == MAX_REPORTED_BYTES
    assert report.size == 10_000 and report.count == 100
    assert report.truncated


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RejectCoalescer("r1", interval=0)
