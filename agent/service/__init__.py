"""The daemon: its schedule, its worker process, its e-mails."""
