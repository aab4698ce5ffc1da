from __future__ import annotations

from fastapi import APIRouter

from dstack import __version__

router = APIRouter()


@router.get("/api/health")
async def health() -> dict[str, str]:
    return {"version": __version__}
