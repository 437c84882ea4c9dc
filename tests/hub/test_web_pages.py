"""The hub's web pages as a person meets them: headless Chromium (Debian's, driven by its own
chromedriver through Selenium) against a real hub and real nodes on 127.0.0.1 over TLS.

Each test leaves screenshots at desktop and phone width in build/screenshots/ (not in git),
checks that nothing wider than the window appears at 360 px, and that the page asked for
nothing but the hub."""

from __future__ import annotations

import hashlib
import json
import shutil
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from harness import Hub, Node, cli
from harness.processes import stop_all
from hub.config import HubConfig
from hub.ledger.keys import load_public_key, load_signing_key
from hub.ledger.ledger import Ledger
from hub.storage.engine import make_engine

pytestmark = pytest.mark.slow  # real hub, node and browser processes

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"
DESKTOP, PHONE = (1280, 900), (360, 780)
VENDOR = ROOT / "hub" / "api" / "static" / "vendor" / "uplot"
# A node's own words reach the pages (a rejected update's reason is what its ClientApp said):
# markup in them must show as text, and no element may come of it.
HOSTILE = "update norm far above the cohort's <img src=x onerror=alert(1)><b>bold</b>" + "!" * 500


def _executable(*names: str) -> str:
    for name in names:
        if path := shutil.which(name):
            return path
    pytest.fail(f"none of {names} is installed; `make test` installs Debian's chromium and "
                "chromium-driver (apt-get install chromium chromium-driver)")  # fmt: skip


