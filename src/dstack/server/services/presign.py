"""Presigned URLs: runners and users move blob bytes straight to and from object storage."""

from __future__ import annotations

import anyio

from dstack.server.context import ServerContext
from dstack.server.errors import InvalidRequestError
from dstack.server.services.artifacts import touch_blobs
from dstack.storage.base import check_digest


async def presign(ctx: ServerContext, *, digests: list[str], method: str) -> dict[str, str]:
    """digest → URL for `GET` or `PUT`, valid for `settings.presign_url_seconds`.

    Only a store that can sign (S3) answers; the local store refuses with a hint to use
    `/api/blobs`. Digests about to be uploaded are touched, so garbage collection spares
    them until their manifest arrives.
    """
    method = method.upper()
    if method not in ("GET", "PUT"):
        raise InvalidRequestError(f"cannot presign '{method}'", hint="use GET or PUT")
    unique = [check_digest(d) for d in dict.fromkeys(digests)]
    sign = getattr(ctx.blobs, "presign", None)
    if sign is None:
        raise InvalidRequestError(
            "this server keeps blobs on its own disk and cannot presign URLs",
            hint="transfer blobs through /api/blobs",
        )
    if method == "PUT" and unique:
        await touch_blobs(ctx, unique)

    lifetime = round(ctx.settings.presign_url_seconds)

    def sign_all() -> dict[str, str]:
        return {d: str(sign(d, method, expires_in=lifetime)) for d in unique}

    # Signing is local computation, but boto3 may look up credentials on first use.
    return await anyio.to_thread.run_sync(sign_all)
