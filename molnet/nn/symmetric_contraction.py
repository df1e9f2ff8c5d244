"""MACE's product basis: the symmetric contraction of correlation order ν with element weights.

B_{i,c,LM} = Σ_{ν=1..νmax} Σ_p W^{(ν)}_{z_i,p,c} Σ_{l_1m_1..l_νm_ν} U^{(ν)}_{LM,p; l_1m_1..l_νm_ν} Π_t A_{i,c,l_tm_t}

The generalised Clebsch–Gordan tensors U^{(ν)} span all O(3)-equivariant maps from the ν-th
symmetric power of the per-channel irreps to the output irrep L; they are computed with
e3nn's :class:`~e3nn.o3.ReducedTensorProducts` (formula ``ij…=ji…`` with full permutation
symmetry). Because Π_t A_{l_tm_t} is symmetric in its ν slots, only the sorted index tuples
i_1 ≤ … ≤ i_ν matter: U^{(ν)} is folded once onto these monomials (summing the entries of every
permutation), the monomials of A are built order by order from the previous order's (each
order's tuples ordered by their largest index, so those whose largest index is at most k form a
prefix), and the contraction becomes one matrix product per element with the weights folded
into U. At ν = 3 and D = 16 a channel has 968 monomials against 4,368 entries of A⊗A⊗A and its
lower powers.

References:
    Batatia et al., "MACE" (NeurIPS 2022), eqs. 10–11;
    Drautz, "Atomic cluster expansion for accurate and transferable interatomic potentials" (2019).
"""

from __future__ import annotations

import functools
import itertools
import math
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


@functools.lru_cache(maxsize=None)
def monomials(dim: int, order: int) -> tuple[tuple[int, ...], ...]:
    """The sorted index tuples i_1 ≤ … ≤ i_ν (ν = ``order``) over ``dim`` components, in the order
    :func:`monomial_levels` builds them: by largest index, and within it as the previous order's list."""
    if order == 1:
        return tuple((i,) for i in range(dim))
    shorter = monomials(dim, order - 1)
    return tuple(t + (k,) for k in range(dim) for t in shorter if t[-1] <= k)


def fold_onto_monomials(u: torch.Tensor, slots: int) -> torch.Tensor:
    """U^{(ν)} ``[M, D, …(ν times)…, D, P]`` with its first ``slots`` slots folded onto the sorted
    tuples of ``monomials(D, slots)``: ``[P, M, n_monomials, D^(ν - slots)]``.

    Each sorted tuple's entry is the sum of U over the tuple's permutations, so that contracting
    with the monomials of A equals contracting U with A⊗…⊗A over those slots.
    """
    m, d, p = u.shape[0], u.shape[1], u.shape[-1]
    order = u.dim() - 2
    position = {t: i for i, t in enumerate(monomials(d, slots))}
    target = torch.tensor([position[tuple(sorted(t))] for t in itertools.product(range(d), repeat=slots)])
    flat = u.reshape(m, d**slots, d ** (order - slots), p)
    folded = flat.new_zeros(m, len(position), d ** (order - slots), p).index_add_(1, target, flat)
    return folded.permute(3, 0, 1, 2).contiguous()


def monomial_levels(a: torch.Tensor, orders: int) -> list[torch.Tensor]:
    """The monomials of ``a [..., D]`` of orders 1 … ``orders``, ``[..., n_monomials]`` each, in the
    order of :func:`monomials`.

    The monomials of order ν with largest index k are those of order ν − 1 whose largest index is at
    most k, a prefix of that order's list with C(k + ν − 1, ν − 1) entries, times ``a[..., k]``. So
    each order is D products of slices, one concatenation: no index-select, whose CPU kernel along
    the last dimension (and its backward) is an order of magnitude slower.
    """
    d = a.shape[-1]
    levels = [a]
    for order in range(2, orders + 1):
        shorter = levels[-1]
        blocks = [shorter[..., : math.comb(k + order - 1, order - 1)] * a[..., k : k + 1] for k in range(d)]
        levels.append(torch.cat(blocks, dim=-1))
    return levels


