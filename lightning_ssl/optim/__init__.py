"""Optimisers, schedules and the SAM step."""
