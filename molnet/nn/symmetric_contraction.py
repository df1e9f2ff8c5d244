"""MACE's product basis: the symmetric contraction of correlation order ν with element weights.

B_{i,c,LM} = Σ_{ν=1..νmax} Σ_p W^{(ν)}_{z_i,p,c} Σ_{l_1m_1..l_νm_ν} U^{(ν)}_{LM,p; l_1m_1..l_νm_ν} Π_t A_{i,c,l_tm_t}

The generalised Clebsch–Gordan tensors U^{(ν)} span all O(3)-equivariant maps from the ν-th
symmetric power of the per-channel irreps to the output irrep L; they are the basis of e3nn's
:class:`~e3nn.o3.ReducedTensorProducts` (formula ``ij…=ji…`` with full permutation symmetry),
found among the coupling chains that end in L only (:func:`_symmetric_reduced_basis`). Because Π_t A_{l_tm_t} is symmetric in its ν slots, only the sorted index tuples
i_1 ≤ … ≤ i_ν matter: U^{(ν)} is folded once onto these monomials (summing the entries of every
permutation), the monomials of A are built order by order from the previous order's (each
order's tuples ordered by their largest index, so those whose largest index is at most k form a
prefix), and the contraction becomes matrix products per element with the weights folded
into U. At ν = 3 and D = 16 a channel has 968 monomials against 4,368 entries of A⊗A⊗A and its
lower powers. U couples a product of components only to outputs of the product's parity, so the
highest orders are split by the parity of the monomials: two products with half the weights of
one (see :meth:`SymmetricContraction._top_orders`).

References:
    Batatia et al., "MACE" (NeurIPS 2022), eqs. 10–11;
    Drautz, "Atomic cluster expansion for accurate and transferable interatomic potentials" (2019).
"""

from __future__ import annotations

import functools
import itertools
import math

import torch
from e3nn import o3
from e3nn.math import orthonormalize
from torch import nn

from molnet.nn.dtypes import default_dtype
from molnet.nn.linear import ElementGroups

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
    return _symmetric_reduced_basis(o3.Irreps(irreps_in), o3.Irrep(ir_out), order)


def _recursive_chains(irreps: o3.Irreps, order: int, target: o3.Irrep, sort: bool = True) -> list[torch.Tensor]:
    """The Clebsch–Gordan chains ((i_1 ⊗ i_2) → l_12) ⊗ i_3 → … → ``target``, each ``[2L+1, D^order]``.

    Each step couples with ``wigner_3j(l_out, l_left, l_right) · √(2l_out + 1)`` ("component"
    normalisation; e3nn's 3j symbols are exactly invariant under cyclic permutation of their
    indices). Chains are enumerated by left chain, then right irrep, then output irrep; with
    ``sort`` the intermediate chains are sorted by irrep (stably) after every step from the second
    on, the order of e3nn's ``ReducedTensorProducts``.
    """
    d = irreps.dim
    with default_dtype(torch.float64):
        eye = torch.eye(d)
        if any(mul != 1 for mul, _ in irreps):
            raise ValueError(f"the per-channel irreps of A need multiplicity 1 each, got {irreps}")
        chains = [(ir, eye[s]) for s, (_, ir) in zip(irreps.slices(), irreps)]
        for step in range(1, order):
            last = step == order - 1
            grown = []
            for ir_left, left in chains:  # left: [2l+1, D^step]
                for s, (_, ir) in zip(irreps.slices(), irreps):
                    for ir_new in ir_left * ir:
                        if last and ir_new != target:
                            continue
                        w = o3.wigner_3j(ir_new.l, ir_left.l, ir.l) * ir_new.dim**0.5  # [new, left, right]
                        chain = torch.zeros(ir_new.dim, left.shape[1], d)
                        chain[:, :, s] = torch.einsum("ak,nar->nkr", left, w)
                        grown.append((ir_new, chain.reshape(ir_new.dim, -1)))
            chains = sorted(grown, key=lambda c: c[0]) if sort else grown
        return [chain for ir, chain in chains if ir == target]


