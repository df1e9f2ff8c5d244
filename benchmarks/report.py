"""Turn ``benchmarks/results/*.jsonl`` into markdown tables and the scaling plot.

    .venv/bin/python benchmarks/report.py                  # print the tables
    .venv/bin/python benchmarks/report.py --write-readme   # also rewrite the results section of
                                                           # benchmarks/README.md and the PNG plot
    .venv/bin/python benchmarks/report.py --include-quick  # use --quick runs too

For every measurement key (size, dtype, threads, hyperparameters) only the newest record counts.
Records of ``--quick`` runs are left out unless asked for.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
PLOT = RESULTS / "speed_scaling.png"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def load(kind: str, include_quick: bool) -> list[dict[str, Any]]:
    path = RESULTS / f"{kind}.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if include_quick or not r.get("quick")]


def newest(records: list[dict], key) -> list[dict]:
    """The newest record per ``key(record)``, in key order."""
    latest: dict = {}
    for r in records:
        k = key(r)
        if k not in latest or r["date"] >= latest[k]["date"]:
            latest[k] = r
    return [latest[k] for k in sorted(latest)]


def size_of(r: dict) -> str:
    h = r["hyper"]
    return f"C={h['num_channels']} L={h['max_L']}"


def path_of(r: dict) -> str:
    """molnet's inference path in a speed record."""
    device = "" if r.get("device", "cpu") == "cpu" else f"{r['device']}: "
    if r.get("molnet_cueq"):
        return device + "cuequivariance" + (" + torch.compile" if r.get("molnet_compiled") else "")
    return device + ("torch.compile" if r.get("molnet_compiled") else "eager")


def threads_of(r: dict) -> str:
    policy = r.get("omp_wait_policy")
    return f"{r['threads']} ({policy.lower()})" if policy else str(r["threads"])


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def params_section(records: list[dict]) -> str:
    rows = []
    for r in newest(records, lambda r: (r["num_channels"], r["max_L"], r.get("mace_use_reduced_cg", False))):
        diffs = [
            f"{g}: {v['molnet']} vs {v['mace']}" for g, v in sorted(r["groups"].items()) if v["molnet"] != v["mace"]
        ]
        rows.append(
            [
                r["num_channels"],
                r["max_L"],
                r["molnet"],
                r["mace"],
                f"{r['ratio_molnet_over_mace']:.3f}",
                "; ".join(diffs) or "none",
            ]
        )
    if not rows:
        return ""
    return "### Trainable parameters\n\n" + table(
        ["C", "L", "molnet", "mace-torch", "ratio", "groups that differ (molnet vs mace-torch)"], rows
    )


def speed_section(records: list[dict]) -> str:
    rows = []
    key = lambda r: (path_of(r), threads_of(r), size_of(r), r["dtype"], r["n_atoms"])  # noqa: E731
    for r in newest(records, key):
        m, a = r["molnet"], r["mace"]
        rows.append(
            [
                r["n_atoms"],
                r["dtype"],
                threads_of(r),
                size_of(r),
                path_of(r),
                f"{m['median_s'] * 1e3:.1f}",
                f"{a['median_s'] * 1e3:.1f}",
                f"{m['atoms_per_s']:.0f}",
                f"{a['atoms_per_s']:.0f}",
                f"**{r['throughput_ratio_molnet_over_mace']:.2f}**",
                r["date"][:10] + (" (quick)" if r.get("quick") else ""),
                r.get("molnet_commit", "?"),
            ]
        )
    if not rows:
        return ""
    return "### Energy + forces per call (calculator path)\n\n" + table(
        [
            "atoms",
            "dtype",
            "threads",
            "model",
            "molnet path",
            "molnet ms",
            "mace-torch ms",
            "molnet atoms/s",
            "mace-torch atoms/s",
            "throughput ratio molnet/mace",
            "date",
            "molnet commit",
        ],
        rows,
    )


