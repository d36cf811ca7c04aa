"""WSGI entry point for production servers: ``rapport serve --production`` (gunicorn with
core/gunicorn_conf.py) or any WSGI server given ``core.wsgi:app``."""

import gc

from core.app import create_app
from core.logs import configure_logging

configure_logging()
app = create_app()
# The app's long-lived objects (schema, type maps, plugin manager) never become garbage:
# keep the collector from rescanning them during requests (bench/RESULTS.md: p90 69 -> 23 ms).
# Under gunicorn's preload this runs in the master; core/gunicorn_conf.py freezes again
# right before each fork so what gunicorn allocated since is shared too.
gc.freeze()
