"""Content policy through the official `openai` SDK: a blocked prompt is a BadRequestError of
type `content_policy_violation`, reversible redaction round-trips on a stream, and a block
mid-stream surfaces as an SDK APIError."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from conftest import Gateway, MockURL, Process, gateway_config


@pytest.fixture
def policy_gateway(tmp_path: Path, sluice_bin: str, mock: MockURL):
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    db_path = workdir / "sluice.db"
    cfg = gateway_config(mock, db_path)
    cfg["providers"].append(
        {
            "name": "chunky",
            "kind": "openai_compatible",
            "base_url": f"{mock}/v1",
            "headers": {"x-mock-chunks": "50"},
        }
    )
    cfg["models"] += [
        {"name": "guarded", "deployments": [{"provider": "chunky", "model": "g"}]},
        {"name": "guarded-out", "deployments": [{"provider": "chunky", "model": "g"}]},
    ]
    cfg["policies"] = [
        {"name": "no-cards", "detect": ["payment_card"], "action": "block", "scope": {"model": "guarded"}},
        {"name": "mask-email", "stage": "both", "detect": ["email"], "action": "redact_reversible",
         "scope": {"model": "guarded"}},
        {"name": "no-email-out", "stage": "output", "detect": ["email"], "action": "block",
         "scope": {"model": "guarded-out"}},
    ]
    config_path = workdir / "sluice.yaml"
    config_path.write_text(json.dumps(cfg, indent=2))
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


@pytest.fixture
def client(policy_gateway) -> OpenAI:
    return OpenAI(base_url=policy_gateway.url + "/v1", api_key="k", max_retries=0, timeout=15)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_blocked_prompt_is_a_bad_request(client, mock):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="guarded", messages=user("card 4111 1111 1111 1111"))
    err = info.value
    assert err.status_code == 400
    assert err.type == "content_policy_violation"
    assert "no-cards" in err.message
    assert "4111" not in err.response.text
    assert mock.request_count() == 0


def test_reversible_redaction_round_trip_on_a_stream(client, mock):
    text = "email erin@example.com about the invoice"
    stream = client.chat.completions.create(model="guarded", messages=user(text), stream=True)
    got = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert got == f"Mock reply to: {text}"
    sent = mock.last_request()["body"]["messages"][0]["content"]
    assert sent == "email [EMAIL_1] about the invoice"


def test_block_mid_stream_raises_in_the_sdk(client):
    stream = client.chat.completions.create(
        model="guarded-out", messages=user("reach frank@example.org soon"), stream=True
    )
    seen = ""
    with pytest.raises(openai.APIError) as info:
        for c in stream:
            if c.choices:
                seen += c.choices[0].delta.content or ""
    assert "no-email-out" in str(info.value)
    assert "frank" not in seen
