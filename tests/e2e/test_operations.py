"""Operating meterd: key revocation and rotation, metrics, health, request logs, rate limits and
overload, through real servers on both backends."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import stripe

from tests.conftest import RunningServer, fresh_database, start_server, stop_server
from tests.e2e.support import new_meter, total, unique
from tests.spec import assert_matches


def key_id_of(server: RunningServer, secret: str) -> str:
    listing = server.meterd("keys", "list").stdout
    row = next(line for line in listing.splitlines() if secret[-4:] in line)
    return next(word for word in re.split(r"[\s│]+", row) if word.startswith("key_"))


def status_of(server: RunningServer, secret: str) -> int:
    return httpx.get(
        f"{server.base_url}/v1/billing/meters", auth=(secret, ""), timeout=10
    ).status_code


# keys ---------------------------------------------------------------------------------------


def test_a_revoked_key_gets_401(server: RunningServer) -> None:
    secret = server.meterd("keys", "create", "--mode", "test", "--new-account").stdout.split()[-1]
    assert status_of(server, secret) == 200
    key_id = key_id_of(server, secret)
    assert f"Revoked {key_id}" in server.meterd("keys", "revoke", key_id).stdout
    assert status_of(server, secret) == 401, "a revoked key is refused at once"
    answer = httpx.get(f"{server.base_url}/v1/billing/meters", auth=(secret, ""), timeout=10)
    body = answer.json()
    assert_matches(body, "error")
    assert secret not in body["error"]["message"] and secret[-4:] in body["error"]["message"]
    assert "revoked" in server.meterd("keys", "list").stdout


def test_revoking_twice_or_an_unknown_key_fails_cleanly(server: RunningServer) -> None:
    secret = server.meterd("keys", "create", "--mode", "test", "--new-account").stdout.split()[-1]
    key_id = key_id_of(server, secret)
    server.meterd("keys", "revoke", key_id)
    for target in (key_id, "key_doesnotexist"):
        with pytest.raises(Exception) as failed:
            server.meterd("keys", "revoke", target)
        assert "No active key" in str(getattr(failed.value, "stderr", ""))


def test_rotation_gives_a_new_key_of_the_same_account_and_mode(server: RunningServer) -> None:
    old = server.meterd("keys", "create", "--mode", "test", "--new-account").stdout.split()[-1]
    meter = new_meter(server.client(old))
    rotated = server.meterd("keys", "rotate", key_id_of(server, old)).stdout.split()[-1]
    assert rotated.startswith("sk_test_") and rotated != old
    assert server.client(rotated).v1.billing.meters.retrieve(meter.id).id == meter.id
    assert status_of(server, old) == 401


# metrics, health and request logs -------------------------------------------------------------


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when the series does not exist yet)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def test_metrics_count_requests_events_and_commits(
    server: RunningServer, shared: stripe.StripeClient
) -> None:
    before = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    meter = new_meter(shared)
    for value in ("1", "2", "bad"):
        shared.v1.billing.meter_events.create(
            {"event_name": meter.event_name, "payload": {"stripe_customer_id": "c", "value": value}}
        )
    with pytest.raises(stripe.InvalidRequestError):
        shared.v1.billing.meters.retrieve("mtr_missing")
    after = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    was = before.text
    route = "/v1/billing/meter_events"
    for name, labels, grew in (
        ("meterd_http_requests_total", {"route": route, "method": "POST", "status": "200"}, 3),
        (
            "meterd_http_requests_total",
            {"route": "/v1/billing/meters/{id}", "method": "GET", "status": "404"},
            1,
        ),
        ("meterd_events_total", {"outcome": "counted"}, 2),
        ("meterd_events_total", {"outcome": "uncounted"}, 1),
        ("meterd_error_report_events_total", {"code": "meter_event_invalid_value"}, 1),
    ):
        assert metric(after, name, **labels) - metric(was, name, **labels) >= grew, name
    assert metric(after, "meterd_ingest_commits_total", result="ok") >= 3
    assert metric(after, "meterd_ingest_commit_events_count") >= 3
    assert metric(after, "meterd_http_request_duration_seconds_count", route=route) >= 3
    assert "meterd_ingest_queue_depth " in after
    assert "mtr_missing" not in after  # routes are templates: no ids in labels


def test_health(server: RunningServer) -> None:
    answer = httpx.get(f"{server.base_url}/healthz", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "database": "ok"}


@pytest.fixture(scope="module")
def limited(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with tight rate limits."""
    with fresh_database(backend, tmp_path_factory.mktemp("meterd-limited")) as url:
        running = start_server(
            url, "--rate-limit", "reads=3/3,writes=4/4", "--rate-limit", "events=5/5"
        )
        yield running
        stop_server(running)


