"""Approval service: FastAPI app, storage, policy, audit."""
