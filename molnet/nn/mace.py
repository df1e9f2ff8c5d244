"""MACE: higher-body-order equivariant message passing (the ``mace`` family).

Each layer builds the atomic basis A_i = Σ_j R(r_ij) Y(r̂_ij) ⊗ h_j (a channel-wise tensor
product weighted by a radial MLP, normalised by the mean neighbor count), raises it to
correlation order ν with a symmetric contraction (ν = 3: 4-body messages per layer), and mixes
the result with an element-dependent self-connection. The convolution and its sum over
neighbors run fused (:mod:`molnet.nn.convolution`). Everything a call derives from the graph's
integers (neighbor tables, chunks, element groups) is built once per call by :meth:`MACE.plan`,
so that ``Potential.compile_inference`` traces the rest as one ``torch.compile`` graph.

References:
    Batatia, Kovács, Simm, Ortner, Csányi, "MACE: Higher Order Equivariant Message Passing
    Neural Networks for Fast and Accurate Force Fields" (NeurIPS 2022); the layer structure
    follows mace-torch's RealAgnostic(Residual)InteractionBlock and EquivariantProductBasisBlock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from e3nn import nn as e3nn_nn
from e3nn import o3
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from molnet.errors import ConfigError
from molnet.nn.config import GraphConfig
from molnet.nn.convolution import NeighborConvolution, NeighborTable, ReceiverChunks
from molnet.nn.inputs import GraphInputs, scatter_sum
from molnet.nn.linear import ElementGroups, ElementLinear, Linear
from molnet.nn.long_range import add_coulomb, coulomb_block, long_range_layers
from molnet.nn.radial import RadialEmbedding, radial_mlp
from molnet.nn.repulsion import AgnesiTransform, ZBLRepulsion
from molnet.nn.symmetric_contraction import BASES, SymmetricContraction

#: The convolution runs in chunks of atoms of similar neighbor count (each with its own, nearly
#: full, neighbor table) of at most CHUNK_ATOMS atoms and CHUNK_BYTES of estimated temporaries:
#: small working sets are reused by the allocator and stay in cache.
CHUNK_ATOMS = 48
CHUNK_BYTES = 64 * 2**20
#: ``set_chunking("auto")`` also checkpoints the chunks (keeping only their outputs) of as many
#: layers, largest first, as bring a call's estimated temporaries to this many bytes …
AUTO_CHUNK_ABOVE = 2**30
#: … or, in train mode (where the double backward recomputes every checkpointed chunk), this many.
AUTO_CHUNK_ABOVE_TRAINING = 2**32
#: Unless checkpointed, a layer's radial MLP runs once per edge and its reverse when its output for
#: all pairs takes at most this many bytes. Larger outputs, gathered into every chunk's table and
#: summed back in backward, live in buffers that the allocator maps anew on every call (glibc maps
#: blocks above 32 MiB), and the gathers then cost more than the halved MLP saves.
PAIRED_RADIAL_BYTES = 16 * 2**20
ACTIVATIONS = {"silu": torch.nn.functional.silu, "tanh": torch.tanh, "gelu": torch.nn.functional.gelu}


@dataclass
class MACEConfig(GraphConfig):
    """Hyperparameters of :class:`MACE`, named and defaulted as in mace-torch (``r_max`` in Å)."""

    num_channels: int = 128
    max_L: int = 1
    max_ell: int = 3
    correlation: int = 3
    num_interactions: int = 2
    radial_MLP: list[int] = field(default_factory=lambda: [64, 64, 64])
    gate: str = "silu"
    readout_hidden: int = 16
    #: True: every layer, the first included, keeps an element-dependent self-connection of its
    #: input (the default of mace-torch 0.3.16's trainer, ``--interaction_first
    #: RealAgnosticResidualInteractionBlock``); its first-layer skip of the element embedding
    #: gives each element a direct energy offset. False: the first layer mixes its message per
    #: element instead (the paper's and older mace-torch's ``RealAgnosticInteractionBlock``).
    first_layer_residual: bool = True
    #: weight basis of the symmetric contraction (:data:`molnet.nn.symmetric_contraction.BASES`)
    contraction_basis: str = "reduced"
    #: ZBL screened nuclear repulsion added to the per-atom energies (mace-torch's
    #: ``pair_repulsion``; :class:`molnet.nn.repulsion.ZBLRepulsion`)
    pair_repulsion: bool = False
    #: ``"agnesi"``: the radial basis sees the Agnesi-transformed length (mace-torch's
    #: ``distance_transform="Agnesi"``; :class:`molnet.nn.repulsion.AgnesiTransform`)
    distance_transform: str | None = None
    #: True: each layer divides its message by 1 + a learned neighbor density,
    #: Σ_j tanh(w·R(r_ij))², instead of by ``avg_num_neighbors`` (mace-torch's
    #: ``RealAgnosticDensity(Residual)InteractionBlock``, used by several foundation models)
    density_normalization: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_channels < 1 or self.readout_hidden < 1:
            raise ConfigError(
                f"num_channels and readout_hidden must be >= 1, got {self.num_channels} and {self.readout_hidden}"
            )
        if self.distance_transform not in (None, "agnesi"):
            raise ConfigError(f"distance_transform must be null or 'agnesi', got {self.distance_transform!r}")
        if not 0 <= self.max_L <= 3:
            raise ConfigError(f"max_L must be 0..3, got {self.max_L}")
        if not 1 <= self.correlation <= 4:
            raise ConfigError(f"correlation must be 1..4, got {self.correlation}")
        if self.max_ell < self.max_L:
            raise ConfigError(f"max_ell ({self.max_ell}) must be >= max_L ({self.max_L})")
        if self.gate not in ACTIVATIONS:
            raise ConfigError(f"gate must be one of {sorted(ACTIVATIONS)}, got {self.gate!r}")
        if self.num_interactions < 1:
            raise ConfigError(f"num_interactions must be >= 1, got {self.num_interactions}")
        if self.contraction_basis not in BASES:
            raise ConfigError(f"contraction_basis must be one of {BASES}, got {self.contraction_basis!r}")

    def hidden_irreps(self) -> o3.Irreps:
        """``C x 0e + C x 1o + …`` up to max_L, natural parity."""
        return o3.Irreps([(self.num_channels, (l, (-1) ** l)) for l in range(self.max_L + 1)])


def channel_blocks(irreps: o3.Irreps) -> list[tuple[int, int, int, int]]:
    """``(start, stop, mul, 2l+1)`` of every irrep, plain ints for :func:`to_channels`."""
    return [(s.start, s.stop, mul, ir.dim) for s, (mul, ir) in zip(irreps.slices(), irreps)]


def to_channels(x: torch.Tensor, blocks: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """e3nn layout ``[n, Σ mul·(2l+1)]`` with equal multiplicities → ``[n, mul, Σ (2l+1)]``."""
    n = x.shape[0]
    return torch.cat([x[:, start:stop].reshape(n, mul, dim) for start, stop, mul, dim in blocks], dim=-1)


def _conv_irreps(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, target: o3.Irreps):
    """Output irreps and "uvu" instructions of the channel-wise convolution, sorted by irrep."""
    mid, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in target:
                    instructions.append((i, j, len(mid), "uvu", True))
                    mid.append((mul, ir_out))
    mid = o3.Irreps(mid)
    mid_sorted, perm, _ = mid.sort()
    instructions = [(i, j, perm[k], mode, train) for i, j, k, mode, train in instructions]
    return mid_sorted, instructions


class MACEInteraction(nn.Module):
    """A_i = Linear(Σ_j TP_uvu(Linear(h_j), Y(r̂_ij); R(r_ij))) / N_i, plus the skip.

    N_i is ``avg_num_neighbors``, or with ``density`` 1 + Σ_j tanh(w·R(r_ij))² (a learned,
    smooth neighbor count per atom).

    Shapes:
        - node_feats: ``[n_nodes, irreps_in.dim]``; groups: the atoms by element
          (:class:`~molnet.nn.linear.ElementGroups`); edge_sh ``[n_edges, sh.dim]``;
          radial ``[n_edges, num_bessel]``; sender, receiver ``[n_edges]``
        - chunks: the atoms in chunks (:class:`~molnet.nn.convolution.ReceiverChunks`); the edge
          tensors are then in the order of ``chunks.edges`` and ``receiver`` is ``chunks.receiver``
          (positions in chunk order). None when cuequivariance evaluates the convolution: edge
          order, receivers are atoms.
        - returns A ``[n_nodes, C, D]`` and skip ``[n_nodes, hidden.dim]`` (or None)
    """

    def __init__(
        self,
        irreps_in,
        irreps_sh,
        target,
        hidden,
        num_elements,
        num_bessel,
        radial_hidden,
        avg_num_neighbors,
        residual,
        density=False,
    ):
        super().__init__()
        self.target = target
        self._target_blocks = channel_blocks(target)
        self.linear_up = Linear(irreps_in, irreps_in)
        mid, instructions = _conv_irreps(irreps_in, irreps_sh, target)
        # conv_tp defines the convolution (instructions, normalisation, weight layout; its buffers are
        # part of the saved weights); `convolution` evaluates it fused with the neighbor sum
        self.conv_tp = o3.TensorProduct(
            irreps_in, irreps_sh, mid, instructions, shared_weights=False, internal_weights=False
        )
        self.convolution = NeighborConvolution(self.conv_tp)
        self.cueq_convolution: nn.Module | None = None  # see use_cueq
        self.conv_weights = radial_mlp(num_bessel, radial_hidden, self.conv_tp.weight_numel)
        self.linear = Linear(mid, target)
        self.avg_num_neighbors = avg_num_neighbors
        self.density_fn = radial_mlp(num_bessel, [], 1) if density else None
        # a residual layer keeps an element-dependent self-connection of its input; a non-residual
        # one (MACEConfig.first_layer_residual=False) mixes its aggregated message per element instead
        self.skip = ElementLinear(irreps_in, num_elements, hidden) if residual else None
        self.element_mix = None if residual else ElementLinear(target, num_elements, target)

    def pairs_pay(self, num_pairs: int, itemsize: int) -> bool:
        """Whether the radial MLP runs once per edge pair (see ``PAIRED_RADIAL_BYTES``)."""
        return num_pairs * self.conv_tp.weight_numel * itemsize <= PAIRED_RADIAL_BYTES

    def use_cueq(self, enabled: bool, method: str | None, device: torch.device) -> None:
        """Evaluate the convolution with cuequivariance (:class:`molnet.nn.cueq.CueqConvolution`) or not."""
        from molnet.nn.cueq import CueqConvolution

        self.cueq_convolution = CueqConvolution(self.conv_tp, method, device) if enabled else None

    def forward(
        self,
        node_feats,
        groups: ElementGroups,
        edge_sh,
        radial,
        sender,
        receiver,
        chunks: ReceiverChunks | None,
        inference: bool = False,
        checkpointed: bool = False,
    ):
        """``inference``: only first derivatives with respect to the inputs will be taken (no
        parameter gradients, no double backward), as with :class:`GraphInputs` ``constant_weights``.
        ``checkpointed``: the chunks keep only their outputs (:meth:`chunked_convolution`)."""
        skip = self.skip.by_element(node_feats, groups) if self.skip is not None else None
        h = self.linear_up(node_feats)
        if chunks is None:
            mixed = self.linear(self.cueq_convolution(h, edge_sh, self.conv_weights(radial), sender, receiver))
        else:  # [n_nodes, target.dim]
            mixed = self.chunked_convolution(h, edge_sh, radial, sender, receiver, chunks, inference, checkpointed)
        if self.density_fn is None:
            a = mixed / self.avg_num_neighbors  # [n_nodes, target.dim]
        else:
            edge_density = torch.tanh(self.density_fn(radial) ** 2)  # [n_edges, 1]
            density = scatter_sum(edge_density, receiver, len(h))
            a = mixed / ((density if chunks is None else density[chunks.rank]) + 1.0)
        if self.element_mix is not None:
            a = self.element_mix.by_element(a, groups)
        return to_channels(a, self._target_blocks), skip

    def chunked_convolution(
        self,
        h,
        edge_sh,
        radial,
        sender,
        receiver,
        chunks: ReceiverChunks,
        inference: bool = False,
        checkpointed: bool = False,
    ) -> torch.Tensor:
        """The summed convolution mixed by ``linear``, ``[n_nodes, target.dim]``, one chunk of
        receiving atoms at a time (``linear`` acts atom by atom, so each chunk's sum is mixed
        before the chunks are joined: only the narrower mixed rows are concatenated and kept).

        The edge tensors are in the order of ``chunks.edges``, so each chunk's are views, and the
        node features are laid out once for all chunks (:meth:`NeighborConvolution.layout`). With
        ``checkpointed`` only each chunk's output is kept and backward recomputes the chunk,
        so the largest tensors of a call, ``[atoms, neighbors, channels]`` per path, exist for one
        chunk at a time: with ``inference`` through :class:`_RecomputedChunks`, whose backward
        adds every chunk's gradient into one buffer per layer, otherwise (training, which takes
        second derivatives) under ``torch.utils.checkpoint``. Unless checkpointed, where it pays
        (:meth:`pairs_pay`), the radial MLP runs once per edge and its reverse (``chunks.pairs``),
        before the chunks, and each chunk's table gathers its weights. Each receiver's sum is the
        same as in one table of all atoms.
        """
        if not chunks.edge_counts:  # no atoms
            return h.new_zeros(0, self.linear.irreps_out.dim)
        layout = self.convolution.layout(h)
        if checkpointed and inference:
            return _RecomputedChunks.apply(self, chunks, edge_sh, radial, *layout)[chunks.rank]
        parts = []
        paired = chunks.pairs is not None and not checkpointed
        if paired and self.pairs_pay(len(chunks.pairs[0]), radial.element_size()):
            weights = self.conv_weights(radial[chunks.pairs[0]])  # [G, weight_numel], one row per edge pair
            weights = torch.cat([weights, weights.new_zeros(1, weights.shape[1])])  # last row: empty slots
            # one gather for all chunks: its backward is one sum into [G + 1, weight_numel], where a
            # gather per chunk would zero-fill and add a tensor of that size per chunk
            gathered = chunks.split_slots(weights.index_select(0, chunks.pair_slots))
            for table, sh_k, weights_k in zip(chunks.tables, chunks.split(edge_sh), gathered):
                summed = self.convolution(
                    h, table.gather_edges(sh_k), weights_k.unflatten(0, table.edge.shape), table, layout
                )
                parts.append(self.linear(summed))
            return torch.cat(parts)[chunks.rank]
        for table, sh_k, radial_k in _chunk_pieces(chunks, edge_sh, radial):
            if checkpointed:
                parts.append(checkpoint(self._rows_convolution, table, sh_k, radial_k, *layout, use_reentrant=False))
            else:
                parts.append(self._rows_convolution(table, sh_k, radial_k, *layout))
        return torch.cat(parts)[chunks.rank]  # back from count order to atom order

    def _rows_convolution(self, table: NeighborTable, edge_sh, radial, *layout) -> torch.Tensor:
        """Convolution of the receivers of ``table`` from their edges and the senders' rows of
        ``layout`` (:meth:`NeighborConvolution.layout`), mixed by ``linear``: ``[rows, target.dim]``."""
        return self._gathered_rows(table, edge_sh, radial, self.convolution.gather(list(layout), table))

    def _gathered_rows(self, table: NeighborTable, edge_sh, radial, gathered: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`_rows_convolution` from the senders' features already gathered."""
        weights = self.conv_weights(table.gather_edges(radial))  # [rows, max_neighbors, weight_numel]
        return self.linear(self.convolution.gathered(gathered, table.gather_edges(edge_sh), weights))


