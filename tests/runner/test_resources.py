from __future__ import annotations

from pathlib import Path

from dstack.runner.resources import detect_gpus, detect_resources, parse_nvidia_smi


def _fake_nvidia_smi(tmp_path: Path, output: str, code: int = 0) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}EOF\nexit {code}\n")
    script.chmod(0o755)
    return str(bin_dir)


def test_gpus_come_from_nvidia_smi(tmp_path: Path) -> None:
    path = _fake_nvidia_smi(
        tmp_path, "0, NVIDIA A100-SXM4-40GB, 40960\n1, NVIDIA A100-SXM4-40GB, 40960\n"
    )
    gpus = detect_gpus(path=path)
    assert [(g.index, g.name, g.memory_mib) for g in gpus] == [
        (0, "NVIDIA A100-SXM4-40GB", 40960),
        (1, "NVIDIA A100-SXM4-40GB", 40960),
    ]


def test_no_nvidia_smi_means_no_gpus(tmp_path: Path) -> None:
    assert detect_gpus(path=str(tmp_path)) == []


def test_failing_nvidia_smi_means_no_gpus(tmp_path: Path) -> None:
    path = _fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed: no driver\n", code=9)
    assert detect_gpus(path=path) == []


def test_odd_lines_are_skipped_and_commas_in_names_kept() -> None:
    output = "garbage\n\n0, Tesla T4, 15360\n1, GPU, with comma, 8192\nx, broken, 1\n"
    gpus = parse_nvidia_smi(output)
    assert [(g.index, g.name) for g in gpus] == [(0, "Tesla T4"), (1, "GPU, with comma")]


def test_host_resources_are_measured(tmp_path: Path) -> None:
    path = _fake_nvidia_smi(tmp_path, "0, NVIDIA A10G, 23028\n")
    resources = detect_resources(tmp_path / "not-yet-created", path=path)
    assert resources.cpus >= 1
    assert resources.memory_mib > 0
    assert resources.disk_mib > 0
    assert resources.describe().endswith("1xNVIDIA A10G")
