"""`python -m benchmarks --peers dvc,snakemake,metaflow`: S1-S5 through other pipeline tools.

Each peer is installed with pip into a virtualenv of its own in a temp folder (a peer whose
install fails, say the package index is unreachable, is skipped with a one-line note) and
runs the same work as dstack in projects of its own, with `HOME`, the XDG folders and every
tool's config and cache folders inside that temp folder. The samples are interleaved: one of
dstack, then one of each peer, then dstack again, so a change in the machine's load falls on
all of them alike. A peer's row carries dstack's median as its baseline: the ratio is
peer/dstack, and the budget is the goal that dstack be at least twice as fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import Action, Budget, Row, sample_in_turn, skipped
from benchmarks.scenarios.base import Bench, Sizes
from benchmarks.scenarios.runs import CHAIN, HELLO, _parallel_workflows
from benchmarks.scenarios.storage import _random_file, _random_files
from benchmarks.workspace import BenchError, Workspace, user_environ

# name -> what pip installs
KNOWN = {"dvc": "dvc", "snakemake": "snakemake", "metaflow": "metaflow"}
SCENARIOS = ("S1", "S2", "S3", "S4", "S5")
GOAL = Budget(2.0, at_least=True, times_baseline=True)


def parse(text: str) -> list[str]:
    """The peers named in `--peers` (comma-separated), in order, each once."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in KNOWN]
    if unknown or not names:
        what = f"unknown peer {', '.join(unknown)}" if unknown else "no peer named"
        raise ValueError(f"{what}; known: {', '.join(KNOWN)}")
    return list(dict.fromkeys(names))


@dataclass
class Work:
    """One tool's share of a row: `action` is timed, `setup` runs untimed before it."""

    action: Action
    setup: Action | None = None
    note: str = ""


Plan = Work | str
"""A tool's work for a row, or why it cannot do it."""


@dataclass(frozen=True)
class Data:
    """Inputs made once for every tool: S4's large file and S5's folder of small files."""

    root: Path
    small_files: int
    jobs: int

    @property
    def big(self) -> Path:
        return self.root / "big.bin"

    @property
    def files(self) -> Path:
        return self.root / "files"

    def refresh_files(self) -> None:
        _random_files(self.files, self.small_files)


def compare(
    bench: Bench, names: list[str], keys: list[str], broken: list[str]
) -> tuple[list[Row], list[str]]:
    """The rows of `keys` (of S1-S5) for dstack and each peer that installed; the notes of
    the peers skipped. A scenario that fails (any tool) is added to `broken`."""
    sizes = bench.sizes
    with tempfile.TemporaryDirectory(prefix="dstack-peers-", dir=bench.work_dir) as tmp:
        root = Path(tmp)
        installed = install_all(names, root)
        notes = [peer for peer in installed.values() if isinstance(peer, str)]
        peers = [peer for peer in installed.values() if isinstance(peer, Peer)]
        for note in notes:
            print(note, file=sys.stderr, flush=True)
        data = Data(root / "data", sizes.small_files, sizes.parallel_jobs)
        if "S4" in keys:
            _random_file(data.big, sizes.big_mib)
        rows: list[Row] = []
        with bench.workspace() as ws:
            ours = Dstack(ws, bench)
            titles = _titles(sizes)
            for key in keys:
                tools = ", ".join(["dstack", *(peer.name for peer in peers)])
                print(f"{key} ({tools}) ...", file=sys.stderr, flush=True)
                try:
                    plans = {"dstack": ours.plans(key, data)}
                    for peer in peers:
                        plans[peer.name] = peer.plans(key, data)
                    for row_id in plans["dstack"]:
                        each = {name: plan[row_id] for name, plan in plans.items()}
                        rows += _interleaved(row_id, titles[row_id], each, sizes.runs)
                except Exception:
                    broken.append(key)
                    print(
                        f"{key} could not be measured:\n{traceback.format_exc()}", file=sys.stderr
                    )
    return rows, notes


def _interleaved(row_id: str, title: str, plans: dict[str, Plan], runs: int) -> list[Row]:
    """One warm-up round, then `runs` rounds of one sample of each tool in turn."""
    works = {
        name: (plan.action, plan.setup) for name, plan in plans.items() if isinstance(plan, Work)
    }
    samples = sample_in_turn(works, runs=runs)
    dstack = Row(row_id, f"{title}: dstack", samples["dstack"])
    rows = [dstack]
    for name, plan in plans.items():
        if name == "dstack":
            continue
        if isinstance(plan, str):
            rows.append(skipped(row_id, f"{title}: {name}", plan))
            continue
        rows.append(
            Row(
                row_id,
                f"{title}: {name}",
                samples[name],
                baseline=dstack.median,
                baseline_name="dstack",
                budget=GOAL,
                note=plan.note,
            )
        )
    return rows


