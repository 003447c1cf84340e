"""Is a figure readable printed at paper size? Checks through matplotlib's renderer.

A figure is drawn once; every visible, non-empty text is measured in display space. A
figure passes when its saved extent (the tight bounding box ``save_figure`` writes, without
the 0.1 in pad) fits the width and height bound in inches, no text is smaller than
:data:`MIN_FONT_PT` and no two texts' boxes intersect (text over text is unreadable).
"""
from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
from matplotlib.text import Text

from pneumoloc.plots.style import MAX_HEIGHT_IN, MIN_FONT_PT

__all__ = ["paper_problems", "text_boxes", "assert_readable"]


def _undrawn_tick_labels(fig) -> set[int]:
    """Ids of tick labels outside their axis' view interval: matplotlib keeps them but never draws them."""
    hidden = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            span = 1e-9 * max(abs(lo), abs(hi), 1.0)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - span <= tick.get_loc() <= hi + span:
                    hidden |= {id(tick.label1), id(tick.label2)}
    return hidden


def text_boxes(fig) -> list[tuple[str, object, float]]:
    """``(text, display bbox, font size in pt)`` of every text of ``fig`` that is drawn."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    undrawn = _undrawn_tick_labels(fig)
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in undrawn
             and (t.axes is None or t.axes.get_visible())]
    return [(t.get_text(), t.get_window_extent(renderer), t.get_fontsize()) for t in texts]


def paper_problems(fig, width_in: float, height_in: float = MAX_HEIGHT_IN, min_pt: float = MIN_FONT_PT) -> list[str]:
    """What makes ``fig`` unreadable at ``width_in`` x ``height_in`` inches; empty when nothing does."""
    boxes = text_boxes(fig)
    tight = fig.get_tightbbox(fig.canvas.get_renderer())  # inches, what bbox_inches="tight" saves
    problems = []
    if tight.width > width_in + 0.01 or tight.height > height_in + 0.01:
        problems.append(f"saved extent {tight.width:.2f} x {tight.height:.2f} in exceeds {width_in} x {height_in} in")
    small = sorted({(t, s) for t, _, s in boxes if s < min_pt - 1e-6})
    if small:
        problems.append(f"text below {min_pt} pt: {small[:5]}")
    overlaps = [(a, b) for (a, ba, _), (b, bb, _) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]
    if overlaps:
        problems.append(f"{len(overlaps)} text overlaps, e.g. {overlaps[:4]}")
    return problems


def assert_readable(fig, width_in: float, height_in: float = MAX_HEIGHT_IN) -> None:
    """Fail with every :func:`paper_problems` of ``fig`` at ``width_in`` x ``height_in`` inches."""
    problems = paper_problems(fig, width_in, height_in)
    assert not problems, problems
