"""Pure domain: models, plans, cohorts, rollout rules and the clock. No I/O lives here."""
