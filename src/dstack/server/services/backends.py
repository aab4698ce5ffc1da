"""Cloud backends of a server: added by admins (the credentials are checked with a real
call first, then stored encrypted with the secrets key), listed without credentials, deleted
once none of their instances is alive; each one's `Compute`, built once per process
(`configured`, what provisioning uses); and the offers of them all.

A `Compute` blocks (cloud SDKs do): every call to one runs in a worker thread. Whatever a
cloud answers is translated into `BackendError`s whose text never holds a secret key.
"""

from __future__ import annotations

import asyncio
import json
import logging

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dstack.backends.base import BackendAuthError, Compute
from dstack.backends.offers import select as select_offers
from dstack.errors import BackendError, ConflictError, DstackError, NotFoundError
from dstack.models.backends import BackendConfig, BackendCredentials, InstanceOffer
from dstack.models.backends_api import (
    OFFERS_MAX,
    AddBackendRequest,
    BackendInfo,
    BackendOffers,
    OffersResponse,
)
from dstack.models.resources import ResourcesSpec
from dstack.server.context import BuiltBackend, ServerContext
from dstack.server.db.models import BackendRow, InstanceRow
from dstack.server.errors import InvalidRequestError
from dstack.server.services.secrets import cipher

logger = logging.getLogger(__name__)

TERMINATED = "terminated"
"""`InstanceRow.state` of an instance that is gone; every other state is alive."""
_LIVE = InstanceRow.state != TERMINATED


# --- add, list, delete (admins) --------------------------------------------------------------


async def add_backend(
    ctx: ServerContext, *, request: AddBackendRequest, created_by: str
) -> BackendInfo:
    """Check the credentials with the cloud, then store the backend. `ConflictError` if the
    name is taken; `InvalidRequestError` (400) if the cloud refuses the credentials and
    `BackendError` (502) if it cannot be asked: nothing is stored then."""
    config, credentials = request.config, request.credentials
    async with ctx.read() as session:
        if await session.get(BackendRow, config.name) is not None:
            raise _exists(config.name)
    compute = await _checked_compute(ctx, config, credentials)
    try:
        row = await _store(ctx, config, credentials, created_by=created_by)
    except BaseException:
        _close(config.name, compute)
        raise
    _replace(ctx, BuiltBackend(_fingerprint(row), config, compute))
    return _info(ctx, row, instances=0)


async def list_backends(ctx: ServerContext) -> list[BackendInfo]:
    """Every backend by name, with its instances alive; never its credentials."""
    async with ctx.read() as session:
        rows = (await session.scalars(select(BackendRow).order_by(BackendRow.name))).all()
        query = select(InstanceRow.backend, func.count()).where(_LIVE)
        alive = await session.execute(query.group_by(InstanceRow.backend))
        counts: dict[str, int] = dict(alive.all())
    return [_info(ctx, row, instances=counts.get(row.name, 0)) for row in rows]


async def delete_backend(ctx: ServerContext, *, name: str) -> None:
    """Forget backend `name`. Refused (`ConflictError`) while one of its instances is alive:
    the server terminates them itself (runs stopped, idle timeout), and an instance of a
    forgotten backend would run, and cost, unseen. `NotFoundError` if there is none."""
    async with ctx.transaction() as session:
        row = await session.get(BackendRow, name)
        if row is None:
            raise NotFoundError(f"backend '{name}' not found", hint="see `dstack backends list`")
        alive = await session.scalar(
            select(func.count()).select_from(InstanceRow).where(InstanceRow.backend == name, _LIVE)
        )
        if alive:
            raise ConflictError(
                f"backend '{name}' still has {alive} instance(s) not terminated",
                hint="stop the runs that use them (`dstack stop`) and wait for idle instances "
                f"to be terminated (after {_idle(row)}), then delete it again",
            )
        await session.delete(row)
    _drop(ctx, name)


# --- the backends' computes (provisioning, offers) ------------------------------------------


async def configured(
    ctx: ServerContext, session: AsyncSession
) -> list[tuple[BackendConfig, Compute]]:
    """Every stored backend, by name, with its `Compute` (built once per process and reused
    while its row is unchanged). A backend whose `Compute` cannot be built (its credentials
    cannot be decrypted: the secret key changed) is left out, and logged once."""
    return [(b.config, b.compute) for b in await _built(ctx, session) if b.compute is not None]


