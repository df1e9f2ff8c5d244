"""Benchmark worker: one model backend (``molnet`` or ``mace``) in its own interpreter.

The driver (:mod:`benchmarks.run`) starts this file with the Python of the backend's virtual
environment (molnet: the project's ``.venv``; mace-torch: ``benchmarks/.venv-mace``, whose e3nn
0.4.4 cannot share an environment with molnet's e3nn 0.6). It therefore imports nothing from
the other side and nothing from ``benchmarks/`` except this file.

Two ways to run it:

- ``worker.py serve --backend B --dtype D --threads T``: a long-lived worker that answers one
  JSON command per stdin line with one JSON line on its protocol stream (the original stdout;
  anything a library prints goes to stderr). Commands: ``build`` (model from hyperparameters),
  ``params`` (trainable parameter counts by module), ``load`` (structures from an extxyz file),
  ``check`` (energy/forces/edge count of one structure), ``time`` (energy+forces calls on one
  structure, each timed), ``train`` (optimizer steps on a fixed batch, each timed), ``quit``.
- ``worker.py memory --backend B --dtype D --threads T --hyper JSON --structures FILE --index I
  --calls K [--atoms-per-chunk N|'"auto"']``: a fresh process that builds the model, evaluates
  one structure K times (each timed) and reports its peak resident set size (:func:`rss.peak_rss_mib`) before
  and after; the driver starts one per measurement so that peaks do not carry over.

The timed call is the inference path of each package's ASE calculator: neighbor list and
graph from an ``ase.Atoms`` (molnet: ``AtomicGraph.from_atoms``; mace-torch:
``config_from_atoms`` + ``AtomicData.from_config``), a one-graph torch_geometric batch, then the
model with forces by autograd and no stress.

References:
    mace-torch (ACEsuit/mace) ``mace/calculators/mace.py`` for the calculator's data path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from rss import peak_rss_mib

DTYPES = {"float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------------------------
# Backends: each turns (elements, hyperparameters, dtype) into a model and an Atoms → batch
# → (energy, forces) path, and names its parameters by the common module groups.
# --------------------------------------------------------------------------------------------


class MolnetBackend:
    """molnet's ``mace`` family through ``build_model`` and ``AtomicGraph.from_atoms``."""

    name = "molnet"

    def __init__(self, dtype: torch.dtype, device: torch.device = torch.device("cpu")) -> None:
        self.dtype, self.device = dtype, device
        self.model = None

    def versions(self) -> dict[str, str]:
        import e3nn

        import molnet

        return {"torch": torch.__version__, "e3nn": e3nn.__version__, "molnet": getattr(molnet, "__version__", "?")}

    def build(
        self,
        elements: list[str],
        hyper: dict[str, Any],
        compile: bool = False,
        cueq: bool = False,
        atoms_per_chunk: int | str | None = None,
    ) -> None:
        from molnet.models.registry import build_model

        config = {"name": "mace", "elements": list(elements), **hyper}
        self.model = build_model(config, dtype=self.dtype).to(self.device).eval()
        if cueq:
            self.model.use_cueq()
        if atoms_per_chunk is not None:
            self.model.set_chunking(atoms_per_chunk)
        if compile:
            self.model.compile_inference()
        self.r_max = float(hyper["r_max"])

    def graph(self, atoms):
        """One ``AtomicGraph`` (neighbor list included)."""
        from molnet.data import AtomicGraph

        return AtomicGraph.from_atoms(atoms, self.r_max, dtype=self.dtype)

    @staticmethod
    def collate(graphs: list):
        """One structure: the graph itself, as the ASE calculator passes it; several: a Batch."""
        from torch_geometric.data import Batch

        return graphs[0] if len(graphs) == 1 else Batch.from_data_list(graphs)

    @staticmethod
    def num_edges(batch) -> int:
        return int(batch.edge_index.shape[1])

    def evaluate(self, batch, training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(batch, compute_forces=True, training=training)
        return out["energy"], out["forces"]

    @staticmethod
    def group(name: str) -> str:
        """Common module group of a parameter name (``body.interactions.1.skip.weight`` → ``L1.skip``)."""
        parts = name.split(".")
        if parts[1] == "embedding":
            return "embedding"
        layer = f"L{parts[2]}"
        kind = {
            "interactions": {
                "linear_up": "linear_up",
                "conv_weights": "radial_mlp",
                "linear": "conv_linear",
                "skip": "skip",
            }.get(parts[3], parts[3]),
            "products": "product_weights",
            "product_linears": "product_linear",
            "readouts": "readout",
        }[parts[1]]
        return f"{layer}.{kind}"


class MaceBackend:
    """mace-torch's ``ScaleShiftMACE`` through its calculator's data pipeline."""

    name = "mace"

    def __init__(self, dtype: torch.dtype, device: torch.device = torch.device("cpu")) -> None:
        self.dtype, self.device = dtype, device
        self.model = None

    def versions(self) -> dict[str, str]:
        import e3nn
        import mace

        return {"torch": torch.__version__, "e3nn": e3nn.__version__, "mace-torch": mace.__version__}

    def build(self, elements: list[str], hyper: dict[str, Any], cueq: bool = False) -> None:
        from ase.data import atomic_numbers
        from e3nn import o3
        from mace import modules
        from mace.tools import AtomicNumberTable

        h = hyper
        c, max_l = int(h["num_channels"]), int(h["max_L"])
        hidden = o3.Irreps("+".join(f"{c}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(max_l + 1)))
        self.z_table = AtomicNumberTable(sorted(atomic_numbers[s] for s in elements))
        self.r_max = float(h["r_max"])
        torch.set_default_dtype(self.dtype)  # mace-torch builds constants in the default dtype
        self.model = (
            modules.ScaleShiftMACE(
                r_max=self.r_max,
                num_bessel=int(h["num_bessel"]),
                num_polynomial_cutoff=int(h["num_polynomial_cutoff"]),
                max_ell=int(h["max_ell"]),
                interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
                interaction_cls_first=modules.interaction_classes[
                    "RealAgnosticResidualInteractionBlock"
                    if h.get("first_layer_residual", True)
                    else "RealAgnosticInteractionBlock"
                ],
                num_interactions=int(h["num_interactions"]),
                num_elements=len(self.z_table),
                hidden_irreps=hidden,
                MLP_irreps=o3.Irreps(f"{int(h.get('readout_hidden', 16))}x0e"),
                atomic_energies=np.zeros(len(self.z_table)),
                avg_num_neighbors=float(h["avg_num_neighbors"]),
                atomic_numbers=self.z_table.zs,
                correlation=int(h["correlation"]),
                gate=modules.gate_dict[h.get("gate", "silu")],
                radial_MLP=list(h["radial_MLP"]),
                atomic_inter_scale=1.0,
                atomic_inter_shift=0.0,
                use_reduced_cg=bool(h.get("mace_use_reduced_cg", False)),
            )
            .to(self.dtype)
            .to(self.device)
            .eval()
        )
        if cueq:  # mace-torch's own conversion (fused convolution on CUDA)
            from mace.cli.convert_e3nn_cueq import run as to_cueq

            self.model = to_cueq(self.model, device=self.device.type).eval()

    def graph(self, atoms):
        """One ``AtomicData`` (neighbor list included), as the calculator builds it."""
        from mace import data as mace_data

        config = mace_data.config_from_atoms(atoms)
        return mace_data.AtomicData.from_config(config, z_table=self.z_table, cutoff=self.r_max, heads=["Default"])

    @staticmethod
    def collate(graphs: list):
        from mace.tools import torch_geometric

        return torch_geometric.Batch.from_data_list(graphs)

    @staticmethod
    def num_edges(batch) -> int:
        return int(batch["edge_index"].shape[1])

    def evaluate(self, batch, training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(batch.to_dict(), compute_force=True, training=training)
        if training:
            return out["energy"], out["forces"]
        return out["energy"].detach(), out["forces"].detach()

    @staticmethod
    def group(name: str) -> str:
        parts = name.split(".")
        if parts[0] == "node_embedding":
            return "embedding"
        layer = f"L{parts[1]}"
        kind = {
            "interactions": {
                "linear_up": "linear_up",
                "conv_tp_weights": "radial_mlp",
                "linear": "conv_linear",
                "skip_tp": "skip",
            }.get(parts[2], parts[2]),
            "products": {"symmetric_contractions": "product_weights", "linear": "product_linear"}.get(
                parts[2], parts[2]
            ),
            "readouts": "readout",
        }[parts[0]]
        return f"{layer}.{kind}"


BACKENDS: dict[str, Callable[[torch.dtype], Any]] = {"molnet": MolnetBackend, "mace": MaceBackend}


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


# --------------------------------------------------------------------------------------------
# The long-lived worker
# --------------------------------------------------------------------------------------------


class Server:
    """State of a ``serve`` worker: one backend, one model, a list of loaded structures."""

    def __init__(self, backend: str, dtype: str, threads: int, device: str = "cpu") -> None:
        set_threads(threads)
        self.device = torch.device(device)
        self.backend = BACKENDS[backend](DTYPES[dtype], self.device)
        self.structures: list = []

    def batch_of(self, atoms_list: list):
        """The calculator's graph(s) collated and moved to the device."""
        return self.backend.collate([self.backend.graph(a) for a in atoms_list]).to(self.device)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def cmd_hello(self) -> dict:
        return {"backend": self.backend.name, "versions": self.backend.versions(), "threads": torch.get_num_threads()}

    def cmd_build(self, elements: list[str], hyper: dict, compile: bool = False, cueq: bool = False) -> dict:
        t0 = time.perf_counter()
        if compile:
            self.backend.build(elements, hyper, compile=compile, cueq=cueq)  # molnet only
        elif cueq:
            self.backend.build(elements, hyper, cueq=cueq)
        else:
            self.backend.build(elements, hyper)
        return {"build_s": time.perf_counter() - t0}

    def cmd_params(self) -> dict:
        groups: dict[str, int] = {}
        modules: dict[str, int] = {}
        for name, p in self.backend.model.named_parameters():
            if not p.requires_grad:
                continue
            g = self.backend.group(name)
            groups[g] = groups.get(g, 0) + p.numel()
            modules[name] = p.numel()
        return {"total": sum(groups.values()), "groups": groups, "parameters": modules}

    def cmd_load(self, path: str) -> dict:
        import ase.io

        self.structures = ase.io.read(path, index=":")
        return {"n_structures": len(self.structures), "n_atoms": [len(a) for a in self.structures]}

    def cmd_check(self, index: int) -> dict:
        atoms = self.structures[index]
        batch = self.batch_of([atoms])
        energy, forces = self.backend.evaluate(batch)
        return {
            "n_atoms": len(atoms),
            "n_edges": self.backend.num_edges(batch),
            "energy": float(energy.sum()),
            "max_force": float(forces.abs().max()),
            "finite": bool(torch.isfinite(energy).all() and torch.isfinite(forces).all()),
            "forces_shape": list(forces.shape),
        }

    def cmd_time(self, index: int, calls: int) -> dict:
        """``calls`` full calculator paths (graph + energy + forces), each timed in seconds."""
        atoms = self.structures[index]
        graph_s, model_s = [], []
        for _ in range(calls):
            t0 = time.perf_counter()
            batch = self.batch_of([atoms])
            self.synchronize()
            t1 = time.perf_counter()
            self.backend.evaluate(batch)
            self.synchronize()
            t2 = time.perf_counter()
            graph_s.append(t1 - t0)
            model_s.append(t2 - t1)
        return {"graph_s": graph_s, "model_s": model_s, "total_s": [g + m for g, m in zip(graph_s, model_s)]}

    def cmd_train(self, indices: list[int], steps: int, lr: float = 1e-3) -> dict:
        """Adam steps on one fixed batch of the loaded structures (loss: E² + F², zero targets)."""
        batch = self.batch_of([self.structures[i] for i in indices])
        model = self.backend.model
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        step_s = []
        for _ in range(steps):
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            energy, forces = self.backend.evaluate(batch, training=True)
            loss = (energy**2).mean() + (forces**2).mean()
            loss.backward()
            optimizer.step()
            step_s.append(time.perf_counter() - t0)
        model.eval()
        return {"step_s": step_s, "batch_size": len(indices), "loss": float(loss.detach())}

    def serve(self, requests, replies) -> None:
        for line in requests:
            if not line.strip():
                continue
            request = json.loads(line)
            cmd = request.pop("cmd")
            if cmd == "quit":
                replies.write(json.dumps({"ok": True}) + "\n")
                replies.flush()
                return
            try:
                result = getattr(self, f"cmd_{cmd}")(**request)
                reply = {"ok": True, **result}
            except Exception as exc:  # reported to the driver, which raises it there
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            replies.write(json.dumps(reply) + "\n")
            replies.flush()


# --------------------------------------------------------------------------------------------
# One-shot memory measurement
# --------------------------------------------------------------------------------------------


def measure_memory(args: argparse.Namespace) -> dict:
    import ase.io

    set_threads(args.threads)
    rss_start = peak_rss_mib()
    backend = BACKENDS[args.backend](DTYPES[args.dtype])
    chunking = {} if args.atoms_per_chunk is None else {"atoms_per_chunk": json.loads(args.atoms_per_chunk)}
    backend.build(json.loads(args.elements), json.loads(args.hyper), **chunking)
    atoms = ase.io.read(args.structures, index=args.index)
    rss_built = peak_rss_mib()
    n_edges, seconds = 0, []
    for _ in range(args.calls):
        start = time.perf_counter()
        batch = backend.collate([backend.graph(atoms)])
        n_edges = backend.num_edges(batch)
        energy, _ = backend.evaluate(batch)
        seconds.append(time.perf_counter() - start)
        del batch
    return {
        "n_atoms": len(atoms),
        "n_edges": n_edges,
        "energy": float(energy.sum()),
        "seconds_per_call": seconds,
        "maxrss_start_mib": rss_start,
        "maxrss_built_mib": rss_built,
        "maxrss_peak_mib": peak_rss_mib(),
        "peak_rss_source": "VmHWM",
        "versions": backend.versions(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["serve", "memory"])
    parser.add_argument("--backend", choices=sorted(BACKENDS), required=True)
    parser.add_argument("--dtype", choices=sorted(DTYPES), required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--device", default="cpu", help="torch device of the model and graphs (serve mode)")
    parser.add_argument("--elements", help="JSON list of element symbols (memory mode)")
    parser.add_argument("--hyper", help="JSON hyperparameters (memory mode)")
    parser.add_argument("--structures", help="extxyz file (memory mode)")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--atoms-per-chunk", default=None, help='molnet: JSON int or "auto" (memory mode)')
    args = parser.parse_args()
    # The protocol owns the original stdout; whatever libraries print goes to stderr.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if args.mode == "serve":
        Server(args.backend, args.dtype, args.threads, args.device).serve(sys.stdin, replies)
    else:
        replies.write(json.dumps(measure_memory(args)) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
