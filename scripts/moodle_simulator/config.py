"""The simulated site's configuration: release, plugins, roles, settings, the token's service.

These are the values of the recorded Moodle 4.5.6 (see tests/recordings/README.md).
"""

from dataclasses import dataclass

WS_PATH = "/webservice/rest/server.php"
BATCH_FUNCTION = "tool_mobile_call_external_functions"

RELEASE = "4.5.6 (Build: 20250811)"
VERSION = "2024100706"
THEMEREV = 1795334364
SITENAME = "Moodle Reference Server"
ADMIN_ID = 2
GUEST_ID = 1
DOCS = "https://docs.moodle.org/405/en/"
PRIVATE_ACCESS_KEY = "adfc3a6eee923cee9a4762c81ab6b4e8"
# What get_site_info reports to users other than the admin (who ignores both limits): $CFG->userquota's
# default (100 MB), and get_max_upload_file_size() of PHP's default upload_max_filesize (2M), not recorded.
USER_QUOTA = 104857600
USER_MAX_UPLOAD_FILE_SIZE = 2097152


@dataclass(frozen=True)
class SiteName:
    """What the site's own course (id 1) calls the site: its name is the site name in get_site_info."""
    fullname: str
    shortname: str
    summary: str


SERVER_SITE = SiteName(SITENAME, "moodleref", "Loopback reference server")
# The box's own Moodle (issue 12): another site, into which the server's courses were restored.
BOX_SITE = SiteName("Classroom box Moodle", "classroombox", "The classroom box's own Moodle")

# The site's own course (id 1), there even on an empty site; SiteName fills its names.
SITE_COURSE = {
    "id": 1, "contextid": 2,
    "categoryid": 0, "categoryname": "", "sortorder": 1,
    "showcompletionconditions": None, "idnumber": "", "format": "site", "newsitems": 3,
    "startdate": 0, "enddate": 0, "visible": 1, "enablecompletion": 0,
    "timecreated": 1795334312, "timemodified": 1795334375, "cacherev": THEMEREV,
}

# The recorded external service "edge_sync" (recording 01), in order, with
# the component version Moodle reports.  The functions after it exist in
# Moodle 4.5 but are not in the recorded service; the simulator's default
# service adds them at the end (remove them with without_functions=[...]).
RECORDED_SERVICE = [
    ("core_webservice_get_site_info", VERSION),
    ("core_course_get_courses_by_field", VERSION),
    ("core_course_get_contents", VERSION),
    ("core_user_get_users_by_field", VERSION),
    ("core_user_create_users", VERSION),
    ("enrol_manual_enrol_users", "2024100700"),
    ("core_enrol_get_enrolled_users", VERSION),
    ("core_completion_get_activities_completion_status", VERSION),
    ("core_completion_override_activity_completion_status", VERSION),
    ("core_completion_update_activity_completion_status_manually", VERSION),
    ("core_grades_update_grades", VERSION),
    ("core_grades_get_gradeitems", VERSION),
    ("gradereport_user_get_grade_items", "2024100700"),
    ("tool_mobile_call_external_functions", "2024100700"),
]
SERVICE_FUNCTIONS = RECORDED_SERVICE + [
    ("core_user_update_users", VERSION),
    ("core_enrol_get_users_courses", VERSION),
    ("core_user_get_course_user_profiles", VERSION),
    # In edge_sync since recordings 94-101 (the README's "Server additions"); mod_assign_save_grade is not.
    ("core_completion_get_course_completion_status", VERSION),
    ("core_badges_get_user_badges", VERSION),
    ("mod_assign_save_grades", "2024100700"),
    ("mod_assign_get_grades", "2024100700"),
    ("mod_assign_save_grade", "2024100700"),
]