@pytest.fixture(scope="module")
def network(trained, tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("web")
    hub = Hub(root / "hub")
    nodes = {d: Node(root / f"node-{d}", trained[d].folder, hub, hub.token(d))
             for d in ("medicine", "law")}  # fmt: skip
    hub.wait_connected([n.node_id for n in nodes.values()])
    yield hub, nodes, root
    stop_all(list(nodes.values()))  # they drain side by side, then the hub stops
    hub.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = _executable("chromium", "chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--ignore-certificate-errors", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(_executable("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _open(driver: WebDriver, hub: Hub, page: str, key: str) -> None:
    """A fresh tab state: the page, the key typed once and accepted."""
    driver.set_window_size(*DESKTOP)
    driver.get(f"https://127.0.0.1:{hub.http_port}/ui/#{page}")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    driver.get_log("performance")  # what came before this page is not its business
    driver.find_element(By.ID, "key-input").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    _wait(driver, lambda d: d.find_element(By.ID, "whoami").text, "the key was not accepted")


def _wait(driver: WebDriver, until, what: str, timeout: float = 30) -> object:  # type: ignore[no-untyped-def]
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(until, what)


def _click(driver: WebDriver, css: str) -> None:
    """Click the first match of `css`, found and clicked in one step: a row found first may be
    replaced by the page's next poll before the click reaches it (a stale element)."""
    driver.execute_script("document.querySelector(arguments[0]).click()", css)


def _text(driver: WebDriver, css: str) -> str:
    """The text shown by the first match of `css` ("" if none), read in one step: the pages
    replace their rows at every poll."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : ''", css
    )


def _requests(driver: WebDriver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _check_page(driver: WebDriver, hub: Hub, name: str) -> None:
    """Screenshots at both widths, no sideways scrolling at 360 px, no request elsewhere."""
    driver.save_screenshot(str(SHOTS / f"{name}-desktop.png"))
    driver.set_window_size(*PHONE)
    time.sleep(0.5)  # the layout and the charts settle at the new width
    wide = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    driver.save_screenshot(str(SHOTS / f"{name}-phone.png"))
    driver.set_window_size(*DESKTOP)
    assert wide[0] <= wide[1], f"the {name} page is {wide[0]} px wide at {wide[1]} px"
    origin = f"https://127.0.0.1:{hub.http_port}/"
    elsewhere = [u for u in _requests(driver) if not u.startswith((origin, "data:"))]
    assert not elsewhere, f"the {name} page asked for {elsewhere}"


def _api(hub: Hub, path: str, key: str, body: dict | None = None) -> httpx.Response:
    trust = ssl.create_default_context(cafile=str(hub.ca))
    url = f"https://127.0.0.1:{hub.http_port}{path}"
    headers = {"authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(verify=trust, timeout=60) as client:
        if body is None:
            return client.get(url, headers=headers)
        return client.post(url, headers=headers, json=body)


def test_a_prompt_typed_into_the_chat_streams_its_answer_and_route(network, browser, trained):
    hub, nodes, _ = network
    key = hub.new_key("chatter", credits="50")
    _open(browser, hub, "chat", key)
    assert "chatter" in _text(browser, "#whoami") and "50 credits" in _text(browser, "#whoami")
    browser.execute_script("""
        window.pieces = 0;
        new MutationObserver((m) => { window.pieces += m.length; })
            .observe(document.getElementById('answer'), {childList: true});""")
    prompt = browser.find_element(By.ID, "prompt")
    prompt.send_keys(trained["medicine"].held_out[:160])
    for name, value in (("max_tokens", "24"), ("temperature", "0")):
        field = browser.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)
    browser.find_element(By.ID, "send").click()
    _wait(browser, lambda d: "charged" in _text(d, "#stats"), "the answer did not finish", 90)
    assert _text(browser, "#route-domain") == "medicine"
    assert _text(browser, "#route-node") == nodes["medicine"].node_id
    assert _text(browser, "#answer").strip()
    assert browser.execute_script("return window.pieces") >= 2  # it came piece by piece
    stats = _text(browser, "#stats")
    assert "tokens/s" in stats and "signature verified" in stats, stats
    candidates = browser.find_elements(By.CSS_SELECTOR, "#candidates tbody tr")
    assert {c.find_elements(By.TAG_NAME, "td")[0].text for c in candidates} == {"medicine", "law"}
    assert not browser.find_element(By.ID, "chat-error").is_displayed()
    _check_page(browser, hub, "chat")


def test_bad_input_shows_the_apis_own_message_beside_the_form(network, browser) -> None:
    hub, _, _ = network
    key = hub.new_key("typist", credits="50")
    _open(browser, hub, "chat", key)
    cases = {
        "empty prompt": ("", {}),
        "temperature out of range": ("Thou shalt", {"temperature": "9"}),
        "max tokens out of range": ("Thou shalt", {"max_tokens": "0"}),
        "huge prompt": ("x" * 1_100_000, {}),
    }
    for what, (text, settings) in cases.items():
        browser.execute_script("document.getElementById('prompt').value = arguments[0]", text)
        for name, value in {"max_tokens": "8", "temperature": "0.7", **settings}.items():
            browser.execute_script("document.getElementById(arguments[0]).value = arguments[1]",
                                   name, value)  # fmt: skip
        browser.find_element(By.ID, "send").click()
        box = browser.find_element(By.ID, "chat-error")
        _wait(browser, lambda d, box=box: box.is_displayed() and box.text, f"{what}: no message")
        body = {"model": "swarm/auto", "messages": [{"role": "user", "content": text}],
                "stream": True, "max_tokens": int(settings.get("max_tokens", 8)),
                "temperature": float(settings.get("temperature", 0.7)),
                "top_p": 0.95, "stream_options": {"include_usage": True}}  # fmt: skip
        direct = _api(hub, "/v1/chat/completions", key, body)
        assert direct.status_code == 400, (what, direct.text)
        assert box.text == direct.json()["error"]["message"], what
        assert _text(browser, "#answer") == ""
    _check_page(browser, hub, "chat-error")


def test_a_wrong_key_gets_a_clear_message_not_a_blank_page(network, browser) -> None:
    hub, _, _ = network
    browser.get(f"https://127.0.0.1:{hub.http_port}/ui/#nodes")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    browser.find_element(By.ID, "key-input").send_keys("slmk_0123456789ab_not-the-secret")
    browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    box = browser.find_element(By.ID, "key-error")
    _wait(browser, lambda d: box.is_displayed(), "no message for a wrong key")
    assert box.text.startswith("The hub refused this key:"), box.text
    assert browser.find_element(By.ID, "need-key").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0  # not kept
    assert not browser.find_element(By.ID, "page-nodes").is_displayed()
    _check_page(browser, hub, "wrong-key")


def test_the_rewards_page_shows_the_balance_of_the_node_that_answered(network, browser) -> None:
    hub, nodes, _ = network
    law = nodes["law"].node_id
    answer = _api(
        hub,
        "/v1/completions",
        hub.key,
        {"model": "swarm/law", "prompt": "The licensee shall", "max_tokens": 4},
    )
    assert answer.status_code == 200 and answer.json()["swarm"]["node_id"] == law
    _record_rounds(hub, [law, nodes["medicine"].node_id])
    _open(browser, hub, "rewards", hub.key)
    balance = json.loads(cli("slm-hub", "ledger", "balance", law, "--json", "--home",
                             str(hub.home), check=True).stdout)[f"node:{law}"]  # fmt: skip
    cell = f'#balances tr[data-account="node:{law}"] .credits'
    _wait(browser, lambda d: _text(d, cell) == balance.rstrip("0").rstrip("."),
          f"the law node's balance {balance} is not shown")  # fmt: skip
    assert float(balance) > 0
    _wait(browser, lambda d: _text(d, "#chain-ok") == "verified ✓", "no verified ledger")
    assert f"{_chain_length(hub)} entries" in _text(browser, "#chain-detail")
    assert browser.find_elements(By.CSS_SELECTOR, f'#leaderboard tr[data-node="{law}"]')
    _click(browser, f'#balances tr[data-account="node:{law}"]')
    _wait(browser, lambda d: "inference_reward" in _text(d, "#history-entries"), "no history")
    _check_page(browser, hub, "rewards")

    user = hub.new_key("onlooker", credits="1")
    _open(browser, hub, "rewards", user)
    box = browser.find_element(By.ID, "rewards-error")
    _wait(browser, lambda d: box.is_displayed(), "no refusal for a non-admin key")
    assert "admin key" in box.text
    assert not browser.find_element(By.ID, "rewards-body").is_displayed()


def test_the_training_page_shows_rounds_rejections_and_losses(network, browser) -> None:
    hub, nodes, _ = network
    law = nodes["law"].node_id
    _record_rounds(hub, [law, nodes["medicine"].node_id])
    _open(browser, hub, "training", hub.key)
    card = '#training-domains [data-domain="law"]'
    _wait(browser, lambda d: "2 run(s)" in _text(d, card) or "1 run(s)" in _text(d, card),
          "no law runs shown")  # fmt: skip
    shown = _text(browser, card)
    assert "<img src=x onerror=alert(1)><b>bold</b>" in shown and "3.2100" in shown
    assert not browser.find_elements(By.CSS_SELECTOR, f"{card} img, {card} b")
    assert "!" * 300 not in shown  # cut to 300 characters
    assert browser.find_elements(By.CSS_SELECTOR, f"{card} canvas")  # uPlot drew the losses
    _check_page(browser, hub, "training")


def test_the_nodes_page_shows_a_killed_node_offline_within_5_s(network, browser, trained):
    hub, nodes, root = network
    doomed = Node(root / "node-religion", trained["religion"].folder, hub, hub.token("religion"))
    hub.wait_connected([doomed.node_id])
    _open(browser, hub, "nodes", hub.key)
    row = f'#nodes tr[data-node="{doomed.node_id}"] .status'
    _wait(browser, lambda d: _text(d, row) == "connected", "the religion node is not shown")
    for node in nodes.values():
        assert _text(browser, f'#nodes tr[data-node="{node.node_id}"] .status') == "connected"
    _check_page(browser, hub, "nodes")
    doomed.proc.kill()
    killed = time.monotonic()
    _wait(browser, lambda d: _text(d, row) == "offline", "the killed node still shows", 10)
    assert time.monotonic() - killed < 5.0
    doomed.proc.wait()


def test_the_pages_are_the_packaged_files_with_a_strict_policy(network) -> None:
    hub, _, _ = network
    trust = ssl.create_default_context(cafile=str(hub.ca))
    page = httpx.get(f"https://127.0.0.1:{hub.http_port}/ui/", verify=trust)
    assert page.status_code == 200 and "SwarmLLM" in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "http" not in policy  # no other origin is allowed
    assert httpx.get(f"https://127.0.0.1:{hub.http_port}/", verify=trust).status_code == 307
    for path in ("/api/v1/nodes", "/api/v1/rewards", "/api/v1/training"):
        assert _api(hub, path, "").status_code == 401
    user = hub.new_key("reader", credits="1")
    assert _api(hub, "/api/v1/nodes", user).json()["nodes"][0]["reputation"] is None
    assert _api(hub, "/api/v1/rewards", user).status_code == 403
    assert _api(hub, "/api/v1/ledger/verification", user).status_code == 403
    assert _api(hub, "/api/v1/rewards?period=year", hub.key).status_code == 400
    assert _api(hub, "/api/v1/rewards/nodes/" + "0" * 32, hub.key).status_code == 404
    assert _api(hub, "/api/v1/rewards/nodes/..%2f..%2fetc", hub.key).status_code == 404
    digests = {line.split("|")[1].strip(): line.split("|")[2].strip()
               for line in (VENDOR / "README.md").read_text().splitlines()
               if line.startswith("| uPlot")}  # fmt: skip
    for name, digest in digests.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def _chain_length(hub: Hub) -> int:
    import sqlite3

    with sqlite3.connect(hub.home / "hub.db") as db:
        return int(db.execute("SELECT seq FROM ledger_head").fetchone()[0])


def _record_rounds(hub: Hub, members: list[str]) -> None:
    """Two law rounds in the hub's ledger, as `slm-hub train` records them (through the same
    Ledger call), one with a rejected update: a real round is a Flower run of its own, tested
    in test_federated_rounds.py; this page only reads what they record."""
    cfg = HubConfig.load(hub.home)
    engine = make_engine(cfg.db_url)
    ledger = Ledger(engine, load_signing_key(cfg.signing_key_path),
                    load_public_key(cfg.public_key_path), cfg.rewards)  # fmt: skip
    for number, (train, val) in enumerate([(3.21, 3.4), (2.9, 3.1)], start=1):
        ledger.record_round(
            f"7001:{number}", "law", number, [(members[0], 120)],
            metrics={"train_loss": train, "val_loss": val, "run_id": 7001,
                     "strategy": "trimmed-mean"},
            weights_sha256=hashlib.sha256(f"law-{number}".encode()).hexdigest(),
            rejected=[{"node": members[1], "reason": HOSTILE}],
        )  # fmt: skip
    engine.dispose()
