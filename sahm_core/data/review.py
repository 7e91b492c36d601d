"""Review pages for a built dataset: the paper's manual checks of ComCOCO as sheets a person pages through.

One row per image pair: the composite with the pasted outline drawn on it, the mask, the target, and every
expression written for it (appearance, spatial, negative) with what the builder recorded (size class, overlap
with the background's annotated objects). Rows that share an image file are one pair, so a page shows each
composite once with all its sentences.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import cv2

from sahm_core.data.layout import read_mask, read_refs, read_rgb

OUTLINE_RGB = (255, 0, 255)  # magenta: rare in photos, so the pasted outline stands out
PAGE_NAME = "review_{:03d}.png"


def _pairs(refs: list[dict]) -> list[list[dict]]:
    """Refs grouped by image file, in file order."""
    groups: dict[str, list[dict]] = {}
    for ref in refs:
        groups.setdefault(ref["image"], []).append(ref)
    return list(groups.values())


def _caption(group: list[dict]) -> str:
    lines = []
    meta = group[0].get("comcoco")
    if meta and "size" in meta:
        lines.append(f"{meta['category']}: {meta['size']} ({meta['area']} px), on annotated objects "
                     f"{meta['overlap']:.0%}, hides at most {meta['hidden']:.0%} of one")
    pasted = group[0].get("copy_paste")
    if pasted and "area" in pasted:
        lines.append(f"{pasted['object']} on {pasted['view'] or 'a synthetic background'}: {pasted['area']} px at "
                     f"x{pasted['scale']:.2f}, on known objects {pasted['overlap']:.0%}")
    for ref in group:
        writer_meta = ref.get("comcoco") or ref.get("copy_paste") or {}
        kind = writer_meta.get("kind", "negative" if ref["negative"] else "expression")
        lines.append(textwrap.shorten(f"[{kind}] {ref['text']}", 70))
    return "\n".join(lines)


def review_pages(root: str | Path, out_dir: str | Path | None = None, per_page: int = 6,
                 split: str | None = None) -> list[Path]:
    """Write review_000.png, review_001.png, ... (`per_page` pairs each) into out_dir (default root/review)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if per_page < 1:
        raise ValueError(f"per_page must be at least 1, got {per_page}")
    root = Path(root)
    out_dir = Path(out_dir) if out_dir is not None else root / "review"
    pairs = _pairs(read_refs(root, split))
    if not pairs:
        raise ValueError(f"{root} has no refs{' in split ' + split if split else ''}")
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = []
    for page, start in enumerate(range(0, len(pairs), per_page)):
        chunk = pairs[start : start + per_page]
        fig, axes = plt.subplots(len(chunk), 4, figsize=(14, 2.6 * len(chunk)), squeeze=False,
                                 gridspec_kw={"width_ratios": (1, 1, 1, 1.6)})
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.25 / len(chunk), wspace=0.04, hspace=0.1)
        for row, group in enumerate(chunk):
            ref = group[0]
            image, mask = read_rgb(root / ref["image"]), read_mask(root / ref["mask"])
            contours, _ = cv2.findContours(mask.astype("uint8"), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            outlined = cv2.drawContours(image.copy(), contours, -1, OUTLINE_RGB, max(1, image.shape[1] // 300))
            panels = (outlined, mask, read_rgb(root / ref["target"]))
            for col, (panel, name) in enumerate(zip(panels, ("composite", "mask", "target"))):
                ax = axes[row, col]
                ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=1 if panel.ndim == 2 else None)
                ax.axis("off")
                if row == 0:
                    ax.set_title(name, fontsize=9, weight="bold")
            text = axes[row, 3]
            text.axis("off")
            text.text(0, 0.5, f"{Path(ref['image']).stem}\n{_caption(group)}", fontsize=7.5, va="center",
                      family="monospace", color="darkred" if ref["negative"] else "black", transform=text.transAxes)
        path = out_dir / PAGE_NAME.format(page)
        fig.savefig(path, dpi=80)
        plt.close(fig)
        pages.append(path)
    return pages