@pytest.fixture(scope="module")
def small_queue(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose ingest queue holds 300 events."""
    with fresh_database(backend, tmp_path_factory.mktemp("meterd-queue")) as url:
        running = start_server(url, "--max-queued-events", "300")
        yield running
        stop_server(running)


def test_request_logs_are_one_json_line_per_request(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with fresh_database(backend, tmp_path_factory.mktemp("meterd-logs")) as url:
        logging = start_server(url, "--log-requests")
        try:
            client = logging.client()
            meter = new_meter(client)
            answer = httpx.get(
                f"{logging.base_url}/v1/billing/meters/{meter.id}",
                auth=(logging.secret_key, ""),
                timeout=10,
            )
            missing = httpx.get(f"{logging.base_url}/v1/nothing", timeout=10)
        finally:
            stop_server(logging)
    assert logging.process.stdout is not None
    lines = [line for line in logging.process.stdout.read().splitlines() if line.startswith("{")]
    logged = {entry["request_id"]: entry for entry in map(json.loads, lines)}
    mine = logged[answer.headers["request-id"]]
    assert mine["route"] == "/v1/billing/meters/{id}"
    assert (mine["method"], mine["status"]) == ("GET", 200)
    assert mine["account"].startswith("acct_") and mine["livemode"] is False
    assert mine["duration_ms"] >= 0
    assert set(mine) == {
        "request_id", "account", "livemode", "method", "route", "status", "duration_ms",
    }  # fmt: skip
    unmatched = logged[missing.headers["request-id"]]
    assert (unmatched["route"], unmatched["status"], unmatched["account"]) == (
        "unmatched", 404, None
    )  # fmt: skip
    assert len(logged) >= 3  # the meter's creation too
    assert not any(logging.secret_key in line for line in lines), "a key was logged whole"


def burst(base: str, secret: str, count: int) -> list[httpx.Response]:
    with httpx.Client(auth=(secret, ""), timeout=10) as http:
        return [http.get(f"{base}/v1/billing/meters") for _ in range(count)]


def test_rate_limits_per_account_and_mode_in_both_envelopes(limited: RunningServer) -> None:
    first = limited.meterd("keys", "create", "--mode", "test", "--new-account").stdout.split()[-1]
    other = limited.meterd("keys", "create", "--mode", "test", "--new-account").stdout.split()[-1]
    time.sleep(1.1)
    answers = burst(limited.base_url, first, 6)
    statuses = [a.status_code for a in answers]
    assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
    refused = next(a for a in answers if a.status_code == 429)
    body = refused.json()
    assert_matches(body, "error")
    assert body["error"]["code"] == "rate_limit"
    assert body["error"]["type"] == "invalid_request_error"
    assert int(refused.headers["retry-after"]) >= 1
    assert [a.status_code for a in burst(limited.base_url, other, 3)] == [200, 200, 200]

    # v2 envelope, the events family: 5 a second for this account
    client = limited.client(first)
    meter = new_meter(client)
    v2 = []
    with httpx.Client(timeout=10) as http:
        for n in range(8):
            v2.append(
                http.post(
                    f"{limited.base_url}/v2/billing/meter_events",
                    headers={"Authorization": f"Bearer {first}"},
                    json={
                        "event_name": meter.event_name,
                        "identifier": unique(f"rl{n}"),
                        "payload": {"stripe_customer_id": "c", "value": "1"},
                    },
                )
            )
    accepted = [a for a in v2 if a.status_code == 200]
    limited_v2 = [a for a in v2 if a.status_code == 429]
    assert limited_v2, [a.status_code for a in v2]
    assert limited_v2[0].json()["error"]["type"] == "rate_limit"
    assert limited_v2[0].json()["error"]["code"] == "rate_limit"
    assert limited_v2[0].headers["retry-after"]
    time.sleep(1.1)
    assert total(client, meter.id) == len(accepted), "a refused event must not count"
    time.sleep(1.1)
    assert status_of(limited, first) == 200, "the bucket refills"


def rss_kib(pid: int) -> int:
    found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert found
    return int(found.group(1))


def test_overload_answers_429_keeps_memory_bounded_and_loses_nothing(
    small_queue: RunningServer,
) -> None:
    """More events than the queue holds (300) arrive at once: some requests get 429 with
    Retry-After, every acknowledged event is counted exactly, and the server recovers."""
    secret = small_queue.meterd("keys", "create", "--mode", "test", "--new-account").stdout.split()[
        -1
    ]
    client = small_queue.client(secret)
    meter = new_meter(client)
    token = client.v2.billing.meter_event_session.create().authentication_token
    rss_before = rss_kib(small_queue.process.pid)
    acknowledged: list[int] = []
    refused: list[httpx.Response] = []
    lock = threading.Lock()

    def pound(worker: int) -> None:
        with httpx.Client(timeout=30) as http:
            for round_ in range(6):
                events = [
                    {
                        "event_name": meter.event_name,
                        "identifier": f"ov-{worker}-{round_}-{i}",
                        "payload": {"stripe_customer_id": "c", "value": "1"},
                    }
                    for i in range(100)
                ]
                answer = http.post(
                    f"{small_queue.base_url}/v2/billing/meter_event_stream",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"events": events},
                )
                with lock:
                    if answer.status_code == 200:
                        acknowledged.append(len(events))
                    else:
                        refused.append(answer)

    threads = [threading.Thread(target=pound, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert refused, "16 clients x 100 events against a queue of 300: some must be refused"
    for answer in refused:
        assert answer.status_code == 429, answer.text
        assert answer.json()["error"]["type"] == "rate_limit"
        assert int(answer.headers["retry-after"]) >= 1
    assert rss_kib(small_queue.process.pid) - rss_before < 100 * 1024, "memory grew past 100 MiB"
    assert total(client, meter.id) == sum(acknowledged)
    time.sleep(1.1)
    again = httpx.post(
        f"{small_queue.base_url}/v2/billing/meter_event_stream",
        headers={"Authorization": f"Bearer {token}"},
        json={"events": [{"event_name": meter.event_name, "payload": {"stripe_customer_id": "c"}}]},
        timeout=10,
    )
    assert again.status_code == 200, "the server recovers once the burst is over"
    print(f"overload: {sum(acknowledged)} events acknowledged, {len(refused)} requests refused")
