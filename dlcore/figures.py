"""Plotly figures for the pages, built by plain functions so that tests need no browser."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

PALETTE = qualitative.Plotly


def learning_curves(runs: dict[str, list[dict]], best_epochs: dict[str, int] | None = None,
                    height: int = 380) -> go.Figure:
    """Loss and accuracy per epoch; train dashed, validation solid, one colour per run."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"),
                        horizontal_spacing=0.1)
    best_epochs = best_epochs or {}
    single = len(runs) == 1
    for i, (label, rows) in enumerate(runs.items()):
        color = PALETTE[i % len(PALETTE)]
        ep = [r["epoch"] for r in rows]
        for col, key in ((1, "loss"), (2, "acc")):
            for split, dash in (("train", "dash"), ("val", "solid")):
                name = f"{split}" if single else f"{label} · {split}"
                fig.add_trace(go.Scatter(
                    x=ep, y=[r.get(f"{split}_{key}") for r in rows], mode="lines+markers",
                    name=name, legendgroup=f"{label}-{split}", showlegend=(col == 1),
                    line={"color": color if not single else (PALETTE[0] if split == "train" else PALETTE[1]),
                          "dash": dash},
                    hovertemplate=f"{name}<br>epoch %{{x}}<br>{key} %{{y:.4f}}<extra></extra>"),
                    row=1, col=col)
        best = best_epochs.get(label)
        if best is not None:
            row = next((r for r in rows if r["epoch"] == best), None)
            if row is not None:
                for col, key in ((1, "val_loss"), (2, "val_acc")):
                    fig.add_trace(go.Scatter(
                        x=[best], y=[row[key]], mode="markers",
                        marker={"symbol": "star", "size": 16, "color": "gold",
                                "line": {"color": "black", "width": 1}},
                        name="best epoch" if single else f"{label} · best", showlegend=(col == 1),
                        hovertemplate=f"best epoch {best}<br>{key} %{{y:.4f}}<extra></extra>"),
                        row=1, col=col)
    fig.update_xaxes(title_text="epoch", dtick=1 if max((len(r) for r in runs.values()), default=0) <= 20 else None)
    fig.update_layout(height=height, margin={"l": 40, "r": 20, "t": 40, "b": 40},
                      legend={"orientation": "h", "y": -0.2})
    return fig


def confusion_matrix_figure(cm, classes, normalized: bool = False, title: str = "",
                            height: int = 480) -> go.Figure:
    """Heatmap: true class down, predicted across; counts or row-normalised fractions."""
    cm = np.asarray(cm, dtype=float)
    if normalized:
        sums = cm.sum(1, keepdims=True)
        z = np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)
        text = [[f"{v:.2f}" for v in row] for row in z]
    else:
        z = cm
        text = [[f"{int(v)}" for v in row] for row in z]
    labels = [str(c) for c in classes]
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=labels, text=text, texttemplate="%{text}", colorscale="Blues",
        hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
        showscale=not bool(title)))
    fig.update_yaxes(autorange="reversed", title_text="true", type="category")
    fig.update_xaxes(title_text="predicted", type="category")
    fig.update_layout(title=title or None, height=height,
                      margin={"l": 60, "r": 20, "t": 40 if title else 20, "b": 60})
    return fig


def roc_figure(curves: list[dict], height: int = 460) -> go.Figure:
    """One-vs-rest ROC curve per class with its AUC in the legend."""
    fig = go.Figure()
    for i, c in enumerate(curves):
        if not c.get("fpr"):
            continue
        auc = c.get("auc")
        fig.add_trace(go.Scatter(x=c["fpr"], y=c["tpr"], mode="lines",
                                 name=f"{c['class']} (AUC {auc:.3f})" if auc is not None else str(c["class"]),
                                 line={"color": PALETTE[i % len(PALETTE)]}))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line={"dash": "dot", "color": "gray"}))
    fig.update_layout(height=height, xaxis_title="false positive rate",
                      yaxis_title="true positive rate", margin={"l": 50, "r": 20, "t": 20, "b": 50})
    return fig


def probability_bars(probs, classes, height: int = 320) -> go.Figure:
    """Predicted probability of every class; the top one highlighted."""
    probs = list(map(float, probs))
    top = int(np.argmax(probs)) if probs else -1
    colors = [PALETTE[1] if i == top else PALETTE[0] for i in range(len(probs))]
    fig = go.Figure(go.Bar(x=[str(c) for c in classes], y=probs, marker_color=colors,
                           text=[f"{p:.0%}" for p in probs], textposition="outside",
                           hovertemplate="%{x}: %{y:.4f}<extra></extra>"))
    fig.update_layout(height=height, yaxis={"range": [0, 1.1], "title": "probability"},
                      xaxis={"type": "category", "title": "class"},
                      margin={"l": 50, "r": 20, "t": 20, "b": 50})
    return fig