class _RecomputedChunks(torch.autograd.Function):
    """One layer's checkpointed chunks (:meth:`MACEInteraction.chunked_convolution`) for inference.

    Forward keeps only the chunks' outputs, ``[n_nodes, target.dim]`` in chunk order; backward
    recomputes one chunk at a time from its senders' gathered rows and adds their gradient into one
    ``[n_nodes, 2l+1, C]`` buffer per input irrep at the senders. ``torch.utils.checkpoint`` would
    instead return a zero-filled gradient of every layout tensor per chunk, work and temporaries
    that grow with the square of the number of atoms. First derivatives only, and none with
    respect to the parameters (``@once_differentiable``): training runs under checkpoint.
    """

    @staticmethod
    def forward(ctx, interaction: MACEInteraction, chunks: ReceiverChunks, edge_sh, radial, *layout):
        ctx.interaction, ctx.chunks = interaction, chunks
        ctx.save_for_backward(edge_sh, radial, *layout)
        with torch.no_grad():
            return torch.cat(
                [interaction._rows_convolution(*piece, *layout) for piece in _chunk_pieces(chunks, edge_sh, radial)]
            )

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        interaction, chunks = ctx.interaction, ctx.chunks
        edge_sh, radial, *layout = ctx.saved_tensors
        # detached: the recomputation's graph ends at the chunk's own leaves (from the saved tensors
        # its gradient would be traced back through the whole network for every chunk)
        edge_sh, radial, layout = edge_sh.detach(), radial.detach(), [x.detach() for x in layout]
        grad_layout = [torch.zeros_like(x) for x in layout]
        grad_sh, grad_radial = torch.empty_like(edge_sh), torch.empty_like(radial)
        grad_rows = grad_out.split([stop - start for start, stop in map(chunks.rows, range(len(chunks.edge_counts)))])
        edge_slices = zip(grad_sh.split(chunks.edge_counts), grad_radial.split(chunks.edge_counts))
        for (table, sh_k, radial_k), grad_k, (grad_sh_k, grad_radial_k) in zip(
            _chunk_pieces(chunks, edge_sh, radial), grad_rows, edge_slices
        ):
            with torch.enable_grad():
                sh_k, radial_k = sh_k.detach().requires_grad_(), radial_k.detach().requires_grad_()
                gathered = [g.requires_grad_() for g in interaction.convolution.gather(layout, table)]
                out = interaction._gathered_rows(table, sh_k, radial_k, gathered)
                grads = torch.autograd.grad(out, [sh_k, radial_k, *gathered], grad_k, allow_unused=True)
            for target, g in ((grad_sh_k, grads[0]), (grad_radial_k, grads[1])):
                if g is None:
                    target.zero_()
                else:
                    target.copy_(g)
            senders = table.sender.flatten()
            for acc, g in zip(grad_layout, grads[2:]):
                if g is not None:
                    acc.index_add_(0, senders, g.flatten(0, 1))
        return None, None, grad_sh, grad_radial, *grad_layout


