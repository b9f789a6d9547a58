"""relist ids (relist.edge.ids): time first, so the store's keys grow at their end;
unique within a process and, by 7 drawn characters, across processes; read back from
relist's Received field in a bounce, old 12-character ids included."""

from __future__ import annotations

import multiprocessing
import re
from datetime import datetime, timezone

from relist.core.bounce.returned import from_fields
from relist.core.model import Context, Envelope
from relist.core.policy import RelayPolicy
from relist.core.steps.trace import received_value
from relist.edge.ids import ALPHABET, LENGTH, IdMaker, new_relist_id

ID = re.compile(f"[{ALPHABET}]{{{LENGTH}}}")


def _value(relist_id: str) -> int:
    n = 0
    for ch in relist_id:
        n = n * len(ALPHABET) + ALPHABET.index(ch)
    return n


def test_an_id_is_the_time_in_milliseconds_then_seven_drawn_characters():
    ms = 1_796_000_000_123    # 2026-12-01
    make = IdMaker(clock=lambda: ms * 1_000_000 + 999_999, draw=lambda n: (12345).to_bytes(n, "big"))
    rid = make()
    assert ID.fullmatch(rid), rid
    assert _value(rid[:9]) == ms
    assert _value(rid[9:]) == 12345
    assert ALPHABET == "".join(sorted(ALPHABET))   # so ids sort as their numbers


def test_ids_sort_by_time_across_milliseconds_and_digit_carries():
    clock = iter([t * 1_000_000 for t in (30, 31, 32, 961, 962, 29_791, 1_796_000_000_000)])
    make = IdMaker(clock=lambda: next(clock))
    ids = [make() for _ in range(7)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 7


def test_a_drawn_part_used_in_the_same_millisecond_is_drawn_again():
    draws = iter([b"\0" * 7 + b"\1", b"\0" * 7 + b"\1", b"\0" * 7 + b"\1", b"\0" * 7 + b"\2"])
    make = IdMaker(clock=lambda: 5_000_000, draw=lambda n: next(draws))
    first, second = make(), make()
    assert first != second
    assert (first[9:], second[9:]) == ("0000001", "0000002")
    # A new millisecond forgets the last one's drawn parts.
    make2 = IdMaker(clock=iter([5_000_000, 6_000_000]).__next__, draw=lambda n: b"\0" * 7 + b"\1")
    assert make2()[9:] == make2()[9:] == "0000001"


def test_many_ids_in_one_process_are_distinct():
    ids = [new_relist_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(ID.fullmatch(i) for i in ids[:1000])


def _ids(n: int) -> list[str]:
    return [new_relist_id() for _ in range(n)]


def test_forked_workers_make_distinct_ids():
    """The workers fork after the maker exists: each draws its own."""
    new_relist_id()     # the parent has state in the current millisecond
    with multiprocessing.get_context("fork").Pool(2) as pool:
        a, b = pool.map(_ids, [50_000, 50_000])
    assert len(set(a) | set(b)) == 100_000


def _ctx(relist_id: str, protocol: str) -> Context:
    env = Envelope("list-bounces@lists.example.org", ("m@example.com",), client_ip="127.0.0.1",
                   client_helo="mailman.example", protocol=protocol)
    return Context(env, RelayPolicy(hostname="relist.example"), datetime.now(timezone.utc), relist_id)


def test_a_bounce_names_the_transaction_by_its_id_in_relists_received_field():
    """The Received fields relist writes (steps/trace.py), egress over ingress, read back
    from a returned header as the bounce path reads them; a 12-character id of a post
    relayed before the change too."""
    egress, ingress = new_relist_id(), "BCDFGHJKLMNP"
    fields = [("Received", received_value(_ctx(egress, "ESMTP"))),
              ("Received", received_value(_ctx(ingress, "LMTP")))]
    returned = from_fields(fields, "message/rfc822")
    assert returned.relist_ids == (egress, ingress)
    assert returned.relist_id == egress
    # Neither a prefix of an id nor a longer run of id characters is an id.
    for wrong in (egress[:14], egress + "B", "BCDFGHJKLMNP" + "Q"):
        value = f"from x ([192.0.2.1]) by relist.example (relist) with ESMTP id {wrong}; date"
        assert from_fields([("Received", value)], "message/rfc822").relist_ids == ()
