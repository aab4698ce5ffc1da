from __future__ import annotations

import pytest

from dstack.errors import ConfigError
from dstack.models.job import JobSpec
from dstack.models.resources import GpuRequest, ResourcesSpec
from dstack.providers.images import ImageSettings, resolve_image
from dstack.settings import EnvSettings


def spec(**fields: object) -> JobSpec:
    return JobSpec(provider="bash", **fields)


def test_default_image_uses_python_311_when_the_job_names_no_version() -> None:
    assert resolve_image(spec(), ImageSettings()) == "python:3.11-slim"


def test_default_image_follows_the_jobs_python_version() -> None:
    assert resolve_image(spec(python="3.9"), ImageSettings()) == "python:3.9-slim"


def test_the_workflows_own_image_wins() -> None:
    assert (
        resolve_image(spec(image="ubuntu:22.04", python="3.9"), ImageSettings()) == "ubuntu:22.04"
    )


def test_gpu_jobs_get_the_gpu_default() -> None:
    settings = ImageSettings(default_gpu_image="my/cuda:py{python}")
    gpu = ResourcesSpec(gpu=GpuRequest(count=1))
    assert resolve_image(spec(resources=gpu, python="3.10"), settings) == "my/cuda:py3.10"
    assert resolve_image(spec(python="3.10"), settings) == "python:3.10-slim"


def test_settings_come_from_the_environment_passed_in() -> None:
    env = EnvSettings.read({"DSTACK_DEFAULT_IMAGE": "local/python", "DSTACK_DEFAULT_GPU_IMAGE": ""})
    settings = ImageSettings(**env.images)
    assert resolve_image(spec(), settings) == "local/python"
    assert settings.default_gpu_image == ImageSettings().default_gpu_image


def test_a_template_with_an_unknown_placeholder_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"invalid default image template 'img:\{cuda\}'"):
        resolve_image(spec(), ImageSettings(default_image="img:{cuda}"))
