"""Socket-level helpers: writes sent at once, systemd's notify socket."""
