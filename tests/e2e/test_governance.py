"""Virtual keys, limits and budgets as the official `openai` Python SDK sees them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from conftest import Gateway, Process

MASTER = "sk-master-e2e"


@pytest.fixture
def governed(tmp_path: Path, sluice_bin: str):
    """`sluice serve` with a master key and the zero-config mock models."""
    workdir = tmp_path / "governed"
    workdir.mkdir()
    db_path = workdir / "sluice.db"
    config_path = workdir / "sluice.yaml"
    config = {"server": {"master_key": MASTER}, "store": {"url": f"sqlite://{db_path}"}}
    config_path.write_text(json.dumps(config))
    process = Process(
        "sluice",
        [sluice_bin, "serve", "--config", str(config_path), "--listen", "127.0.0.1:0"],
        workdir,
        workdir,
    )
    try:
        yield Gateway(process, db_path, config_path)
    finally:
        process.stop()


def admin(gw: Gateway, method: str, path: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(
        method, gw.url + path, json=body, headers={"authorization": f"Bearer {MASTER}"}, timeout=10
    )


def new_key(gw: Gateway, **fields) -> tuple[str, str]:
    r = admin(gw, "POST", "/admin/keys", fields)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def client(gw: Gateway, key: str) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=15)


HELLO = [{"role": "user", "content": "hello"}]


def test_rate_limit_is_a_rate_limit_error_with_openai_headers(governed):
    _, key = new_key(governed, rpm=2)
    c = client(governed, key)
    raw = c.chat.completions.with_raw_response.create(model="mock-1", messages=HELLO)
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw.parse().choices[0].message.content
    c.chat.completions.create(model="mock-1", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="mock-1", messages=HELLO)
    assert e.value.status_code == 429
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert e.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert "2 requests per minute" in e.value.message


def test_budget_exhaustion_is_insufficient_quota(governed):
    _, key = new_key(governed, budget_usd="0.00005", budget_period="daily")
    c = client(governed, key)
    with pytest.raises(openai.RateLimitError) as e:
        for _ in range(50):
            c.chat.completions.create(model="mock-1", messages=HELLO, max_tokens=5)
    assert e.value.code == "insufficient_quota"
    assert e.value.type == "insufficient_quota"
    assert "daily budget" in e.value.message and "resets at" in e.value.message
    # Refused once the next request's worst case no longer fits: the message says what is
    # left and what the request could cost, and what is left is less than that.
    assert "left" in e.value.message and "could cost up to $" in e.value.message
    could_cost = float(e.value.message.split("could cost up to $")[1].split(":")[0])
    info = httpx.get(
        governed.url + "/v1/key/info", headers={"authorization": f"Bearer {key}"}, timeout=10
    ).json()
    assert float(info["budgets"][0]["remaining_usd"]) < could_cost


def test_model_access_and_revocation(governed):
    key_id, key = new_key(governed, models=["mock-1"])
    c = client(governed, key)
    with pytest.raises(openai.PermissionDeniedError) as e:
        c.chat.completions.create(model="mock-2", messages=HELLO)
    assert "mock-2" in e.value.message
    assert admin(governed, "POST", f"/admin/keys/{key_id}/revoke").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="mock-1", messages=HELLO)
