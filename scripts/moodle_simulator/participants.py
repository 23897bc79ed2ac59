"""Many participants in one course, kept as a rule instead of as records.

A benchmark needs a course of 30,000 participants (and a box with 30 of
them); 30,000 user, enrolment and index records would take ~55 MB.  A block
describes them all (participant1 ... participantN, ids first_id ...), and
the site makes a record for one only when something reads it (a throwaway
copy) or changes it (an ordinary record from then on: ``moved``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

EMAIL_DOMAIN = "example.invalid"


@dataclass
class ParticipantBlock:
    courseid: int | None        # None once the course is deleted: the users stay
    first_id: int
    count: int
    prefix: str
    roleid: int
    timecreated: int
    moved: set[int] = field(default_factory=set)   # ids kept as ordinary records now

    def holds(self, uid: int) -> bool:
        return self.first_id <= uid < self.first_id + self.count and uid not in self.moved

    def ids(self) -> Iterator[int]:
        return (uid for uid in range(self.first_id, self.first_id + self.count) if uid not in self.moved)

    def size(self) -> int:
        return self.count - len(self.moved)

    def _uid_of_number(self, digits: str) -> int | None:
        if not digits.isdigit() or digits != str(int(digits)):
            return None
        uid = self.first_id + int(digits) - 1
        return uid if self.holds(uid) else None

    def uid_of_username(self, username: str) -> int | None:
        return self._uid_of_number(username[len(self.prefix):]) if username.startswith(self.prefix) else None

    def uid_of_email(self, email: str) -> int | None:
        """The holder of a (lower-case) e-mail address, as Moodle compares them."""
        local, _, domain = email.partition("@")
        return self.uid_of_username(local) if domain == EMAIL_DOMAIN else None

    def user_fields(self, uid: int) -> dict:
        n = uid - self.first_id + 1
        username = f"{self.prefix}{n}"
        return {"username": username, "firstname": "Participant", "lastname": str(n),
                "email": f"{username}@{EMAIL_DOMAIN}"}
