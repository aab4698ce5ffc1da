"""boto3's errors in the project's words: capacity → `NoCapacityError`, refused credentials
→ `BackendAuthError`, anything else → `BackendError`, each naming the backend and action."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from dstack.backends.base import BackendAuthError, NoCapacityError
from dstack.errors import BackendError

# The cloud has no capacity (or no quota) for this offer now: try the next one.
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "SpotMaxPriceTooLow",
        "MaxSpotInstanceCountExceeded",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "Unsupported",  # the type is not offered in this zone (capacity-like)
    }
)
AUTH_CODES = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "ExpiredToken",
        "RequestExpired",
    }
)
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound"})


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def translate(exc: Exception, backend: str, action: str) -> BackendError:
    """The project's error for what boto3 raised during `action` (e.g. "create g5.xlarge")."""
    where = f"backend '{backend}' (aws): {action}"
    if isinstance(exc, ClientError):
        return _client_error(exc, where)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | ProfileNotFound):
        return BackendAuthError(
            f"{where}: {exc}",
            hint="give --access-key-id and --secret-access-key, or --profile of the "
            "server's AWS configuration",
        )
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return BackendError(
            f"{where}: cannot reach EC2 ({exc})",
            hint="check the region, --endpoint-url and the server's network",
        )
    if isinstance(exc, BotoCoreError):
        return BackendError(f"{where}: {exc}")
    return BackendError(f"{where}: {type(exc).__name__}: {exc}")


def _client_error(exc: ClientError, where: str) -> BackendError:
    code = error_code(exc)
    message = str(exc.response.get("Error", {}).get("Message", "")) or code
    text = f"{where}: {code}: {message}"
    if code in CAPACITY_CODES:
        return NoCapacityError(text)
    if code in AUTH_CODES:
        return BackendAuthError(
            text, hint="check the backend's credentials and its IAM policy (see the README)"
        )
    return BackendError(text)
