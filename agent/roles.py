"""Moodle's course roles that an enrolment event may name, with their ids on
a stock site (recordings 11 and 14: 5 = student). Used to check events on
the way in and to build the enrolment calls on the way out."""

ROLES = {"student": 5, "teacher": 4, "editingteacher": 3}

# Moodle's standard role id of a student, on the box's Moodle as on any other.
STUDENT_ROLE_ID = ROLES["student"]
