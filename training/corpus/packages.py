"""Fetch Debian packages into a cache, unpack them without root, read their versions.

``apt-get download`` (no root needed when the cache directory is writable) puts
``NAME_VERSION_ARCH.deb`` in the cache; ``dpkg -x`` unpacks it into a directory.
Qt ``.rcc`` resource bundles found in an unpacked tree are expanded in place into a
sibling directory ``<file>.rcc.d/`` so that mapping patterns can address the audio
inside them like ordinary paths.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from training.corpus.rcc import RccError, read_rcc

__all__ = [
    "RCC_SUFFIX",
    "RESERVED",
    "PackageError",
    "ReservedPackageError",
    "cached_deb",
    "deb_version",
    "download",
    "expand_rcc",
    "refuse_reserved",
    "unpack",
]

log = logging.getLogger(__name__)

RCC_SUFFIX = ".rcc.d"


class PackageError(RuntimeError):
    """A package could not be downloaded or unpacked."""


#: Reserved for independent evaluation (../shared/DATA.md): never in training or
#: validation. A name equal to an entry, or starting with one that ends in ``*``.
RESERVED = ("scratch", "asterisk-core-sounds-fr-*")


class ReservedPackageError(PackageError):
    """A package reserved for independent evaluation was asked for."""


def is_reserved(package: str) -> bool:
    """Whether ``package`` is reserved for independent evaluation."""
    return any(package.startswith(r[:-1]) if r.endswith("*") else package == r for r in RESERVED)


def refuse_reserved(names: list[str] | tuple[str, ...]) -> None:
    """Raise :class:`ReservedPackageError` naming every reserved package in ``names``."""
    bad = sorted({n for n in names if is_reserved(n)})
    if bad:
        raise ReservedPackageError(
            f"{', '.join(bad)}: reserved for independent evaluation (../shared/DATA.md: "
            f"{', '.join(RESERVED)}); never used for training or validation")


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    if shutil.which(cmd[0]) is None:
        raise PackageError(f"`{cmd[0]}` not found; corpus building needs Debian's apt and dpkg")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PackageError(
            f"`{' '.join(cmd)}` failed with exit code {proc.returncode}: {proc.stderr.strip()[-500:]}"
        )
    return proc.stdout


def cached_deb(package: str, deb_cache: Path) -> Path | None:
    """The newest ``PACKAGE_*.deb`` already in ``deb_cache``, or None."""
    found = sorted(deb_cache.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def download(package: str, deb_cache: Path) -> Path:
    """Return the ``.deb`` of ``package`` in ``deb_cache``, downloading it with apt if needed."""
    refuse_reserved([package])
    deb_cache.mkdir(parents=True, exist_ok=True)
    hit = cached_deb(package, deb_cache)
    if hit is not None:
        return hit
    log.info("apt-get download %s -> %s", package, deb_cache)
    try:
        _run(["apt-get", "download", package], cwd=deb_cache)
    except PackageError as e:
        raise PackageError(
            f"{e}\n(if apt says the package is unknown, the package lists may be stale: "
            "run `apt-get update` once)"
        ) from e
    hit = cached_deb(package, deb_cache)
    if hit is None:
        raise PackageError(f"apt-get download {package} succeeded but no {package}_*.deb appeared")
    return hit


def deb_version(deb: Path) -> str:
    """The ``Version`` field of a ``.deb`` (e.g. ``1:1.16.9-1``)."""
    return _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()


def expand_rcc(root: Path) -> tuple[int, int]:
    """Expand every ``*.rcc`` under ``root`` into ``<file>.rcc.d/``.

    Returns (files extracted, entries skipped).
    """
    extracted = skipped = 0
    for rcc in sorted(root.rglob("*.rcc")):
        try:
            archive = read_rcc(rcc)
        except RccError as e:
            log.warning("skipping %s: %s", rcc, e)
            skipped += 1
            continue
        out = rcc.with_name(rcc.name[: -len(".rcc")] + RCC_SUFFIX)
        for item in archive.files:
            target = out / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.data)
        extracted += len(archive.files)
        skipped += len(archive.skipped)
    return extracted, skipped


def unpack(deb: Path, dest: Path) -> Path:
    """Unpack ``deb`` into ``dest`` (emptied first) with ``dpkg -x``; expand ``.rcc`` bundles."""
    refuse_reserved([deb.name.split("_", 1)[0]])
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    _run(["dpkg", "-x", str(deb), str(dest)])
    extracted, skipped = expand_rcc(dest)
    if extracted or skipped:
        log.info("%s: %d files extracted from .rcc bundles, %d skipped", deb.name, extracted, skipped)
    return dest