# Functions that exist in Moodle 4.5 but are not implemented here (so never in
# the service): calling them gives accessexception, not invalidrecord.
OTHER_MOODLE_FUNCTIONS = frozenset("""
core_course_create_courses core_course_update_courses core_course_delete_courses
core_course_get_courses core_course_get_categories core_course_search_courses
core_course_get_course_module core_course_get_course_module_by_instance
core_course_view_course core_course_get_recent_courses core_course_duplicate_course
core_course_delete_modules core_course_edit_module core_course_get_updates_since
core_course_check_updates core_user_delete_users core_user_get_users
core_user_update_user_preferences
core_user_get_user_preferences core_user_add_user_private_files
core_enrol_get_course_enrolment_methods
core_enrol_search_users core_enrol_get_enrolled_users_with_capability
enrol_manual_unenrol_users enrol_self_enrol_user
core_completion_mark_course_self_completed
core_grades_get_gradable_users core_grades_get_enrolled_users_for_selector
core_grades_create_gradecategories core_grades_get_grade_tree
gradereport_user_get_grades_table gradereport_user_view_grade_report
gradereport_overview_get_course_grades gradereport_grader_get_users_in_report
core_group_get_course_groups core_group_create_groups core_group_add_group_members
core_role_assign_roles core_role_unassign_roles core_cohort_get_cohorts
core_calendar_get_calendar_events core_message_send_instant_messages
core_notes_create_notes core_files_get_files core_files_upload
mod_assign_get_assignments mod_assign_get_submissions mod_page_get_pages_by_courses
mod_url_get_urls_by_courses mod_quiz_get_quizzes_by_courses
tool_mobile_get_config tool_mobile_get_public_config tool_mobile_get_plugins_supporting_mobile
core_block_get_course_blocks
""".split())

FILTERS = [
    {"filter": "displayh5p", "localstate": 0, "inheritedstate": 1},
    {"filter": "activitynames", "localstate": 0, "inheritedstate": 1},
    {"filter": "mathjaxloader", "localstate": 0, "inheritedstate": 1},
    {"filter": "emoticon", "localstate": 0, "inheritedstate": 1},
    {"filter": "urltolink", "localstate": 0, "inheritedstate": 1},
    {"filter": "mediaplugin", "localstate": 0, "inheritedstate": 1},
]
COURSE_FORMAT_OPTIONS = [
    {"name": "hiddensections", "value": 1},
    {"name": "coursedisplay", "value": 0},
    {"name": "indentation", "value": "1"},
]
ADVANCED_FEATURES = [
    ("usecomments", 1), ("usetags", 1), ("enablenotes", 1), ("messaging", 1),
    ("enableblogs", 1), ("enablecompletion", 1), ("enablebadges", 1),
    ("messagingallusers", 0), ("enablecustomreports", 1), ("enableglobalsearch", 0),
    ("mnet_dispatcher_mode", 0), ("enablecompetencies", 1),
]

MODULES = {
    # modname: (purpose, plural, customdata, has contents)
    "page": ("content", "Pages", '""', True),
    "url": ("content", "URLs", '{"display":4,"filtericon":true}', True),
    "assign": ("assessment", "Assignments",
               '{"customcompletionrules":{"completionsubmit":"0"}}', False),
}
GRADED_MODULES = {"assign"}

ROLES = {1: "manager", 2: "coursecreator", 3: "editingteacher", 4: "teacher",
         5: "student", 6: "guest", 7: "user", 8: "frontpage"}
# Roles the token user may assign in a course (enrol_manual_enrol_users).
ASSIGNABLE_ROLES = (3, 4, 5)
STUDENT_ROLE = 5
CONTACT_ROLE = 3        # $CFG->coursecontact default: editingteacher

AUTH_PLUGINS = {"manual", "nologin", "email", "cas", "db", "ldap", "lti", "oauth2", "shibboleth"}
LANGS = {"en"}
THEMES = {"boost", "classic"}

# lib/completionlib.php
COMPLETION_INCOMPLETE, COMPLETION_COMPLETE = 0, 1
TRACKING_NONE, TRACKING_MANUAL, TRACKING_AUTOMATIC = 0, 1, 2
