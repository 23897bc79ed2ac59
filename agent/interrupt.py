"""The exception that ends a run when the agent is asked to stop: its own
module, so that the connection (agent/moodle/) can raise it while it waits,
without importing the runs that import the connection."""


class Interrupted(Exception):
    """The agent was asked to stop: the run ends after its current batch."""
