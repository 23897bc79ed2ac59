"""E-mail notice after each sync, when the page turned it on.

The daemon calls :func:`send_pending` after each run, in a thread of its own:
a slow or dead mail server never delays a sync. A notice that could not be
sent stays owed (``Run.notified`` false) and goes out after the next run.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ..store import settings
from ..config import Config, SmtpConfig
from ..store.db import Run, database
from ..store.history import IS_SYNC, run_dict
from ..reasons import words
from ..text import human_bytes

log = logging.getLogger(__name__)

# After a long mail outage only the latest notices are worth sending.
MAX_PENDING = 5

STATUS_WORDS = {
    Run.COMPLETED: "completed",
    Run.COMPLETED_WITH_ERRORS: "completed with errors",
    Run.COMPLETED_WITH_WARNINGS: "completed with warnings",
    Run.FAILED: "failed",
    Run.SKIPPED_OFFLINE: "skipped (offline)",
    Run.INTERRUPTED: "interrupted",
}


def subject(box_name: str, run: dict) -> str:
    return f"[{box_name}] sync {STATUS_WORDS.get(run['status'], run['status'])}"


def body(box_name: str, run: dict) -> str:
    """The Information dialog's fields, as plain text."""
    duration = "-" if run["duration_s"] is None else f"{run['duration_s']:.1f} s"
    offset = run.get("clock_offset_s")
    lines = [
        f"Sync on {box_name}: {STATUS_WORDS.get(run['status'], run['status'])}",
        "",
        f"Id:             {run['id']}",
        f"Kind:           {run['kind']}",
        f"Trigger:        {run['trigger']}{' (forced)' if run['force'] else ''}",
        f"Started:        {run['started_at']}",
        f"Completed:      {run['completed_at'] or '-'}",
        f"Duration:       {duration}",
        f"Data sent:      {human_bytes(run['bytes_sent'])}",
        f"Data received:  {human_bytes(run['bytes_received'])}",
        f"Events sent:    {run['events_sent']}",
        f"Conflicts:      {run['conflicts']}",
    ]
    if offset is not None:
        lines.append(f"Clock offset:   {offset:+.0f} s (server minus box)")
    lines += ["", "Courses:"]
    lines += [f"  {c['shortname']} (id {c['id']}): {c['outcome']}" for c in run["courses"]] or ["  none"]
    lines += ["", "Actions:"]
    lines += [f"  {kind.replace('_', ' ')}: {n}" for kind, n in run["actions"].items()] or ["  none"]
    found = run.get("reasons") or []
    if found:
        lines += ["", "What happened and what to do:"]
        for sentence, advice in map(words, found):
            lines += [f"  - {sentence}", f"    What to do: {advice}"]
    lines += ["", "Errors:" if not found else "Details:"]
    lines += [f"  {e}" for e in run["errors"]] or ["  none"]
    return "\n".join(lines) + "\n"


def build_message(config: Config, to: str, run: dict) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject(config.agent.box_name, run)
    msg["From"] = config.smtp.sender
    msg["To"] = to
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=config.smtp.sender.rpartition("@")[2] or None)
    msg.set_content(body(config.agent.box_name, run))
    return msg


def connect(smtp: SmtpConfig) -> smtplib.SMTP:
    """A session with the [smtp] host (the caller checked that one is set)."""
    conn = smtplib.SMTP(smtp.host or "", smtp.port, timeout=smtp.timeout)
    try:
        if smtp.starttls:
            conn.starttls(context=ssl.create_default_context())  # verifies the server's certificate
        if smtp.username:
            conn.login(smtp.username, smtp.password or "")
    except BaseException:
        conn.close()
        raise
    return conn


def _mark(rows: list[Run]) -> None:
    if rows:
        with database.obj.atomic():
            Run.update(notified=True).where(Run.id.in_([r.id for r in rows])).execute()


def send_pending(config: Config) -> int:
    """Mail every notice still owed; returns how many went out. Never raises
    for a mail problem: it is logged and the notice stays owed."""
    owed = list(Run.select().where(Run.notified == False, Run.status != Run.RUNNING,  # noqa: E712
                                       IS_SYNC)  # a collection every few minutes is no news
                .order_by(Run.started_at.desc()))
    if not owed:
        return 0
    values = settings.preferences(config)
    to = values["notify_email"]
    if not (values["notify_enabled"] and to):
        _mark(owed)  # notices are off: nothing is owed for these runs
        return 0
    if not config.smtp.host:
        log.warning("e-mail notices are on but [smtp] host is not set in %s: no mail sent", config.path)
        return 0
    dropped, owed = owed[MAX_PENDING:], list(reversed(owed[:MAX_PENDING]))
    if dropped:
        log.info("not mailing %d older notice(s) that could not be sent", len(dropped))
        _mark(dropped)
    sent = 0
    try:
        with connect(config.smtp) as conn:
            for row in owed:
                conn.send_message(build_message(config, to, run_dict(row)))
                _mark([row])
                sent += 1
    except OSError as exc:  # smtplib's errors, TLS and time-outs are all OSErrors
        log.warning("e-mail notice to %s via %s:%d not sent (%s): %d owed, retried after the next sync",
                    to, config.smtp.host, config.smtp.port, _reason(exc), len(owed) - sent)
    else:
        log.info("e-mail notice(s) sent to %s: %d", to, sent)
    return sent


def _reason(exc: OSError) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"{exc.smtp_code} {text}"
    return str(exc) or type(exc).__name__
