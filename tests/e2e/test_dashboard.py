"""The web dashboard (`/ui`) in headless Chromium (Debian's `chromium`, driven by Playwright).

Log in with the master key, check the overview against the admin API, create a team and a key
in the UI, use the key through the OpenAI SDK, find its requests in the log, send feedback and
see it on the quality page, revoke the key in the UI and watch the SDK get 401; a viewer has
no write controls and its writes fail; a team_admin sees only its team; logout; the keyboard
reaches the login button; a narrow window renders. Screenshots: tests/e2e/artifacts/.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

import httpx
import openai
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from conftest import UPSTREAM_API_KEY, Process

MASTER = "sk-master-dashboard"
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def dash(tmp_path: Path, sluice_bin: str, mock):
    """A gateway with a master key and a priced model on the `mock` server."""
    workdir = tmp_path / "dash"
    workdir.mkdir()
    config = {
        "server": {"listen": "127.0.0.1:0", "master_key": MASTER},
        "store": {"url": f"sqlite://{workdir / 'sluice.db'}"},
        "providers": [
            {"name": "upstream", "kind": "openai_compatible", "base_url": f"{mock}/v1", "api_key": UPSTREAM_API_KEY}
        ],
        "models": [
            {
                "name": "public-model",
                "deployments": [
                    {"provider": "upstream", "model": "upstream-model-v2", "price": {"input": 1, "output": 2}}
                ],
            }
        ],
    }
    path = workdir / "sluice.yaml"
    path.write_text(json.dumps(config))
    process = Process("sluice", [sluice_bin, "serve", "--config", str(path), "--listen", "127.0.0.1:0"], workdir, workdir)
    try:
        yield process.url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    if not executable:
        pytest.fail("chromium is not installed (tests/e2e/run.sh installs it with apt-get)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = ctx.new_page()
    pg.on("dialog", lambda d: d.accept())
    # Anything the page's CSP blocked, or any script error, fails the test at teardown.
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None)
    pg.on("pageerror", lambda e: problems.append(str(e)))
    pg.set_default_timeout(10_000)
    try:
        yield pg
    finally:
        ctx.close()
    assert not problems, problems


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def api(url: str, key: str, method: str, path: str, body=None) -> httpx.Response:
    return httpx.request(method, f"{url}{path}", headers={"authorization": f"Bearer {key}"}, json=body, timeout=10)


def login(page: Page, url: str, key: str) -> None:
    page.goto(f"{url}/ui")
    page.fill("input[type=password]", key)
    page.click("#login-button")
    expect(page.locator("#app")).to_be_visible()


def logout(page: Page) -> None:
    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('sluice.key')") is None


def chat(url: str, key: str, text: str):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="public-model", messages=[{"role": "user", "content": text}], max_tokens=16
    )
    raw.parse()
    return raw.headers["x-request-id"]


def month_start() -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return f"{now.year:04d}-{now.month:02d}-01T00:00:00Z"


def wait_for_requests(url: str, n: int, query: str = "") -> list[dict]:
    for _ in range(100):
        rows = api(url, MASTER, "GET", f"/admin/requests?limit=1000{query}").json()["data"]
        if len(rows) >= n:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} records stored")


def test_admin_runs_the_gateway_from_the_dashboard(dash: str, page: Page):
    for i in range(3):
        chat(dash, MASTER, f"warm-up {i}")
    wait_for_requests(dash, 3)

    # The page and its contract: HTML with one password field; the keyboard reaches login.
    page.goto(f"{dash}/ui")
    assert page.locator("input[type=password]").count() == 1
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "login-button":
            break
    assert page.evaluate("document.activeElement.id") == "login-button"
    page.fill("input[type=password]", "sk-wrong")
    page.click("#login-button")
    expect(page.locator("#login-error")).to_contain_text("not valid")

    login(page, dash, MASTER)
    expect(page.locator("[data-k=requests]")).to_be_visible()
    month = api(dash, MASTER, "GET", f"/admin/usage?since={month_start()}").json()["rows"][0]
    assert int(page.get_attribute("[data-k=requests]", "data-value")) == month["requests"] == 3
    assert int(page.get_attribute("[data-k=spend_month]", "data-value")) == month["cost_micro_usd"] > 0
    assert float(page.get_attribute("[data-k=error_rate]", "data-value")) == month["error_rate"]
    assert float(page.get_attribute("[data-k=p95]", "data-value")) == month["p95_latency_ms"]
    chart = page.locator("#top-models svg")
    expect(chart).to_be_visible()
    expect(chart).to_contain_text("public-model")
    shot(page, "overview")

    # Keys & teams: a team, then a key whose secret is shown once.
    page.click("nav >> text=Keys & teams")
    page.fill("#t-name", "eng")
    page.fill("#t-budget", "5")
    page.select_option("#t-period", "monthly")
    page.click("#create-team")
    expect(page.locator("#teams-table")).to_contain_text("eng")
    page.fill("#k-name", "sdk-key")
    page.select_option("#k-team", "eng")
    page.fill("#k-models", "public-model")
    page.click("#create-key")
    secret = page.locator("#new-secret").inner_text().strip()
    assert secret.startswith("sk-")
    shot(page, "key-created")
    page.click("#secret-done")
    expect(page.locator("#new-secret")).to_have_count(0)
    assert secret not in page.content()
    keys = api(dash, MASTER, "GET", "/admin/keys").json()["data"]
    created = next(k for k in keys if k["name"] == "sdk-key")
    assert created["team"] == "eng" and created["models"] == ["public-model"]
    teams = api(dash, MASTER, "GET", "/admin/teams").json()["data"]
    assert float(next(t for t in teams if t["name"] == "eng")["budget_usd"]) == 5

    # The key works through the OpenAI SDK; its requests are in the log.
    ids = [chat(dash, secret, "hello from the sdk"), chat(dash, secret, "and again")]
    wait_for_requests(dash, 5)
    page.click("nav >> text=Requests")
    page.fill("#r-team", "eng")
    page.click("#req-form button[type=submit]")
    table = page.locator("#requests-table")
    for rid in ids:
        expect(table).to_contain_text(rid)
    expect(page.locator("#requests-table tbody tr")).to_have_count(2)
    page.click(f"a[href='#requests/{ids[0]}']")
    detail = page.locator("#request-detail")
    expect(detail).to_contain_text(f"Request {ids[0]}")
    expect(detail).to_contain_text("upstream / upstream-model-v2")
    shot(page, "request-detail")

    # Feedback from the key that made the request shows on the quality page.
    r = api(dash, secret, "POST", "/v1/feedback", {"request_id": ids[0], "score": 0.75, "label": "good"})
    assert r.status_code == 200, r.text
    page.click("nav >> text=Quality")
    q = page.locator("#quality-table")
    expect(q).to_contain_text("public-model")
    expect(q).to_contain_text("0.750")
    shot(page, "quality")

    # Revoke in the UI: the SDK's next call is a 401.
    page.click("nav >> text=Keys & teams")
    page.click("button[aria-label='Revoke sdk-key']")
    expect(page.locator("#keys-table tr[data-key-name='sdk-key']")).to_contain_text("revoked")
    with pytest.raises(openai.AuthenticationError):
        chat(dash, secret, "after revoke")

    # Insights and the other pages render for an admin.
    for name, sel in [("Insights", "[data-k=records]"), ("Providers", "#providers-table"), ("Usage", "#usage-out svg")]:
        page.click(f"nav >> text={name}")
        expect(page.locator(sel).first).to_be_visible()
    expect(page.locator("#usage-out .legend")).to_contain_text("public-model")
    page.click("nav >> text=Budgets")
    expect(page.locator("meter")).to_have_count(1)
    burn = page.locator("#burn figure")
    expect(burn).to_contain_text("team eng")
    expect(burn.locator("svg polyline")).to_have_count(1)
    shot(page, "budgets")

    logout(page)
    page.reload()
    expect(page.locator("#login-form")).to_be_visible()


def test_roles_shape_what_the_dashboard_shows(dash: str, page: Page):
    for team in ["eng", "ops"]:
        assert api(dash, MASTER, "POST", "/admin/teams", {"name": team}).status_code == 201
    keys = {}
    for name, body in {
        "viewer": {"name": "v", "role": "viewer"},
        "lead": {"name": "lead", "role": "team_admin", "team": "eng"},
        "eng-app": {"name": "eng-app", "team": "eng"},
        "ops-app": {"name": "ops-app", "team": "ops"},
    }.items():
        r = api(dash, MASTER, "POST", "/admin/keys", body)
        assert r.status_code == 201, r.text
        keys[name] = r.json()["key"]
    eng_id = chat(dash, keys["eng-app"], "eng question")
    ops_id = chat(dash, keys["ops-app"], "ops question")
    wait_for_requests(dash, 2)

    # An inference key cannot log in.
    page.goto(f"{dash}/ui")
    page.fill("input[type=password]", keys["eng-app"])
    page.click("#login-button")
    expect(page.locator("#login-error")).to_contain_text("no admin role")

    # A viewer: every page, no write control; a write it forces is refused.
    login(page, dash, keys["viewer"])
    page.click("nav >> text=Keys & teams")
    expect(page.locator("#keys-table")).to_contain_text("ops-app")
    assert page.locator("#key-form").count() == 0
    assert page.locator("#team-form").count() == 0
    assert page.locator("button[data-act]").count() == 0
    status = page.evaluate(
        """async () => (await fetch('/admin/keys', {method: 'POST',
            headers: {authorization: 'Bearer ' + sessionStorage.getItem('sluice.key'),
                      'content-type': 'application/json'},
            body: JSON.stringify({name: 'sneaky'})})).status"""
    )
    assert status == 403
    logout(page)

    # A team_admin sees its team only, and may manage its keys.
    login(page, dash, keys["lead"])
    page.click("nav >> text=Keys & teams")
    table = page.locator("#keys-table")
    expect(table).to_contain_text("eng-app")
    expect(table).not_to_contain_text("ops-app")
    assert page.locator("#key-form").count() == 1
    assert page.locator("#team-form").count() == 0
    page.click("nav >> text=Requests")
    log = page.locator("#requests-table")
    expect(log).to_contain_text(eng_id)
    expect(log).not_to_contain_text(ops_id)
    page.click("nav >> text=Providers")
    expect(page.locator("main")).to_contain_text("organisation-wide role")
    shot(page, "team-admin")

    # A narrow window: the page fits and the navigation wraps.
    page.set_viewport_size({"width": 380, "height": 800})
    page.click("nav >> text=Overview")
    expect(page.locator("[data-k=requests]")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 380
    shot(page, "narrow")
    logout(page)
