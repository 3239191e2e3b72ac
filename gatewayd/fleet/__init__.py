"""Fleets of model servers: active health checks (:mod:`.health_checks`) and the
upstream GETs they make (:mod:`.probe`)."""
