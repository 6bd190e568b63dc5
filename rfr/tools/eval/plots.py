"""PNG plots of an evaluation report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


DPI = 110


def _figure(ncols: int = 1) -> tuple[Figure, list[Axes]]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4 * ncols, 4.8), dpi=DPI, layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _det(report: dict[str, Any], path: Path) -> None:
    fig, (ax,) = _figure()
    for name, cond in report["conditions"].items():
        pts = [(x, y) for x, y in zip(cond["det"]["fpir"], cond["det"]["fnir"], strict=True) if x and y]
        if pts:
            line = ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)[0]
            for cal in cond["calibration"]:
                ev = cal["evaluation"]
                if ev["fpir"] and ev["fnir"]:
                    ax.plot([ev["fpir"]], [ev["fnir"]], "o", color=line.get_color(), markersize=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FPIR (non-mated searches with a candidate above threshold)")
    ax.set_ylabel("FNIR (mated searches without the mate at rank 1 above threshold)")
    ax.set_title("DET (dots: calibrated thresholds on the evaluation half)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.savefig(path)


def _cmc(report: dict[str, Any], path: Path) -> None:
    fig, (ax,) = _figure()
    for name, cond in report["conditions"].items():
        ranks = list(range(1, len(cond["cmc"]) + 1))
        ax.plot(ranks, cond["cmc"], marker="o", label=name)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate")
    ax.set_ylim(0, 1)
    ax.set_title("CMC: mated probes with the mate within rank k")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.savefig(path)


def _bin_label(b: dict[str, Any]) -> str:
    lo = "" if b["lo"] is None else f"{b['lo']:g}"
    hi = "" if b["hi"] is None else f"{b['hi']:g}"
    return f"{lo}-{hi}" if lo and hi else (f"<{hi}" if hi else f">={lo}")


def _quality(report: dict[str, Any], path: Path) -> None:
    fig, axes = _figure(2)
    names = list(report["conditions"])
    width = 0.8 / max(1, len(names))
    panels = ((axes[0], "by_face_px", "face width (px)"), (axes[1], "by_sharpness", "sharpness (var. of Laplacian)"))
    for ax, key, title in panels:
        labels: list[str] = []
        for k, name in enumerate(names):
            bins = [b for b in report["conditions"][name]["quality"][key]]
            labels = labels or [_bin_label(b) for b in bins]
            xs = [i + k * width for i in range(len(bins))]
            ax.bar(xs, [b["rate"] or 0.0 for b in bins], width, label=name)
            for x, b in zip(xs, bins, strict=True):
                if b["n"]:
                    ax.text(x, (b["rate"] or 0.0) + 0.01, str(b["n"]), ha="center", fontsize=7)
        ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(labels))], labels, rotation=30)
        ax.set_ylim(0, 1.08)
        ax.set_xlabel(title)
        ax.set_ylabel("rank-1 rate, gate off (numbers: probes)")
        ax.legend(fontsize=8)
    fig.savefig(path)


def _scores(report: dict[str, Any], path: Path) -> None:
    names = list(report["conditions"])
    fig, axes = _figure(len(names))
    threshold = report["recommended_threshold"].get("threshold")
    for ax, name in zip(axes, names, strict=True):
        hist = report["conditions"][name]["score_histogram"]
        edges = hist["edges"]
        for key, colour in (("mated", "tab:green"), ("nonmated", "tab:red")):
            counts = hist[key]
            total = max(1, sum(counts))
            ax.stairs([c / total for c in counts], edges, label=f"{key} ({total})", color=colour, fill=True, alpha=0.4)
        if threshold is not None:
            ax.axvline(threshold, color="k", linestyle="--", label=f"ship threshold {threshold:.3f}")
        ax.set_xlim(-0.3, 1.0)
        ax.set_title(f"{name}: mate score vs best non-mated score")
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=8)
    fig.savefig(path)


def write_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    paths = []
    for name, draw in (("det.png", _det), ("cmc.png", _cmc), ("quality.png", _quality), ("scores.png", _scores)):
        path = out_dir / name
        draw(report, path)
        paths.append(path)
    return paths