def _symmetric_reduced_basis(irreps: o3.Irreps, target: o3.Irrep, order: int, eps: float = 1e-9) -> torch.Tensor:
    """The basis of e3nn's ``ReducedTensorProducts("ij…=ji…", filter_ir_out=[target])``, found
    among the chains that end in ``target`` only: ``[2L+1, D, …, D, n_paths]``.

    A combination x of the chains R_u is symmetric in its slots when x lies in the null space of
    K = R (1 − Π) Rᵀ (first component of the irrep, Π the average over slot permutations). e3nn
    finds it as the null space of [[R Rᵀ, −R Pᵀ], [−P Rᵀ, P Pᵀ]] with P an orthonormal basis of
    the symmetric tensors; that space is {(x, P Rᵀ x)}. The chains are orthonormal in each
    component (R Rᵀ = 1), so its projector restricted to x is B Bᵀ / 2 for an orthonormal basis B
    of null(K). Gram–Schmidt of that projector's rows (``e3nn.math.orthonormalize``) and a unit
    "component" norm give e3nn's basis, without the D^ν × D^ν chains of every output irrep and the
    permutation basis that e3nn builds.
    """
    d = irreps.dim
    empty = torch.zeros((target.dim,) + (d,) * order + (0,), dtype=torch.float64)
    chains = _recursive_chains(irreps, order, target)
    if not chains:
        return empty
    r = torch.stack(chains)  # [mul, 2L+1, D^ν]
    first = r[:, 0].reshape((len(r),) + (d,) * order)
    symmetric = sum(first.permute(0, *(1 + i for i in p)) for p in itertools.permutations(range(order)))
    symmetric = symmetric / math.factorial(order)
    values, vectors = torch.linalg.eigh(first.flatten(1) @ (first - symmetric).flatten(1).T)
    null = vectors[:, values < eps]  # B [mul, k]
    if null.shape[1] == 0:
        return empty
    projector = null @ null.T / 2
    x, _ = orthonormalize(projector, eps)
    basis = torch.einsum("pu,umw->pmw", x, r)  # [n_paths, 2L+1, D^ν]
    basis = basis * (target.dim / basis.pow(2).sum(dim=(1, 2), keepdim=True)).sqrt()
    return basis.reshape((len(x), target.dim) + (d,) * order).movedim(0, -1).contiguous()


