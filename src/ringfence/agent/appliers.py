"""Appliers put a verified artifact in place. Pluggable; two are built in.

* :class:`ContentApplier` — files in a directory. Each version is staged into its own directory
  ``versions/<version>/`` and a ``current`` symbolic link is swapped atomically to switch; old
  versions stay on disk (the last ``keep``), so going back never needs the network.
* :class:`CommandApplier` — the same staging, plus install / rollback / remove commands with
  exit-code semantics (0 is success, anything else or a timeout is failure), for software that
  installs itself. Each command gets the content type, the version and the staged directory in
  its environment.

Every applier guarantees: :meth:`activate` either switches completely or raises
:class:`ApplyFailed` leaving the previous version active; :meth:`current` says which version is
switched in, read from the disk (not from memory), so recovery after a crash sees the truth.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ringfence.agent import commands
from ringfence.agent.durable import fsync_dir, replace_symlink, write_atomic
from ringfence.agent.journal import VersionRef
from ringfence.core.models import check_content_type_name, check_version

_MARKER = ".ringfence-version"


class ApplyFailed(Exception):
    """The switch did not happen (or an install command failed); the message says why."""


class Applier(Protocol):
    @property
    def content_path(self) -> Path:
        """Where the active version's files are found (the ``current`` link)."""
        ...

    def has(self, ref: VersionRef) -> bool: ...

    def stage(self, ref: VersionRef, blob: Path) -> None: ...

    def activate(self, ref: VersionRef | None, *, rollback: bool = False) -> None: ...

    def current(self) -> str | None: ...

    def prune(self, keep: set[str]) -> None: ...


def content_dir_name(content_type: str) -> str:
    return check_content_type_name(content_type).replace("/", "+")


@dataclass(frozen=True, slots=True)
class Unpack:
    """How an artifact becomes files: a tar archive is extracted (safely), anything else is
    stored as one file named ``file_name``."""

    file_name: str = "content"
    extract_tar: bool = True


class ContentApplier:
    def __init__(self, root: Path, content_type: str, unpack: Unpack = Unpack()) -> None:
        self.root = root / content_dir_name(content_type)
        self.content_type = content_type
        self.unpack = unpack
        self._versions = self.root / "versions"
        self._staging = self.root / ".staging"
        self._versions.mkdir(parents=True, exist_ok=True)

    @property
    def content_path(self) -> Path:
        return self.root / "current"

    def _dir(self, version: str) -> Path:
        return self._versions / check_version(version)

    def has(self, ref: VersionRef) -> bool:
        try:
            return (self._dir(ref.version) / _MARKER).read_text().strip() == ref.sha256
        except OSError:
            return False

    def stage(self, ref: VersionRef, blob: Path) -> None:
        """Unpack ``blob`` into ``versions/<version>/`` (built aside, fsynced, renamed in)."""
        if self.has(ref):
            return
        final = self._dir(ref.version)
        self._staging.mkdir(exist_ok=True)
        work = self._staging / ref.version
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            if self.unpack.extract_tar and tarfile.is_tarfile(blob):
                with tarfile.open(blob) as archive:
                    archive.extractall(work, filter="data")
            else:
                shutil.copyfile(blob, work / self.unpack.file_name)
            for path in work.rglob("*"):
                if path.is_file():
                    with open(path, "rb+") as f:
                        os.fsync(f.fileno())
            write_atomic(work / _MARKER, ref.sha256.encode())
            if final.exists():  # a stale copy with another hash
                shutil.rmtree(final)
            os.replace(work, final)
            fsync_dir(self._versions)
        except (OSError, tarfile.TarError) as exc:
            shutil.rmtree(work, ignore_errors=True)
            raise ApplyFailed(f"cannot stage {self.content_type} {ref.version}: {exc}") from exc

    def _switch(self, ref: VersionRef | None) -> None:
        if ref is None:
            with contextlib.suppress(FileNotFoundError):
                self.content_path.unlink()
                fsync_dir(self.root)
            return
        if not self.has(ref):
            raise ApplyFailed(f"{self.content_type} {ref.version} is not staged")
        try:
            replace_symlink(self.content_path, f"versions/{ref.version}")
        except OSError as exc:
            raise ApplyFailed(f"cannot switch {self.content_type} to {ref.version}: {exc}") from exc

    def activate(self, ref: VersionRef | None, *, rollback: bool = False) -> None:
        self._switch(ref)

    def current(self) -> str | None:
        try:
            target = os.readlink(self.content_path)
        except OSError:
            return None
        version = Path(target).name
        return version if (self._versions / version / _MARKER).exists() else None

    def prune(self, keep: set[str]) -> None:
        for path in self._versions.iterdir():
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class Commands:
    install: tuple[str, ...]
    rollback: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    timeout_s: float = 300.0


class CommandApplier(ContentApplier):
    """Staged like content; switched by running commands. ``install`` runs for a new version;
    ``rollback`` (or ``install`` when there is none) for a return to an earlier one; ``remove``
    when no version should be active. The ``current`` link is swapped only after the command
    succeeded, so it always names the last version installed successfully."""

    def __init__(self, root: Path, content_type: str, commands: Commands, unpack: Unpack = Unpack()) -> None:
        super().__init__(root, content_type, unpack)
        self.commands = commands

    def activate(self, ref: VersionRef | None, *, rollback: bool = False) -> None:
        if ref is not None and not self.has(ref):  # never run an install for files that are not there
            raise ApplyFailed(f"{self.content_type} {ref.version} is not staged")
        argv = self.commands.remove if ref is None else (
            self.commands.rollback if rollback and self.commands.rollback else self.commands.install)
        if argv:
            env = {**os.environ, "RINGFENCE_CONTENT_TYPE": self.content_type,
                   "RINGFENCE_VERSION": ref.version if ref else "",
                   "RINGFENCE_ARTIFACT_DIR": str(self._dir(ref.version)) if ref else "",
                   "RINGFENCE_PREVIOUS_VERSION": self.current() or "",
                   "RINGFENCE_ROLLBACK": "1" if rollback else "0"}
            run_command(argv, env, self.commands.timeout_s, what=f"{self.content_type} {argv[0]}")
        self._switch(ref)


def run_command(argv: tuple[str, ...], env: dict[str, str], timeout: float, what: str) -> None:
    """Run a command; raise :class:`ApplyFailed` naming the exit code (or the timeout) and the
    tail of its output."""
    try:
        done = commands.run(argv, env, timeout)
    except commands.TimedOut:
        raise ApplyFailed(f"{what} did not finish within {timeout:g}s") from None
    except OSError as exc:
        raise ApplyFailed(f"{what} could not run: {exc}") from exc
    if done.returncode != 0:
        raise ApplyFailed(f"{what} exited with {done.returncode}: {done.output}")
