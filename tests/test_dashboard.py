"""The operator dashboard end to end: a real learner (gRPC + the dashboard's HTTP server), real
simulated robots (MuJoCo, over loopback) and the page in real headless Chromium driven by
Playwright. Skipped, with the reason, where Chromium or Playwright is missing."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import wait_for
from dashboard.browser import find_chromium, launch
from fleet.v1 import fleet_pb2 as pb
from learner.store import StoreReader
from test_fleet_e2e import RobotThread
from test_float_fleet import publish_with_float

CHROMIUM = find_chromium()
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")

OPERATOR_TOKEN = "alice-token-0123456789abcdef"


def http(url: str, token: str | None = None, method: str = "GET", body: dict | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def fleet(learner_thread, tmp_path):
    tokens = tmp_path / "operators.txt"
    tokens.write_text(f"# dashboard operators\nalice {OPERATOR_TOKEN}\n")
    learner = learner_thread(train=False, operators=0, dashboard_port=0, operator_token_file=tokens)
    publish_with_float(tmp_path / "learner", 0, indices=[0.0])  # tau = 0: FLOAT asks for help at once
    # arm-a never asks for help (it is the one we drive); arm-b asks at its first scored chunk.
    robots = [RobotThread(tmp_path, learner.address, "arm-a", realtime=True, help_gate="off", max_steps=3000,
                          max_episodes=10**6).start(),
              RobotThread(tmp_path, learner.address, "arm-b", realtime=True, help_gate="float", help_wait_s=300,
                          max_episodes=10**6).start()]
    yield learner, f"http://127.0.0.1:{learner.dashboard.port}/", tmp_path / "learner"
    for robot in robots:
        robot.stop()


@pytest.fixture
def browser():
    with playwright_api.sync_playwright() as p:
        instance = launch(p, CHROMIUM)
        yield instance
        instance.close()


def intervention_states(data_dir, robot_id: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(sources, states) of every complete stored episode of `robot_id`."""
    reader = StoreReader(data_dir)
    try:
        rows = reader.db.execute("SELECT * FROM episodes WHERE robot_id=? AND complete=1", (robot_id,)).fetchall()
        return [(e.arrays["source"], e.arrays["state"]) for e in map(reader.load_episode, rows)]
    finally:
        reader.close()


