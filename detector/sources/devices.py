"""PortAudio input devices: importing sounddevice, finding a device, ``--list-devices``.

Kept apart from :mod:`detector.sources.mic` (the capture stream itself); both hold
:data:`PA_LOCK` around every PortAudio call.
"""

from __future__ import annotations

import threading
from typing import Any

from detector.sources.base import SourceError, _khz

__all__ = ["PA_LOCK", "device_not_found", "import_sounddevice", "is_default_device", "list_devices",
           "resolve_device"]

PA_LOCK = threading.Lock()
"""PortAudio is not thread-safe for opening/closing/querying; every such call holds this."""

def import_sounddevice() -> Any:
    """Import sounddevice, turning a missing PortAudio into a :class:`SourceError`."""
    try:
        import sounddevice
    except OSError as e:  # the Python package is there but libportaudio is not
        raise SourceError(
            f"microphone input needs the PortAudio library ({e}); install it with "
            "'apt-get install libportaudio2' (Debian/Ubuntu) or use --file PATH / '-' for stdin"
        ) from e
    return sounddevice


def device_not_found(device: str | int | None, detail: str) -> SourceError:
    return SourceError(
        f"microphone {device if device is not None else 'default'!r} not available ({detail}); "
        "run 'sed-listen --list-devices' to see the input devices, or use --file PATH"
    )


def is_default_device(device: str | int | None) -> bool:
    """``None``, ``""`` and ``"default"`` mean the system's default input device."""
    return device is None or (isinstance(device, str) and device.strip().lower() in ("", "default"))


def resolve_device(sd: Any, device: str | int | None) -> dict[str, Any]:
    """PortAudio device info for ``None``/``'default'``, an index, or a (part of a) name."""
    try:
        if is_default_device(device):
            info = sd.query_devices(kind="input")
        elif isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
            info = sd.query_devices(int(device))
        else:
            info = sd.query_devices(device, kind="input")
    except (ValueError, sd.PortAudioError) as e:
        if is_default_device(device):
            n_in = sum(1 for d in sd.query_devices() if int(d["max_input_channels"]) > 0)
            detail = f"PortAudio reports no default input device; {n_in} input device(s) found"
        else:
            detail = str(e).strip() or "no such device"
        raise device_not_found(device, detail) from e
    if int(info["max_input_channels"]) < 1:
        raise device_not_found(device, f"device {info['index']} '{info['name']}' has no input channels")
    return dict(info)


def list_devices() -> str:
    """Human-readable table of input devices; the default one is marked with ``*``."""
    sd = import_sounddevice()
    with PA_LOCK:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        try:
            default = int(sd.query_devices(kind="input")["index"])
        except sd.PortAudioError:
            default = -1
    rows = [d for d in devices if int(d["max_input_channels"]) > 0]
    if not rows:
        return "no input devices found (is a microphone connected? is PulseAudio/PipeWire running?)"
    lines = ["  idx  ch  default rate  host API      name"]
    for d in rows:
        mark = "*" if d["index"] == default else " "
        api = hostapis[d["hostapi"]]["name"]
        lines.append(
            f"{mark} {d['index']:>3}  {d['max_input_channels']:>2}  "
            f"{_khz(d['default_samplerate']):>12}  {api:<12}  {d['name']}"
        )
    lines.append("(* = default; use mic:INDEX or mic:NAME)")
    return "\n".join(lines)
