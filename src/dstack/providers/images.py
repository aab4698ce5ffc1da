"""Which container image a job runs in when its workflow names none.

The defaults are settings, not constants, so a team (or a test run without a registry) can
point them at its own images: `DSTACK_DEFAULT_IMAGE` and `DSTACK_DEFAULT_GPU_IMAGE`, read by
`dstack.settings.EnvSettings` (its `images`, the fields set: `ImageSettings(**env.images)`).
"""

from __future__ import annotations

from pydantic import Field

from dstack.errors import ConfigError
from dstack.models.common import Model
from dstack.models.job import JobSpec

DEFAULT_PYTHON = "3.11"


class ImageSettings(Model):
    """Default images; `{python}` in a template is replaced by the job's Python version.

    The GPU default is a plain Python image too: the NVIDIA container runtime mounts the driver
    into any image, and the frameworks people train with (PyTorch, JAX, TensorFlow wheels) ship
    their own CUDA runtime. A CUDA base image (`nvidia/cuda:...`) has no Python or pip, so the
    `bash` and `python` providers would fail in it; set `DSTACK_DEFAULT_GPU_IMAGE` to an image
    that has both when the CUDA toolkit itself is needed.
    """

    default_image: str = Field(
        "python:{python}-slim", description="Image of jobs that ask for no GPU."
    )
    default_gpu_image: str = Field(
        "python:{python}-slim", description="Image of jobs that ask for one or more GPUs."
    )


def resolve_image(spec: JobSpec, settings: ImageSettings) -> str:
    """The image `spec` runs in: its own, else the (GPU) default for its Python version.

    Python defaults to 3.11. Raises `ConfigError` when a template has a placeholder other
    than `{python}`.
    """
    if spec.image:
        return spec.image
    template = settings.default_gpu_image if spec.resources.gpu_count else settings.default_image
    try:
        return template.format(python=spec.python or DEFAULT_PYTHON)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"invalid default image template '{template}'",
            hint="the only placeholder allowed is {python}, e.g. python:{python}-slim",
        ) from exc


def is_default_image(spec: JobSpec) -> bool:
    """True when the runner picks the image (the workflow named none)."""
    return spec.image is None
