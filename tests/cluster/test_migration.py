"""`redis-cli --cluster reshard` moves the slots of roots under load: no charge is lost or counted twice.

The reshard moves one key per MIGRATE (--cluster-pipeline 1), so a root's keys sit on both nodes for a while;
the fence keeps every script off the root until its slot has moved (those calls wait, then are 503), and the
charges made before and after all count.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from typing import Any

from redis.crc import key_slot

from app.store.scripts import base_key
from app.token.keys import KeyRing, new_key_entry
from app.token.mint import mint
from tests.cluster.conftest import Load, spent
from tests.processes import Cluster, wait_until

MOVED_SLOTS = 300
ROOTS_MOVED, ROOTS_STAYING = 8, 4
FILLER = 1000
CAVEATS = ["delegate = orchestrator", "budget <= 1000000 USD", "rate <= 100000/1h", "delegate = worker"]


def tryagain_count(cluster: Cluster, port: int) -> int:
    with cluster.client(port) as c:
        stat = c.info("errorstats").get("errorstat_TRYAGAIN", {"count": 0})
    return int(stat["count"])


def test_resharding_the_slots_of_roots_under_load_loses_no_charge(cluster: Cluster, service_factory: Any) -> None:
    cluster.wait_healthy()
    ring = KeyRing(new_key_entry())
    service = service_factory(cluster.url, workers=1, ring=ring)
    source, target = cluster.masters()[:2]
    with cluster.client(source) as c:
        source_id = c.execute_command("CLUSTER", "MYID")
        ranges = [(s, e) for s, e, master, *_ in c.execute_command("CLUSTER", "SLOTS") if int(master[1]) == source]
    with cluster.client(target) as c:
        target_id = c.execute_command("CLUSTER", "MYID")
    moving = sorted(slot for start, end in ranges for slot in range(start, end + 1))[:MOVED_SLOTS]  # what it takes
    moved: list[tuple[str, str]] = []
    staying: list[tuple[str, str]] = []
    while len(moved) < ROOTS_MOVED or len(staying) < ROOTS_STAYING:
        token, token_id = mint(ring, "http://agentcaps.test", CAVEATS)
        group = moved if key_slot(base_key(token_id).encode()) in moving else staying
        if len(group) < (ROOTS_MOVED if group is moved else ROOTS_STAYING):
            group.append((token, token_id))
    tokens = [token for token, _ in moved + staying]
    # Pad each moving root with idempotency answers nobody will ask for: its slot then takes FILLER MIGRATE
    # steps to move, long enough for the load to meet the root half-moved many times.
    with cluster.client(source) as c:
        pipe = c.pipeline(transaction=False)
        for _, token_id in moved:
            for n in range(FILLER):
                pipe.set(f"{base_key(token_id)}:i:filler{n}", "x", px=600_000)
        pipe.execute()
    refused_before = tryagain_count(cluster, target)
    with Load([service.url], tokens, 12) as load:  # through the SDK: a 503 is resent with its request_id
        wait_until(lambda: load.allowed() >= 400, what="load before the reshard")
        reshard = ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{source}", "--cluster-yes"]
        reshard += ["--cluster-from", source_id, "--cluster-to", target_id, "--cluster-slots", str(MOVED_SLOTS)]
        subprocess.run(
            [*reshard, "--cluster-pipeline", "1"],
            check=True,
            capture_output=True,
            timeout=300,
        )
        after = load.allowed()
        wait_until(lambda: load.allowed() >= after + 200, what="load after the reshard")
    load.resend_given_up(service.url)
    answers = list(load.answers)
    statuses = Counter((a.status, a.code) for a in answers)
    assert set(statuses) <= {(200, None), (503, "store_unavailable")}, statuses
    for i, token in enumerate(tokens):
        # Every acknowledged charge is there, and nothing else (a 503's script never ran, or its resend replayed it).
        assert spent(service.url, token) == [f"{load.acknowledged[i]}.00"], (i, load.acknowledged[i])
    assert all(cluster.node_of_slot(s) == target for s in moving)
    # The load did meet half-moved roots: the target refused scripts there (then the store tried again).
    refused = tryagain_count(cluster, target) - refused_before
    assert refused > 0
    print(
        f"\nreshard of {MOVED_SLOTS} slots under load: {statuses[(200, None)]} allowed, "
        f"{refused} scripts refused (TRYAGAIN) on half-moved roots and tried again, "
        f"{statuses[(503, 'store_unavailable')]} answered 503, no charge lost"
    )
