"""The metering domain: meters, events, windows and aggregation. Pure Python, no I/O."""