async def close_all(ctx: ServerContext) -> None:
    """Close every `Compute` built so far (the server stops)."""
    built, ctx.computes = ctx.computes, {}
    for entry in built.values():
        if entry.compute is not None:
            await asyncio.to_thread(_close, entry.config.name, entry.compute)


async def _built(ctx: ServerContext, session: AsyncSession) -> list[BuiltBackend]:
    rows = (await session.scalars(select(BackendRow).order_by(BackendRow.name))).all()
    for name in set(ctx.computes) - {row.name for row in rows}:
        _drop(ctx, name)
    return [await _build(ctx, row) for row in rows]


async def _build(ctx: ServerContext, row: BackendRow) -> BuiltBackend:
    fingerprint = _fingerprint(row)
    cached = ctx.computes.get(row.name)
    if cached is not None and cached.fingerprint == fingerprint:
        return cached
    config = _config_of(row)
    credentials = BackendCredentials()
    try:
        credentials = _decrypt(ctx, row)
        compute: Compute | None = await asyncio.to_thread(ctx.compute_factory, config, credentials)
        entry = BuiltBackend(fingerprint, config, compute)
    except DstackError as exc:
        reason = _scrub(exc.message, credentials)
        logger.error("backend '%s' cannot be used: %s", row.name, reason)
        entry = BuiltBackend(fingerprint, config, None, error=reason)
    cached = ctx.computes.get(row.name)  # another request may have built it meanwhile
    if cached is not None and cached.fingerprint == fingerprint:
        if entry.compute is not None:
            _close(row.name, entry.compute)
        return cached
    _replace(ctx, entry)
    return entry


def _replace(ctx: ServerContext, entry: BuiltBackend) -> None:
    old = ctx.computes.get(entry.config.name)
    ctx.computes[entry.config.name] = entry
    if old is not None and old.compute is not None and old.compute is not entry.compute:
        _close(old.config.name, old.compute)


def _drop(ctx: ServerContext, name: str) -> None:
    old = ctx.computes.pop(name, None)
    if old is not None and old.compute is not None:
        _close(name, old.compute)


def _close(name: str, compute: Compute) -> None:
    try:
        compute.close()
    except Exception:  # a client that fails to close leaks at most a connection pool
        logger.warning("backend '%s': closing its client failed", name, exc_info=True)


# --- offers (any user) -----------------------------------------------------------------------


async def offers(
    ctx: ServerContext,
    request: ResourcesSpec,
    spot: bool | None = None,
    max_price: float | None = None,
    *,
    limit: int = OFFERS_MAX,
) -> OffersResponse:
    """The offers of every backend that fit `request` in the asked market under `max_price`
    and each backend's own price limit, cheapest first (at most `limit`). A backend that
    fails is reported in `backends` with its error; the others still answer."""
    async with ctx.read() as session:
        built = await _built(ctx, session)
    answers = await asyncio.gather(
        *(asyncio.to_thread(_offers_of, entry, request, spot, max_price) for entry in built)
    )
    found = select_offers([o for chosen, _ in answers for o in chosen], request, spot=spot)
    return OffersResponse(
        offers=found[:limit], total=len(found), backends=[status for _, status in answers]
    )


def _offers_of(
    entry: BuiltBackend, request: ResourcesSpec, spot: bool | None, max_price: float | None
) -> tuple[list[InstanceOffer], BackendOffers]:
    """One backend's fitting offers under both price caps, and how it answered (in a worker
    thread: a cloud's SDK blocks)."""
    config, compute = entry.config, entry.compute
    status = BackendOffers(name=config.name, type=config.type, region=config.region)
    if compute is None:
        return [], status.model_copy(update={"error": entry.error})
    status.prices_as_of = compute.prices_as_of
    try:
        found = compute.offers(request, spot=spot)
    except BackendError as exc:
        return [], status.model_copy(update={"error": exc.message})
    except Exception:  # a backend's bug must not fail the other backends' answer
        logger.exception("backend '%s': listing offers failed", config.name)
        return [], status.model_copy(update={"error": "listing offers failed (see server log)"})
    caps = [c for c in (config.limits.max_price, max_price) if c is not None]
    named = [o.model_copy(update={"backend": config.name}) for o in found]
    chosen = select_offers(named, request, spot=spot, max_price=min(caps, default=None))
    return chosen, status.model_copy(update={"offers": len(chosen)})


