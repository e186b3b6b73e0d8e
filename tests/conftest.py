"""Shared test settings. The machines are shared and noisy: hypothesis must judge
properties, not speed, so its per-example deadline and slowness checks are off."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "touchstream",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("touchstream")
