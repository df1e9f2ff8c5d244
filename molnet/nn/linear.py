"""e3nn's equivariant linear layer, evaluated with one matrix product per output irrep.

:class:`Linear` is :class:`e3nn.o3.Linear` (same constructor, parameters, initialisation,
normalisation and ``state_dict``), with a forward for its common case: internal, shared weights
and inputs of shape ``[n, irreps_in.dim]``. e3nn evaluates each instruction (an input irrep mixed
into an output irrep) with its own einsum in a generated graph; at the sizes of a molecule
(tens of atoms) those calls, not the arithmetic, are most of a linear layer's time. Here the
instructions into one output irrep whose inputs lie next to each other in ``irreps_in`` are one
product ``[n·(2l+1), Σ mul_in] @ [Σ mul_in, mul_out]``: e3nn's layout ``[n, mul, 2l+1]`` of
adjacent irreps of one l is a single strided view, and their weights, each scaled by its path
weight, are stacked. Other cases (external weights, extra batch dimensions) run e3nn's forward.

References:
    e3nn ``o3.Linear`` (instructions, ``path_weight`` = fan-in normalisation, weight layout).
"""

from __future__ import annotations

import torch
from e3nn import o3


class Linear(o3.Linear):
    """:class:`e3nn.o3.Linear` with a forward of one product per run of adjacent inputs per output irrep.

    Shapes:
        - input ``[n, irreps_in.dim]``; output ``[n, irreps_out.dim]`` in e3nn layout
          (``[..., irreps_in.dim]`` inputs and external weights go through e3nn's forward)
    """

    def __init__(self, irreps_in, irreps_out, **kwargs) -> None:
        super().__init__(irreps_in, irreps_out, **kwargs)
        self._fast = self.internal_weights and self.shared_weights and self.bias_numel == 0
        starts = [s.start for s in self.irreps_in.slices()]
        offsets, offset = [], 0
        for ins in self.instructions:
            offsets.append(offset)
            offset += ins.path_shape[0] * ins.path_shape[1] if ins.i_in >= 0 else 0
        # per output irrep: (mul_out, 2l+1, runs); a run is (input start, Σ mul_in, [(weight offset, mul_in, path weight)])
        self._plan: list[tuple[int, int, list[tuple[int, int, list[tuple[int, int, float]]]]]] = []
        for i_out, (mul_out, ir_out) in enumerate(self.irreps_out):
            runs: list[tuple[int, int, list[tuple[int, int, float]]]] = []
            previous = None
            for ins, weight_offset in sorted(
                ((ins, off) for ins, off in zip(self.instructions, offsets) if ins.i_out == i_out and ins.i_in >= 0),
                key=lambda pair: pair[0].i_in,
            ):
                mul_in = self.irreps_in[ins.i_in].mul
                if mul_in == 0 or mul_out == 0:
                    continue
                block = (weight_offset, mul_in, float(ins.path_weight))
                if previous is not None and ins.i_in == previous + 1:
                    start, total, blocks = runs[-1]
                    runs[-1] = (start, total + mul_in, blocks + [block])
                else:
                    runs.append((starts[ins.i_in], mul_in, [block]))
                previous = ins.i_in
            self._plan.append((mul_out, ir_out.dim, runs))

    def forward(
        self, features: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not self._fast or weight is not None or bias is not None or features.dim() != 2:
            return super().forward(features, weight, bias)
        n = features.shape[0]
        outputs = []
        for mul_out, dim, runs in self._plan:
            out = None
            for start, mul_in, blocks in runs:
                parts = [scale * self.weight[off : off + m * mul_out].view(m, mul_out) for off, m, scale in blocks]
                w = torch.cat(parts) if len(parts) > 1 else parts[0]  # [Σ mul_in, mul_out]
                x = features[:, start : start + mul_in * dim]
                if dim == 1:
                    y = x @ w  # [n, mul_out]
                else:  # [n, mul_in, 2l+1] → [n, 2l+1, mul_in] @ w → back to e3nn's [n, mul_out, 2l+1]
                    y = (x.reshape(n, mul_in, dim).transpose(1, 2) @ w).transpose(1, 2).reshape(n, mul_out * dim)
                out = y if out is None else out + y
            outputs.append(out if out is not None else features.new_zeros(n, mul_out * dim))
        if len(outputs) == 1:
            return outputs[0]
        return torch.cat(outputs, dim=1) if outputs else features.new_zeros(n, 0)