# --- helpers -----------------------------------------------------------------------------------


async def _checked_compute(
    ctx: ServerContext, config: BackendConfig, credentials: BackendCredentials
) -> Compute:
    """A new `Compute` whose credentials the cloud accepted (one real, read-only call)."""
    try:
        compute = await asyncio.to_thread(ctx.compute_factory, config, credentials)
    except Exception as exc:
        raise _refusal(config, credentials, exc) from None
    try:
        await asyncio.to_thread(compute.check)
    except Exception as exc:
        _close(config.name, compute)
        raise _refusal(config, credentials, exc) from None
    return compute


def _refusal(config: BackendConfig, credentials: BackendCredentials, exc: Exception) -> DstackError:
    """What the client is told when the check failed, with any secret cut out of the
    cloud's words (raised `from None`: the SDK's error is not logged with its chain)."""
    if isinstance(exc, BackendAuthError):
        return InvalidRequestError(
            _scrub(exc.message, credentials),
            hint="check the keys or the profile, and the IAM permissions (README.md, "
            '"Cloud backends"); nothing was stored',
        )
    if isinstance(exc, BackendError):
        reason = _scrub(exc.message, credentials)
        logger.warning("backend '%s' could not be checked: %s", config.name, reason)
        return BackendError(reason, hint=exc.hint or "check the region and endpoint URL")
    # A bug in a backend's module, not the cloud's answer (those are `BackendError`s): its
    # traceback, which holds code and messages but never the values of variables.
    logger.error("backend '%s': building or checking it failed", config.name, exc_info=exc)
    return BackendError(
        f"backend '{config.name}': checking the credentials failed ({type(exc).__name__})",
        hint="see the server's log; nothing was stored",
    )


def _scrub(text: str, credentials: BackendCredentials) -> str:
    secret = credentials.secret_access_key
    return text.replace(secret, "***") if secret else text


async def _store(
    ctx: ServerContext, config: BackendConfig, credentials: BackendCredentials, *, created_by: str
) -> BackendRow:
    token = cipher(ctx.settings).encrypt(credentials.model_dump_json().encode()).decode()
    async with ctx.transaction() as session:
        if await session.get(BackendRow, config.name) is not None:  # added while checking
            raise _exists(config.name)
        row = BackendRow(
            name=config.name,
            type=config.type.value,
            config=config.model_dump(mode="json", exclude={"name", "type"}),
            credentials=token,
            created_by=created_by,
            created_at=ctx.clock(),
        )
        session.add(row)
    return row


def _exists(name: str) -> ConflictError:
    return ConflictError(
        f"backend '{name}' already exists",
        hint=f"choose another name (--name), or delete it first: dstack backends delete {name}",
    )


def _config_of(row: BackendRow) -> BackendConfig:
    return BackendConfig.model_validate({**row.config, "name": row.name, "type": row.type})


def _decrypt(ctx: ServerContext, row: BackendRow) -> BackendCredentials:
    from cryptography.fernet import InvalidToken  # see `secrets.cipher`

    try:
        plain = cipher(ctx.settings).decrypt(row.credentials.encode())
    except InvalidToken:
        raise BackendError(
            f"backend '{row.name}': its credentials cannot be decrypted (the secret key changed)",
            hint=f"delete it and add it again: dstack backends delete {row.name}",
        ) from None
    return BackendCredentials.model_validate_json(plain)


def _fingerprint(row: BackendRow) -> str:
    """Changes with the row's settings and credentials (each encryption is new: a backend
    deleted and added again, even by another server on the same database, is rebuilt)."""
    return json.dumps([row.type, row.config, row.credentials], sort_keys=True)


def _auth(ctx: ServerContext, row: BackendRow) -> str:
    try:
        credentials = _decrypt(ctx, row)
    except BackendError:
        return "unreadable (the secret key changed)"
    if credentials.access_key_id is not None:
        return "access keys"
    if credentials.profile is not None:
        return f"profile {credentials.profile}"
    return "default"


def _info(ctx: ServerContext, row: BackendRow, *, instances: int) -> BackendInfo:
    return BackendInfo(
        config=_config_of(row),
        auth=_auth(ctx, row),
        instances=instances,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def _idle(row: BackendRow) -> str:
    seconds = _config_of(row).limits.idle_timeout
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