def _titles(sizes: Sizes) -> dict[str, str]:
    mib = sizes.big_mib
    big = f"{mib:,} MiB" if mib < 1024 else f"{mib // 1024} GiB"
    return {
        "S1": "one step, echo hello",
        "S2a": "chain A->B->C, forced",
        "S2b": "chain A->B->C, unchanged",
        "S3": f"{sizes.parallel_jobs} x sleep 0.2, 2 slots",
        "S4": f"{big} file stored",
        "S5": f"{sizes.small_files:,} x 1 KiB files stored",
    }


class Dstack:
    """dstack's side: the harness's warm workspace, the scenarios' own workflows."""

    def __init__(self, ws: Workspace, bench: Bench) -> None:
        self.ws = ws
        self.sizes = bench.sizes

    def plans(self, key: str, data: Data) -> dict[str, Plan]:
        ws = self.ws
        if key == "S1":
            ws.workflows(HELLO)
            return {"S1": Work(lambda: _expect(ws.dstack("run", "hello"), "hello"))}
        if key == "S2":
            ws.workflows(CHAIN)
            return {
                "S2a": Work(lambda: ws.dstack("run", "step-c", "--reload")),
                "S2b": Work(lambda: _expect("".join(ws.dstack_full("run", "step-c")), "reused")),
            }
        if key == "S3":
            cpu = max(1, (os.cpu_count() or 2) // 2)
            ws.workflows(_parallel_workflows(self.sizes.parallel_jobs, cpu))
            return {"S3": Work(lambda: ws.dstack("run", "all", "--reload"))}
        if key == "S4":
            ws.workflows(_bash_workflow("big", _big_command(data), "out"))
            return {"S4": Work(lambda: ws.dstack("run", "big", "--reload"))}
        ws.workflows(_bash_workflow("files", _files_command(data), "out"))
        return {"S5": Work(lambda: ws.dstack("run", "files", "--reload"), data.refresh_files)}


def _bash_workflow(name: str, command: str, artifact: str) -> str:
    return (
        f"workflows:\n  - name: {name}\n    provider: bash\n"
        f"    commands: [{_yaml_string(command)}]\n    artifacts: [{artifact}]\n"
    )


def _yaml_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _big_command(data: Data) -> str:
    """S4's step for the shell-driven tools: copy the prepared file, append a nonce."""
    return f"mkdir -p out && cp {data.big} out/big.bin && date +%s%N >> out/big.bin"


def _files_command(data: Data) -> str:
    return f"rm -rf out && mkdir -p out && cp -r {data.files} out/files"


def _expect(output: str, word: str) -> None:
    if word not in output:
        raise BenchError(f"expected {word!r} in the output:\n{output[-1000:]}")


def install_all(names: list[str], root: Path) -> dict[str, Peer | str]:
    """Each peer installed into `root/NAME/venv` (at once: pip mostly waits on I/O); a
    note for each that could not be."""
    print(f"installing {', '.join(names)} ...", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        done = pool.map(lambda name: install(name, root / name), names)
        return dict(zip(names, done, strict=True))


def install(name: str, root: Path) -> Peer | str:
    """`name` installed in a fresh virtualenv under `root`, or a one-line note saying it
    was skipped and why. pip runs with this user's environment (its configured index);
    the peer later runs without it."""
    venv = root / "venv"
    root.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        capture_output=True,
    )
    command = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    command += ["install", "--quiet", KNOWN[name]]
    try:
        proc = subprocess.run(
            command, env=user_environ(), capture_output=True, text=True, timeout=1200
        )
    except subprocess.TimeoutExpired:
        return f"{name} skipped: pip install {KNOWN[name]} took over 20 minutes"
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines
        why = errors[-1] if errors else f"exit {proc.returncode}"
        return f"{name} skipped: pip install {KNOWN[name]} failed: {why}"
    return PEERS[name](name, root, venv)


class Peer:
    """One peer tool in its venv; `plans` writes a fresh project per scenario."""

    def __init__(self, name: str, root: Path, venv: Path) -> None:
        self.name = name
        self.root = root
        self.venv = venv
        self.home = root / "home"
        self.home.mkdir()

    def environ(self) -> dict[str, str]:
        """A user's environment with everything a tool writes under `HOME` kept here."""
        env = {
            k: v for k, v in user_environ().items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))
        }
        home = str(self.home)
        env.update(
            HOME=home,
            XDG_CONFIG_HOME=f"{home}/.config",
            XDG_CACHE_HOME=f"{home}/.cache",
            XDG_DATA_HOME=f"{home}/.local/share",
            XDG_STATE_HOME=f"{home}/.local/state",
            PATH=f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            USER="bench",
            USERNAME="bench",
            GIT_AUTHOR_NAME="bench",
            GIT_AUTHOR_EMAIL="bench@example.com",
            GIT_COMMITTER_NAME="bench",
            GIT_COMMITTER_EMAIL="bench@example.com",
            **self.tool_environ(),
        )
        return env

    def tool_environ(self) -> dict[str, str]:
        return {}

    def project(self, key: str) -> Path:
        path = self.root / key
        path.mkdir()
        return path

    def run(self, *args: str, cwd: Path) -> str:
        """A command of this peer to its end; stdout and stderr together. A non-zero exit
        is a `BenchError`."""
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=self.environ(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(args)} exited {proc.returncode}: {out[-2000:]}")
        return out

    def plans(self, key: str, data: Data) -> dict[str, Plan]:
        raise NotImplementedError


