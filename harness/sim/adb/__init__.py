"""The virtual Android phone: ADB wire protocol (proto), TCP server (server), toybox-like shell (shell),
sandboxed file system (fs), identity and /proc, /sys files (phone), real LiteRT timing (bench)."""
