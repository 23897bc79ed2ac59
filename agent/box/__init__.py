"""Collection: reading the box's own Moodle and queueing what changed."""