class Dvc(Peer):
    """dvc.yaml stages run by `dvc repro` in a git repository; outputs are `outs` (hashed and
    copied into `.dvc/cache`, dvc's default)."""

    def tool_environ(self) -> dict[str, str]:
        return {"DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(self.home / "dvc-site")}

    def project(self, key: str) -> Path:
        path = super().project(key)
        self.run("git", "init", "-q", cwd=path)
        self.run("dvc", "init", "-q", cwd=path)
        return path

    def plans(self, key: str, data: Data) -> dict[str, Plan]:
        path = self.project(key)
        stages: dict[str, dict[str, object]]
        if key == "S1":
            stages = {"hello": {"cmd": "echo hello"}}
            self._stages(path, stages)
            return {"S1": Work(lambda: _expect(self.repro("-f", cwd=path), "hello"))}
        if key == "S2":
            stages = {
                "a": {
                    "cmd": "mkdir -p a && head -c 1000000 /dev/urandom > a/data.bin",
                    "outs": ["a"],
                },
                "b": {
                    "cmd": "mkdir -p b && head -c 1000000 a/data.bin > b/data.bin",
                    "deps": ["a"],
                    "outs": ["b"],
                },
                "c": {
                    "cmd": "mkdir -p c && head -c 1000000 b/data.bin > c/data.bin",
                    "deps": ["b"],
                    "outs": ["c"],
                },
            }
            self._stages(path, stages)
            return {
                "S2a": Work(lambda: self.repro("-f", cwd=path)),
                "S2b": Work(lambda: _expect(self.repro(cwd=path), "didn't change")),
            }
        if key == "S3":
            count = data.jobs
            stages = {f"sleep-{i}": {"cmd": "sleep 0.2"} for i in range(count)}
            self._stages(path, stages)
            note = "serial: dvc repro runs one stage at a time (it has no parallel jobs)"
            return {"S3": Work(lambda: self.repro("-f", cwd=path), note=note)}
        if key == "S4":
            self._stages(path, {"big": {"cmd": _big_command(data), "outs": ["out/big.bin"]}})
            return {"S4": Work(lambda: self.repro("-f", cwd=path))}
        self._stages(path, {"files": {"cmd": _files_command(data), "outs": ["out/files"]}})
        return {"S5": Work(lambda: self.repro("-f", cwd=path), data.refresh_files)}

    def repro(self, *args: str, cwd: Path) -> str:
        return self.run("dvc", "repro", *args, cwd=cwd)

    def _stages(self, path: Path, stages: dict[str, dict[str, object]]) -> None:
        # JSON is YAML: dvc.yaml written without a YAML library.
        (path / "dvc.yaml").write_text(json.dumps({"stages": stages}, indent=2))


class Snakemake(Peer):
    """Snakefile rules run by `snakemake` (`--forceall` where dstack's run is `--reload`);
    outputs are `output` files and `directory()` folders, left in place (snakemake stores no
    copy: its metadata records the job)."""

    def plans(self, key: str, data: Data) -> dict[str, Plan]:
        path = self.project(key)
        if key == "S1":
            self._snakefile(path, 'rule hello:\n    shell: "echo hello"\n')
            return {"S1": Work(lambda: _expect(self.snakemake(path, "--forceall"), "hello"))}
        if key == "S2":
            self._snakefile(path, SNAKE_CHAIN)
            return {
                "S2a": Work(lambda: self.snakemake(path, "--forceall")),
                "S2b": Work(lambda: _expect(self.snakemake(path), "Nothing to be done")),
            }
        if key == "S3":
            self._snakefile(path, SNAKE_SLEEPS.format(count=data.jobs))
            return {"S3": Work(lambda: self.snakemake(path, "--forceall", cores=2))}
        if key == "S4":
            rule = f'rule big:\n    output: "out/big.bin"\n    shell: "{_big_command(data)}"\n'
            self._snakefile(path, rule)
            return {"S4": Work(lambda: self.snakemake(path, "--forceall"))}
        rule = (
            'rule files:\n    output: directory("out/files")\n'
            f'    shell: "{_files_command(data)}"\n'
        )
        self._snakefile(path, rule)
        return {"S5": Work(lambda: self.snakemake(path, "--forceall"), data.refresh_files)}

    def snakemake(self, path: Path, *args: str, cores: int = 1) -> str:
        return self.run("snakemake", "--cores", str(cores), *args, cwd=path)

    def _snakefile(self, path: Path, text: str) -> None:
        (path / "Snakefile").write_text(text)


SNAKE_CHAIN = """
rule all:
    input: "c/data.bin"

rule a:
    output: "a/data.bin"
    shell: "head -c 1000000 /dev/urandom > {output}"

rule b:
    input: "a/data.bin"
    output: "b/data.bin"
    shell: "head -c 1000000 {input} > {output}"

rule c:
    input: "b/data.bin"
    output: "c/data.bin"
    shell: "head -c 1000000 {input} > {output}"
"""

SNAKE_SLEEPS = """
rule all:
    input: expand("s/{{i}}", i=range({count}))

rule sleep:
    output: "s/{{i}}"
    shell: "sleep 0.2 && touch {{output}}"
"""


class Metaflow(Peer):
    """Flows run by `python flow.py run` on the local datastore and metadata; a step's
    output is an artifact (`self.x = ...`: pickled and stored by content). Every flow has
    the `start` and `end` steps metaflow requires."""

    def tool_environ(self) -> dict[str, str]:
        return {
            "METAFLOW_HOME": str(self.home / ".metaflowconfig"),
            "METAFLOW_DEFAULT_DATASTORE": "local",
            "METAFLOW_DEFAULT_METADATA": "local",
            "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(self.root),
        }

    def plans(self, key: str, data: Data) -> dict[str, Plan]:
        path = self.project(key)
        if key == "S1":
            self._flow(path, FLOW_HELLO)
            return {"S1": Work(lambda: _expect(self.flow(path), "hello"))}
        if key == "S2":
            self._flow(path, FLOW_CHAIN)
            why = "no step caching: every run executes every step (S2a is that run)"
            return {"S2a": Work(lambda: self.flow(path)), "S2b": why}
        if key == "S3":
            self._flow(path, FLOW_SLEEPS.replace("COUNT", str(data.jobs)))
            note = "foreach with --max-workers 2"
            return {"S3": Work(lambda: self.flow(path, "--max-workers", "2"), note=note)}
        if key == "S4":
            self._flow(path, FLOW_BIG.replace("SOURCE", repr(str(data.big))))
            return {"S4": Work(lambda: self.flow(path), note="the file's bytes as an artifact")}
        self._flow(path, FLOW_FILES.replace("SOURCE", repr(str(data.files))))
        note = "a dict of path -> bytes as one artifact"
        return {"S5": Work(lambda: self.flow(path), data.refresh_files, note=note)}

    def flow(self, path: Path, *args: str) -> str:
        python = str(self.venv / "bin" / "python")
        return self.run(python, "flow.py", "--no-pylint", "--quiet", "run", *args, cwd=path)

    def _flow(self, path: Path, body: str) -> None:
        text = FLOW_HEAD + body + FLOW_END
        (path / "flow.py").write_text(text)


FLOW_HEAD = """
import os
import time

from metaflow import FlowSpec, step


class Bench(FlowSpec):
"""

FLOW_END = """
    @step
    def end(self):
        pass


if __name__ == "__main__":
    Bench()
"""

FLOW_HELLO = """
    @step
    def start(self):
        print("hello")
        self.next(self.end)
"""

FLOW_CHAIN = """
    @step
    def start(self):  # A
        self.data = os.urandom(1_000_000)
        self.next(self.b)

    @step
    def b(self):
        self.data = self.data[:1_000_000]
        self.next(self.c)

    @step
    def c(self):
        self.data = self.data[:1_000_000]
        self.next(self.end)
"""

FLOW_SLEEPS = """
    @step
    def start(self):
        self.items = list(range(COUNT))
        self.next(self.sleep, foreach="items")

    @step
    def sleep(self):
        time.sleep(0.2)
        self.next(self.join)

    @step
    def join(self, inputs):
        self.next(self.end)
"""

FLOW_BIG = """
    @step
    def start(self):
        with open(SOURCE, "rb") as source:
            self.big = source.read() + str(time.time_ns()).encode()
        self.next(self.end)
"""

FLOW_FILES = """
    @step
    def start(self):
        self.files = {}
        for folder, _, names in os.walk(SOURCE):
            for name in names:
                with open(os.path.join(folder, name), "rb") as source:
                    self.files[os.path.relpath(source.name, SOURCE)] = source.read()
        self.next(self.end)
"""

PEERS: dict[str, type[Peer]] = {"dvc": Dvc, "snakemake": Snakemake, "metaflow": Metaflow}
