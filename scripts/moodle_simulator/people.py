"""What an administrator does to accounts and rights in Moodle's pages
(Site administration > Users, Define roles, External services): the
simulated site's ops on people, mixed into ``changes.Moodle``."""

from __future__ import annotations

from .accounts import check_password, hash_password, make_service, password_policy_text
from .params import clean_param, validate_email
from .rights import assign_role, define_role, parse_preset, remove_capability
from .state import Site


class People(Site):
    """Every method here takes ``self.lock``."""

    # -- people (what an administrator does in Site administration > Users) --------------------
    def add_user(self, username: str, firstname: str | None = None, lastname: str = "Test",
                 email: str | None = None, idnumber: str = "", auth: str = "manual", suspended: bool = False,
                 password: str | None = None) -> dict:
        """A new account (e.g. a learner who exists only on the box): the next user id.  Without a
        password it cannot log in (as after createpassword, until one is set)."""
        with self.lock:
            if not isinstance(username, str) or not username or clean_param(username, "username") != username:
                raise ValueError(f"username: lower-case letters, digits and _-.@ only, got {username!r}")
            if self.user_id(username) is not None:
                raise ValueError(f"username: {username!r} is already taken")
            email = f"{username}@example.invalid" if email is None else email
            if not validate_email(email) or self.user_ids_with_email(email):
                raise ValueError(f"email: {email!r} is not a valid address or is already used")
            if password is not None and (not isinstance(password, str) or password_policy_text(password)):
                raise ValueError("password: must meet the site's password policy (8 characters, a digit, a lower "
                                 "and an upper case letter, a non-alphanumeric character)")
            uid = self.next_id("user")
            self.add_user_record(uid, username, firstname or username.capitalize(), lastname, email, str(idnumber),
                                 auth=auth, suspended=bool(suspended),
                                 password=hash_password(password) if password is not None else None)
            return {"userid": uid, "username": username}

    # -- accounts and rights (accounts.py, rights.py) -------------------------------------------
    def set_password(self, password: str | None, userid: int | None = None, username: str | None = None) -> dict:
        """What an administrator does on the user's profile page (None: no usable password)."""
        with self.lock:
            uid = self._userid_of(userid, username)
            if password is not None and (not isinstance(password, str) or password_policy_text(password)):
                raise ValueError("password: must meet the site's password policy")
            u = self.user_for_update(uid)
            assert u is not None        # _userid_of() found it
            u["password"] = hash_password(password) if password is not None else None
            return {"userid": uid}

    def password_is(self, password: str, userid: int | None = None, username: str | None = None) -> bool:
        """Whether the account's stored hash matches (tests: a refused password was not stored)."""
        with self.lock:
            u = self.user(self._userid_of(userid, username))
            return check_password(u.get("password") if u else None, password)

    def define_role(self, xml: str) -> dict:
        """A role from a preset's XML text (Define roles -> Upload a preset)."""
        with self.lock:
            role = define_role(self, parse_preset(xml))
            return {"role": role.shortname, "capabilities": sorted(role.capabilities)}

    def assign_role(self, role: str, userid: int | None = None, username: str | None = None,
                    contextlevel: str = "system", instanceid: int = 0) -> dict:
        """A role assignment in the system context or in a course category (instanceid: the category id)."""
        with self.lock:
            uid = self._userid_of(userid, username)
            assign_role(self, uid, role, contextlevel, instanceid)
            return {"userid": uid, "role": role, "contextlevel": contextlevel, "instanceid": instanceid}

    def remove_capability(self, capability: str, role: str | None = None) -> dict:
        """Take a capability out of a role's definition (None: out of every role): degraded rights."""
        with self.lock:
            return {"roles": remove_capability(self, capability, role)}

    def add_service(self, shortname: str, functions: list[str] | None = None, enabled: bool = True,
                    name: str | None = None) -> dict:
        """Another external service (None: the same functions as the sync service)."""
        with self.lock:
            chosen = dict(self.service) if functions is None else {f: self.service.get(f, "2024100706")
                                                                   for f in functions}
            self.services[shortname] = make_service(shortname, name or shortname, chosen, bool(enabled))
            return {"service": shortname, "functions": list(chosen), "enabled": bool(enabled)}

    def _userid_of(self, userid: int | None, username: str | None) -> int:
        """The id of an existing, visible account named by id or by username."""
        if (userid is None) == (username is None):
            raise ValueError("userid or username: give exactly one")
        uid = self.user_id(username) if username is not None else userid
        u = self.user(uid) if isinstance(uid, int) and not isinstance(uid, bool) else None
        if u is None or u.hidden:
            raise ValueError(f"{'username' if username is not None else 'userid'}: no user "
                             f"{username if username is not None else userid!r}")
        return u.id
