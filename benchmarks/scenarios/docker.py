"""S8: `dstack run` of a one-step workflow in a local image, against `docker run --rm`."""

from __future__ import annotations

from benchmarks.harness import Budget, Row, median, quiet, sample, skipped
from benchmarks.scenarios.base import Bench
from benchmarks.workspace import TEST_IMAGE, BenchError


def docker_run(bench: Bench) -> list[Row]:
    why = _unavailable()
    if why:
        return [skipped("S8", "dstack run (docker)", why)]
    with bench.workspace(executor="docker") as ws:
        ws.workflows(
            f"""
            workflows:
              - name: hello
                provider: bash
                image: {TEST_IMAGE}
                commands: [echo hello]
            """
        )

        def run() -> None:
            if "hello" not in ws.dstack("run", "hello"):
                raise BenchError("dstack run hello (docker) did not print hello")

        ours = sample(run, runs=bench.sizes.runs)
    command = ["docker", "run", "--rm", TEST_IMAGE, "sh", "-c", "echo hello"]
    base = sample(lambda: quiet(command), runs=bench.sizes.runs)
    return [
        Row(
            "S8",
            "dstack run (docker)",
            ours,
            baseline=median(base),
            baseline_name="docker run --rm",
            budget=Budget(0.3, over_baseline=True),
        ),
    ]


def _unavailable() -> str:
    """Why S8 cannot run here, or "" when it can."""
    import subprocess

    try:
        quiet(["docker", "info"], timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "no Docker engine answers (start dockerd)"
    try:
        quiet(["docker", "image", "inspect", TEST_IMAGE], timeout=10)
    except (OSError, subprocess.SubprocessError):
        return f"image {TEST_IMAGE} missing (run scripts/build-test-images.sh)"
    return ""
