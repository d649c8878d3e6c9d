"""Stand-ins for devices that cannot exist here (a phone, a rack of boards): they speak the real protocols."""
