"""MACE's product basis: the symmetric contraction of correlation order ν with element weights.

B_{i,c,LM} = Σ_{ν=1..νmax} Σ_p W^{(ν)}_{z_i,p,c} Σ_{l_1m_1..l_νm_ν} U^{(ν)}_{LM,p; l_1m_1..l_νm_ν} Π_t A_{i,c,l_tm_t}

The generalised Clebsch–Gordan tensors U^{(ν)} span all O(3)-equivariant maps from the ν-th
symmetric power of the per-channel irreps to the output irrep L; they are computed with
e3nn's :class:`~e3nn.o3.ReducedTensorProducts` (formula ``ij…=ji…`` with full permutation
symmetry). The sum is evaluated Horner-style (contract the highest order with A, add the next
order's weights, contract again), per element, with batched matrix products.

References:
    Batatia et al., "MACE" (NeurIPS 2022), eqs. 10–11;
    Drautz, "Atomic cluster expansion for accurate and transferable interatomic potentials" (2019).
"""

from __future__ import annotations

import functools
import string

import torch
from e3nn import o3
from torch import nn

from molnet.nn.dtypes import default_dtype

#: The two bases of U^{(ν)}: "reduced" (a basis of the symmetric couplings, e3nn's
#: ReducedTensorProducts) and "coupled" (every ordered chain of Clebsch–Gordan couplings
#: ((l_1 ⊗ l_2) → l_12) ⊗ l_3 → …, redundant under the symmetric contraction, as mace-torch's
#: default ``use_reduced_cg=False``). Both span the same functions of A; they differ in the number
#: of weights and hence in how a gradient optimiser moves through that space.
BASES = ("reduced", "coupled")


@functools.lru_cache(maxsize=None)
def coupling_tensors(irreps_in: str, ir_out: str, order: int, basis: str = "reduced") -> torch.Tensor:
    """U^{(ν)} for one output irrep: ``[2L+1, D, …(ν times)…, D, n_paths]`` (float64, cached).

    ``irreps_in`` are the per-channel irreps of A (multiplicity 1 each, dimension D).
    """
    if basis == "coupled":
        return _coupled_chains(irreps_in, ir_out, order)
    if basis != "reduced":
        raise ValueError(f"contraction basis must be one of {BASES}, got {basis!r}")
    irreps = o3.Irreps(irreps_in)
    ir = o3.Irrep(ir_out)
    indices = string.ascii_lowercase[:order]
    # symmetric under every permutation of the ν slots: the adjacent transpositions generate them all
    formula = "=".join(
        [indices] + [indices[:k] + indices[k + 1] + indices[k] + indices[k + 2 :] for k in range(order - 1)]
    )
    with default_dtype(torch.float64):
        rtp = o3.ReducedTensorProducts(formula, filter_ir_out=[ir], **{indices[0]: irreps})
    q = rtp.change_of_basis  # [n_paths * (2L+1), D, ..., D]
    n_paths = rtp.irreps_out.count(ir)
    if n_paths == 0:
        return torch.zeros((ir.dim,) + (irreps.dim,) * order + (0,), dtype=torch.float64)
    q = q.reshape((n_paths, ir.dim) + (irreps.dim,) * order)
    return q.movedim(0, -1).contiguous()


def _coupled_chains(irreps_in: str, ir_out: str, order: int) -> torch.Tensor:
    """Every ordered coupling chain ending in ``ir_out``, each Wigner-3j scaled by √(2l+1) ("component")."""
    irreps = o3.Irreps(irreps_in)
    target = o3.Irrep(ir_out)
    d = irreps.dim
    with default_dtype(torch.float64):
        # chains so far: (irrep, tensor [D, …(k times)…, D, 2l+1])
        chains = [(ir, torch.eye(d)[:, s]) for s, (_, ir) in zip(irreps.slices(), irreps)]
        for _ in range(order - 1):
            grown = []
            for ir_left, left in chains:
                for s, (_, ir) in zip(irreps.slices(), irreps):
                    select = torch.eye(d)[:, s]  # [D, 2l+1]
                    for ir_new in ir_left * ir:
                        c = o3.wigner_3j(ir_left.l, ir.l, ir_new.l) * ir_new.dim**0.5  # [left, m, new]
                        grown.append((ir_new, torch.einsum("...a,dm,amn->...dn", left, select, c)))
            chains = grown
        paths = [t for ir, t in chains if ir == target]
    if not paths:
        return torch.zeros((target.dim,) + (d,) * order + (0,), dtype=torch.float64)
    return torch.stack(paths, dim=-1).movedim(-2, 0).contiguous()  # [2L+1, D…, P]


