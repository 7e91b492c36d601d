"""A contact sheet of a removal dataset: image / target / mask / expression per row, for a person to look at."""

from __future__ import annotations

import textwrap
from pathlib import Path

from sahm_core.data.layout import read_mask, read_refs, read_rgb


def contact_sheet(root: str | Path, out: str | Path, count: int = 12, split: str | None = None) -> Path:
    """Write a PNG with the first `count` refs of the dataset (of one split, if given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root, out = Path(root), Path(out)
    refs = read_refs(root, split)[:count]
    if not refs:
        raise ValueError(f"{root} has no refs{' in split ' + split if split else ''}")
    columns = 2  # two samples side by side, each as image | target | mask
    rows = (len(refs) + columns - 1) // columns
    fig, axes = plt.subplots(rows, 3 * columns, figsize=(3 * columns * 1.6 + 0.3, rows * 1.95), squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.3 / rows, wspace=0.04, hspace=0.32)
    for ax in axes.flat:
        ax.axis("off")
    for k, ref in enumerate(refs):
        row, col = divmod(k, columns)
        panels = (read_rgb(root / ref["image"]), read_rgb(root / ref["target"]), read_mask(root / ref["mask"]))
        for j, (panel, name) in enumerate(zip(panels, ("image", "target", "mask"))):
            ax = axes[row, 3 * col + j]
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=1 if panel.ndim == 2 else None)
            if row == 0:
                ax.text(0.5, 1.2, name, transform=ax.transAxes, fontsize=8, ha="center", weight="bold")
        label = ("[negative] " if ref["negative"] else "") + f'"{ref["text"]}"'
        axes[row, 3 * col].text(0, 1.03, textwrap.shorten(label, 75), transform=axes[row, 3 * col].transAxes,
                                fontsize=7, va="bottom", color="darkred" if ref["negative"] else "black")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
