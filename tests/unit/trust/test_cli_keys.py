"""``ringfence keys``: init, show, rotate; errors are one line on stderr and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ringfence.cli.keys import keys_app

runner = CliRunner()


def test_init_then_show_then_rotate_root(tmp_path: Path) -> None:
    keys = tmp_path / "keys"

    init = runner.invoke(keys_app, ["init", str(keys), "--root-keys", "2", "--root-threshold", "2", "--json"])
    assert init.exit_code == 0, init.output
    created = json.loads(init.stdout)
    assert created["root_version"] == 1
    assert created["publish"] == [str(keys / "publish" / n) for n in ("1.root.json", "root.json", "targets.json")]
    assert created["online_keys"] == [str(keys / "online" / f"{r}.key") for r in ("timestamp", "snapshot", "releases")]

    show = runner.invoke(keys_app, ["show", str(keys), "--json"])
    assert show.exit_code == 0, show.output
    report = json.loads(show.stdout)
    assert (report["root"]["version"], report["root"]["threshold"], len(report["root"]["keyids"])) == (1, 2, 2)
    assert report["problems"] == []

    rotated = runner.invoke(keys_app, ["rotate", str(keys), "--role", "root", "--json"])
    assert rotated.exit_code == 0, rotated.output
    assert json.loads(rotated.stdout)["root_version"] == 2

    human = runner.invoke(keys_app, ["rotate", str(keys), "--role", "timestamp"])
    assert human.exit_code == 0, human.output
    assert "rotate timestamp: root v3" in human.stdout
    assert str(keys / "online" / "timestamp.key") in human.stdout
    assert f"{keys}: root v3, targets v1" in runner.invoke(keys_app, ["show", str(keys)]).stdout


def test_init_over_an_existing_directory_fails_naming_it(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert runner.invoke(keys_app, ["init", str(keys)]).exit_code == 0

    again = runner.invoke(keys_app, ["init", str(keys)])

    assert again.exit_code == 2
    assert again.stderr.strip() == f"error: {keys} already exists and is not empty; init never overwrites keys"


def test_bad_options_fail_with_a_message(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    too_high = runner.invoke(keys_app, ["init", str(keys), "--targets-keys", "1", "--targets-threshold", "2"])
    assert too_high.exit_code == 2
    assert "targets threshold must be between 1 and its 1 keys, not 2" in too_high.stderr

    assert runner.invoke(keys_app, ["init", str(keys)]).exit_code == 0
    bogus = runner.invoke(keys_app, ["rotate", str(keys), "--role", "targets"])
    assert bogus.exit_code == 2
    assert "--role must be one of root, timestamp, snapshot, releases, not 'targets'" in bogus.stderr
    misplaced = runner.invoke(keys_app, ["rotate", str(keys), "--role", "snapshot", "--root-keys", "4"])
    assert misplaced.exit_code == 2
    assert "--root-keys and --root-threshold go with --role root" in misplaced.stderr


def test_show_exits_non_zero_when_a_key_is_missing(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert runner.invoke(keys_app, ["init", str(keys)]).exit_code == 0
    (keys / "online" / "releases.key").unlink()

    show = runner.invoke(keys_app, ["show", str(keys)])

    assert show.exit_code == 2
    assert "the online releases key is missing" in show.stderr
    missing = runner.invoke(keys_app, ["show", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2
    assert "is not a key directory" in missing.stderr
