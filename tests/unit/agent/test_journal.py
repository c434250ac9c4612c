"""The agent journal: two slots written alternately, each checksummed, read back newest-intact-first;
the outbox and the per-content-type bookkeeping (commit, revert, the way back)."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from ringfence.agent.journal import (
    MAX_OUTBOX,
    ContentState,
    Journal,
    JournalError,
    State,
    Update,
    VersionRef,
    summary,
)

SLOT_A = "journal.a.json"
SLOT_B = "journal.b.json"


def ref(version: str) -> VersionRef:
    return VersionRef(version, f"{version:0>64}"[-64:])


def rich_state() -> State:
    state = State(device_id="dev-1", boot=7, clean_exit=False, seq=12)
    sensor = state.of("sensor/ipc-templates")
    sensor.active = ref("3.0")
    sensor.lkg = ref("2.0")
    sensor.history = [ref("1.5"), ref("1.0")]
    sensor.blocked = {"2.5": "crashed twice during boot"}
    sensor.update = Update(target=ref("3.0"), release="rel-9", size=4096, step="reverting", boots=2,
                           intent_id="int-4", intent_acked=True, download_failures=1,
                           started_at="2024-05-01T10:00:00+00:00", revert_to=ref("2.0"), revert_kind="rolled_back",
                           reason="health probe failed: exit 3")
    state.of("agent/binary").update = Update(target=ref("0.9"), release=None, size=10)
    state.queue({"id": "7-11", "kind": "heartbeat", "at": "t1"})
    state.queue({"id": "7-12", "kind": "failed", "content_type": "sensor/ipc-templates", "version": "3.0",
                 "details": {"nested": [1, 2, {"x": None}]}})
    return state


def generation_of(path: Path) -> int:
    return int(json.loads(path.read_bytes())["body"]["generation"])


# -- the two slots ---------------------------------------------------------------------------

def test_a_rich_state_round_trips(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.state = rich_state()
    journal.save()

    again = Journal.open(tmp_path)

    assert again.state == rich_state()
    assert again.generation == 1
    update = again.state.content["sensor/ipc-templates"].update
    assert update is not None
    assert update.revert_to == ref("2.0")
    assert again.state.content["agent/binary"].update == Update(target=ref("0.9"), release=None, size=10)


def test_generations_alternate_between_the_slots(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.state.boot = 1
    journal.save()
    assert (tmp_path / SLOT_B).exists()
    assert not (tmp_path / SLOT_A).exists()
    assert generation_of(tmp_path / SLOT_B) == 1

    journal.state.boot = 2
    journal.save()
    assert generation_of(tmp_path / SLOT_A) == 2
    assert generation_of(tmp_path / SLOT_B) == 1  # the older state is still there, untouched

    journal.state.boot = 3
    journal.save()
    assert generation_of(tmp_path / SLOT_B) == 3
    assert generation_of(tmp_path / SLOT_A) == 2

    reopened = Journal.open(tmp_path)
    assert reopened.generation == 3
    assert reopened.state.boot == 3


def two_generations(tmp_path: Path) -> None:
    """Generation 1 (boot=1, in slot b) and generation 2 (boot=2, in slot a, the newest)."""
    journal = Journal.open(tmp_path)
    journal.state.device_id = "dev-one"
    journal.state.boot = 1
    journal.save()
    journal.state.device_id = "dev-two"
    journal.state.boot = 2
    journal.save()
    assert Journal.open(tmp_path).state.boot == 2


def test_a_torn_newest_slot_falls_back_to_the_older_state(tmp_path: Path) -> None:
    two_generations(tmp_path)
    newest = tmp_path / SLOT_A
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    journal = Journal.open(tmp_path)

    assert journal.state.boot == 1
    assert journal.state.device_id == "dev-one"
    assert journal.generation == 1


def test_a_slot_whose_checksum_fails_is_not_trusted(tmp_path: Path) -> None:
    two_generations(tmp_path)
    newest = tmp_path / SLOT_A
    raw = newest.read_bytes()
    assert raw.count(b"dev-two") == 1
    damaged = raw.replace(b"dev-two", b"dev-twp")  # still valid JSON: only the checksum can tell
    json.loads(damaged)
    newest.write_bytes(damaged)

    journal = Journal.open(tmp_path)

    assert journal.state.device_id == "dev-one"
    assert journal.generation == 1


def test_saving_after_a_fallback_overwrites_the_damaged_slot_not_the_good_one(tmp_path: Path) -> None:
    two_generations(tmp_path)
    (tmp_path / SLOT_A).write_bytes(b"{")
    good = (tmp_path / SLOT_B).read_bytes()

    journal = Journal.open(tmp_path)
    journal.state.boot = 5
    journal.save()

    assert (tmp_path / SLOT_B).read_bytes() == good
    assert generation_of(tmp_path / SLOT_A) == 2
    assert Journal.open(tmp_path).state.boot == 5


def test_both_slots_damaged_is_an_error_naming_both_files(tmp_path: Path) -> None:
    two_generations(tmp_path)
    (tmp_path / SLOT_A).write_bytes(b"")
    (tmp_path / SLOT_B).write_bytes(b'{"sha256": "00", "body": {}}')

    with pytest.raises(JournalError) as caught:
        Journal.open(tmp_path)

    assert SLOT_A in str(caught.value)
    assert SLOT_B in str(caught.value)
    assert str(tmp_path) in str(caught.value)


def test_one_damaged_slot_and_no_other_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    (tmp_path / SLOT_B).write_bytes(b"\x00\xff garbage")

    with pytest.raises(JournalError, match=SLOT_B):
        Journal.open(tmp_path)


def test_no_slot_at_all_is_a_fresh_agent(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)

    assert journal.state == State()
    assert journal.generation == 0
    assert list(tmp_path.iterdir()) == []  # opening writes nothing


def test_leftover_temporary_files_are_ignored(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.state.boot = 4
    journal.save()
    for slot in (SLOT_A, SLOT_B):  # what a crash in the middle of write_atomic leaves behind
        tmp = tmp_path / f".{slot}.tmp"
        tmp.write_bytes(b'{"half a')
        tmp.chmod(0o644)

    again = Journal.open(tmp_path)
    assert again.state.boot == 4
    again.state.boot = 5
    again.save()  # reuses the stale temporary file of slot a

    assert Journal.open(tmp_path).state.boot == 5
    assert stat.S_IMODE((tmp_path / SLOT_A).stat().st_mode) == 0o600
    assert not (tmp_path / f".{SLOT_A}.tmp").exists()


def test_slots_are_private_to_the_agent(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.save()
    journal.save()

    for slot in (SLOT_A, SLOT_B):
        assert stat.S_IMODE((tmp_path / slot).stat().st_mode) == 0o600


def test_a_failed_save_raises_journal_error_and_keeps_the_generation(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "gone", State(), 4)

    with pytest.raises(JournalError, match="cannot write the journal"):
        journal.save()

    assert journal.generation == 4


def test_an_unknown_format_is_treated_as_damage(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.save()  # slot b, generation 1
    raw = json.loads((tmp_path / SLOT_B).read_bytes())
    raw["body"]["format"] = 99
    payload = json.dumps(raw["body"], sort_keys=True, separators=(",", ":"))
    raw["sha256"] = hashlib.sha256(payload.encode()).hexdigest()  # checksum right, format wrong
    (tmp_path / SLOT_B).write_text(json.dumps(raw))

    with pytest.raises(JournalError):
        Journal.open(tmp_path)


# -- the outbox -------------------------------------------------------------------------------

def event(i: int, kind: str) -> dict[str, str]:
    return {"id": f"1-{i}", "kind": kind}


def test_a_full_outbox_drops_the_oldest_heartbeat_first() -> None:
    state = State()
    state.queue(event(0, "failed"))
    state.queue(event(1, "heartbeat"))
    state.queue(event(2, "heartbeat"))
    for i in range(3, MAX_OUTBOX):
        state.queue(event(i, "healthy"))
    assert len(state.outbox) == MAX_OUTBOX

    state.queue(event(MAX_OUTBOX, "rolled_back"))
    ids = [e["id"] for e in state.outbox]
    assert len(ids) == MAX_OUTBOX
    assert "1-1" not in ids  # the oldest heartbeat went
    assert ids[:2] == ["1-0", "1-2"]  # the older non-heartbeat and the newer heartbeat stayed
    assert ids[-1] == f"1-{MAX_OUTBOX}"

    state.queue(event(MAX_OUTBOX + 1, "failed"))
    ids = [e["id"] for e in state.outbox]
    assert "1-2" not in ids
    assert ids[0] == "1-0"


def test_a_full_outbox_without_heartbeats_drops_the_oldest_event() -> None:
    state = State()
    for i in range(MAX_OUTBOX):
        state.queue(event(i, "healthy"))

    state.queue(event(MAX_OUTBOX, "heartbeat"))  # the only heartbeat is the one just queued: it goes
    assert [e["id"] for e in state.outbox] == [f"1-{i}" for i in range(MAX_OUTBOX)]

    state.queue(event(MAX_OUTBOX + 1, "failed"))  # no heartbeat left: the oldest event goes
    ids = [e["id"] for e in state.outbox]
    assert len(ids) == MAX_OUTBOX
    assert ids[0] == "1-1"
    assert ids[-1] == f"1-{MAX_OUTBOX + 1}"


def test_acknowledge_removes_acked_events_and_says_whether_anything_changed() -> None:
    state = State()
    for i in range(4):
        state.queue(event(i, "heartbeat"))

    assert state.acknowledge({"1-1", "1-3", "9-9"}) is True
    assert [e["id"] for e in state.outbox] == ["1-0", "1-2"]
    assert state.acknowledge({"9-9"}) is False
    assert state.acknowledge(set()) is False
    assert [e["id"] for e in state.outbox] == ["1-0", "1-2"]


def test_event_ids_are_unique_across_boots() -> None:
    state = State(boot=3)
    assert [state.next_event_id(), state.next_event_id()] == ["3-1", "3-2"]
    state.boot = 4
    assert state.next_event_id() == "4-3"


# -- per content type ------------------------------------------------------------------------

def test_commit_moves_the_old_lkg_into_history_and_trims_it() -> None:
    c = ContentState()
    c.update = Update(target=ref("1"), release=None, size=1)
    c.commit(ref("1"), keep=2)
    assert (c.active, c.lkg, c.history, c.update) == (ref("1"), ref("1"), [], None)

    for version in ("2", "3", "4"):
        c.commit(ref(version), keep=2)

    assert c.lkg == ref("4")
    assert c.active == ref("4")
    assert c.history == [ref("3"), ref("2")]  # newest first, trimmed to keep


def test_commit_of_the_current_lkg_or_of_a_version_in_history_does_not_duplicate_it() -> None:
    c = ContentState(lkg=ref("2"), history=[ref("1")])
    c.commit(ref("2"), keep=5)
    assert c.history == [ref("1")]

    c.commit(ref("1"), keep=5)  # going back to an older version, which then passes its trial
    assert c.lkg == ref("1")
    assert c.history == [ref("2")]


def test_reverted_from_a_trial_blocks_it_and_keeps_the_lkg() -> None:
    c = ContentState(active=ref("3"), lkg=ref("2"), history=[ref("1")],
                     update=Update(target=ref("3"), release=None, size=1, step="trial"))

    c.reverted("3", ref("2"), "crashed")

    assert c.active == ref("2")
    assert c.lkg == ref("2")
    assert c.history == [ref("1")]
    assert c.blocked == {"3": "crashed"}
    assert c.update is None


def test_reverted_from_the_lkg_itself_promotes_the_way_back() -> None:
    c = ContentState(active=ref("3"), lkg=ref("3"), history=[ref("2"), ref("1")])

    c.reverted("3", ref("2"), "revoked")

    assert c.active == ref("2")
    assert c.lkg == ref("2")
    assert c.history == [ref("1")]  # the new LKG is not also in the history
    assert c.blocked == {"3": "revoked"}


def test_reverted_to_nothing() -> None:
    c = ContentState(active=ref("1"), lkg=ref("1"))

    c.reverted("1", None, "revoked")

    assert (c.active, c.lkg, c.history) == (None, None, [])
    assert "1" in c.blocked


def test_way_back_skips_the_version_being_left_and_revoked_and_blocked_ones() -> None:
    c = ContentState(active=ref("4"), lkg=ref("3"), history=[ref("2"), ref("1")])

    assert c.way_back("4") == ref("3")
    assert c.way_back("3") == ref("2")
    assert c.way_back("4", revoked={"3"}) == ref("2")
    c.blocked["2"] = "failed here"
    assert c.way_back("3") == ref("1")
    assert c.way_back("3", revoked=frozenset({"1"})) is None
    assert ContentState().way_back("1") is None


def test_keep_holds_the_active_version_every_way_back_and_the_update_target() -> None:
    c = ContentState(active=ref("4"), lkg=ref("3"), history=[ref("2"), ref("1")])
    assert c.keep() == {"4", "3", "2", "1"}

    c.update = Update(target=ref("5"), release=None, size=1)
    assert c.keep() == {"5", "4", "3", "2", "1"}
    assert ContentState().keep() == set()


def test_summary() -> None:
    state = rich_state()

    out = summary(state)

    assert out["device_id"] == "dev-1"
    assert out["boot"] == 7
    assert out["outbox"] == 2
    assert list(out["content"]) == ["agent/binary", "sensor/ipc-templates"]  # sorted
    assert out["content"]["sensor/ipc-templates"] == {
        "active": "3.0", "lkg": "2.0", "previous": ["1.5", "1.0"],
        "blocked": {"2.5": "crashed twice during boot"},
        "update": {"version": "3.0", "step": "reverting", "boots": 2},
    }
    assert out["content"]["agent/binary"]["active"] is None
    json.dumps(out)  # printable as JSON


# -- signed delivery's bookkeeping -----------------------------------------------------------

def test_signed_seqs_and_refusals_round_trip(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    c = journal.state.of("sensor/ipc-templates")
    c.active = c.lkg = ref("3.0")
    c.seqs = {"3.0": 12, "2.0": 9}
    c.refused = {"2.0": "3.0"}
    journal.save()

    again = Journal.open(tmp_path).state.of("sensor/ipc-templates")

    assert (again.seqs, again.refused) == ({"3.0": 12, "2.0": 9}, {"2.0": "3.0"})


def test_a_journal_written_before_signed_delivery_opens_with_no_seqs(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.state.of("sensor/ipc-templates").active = ref("1.0")
    journal.save()
    slot = tmp_path / SLOT_B
    doc = json.loads(slot.read_bytes())
    for c in doc["body"]["content"].values():
        del c["seqs"], c["refused"]
    payload = json.dumps(doc["body"], sort_keys=True, separators=(",", ":"))
    doc["sha256"] = hashlib.sha256(payload.encode()).hexdigest()
    slot.write_text(json.dumps(doc))

    c = Journal.open(tmp_path).state.of("sensor/ipc-templates")

    assert (c.active, c.seqs, c.refused) == (ref("1.0"), {}, {})


def test_a_new_active_version_ends_refusals_and_keeps_seqs_only_for_versions_on_disk() -> None:
    c = ContentState(active=ref("3"), lkg=ref("3"), history=[ref("1")], seqs={"1": 1, "2": 2, "3": 3},
                     refused={"2": "3"})

    c.commit(ref("4"), keep=1)
    assert c.refused == {}
    assert c.seqs == {"3": 3}  # 4's seq is recorded when it is verified, not by the commit

    c.refused = {"2": "4"}
    c.reverted("4", ref("3"), "rolled back")
    assert (c.refused, c.seqs) == ({}, {"3": 3})
    assert c.committed("3") and not c.committed("4")
