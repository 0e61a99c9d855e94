"""Shared machinery: configs, the recipe registry, run directories, reports and figures."""