def memory_section(records: list[dict]) -> str:
    rows = []
    for r in newest(records, lambda r: (threads_of(r), size_of(r), r["dtype"], r["n_atoms"])):
        if "molnet" not in r or "mace" not in r:
            continue
        m, a = r["molnet"], r["mace"]
        chunked = r.get("molnet_chunked")
        rows.append(
            [
                r["n_atoms"],
                r["dtype"],
                size_of(r),
                f"{m['maxrss_peak_mib']:.0f}",
                f"{a['maxrss_peak_mib']:.0f}",
                f"{m['working_mib']:.0f}",
                f"{a['working_mib']:.0f}",
                f"{r['peak_ratio_molnet_over_mace']:.2f}",
                f"{r['molnet_chunk']}: {chunked['maxrss_peak_mib']:.0f} ({r['peak_ratio_molnet_chunked_over_mace']:.2f})"
                if chunked
                else "–",
                r["date"][:10] + (" (quick)" if r.get("quick") else ""),
            ]
        )
    if not rows:
        return ""
    return "### Peak resident memory (fresh process per measurement, MiB)\n\n" + table(
        [
            "atoms",
            "dtype",
            "model",
            "molnet peak",
            "mace-torch peak",
            "molnet above built model",
            "mace-torch above built model",
            "peak ratio molnet/mace",
            "molnet with --molnet-chunk: chunk: peak (ratio)",
            "date",
        ],
        rows,
    )


def training_section(records: list[dict]) -> str:
    rows = []
    for r in newest(records, lambda r: (threads_of(r), size_of(r), r["dtype"], r["batch_size"])):
        m, a = r["molnet"], r["mace"]
        rows.append(
            [
                r["batch_size"],
                r["dtype"],
                threads_of(r),
                size_of(r),
                f"{m['configs_per_s']:.1f}",
                f"{a['configs_per_s']:.1f}",
                f"**{r['throughput_ratio_molnet_over_mace']:.2f}**",
                r["date"][:10] + (" (quick)" if r.get("quick") else ""),
            ]
        )
    if not rows:
        return ""
    return "### Training throughput (Adam steps on AcAc batches, energy + forces loss)\n\n" + table(
        ["batch", "dtype", "threads", "model", "molnet configs/s", "mace-torch configs/s", "ratio molnet/mace", "date"],
        rows,
    )


def mace_variant(r: dict) -> str:
    """Non-default MACE architecture options of a molnet record, e.g. " (first layer plain)"."""
    config = r.get("model_config") or {}
    notes = []
    if config.get("first_layer_residual") is False:
        notes.append("first layer plain")
    if config.get("contraction_basis", "reduced") != "reduced":
        notes.append(f"{config['contraction_basis']} basis")
    return f" ({', '.join(notes)})" if notes else ""


def accuracy_section(records: list[dict]) -> str:
    """Test errors per data set, model and epoch budget: mean over seeds (± half the spread)."""
    runs: dict[tuple, dict[int, dict]] = {}
    for r in sorted(records, key=lambda r: r["date"]):  # the newest record per seed wins
        # records of the stand-alone mace-torch script (before run.py accuracy) have no family
        model = "mace-torch" if r["package"] == "mace-torch" else f"molnet {r['family']}{mace_variant(r)}"
        r.setdefault("train_file", "data/acac/train_300K.xyz")
        runs.setdefault((r["dataset"], r["epochs"], model), {})[r["seed"]] = r

    def cell(values: list[float]) -> str:
        mean = sum(values) / len(values)
        return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {(max(values) - min(values)) / 2:.1f}"

    order = {"molnet mace": 0, "mace-torch": 1}
    rows = []
    for (dataset, epochs, model), by_seed in sorted(
        runs.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 2), kv[0][2])
    ):
        tests = [r["test"] for r in by_seed.values()]
        first = next(iter(by_seed.values()))
        rows.append(
            [
                dataset,
                f"{first['train_file']} → {first['test_file']}",
                epochs,
                model,
                ",".join(str(s) for s in sorted(by_seed)),
                cell([t["energy_mae_meV"] for t in tests]),
                cell([t["energy_rmse_meV"] for t in tests]),
                cell([t["forces_mae_meV_per_A"] for t in tests]),
                cell([t["forces_rmse_meV_per_A"] for t in tests]),
                f"{sum(r['train_wall_s'] for r in by_seed.values()) / len(by_seed) / 60:.1f}",
            ]
        )
    if not rows:
        return ""
    return "### Accuracy (test errors; mean ± half the spread over seeds)\n\n" + table(
        [
            "data",
            "train → test",
            "epochs",
            "model",
            "seeds",
            "E MAE meV",
            "E RMSE meV",
            "F MAE meV/Å",
            "F RMSE meV/Å",
            "train min",
        ],
        rows,
    )


