"""What runs around a routed request: the stages, in order, and their runner."""
