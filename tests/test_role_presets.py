"""The role presets in packaging/moodle/: Moodle's export structure, real 4.5 capabilities, documented in the
README's table, and exactly what the simulator's sync account holds."""

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from moodle_simulator import start_simulator
from moodle_simulator.rights import BOX_PRESETS, OPTIONAL_CAPABILITIES, SERVER_PRESETS

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "packaging" / "moodle"
MOODLE_EXPORT = ROOT / "tests" / "recordings" / "role-preset-editingteacher.xml"
FILES = sorted(PRESETS.glob("*.xml"))
# context_helper's level names, as the export writes them (context_<name>).
LEVELS = {"system", "user", "coursecat", "course", "module", "block"}
# Functions the agent calls (server; the box makes the same reads and the writes of the way down).
AGENT_FUNCTIONS = """core_webservice_get_site_info core_course_get_courses_by_field core_course_get_contents
core_user_get_users_by_field core_user_create_users core_user_update_users enrol_manual_enrol_users
core_user_get_course_user_profiles core_enrol_get_enrolled_users core_completion_get_activities_completion_status
core_completion_override_activity_completion_status core_grades_update_grades gradereport_user_get_grade_items
mod_assign_save_grades mod_assign_get_grades core_completion_get_course_completion_status
core_badges_get_user_badges tool_mobile_call_external_functions""".split()


def tree(path):
    return ET.fromstring(path.read_bytes())


def allowed(path):
    return [e.text for e in tree(path).find("permissions") if e.tag == "allow"]


def readme_rows():
    """capability -> the other cells of its row in packaging/moodle/README.md's table."""
    rows = {}
    for line in (PRESETS / "README.md").read_text().splitlines():
        m = re.match(r"\| `([a-z/_:]+)` \|(.*)\|$", line)
        if m:
            rows[m.group(1)] = [cell.strip() for cell in m.group(2).split(" | ")]
    return rows


def readme_table():
    """capability -> the text of its "server: context (preset)" cell."""
    return {c: cells[0] for c, cells in readme_rows().items()}


def test_the_presets_are_there():
    names = {p.name for p in FILES}
    assert names == {f for f, _ in SERVER_PRESETS + BOX_PRESETS}
    assert MOODLE_EXPORT.is_file(), "Moodle's own export, the reference for the structure"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_structure_is_moodles_export(path):
    reference = tree(MOODLE_EXPORT)
    mine = tree(path)
    # The same declaration and one line of XML, as DOMDocument::saveXML() writes it.
    assert path.read_text().splitlines()[0] == MOODLE_EXPORT.read_text().splitlines()[0]
    assert len(path.read_text().splitlines()) == 2
    assert mine.tag == reference.tag == "role"
    assert [c.tag for c in mine] == [c.tag for c in reference]
    for tag in ("contextlevels", "allowassign", "allowoverride", "allowswitch", "allowview"):
        assert {c.tag for c in mine.find(tag)} <= {c.tag for c in reference.find(tag)}, tag
    assert all(not len(c) for c in mine.find("permissions"))
    # Permissions in the export's order: inherit, allow, prevent, prohibit, each sorted by capability.
    order = {"inherit": 0, "allow": 1, "prevent": 2, "prohibit": 3}
    kinds = [(order[c.tag], c.text) for c in mine.find("permissions")]
    assert kinds == sorted(kinds) and kinds
    # core_role_preset::parse_preset(): a PARAM_ALPHANUMEXT lower-case short name, known context levels.
    assert re.fullmatch(r"[a-z0-9_-]+", mine.findtext("shortname"))
    assert mine.findtext("name") and mine.findtext("description")
    assert {lvl.text for lvl in mine.find("contextlevels")} <= LEVELS
    assert {s.text for s in mine.find("allowassign")} <= {"student"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_capabilities_exist_in_moodle_45(path):
    """Every capability Moodle 4.5.6 has is listed in its export of editingteacher."""
    known = {c.text for c in tree(MOODLE_EXPORT).find("permissions")}
    assert len(known) == 741
    assert set(allowed(path)) <= known
    assert len(allowed(path)) == len(set(allowed(path)))


def test_every_granted_capability_is_in_the_readme_table():
    table = readme_table()
    context_words = {"system": "system", "coursecat": "course category"}
    for filename, level in SERVER_PRESETS:
        path = PRESETS / filename
        short = filename.removeprefix("moodle-sync-agent-").removesuffix(".xml")
        for capability in allowed(path):
            assert capability in table, f"{capability} ({filename}) is not in packaging/moodle/README.md"
            assert table[capability].startswith(context_words[level]), (capability, table[capability])
            assert f"({short})" in table[capability], (capability, table[capability])
    box = set(allowed(PRESETS / "moodle-sync-agent-box.xml"))
    assert box <= set(table)
    # The box's preset is the server's three together; the table lists nothing no preset grants.
    server = {c for f, _ in SERVER_PRESETS for c in allowed(PRESETS / f)}
    assert box == server == set(table)


def test_optional_capability_is_alone_in_its_own_preset():
    assert allowed(PRESETS / "moodle-sync-agent-server-system-update-users.xml") == ["moodle/user:update"]
    assert OPTIONAL_CAPABILITIES == {"moodle/user:update"}
    assert "moodle/user:update" not in allowed(PRESETS / "moodle-sync-agent-server-system.xml")
    # The table's last column says "optional" for it and for nothing else.
    optional = {c for c, cells in readme_rows().items() if "optional" in cells[-1].lower()}
    assert optional == set(OPTIONAL_CAPABILITIES)


def test_readme_lists_the_service_functions_and_the_steps():
    text = (PRESETS / "README.md").read_text()
    for function in AGENT_FUNCTIONS:
        assert function in text.split("## Steps")[1], function
    assert "moodle_sync_agent" in text and "Manage tokens" in text and "Revoking a token" in text


@pytest.mark.parametrize("box", [False, True], ids=["server", "box"])
def test_simulator_sync_account_holds_exactly_the_presets(box):
    with start_simulator(box=box, sync_account=True) as sim:
        state = sim.state
        uid = state.user_id("syncagent")
        held = {(role, level) for u, role, level, _ in state.role_assignments if u == uid}
        presets = BOX_PRESETS if box else SERVER_PRESETS
        expected = {(tree(PRESETS / f).findtext("shortname"), level) for f, level in presets}
        assert held == expected
        for f, _ in presets:
            role = state.roles[tree(PRESETS / f).findtext("shortname")]
            assert role.capabilities == set(allowed(PRESETS / f))
            assert role.allowassign == [s.text for s in tree(PRESETS / f).find("allowassign")]
        categories = {i for u, _, level, i in state.role_assignments if u == uid and level == "coursecat"}
        assert categories == ({1} if not box else set())