def _chunk_pieces(chunks: ReceiverChunks, edge_sh, radial):
    """Per chunk: its neighbor table (receivers numbered from 0) and its edges' harmonics and radial basis."""
    return zip(chunks.tables, chunks.split(edge_sh), chunks.split(radial))


@dataclass(frozen=True)
class MessagePlan:
    """How a call's message passing runs, built once per call from the graph's integers and
    shared by every layer.

    Attributes:
        chunks: the atoms in chunks of similar neighbor count with their neighbor tables
            (:class:`~molnet.nn.convolution.ReceiverChunks`); None when cuequivariance evaluates
            the convolution
        groups: the atoms grouped by element (:class:`~molnet.nn.linear.ElementGroups`) for the
            element-dependent self-connections and the symmetric contraction
        checkpointed: per layer, whether its chunks keep only their outputs (backward recomputes
            them)
    """

    chunks: ReceiverChunks | None
    groups: ElementGroups
    checkpointed: tuple[bool, ...]


class MACE(nn.Module):
    """The MACE body: per-atom energies summed over layer readouts.

    Shapes:
        - input: :class:`GraphInputs`; output ``[n_nodes]`` per-atom energies
    """

    def __init__(self, num_elements: int, config: MACEConfig) -> None:
        super().__init__()
        c = config
        self.num_elements = num_elements
        self.hidden = c.hidden_irreps()
        self.irreps_sh = o3.Irreps.spherical_harmonics(c.max_ell)
        target = o3.Irreps([(c.num_channels, ir) for _, ir in self.irreps_sh])
        per_channel = o3.Irreps([(1, ir) for _, ir in self.irreps_sh])
        scalars = o3.Irreps(f"{c.num_channels}x0e")
        self.embedding = Linear(o3.Irreps(f"{num_elements}x0e"), scalars)
        self.radial = RadialEmbedding(c.r_max, c.num_bessel, c.num_polynomial_cutoff)
        self.distance_transform = AgnesiTransform() if c.distance_transform == "agnesi" else None
        self.pair_repulsion = ZBLRepulsion(c.num_polynomial_cutoff) if c.pair_repulsion else None
        self.spherical_harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.interactions = nn.ModuleList()
        self.products = nn.ModuleList()
        self.product_linears = nn.ModuleList()
        self.readouts = nn.ModuleList()
        irreps_in = scalars
        # as in mace-torch: the last layer keeps only scalars; a single layer reads out linearly
        for t in range(c.num_interactions):
            last = t == c.num_interactions - 1
            hidden = scalars if last else self.hidden
            self.interactions.append(
                MACEInteraction(
                    irreps_in,
                    self.irreps_sh,
                    target,
                    hidden,
                    num_elements,
                    c.num_bessel,
                    list(c.radial_MLP),
                    c.avg_num_neighbors,
                    residual=t > 0 or c.first_layer_residual,
                    density=c.density_normalization,
                )
            )
            self.products.append(
                SymmetricContraction(per_channel, hidden, c.correlation, num_elements, c.contraction_basis)
            )
            self.product_linears.append(Linear(hidden, hidden))
            if last and c.num_interactions > 1:
                self.readouts.append(
                    nn.Sequential(
                        Linear(hidden, o3.Irreps(f"{c.readout_hidden}x0e")),
                        e3nn_nn.Activation(o3.Irreps(f"{c.readout_hidden}x0e"), [ACTIVATIONS[c.gate]]),
                        Linear(o3.Irreps(f"{c.readout_hidden}x0e"), o3.Irreps("0e")),
                    )
                )
            else:
                self.readouts.append(Linear(hidden, o3.Irreps("0e")))
            irreps_in = hidden
        self.long_range = long_range_layers(c.long_range, c.num_channels, c.num_interactions)
        self.coulomb = coulomb_block(c.long_range, c.num_channels)
        self.cueq_enabled, self.cueq_method = False, None  # see use_cueq
        self.atoms_per_chunk: int | str | None = "auto"  # see set_chunking

    def use_cueq(self, enabled: bool = True, method: str | None = None) -> None:
        """Evaluate every layer's convolution and symmetric contraction with cuequivariance.

        Same parameters, same files, same numbers to rounding (tested); see :mod:`molnet.nn.cueq`.
        Call it after moving the model to its device: on CUDA cuequivariance's kernels
        (``method="uniform_1d"``) run, elsewhere its PyTorch fallback (``"naive"``).
        ``enabled=False`` returns to molnet's own evaluation. cuequivariance evaluates whole
        structures: enabling it turns chunking off, disabling it restores ``"auto"``.
        """
        self.atoms_per_chunk = None if enabled else "auto"
        device = self.embedding.weight.device
        self.cueq_method = method if enabled else None
        self.cueq_enabled = enabled
        for interaction, product in zip(self.interactions, self.products):
            interaction.use_cueq(enabled, method, device)
            product.use_cueq(enabled, method, device)

    def set_chunking(self, atoms_per_chunk: int | str | None) -> None:
        """How the convolution and the symmetric contraction split the atoms of a call.

        ``"auto"`` (the default): chunks of atoms of similar neighbor count, at most
        :data:`CHUNK_ATOMS` atoms and :data:`CHUNK_BYTES` of estimated temporaries
        (:meth:`temporary_bytes_per_atom`) each; when the whole call's temporaries exceed
        :data:`AUTO_CHUNK_ABOVE` (in train mode :data:`AUTO_CHUNK_ABOVE_TRAINING`) the chunks of
        the layers with the largest temporaries are also checkpointed, as few layers as bring the
        estimate to that size, so that only their outputs are kept and backward recomputes them.
        An int: checkpointed chunks of that many atoms. ``None``: all atoms in one table, as
        torch.compile and cuequivariance evaluate. Same numbers to rounding; checkpointed chunks
        need a fraction of the memory and make a training step slower (see
        :meth:`MACEInteraction.chunked_convolution`).
        """
        if (
            atoms_per_chunk != "auto"
            and atoms_per_chunk is not None
            and (not isinstance(atoms_per_chunk, int) or atoms_per_chunk < 1)
        ):
            raise ConfigError(f"atoms_per_chunk must be >= 1, 'auto' or None, got {atoms_per_chunk!r}")
        if atoms_per_chunk is not None and self.cueq_enabled:
            raise ConfigError("chunked evaluation runs molnet's own convolution; call use_cueq(False) first")
        self.atoms_per_chunk = atoms_per_chunk

    def temporary_bytes_per_atom(self, max_neighbors: int, itemsize: int) -> list[int]:
        """Estimated bytes per atom of each layer's largest temporaries (kept for backward unless checkpointed).

        The convolution's per-neighbor tensors (``max_neighbors`` table slots per atom) plus the
        symmetric contraction's largest intermediates, for ``itemsize``-byte floats.
        """
        return [
            interaction.convolution.bytes_per_slot(itemsize) * max_neighbors + product.bytes_per_atom(itemsize)
            for interaction, product in zip(self.interactions, self.products)
        ]

    def _chunking(self, num_nodes: int, max_neighbors: int, itemsize: int) -> tuple[int, tuple[bool, ...]]:
        """Atoms per chunk for this call, and per layer whether its chunks are checkpointed.

        ``"auto"`` checkpoints the layers with the largest temporaries first, as few as bring the
        call's estimate to the threshold: recomputation costs time, so a layer whose temporaries
        fit is evaluated plainly."""
        layers = len(self.interactions)
        if self.atoms_per_chunk is None:
            return max(num_nodes, 1), (False,) * layers
        if self.atoms_per_chunk != "auto":
            return self.atoms_per_chunk, (True,) * layers
        per_atom = self.temporary_bytes_per_atom(max_neighbors, itemsize)
        size = max(1, min(CHUNK_ATOMS, CHUNK_BYTES // max(per_atom)))
        budget = AUTO_CHUNK_ABOVE_TRAINING if self.training else AUTO_CHUNK_ABOVE
        checkpointed, kept = [False] * layers, num_nodes * sum(per_atom)
        for t in sorted(range(layers), key=lambda t: -per_atom[t]):
            if kept <= budget:
                break
            checkpointed[t], kept = True, kept - num_nodes * per_atom[t]
        return size, tuple(checkpointed)

    def _product(
        self, product: SymmetricContraction, a, species, plan: MessagePlan, constant_weights: bool, checkpointed: bool
    ):
        """The symmetric contraction ``[n_nodes, hidden.dim]``, under checkpointing chunk by chunk
        (of atoms in atom order) when ``checkpointed``, else all atoms at once."""
        chunks = plan.chunks
        if chunks is None or not checkpointed or chunks.size >= len(a):
            return product(a, species, constant_weights, plan.groups)
        size = chunks.size  # split, not slices: the backward of a split is one cat, not a zero fill per chunk
        return torch.cat(
            [
                checkpoint(product, a_k, species_k, constant_weights, use_reentrant=False)
                for a_k, species_k in zip(a.split(size), species.split(size))
            ]
        )

    def node_features(self, inputs: GraphInputs) -> list[torch.Tensor]:
        """Node features after every layer, e3nn layout ``[n_nodes, hidden.dim]`` (for tests and analysis)."""
        return self._run(inputs, self.plan(inputs))[1]

    def forward(self, inputs: GraphInputs) -> torch.Tensor:
        return self._run(inputs, self.plan(inputs))[0]

    @torch.compiler.disable
    def plan(self, inputs: GraphInputs) -> MessagePlan:
        """The call's :class:`MessagePlan`, from the graph's integers (``torch.compile`` runs it
        eagerly and traces the rest of the call as one graph)."""
        chunks, checkpointed = None, (False,) * len(self.interactions)
        if not self.cueq_enabled:  # (cuequivariance gathers, scatters and indexes elements itself)
            n_nodes, itemsize = len(inputs.species), inputs.positions.element_size()
            counts = torch.bincount(inputs.receiver, minlength=n_nodes)
            width = int(counts.max()) if len(inputs.receiver) else 0
            size, checkpointed = self._chunking(n_nodes, width, itemsize)
            paired = n_nodes > 0 and any(
                not layer_checkpointed and interaction.pairs_pay(len(inputs.receiver) // 2, itemsize)
                for layer_checkpointed, interaction in zip(checkpointed, self.interactions)
            )
            chunks = ReceiverChunks.build(
                inputs.sender, inputs.receiver, counts, size, inputs.unit_shifts if paired else None
            )
        return MessagePlan(
            chunks=chunks, groups=ElementGroups.build(inputs.species, self.num_elements), checkpointed=checkpointed
        )

    def _run(self, inputs: GraphInputs, plan: MessagePlan) -> tuple[torch.Tensor, list[torch.Tensor]]:
        vectors, lengths = inputs.edge_vectors()
        edge_sh = self.spherical_harmonics(vectors)  # [n_edges, (max_ell+1)^2]
        needs_z = self.distance_transform is not None or self.pair_repulsion is not None
        z_sender, z_receiver = (
            (inputs.atomic_numbers[inputs.sender], inputs.atomic_numbers[inputs.receiver]) if needs_z else (None, None)
        )
        transformed = (
            self.distance_transform(lengths, z_sender, z_receiver) if self.distance_transform is not None else None
        )
        radial = self.radial(lengths, transformed)  # [n_edges, num_bessel]
        onehot = torch.nn.functional.one_hot(inputs.species, self.num_elements).to(vectors.dtype)
        sender, receiver, chunks, groups = inputs.sender, inputs.receiver, plan.chunks, plan.groups
        if chunks is not None:
            edge_sh, radial = edge_sh[chunks.edges], radial[chunks.edges]  # edges in chunk order
            sender, receiver = chunks.sender, chunks.receiver
        h = self.embedding(onehot)  # [n_nodes, C]
        energy = torch.zeros(len(h), dtype=h.dtype, device=h.device)
        if self.pair_repulsion is not None:  # scaled with the rest, as in mace-torch's ScaleShiftMACE
            energy = energy + self.pair_repulsion(lengths, z_sender, z_receiver, inputs.receiver, len(h))
        features = []
        c = self.hidden[0].mul  # the first C entries of every layer's features are its 0e channels
        for t, (interaction, product, linear, readout) in enumerate(
            zip(self.interactions, self.products, self.product_linears, self.readouts)
        ):
            update = self.long_range[t](h[:, :c], inputs) if self.long_range is not None else None  # [n_nodes, C]
            a, skip = interaction(
                h, groups, edge_sh, radial, sender, receiver, chunks, inputs.constant_weights, plan.checkpointed[t]
            )  # a: [n_nodes, C, D]
            h = linear(self._product(product, a, inputs.species, plan, inputs.constant_weights, plan.checkpointed[t]))
            if skip is not None:
                h = h + skip
            if update is not None:  # invariant update on the 0e channels only: equivariance is exact
                h = torch.cat([h[:, :c] + update, h[:, c:]], dim=1)
            features.append(h)
            energy = energy + readout(h).squeeze(-1)
        add_coulomb(self.coulomb, h[:, :c], inputs)
        return energy, features
