"""The command line's exit statuses, one definition for every command
(agent/cli.py, check, connect, learners; cli_args.py's epilog says them)."""

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_OFFLINE, EXIT_RUNNING = 0, 1, 2, 3, 4
