"""Configured cloud backends. (A minimal `configured` for provisioning; the backends part
adds adding, listing and deleting them.)"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.backends.base import Compute
from dstack.models.backends import BackendConfig, BackendCredentials
from dstack.server.context import ServerContext
from dstack.server.db.models import BackendRow
from dstack.server.services.secrets import cipher


async def configured(
    ctx: ServerContext, session: AsyncSession
) -> list[tuple[BackendConfig, Compute]]:
    """Every backend an admin added, by name, with its `Compute` (built by
    `ctx.compute_factory`; no API call is made)."""
    rows = (await session.scalars(select(BackendRow).order_by(BackendRow.name))).all()
    result = []
    for row in rows:
        config = BackendConfig.model_validate({**row.config, "name": row.name, "type": row.type})
        secret = cipher(ctx.settings).decrypt(row.credentials.encode()).decode()
        credentials = BackendCredentials.model_validate_json(secret)
        result.append((config, ctx.compute_factory(config, credentials)))
    return result
