"""The caches' byte estimates (caveats.cache) stay above what their entries really keep alive (tracemalloc),
for the shapes that make parsed caveats largest: long lists of short names, deep paths, wide characters,
control and invalid bytes quoted in a denial's reason, and many tiny caveats."""

from __future__ import annotations

import gc
import secrets
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from app.token import codec, hmac_chain
from app.token.keys import KeyRing, new_key_entry
from app.token.mint import mint
from app.token.verifier import Verifier
from caveats import cache, registry

RING = KeyRing(new_key_entry())


def extend(token: str, caveats: list[bytes]) -> str:
    """What any holder can do: append caveats, no key needed."""
    raw = codec.decode(token)
    signature = raw.signature
    for caveat in caveats:
        signature = hmac_chain.extend(signature, caveat)
    return codec.encode(raw._replace(caveats=raw.caveats + tuple(caveats), signature=signature))


SHAPES: dict[str, Callable[[str], list[bytes]]] = {
    "short names": lambda t: [f"tools in {t}{k}," + ",".join(f"{j:02x}" for j in range(255)) for k in range(11)],
    "deep paths": lambda t: [f"arg.a{k}.b.c.d.e.f.g.h in " + ",".join(f"{t}{j}" for j in range(64)) for k in range(12)],
    "wide characters": lambda t: [f"arg.x in {'😀' + t},{k}" + ",x" * 40 for k in range(40)],
    "control bytes": lambda t: [b"arg.x = " + b"\x01" * 900 + f"{t}{k}".encode() for k in range(11)],
    "invalid utf-8": lambda t: [b"tools in " + b"\xff" * 900 + f"{t}{k}".encode() for k in range(11)],
    "tiny": lambda t: [f"delegate = a{t}{k}" for k in range(126)],
}


@pytest.fixture(autouse=True)
def roomy() -> Iterator[None]:
    cache.configure(1 << 40)  # nothing evicted: every entry counted is an entry alive
    registry.forget()
    yield
    cache.configure(cache.DEFAULT_TOTAL_BYTES)


def as_bytes(caveats: list[bytes] | list[str]) -> list[bytes]:
    return [c if isinstance(c, bytes) else c.encode() for c in caveats]


def traced(work: Callable[[], object]) -> int:
    """The bytes `work` leaves allocated."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = work()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del kept
    return grown


@pytest.mark.parametrize("shape", SHAPES)
def test_the_caveat_memo_accounts_for_more_than_it_keeps(shape: str) -> None:
    raws = [c for _ in range(40) for c in as_bytes(SHAPES[shape](secrets.token_hex(4)))]
    real = traced(lambda: registry.read_all(raws))
    assert real > 0 and registry._memo.nbytes >= real, (registry._memo.nbytes, real)


@pytest.mark.parametrize("shape", SHAPES)
def test_the_chain_cache_accounts_for_more_than_chains_and_caveats_keep(shape: str) -> None:
    root, _ = mint(RING, "http://agentcaps.test", ["delegate = a"])
    tokens = [extend(root, as_bytes(SHAPES[shape](secrets.token_hex(4)))) for _ in range(30)]
    assert all(len(t) <= codec.MAX_TOKEN_CHARS for t in tokens)
    verifier = Verifier(RING)
    real = traced(lambda: [verifier.verify(t) for t in tokens])  # chains and the caveat memo together
    assert len(verifier.cache) == len(tokens) and verifier.cache.nbytes >= real, (verifier.cache.nbytes, real)


def test_a_chain_s_new_caveats_are_accounted_as_each_alone_and_a_full_memo_keeps_only_them() -> None:
    chain = [f"delegate = a{k}".encode() for k in range(5)] + [b"tools in a,b.c", b"delegate = a0", "arg.x in 1,2"]
    registry.read_all(chain)
    assert registry._memo.nbytes == sum(map(cache.caveat_bytes, set(chain)))  # the repeated text counted once
    assert len(registry._memo) == 7
    other = [f"delegate = b{k}".encode() for k in range(3)]
    registry._memo.max_bytes = registry._memo.nbytes + sum(map(cache.caveat_bytes, other)) - 1
    assert [text for text, _ in registry.read_all(other)] == [c.decode() for c in other]
    assert set(registry._memo._values) == set(other)  # emptied, then the new ones kept, as a put would
    assert registry._memo.nbytes == sum(map(cache.caveat_bytes, other))
    registry._memo.max_bytes = sum(map(cache.caveat_bytes, other[:2]))
    registry.forget()
    registry.read_all(other)  # more than the whole memo: none of them kept
    assert len(registry._memo) == 0 and registry._memo.nbytes == 0