def class_counts_figure(counts: dict, height: int = 300) -> go.Figure:
    """Images per class in the training and test sets."""
    fig = go.Figure()
    for split, color in (("train", PALETTE[0]), ("test", PALETTE[2])):
        fig.add_trace(go.Bar(x=[str(c) for c in counts["classes"]], y=counts[split], name=split,
                             marker_color=color))
    fig.update_layout(barmode="group", height=height, xaxis={"type": "category"},
                      yaxis_title="images", margin={"l": 50, "r": 20, "t": 20, "b": 40},
                      legend={"orientation": "h", "y": 1.1})
    return fig


def layer_params_figure(rows: list[dict], height: int | None = None) -> go.Figure:
    """Trainable parameters of each layer that has any, top to bottom in model order."""
    rows = [r for r in rows if r.get("params")]
    total = sum(r["params"] for r in rows) or 1
    names = [f"{r['name']} ({r['type']})" for r in rows]
    fig = go.Figure(go.Bar(
        x=[r["params"] for r in rows], y=names, orientation="h", marker_color=PALETTE[0],
        text=[f"{r['params'] / total:.1%}" for r in rows], textposition="auto",
        hovertemplate="%{y}<br>%{x:,} parameters<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_layout(height=height or max(160, 60 + 24 * len(rows)), xaxis_title="parameters",
                      margin={"l": 20, "r": 20, "t": 10, "b": 40})
    return fig


LAYER_STATS = (("act_std", "activation std"), ("act_mean", "activation mean"),
               ("grad_norm", "weight-gradient norm"))


def layer_stats_figure(series: dict, height: int | None = None, log_scale: bool = True) -> go.Figure:
    """Small multiples of `dlcore.inspect_layers.layer_series`: activation std, activation mean
    and weight-gradient norm over epochs, one line per layer (epoch 0 is the initialisation).

    Std and gradient norm use a log axis by default, since exploding or vanishing values span
    many orders of magnitude; zeros (a dead layer) cannot sit on it and show as gaps."""
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07,
                        subplot_titles=[t for _, t in LAYER_STATS])
    epochs = series.get("epochs") or []
    for i, layer in enumerate(series.get("layers") or []):
        color = PALETTE[i % len(PALETTE)]
        name = f"{layer['name']} ({layer['type']})"
        for col, (key, title) in enumerate(LAYER_STATS, start=1):
            ys = layer.get(key) or []
            if not any(v is not None for v in ys):
                continue      # activations have no weights: no gradient line
            fig.add_trace(go.Scatter(
                x=epochs, y=ys, mode="lines+markers", name=name, legendgroup=name,
                showlegend=col == 1, line={"color": color}, marker={"size": 5},
                hovertemplate=f"{name}<br>epoch %{{x}}<br>{title} %{{y:.4g}}<extra></extra>"),
                row=1, col=col)
    if log_scale:
        fig.update_yaxes(type="log", row=1, col=1)
        fig.update_yaxes(type="log", row=1, col=3)
    fig.update_xaxes(title_text="epoch", dtick=1 if len(epochs) <= 12 else None)
    fig.update_annotations(font_size=13)
    return _legend_below(fig, len(series.get("layers") or []), height or 340)


def _legend_below(fig: go.Figure, items: int, plot_height: int) -> go.Figure:
    """The legend in rows under the panels, the figure tall enough to hold it all: beside
    them it left the panels too narrow for their titles, and a long one scrolled."""
    rows = -(-items // 3)                    # about three layer names fit in a row
    fig.update_layout(height=plot_height + 22 * rows,
                      margin={"l": 20, "r": 20, "t": 40, "b": 20},
                      legend={"font": {"size": 10}, "orientation": "h", "yanchor": "top",
                              "y": -0.12 - 0.02 * rows, "xanchor": "left", "x": 0})
    return fig


def init_sweep_figure(series_by_run: dict[str, dict], key: str = "grad_norm",
                      height: int | None = None) -> go.Figure:
    """One panel per run (side by side): `key` of each layer over epochs, on a shared log axis,
    so that vanishing (zeros) or exploding (gaussian) inits stand out against the others."""
    labels = list(series_by_run) or ["(none)"]
    title = dict(LAYER_STATS).get(key, key)
    fig = make_subplots(rows=1, cols=len(labels), subplot_titles=labels, shared_yaxes=True,
                        horizontal_spacing=0.03)
    names: dict[str, str] = {}
    for col, label in enumerate(labels, start=1):
        s = series_by_run.get(label) or {}
        for layer in s.get("layers") or []:
            ys = layer.get(key) or []
            if not any(v is not None for v in ys):
                continue
            name = f"{layer['name']} ({layer['type']})"
            color = names.setdefault(name, PALETTE[len(names) % len(PALETTE)])
            fig.add_trace(go.Scatter(
                x=s.get("epochs") or [], y=ys, mode="lines+markers", name=name, legendgroup=name,
                showlegend=col == 1, line={"color": color}, marker={"size": 4},
                hovertemplate=f"{label}<br>{name}<br>epoch %{{x}}<br>{title} %{{y:.4g}}<extra></extra>"),
                row=1, col=col)
    if key != "act_mean":        # means can be negative: no log axis for them
        fig.update_yaxes(type="log")
    fig.update_yaxes(title_text=title, row=1, col=1)
    fig.update_xaxes(title_text="epoch")
    return _legend_below(fig, len(names), height or 320)
