"""Provider names, for every layer that reads a workflow: `config` checks and maps names with
them, `providers/registry.py` maps them to implementations (and checks it has each)."""

from __future__ import annotations

PROVIDER_NAMES: tuple[str, ...] = (
    "bash",
    "python",
    "docker",
    "streamlit",
    "gradio",
    "fastapi",
    "lab",
    "notebook",
    "code",
    "torchrun",
)

# names the early docs used for the same providers; `config` maps them when it reads a workflow
ALIASES: dict[str, str] = {"jupyter": "notebook", "jupyterlab": "lab", "vscode": "code"}
