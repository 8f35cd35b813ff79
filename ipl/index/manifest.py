"""Index versions on disk: manifest, atomic publish, ``current`` pointer, rollback, verification.

Layout of an index root (``<run>/index/``)::

    v0001/  v0002/            one directory per version: shard-NNN.faiss, shard-NNN.parquet, manifest.json
    current                   a one-line file naming the served version (replaced by rename)

A version is written under ``.tmp-vNNNN/``; every file is fsynced, its sha256 goes into
``manifest.json``, the directory is renamed into place, then ``current`` is switched with a
rename. Readers never see half a version. ``rollback`` switches ``current`` back to the
version the current one replaced (its manifest's ``previous``). Old versions beyond
``keep`` are pruned, never the current one or its ``previous``.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional

from ipl.runtime import fsync_dir, read_json, sha256_file, write_json_atomic

log = logging.getLogger("ipl.index")
MANIFEST = "manifest.json"
CURRENT = "current"
FORMAT = 1


class IndexIntegrityError(RuntimeError):
    """An index version is missing, corrupted, truncated or does not match what loads it."""


def versions(root: Path) -> list[str]:
    """Published versions, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v") and p.name[1:].isdigit())


def next_version(root: Path) -> str:
    existing = versions(root)
    return f"v{(int(existing[-1][1:]) + 1 if existing else 1):04d}"


def current_version(root: Path) -> Optional[str]:
    pointer = root / CURRENT
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    return name or None


def staging_dir(root: Path, version: str) -> Path:
    """A fresh temporary directory the builder writes a version's files into."""
    tmp = root / f".tmp-{version}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _switch_current(root: Path, version: str) -> None:
    tmp = root / f".{CURRENT}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(version + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / CURRENT)
    fsync_dir(root)


def publish(root: Path, staged: Path, manifest: dict, keep: int = 2) -> Path:
    """Checksum + fsync the staged files, write the manifest, rename into place, switch ``current``."""
    version = manifest["version"]
    files = {}
    for path in sorted(staged.iterdir()):
        if path.name == MANIFEST or not path.is_file():
            continue
        _fsync_file(path)
        files[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {**manifest, "format": FORMAT, "files": files, "previous": current_version(root),
                "published_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json_atomic(staged / MANIFEST, manifest)
    fsync_dir(staged)
    final = root / version
    if final.exists():
        raise FileExistsError(f"index version {final} already exists")
    os.replace(staged, final)
    fsync_dir(root)
    _switch_current(root, version)
    prune(root, keep)
    log.info("published index %s (previous: %s)", final, manifest["previous"])
    return final


def prune(root: Path, keep: int) -> list[str]:
    """Delete the oldest versions beyond ``keep``; the current one and its previous always stay."""
    cur = current_version(root)
    protect = {cur}
    if cur and (root / cur / MANIFEST).is_file():
        protect.add(read_json(root / cur / MANIFEST).get("previous"))
    removable = [v for v in versions(root) if v not in protect]
    removed = removable[: max(0, len(versions(root)) - keep)]
    for v in removed:
        shutil.rmtree(root / v, ignore_errors=True)
    for tmp in root.glob(".tmp-v*"):  # staging left by a crashed build
        shutil.rmtree(tmp, ignore_errors=True)
    return removed


def rollback(root: Path) -> str:
    """Point ``current`` at the version the current one replaced; returns it."""
    cur = current_version(root)
    if cur is None:
        raise IndexIntegrityError(f"{root} has no current index version to roll back from")
    previous = read_manifest(root / cur).get("previous")
    if not previous or not (root / previous).is_dir():
        raise IndexIntegrityError(f"index {cur} has no previous version to roll back to"
                                  + (f" ({previous} was pruned)" if previous else ""))
    verify_files(root / previous)
    _switch_current(root, previous)
    log.warning("rolled back %s: current is now %s (was %s)", root, previous, cur)
    return previous


def read_manifest(version_dir: Path) -> dict:
    path = version_dir / MANIFEST
    if not path.is_file():
        raise IndexIntegrityError(f"{version_dir} has no {MANIFEST} (not a published index version)")
    try:
        return read_json(path)
    except ValueError as exc:
        raise IndexIntegrityError(f"{path} is not valid JSON: {exc}") from None


def verify_files(version_dir: Path) -> dict:
    """Check every file the manifest lists (presence, size, sha256); returns the manifest."""
    manifest = read_manifest(version_dir)
    problems = []
    for name, meta in manifest.get("files", {}).items():
        path = version_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != meta["bytes"]:
            problems.append(f"{name}: {path.stat().st_size} bytes, manifest says {meta['bytes']} (truncated?)")
        elif sha256_file(path) != meta["sha256"]:
            problems.append(f"{name}: sha256 mismatch (corrupted)")
    if problems:
        raise IndexIntegrityError(f"index {version_dir} failed verification: " + "; ".join(problems))
    return manifest


def check_compatible(manifest: dict, dim: Optional[int], fingerprint: Optional[str], where: Path) -> None:
    """The loader's encoder must be the one the index was built with."""
    if dim is not None and manifest.get("dimension") != dim:
        raise IndexIntegrityError(f"index {where} has dimension {manifest.get('dimension')}, the encoder {dim}")
    if fingerprint is not None and manifest.get("encoder", {}).get("fingerprint") != fingerprint:
        raise IndexIntegrityError(f"index {where} was built with encoder {manifest.get('encoder', {}).get('fingerprint')}"
                                  f", the loaded encoder is {fingerprint}: rebuild the index or load its encoder")