def _coupled_chains(irreps_in: str, ir_out: str, order: int) -> torch.Tensor:
    """Every ordered coupling chain ending in ``ir_out``, each Wigner-3j scaled by √(2l+1) ("component")."""
    irreps, target = o3.Irreps(irreps_in), o3.Irrep(ir_out)
    paths = _recursive_chains(irreps, order, target, sort=False)
    if not paths:
        return torch.zeros((target.dim,) + (irreps.dim,) * order + (0,), dtype=torch.float64)
    return torch.stack(paths, dim=-1).reshape((target.dim,) + (irreps.dim,) * order + (len(paths),))  # [2L+1, D…, P]


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
    each order is D products of a prefix and a column (the columns from one split of ``a``, whose
    backward is one concatenation) and one concatenation: on large inputs several times faster,
    forward and backward, than an index-select along the last dimension or an outer product
    ``a ⊗ M_{ν−1}`` cut to its prefixes.
    """
    d = a.shape[-1]
    if d == 0:  # no components, no monomials
        return [a] * orders
    columns = a.split(1, dim=-1)  # [..., 1] each
    levels = [a]
    for order in range(2, orders + 1):
        shorter = levels[-1]
        blocks = [shorter[..., : math.comb(k + order - 1, order - 1)] * columns[k] for k in range(d)]
        levels.append(torch.cat(blocks, dim=-1))
    return levels


def parity_blocks(components: list[list[int]], order: int) -> list[list[int]]:
    """The monomials of order ``order`` in two blocks, even and odd (by their number of odd
    components), as positions in :func:`monomials`, in the order :func:`parity_block_values` builds them.

    ``components``: A's even and odd components. A block is a sequence of outer products
    M_{order−q}(even) ⊗ M_q(odd) over the q of its parity (even index major).
    """
    if order < 1:
        return [[], []]
    position = {t: i for i, t in enumerate(monomials(len(components[0]) + len(components[1]), order))}

    def tuples(comps: list[int], k: int) -> list[tuple[int, ...]]:
        return [()] if k == 0 else [tuple(comps[i] for i in t) for t in monomials(len(comps), k)]

    return [
        [
            position[tuple(sorted(even + odd))]
            for q in range(parity, order + 1, 2)
            for even in tuples(components[0], order - q)
            for odd in tuples(components[1], q)
        ]
        for parity in (0, 1)
    ]


def parity_block_values(levels: list[list[torch.Tensor]], order: int, parity: int) -> torch.Tensor:
    """The monomials of one block of :func:`parity_blocks`, ``[..., rows]``, from
    ``levels = [monomial_levels(even components, order), monomial_levels(odd components, order)]``."""
    even, odd = levels
    parts = []
    for q in range(parity, order + 1, 2):
        if q == 0:
            parts.append(even[order - 1])
        elif q == order:
            parts.append(odd[order - 1])
        else:
            parts.append((even[order - q - 1].unsqueeze(-1) * odd[q - 1].unsqueeze(-2)).flatten(-2))
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def _ranges(components: list[int]) -> list[tuple[int, int]]:
    """Sorted indices as runs ``(start, stop)`` of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for i in components:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _columns(x: torch.Tensor, ranges: list[tuple[int, int]]) -> torch.Tensor:
    """``x[..., ranges]``: the runs of columns ``(start, stop)`` side by side."""
    if len(ranges) == 1:
        return x[..., ranges[0][0] : ranges[0][1]]
    return torch.cat([x[..., i:j] for i, j in ranges], dim=-1) if ranges else x[..., :0]


