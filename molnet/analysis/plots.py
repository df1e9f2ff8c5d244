"""Figures users look at: parity plots, learning curves, MD traces (PNG, matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _parity(ax, ref, pred, label, unit):
    ref, pred = np.asarray(ref).ravel(), np.asarray(pred).ravel()
    lo, hi = min(ref.min(), pred.min()), max(ref.max(), pred.max())
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
    ax.scatter(ref, pred, s=4, alpha=0.5)
    mae = np.mean(np.abs(pred - ref)) * 1000
    ax.set(
        xlabel=f"reference {label} ({unit})",
        ylabel=f"predicted {label} ({unit})",
        title=f"{label}: MAE {mae:.2f} m{unit}",
    )
    ax.xaxis.set_major_locator(plt.MaxNLocator(5))
    ax.yaxis.set_major_locator(plt.MaxNLocator(5))


def parity_plot(energy_ref, energy_pred, n_atoms, forces_ref, forces_pred, path: str | Path) -> Path:
    """Energy-per-atom and force-component parity plots side by side (only the panels with data)."""
    panels = []
    if len(energy_ref):
        n_atoms = np.asarray(n_atoms)
        panels.append((np.asarray(energy_ref) / n_atoms, np.asarray(energy_pred) / n_atoms, "energy per atom", "eV"))
    if forces_ref is not None and len(forces_ref):
        panels.append((forces_ref, forces_pred, "force components", "eV/Å"))
    if not panels:
        raise ValueError("parity_plot: no reference energies or forces to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        _parity(ax, *panel)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def learning_curve(
    epochs: Sequence[float], series: dict[str, Sequence[float]], path: str | Path, ylabel: str = "value"
) -> Path:
    """One line per metric against epoch, log y axis."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, values in series.items():
        ax.plot(epochs[: len(values)], values, marker="o", ms=3, label=name)
    ax.set(xlabel="epoch", ylabel=ylabel, yscale="log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def md_trace(time_fs, total_energy, temperature, path: str | Path) -> Path:
    """Total energy and temperature against time."""
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    t_ps = np.asarray(time_fs) / 1000
    ax1.plot(t_ps, total_energy)
    ax1.set(ylabel="total energy (eV)")
    ax2.plot(t_ps, temperature, color="tab:red")
    ax2.set(xlabel="time (ps)", ylabel="temperature (K)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
