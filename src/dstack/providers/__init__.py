"""Providers turn a workflow (and the run's arguments) into the jobs that run it.

`PROVIDERS` is the explicit registry; `plan_workflow` / `plan_provider` (in
`dstack.providers.plan`) build a whole run's jobs; `resolve_image` picks the image a job
runs in when its workflow names none.
"""

from __future__ import annotations

from dstack.providers.args import parse_dep, parse_provider_args, provider_usage
from dstack.providers.base import Provider, SubmissionContext
from dstack.providers.images import ImageSettings, resolve_image
from dstack.providers.registry import PROVIDERS, canonical_name, get_provider, job_specs

__all__ = [
    "PROVIDERS",
    "ImageSettings",
    "Provider",
    "SubmissionContext",
    "canonical_name",
    "get_provider",
    "job_specs",
    "parse_dep",
    "parse_provider_args",
    "provider_usage",
    "resolve_image",
]
