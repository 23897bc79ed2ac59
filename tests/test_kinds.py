"""The kinds table (agent/kinds.py) is the one description of each kind of
data: the kinds the queue's validator accepts, the counters the history
records and the page shows, the functions ``check`` lists and the phases
the progress names all come from it. A new kind is one entry there, a
sample here, and its texts on the page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import agent
from agent.kinds import KINDS, PHASES, box_functions, data_of, down_counters, found_counters, push_counters, \
    server_functions, value_of
from agent.push.plan import Busy, Knowledge, Queued, wants
from agent.store.runkinds import ACTION_KINDS, COLLECT_KINDS
from agent.store.queue import FIELDS, EventError, validate_event
from tests.helpers import BOX_TOKEN, TOKEN, Box

SOURCES = Path(agent.__file__).resolve().parents[1]

# One valid event of each kind: a kind added to the table without one fails here.
SAMPLES = {
    "completion": {"type": "completion", "course_id": 2, "user": "student1", "cmid": 1, "completed": True},
    "grade": {"type": "grade", "course_id": 2, "user": "student1", "cmid": 3, "grade": 7.5, "feedback": "ok"},
    "user": {"type": "user", "user": "kid1", "firstname": "K", "lastname": "One", "email": "k1@example.org",
             "password": "Secret-123"},
    "enrolment": {"type": "enrolment", "course_id": 2, "user": "kid1", "role": "student"},
}


def test_the_validator_accepts_the_tables_kinds_and_no_other():
    assert set(FIELDS) == set(KINDS) == set(SAMPLES)
    for name, kind in KINDS.items():
        event = validate_event(SAMPLES[name], 0)
        assert event.type == name
        assert (event.course_id is not None, event.cmid is not None) == (kind.in_course, kind.on_activity)
        for field in kind.fields - set(SAMPLES[name]):
            with pytest.raises(EventError):
                validate_event({**SAMPLES[name], field: ["not", "valid"]}, 0)
        with pytest.raises(EventError, match="is not a field of"):
            validate_event({**SAMPLES[name], "badge": 1}, 0)
    with pytest.raises(EventError, match="must be one of completion, enrolment, grade, user, got \"badge\""):
        validate_event({**SAMPLES["user"], "type": "badge"}, 0)


def test_planning_an_event_of_an_unknown_kind_is_an_error_never_learning():
    with pytest.raises(ValueError, match="unknown kind of event 'badge'"):
        wants(Queued(1, "badge", "student1", 2, 1), Knowledge(ids={"student1": 3}), Busy())


def test_the_history_records_and_the_page_shows_the_tables_counters(tmp_path):
    in_push_order = sorted(KINDS.values(), key=lambda k: k.stage)
    assert ACTION_KINDS == [c for k in in_push_order for c in k.pushed] + ["courses_refreshed"] == push_counters()
    assert COLLECT_KINDS == [k.found for k in KINDS.values()] + ["learners_read"]
    assert down_counters() == [k.down_counter for k in KINDS.values()] + ["profiles_down", "two_way_conflicts"]

    from agent.config import load_config
    from agent.store.schema import close_db
    from webui import SCRIPT_TEXTS, create_app
    from webui.i18n import has_text

    app = create_app(load_config(Box(tmp_path, "http://127.0.0.1:9").config))
    try:
        with app.test_request_context("/"):
            shown: dict = dict(app.jinja_env.globals)
            app.update_template_context(shown)
    finally:
        close_db()
    assert shown["action_kinds"] == ACTION_KINDS and shown["found_kinds"] == found_counters()
    assert shown["down_of"] == {k.pushed[0]: k.down_counter for k in KINDS.values()}
    # Each counter and phase has its text on the page.
    assert all(has_text(f"action_{c}") for c in ACTION_KINDS)
    assert all(has_text(f"found_{c}") for c in found_counters())
    assert all(has_text(f"kind_{k}") for k in KINDS if k in ("completion", "grade"))
    assert [t for t in SCRIPT_TEXTS if t.startswith("phase_")] == [f"phase_{p}" for p in PHASES]
    assert all(has_text(f"phase_{p}") for p in PHASES)


def test_the_runs_name_only_the_tables_phases():
    named = {m for path in (SOURCES / "agent").rglob("*.py")
             for m in re.findall(r'phase="(\w+)"', path.read_text())}
    assert named and named <= set(PHASES), named - set(PHASES)


def test_check_lists_the_functions_each_kind_needs_on_each_side(tmp_path):
    from moodle_simulator import start_simulator

    pushed = [f for k in KINDS.values() for f in k.server_up]
    collected = [f for k in KINDS.values() for f in k.box_collect]
    with start_simulator(token=TOKEN, without_functions=pushed) as server, \
            start_simulator(token=BOX_TOKEN, box=True, without_functions=collected) as box_moodle:
        (tmp_path / "box-token").write_text(BOX_TOKEN + "\n")
        box = Box(tmp_path, server.url, extra=f"[box]\nurl = {box_moodle.url}\ntoken_file = {tmp_path / 'box-token'}\n")
        result = json.loads(box.cli("check", "--json").stdout)
    # An optional right's function (agent/rights.py) is said as a feature off, not as missing.
    from agent.rights import OPTIONAL_RIGHTS

    assert sorted(result["missing_functions"]) == sorted(set(pushed) - set(OPTIONAL_RIGHTS))
    assert sorted(result["rights"]["off_functions"]) == sorted(set(pushed) & set(OPTIONAL_RIGHTS))
    assert sorted(result["box"]["missing_functions"]) == sorted(set(collected))
    assert result["missing_optional"] == result["box"]["missing_optional"] == []
    # The run's own reads come first; each kind's functions follow.
    assert server_functions(down=False)[:3] == ["core_webservice_get_site_info", "core_course_get_courses_by_field",
                                                "core_course_get_contents"]
    assert set(server_functions(down=True)) - set(server_functions(down=False)) == {
        f for k in KINDS.values() for f in k.server_down}
    assert set(box_functions(down=True)) - set(box_functions(down=False)) == {
        f for k in KINDS.values() for f in k.box_down} - set(box_functions(down=False))


def test_each_kind_is_pushed_in_a_stage_and_brought_down_one_way():
    from agent.kinds import STAGES, brought_down, of_stage

    assert sorted(t for stage in STAGES for t in of_stage(stage)) == sorted(KINDS)
    assert sorted(brought_down("learning") + brought_down("accounts")) == sorted(KINDS)
    assert brought_down("learning") == of_stage("learning") == ["completion", "grade"]


@pytest.mark.parametrize("kind, data, value", [
    ("completion", {"completed": True}, 1.0), ("completion", {"completed": False}, 0.0),
    ("grade", {"grade": 7.25}, 7.25),
])
def test_a_completion_or_a_grade_is_a_number_one_way_and_back(kind, data, value):
    assert value_of(kind, data) == value and data_of(kind, value) == data
    assert value_of("user", {"firstname": "K"}) is None
