"""local:// as served: one process per data dir, and it survives `kill -9`. A real `serve` under concurrent verify
load is killed with SIGKILL and started again on the same data dir: every answered charge is still there (with
AGENTCAPS_FSYNC=always), or every one answered more than a second before the kill (everysec); the revocation and
the hold from before the load too."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.sdk import Token
from app.token.keys import KeyRing, new_key_entry
from tests.processes import ADMIN_KEY, Service, free_port, start_service

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ONE_USD = {"amount": "1", "currency": "USD"}
WINDOW = 1.0  # seconds of answers that everysec may lose


def post(service: Service, path: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(service.url + path, json=body, timeout=10, **kw)


def load(url: str, token: str, stop: threading.Event, acked: list[tuple[str, float]], concurrency: int = 16) -> None:
    """Charge 1 USD per call, each call with its own request id, until stopped or the service dies; record
    each allowed answer with the moment it arrived."""

    async def worker(client: httpx.AsyncClient, n: int) -> None:
        i = 0
        while not stop.is_set():
            request_id = f"w{n}-{i}"
            i += 1
            body = {"token": token, "tool": "search", "cost": ONE_USD, "request_id": request_id}
            try:
                r = await client.post(url + "/v1/verify", json=body)
            except httpx.HTTPError:
                return  # killed
            if r.status_code == 200:
                acked.append((request_id, time.monotonic()))

    async def run() -> None:
        async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=concurrency)) as client:
            await asyncio.gather(*(worker(client, n) for n in range(concurrency)))

    asyncio.run(run())


def replayed(url: str, token: str, request_ids: list[str]) -> set[str]:
    """The request ids whose first answer the service remembers (a retry comes back `replayed`)."""

    async def run() -> set[str]:
        found: set[str] = set()
        sem = asyncio.Semaphore(16)
        async with httpx.AsyncClient(timeout=10) as client:

            async def one(request_id: str) -> None:
                async with sem:
                    body = {"token": token, "tool": "search", "cost": ONE_USD, "request_id": request_id}
                    r = await client.post(url + "/v1/verify", json=body)
                    assert r.status_code == 200, r.text
                    if r.json().get("replayed"):
                        found.add(request_id)

            await asyncio.gather(*(one(request_id) for request_id in request_ids))
        return found

    return asyncio.run(run())


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_kill_9_under_load_keeps_every_answered_decision_outside_the_fsync_window(tmp_path: Path, fsync: str) -> None:
    ring = KeyRing(new_key_entry())
    env = {"AGENTCAPS_DATA_DIR": str(tmp_path / "data"), "AGENTCAPS_FSYNC": fsync}
    service = start_service("local://", tmp_path, ring=ring, env=env)
    try:
        minted = post(
            service, "/v1/tokens", {"subject": "o", "budget": {"amount": "1000000", "currency": "USD"}}, headers=ADMIN
        ).json()
        token = minted["token"]
        child = str(Token.parse(token).attenuate(to="researcher", tools=["search"]))
        assert post(service, "/v1/revoke", {"token": child}).status_code == 200
        hold = post(
            service, "/v1/verify", {"token": token, "tool": "search", "cost": ONE_USD, "mode": "hold", "hold_ttl": 3600}
        ).json()["hold_id"]

        acked: list[tuple[str, float]] = []
        stop = threading.Event()
        loader = threading.Thread(target=load, args=(service.url, token, stop, acked))
        loader.start()
        deadline = time.monotonic() + 30
        while len(acked) < 500 and time.monotonic() < deadline:  # under load, then some
            time.sleep(0.05)
        time.sleep(0.5)
        killed_at = time.monotonic()
        service.process.kill()  # SIGKILL: no shutdown, no final snapshot
        service.process.wait(10)
        stop.set()
        loader.join(30)
    finally:
        if service.process.poll() is None:
            service.process.kill()
    assert len(acked) >= 500, "the load did not get going"

    service = start_service("local://", tmp_path, ring=ring, env=env)
    try:
        inspected = post(service, "/v1/inspect", {"token": token}).json()
        spent = int(float(inspected["budgets"][0]["spent"]))
        held = inspected["budgets"][0]["held"]
        old = [request_id for request_id, at in acked if at < killed_at - WINDOW]
        must_keep = [request_id for request_id, _ in acked] if fsync == "always" else old
        assert must_keep and len(old) < len(acked)
        kept = replayed(service.url, token, [request_id for request_id, _ in acked])
        lost = len(acked) - len(kept)
        print(f"fsync {fsync}: {len(acked)} charges answered, {lost} lost by kill -9, spent {spent}")
        assert set(must_keep) <= kept, f"{len(set(must_keep) - kept)} answered charges lost"
        assert spent >= len(kept)  # every remembered answer's charge is in the budget, and charged once
        # From before the load: the revocation and the open hold.
        denied = post(service, "/v1/verify", {"token": child, "tool": "search"}).json()
        assert denied["code"] == "revoked", denied
        assert held == "1.00"
        settled = post(service, f"/v1/holds/{hold}/settle", {})
        assert settled.status_code == 200 and settled.json()["state"] == "settled", settled.text
    finally:
        service.process.terminate()
        service.process.wait(10)


def serve(data_dir: Path, *args: str, store: str = "local://") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AGENTCAPS_STORE": store,
        "AGENTCAPS_DATA_DIR": str(data_dir),
        "AGENTCAPS_ADMIN_KEYS": ADMIN_KEY,
    }
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port()), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


def test_a_second_serve_on_the_same_data_dir_is_refused_and_the_first_serves_on(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_service("local://", tmp_path, env={"AGENTCAPS_DATA_DIR": str(data_dir)})
    try:
        second = serve(data_dir)
        assert second.returncode == 2, second.stderr
        assert f"is in use by another agentcaps process (pid {first.process.pid})" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr  # one line, no traceback
        assert httpx.get(first.url + "/readyz", timeout=5).status_code == 200
    finally:
        first.process.terminate()
        first.process.wait(10)


@pytest.mark.parametrize("store", ["local://", "memory://"])
def test_serve_refuses_more_than_one_worker_on_an_embedded_store(tmp_path: Path, store: str) -> None:
    done = serve(tmp_path, "--workers", "2", store=store)
    assert done.returncode == 2
    assert done.stderr.startswith(f"agentcaps serve: --workers > 1 needs a shared counter store: {store}"), done.stderr


def test_the_banner_says_which_store_and_what_survives_a_restart(tmp_path: Path) -> None:
    from app.api.server import banner
    from app.config import Settings

    local = banner(Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path)}), 1)
    assert f"store local:// in {tmp_path}, fsync everysec: counters, holds, revocations and answers survive" in local
    memory = banner(Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path), "AGENTCAPS_STORE": "memory://"}), 1)
    assert "memory://: every counter is forgotten on exit" in memory
