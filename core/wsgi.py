"""WSGI entry point for production servers: ``gunicorn 'core.wsgi:app'``."""

import gc

from core.app import create_app

app = create_app()
# The app's long-lived objects (schema, type maps, plugin manager) never become garbage:
# keep the collector from rescanning them during requests (bench/RESULTS.md: p90 69 -> 23 ms).
gc.freeze()
