"""Rapport's built-in plugins, each registered through the rapport.plugins entry points."""
