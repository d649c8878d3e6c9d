"""Stand-ins for hardware that cannot exist here (a phone), speaking the real protocols and output formats."""