def _contract_last(s: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``s [..., M·F]`` and ``factors [..., F]`` → ``Σ_f s[..., m, f] factors[..., f]``, ``[..., M]``."""
    return (s.unflatten(-1, (-1, factors.shape[-1])) * factors.unsqueeze(-2)).sum(-1)


class SymmetricContraction(nn.Module):
    """Element-weighted symmetric contraction of per-channel features A.

    Evaluated on monomials (see the module docstring): with M_ν the monomials of A of order ν and
    U folded onto them, the highest order is written as
    Σ_k A_k Σ_T M_{ν-1}(T) U[T, k], so matrix products per element,
    ``[C, n_e, rows_b] @ [C, rows_b, columns_b]`` for the two parity blocks b of the monomials of
    order ν − 1 (:meth:`_top_orders`), give order ν (columns contracted with A_k afterwards) and
    order ν − 1 (a column multiplied by 1) at once; lower orders are one product each.

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
        # parity blocks (see _top_orders): components of A by parity, output irreps even ones first
        parities = [0 if ir.p == 1 else 1 for _, ir in self.irreps_in for _ in range(ir.dim)]
        self._components = [[i for i, p in enumerate(parities) if p == b] for b in (0, 1)]
        self._ranges = [_ranges(comps) for comps in self._components]
        self._out_parity = [0 if ir.p == 1 else 1 for _, ir in self.irreps_out]
        self._out_order = sorted(range(len(self.irreps_out)), key=lambda k: self._out_parity[k])
        #: components of the even and of the odd output irreps (plain ints)
        self._out_widths = [sum(d for d, p in zip(self._out_dims, self._out_parity) if p == b) for b in (0, 1)]
        self._top_rows = parity_blocks(self._components, correlation - 1)
        self._lower_orders = list(range(1, correlation - 1)) if correlation > 1 else [1]
        self._lower_sizes = {order: len(monomials(d, order)) for order in self._lower_orders}  # plain ints
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
                # stored as [P, rest]: folding the weights in is one matmul
                for name, folded in self._folded_couplings(k, order, u).items():
                    self.register_buffer(name, folded.reshape(n_paths, -1).to(dtype).contiguous(), persistent=False)
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

    def _folded_couplings(self, k: int, order: int, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """U^{(order)} of output irrep k folded onto monomials, by the role it plays in forward.

        - order ν (> 1): ``top_{k}_{b}`` ``[P, M, n_k, rows_b]`` for both parity blocks b: rows are
          the block's monomials of order ν − 1, and the n_k components of A they multiply are those
          whose parity makes the product's parity that of irrep k;
        - order ν − 1 (≥ 1): ``next_{k}`` ``[P, M, rows]`` on the block of irrep k's parity;
        - lower orders: ``u_{k}_{order}`` ``[P, M, n_monomials(order)]``.
        """
        nu, parity = self.correlation, self._out_parity[k]
        if order == nu > 1:
            folded = fold_onto_monomials(u, order - 1)  # [P, M, n_monomials(ν-1), D]
            return {
                f"top_{k}_{b}": folded[:, :, rows][:, :, :, self._components[(parity + b) % 2]].transpose(2, 3)
                for b, rows in enumerate(self._top_rows)
            }
        folded = fold_onto_monomials(u, order)  # [P, M, n_monomials(order)]
        if order == nu - 1:
            return {f"next_{k}": folded[:, :, self._top_rows[parity]]}
        return {f"u_{k}_{order}": folded}

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

    def forward(
        self,
        a: torch.Tensor,
        species: torch.Tensor,
        constant_weights: bool = False,
        groups: ElementGroups | None = None,
    ) -> torch.Tensor:
        """``constant_weights``: no derivative with respect to the weights will be taken, so the
        weights folded into U are kept and reused while the weights stay the same. ``groups``:
        the atoms of ``species`` grouped by element, when already built for other layers."""
        if self.accelerated is not None:
            return self.accelerated(a, species, self.weights)
        n, c, d = a.shape  # [n_nodes, C, D]
        if n == 0:
            return a.new_zeros(0, c * sum(self._out_dims))
        groups = groups if groups is not None else ElementGroups.build(species, self.num_elements)
        present, sizes = groups.elements, groups.sizes
        x = a[groups.order].transpose(0, 1).contiguous()  # [C, n, D], atoms grouped by element
        top, lower = self._reused_folded_weights(present) if constant_weights else self._folded_weights(present)
        out = self._top_orders(x, sizes, top) if top is not None else None
        if lower:
            levels = [level.split(sizes, dim=1) for level in monomial_levels(x, self._lower_orders[-1])]
            for level, weights in zip(levels, lower):  # per element [C, n_e, n_mono] @ [C, n_mono, ΣM]
                part = torch.cat([torch.bmm(m, w.transpose(1, 2)) for m, w in zip(level, weights)], dim=1)
                out = part if out is None else out + part
        out = out.transpose(0, 1)[groups.rank]  # [n, C, ΣM] in atom order, output irreps in _out_order
        blocks = dict(zip(self._out_order, out.split([self._out_dims[k] for k in self._out_order], dim=2)))
        return torch.cat([blocks[k].reshape(n, c * dim) for k, dim in enumerate(self._out_dims)], dim=-1)

    def _top_orders(self, x: torch.Tensor, sizes: list[int], top: list[list[torch.Tensor]]) -> torch.Tensor:
        """Orders ν and ν − 1, ``[C, n, ΣM]`` (output irreps in ``_out_order``), from A ``x [C, n, D]``
        (atoms grouped by element, ``sizes`` per element) and the folded weights of both parity blocks.

        Block b holds the monomials of order ν − 1 of parity b (:func:`parity_blocks`). Each
        product of a block's monomial with a component A_k has a parity, and U couples it only to
        output irreps of that parity: the even outputs take the block's products with the
        components of parity b, the odd outputs those with the others, and the outputs of parity b
        also the monomials themselves (order ν − 1, a column multiplied by 1). So every column of a
        block's weights can be nonzero, and the blocks hold half the entries of one
        ``[n_monomials(ν-1), ΣM·(D+1)]`` matrix.
        """
        c, n = x.shape[0], x.shape[1]
        order = self.correlation - 1
        halves = [_columns(x, ranges) for ranges in self._ranges]  # A's even and odd components
        levels = [monomial_levels(half, order) for half in halves]
        factors = [torch.cat([halves[0], x.new_ones(c, n, 1)], dim=-1), halves[1]]  # even with the 1, odd
        m_even, m_odd = self._out_widths
        outputs: list[torch.Tensor | None] = [None, None]  # even, odd output irreps
        for b, weights in enumerate(top):
            rows = parity_block_values(levels, order, b)  # [C, n, rows_b]
            if rows.shape[-1] == 0:
                continue
            s = torch.cat([torch.bmm(m, w.transpose(1, 2)) for m, w in zip(rows.split(sizes, dim=1), weights)], dim=1)
            split = m_even * factors[b].shape[-1]  # columns of the even outputs, then the odd ones
            # (split, not slices: the backward of a split is one cat, not a zero fill per slice)
            even_part, odd_part = s.split([split, s.shape[-1] - split], dim=-1)
            for g, (part, f) in enumerate(((even_part, factors[b]), (odd_part, factors[1 - b]))):
                if part.shape[-1] and f.shape[-1]:
                    term = _contract_last(part, f)
                    outputs[g] = term if outputs[g] is None else outputs[g] + term
        parts = [x.new_zeros(c, n, m) if o is None else o for o, m in zip(outputs, (m_even, m_odd)) if m]
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

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
                kept[e] = (None if top is None else [block[i] for block in top], [w[i] for w in lower])
        per_element = [kept[e] for e in elements]
        top = None if per_element[0][0] is None else [[t[b] for t, _ in per_element] for b in range(2)]
        return top, [[low[o] for _, low in per_element] for o in range(len(per_element[0][1]))]

    def _folded_weights(self, elements: list[int]) -> tuple[list[torch.Tensor] | None, list[torch.Tensor]]:
        """Σ_p W_{z,p,c} U_fold[p, …] for ``elements``: per parity block of the highest orders
        ``[E', C, columns_b, rows_b]`` (None when ν = 1; see :meth:`_top_orders`), and per lower
        order ``[E', C, ΣM, n_monomials]``; output irreps in ``_out_order``."""
        e, c, nu = len(elements), self.num_channels, self.correlation

        def folded(name: str, w_index: int, *shape: int) -> torch.Tensor:
            if w_index < 0:
                return self.weights[0].new_zeros(e, c, *shape)
            w = self.weights[w_index][elements].transpose(1, 2)  # [E', C, P]
            return torch.matmul(w, getattr(self, name)).reshape(e, c, *shape)

        top = None
        if nu > 1:
            top = []
            for b, rows in enumerate(self._top_rows):
                blocks = []
                for k in self._out_order:
                    m, parity = self._out_dims[k], self._out_parity[k]
                    n_k = len(self._components[(parity + b) % 2])
                    part = folded(f"top_{k}_{b}", self._layout[k][nu - 1][1], m, n_k, len(rows))
                    if parity == b:  # order ν − 1: the column multiplied by 1
                        part = torch.cat([part, folded(f"next_{k}", self._layout[k][nu - 2][1], m, 1, len(rows))], 3)
                    blocks.append(part.flatten(2, 3))
                top.append(torch.cat(blocks, dim=2))
        lower = [
            torch.cat(
                [
                    folded(f"u_{k}_{order}", self._layout[k][order - 1][1], self._out_dims[k], self._lower_sizes[order])
                    for k in self._out_order
                ],
                dim=2,
            )
            for order in self._lower_orders
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
