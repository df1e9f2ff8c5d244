"""Can ``torch.compile`` take molnet-MACE's training step on the CPU?

A training step with a force loss differentiates the forces, which are themselves a gradient:
the double backward. This script runs one such step eagerly, then with the model body through
``torch.compile`` (TorchInductor, dynamic shapes; donated buffers off, since they forbid
``create_graph``), and reports whether the compiled step ran and whether its loss and gradients
equal the eager ones. Run it again after a torch upgrade::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compile_training.py [--no-save]

One JSON line is printed and appended to ``benchmarks/results/compile_training.jsonl``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (structures, hyperparameters and record helpers)


def training_step(model, batch) -> tuple[float, list]:
    """Loss E² + F² on one batch, backward; returns the loss and the parameter gradients."""
    model.zero_grad()
    out = model(batch, compute_forces=True, training=True)
    loss = out["energy"].square().sum() + out["forces"].square().sum()
    loss.backward()
    return float(loss), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    args.quick, args.omp_wait_policy, args.threads = False, None, 1

    import torch
    from torch_geometric.data import Batch

    from molnet.data import AtomicGraph
    from molnet.models import build_model

    torch.set_num_threads(1)
    _, frames = run.read_structures([15, 45])
    hyper = run.hyperparameters(32, 1, 12.16)
    torch.manual_seed(0)
    model = build_model({"name": "mace", "elements": ["H", "C", "O"], **hyper}, torch.float64).train()
    model.set_chunking(None)  # the compiled path evaluates whole structures
    batch = Batch.from_data_list([AtomicGraph.from_atoms(a, hyper["r_max"], dtype=torch.float64) for a in frames])
    eager_loss, eager_grads = training_step(model, batch)
    record = {"torch": torch.__version__, "eager_loss": eager_loss, "compiled_step_ran": False}
    torch._functorch.config.donated_buffer = False
    model.body.forward = torch.compile(model.body.forward, dynamic=True)
    start = time.perf_counter()
    try:
        loss, grads = training_step(model, batch)
    except Exception as error:  # the finding is the failure itself
        record["error"] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
    else:
        record.update(
            compiled_step_ran=True,
            compiled_loss=loss,
            max_gradient_difference=max(float((g - e).abs().max()) for g, e in zip(grads, eager_grads)),
        )
    record["compiled_attempt_s"] = round(time.perf_counter() - start, 1)
    run.emit("compile_training", record, args)


if __name__ == "__main__":
    main()
