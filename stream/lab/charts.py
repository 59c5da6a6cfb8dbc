"""PNG charts for the bench and eval reports (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and none is touched
    import matplotlib.pyplot as plt

    return plt


def _label(row: dict) -> str:
    return f"{row['model']} · {row['backend']} {row['precision']} · b{row['batch']}"


def _barh(plt, labels, values, title, xlabel, path, markers=None, marker_label=None):
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.4))
    y = list(range(len(labels)))
    ax.barh(y, values, color="#4C72B0", label="mean" if markers else None)
    if markers:
        ax.plot(markers, y, "k|", markersize=14, label=marker_label)
        ax.legend(loc="lower right")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_charts(report: dict, out: Path) -> list[str]:
    rows = [r for r in report["rows"] if r["status"] == "ok"]
    if not rows:
        return []
    plt = _plt()
    labels = [_label(r) for r in rows]
    _barh(plt, labels, [r["latency"]["mean_ms"] for r in rows], "Model latency per image (warm, real frames)",
          "ms per image (bar: mean, tick: p95)", out / "latency.png", [r["latency"]["p95_ms"] for r in rows], "p95")
    _barh(plt, labels, [r["memory"]["peak_rss_mb"]["mean"] for r in rows], "Peak memory of a warm start (process RSS)",
          "MB", out / "memory.png")

    fig, ax = plt.subplots(figsize=(8, 5))
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        series.setdefault(f"{r['model']} · {r['backend']} {r['precision']}", []).append(
            (r["batch"], r["latency"]["throughput"]))
    for name, points in series.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set_xscale("log", base=2)
    batches = sorted({r["batch"] for r in rows})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch")
    ax.set_ylabel("images per second (model only)")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput against batch size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    return ["latency.png", "throughput.png", "memory.png"]


def eval_charts(report: dict, out: Path) -> list[str]:
    rows = [r for r in report["rows"] if r["status"] == "ok"]
    if not rows:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows) + 2), 4.5))
    x = list(range(len(rows)))
    top1 = [100 * r["accuracy"]["top1_rate"] for r in rows]
    top5 = [100 * r["accuracy"]["top5_rate"] for r in rows]
    ax.bar([i - 0.2 for i in x], top1, width=0.4, label="top-1")
    ax.bar([i + 0.2 for i in x], top5, width=0.4, label="top-5")
    ax.set_xticks(x, [f"{r['model']}\n{r['backend']} {r['precision']}" + ("\n(random)" if r["random_weights"] else "")
                      for r in rows], fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("% of labelled images")
    ax.set_title(f"Accuracy on {report['data']['images']} images")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)
    _barh(plt, [f"{r['model']} · {r['backend']} {r['precision']}" for r in rows],
          [r["latency"]["mean_ms"] for r in rows], "Model latency per image", "ms per image (mean)",
          out / "latency.png")
    charts = ["accuracy.png", "latency.png"]
    for i, r in enumerate(report["rows"]):
        if r["status"] == "ok" and r["accuracy"].get("confusion", {}).get("classes"):
            name = f"confusion-{i + 1}.png"  # by row number: a model's name may be a path
            _confusion(plt, r["accuracy"]["confusion"], f"{r['model']} · {r['backend']} {r['precision']}", out / name)
            charts.append(name)
    return charts


def _confusion(plt, confusion: dict, title: str, path: Path) -> None:
    """True class down, top-1 class across; each cell's count written in it."""
    classes, matrix = confusion["classes"], confusion["matrix"]
    n = len(classes)
    side = min(max(4.0, 0.45 * n + 2.5), 30.0)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("top-1 (predicted)")
    ax.set_ylabel("label (true)")
    ax.set_title(f"Confusion: {title}", fontsize=9)
    peak = max((v for row in matrix for v in row), default=0)
    if n <= 30:
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                if v:
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                            color="white" if v > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
