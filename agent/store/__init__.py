"""The box's state in SQLite: the queue, the runs' history, settings, what the box knows of the server."""