def machine_line(*groups: list[dict]) -> str:
    records = [r for g in groups for r in g]
    if not records:
        return ""
    machines = sorted({f"{r['machine']['cpu']}, {r['machine']['cores']} cores" for r in records})
    loads = [r["load_avg"][0] for r in records]
    versions = next(
        (
            {"molnet side": r["molnet"]["versions"], "mace-torch side": r["mace"]["versions"]}
            for r in records
            if "versions" in r.get("molnet", {})
        ),
        {},
    )
    return (
        f"Machine: {'; '.join(machines)}; 1-minute load average during the runs {min(loads):.1f}–{max(loads):.1f}. "
        f"Versions: {json.dumps(versions)}."
    )


def plot_scaling(records: list[dict], path: Path) -> bool:
    """Time per atom against N (log–log), one line per side, path and dtype, for the newest run's threads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = newest(records, lambda r: (path_of(r), threads_of(r), size_of(r), r["dtype"], r["n_atoms"]))
    if not rows:
        return False
    latest = max(rows, key=lambda r: r["date"])  # one thread setting per plot: the newest run's
    rows = [r for r in rows if threads_of(r) == threads_of(latest)]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    styles = {"molnet": "-o", "mace": "--s"}
    for mode, threads, model, dtype in sorted({(path_of(r), threads_of(r), size_of(r), r["dtype"]) for r in rows}):
        sel = sorted(
            (r for r in rows if (path_of(r), threads_of(r), size_of(r), r["dtype"]) == (mode, threads, model, dtype)),
            key=lambda r: r["n_atoms"],
        )
        for side in ("molnet", "mace"):
            if side == "mace" and mode != "eager":
                continue  # mace-torch's eager line is drawn once, with molnet's eager run
            name = f"molnet ({mode})" if side == "molnet" else "mace-torch"
            ax.plot(
                [r["n_atoms"] for r in sel],
                [r[side]["median_s"] / r["n_atoms"] * 1e3 for r in sel],
                styles[side],
                label=f"{name} {dtype} ({threads} thr, {model})",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("atoms")
    ax.set_ylabel("energy + forces time per atom (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--include-quick", action="store_true")
    parser.add_argument("--write-readme", action="store_true", help="rewrite README's results section and the plot")
    args = parser.parse_args()
    data = {k: load(k, args.include_quick) for k in ("params", "speed", "memory", "training", "accuracy")}
    sections = [
        params_section(data["params"]),
        speed_section(data["speed"]),
        memory_section(data["memory"]),
        training_section(data["training"]),
        accuracy_section(data["accuracy"]),
        machine_line(data["speed"], data["memory"], data["training"]),
    ]
    text = "\n\n".join(s for s in sections if s)
    if args.write_readme and plot_scaling(data["speed"], PLOT):
        text += f"\n\n![time per atom against N]({PLOT.relative_to(HERE)})"
    print(text)
    if args.write_readme:
        readme = README.read_text()
        block = f"{START}\n{text}\n{END}"
        if START in readme and END in readme:
            readme = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, readme, flags=re.S)
        else:
            readme += "\n" + block + "\n"
        README.write_text(readme)


if __name__ == "__main__":
    main()
