"""Liveness (checks the database) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from jit_hooks.server.context import CtxDep
from jit_hooks.server.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
async def healthz(ctx: CtxDep) -> dict:
    await ctx.run(lambda conn: conn.execute(text("SELECT 1 FROM alembic_version")).all())
    return {"status": "ok"}


@router.get("/metrics", response_class=Response)
def metrics(ctx: CtxDep) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
