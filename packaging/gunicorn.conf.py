"""gunicorn settings for the teacher's page (moodle-sync-agent-web.service).

Used as: gunicorn --config /usr/share/moodle-sync-agent/gunicorn.conf.py \
             --pythonpath /usr/share/moodle-sync-agent 'webui:create_app()'

Address: $MOODLE_SYNC_AGENT_BIND (e.g. "0.0.0.0:8080"), else [web] host and
port of the agent's INI file ($MOODLE_SYNC_AGENT_CONFIG, else
/etc/moodle-sync-agent/agent.ini), else their defaults in agent/config.py.
Workers: $MOODLE_SYNC_AGENT_WORKERS, else 2. Only agent.config (stdlib only)
is imported here, in the master: the app is imported in each worker.
"""

import configparser
import os
import sys

# gunicorn runs this file before it applies --pythonpath: the package puts
# agent/ beside this file (/usr/share/moodle-sync-agent), so that goes first.
_HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.isdir(os.path.join(_HERE, "agent")) and _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from agent.config import config_path, default  # noqa: E402


def _bind_from_config():
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(config_path(), encoding="utf-8") as fh:
            parser.read_file(fh)
    except (OSError, configparser.Error, UnicodeDecodeError):
        pass  # the app itself reports a bad config file, naming it
    host = parser.get("web", "host", fallback="").strip() or default("web", "host")
    port = parser.get("web", "port", fallback="").strip() or str(default("web", "port"))
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"{host}:{port}"


bind = [os.environ.get("MOODLE_SYNC_AGENT_BIND") or _bind_from_config()]
workers = int(os.environ.get("MOODLE_SYNC_AGENT_WORKERS") or 2)
worker_class = "sync"
# Served behind nginx (packaging/nginx.conf.in), which hands over only
# complete requests: moodle-sync-agent-web.service and scripts/demo bind a
# Unix socket with --bind unix:PATH. Only the owner may connect to it.
umask = 0o077
# gunicorn >= 25 would open a control socket in $HOME: none is wanted (older
# versions ignore the setting).
control_socket_disable = True
timeout = 60
graceful_timeout = 10
# The app is imported in each worker, after the fork: no SQLite connection
# or lock is ever shared between processes.
preload_app = False
# Logs go to stdout/stderr, that is to the journal under systemd.
accesslog = "-"
errorlog = "-"
loglevel = "info"
capture_output = True
proc_name = "moodle-sync-agent-web"
# No query strings in the access log: the request path only (%(U)s), and no
# referrer, which could carry one. The client's address is the one nginx puts
# in X-Forwarded-For (over the socket, the peer has no address of its own).
access_log_format = '%({x-forwarded-for}i)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(D)sus "%(a)s"'
