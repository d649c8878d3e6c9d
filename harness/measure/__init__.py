"""Measurement method: statistics, stopping rules, schedules, sentinels and gating (driver-independent)."""
