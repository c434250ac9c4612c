"""Appliers on a real file system: staging (plain files and tar archives, safely), the atomic
``current`` link, pruning, and install/rollback/remove commands run as real processes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

import pytest

from ringfence.agent.appliers import ApplyFailed, CommandApplier, Commands, ContentApplier, Unpack, content_dir_name
from ringfence.agent.journal import VersionRef
from ringfence.core.errors import InvalidInput

CT = "sensor/ipc-templates"


def blob(tmp_path: Path, name: str, data: bytes) -> tuple[Path, VersionRef]:
    """A downloaded artifact and the reference naming it (the version is the name up to any "@")."""
    path = tmp_path / "downloads" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path, VersionRef(name.split("@", maxsplit=1)[0], hashlib.sha256(data).hexdigest())


def tar_bytes(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def staged(applier: ContentApplier, tmp_path: Path, version: str, data: bytes) -> VersionRef:
    path, r = blob(tmp_path, version, data)
    applier.stage(r, path)
    return r


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "content"


# -- ContentApplier ---------------------------------------------------------------------------

def test_a_plain_file_is_staged_under_its_configured_name(tmp_path: Path, root: Path) -> None:
    applier = ContentApplier(root, CT, Unpack(file_name="channel.json"))
    path, r = blob(tmp_path, "1.0", b'{"channels": [1, 2]}')

    applier.stage(r, path)

    version_dir = root / "sensor+ipc-templates" / "versions" / "1.0"
    assert (version_dir / "channel.json").read_bytes() == b'{"channels": [1, 2]}'
    assert (version_dir / ".ringfence-version").read_text() == r.sha256
    assert sorted(p.name for p in version_dir.iterdir()) == [".ringfence-version", "channel.json"]
    assert applier.has(r)
    assert not applier.has(VersionRef("1.0", "0" * 64))  # the right version but another artifact
    assert not applier.has(VersionRef("2.0", r.sha256))
    assert applier.current() is None  # staging does not switch


def test_a_tar_archive_is_extracted(tmp_path: Path, root: Path) -> None:
    applier = ContentApplier(root, CT)
    data = tar_bytes([("rules/a.yar", b"rule a {}"), ("rules/deep/b.yar", b"rule b {}"), ("README", b"hi")])
    path, r = blob(tmp_path, "2.0", data)

    applier.stage(r, path)

    version_dir = root / "sensor+ipc-templates" / "versions" / "2.0"
    assert (version_dir / "rules" / "a.yar").read_bytes() == b"rule a {}"
    assert (version_dir / "rules" / "deep" / "b.yar").read_bytes() == b"rule b {}"
    assert (version_dir / "README").read_bytes() == b"hi"
    assert not (version_dir / "content").exists()
    assert applier.has(r)


def test_a_tar_is_kept_as_one_file_when_extraction_is_off(tmp_path: Path, root: Path) -> None:
    applier = ContentApplier(root, CT, Unpack(file_name="bundle.tar", extract_tar=False))
    data = tar_bytes([("a", b"1")])
    path, r = blob(tmp_path, "1.0", data)

    applier.stage(r, path)

    assert (root / "sensor+ipc-templates" / "versions" / "1.0" / "bundle.tar").read_bytes() == data


def test_activate_swaps_the_link_and_current_reads_the_disk(tmp_path: Path, root: Path) -> None:
    applier = ContentApplier(root, CT, Unpack(file_name="channel.json"))
    v1 = staged(applier, tmp_path, "1.0", b"one")
    v2 = staged(applier, tmp_path, "2.0", b"two")

    applier.activate(v1)
    assert applier.content_path.is_symlink()
    assert os.readlink(applier.content_path) == "versions/1.0"  # relative: the tree can move
    assert (applier.content_path / "channel.json").read_bytes() == b"one"
    assert ContentApplier(root, CT).current() == "1.0"

    applier.activate(v2)
    assert (applier.content_path / "channel.json").read_bytes() == b"two"
    assert ContentApplier(root, CT).current() == "2.0"
    assert not (applier.root / ".current.new").exists()  # no leftover of the atomic swap


def test_activate_none_removes_the_link(tmp_path: Path, root: Path) -> None:
    applier = ContentApplier(root, CT)
    applier.activate(staged(applier, tmp_path, "1.0", b"one"))

    applier.activate(None)

    assert not applier.content_path.exists()
    assert not applier.content_path.is_symlink()
    assert ContentApplier(root, CT).current() is None
    applier.activate(None)  # nothing to remove is fine
    assert applier.has(VersionRef("1.0", hashlib.sha256(b"one").hexdigest()))  # the files stay


def test_current_is_none_when_the_link_points_at_no_staged_version(root: Path) -> None:
    applier = ContentApplier(root, CT)
    os.symlink("versions/9.9", applier.content_path)

    assert applier.current() is None


def test_staging_a_version_already_staged_is_a_no_op(tmp_path: Path, root: Path) -> None:
    applier = ContentApplier(root, CT)
    r = staged(applier, tmp_path, "1.0", b"original")
    marker = applier.root / "versions" / "1.0" / ".ringfence-version"
    before = marker.stat().st_mtime_ns
    other = tmp_path / "other"
    other.write_bytes(b"something else entirely")

    applier.stage(r, other)  # same version and hash: nothing is read or written

    assert (applier.root / "versions" / "1.0" / "content").read_bytes() == b"original"
    assert marker.stat().st_mtime_ns == before


def test_a_stale_copy_with_another_hash_is_replaced(tmp_path: Path, root: Path) -> None:
    applier = ContentApplier(root, CT)
    old = staged(applier, tmp_path, "1.0", b"first build")
    path, new = blob(tmp_path, "1.0@rebuilt", b"second build")

    applier.stage(new, path)

    assert (applier.root / "versions" / "1.0" / "content").read_bytes() == b"second build"
    assert applier.has(new)
    assert not applier.has(old)


def no_file_named(tmp_path: Path, name: str) -> bool:
    return not any(p.name == name for p in tmp_path.rglob("*"))


def test_a_tar_member_climbing_out_is_refused(tmp_path: Path, root: Path) -> None:
    applier = ContentApplier(root, CT)
    path, r = blob(tmp_path, "1.0", tar_bytes([("ok.txt", b"fine"), ("../evil", b"pwned"),
                                                ("../../../evil2", b"pwned")]))

    with pytest.raises(ApplyFailed, match="cannot stage"):
        applier.stage(r, path)

    assert not (applier.root / "versions" / "1.0").exists()
    assert not applier.has(r)
    assert list((applier.root / ".staging").iterdir()) == []  # the half-built directory is gone
    assert no_file_named(tmp_path, "evil")
    assert no_file_named(tmp_path, "evil2")
    assert no_file_named(tmp_path, "ok.txt")


def test_a_tar_symlink_pointing_outside_is_refused(tmp_path: Path, root: Path) -> None:
    applier = ContentApplier(root, CT)
    link = tarfile.TarInfo("escape")
    link.type = tarfile.SYMTYPE
    link.linkname = str(tmp_path)
    path, r = blob(tmp_path, "1.0", tar_bytes([link, ("escape/evil", b"pwned")]))

    with pytest.raises(ApplyFailed):
        applier.stage(r, path)

    assert not (applier.root / "versions" / "1.0").exists()
    assert no_file_named(tmp_path, "evil")


def test_a_tar_member_with_an_absolute_path_cannot_write_outside(tmp_path: Path, root: Path) -> None:
    """The "data" filter strips the leading "/" (Python's documented safe behaviour): the member
    lands inside the version directory, never at the absolute path."""
    applier = ContentApplier(root, CT)
    outside = tmp_path / "outside" / "evil"
    path, r = blob(tmp_path, "1.0", tar_bytes([(str(outside), b"pwned")]))

    applier.stage(r, path)

    assert not outside.exists()
    inside = applier.root / "versions" / "1.0" / str(outside).lstrip("/")
    assert inside.read_bytes() == b"pwned"


def test_a_damaged_tar_is_refused(tmp_path: Path, root: Path) -> None:
    applier = ContentApplier(root, CT)
    data = tar_bytes([("a", b"x" * 5000)])
    path, r = blob(tmp_path, "1.0", data[:1024])  # a valid header, the body cut short

    with pytest.raises(ApplyFailed):
        applier.stage(r, path)

    assert not (applier.root / "versions" / "1.0").exists()


def test_activating_a_version_that_is_not_staged_keeps_the_previous_one(tmp_path: Path, root: Path) -> None:
    applier = ContentApplier(root, CT)
    v1 = staged(applier, tmp_path, "1.0", b"one")
    applier.activate(v1)

    with pytest.raises(ApplyFailed, match="not staged"):
        applier.activate(VersionRef("2.0", "a" * 64))
    with pytest.raises(ApplyFailed, match="not staged"):
        applier.activate(VersionRef("1.0", "a" * 64))  # staged, but not this artifact

    assert applier.current() == "1.0"
    assert (applier.content_path / "content").read_bytes() == b"one"


def test_prune_keeps_only_the_given_versions(tmp_path: Path, root: Path) -> None:
    applier = ContentApplier(root, CT)
    refs = {v: staged(applier, tmp_path, v, v.encode()) for v in ("1", "2", "3", "4")}
    applier.activate(refs["4"])

    applier.prune({"4", "2"})

    assert sorted(p.name for p in (applier.root / "versions").iterdir()) == ["2", "4"]
    assert applier.has(refs["2"])
    assert not applier.has(refs["1"])
    assert applier.current() == "4"


@pytest.mark.parametrize("version", ["../x", "a/b", "", ".hidden", "x" * 129, "v 1"])
def test_invalid_versions_are_refused(tmp_path: Path, root: Path, version: str) -> None:
    applier = ContentApplier(root, CT)
    path = tmp_path / "blob"
    path.write_bytes(b"data")
    bad = VersionRef(version, "a" * 64)

    with pytest.raises(InvalidInput):
        applier.stage(bad, path)
    with pytest.raises(InvalidInput):
        applier.activate(bad)
    with pytest.raises(InvalidInput):
        applier.has(bad)

    assert list((applier.root / "versions").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob", "content"]


def test_content_type_names_map_to_one_directory_and_bad_names_are_refused(root: Path) -> None:
    assert content_dir_name("sensor/ipc-templates") == "sensor+ipc-templates"
    with pytest.raises(InvalidInput):
        ContentApplier(root, "../escape")
    with pytest.raises(InvalidInput):
        ContentApplier(root, "Upper Case")


# -- CommandApplier ---------------------------------------------------------------------------

RECORD = """
import json, os, sys
keys = ["RINGFENCE_CONTENT_TYPE", "RINGFENCE_VERSION", "RINGFENCE_ARTIFACT_DIR", "RINGFENCE_PREVIOUS_VERSION",
        "RINGFENCE_ROLLBACK"]
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"what": sys.argv[2], **{k: os.environ.get(k) for k in keys}}) + "\\n")
sys.exit(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
"""


def record(log: Path, what: str, exit_code: int = 0) -> tuple[str, ...]:
    return (sys.executable, "-c", RECORD, str(log), what, str(exit_code))


def calls(log: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_install_gets_the_version_its_files_and_the_previous_version(tmp_path: Path, root: Path) -> None:
    log = tmp_path / "calls.jsonl"
    applier = CommandApplier(root, CT, Commands(install=record(log, "install")))
    v1 = staged(applier, tmp_path, "1.0", b"one")
    v2 = staged(applier, tmp_path, "2.0", b"two")

    applier.activate(v1)
    applier.activate(v2)
    applier.activate(v1, rollback=True)  # no rollback command: install runs, told it is a rollback

    first, second, third = calls(log)
    assert first == {"what": "install", "RINGFENCE_CONTENT_TYPE": CT, "RINGFENCE_VERSION": "1.0",
                     "RINGFENCE_ARTIFACT_DIR": str(applier.root / "versions" / "1.0"),
                     "RINGFENCE_PREVIOUS_VERSION": "", "RINGFENCE_ROLLBACK": "0"}
    assert Path(first["RINGFENCE_ARTIFACT_DIR"], "content").read_bytes() == b"one"
    assert (second["RINGFENCE_VERSION"], second["RINGFENCE_PREVIOUS_VERSION"], second["RINGFENCE_ROLLBACK"]) == (
        "2.0", "1.0", "0")
    assert (third["what"], third["RINGFENCE_VERSION"], third["RINGFENCE_PREVIOUS_VERSION"],
            third["RINGFENCE_ROLLBACK"]) == ("install", "1.0", "2.0", "1")
    assert applier.current() == "1.0"


def test_a_failing_install_names_its_exit_code_and_keeps_the_old_version(tmp_path: Path, root: Path) -> None:
    log = tmp_path / "calls.jsonl"
    good = CommandApplier(root, CT, Commands(install=record(log, "install")))
    v1 = staged(good, tmp_path, "1.0", b"one")
    v2 = staged(good, tmp_path, "2.0", b"two")
    good.activate(v1)
    script = "import sys; print('disk full while installing', file=sys.stderr); sys.exit(3)"
    failing = CommandApplier(root, CT, Commands(install=(sys.executable, "-c", script)))

    with pytest.raises(ApplyFailed) as caught:
        failing.activate(v2)

    assert "exited with 3" in str(caught.value)
    assert "disk full while installing" in str(caught.value)
    assert failing.current() == "1.0"
    assert os.readlink(failing.content_path) == "versions/1.0"


def test_a_hanging_install_is_stopped_by_the_timeout(tmp_path: Path, root: Path) -> None:
    applier = CommandApplier(root, CT, Commands(install=(sys.executable, "-c", "import time; time.sleep(30)"),
                                                timeout_s=0.5))
    v1 = staged(applier, tmp_path, "1.0", b"one")

    started = time.monotonic()
    with pytest.raises(ApplyFailed, match=r"did not finish within 0\.5s"):
        applier.activate(v1)

    assert time.monotonic() - started < 5
    assert applier.current() is None


def test_a_missing_install_program_is_an_apply_failure(tmp_path: Path, root: Path) -> None:
    applier = CommandApplier(root, CT, Commands(install=(str(tmp_path / "no-such-installer"),)))
    v1 = staged(applier, tmp_path, "1.0", b"one")

    with pytest.raises(ApplyFailed, match="could not run"):
        applier.activate(v1)
    assert applier.current() is None


def test_rollback_runs_the_rollback_command_when_there_is_one(tmp_path: Path, root: Path) -> None:
    log = tmp_path / "calls.jsonl"
    applier = CommandApplier(root, CT, Commands(install=record(log, "install"), rollback=record(log, "rollback")))
    v1 = staged(applier, tmp_path, "1.0", b"one")
    v2 = staged(applier, tmp_path, "2.0", b"two")

    applier.activate(v1)
    applier.activate(v2)
    applier.activate(v1, rollback=True)

    assert [(c["what"], c["RINGFENCE_VERSION"], c["RINGFENCE_ROLLBACK"]) for c in calls(log)] == [
        ("install", "1.0", "0"), ("install", "2.0", "0"), ("rollback", "1.0", "1")]
    assert applier.current() == "1.0"


def test_a_failing_rollback_leaves_the_link_where_it_was(tmp_path: Path, root: Path) -> None:
    log = tmp_path / "calls.jsonl"
    applier = CommandApplier(root, CT, Commands(install=record(log, "install"),
                                                rollback=record(log, "rollback", exit_code=4)))
    v1 = staged(applier, tmp_path, "1.0", b"one")
    v2 = staged(applier, tmp_path, "2.0", b"two")
    applier.activate(v1)
    applier.activate(v2)

    with pytest.raises(ApplyFailed, match="exited with 4"):
        applier.activate(v1, rollback=True)

    assert applier.current() == "2.0"


def test_remove_runs_when_no_version_should_be_active(tmp_path: Path, root: Path) -> None:
    log = tmp_path / "calls.jsonl"
    applier = CommandApplier(root, CT, Commands(install=record(log, "install"), remove=record(log, "remove")))
    applier.activate(staged(applier, tmp_path, "1.0", b"one"))

    applier.activate(None)

    last = calls(log)[-1]
    assert (last["what"], last["RINGFENCE_VERSION"], last["RINGFENCE_ARTIFACT_DIR"],
            last["RINGFENCE_PREVIOUS_VERSION"]) == ("remove", "", "", "1.0")
    assert applier.current() is None
    assert not applier.content_path.is_symlink()


def test_an_unstaged_version_is_refused_before_its_install_runs(tmp_path: Path, root: Path) -> None:
    log = tmp_path / "calls.jsonl"
    applier = CommandApplier(root, CT, Commands(install=record(log, "install")))

    with pytest.raises(ApplyFailed, match="not staged"):
        applier.activate(VersionRef("1.0", "b" * 64))

    assert calls(log) == []  # nothing was installed from a directory that does not exist
