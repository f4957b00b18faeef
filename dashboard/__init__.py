"""The operator dashboard, served by the learner: FleetBoard (what is shown) and the FastAPI app."""
