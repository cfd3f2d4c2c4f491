"""Sensors: what turns changes in the world (the sources file, repositories) into runs."""
