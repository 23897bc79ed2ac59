"""The course check at scale: one request whatever the number of courses,
and the progress it records still true at the end."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import Box


def test_forty_courses_one_request_and_true_progress(tmp_path, simulator):
    ids = [simulator.state.add_course(f"K{i:02d}") for i in range(40)]
    for cid in ids[:3]:
        simulator.state.add_activity(cid, "page", "Reading", completion=1)
    box = Box(tmp_path, simulator.url)
    assert box.cli("courses", "add", *map(str, ids)).returncode == 0
    simulator.state.edit_course_settings(ids[5], summary="changed")  # one of them changed meanwhile
    simulator.stats.reset()
    result = box.cli("sync", "--json")
    run = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    calls = simulator.stats.snapshot()["calls"]
    assert calls == {"core_webservice_get_site_info": 1, "core_course_get_courses_by_field": 1,
                     "core_course_get_contents": 1}
    outcomes = {c["id"]: c["outcome"] for c in run["courses"]}
    assert outcomes == {cid: "changed on the server: refreshed" if cid == ids[5] else "unchanged" for cid in ids}
    assert run["progress"]["courses_done"] == run["progress"]["courses_total"] == 40
    assert box.history(1)[0]["progress"] == run["progress"]


def test_a_course_answer_that_is_not_moodles_is_left_out_not_raised():
    from agent.courses import ServerCourse, courses_of

    recorded = json.loads((Path(__file__).parent / "recordings" / "03_core_course_get_courses_by_field_ids_commalist.json")
                          .read_text())["response"]
    good = courses_of(recorded)
    assert good and all(isinstance(c, ServerCourse) and isinstance(c.cacherev, int) for c in good.values())
    hostile = {"courses": [{"id": "abc"}, {"id": True}, {"id": 7, "timemodified": "soon"}, {"id": 8, "cacherev": 1.5},
                           "junk", None, {"id": 9, "shortname": "K9", "timemodified": 5, "cacherev": None}]}
    assert courses_of(hostile) == {9: ServerCourse(9, "K9", "", 5, None)}
    assert courses_of({"courses": "all"}) == courses_of([]) == courses_of(None) == {}