class SymmetricContraction(nn.Module):
    """Element-weighted symmetric contraction of per-channel features A.

    Evaluated on monomials (see the module docstring): with M_ν the monomials of A of order ν and
    U folded onto them, the highest order is written as
    Σ_k A_k Σ_T M_{ν-1}(T) U[T, k], so one matrix product per element,
    ``[C, n_e, n_monomials(ν-1)] @ [C, n_monomials(ν-1), ΣM·(D+1)]``, gives order ν (columns k < D,
    contracted with A_k afterwards) and order ν − 1 (column D) at once; lower orders are one product
    each.

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
        # plain ints: forward never touches Irreps (torch.compile)
        self._out_dims = [ir.dim for _, ir in self.irreps_out]
        d = self._dim_in = self.irreps_in.dim
        #: orders of the monomials built from A: 1 … ν − 1 (just 1 when ν = 1)
        self._levels = list(range(1, max(correlation - 1, 1) + 1))
        self._num_monomials = [len(monomials(d, order)) for order in self._levels]
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
                if order == correlation > 1:  # the last slot stays A_k: [P, M, D, n_monomials(ν-1)]
                    folded = fold_onto_monomials(u, order - 1).transpose(2, 3)
                else:  # [P, M, n_monomials(order)]
                    folded = fold_onto_monomials(u, order)
                # stored as [P, rest]: folding the weights in is one matmul
                self.register_buffer(
                    f"u_{k}_{order}", folded.reshape(n_paths, -1).to(dtype).contiguous(), persistent=False
                )
                self.weights.append(nn.Parameter(torch.randn(num_elements, n_paths, self.num_channels) / n_paths))
                layout.append((order, len(self.weights) - 1))
                fingerprint.append(_fingerprint(u))
            self._layout.append(layout)
        # Saved with the weights: refuses a model file whose weights were fitted to another U basis.
        self.register_buffer("u_fingerprint", torch.tensor(fingerprint, dtype=torch.float64))
        #: optional other evaluator of the same operation (:class:`molnet.nn.cueq.CueqSymmetricContraction`)
        self.accelerated: nn.Module | None = None
        #: (weights' key, {element: (highest orders' folded weights, lower orders')}); see _reused_folded_weights
        self._folded_cache: tuple[tuple, dict[int, tuple]] | None = None

    def use_cueq(self, enabled: bool, method: str | None, device: torch.device) -> None:
        """Evaluate with cuequivariance (:class:`molnet.nn.cueq.CueqSymmetricContraction`) or molnet's own code."""
        from molnet.nn.cueq import CueqSymmetricContraction

        self.accelerated = CueqSymmetricContraction(self, method, device) if enabled else None

    def bytes_per_atom(self, itemsize: int) -> int:
        """Bytes per atom of the largest intermediates: the monomials of A (the highest twice, while
        built), and the product with the highest order's weights (twice, while contracted with A)."""
        d, m = self.irreps_in.dim, sum(self._out_dims)
        monomial_entries = sum(self._num_monomials) + 2 * self._num_monomials[-1]
        return itemsize * self.num_channels * (monomial_entries + 2 * m * (d + 1))

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

    def forward(self, a: torch.Tensor, species: torch.Tensor, constant_weights: bool = False) -> torch.Tensor:
        """``constant_weights``: no derivative with respect to the weights will be taken, so the
        weights folded into U are kept and reused while the weights stay the same."""
        if self.accelerated is not None:
            return self.accelerated(a, species, self.weights)
        n, c, d = a.shape  # [n_nodes, C, D]
        if n == 0:
            return a.new_zeros(0, c * sum(self._out_dims))
        order = torch.argsort(species, stable=True)  # atoms grouped by element
        counts = torch.bincount(species, minlength=self.num_elements).tolist()
        present = [e for e, count in enumerate(counts) if count]
        sizes = [counts[e] for e in present]
        x = a[order].transpose(0, 1).contiguous()  # [C, n, D]
        levels = [
            level.split(sizes, dim=1) for level in monomial_levels(x, self._levels[-1])
        ]  # per element [C, n_e, n_mono]
        top, lower = self._reused_folded_weights(present) if constant_weights else self._folded_weights(present)
        out = None
        if top is not None:  # orders ν and ν − 1 from the monomials of order ν − 1
            s = torch.cat([torch.bmm(m, w.transpose(1, 2)) for m, w in zip(levels[-1], top)], dim=1)
            s = s.unflatten(2, (-1, d + 1))  # [C, n, ΣM, D + 1]
            out = (s[..., :d] * x.unsqueeze(2)).sum(-1) + s[..., d]  # [C, n, ΣM]
        for level, weights in zip(levels, lower):
            part = torch.cat([torch.bmm(m, w.transpose(1, 2)) for m, w in zip(level, weights)], dim=1)
            out = part if out is None else out + part
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n, device=order.device)
        out = out.transpose(0, 1)[rank]  # [n, C, ΣM] in atom order
        blocks = out.split(self._out_dims, dim=2)
        return torch.cat([block.reshape(n, c * dim) for block, dim in zip(blocks, self._out_dims)], dim=-1)

    def _reused_folded_weights(self, elements: list[int]) -> tuple[list | None, list[list]]:
        """:meth:`_folded_weights` without autograd, per element, kept for later calls while the
        weights stay the same (same storage and version counter: an optimiser step,
        ``load_state_dict`` or ``.to()`` changes them). Kept per element, so that chunks of a
        structure, each with its own elements, share them."""
        if torch.compiler.is_compiling():  # traced graphs hold no Python-side state
            return self._folded_weights(elements)
        key = tuple((w.data_ptr(), w._version, w.dtype, w.device) for w in self.weights)
        if self._folded_cache is None or self._folded_cache[0] != key:
            self._folded_cache = (key, {})
        kept = self._folded_cache[1]
        missing = [e for e in elements if e not in kept]
        if missing:
            with torch.no_grad():
                top, lower = self._folded_weights(missing)
            for i, e in enumerate(missing):
                kept[e] = (None if top is None else top[i], [w[i] for w in lower])
        per_element = [kept[e] for e in elements]
        top = None if per_element[0][0] is None else [t for t, _ in per_element]
        return top, [[low[o] for _, low in per_element] for o in range(len(per_element[0][1]))]

    def _folded_weights(self, elements: list[int]) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """Σ_p W_{z,p,c} U_fold[p, …] for ``elements``: the highest orders' ``[E', C, ΣM·(D+1),
        n_monomials(ν-1)]`` (None when ν = 1), and per lower order ``[E', C, ΣM, n_monomials]``."""
        e, c, d = len(elements), self.num_channels, self._dim_in

        def folded(k: int, order: int, *shape: int) -> torch.Tensor:
            w_index = self._layout[k][order - 1][1]
            if w_index < 0:
                return self.weights[0].new_zeros(e, c, self._out_dims[k], *shape)
            w = self.weights[w_index][elements].transpose(1, 2)  # [E', C, P]
            return torch.matmul(w, getattr(self, f"u_{k}_{order}")).reshape(e, c, self._out_dims[k], *shape)

        nu = self.correlation
        top = None
        lower_orders = self._levels
        if nu > 1:
            n_mono = self._num_monomials[-1]
            top = torch.cat(
                [
                    torch.cat([folded(k, nu, d, n_mono), folded(k, nu - 1, 1, n_mono)], dim=3)
                    for k in range(len(self._out_dims))
                ],
                dim=2,
            ).flatten(2, 3)
            lower_orders = self._levels[:-1]
        lower = [
            torch.cat([folded(k, order, self._num_monomials[order - 1]) for k in range(len(self._out_dims))], dim=2)
            for order in lower_orders
        ]
        return top, lower

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
