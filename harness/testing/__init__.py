"""Shipped for users' own drivers and tests: the driver conformance suite and a throwaway sshd."""
