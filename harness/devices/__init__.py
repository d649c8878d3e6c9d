"""Device profiles, drivers and the device simulator."""
