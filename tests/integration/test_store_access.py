"""``store/access.py`` on SQLite and PostgreSQL: API and enrolment tokens (hashed at rest),
device enrolment, streaming and listing devices, and bulk sightings."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text

from ringfence.core.clock import utc
from ringfence.core.errors import InvalidInput
from ringfence.core.models import DeviceAttributes
from ringfence.store.access import (
    Sighting,
    create_api_token,
    create_enroll_token,
    enroll_device,
    find_api_token,
    find_enroll_token,
    hash_secret,
    iter_device_records,
    list_devices,
    record_sightings,
    upsert,
)
from ringfence.store.db import Database
from ringfence.store.schema import ApiToken, DeviceRow, DeviceVersion, EnrollToken
from tests.integration.store_support import T0, add_device, at, count


def _raw_rows(db: Database, table: str) -> list[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table}"))]


def _stored_anywhere(db: Database, table: str, secret: str) -> bool:
    return any(secret in str(value) for row in _raw_rows(db, table) for value in row)


# --- API tokens ---------------------------------------------------------------------------

def test_api_token_is_found_by_its_secret_and_stored_only_as_a_hash(db: Database) -> None:
    with db.session() as s:
        token_id, secret = create_api_token(s, name="ci", role="releaser", now=T0)
    assert secret.startswith("rft_")
    assert len(secret) > 40
    assert not _stored_anywhere(db, "api_tokens", secret)
    with db.session() as s:
        row = find_api_token(s, secret, at(1))
        assert row is not None
        assert (row.id, row.name, row.role) == (token_id, "ci", "releaser")
        assert row.token_hash == hash_secret(secret)
        assert find_api_token(s, secret + "x", at(1)) is None
        assert find_api_token(s, "", at(1)) is None


def test_api_tokens_are_distinct(db: Database) -> None:
    with db.session() as s:
        one = create_api_token(s, name="a", role="viewer", now=T0)
        two = create_api_token(s, name="a", role="viewer", now=T0)
    assert one[0] != two[0]
    assert one[1] != two[1]
    with db.session() as s:
        assert {find_api_token(s, one[1], T0).id, find_api_token(s, two[1], T0).id} == {one[0], two[0]}  # type: ignore[union-attr]


def test_revoked_api_token_is_not_found(db: Database) -> None:
    with db.session() as s:
        token_id, secret = create_api_token(s, name="ci", role="admin", now=T0)
    with db.session() as s:
        row = s.get(ApiToken, token_id)
        assert row is not None
        row.revoked_at = at(10)
    with db.session() as s:
        assert find_api_token(s, secret, at(20)) is None


def test_expired_api_token_is_not_found(db: Database) -> None:
    with db.session() as s:
        token_id, secret = create_api_token(s, name="ci", role="operator", now=T0)
    with db.session() as s:
        row = s.get(ApiToken, token_id)
        assert row is not None
        row.expires_at = at(60)
    with db.session() as s:
        assert find_api_token(s, secret, at(59)) is not None
        assert find_api_token(s, secret, at(60)) is None
        assert find_api_token(s, secret, at(61)) is None


def test_unknown_role_is_invalid_input_naming_role_and_writes_nothing(db: Database) -> None:
    with db.session() as s:
        with pytest.raises(InvalidInput) as info:
            create_api_token(s, name="ci", role="superuser", now=T0)
        assert info.value.details["field"] == "role"
        assert info.value.details["value"] == "superuser"
        assert "superuser" in info.value.message
        s.flush()
        assert count(s, ApiToken) == 0


# --- enrolment tokens ---------------------------------------------------------------------

def test_enroll_token_round_trip_hashed_at_rest(db: Database) -> None:
    with db.session() as s:
        token_id, secret = create_enroll_token(s, tenant="  acme  ", actor="alice", now=T0)
    assert secret.startswith("rfe_")
    assert not _stored_anywhere(db, "enroll_tokens", secret)
    with db.session() as s:
        row = find_enroll_token(s, secret)
        assert row is not None
        assert (row.id, row.tenant, row.created_by) == (token_id, "acme", "alice")
        assert find_enroll_token(s, secret[:-1]) is None
        # An API token's secret is not an enrolment token, and the other way round.
        _, api_secret = create_api_token(s, name="x", role="viewer", now=T0)
        assert find_enroll_token(s, api_secret) is None
        assert find_api_token(s, secret, T0) is None


def test_revoked_enroll_token_is_not_found(db: Database) -> None:
    with db.session() as s:
        token_id, secret = create_enroll_token(s, tenant="acme", actor="alice", now=T0)
    with db.session() as s:
        row = s.get(EnrollToken, token_id)
        assert row is not None
        row.revoked_at = at(1)
    with db.session() as s:
        assert find_enroll_token(s, secret) is None


def test_bad_tenant_is_invalid_input(db: Database) -> None:
    with db.session() as s:
        for tenant in ("", "   ", "x" * 201):
            with pytest.raises(InvalidInput) as info:
                create_enroll_token(s, tenant=tenant, actor="alice", now=T0)
            assert info.value.details["field"] == "tenant"
        s.flush()
        assert count(s, EnrollToken) == 0


# --- devices ------------------------------------------------------------------------------

def test_enroll_device_stores_attributes_and_only_a_hash_of_the_credential(db: Database) -> None:
    attrs = DeviceAttributes(platform="linux", os_version="6.8", arch="arm64", region="us-east", tenant="acme",
                             channel="early", tags=frozenset({"internal", "lab"}), agent_version="7.11")
    with db.session() as s:
        record, credential = enroll_device(s, attrs, T0)
    device_id, _, rest = credential.partition(".")
    assert device_id == record.id
    assert len(rest) > 30
    assert record.credential_hash == hash_secret(credential)
    assert record.attributes == attrs
    assert not _stored_anywhere(db, "devices", credential)
    assert not _stored_anywhere(db, "devices", rest)
    with db.session() as s:
        row = s.get(DeviceRow, record.id)
        assert row is not None
        assert row.credential_hash == record.credential_hash
        assert row.tags == ["internal", "lab"]
    assert list(_records(db)) == [record]


def _records(db: Database, batch: int = 50_000) -> list[Any]:
    with db.session() as s:
        return list(iter_device_records(s, batch=batch))


def test_iter_device_records_streams_every_device_once_across_batches(db: Database) -> None:
    enrolled = {}
    with db.session() as s:
        for i in range(5):
            attrs = DeviceAttributes(platform="windows", region=f"r{i}", tags=frozenset({f"t{i}"}))
            record, _ = enroll_device(s, attrs, at(i))
            enrolled[record.id] = record
    for batch in (1, 2, 5, 6):  # batches that split the fleet, end exactly at its end, and exceed it
        records = _records(db, batch=batch)
        assert [r.id for r in records] == sorted(enrolled), batch
        assert {r.id: r for r in records} == enrolled


def test_iter_device_records_on_an_empty_fleet(db: Database) -> None:
    assert _records(db, batch=2) == []


def _fleet(db: Database) -> dict[str, str]:
    """Six devices enrolled a minute apart; returns name -> id."""
    specs: dict[str, dict[str, Any]] = {
        "w1": {"platform": "windows", "region": "eu-west", "tenant": "acme", "tags": frozenset({"internal"})},
        "w2": {"platform": "windows", "region": "us-east", "tenant": "acme"},
        "w3": {"platform": "windows", "region": "eu-west", "tenant": "globex", "tags": frozenset({"internal", "x"})},
        "m1": {"platform": "macos", "region": "eu-west", "tenant": "acme", "channel": "early"},
        "l1": {"platform": "linux", "region": "eu-west", "tenant": "globex", "tags": frozenset({"internal"})},
        "l2": {"platform": "linux", "region": "ap-south", "tenant": "acme", "os_version": "6.8"},
    }
    return {name: add_device(db, now=at(60 * i), **spec).id for i, (name, spec) in enumerate(specs.items())}


def _names(fleet: dict[str, str], page: list[dict[str, Any]]) -> list[str]:
    by_id = {v: k for k, v in fleet.items()}
    return [by_id[d["id"]] for d in page]


def test_list_devices_newest_first_with_filters(db: Database) -> None:
    fleet = _fleet(db)
    with db.session() as s:
        total, page = list_devices(s, {})
        assert total == 6
        assert _names(fleet, page) == ["l2", "l1", "m1", "w3", "w2", "w1"]
        total, page = list_devices(s, {"platform": "windows"})
        assert (total, _names(fleet, page)) == (3, ["w3", "w2", "w1"])
        total, page = list_devices(s, {"platform": "windows", "region": "eu-west"})
        assert (total, _names(fleet, page)) == (2, ["w3", "w1"])
        total, page = list_devices(s, {"tenant": "globex"})
        assert (total, _names(fleet, page)) == (2, ["l1", "w3"])
        assert _names(fleet, list_devices(s, {"channel": "early"})[1]) == ["m1"]
        assert _names(fleet, list_devices(s, {"os_version": "6.8"})[1]) == ["l2"]
        assert list_devices(s, {"platform": "solaris"}) == (0, [])


def test_list_devices_page_shape(db: Database) -> None:
    fleet = _fleet(db)
    with db.session() as s:
        _, page = list_devices(s, {"platform": "macos"})
    assert page == [{
        "id": fleet["m1"], "tenant": "acme", "platform": "macos", "os_version": "", "arch": "",
        "region": "eu-west", "channel": "early", "tags": [], "agent_version": "",
        "enrolled_at": at(180).isoformat(), "last_seen_at": at(180).isoformat(), "versions": {},
    }]


def test_list_devices_paging(db: Database) -> None:
    fleet = _fleet(db)
    with db.session() as s:
        pages = [list_devices(s, {}, limit=4, offset=offset) for offset in (0, 4, 8)]
    assert [total for total, _ in pages] == [6, 6, 6]
    assert [_names(fleet, page) for _, page in pages] == [["l2", "l1", "m1", "w3"], ["w2", "w1"], []]


def test_list_devices_by_tag_with_paging_and_filters(db: Database) -> None:
    fleet = _fleet(db)
    with db.session() as s:
        total, page = list_devices(s, {}, tag="internal")
        assert (total, _names(fleet, page)) == (3, ["l1", "w3", "w1"])  # newest first, like every listing
        total, page = list_devices(s, {}, tag="internal", limit=2, offset=1)
        assert (total, _names(fleet, page)) == (3, ["w3", "w1"])
        total, page = list_devices(s, {"platform": "windows"}, tag="internal")
        assert (total, _names(fleet, page)) == (2, ["w3", "w1"])
        assert list_devices(s, {}, tag="intern") == (0, [])  # a tag matches whole, not as a prefix


def test_list_devices_by_unknown_filter_is_invalid_input(db: Database) -> None:
    with db.session() as s, pytest.raises(InvalidInput) as info:
        list_devices(s, {"credential_hash": "abc"})
    assert info.value.details["field"] == "credential_hash"


def test_list_devices_includes_reported_versions(db: Database) -> None:
    one, two = add_device(db), add_device(db, now=at(1))
    with db.session() as s:
        record_sightings(s, [Sighting(one.id, at(5), versions={"agent/binary": "7.11", "sensor/ipc": "291"})])
    with db.session() as s:
        _, page = list_devices(s, {})
    assert {d["id"]: d["versions"] for d in page} == {
        one.id: {"agent/binary": "7.11", "sensor/ipc": "291"}, two.id: {}}


# --- sightings ----------------------------------------------------------------------------

def _device(db: Database, device_id: str) -> DeviceRow:
    with db.session() as s:
        row = s.get(DeviceRow, device_id)
        assert row is not None
        return row


def _versions(db: Database) -> dict[tuple[str, str], tuple[str, Any]]:
    with db.session() as s:
        return {(v.device_id, v.content_type): (v.version, utc(v.reported_at))
                for v in s.scalars(select(DeviceVersion))}


def test_record_sightings_updates_many_devices_in_bulk(db: Database) -> None:
    quiet, moved, updated = add_device(db), add_device(db), add_device(db)
    new_attrs = DeviceAttributes(platform="windows", os_version="11 24H2", arch="x64", region="eu-central",
                                 tags=frozenset({"kiosk"}), agent_version="7.12")
    with db.session() as s:
        record_sightings(s, [
            Sighting(quiet.id, at(10)),
            Sighting(moved.id, at(11), attributes=new_attrs),
            Sighting(updated.id, at(12), versions={"agent/binary": "7.12"}),
        ])
    row = _device(db, quiet.id)
    assert row.last_seen_at is not None
    assert utc(row.last_seen_at) == at(10)
    assert (row.region, row.tags) == ("eu-west", [])
    row = _device(db, moved.id)
    assert row.last_seen_at is not None
    assert utc(row.last_seen_at) == at(11)
    assert (row.os_version, row.arch, row.region, row.tags, row.agent_version) == (
        "11 24H2", "x64", "eu-central", ["kiosk"], "7.12")
    assert (row.tenant, row.channel) == ("default", "ga")  # set by enrolment and policy, not by sightings
    assert _versions(db) == {(updated.id, "agent/binary"): ("7.12", at(12))}


def test_record_sightings_later_sightings_win(db: Database) -> None:
    device = add_device(db)
    first = DeviceAttributes(platform="windows", region="eu-north", agent_version="7.11")
    second = DeviceAttributes(platform="windows", region="eu-south", agent_version="7.12")
    with db.session() as s:
        record_sightings(s, [
            Sighting(device.id, at(1), attributes=first, versions={"agent/binary": "7.11", "sensor/ipc": "290"}),
            Sighting(device.id, at(2), attributes=second, versions={"agent/binary": "7.12"}),
            Sighting(device.id, at(3)),
        ])
    row = _device(db, device.id)
    assert row.last_seen_at is not None
    assert utc(row.last_seen_at) == at(3)
    assert (row.region, row.agent_version) == ("eu-south", "7.12")
    assert _versions(db) == {
        (device.id, "agent/binary"): ("7.12", at(2)),
        (device.id, "sensor/ipc"): ("290", at(1)),
    }
    with db.session() as s:
        record_sightings(s, [Sighting(device.id, at(4), versions={"agent/binary": "7.13"})])
    assert _versions(db)[(device.id, "agent/binary")] == ("7.13", at(4))


def test_record_sightings_keeps_a_change_followed_by_a_plain_check_in(db: Database) -> None:
    """A sighting carries only what changed since the previous check-in, so when a device checks
    in twice within one batch (moved, then nothing new) the move must still be written."""
    device = add_device(db)
    moved = DeviceAttributes(platform="windows", region="eu-central", agent_version="7.12")
    with db.session() as s:
        record_sightings(s, [Sighting(device.id, at(1), attributes=moved), Sighting(device.id, at(2))])
    row = _device(db, device.id)
    assert (row.region, row.agent_version) == ("eu-central", "7.12")
    assert row.last_seen_at is not None
    assert utc(row.last_seen_at) == at(2)


def test_record_sightings_of_nothing_writes_nothing(db: Database) -> None:
    device = add_device(db)
    with db.session() as s:
        record_sightings(s, [])
    seen = _device(db, device.id).last_seen_at
    assert seen is not None
    assert utc(seen) == T0


# --- upsert -------------------------------------------------------------------------------

def test_upsert_keeps_or_updates_existing_rows(db: Database) -> None:
    device = add_device(db)
    key = ("device_id", "content_type")
    row = {"device_id": device.id, "content_type": "agent/binary", "version": "1.0", "reported_at": at(1)}
    with db.session() as s:
        upsert(s, DeviceVersion, [row], keys=key)
        upsert(s, DeviceVersion, [row], keys=key)
        upsert(s, DeviceVersion, [{**row, "version": "2.0"}], keys=key)  # no update columns: keep the first
    assert _versions(db) == {(device.id, "agent/binary"): ("1.0", at(1))}
    with db.session() as s:
        upsert(s, DeviceVersion, [{**row, "version": "3.0", "reported_at": at(3)}], keys=key,
               update_columns=("version",))
        upsert(s, DeviceVersion, [], keys=key)
    assert _versions(db) == {(device.id, "agent/binary"): ("3.0", at(1))}
    with db.session() as s:
        assert len(s.scalars(select(DeviceVersion)).all()) == 1
