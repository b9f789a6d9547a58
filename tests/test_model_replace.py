"""``relist.core.model.replace``: the core's cheaper ``dataclasses.replace`` (issue 17)
gives the same values, refuses the same mistakes, and leaves the classes it cannot copy
field by field (init=False fields, ``__post_init__``) to ``dataclasses.replace``."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from relist.core.message import RawMessage
from relist.core.model import Action, Envelope, Findings, Known, Record, StepNote, Work, replace

ENV = Envelope("a@example.org", ("b@example.org",))
RECORD = Record("R1", datetime(2026, 1, 1, tzinfo=timezone.utc), ENV, "<m@x>", None, 10, 12, ())
MSG = RawMessage.parse(b"Subject: x\r\n\r\nbody\r\n")


@pytest.mark.parametrize("value, changes", [
    (Known(), {"notice": "confirm", "mode_chosen": "resign"}),
    (Known(message_id="<m@x>"), {}),
    (Findings(), {"internal_error": "boom"}),
    (RECORD, {"list_address": "l@example.org", "size_out": 99}),
    (Work(MSG), {"notes": (StepNote("parse", Action.RECORDED),)}),
    (ENV, {"client_ip": "127.0.0.1"}),
])
def test_same_value_as_dataclasses_replace(value, changes):
    mine, theirs = replace(value, **changes), dataclasses.replace(value, **changes)
    assert mine == theirs and type(mine) is type(theirs)
    assert mine is not value
    for f in dataclasses.fields(value):
        assert getattr(mine, f.name) is getattr(theirs, f.name)


def test_the_original_is_unchanged():
    before = Known(notice="x")
    replace(before, notice="y")
    assert before.notice == "x"


def test_an_unknown_field_is_a_type_error():
    with pytest.raises(TypeError, match="Known has no field 'nope'"):
        replace(Known(), nope=1)


def test_a_class_with_an_init_false_field_goes_to_dataclasses_replace():
    memo = MSG.body_memo()
    edited = replace(MSG, fields=MSG.fields[:0])
    assert edited.fields == () and edited.body == MSG.body
    assert edited._memo is None and memo is not None   # as dataclasses.replace leaves it
