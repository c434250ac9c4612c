"""The dashboard in a real headless Chromium against a real server process with a live fleet.

Given 60 simulated agents (``ringfence sim live``) over three platforms and two regions, a good
release that completed and a release that crashes Windows machines, which the server halted in
its canary wave: a viewer sees the halt and why, finds the rollback button disabled, and the
server refuses the call when it is forced; an operator signs in with a pasted token, sees the
halted rollout in the list, opens it, reads the halt reason (the history's own words) and the
per-stratum charts, rolls it back with a reason, and watches the phase change without a reload.

Chromium is the Debian package (``/usr/bin/chromium``) driven by Playwright. Without it the test
skips, saying why; under ``RINGFENCE_REQUIRE_PG=1`` (CI) it fails instead
(``RINGFENCE_CHROMIUM`` names another binary). With
``RINGFENCE_SCREENSHOT=PATH`` the screenshot of the halted rollout is also written to PATH (the
README's ``docs/dashboard.png`` is made that way).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REQUIRE_PG
from tests.e2e.test_sim_live import CANARY_FIRST, TWO_WAVES
from tests.support import RINGFENCE, Publisher, ServerProcess, own_server, until

pytestmark = pytest.mark.e2e

CT = "sensor/ipc-templates"
CHROMIUM = Path(os.environ.get("RINGFENCE_CHROMIUM", "/usr/bin/chromium"))
DEVICES = 60
WAIT_MS = 30_000  # how long the page may take to show what the server already knows
DRAWN = re.compile(r"^M[\d.]+,[\d.]+ L")  # an SVG path with at least one segment
# The live canary with a budget of one: two crashed windows devices halt it, however the canary's
# few devices fall over the strata (a budget of two needs a third windows device in the canary).
CANARY = CANARY_FIRST.replace("failure_budget: 2", "failure_budget: 1")


def _browser_missing() -> str | None:
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium, or skip (fail under RINGFENCE_REQUIRE_PG=1, as CI runs everything)."""
    problem = _browser_missing()
    if problem is not None:
        if REQUIRE_PG:
            pytest.fail(f"RINGFENCE_REQUIRE_PG=1 but {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from own_server(tmp_path)


@pytest.fixture
def halted(server: ServerProcess, tmp_path: Path) -> Iterator[tuple[Publisher, str, dict[str, Any]]]:
    """A live fleet, a completed good release and a bad one the server halted; yields the
    publisher (admin), the halted release and its status."""
    publisher = Publisher(server)
    publisher.content_type(CT)
    enroll = publisher.enroll_token()
    log = (tmp_path / "fleet.log").open("wb")
    fleet = subprocess.Popen(
        [*RINGFENCE, "sim", "live", "--server", server.url, "--enroll-token", enroll, "--devices", str(DEVICES),
         "--duration", "600", "--bad-version", "2", "--bad-platforms", "windows", "--fault", "crash",
         "--trial", "1", "--reboot", "0.5", "--ramp", "1", "--seed", "2024"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        until(lambda: publisher.http.get("/v1/server").json()["devices"] == DEVICES, "every device enrolled")
        good = publisher.release(CT, "1", b"good content", TWO_WAVES)
        publisher.wait_status(good, lambda s: s["phase"] == "completed", 60, "the good release completed")
        bad = publisher.release(CT, "2", b"bad content", CANARY)
        status = publisher.wait_status(bad, lambda s: s["phase"] == "halted", 60, "the bad release halted")
        yield publisher, bad, status
    finally:
        fleet.kill()
        fleet.wait(10)
        log.close()


def _token(publisher: Publisher, role: str, name: str) -> str:
    token: str = publisher._ok(publisher.http.post("/v1/tokens", json={"role": role, "name": name}))["token"]
    return token


def _sign_in(browser: Any, url: str, token: str, path: str) -> Any:
    """A fresh browser context (its own session storage), sent to ``path``, which sends it to
    the sign-in page, where the token is pasted; back on ``path``, signed in."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(url + path)
    page.wait_for_url("**/ui/login?next=*")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(url + path)
    return page


def test_an_operator_sees_why_a_rollout_halted_and_rolls_it_back_and_a_viewer_cannot(
        browser: Any, server: ServerProcess, halted: tuple[Publisher, str, dict[str, Any]], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    publisher, release, status = halted
    halt = status["history"][-1]
    assert (halt["to"], halt["actor"]) == ("halted", "reconciler")
    assert "windows/" in halt["reason"]  # the reason names the stratum and the numbers

    # Given a viewer on the halted rollout's page
    viewer = _sign_in(browser, server.url, _token(publisher, "viewer", "vic"), f"/ui/rollouts/{release}")
    expect(viewer.locator("#halt-reason")).to_have_text(halt["reason"], timeout=WAIT_MS)
    # Then the rollback button is disabled and says why
    rollback = viewer.locator("[data-action=rollback]")
    expect(rollback).to_be_disabled()
    expect(rollback).to_have_attribute("title", "role viewer may not roll back; needs operator, releaser, admin")
    # And when the button is forced, the server refuses and the page shows its words
    rollback.evaluate("button => { button.disabled = false; button.click(); }")
    viewer.fill("#action-reason", "a viewer tries")
    viewer.click("#action-confirm")
    expect(viewer.locator("#action-error")).to_contain_text("403: role 'viewer' may not do this")
    assert publisher.status(release)["phase"] == "halted"

    # Given an operator who signs in with a pasted token
    page = _sign_in(browser, server.url, _token(publisher, "operator", "olga"), "/")
    expect(page.locator("#who")).to_have_text("olga · operator")
    # Then the rollouts list shows the halted rollout with why, and the completed one
    row = page.locator(f"tr[data-release='{release}']")
    expect(row.locator("[data-phase]")).to_have_text("halted", timeout=WAIT_MS)
    expect(row).to_contain_text(halt["reason"])
    expect(page.locator("tr[data-release] [data-phase=completed]")).to_have_count(1)
    expect(page.locator("#fleet")).to_contain_text(f"{DEVICES} devices enrolled")

    # When they open it, they read the halt reason as the history has it, and the stratum charts
    page.click(f"a[href='/ui/rollouts/{release}']")
    page.wait_for_url(f"**/ui/rollouts/{release}")
    expect(page.locator("#halt-reason")).to_have_text(halt["reason"])
    expect(page.locator("#history tr[data-intent=halt]")).to_contain_text(halt["reason"])
    windows = page.locator("svg.chart[data-stratum^='windows/']")
    expect(windows.first).to_be_visible()
    assert "exposed failed" in (windows.first.get_attribute("aria-label") or "")
    expect(page.locator("svg.chart path.exposed").first).to_have_attribute("d", DRAWN)
    expect(page.locator("#phase")).to_have_text("halted")
    _screenshot(page, tmp_path)

    # When they roll it back, giving a reason, in the same page
    page.evaluate("window.sameDocument = true")
    page.click("[data-action=rollback]")
    page.fill("#action-reason", "crashes on windows")
    page.click("#action-confirm")
    # Then the phase changes to rolling back and, once every device is back, rolled back: no reload
    expect(page.locator("#phase")).to_have_text(re.compile(r"^(rolling back|rolled back)$"))
    publisher.wait_status(release, lambda s: s["phase"] == "rolled_back", 60, "rolled back")
    expect(page.locator("#phase")).to_have_text("rolled back", timeout=WAIT_MS)
    expect(page.locator("#history tr[data-intent=rollback]")).to_contain_text("crashes on windows")
    assert page.evaluate("window.sameDocument") is True
    rollback_entry = next(h for h in publisher.status(release)["history"] if h["intent"] == "rollback")
    assert (rollback_entry["actor"], rollback_entry["reason"]) == ("olga", "crashes on windows")

    # And the audit log, newest first, has the rollback with its reason, and its chain verifies
    audit = _sign_in(browser, server.url, server.token, "/ui/audit")
    expect(audit.locator("#verify-result")).to_contain_text("Chain verified")
    expect(audit.locator("#audit tr[data-seq]").filter(has_text="rollout.rollback")).to_contain_text(
        "crashes on windows")
    seqs = [int(s) for s in audit.locator("#audit tr[data-seq]").evaluate_all("rows => rows.map(r => r.dataset.seq)")]
    assert seqs == sorted(seqs, reverse=True)


def _screenshot(page: Any, tmp_path: Path) -> None:
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    wanted = os.environ.get("RINGFENCE_SCREENSHOT")
    if wanted:
        Path(wanted).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, wanted)


def test_a_rollout_page_says_what_its_wave_waits_for(browser: Any, server: ServerProcess) -> None:
    from playwright.sync_api import expect

    # Given a rollout started with no device to prove anything on
    publisher = Publisher(server)
    publisher.content_type(CT)
    release = publisher.release(CT, "1", b"content nobody runs", TWO_WAVES)
    waiting = publisher.wait_status(release, lambda s: bool(s["waiting"]), 60, "the wave waiting")["waiting"]
    # When an operator opens its page, it says, in the server's words, what the wave waits for
    page = _sign_in(browser, server.url, _token(publisher, "operator", "olga"), f"/ui/rollouts/{release}")
    box = page.locator("#waiting")
    expect(box).to_be_visible(timeout=WAIT_MS)
    expect(box).to_contain_text("is waiting for")
    expect(box.locator("li").first).to_have_text(waiting[0])
    expect(page.locator("#phase")).to_have_text("rolling")
