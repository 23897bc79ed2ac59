"""The way up: planning the calls and sending them to the server."""
