"""The control plane: FastAPI app, agent and admin APIs, background services."""
