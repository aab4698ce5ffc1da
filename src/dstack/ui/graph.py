"""A run's jobs as a layered SVG: a job's layer is one more than its deepest dependency;
edges go from each dependency to the job."""

from __future__ import annotations

from dstack.models.job import Job
from dstack.ui.html import esc, seg

_W, _H, _GAP_X, _GAP_Y = 180, 54, 60, 18


def layers(jobs: list[Job]) -> dict[int, int]:
    depth: dict[int, int] = {}
    for job in sorted(jobs, key=lambda j: j.index):
        depth[job.index] = 1 + max((depth.get(d, 0) for d in job.deps), default=-1)
    return depth


def svg(run_name: str, jobs: list[Job]) -> str:
    depth = layers(jobs)
    rows: dict[int, int] = {}
    place: dict[int, tuple[int, int]] = {}
    for job in sorted(jobs, key=lambda j: j.index):
        col = depth[job.index]
        row = rows.get(col, 0)
        rows[col] = row + 1
        place[job.index] = (10 + col * (_W + _GAP_X), 10 + row * (_H + _GAP_Y))
    width = 20 + (max(depth.values(), default=0) + 1) * (_W + _GAP_X) - _GAP_X
    height = 20 + max(rows.values(), default=1) * (_H + _GAP_Y) - _GAP_Y
    parts = [
        f'<svg class="graph" role="img" aria-label="Jobs of run {esc(run_name)} and their '
        f'dependencies" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" class="edge-head"/>'
        "</marker></defs>",
    ]
    for job in jobs:
        x2, y2 = place[job.index]
        for dep in job.deps:
            if dep not in place:
                continue
            x1, y1 = place[dep]
            parts.append(
                f'<line class="edge" x1="{x1 + _W}" y1="{y1 + _H // 2}" x2="{x2}" '
                f'y2="{y2 + _H // 2}" marker-end="url(#arrow)"/>'
            )
    for job in jobs:
        x, y = place[job.index]
        label = job.workflow_name or f"job {job.index}"
        sub = job.status.value
        if job.reused_from:
            sub = f"cached from {job.reused_from}"
        href = f"/runs/{seg(run_name)}/jobs/{job.index}"
        parts.append(
            f'<a href="{esc(href)}"><g class="node s-{esc(job.status.value)}'
            f'{" cached" if job.reused_from else ""}">'
            f'<rect x="{x}" y="{y}" width="{_W}" height="{_H}" rx="6"/>'
            f'<text x="{x + 10}" y="{y + 22}" class="title">{esc(label[:22])}</text>'
            f'<text x="{x + 10}" y="{y + 42}" class="sub">{esc(sub[:28])}</text></g></a>'
        )
    parts.append("</svg>")
    return "".join(parts)
