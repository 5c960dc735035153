"""Reports of an evaluation: the markdown table, the effect-matrix heatmap and traversal grids
annotated with the factor each direction moves most."""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Sequence

import torch

from common.images import pyplot, save_figure
from common.io import file_sha256

# Columns of the table: (metric key, header, format, better). Absent metrics are left out.
COLUMNS: list[tuple[str, str, str, str]] = [
    ("rca", "RCA", "{:.3f}", "higher"),
    ("coverage", "coverage", "{}", "higher"),
    ("purity", "purity", "{:.3f}", "higher"),
    ("gap", "gap", "{:.3f}", "higher"),
    ("focus", "focus", "{:.3f}", "higher"),
    ("lap1", "Lap1", "{:.3f}", "lower"),
    ("l2", "L2", "{:.3f}", "lower"),
    ("lpips", "LPIPS", "{:.3f}", "lower"),
    ("d_score_edited", "D(edited)", "{:.2f}", "higher"),
    ("fid", "FID (regressor)", "{:.2f}", "lower"),
]


def one_line(text: str) -> str:
    """``text`` on one line: line breaks of any kind become spaces."""
    return " ".join(str(text).splitlines())


def markdown_text(text: str) -> str:
    """``text`` (a run name, a method name: anything read from a file) as the literal text of
    a markdown table cell: one line, ``\\`` and the cell separator ``|`` backslash-escaped,
    ``<``, ``>`` and ``&`` as HTML entities (no markup gets through)."""
    return html.escape(one_line(text).replace("\\", "\\\\").replace("|", "\\|"), quote=False)


def markdown_table(rows: Sequence[tuple[str, dict[str, Any]]], num_factors: int | None = None,
                   first: str = "directions") -> str:
    """``rows``: (label, metrics) pairs; coverage reads "c / F" when F is given; ``first``
    heads the label column."""
    present = [c for c in COLUMNS if any(c[0] in m for _, m in rows)]
    header = f"| {first} | " + " | ".join(h for _, h, _, _ in present) + " |"
    rule = "|---|" + "|".join("---" for _ in present) + "|"
    lines = [header, rule]
    for label, metrics in rows:
        cells = []
        for key, _, fmt, _ in present:
            value = metrics.get(key)
            if value is None:
                cells.append("")
            elif isinstance(value, float) and not math.isfinite(value):
                cells.append(str(value))  # nan, inf, -inf: as text, never as a formatted number
            elif key == "coverage" and num_factors:
                cells.append(f"{value} / {num_factors}")
            else:
                cells.append(fmt.format(value))
        lines.append(f"| {markdown_text(label)} | " + " | ".join(cells) + " |")
    legend = ", ".join(f"{h} {b}" for _, h, _, b in present)
    return "\n".join(lines) + f"\n\n(better: {legend})\n"


def effect_heatmap(matrix: Sequence[Sequence[float]], factors: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """The effect matrix as a heatmap PNG (directions x factors), each cell printed."""
    data = torch.as_tensor(matrix).float()
    k, f = data.shape
    fig, ax = pyplot().subplots(figsize=(1.0 + 0.9 * f, 1.0 + 0.35 * k), dpi=100)
    image = ax.imshow(data.numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(f), list(factors))
    ax.set_yticks(range(k), [str(i) for i in range(k)])
    ax.set_xlabel("factor")
    ax.set_ylabel("direction")
    ax.set_title(title or "change per unit step (units of the factor's range)", fontsize=9)
    top = float(data.max()) if data.numel() else 0.0
    for i in range(k):
        for j in range(f):
            ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="black" if data[i, j] > 0.6 * top else "white")
    fig.colorbar(image, ax=ax, fraction=0.05)
    return save_figure(fig, path)


