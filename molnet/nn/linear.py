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

from dataclasses import dataclass

import torch
from e3nn import o3

from molnet.nn.inputs import gather_padded, inverse_permutation


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


@dataclass(frozen=True)
class ElementGroups:
    """The atoms of a call grouped by element in a padded table ``[n_present, width]``, built once
    per forward for :meth:`ElementLinear.by_element`.

    Attributes:
        present: ``[n_present]`` the elements present, ascending
        slots: ``[n_present, width]`` the atom in each slot (atoms of one element in atom order);
            ``n_atoms`` marks an empty slot
        position: ``[n_atoms]`` each atom's slot in the flattened table
        order: ``[n_atoms]`` the atoms sorted by element (atom order within an element)
        rank: ``[n_atoms]`` each atom's position in ``order``
        elements, sizes: the elements present and their numbers of atoms, as plain ints
    """

    present: torch.Tensor
    slots: torch.Tensor
    position: torch.Tensor
    order: torch.Tensor
    rank: torch.Tensor
    elements: list[int]
    sizes: list[int]

    @classmethod
    def build(cls, species: torch.Tensor, num_elements: int) -> "ElementGroups":
        """Group the atoms of ``species [n_atoms]`` (element indices below ``num_elements``)."""
        n = len(species)
        counts = torch.bincount(species, minlength=num_elements)  # [num_elements]
        present = torch.nonzero(counts).flatten()
        per_element = counts.tolist()  # one device synchronisation for the plain ints below
        elements = [e for e, count in enumerate(per_element) if count]
        sizes = [per_element[e] for e in elements]
        width = max(sizes, default=0)
        order = torch.argsort(species, stable=True)
        element = species[order]
        group = (torch.cumsum(counts > 0, 0) - 1)[element]  # table row of each atom of `order`
        slot = torch.arange(n, device=species.device) - (torch.cumsum(counts, 0) - counts)[element]
        flat = group * width + slot  # [n]
        slots = torch.full((len(present) * width,), n, dtype=torch.long, device=species.device)
        slots[flat] = order
        position = torch.empty_like(order)
        position[order] = flat
        return cls(
            present=present,
            slots=slots.view(len(present), width),
            position=position,
            order=order,
            rank=inverse_permutation(order),
            elements=elements,
            sizes=sizes,
        )

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Per-atom rows ``[n_atoms, F]`` → ``[n_present, width, F]``, zero in empty slots."""
        return gather_padded(x, self.slots)

    def scatter(self, table: torch.Tensor) -> torch.Tensor:
        """``[n_present, width, F]`` → per-atom rows ``[n_atoms, F]``."""
        return table.flatten(0, 1)[self.position]


class ElementLinear(o3.FullyConnectedTensorProduct):
    """e3nn's ``FullyConnectedTensorProduct(irreps_in, "E x 0e", irreps_out)`` of features and the
    one-hot encoding of E elements (MACE's element-dependent self-connection), with
    :meth:`by_element`: one linear map per element present.

    Same constructor, parameters, initialisation and ``state_dict`` as e3nn. With a one-hot second
    input, e3nn's product is, per instruction ``irreps_in[i] → irreps_out[k]`` (same irrep),
    ``c · Σ_u W[u, e, w] x[u, m]`` for the atom's element e, where ``c`` is the path weight times
    the Wigner-3j entry of ``l ⊗ 0 → l``. e3nn evaluates it over all E elements (``E·mul_in·mul_out``
    multiply-adds per component of every atom); :meth:`by_element` multiplies each element's atoms
    by its ``[mul_in, mul_out]`` block only, E times fewer (89 elements in the foundation models).

    Shapes:
        - forward (e3nn): ``x [n, irreps_in.dim]``, ``onehot [n, E]`` → ``[n, irreps_out.dim]``
        - by_element: ``x [n, irreps_in.dim]``, :class:`ElementGroups` of the same n atoms →
          ``[n, irreps_out.dim]``
    """

    def __init__(self, irreps_in, num_elements: int, irreps_out) -> None:
        super().__init__(irreps_in, o3.Irreps(f"{num_elements}x0e"), irreps_out)
        self.num_elements = num_elements
        self._in_dims = [mul * ir.dim for mul, ir in self.irreps_in1]
        self._out_dims = [mul * ir.dim for mul, ir in self.irreps_out]
        offsets = [0]
        for ins in self.instructions:
            offsets.append(offsets[-1] + ins.path_shape[0] * ins.path_shape[1] * ins.path_shape[2])
        # (input irrep, output irrep, mul_in, mul_out, 2l+1, weight offset, coefficient) as plain ints
        self._paths: list[tuple[int, int, int, int, int, int, float]] = []
        for ins, offset in zip(self.instructions, offsets):
            mul_in, ir = self.irreps_in1[ins.i_in1]
            mul_out = self.irreps_out[ins.i_out].mul
            coefficient = ins.path_weight * float(o3.wigner_3j(ir.l, 0, ir.l)[0, 0, 0])
            self._paths.append((ins.i_in1, ins.i_out, mul_in, mul_out, ir.dim, offset, coefficient))

    def by_element(self, x: torch.Tensor, groups: ElementGroups) -> torch.Tensor:
        """The product with the one-hot elements of ``groups``' atoms, one batched product per
        instruction over the elements present."""
        table = groups.gather(x)  # [G, width, irreps_in.dim]
        g, width = table.shape[0], table.shape[1]
        blocks = table.split(self._in_dims, dim=-1)
        outputs: list[torch.Tensor | None] = [None] * len(self._out_dims)
        for i_in, i_out, mul_in, mul_out, dim, offset, coefficient in self._paths:
            w = self.weight[offset : offset + mul_in * self.num_elements * mul_out].view(mul_in, -1, mul_out)
            w = w.transpose(0, 1)[groups.present] * coefficient  # [G, mul_in, mul_out]
            if dim == 1:
                y = torch.bmm(blocks[i_in], w)  # [G, width, mul_out]
            else:  # [G, width, mul_in, 2l+1] → [G, width·(2l+1), mul_in] @ w → back to [G, width, mul_out·(2l+1)]
                xb = blocks[i_in].reshape(g, width, mul_in, dim).transpose(2, 3).reshape(g, width * dim, mul_in)
                y = torch.bmm(xb, w).reshape(g, width, dim, mul_out).transpose(2, 3).reshape(g, width, mul_out * dim)
            outputs[i_out] = y if outputs[i_out] is None else outputs[i_out] + y
        parts = [table.new_zeros(g, width, d) if o is None else o for o, d in zip(outputs, self._out_dims)]
        return groups.scatter(torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0])