def test_without_the_operator_token_the_page_and_the_api_refuse(fleet, browser):
    learner, url, _ = fleet
    assert http(url)[0] == 401
    assert http(url + "api/state")[0] == 401
    assert http(url + "api/state", token="not-a-known-token-at-all")[0] == 401
    assert http(url + "api/robots/arm-a/take_over", method="POST")[0] == 401
    assert http(url + "?token=wrong-token-0123456789")[0] == 401
    assert not learner.learner.control.assignments  # nothing was taken over
    status, body = http(url + "api/state", token=OPERATOR_TOKEN)
    assert status == 200 and "robots" in json.loads(body)

    page = browser.new_page()
    response = page.goto(url)
    assert response.status == 401
    assert page.locator("#token").is_visible()  # the login form, not the dashboard
    assert page.evaluate("fetch('/api/state').then(r => r.status)") == 401
    page.fill("#token", "wrong-token-0123456789")
    page.click("button[type=submit]")
    page.wait_for_selector("text=not known")
    page.fill("#token", OPERATOR_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#tile-arm-a", timeout=30_000)
    # A cookie-authenticated command without the dashboard's header (what a forged cross-site form sends) is refused.
    assert page.evaluate("fetch('/api/robots/arm-a/pause', {method: 'POST'}).then(r => r.status)") == 403


def test_take_over_jog_hand_back_and_answer_a_float_help_request_from_the_page(fleet, browser):
    learner, url, data_dir = fleet
    control = learner.learner.control
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + "?token=" + OPERATOR_TOKEN)
    assert page.url == url  # the token moved into a cookie
    tile_a, tile_b = page.locator("#tile-arm-a"), page.locator("#tile-arm-b")

    # Live pictures: both tiles show camera frames, and they keep changing.
    for tile in (tile_a, tile_b):
        tile.wait_for(timeout=60_000)
        wait_for(lambda: int(tile.get_attribute("data-preview-seq") or 0) > 0, 60, "a camera picture")
        assert tile.locator("img").evaluate("img => img.naturalWidth") == 96
    first = int(tile_a.get_attribute("data-preview-seq"))
    wait_for(lambda: int(tile_a.get_attribute("data-preview-seq")) > first, 10, "the picture to update")

    # arm-b: FLOAT fires (tau = 0), the robot holds and its help request stands out in the queue.
    wait_for(lambda: tile_b.get_attribute("data-mode") == "help requested", 90, "arm-b's help request")
    assert page.locator("#queue .request[data-robot=arm-b]").is_visible()
    served = control.served
    tile_b.locator("[data-action=continue]").click()
    wait_for(lambda: control.served == served + 1, 10, "the request to be served by the page")
    wait_for(lambda: "took effect" in tile_b.locator(".status").inner_text(), 20, "the robot to apply the answer")
    assert "continue" in tile_b.locator(".status").inner_text()

    # arm-a: take over from its tile, jog +x by holding the on-screen button, then up with a key.
    tile_a.locator("[data-action=take-over]").click()
    wait_for(lambda: tile_a.get_attribute("data-mode") == "intervention", 30, "arm-a under intervention")
    assert tile_a.get_attribute("data-operator") == "alice"
    assert control.assignments.get("alice") == "arm-a"
    jog = tile_a.locator("[data-jog='x+']")
    jog.wait_for()
    box = jog.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    time.sleep(1.5)
    page.mouse.up()
    time.sleep(0.5)
    page.keyboard.down("r")
    time.sleep(1.0)
    page.keyboard.up("r")
    time.sleep(0.5)
    tile_a.locator("[data-action=hand-back]").click()
    wait_for(lambda: tile_a.get_attribute("data-mode") == "autonomous", 30, "arm-a autonomous again")
    assert "alice" not in control.assignments
    time.sleep(1.0)  # some autonomous steps after the hand-back

    # End arm-a's episode (an operator may end any episode) so that it is stored whole.
    episodes_before = len(intervention_states(data_dir, "arm-a"))
    status, _ = http(url + "api/robots/arm-a/answer", token=OPERATOR_TOKEN, method="POST", body={"answer": "end"})
    assert status == 200
    wait_for(lambda: len(intervention_states(data_dir, "arm-a")) > episodes_before, 60, "arm-a's episode stored")
    sources, states = next((s, x) for s, x in intervention_states(data_dir, "arm-a")
                           if np.any(s == pb.ACTION_SOURCE_INTERVENTION))
    human = np.flatnonzero(sources == pb.ACTION_SOURCE_INTERVENTION)
    assert np.all(np.diff(human) == 1), "one contiguous takeover"
    assert sources[human[-1] + 1] == pb.ACTION_SOURCE_AUTONOMOUS, "autonomous again after the hand-back"
    ee = states[human, :3]  # stored end-effector position during the takeover
    moved = ee[-1] - ee[0]
    assert moved[0] > 0.03, f"jogged +x but x moved {moved[0]:+.3f} m"
    assert moved[2] > 0.01, f"jogged up but z moved {moved[2]:+.3f} m"
    assert abs(moved[1]) < 0.02, f"not jogged along y, yet y moved {moved[1]:+.3f} m"

    # Every command is logged with who issued it, with its effect.
    audit = [json.loads(line) for line in (data_dir / "operator_commands.jsonl").read_text().splitlines()]
    assert {("alice", "take over"), ("alice", "hand back"), ("alice", "answer help: continue")} <= \
        {(entry["operator"], entry["action"]) for entry in audit}
    page.screenshot(path=str(data_dir.parent / "dashboard.png"))


def test_learning_view_shows_versions_and_publishes_an_earlier_one_again(fleet, browser):
    learner, url, data_dir = fleet
    publish_with_float(data_dir, 1, indices=[0.0])  # a newer version goes out
    publisher = learner.learner.publisher
    wait_for(lambda: publisher.current and publisher.current.version == 1, 20, "version 1 published")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(url + "?token=" + OPERATOR_TOKEN)
    page.locator("#tile-arm-a").wait_for(timeout=60_000)
    wait_for(lambda: page.locator("#tile-arm-a").get_attribute("data-mode") in ("autonomous", "help requested"), 60,
             "arm-a running a policy")
    # Some finished episodes give the learning view figures to show.
    status, _ = http(url + "api/robots/arm-a/answer", token=OPERATOR_TOKEN, method="POST", body={"answer": "end"})
    assert status == 200
    page.click(".tab[data-view=learning]")
    row = page.locator("#versions tr[data-version='0']")
    row.wait_for(timeout=30_000)
    # The ingest curve is drawn once the ended episode has landed (the view refreshes every 5 s).
    page.locator("#chart-ingest path").first.wait_for(timeout=60_000)
    row.locator("[data-action=publish]").click()
    wait_for(lambda: publisher.current.version == 0 and publisher.current.rollback, 20, "version 0 published again")
    audit = (data_dir / "operator_commands.jsonl").read_text()
    assert "publish version 0 again" in audit and '"alice"' in audit