def annotated_traversal(rows: Sequence[torch.Tensor], labels: Sequence[str], path: str | Path,
                        columns: int, label_width: int = 150) -> Path:
    """A grid PNG with one row of images (``columns`` x 3 x H x W in [-1, 1]) per label; the
    label (direction and the factor it moves most) is written left of its row."""
    import torchvision
    from PIL import Image, ImageDraw

    scale = 2  # small images are hard to see at their own size
    strips = []
    for images in rows:
        grid = torchvision.utils.make_grid(images.float().cpu().clamp(-1, 1) * 0.5 + 0.5,
                                           nrow=columns, padding=1, pad_value=0.5)
        strips.append(grid)
    height = strips[0].shape[1] * scale
    width = strips[0].shape[2] * scale
    canvas = Image.new("RGB", (label_width + width, height * len(strips)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (strip, label) in enumerate(zip(strips, labels)):
        array = (strip.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        tile = Image.fromarray(array).resize((width, height), Image.NEAREST)
        canvas.paste(tile, (label_width, i * height))
        draw.text((4, i * height + height // 2 - 6), label, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def report_describes(report: dict, directions_path: str | Path) -> bool:
    """Whether an evaluation report describes the directions file as it is now: a report that
    records the file's hash must match it (a run resumed past its evaluation writes new
    directions; the old report then describes the old ones). Reports written before the hash
    was recorded are taken as they are."""
    recorded = report.get("directions_sha256")
    return recorded is None or recorded == file_sha256(directions_path)


# RCA cannot tell two sets apart when both score near 1 within a few points of each other.
RCA_NEAR_ONE = 0.9
RCA_FEW_POINTS = 0.05


def rca_separation_note(rca: dict[str, float], label: str, num_directions: int,
                        latent_dim: int | None) -> str | None:
    """The report's note when RCA cannot separate the sets: the directions' RCA (``rca[label]``)
    and a baseline's both at least ``RCA_NEAR_ONE`` and within ``RCA_FEW_POINTS`` of each other,
    with the reason: K near the latent size (K >= d / 2: any K directions span most of the
    latent space, so a reconstructor tells nearly any set apart), or else the step. None when
    RCA separates them (or there is no baseline to compare)."""
    own = rca.get(label)
    if own is None or own < RCA_NEAR_ONE:
        return None
    close = [name for name, value in rca.items() if name != label and value is not None
             and value >= RCA_NEAR_ONE and abs(value - own) <= RCA_FEW_POINTS]
    if not close:
        return None
    scores = ", ".join(f"{name} {rca[name]:.3f}" for name in [label, *close])
    if latent_dim and 2 * num_directions >= latent_dim:
        why = (f"K = {num_directions} directions in a {latent_dim}-d latent space: any "
               f"{num_directions} directions there span {'all' if num_directions >= latent_dim else 'much'} "
               "of it, and a reconstructor tells almost any such set apart")
    else:
        why = ("at these shifts every direction, learned or not, changes the images in a way a "
               "reconstructor tells apart")
    return (f"RCA cannot separate these sets ({scores}: within {RCA_FEW_POINTS:.2f} of each "
            f"other and near 1): {why}. Compare them by coverage, purity, gap and focus, or "
            "evaluate fewer directions or smaller shifts (evaluation.settings.rca.shift_scale)")


def rca_training_note(trainings: dict[str, dict[str, Any]], patience: int, check_every: int,
                      min_delta: float) -> str | None:
    """One line on how long each fresh RCA reconstructor trained (``rca_training`` of the
    results computed now): the batches, which stopped early, the size they read."""
    if not trainings:
        return None
    parts = []
    for name, t in trainings.items():
        extras = (["stopped early"] if t["stopped_early"] else []) + (
            [f"validation accuracy {t['validation'][-1][1]:.3f}"] if t.get("validation") else [])
        parts.append(f"{name} {t['batches']} / {t['max_batches']} batches"
                     + (f" ({', '.join(extras)})" if extras else ""))
    first = next(iter(trainings.values()))
    rule = (f"each stops when its accuracy on held-out validation shifts gains less than "
            f"{min_delta:g} in {patience} check{'s' if patience != 1 else ''} of {check_every} "
            "batches" if patience else "no early stopping")
    return (f"RCA reconstructors trained by this evaluation: {'; '.join(parts)} ({rule}; images "
            f"read at {first['image_size']} px).")


def timing_note(seconds: dict[str, Any]) -> str:
    """The evaluation's time in all, and what it covered (the sets computed, the cached ones)."""
    computed, cached = seconds.get("computed", []), seconds.get("cached", [])
    parts = [f"effects, content and realism {seconds['effects']:g} s",
             f"RCA {seconds['rca']:g} s", f"reports {seconds['reports']:g} s"]
    sets = ", ".join(computed)
    return (f"{seconds['total']:g} s in all ({'; '.join(parts)}) for {sets}"
            + (f"; from the cache: {', '.join(cached)}" if cached else ""))