class SymmetricContraction(nn.Module):
    """Element-weighted symmetric contraction of per-channel features A.

    Parameters
    ----------
    irreps_in
        Per-channel irreps of A, each with multiplicity 1 (e.g. ``0e+1o+2e+3o``).
    irreps_out
        Output irreps with multiplicity ``num_channels`` each (e.g. ``128x0e+128x1o``).
    correlation
        Maximal order ν (1–4); ν = 3 gives 4-body messages.
    num_elements
        Number of elements (one weight set each).

    Shapes:
        - input: A ``[n_nodes, C, D]``, species ``[n_nodes]`` int64
        - output: ``[n_nodes, irreps_out.dim]`` in e3nn layout
    """

    def __init__(
        self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, correlation: int, num_elements: int, basis: str = "reduced"
    ) -> None:
        super().__init__()
        if not 1 <= correlation <= 4:
            raise ValueError(f"correlation must be between 1 and 4, got {correlation}")
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.correlation = correlation
        self.basis = basis
        self.num_channels = self.irreps_out[0].mul
        self._out_dims = [
            ir.dim for _, ir in self.irreps_out
        ]  # plain ints: forward never touches Irreps (torch.compile)
        self.num_elements = num_elements
        if any(mul != self.num_channels for mul, _ in self.irreps_out):
            raise ValueError(f"all output irreps need the same multiplicity, got {self.irreps_out}")
        self.weights = nn.ParameterList()
        self._layout: list[list[tuple[int, int]]] = []  # per output irrep: (order, index into weights / -1)
        fingerprint = []
        dtype = torch.get_default_dtype()
        for k, (_, ir) in enumerate(self.irreps_out):
            layout = []
            for order in range(1, correlation + 1):
                u = coupling_tensors(str(self.irreps_in), str(ir), order, basis)
                n_paths = u.shape[-1]
                if n_paths == 0:
                    layout.append((order, -1))
                    continue
                # stored as [P, M*D^order] so that W^T U is one contiguous matmul
                self.register_buffer(
                    f"u_{k}_{order}", u.reshape(-1, n_paths).t().to(dtype).contiguous(), persistent=False
                )
                self.weights.append(nn.Parameter(torch.randn(num_elements, n_paths, self.num_channels) / n_paths))
                layout.append((order, len(self.weights) - 1))
                fingerprint.append(_fingerprint(u))
            self._layout.append(layout)
        # Saved with the weights: refuses a model file whose weights were fitted to another U basis.
        self.register_buffer("u_fingerprint", torch.tensor(fingerprint, dtype=torch.float64))
        #: optional other evaluator of the same operation (:class:`molnet.nn.cueq.CueqSymmetricContraction`)
        self.accelerated: nn.Module | None = None

    def use_cueq(self, enabled: bool, method: str | None, device: torch.device) -> None:
        """Evaluate with cuequivariance (:class:`molnet.nn.cueq.CueqSymmetricContraction`) or molnet's own code."""
        from molnet.nn.cueq import CueqSymmetricContraction

        self.accelerated = CueqSymmetricContraction(self, method, device) if enabled else None

    def bytes_per_atom(self, itemsize: int) -> int:
        """Bytes per atom of the Horner evaluation's largest intermediates, ``[C, (2L+1)·D^(ν−1)]`` per output irrep."""
        d = self.irreps_in.dim
        return itemsize * self.num_channels * sum(dim * d ** (self.correlation - 1) for dim in self._out_dims)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "u_fingerprint"
        if key in state_dict:
            stored = state_dict[key].to(torch.float64)
            if stored.shape != self.u_fingerprint.shape or not torch.allclose(
                stored, self.u_fingerprint.double(), rtol=1e-6, atol=1e-9
            ):
                raise RuntimeError(
                    "the coupling tensors of this e3nn version differ from those the weights were fitted with"
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, a: torch.Tensor, species: torch.Tensor, groups: list[torch.Tensor] | None = None) -> torch.Tensor:
        if self.accelerated is not None:
            return self.accelerated(a, species, self.weights)
        n, c, d = a.shape  # [n_nodes, C, D]
        if groups is None:
            groups = [torch.nonzero(species == e).flatten() for e in range(self.num_elements)]
        outputs = []
        for k, dim in enumerate(self._out_dims):
            out = a.new_zeros(n, c, dim)
            for element, idx in enumerate(groups):
                if len(idx) == 0:
                    continue
                out = out.index_copy(0, idx, self._contract(k, a[idx], element))
            outputs.append(out.reshape(n, c * dim))
        return torch.cat(outputs, dim=-1)

    def _contract(self, k: int, a: torch.Tensor, element: int) -> torch.Tensor:
        """Horner evaluation for one output irrep and the nodes of one element: ``[n_e, C, 2L+1]``."""
        n, c, d = a.shape
        t = None
        for order, w_index in reversed(self._layout[k]):
            if w_index >= 0:
                u_t = getattr(self, f"u_{k}_{order}")  # [P, M*D^order]
                uw = torch.matmul(self.weights[w_index][element].t(), u_t).unsqueeze(0)  # [1, C, M*D^order]
                t = uw if t is None else t + uw
            if t is not None:
                t = t.reshape(t.shape[0], c, -1, d)  # [n_e or 1, C, M*D^(order-1), D]
                if t.shape[0] == 1:  # only weights so far: one tensor shared by all nodes
                    t = torch.einsum("cyi,nci->ncy", t[0], a)
                else:
                    t = torch.einsum("ncyi,nci->ncy", t, a)
        if t is None:
            return a.new_zeros(n, c, self._out_dims[k])
        return t.reshape(n, c, -1)

    @torch.no_grad()
    def basis_functions(self, a: torch.Tensor, element: int = 0) -> torch.Tensor:
        """The contraction of ``a`` with each single weight of ``element`` set to 1: ``[n·out_dim, Σ paths]``.

        Column p is the output, flattened, when weight p (in the order of ``weights``, first
        channel) is 1 and all others 0: the basis that the weights combine. ``a``: ``[n, 1, D]``.
        """
        species = torch.full((len(a),), element, dtype=torch.long)
        saved = [w.detach().clone() for w in self.weights]
        columns = []
        try:
            for w in self.weights:
                w.zero_()
            for w in self.weights:
                for p in range(w.shape[1]):
                    w[element, p, 0] = 1.0
                    columns.append(self(a, species).reshape(-1))
                    w[element, p, 0] = 0.0
        finally:
            for w, old in zip(self.weights, saved):
                w.copy_(old)
        return torch.stack(columns, dim=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.irreps_in} -> {self.irreps_out}, correlation={self.correlation})"


def _fingerprint(u: torch.Tensor) -> list[float]:
    flat = u.reshape(-1)
    ramp = torch.linspace(-1.0, 1.0, len(flat), dtype=torch.float64)
    return [float(flat.abs().sum()), float((flat * ramp).sum())]
