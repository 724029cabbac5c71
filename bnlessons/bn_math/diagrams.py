"""Small computational-graph diagrams drawn with matplotlib alone (no graphviz).

``draw_graph`` places named nodes at given coordinates, draws an arrow for
each edge of the forward pass and, optionally, a note under each node (for
example the gradient that backpropagation computes there).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import matplotlib.pyplot as plt

from bnlessons.plots import COLORS

Point = tuple[float, float]


def draw_graph(nodes: Mapping[str, Point], edges: Sequence[tuple[str, str]],
               ax: Optional[plt.Axes] = None, labels: Optional[Mapping[str, str]] = None,
               notes: Optional[Mapping[str, str]] = None, note_color: str = COLORS[1],
               inputs: Sequence[str] = (), fontsize: float = 12.0,
               notes_above: Sequence[str] = ()) -> plt.Axes:
    """Draw a directed graph: boxes at ``nodes`` positions, arrows along ``edges``.

    ``labels`` maps a node to the text in its box (matplotlib mathtext such as
    ``r"$\\hat{x}$"`` works; default: the node's name), ``notes`` to a smaller
    line of text under the box (above it for the nodes in ``notes_above``),
    drawn in ``note_color`` on a white background so that no arrow runs
    through it. Nodes named in ``inputs`` (the graph's inputs and parameters)
    get a lighter box. The axes are set to fit the nodes, with equal aspect and
    no frame.
    """
    if not nodes:
        raise ValueError("nodes is empty: give each node a position (x, y)")
    for name, pos in nodes.items():
        if not isinstance(pos, (tuple, list)):
            raise TypeError(f"nodes[{name!r}] must be a position (x, y), got {pos!r}")
        if len(pos) != 2:
            raise ValueError(f"nodes[{name!r}] must be a position (x, y), got {pos!r}")
    for edge in edges:
        if not isinstance(edge, (tuple, list)):
            raise TypeError(f"each edge must be a pair (source, target), got {edge!r}")
        if len(edge) != 2:
            raise ValueError(f"each edge must be a pair (source, target), got {edge!r}")
        missing = [n for n in edge if n not in nodes]
        if missing:
            raise ValueError(f"edge {tuple(edge)} names unknown node(s) {missing}; "
                             f"nodes are {sorted(nodes)}")
    for mapping, what in ((labels or {}, "labels"), (notes or {}, "notes")):
        unknown = [n for n in mapping if n not in nodes]
        if unknown:
            raise ValueError(f"{what} names unknown node(s) {unknown}")
    for names, what in ((inputs, "inputs"), (notes_above, "notes_above")):
        unknown = [n for n in names if n not in nodes]
        if unknown:
            raise ValueError(f"{what} names unknown node(s) {unknown}")

    ax = ax or plt.gca()
    labels = dict(labels or {})
    notes = dict(notes or {})
    for source, target in edges:
        ax.annotate("", xy=nodes[target], xytext=nodes[source],
                    arrowprops=dict(arrowstyle="-|>", color="0.35", linewidth=1.2,
                                    shrinkA=18, shrinkB=18, mutation_scale=14))
    for name, (x, y) in nodes.items():
        face = "0.95" if name in inputs else "white"
        ax.text(x, y, labels.get(name, name), ha="center", va="center", fontsize=fontsize,
                bbox=dict(boxstyle="round,pad=0.45", facecolor=face, edgecolor="0.3"), zorder=3)
        if name in notes:
            above = name in notes_above
            ax.text(x, y + 0.42 if above else y - 0.42, notes[name], ha="center",
                    va="bottom" if above else "top", fontsize=fontsize * 0.75, color=note_color,
                    bbox=dict(boxstyle="square,pad=0.1", facecolor="white", edgecolor="none"),
                    zorder=4)
    xs = [p[0] for p in nodes.values()]
    ys = [p[1] for p in nodes.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 1.1, max(ys) + (1.1 if notes_above else 0.6))
    ax.set_aspect("equal")
    ax.axis("off")
    return ax
