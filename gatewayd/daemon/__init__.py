"""The daemon around the service: the supervisor and its workers, GC tuning."""
