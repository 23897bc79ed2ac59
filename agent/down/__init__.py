"""The way down: the server's progress into the box's Moodle."""
