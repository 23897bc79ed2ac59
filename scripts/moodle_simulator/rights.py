"""Roles and role assignments beyond course enrolments: the sync account's presets (packaging/moodle/).

A role here is what a Moodle role preset defines (core_role_preset: the
short name, the context levels, allowassign and the allowed capabilities).
A role assigned in the system context gives its capabilities everywhere; one
assigned in a course category gives them in that category's courses, like
Moodle's role assignments.  The presets in packaging/moodle/ are read at
start, so the simulator grants exactly what an administrator imports.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .state import Record

if TYPE_CHECKING:
    from .state import Site

PRESET_DIR = Path(__file__).resolve().parents[2] / "packaging" / "moodle"
# The presets the seeded sync account gets, by site: (file, context level).
SERVER_PRESETS = [("moodle-sync-agent-server-system.xml", "system"),
                  ("moodle-sync-agent-server-system-update-users.xml", "system"),
                  ("moodle-sync-agent-server-category.xml", "coursecat")]
BOX_PRESETS = [("moodle-sync-agent-box.xml", "system")]
# Capabilities a preset grants that the agent can do without (packaging/moodle/README.md).
OPTIONAL_CAPABILITIES = frozenset({"moodle/user:update"})

# The authenticated-user role's defaults that matter here (lib/db/access.php); mobile web services on
# add webservice/rest:use to it (88_).
AUTHENTICATED = frozenset({"moodle/webservice:createmobiletoken", "moodle/category:viewcourselist",
                           "moodle/user:manageownfiles", "moodle/badges:earnbadge"})
MOBILE_AUTHENTICATED = AUTHENTICATED | {"webservice/rest:use"}

# get_capability_string(): lang/en/role.php and the plugins' strings, for required_capability_exception.
CAPABILITY_NAMES = {
    "webservice/rest:use": "Use REST protocol",
    "moodle/webservice:createtoken": "Create a web service token",
    "moodle/webservice:createmobiletoken": "Create a web service token for mobile access",
    "moodle/user:create": "Create users",
    "moodle/user:update": "Update user profiles",
    "moodle/user:viewdetails": "View user profiles",
    "moodle/user:viewalldetails": "View user full information",
    "moodle/site:viewfullnames": "Always see full names of users",
    "moodle/site:viewuseridentity": "See full user identity in lists",
    "moodle/course:view": "View courses without participation",
    "moodle/course:update": "Update course settings",
    "moodle/course:viewparticipants": "View participants",
    "moodle/role:assign": "Assign roles to users",
    "moodle/badges:viewotherbadges": "View public badges in other users' profiles",
    "report/completion:view": "View course completion report",
    "mod/assign:grade": "Grade assignment",
    "mod/assign:viewgrades": "View grades",
}


def parse_preset(text: str) -> Record:
    """core_role_preset::parse_preset() for what the simulator uses; ValueError for a file Moodle refuses."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ValueError(f"not XML: {e}") from None
    if root.tag != "role":
        raise ValueError(f"the top element is <{root.tag}>, not <role>")

    def children(tag: str, child: str) -> list[str]:
        node = root.find(tag)
        return [(c.text or "").strip() for c in node if c.tag == child] if node is not None else []
    permissions = root.find("permissions")
    allowed = {(c.text or "").strip() for c in permissions if c.tag == "allow"} if permissions is not None else set()
    shortname = (root.findtext("shortname") or "").strip()
    if not shortname:
        raise ValueError("the preset has no <shortname>")
    return Record(shortname=shortname, name=(root.findtext("name") or "").strip(),
                  archetype=(root.findtext("archetype") or "").strip(),
                  contextlevels=children("contextlevels", "level"),
                  allowassign=children("allowassign", "shortname"), capabilities=set(allowed))


def load_preset(filename: str) -> Record:
    path = PRESET_DIR / filename
    try:
        return parse_preset(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"role preset {path}: {e}") from None


def define_role(site: Site, role: Record) -> Record:
    site.roles[role.shortname] = role
    return role


def assign_role(site: Site, userid: int, shortname: str, contextlevel: str = "system", instanceid: int = 0) -> None:
    role = site.roles.get(shortname)
    if role is None:
        raise ValueError(f"role: no role {shortname!r}")
    if contextlevel not in ("system", "coursecat"):
        raise ValueError(f"contextlevel: 'system' or 'coursecat', got {contextlevel!r}")
    if contextlevel not in role.contextlevels:
        raise ValueError(f"role {shortname!r} cannot be assigned in the {contextlevel} context "
                         f"(its context levels: {', '.join(role.contextlevels) or 'none'})")
    site.role_assignments.add((userid, shortname, contextlevel, 0 if contextlevel == "system" else int(instanceid)))


def _roles_in(site: Site, userid: int, courseid: int | None) -> Iterable[Record]:
    """The roles the user holds in the system context, and in the course's category when courseid is set."""
    category = None
    if courseid is not None and courseid in site.courses:
        category = site.courses[courseid].categoryid
    for uid, shortname, level, instance in site.role_assignments:
        if uid == userid and (level == "system" or (level == "coursecat" and instance == category)):
            yield site.roles[shortname]


def granted(site: Site, capability: str, userid: int, courseid: int | None = None) -> bool:
    """Whether a role assignment (or the authenticated-user role) allows the capability there."""
    if capability in (MOBILE_AUTHENTICATED if site.mobile_services else AUTHENTICATED):
        return True
    return any(capability in role.capabilities for role in _roles_in(site, userid, courseid))


def assignable_roles(site: Site, userid: int, courseid: int) -> set[str]:
    """get_assignable_roles(): the allowassign of the user's roles there, with moodle/role:assign."""
    roles = list(_roles_in(site, userid, courseid))
    if not any("moodle/role:assign" in r.capabilities for r in roles):
        return set()
    return {name for r in roles for name in r.allowassign}


def remove_capability(site: Site, capability: str, role: str | None = None) -> int:
    """Take a capability out of one role's definition (or every role's): a degraded site.  How many lost it."""
    changed = 0
    for r in site.roles.values():
        if (role is None or r.shortname == role) and capability in r.capabilities:
            r.capabilities.discard(capability)
            changed += 1
    if role is not None and role not in site.roles:
        raise ValueError(f"role: no role {role!r}")
    return changed
