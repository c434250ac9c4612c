"""The reconciler step: (rollout, observations, now) -> actions. Pure; the server and the
simulator both drive it."""
