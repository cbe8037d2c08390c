"""Registry services: refresh, alerts, sweep, import, worklist."""
