#!/usr/bin/python3
"""Efficiency curves from calm-eval's CSV, in the style of the CALM paper's figures.

    tools/plot_efficiency.py --csv docs/efficiency.csv --out docs/efficiency.png

Two panels, layer speedup and wall-clock speedup, against the tolerance delta: one line per
confidence measure at its calibrated lambda* (mean over the random splits), the local oracle as a
horizontal line, and the static exits as points at their measured mean loss (a static exit at
layer k meets a tolerance delta when its loss is at most delta, with no guarantee attached).
Needs matplotlib (Debian: python3-matplotlib).
"""
import argparse
import csv
import sys

MEASURE_STYLE = {  # colour and marker per measure; others get matplotlib's defaults
    "softmax": ("tab:blue", "o"),
    "softmax-top1": ("tab:cyan", "v"),
    "saturation": ("tab:orange", "s"),
    "classifier": ("tab:green", "^"),
}


def read_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"plot_efficiency.py: {path} has no rows")
    needed = {"kind", "measure", "delta", "static_layer", "test_loss", "layer_speedup",
              "wall_clock_speedup", "num_layers"}
    missing = needed - set(rows[0])
    if missing:
        sys.exit(f"plot_efficiency.py: {path} lacks columns {sorted(missing)} (not calm-eval's CSV?)")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", required=True, help="calm-eval --csv output")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--title", default="", help="figure title (default: from the CSV)")
    args = parser.parse_args()

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_efficiency.py: needs matplotlib (apt-get install python3-matplotlib)")

    rows = read_rows(args.csv)
    num_layers = int(rows[0]["num_layers"])
    calibrated = [r for r in rows if r["kind"] == "calibrated"]
    measures = list(dict.fromkeys(r["measure"] for r in calibrated))
    oracle = next((r for r in rows if r["kind"] == "oracle"), None)
    static = [r for r in rows if r["kind"] == "static"]
    epsilon = calibrated[0]["epsilon"] if calibrated else "?"
    splits = calibrated[0]["splits"] if calibrated else "?"
    deltas = sorted({float(r["delta"]) for r in calibrated})

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharex=True)
    panels = [("layer_speedup", "layer speedup  (L / average layers)"),
              ("wall_clock_speedup", "wall-clock speedup  (vs the full model)")]
    # The x range is the tolerances asked for; static exits whose loss lies beyond it are listed
    # in a note instead (their large speedups would squash the measures' curves).
    x_max = max(deltas) * 1.15 if deltas else 1.0
    hidden = [r for r in static if float(r["test_loss"]) > x_max]
    static = [r for r in static if float(r["test_loss"]) <= x_max]
    for ax, (column, label) in zip(axes, panels):
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.text(x_max, 1.0, " full model", va="bottom", ha="right", fontsize=8)
        if oracle:
            y = float(oracle[column])
            ax.axhline(y, color="tab:red", linestyle="--", linewidth=1.2,
                       label=f"local oracle (loss {float(oracle['test_loss']):.2f})")
        if static:
            xs = [float(r["test_loss"]) for r in static]
            ys = [float(r[column]) for r in static]
            ax.plot(xs, ys, color="grey", linestyle=":", marker="D", markersize=4,
                    label="static exit at layer k (at its loss)")
            for r, x, y in zip(static, xs, ys):
                ax.annotate(r["static_layer"], (x, y), textcoords="offset points", xytext=(4, 3),
                            fontsize=7, color="dimgrey")
        for m in measures:
            pts = sorted((float(r["delta"]), float(r[column])) for r in calibrated if r["measure"] == m)
            colour, marker = MEASURE_STYLE.get(m, (None, "o"))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour, marker=marker,
                    linewidth=2, label=f"{m} at calibrated λ*")
        ax.set_xlim(0, x_max)
        ax.set_xlabel("tolerance δ  (textual consistency loss)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8, loc="center left")
    if hidden:
        note = "static exits off the δ axis (layer: loss, layer x, wall-clock x): " + "; ".join(
            f"{r['static_layer']}: {float(r['test_loss']):.2f}, {float(r['layer_speedup']):.2f}x, "
            f"{float(r['wall_clock_speedup']):.2f}x" for r in hidden)
        fig.text(0.5, 0.01, note, ha="center", fontsize=7.5, color="dimgrey")
    title = args.title or (f"calm on a {num_layers}-layer model: speedup at the calibrated "
                           f"threshold (ε = {epsilon}, mean over {splits} random splits)")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.04 if hidden else 0, 1, 1))
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
