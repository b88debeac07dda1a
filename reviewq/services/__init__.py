"""Writes that agents and reviewers cause, one topic a module: agent keys, intake, recovery, decisions."""
