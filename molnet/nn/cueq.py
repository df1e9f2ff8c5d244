"""NVIDIA cuequivariance kernels for MACE's convolution and symmetric contraction (optional extra).

``MACE.use_cueq()`` (or ``Potential.use_cueq()``, ``MolNetCalculator(cueq=True)``) evaluates the
two heavy operations of every layer with cuequivariance's segmented polynomials instead of
molnet's own: the channel-wise convolution fused with its gather from senders and scatter to
receivers, and the symmetric contraction with element-indexed weights. On a GPU with
``cuequivariance-ops-torch`` installed these run as CUDA kernels; elsewhere cuequivariance's
PyTorch fallback (``method="naive"``) runs, which is how the CPU tests check the numbers.

The model's parameters and files do not change. molnet's weights stay the definition; each
wrapper maps them to cuequivariance's weight basis in its forward, so a model can switch back
and forth, train on either path and save the same file:

- convolution: cuequivariance orders the outputs path by path and normalises each path its own
  way; the path pairing and per-path factor are found once by evaluating both with one channel.
- symmetric contraction: both weight bases span the same equivariant polynomials of A, in
  different coordinates. The change of basis T (cue weights = T · molnet weights, per element and
  channel) is fitted once by least squares on random inputs with one channel, and refused unless
  it reproduces molnet's contraction to 1e-9.

References:
    cuequivariance (NVIDIA), ``cuequivariance_torch.SegmentedPolynomial``,
    ``ChannelWiseTensorProduct``; Batatia et al., "MACE" (NeurIPS 2022).
"""

from __future__ import annotations

import functools
import importlib.util

import torch
from e3nn import o3
from torch import nn

from molnet.errors import ConfigError
from molnet.nn.dtypes import default_dtype
from molnet.nn.symmetric_contraction import SymmetricContraction

#: Largest relative residual accepted for a fitted change of weight basis (float64).
FIT_TOLERANCE = 1e-9


def cueq_available() -> bool:
    """Whether ``cuequivariance_torch`` is installed (``pip install molnet[cueq]``)."""
    return importlib.util.find_spec("cuequivariance_torch") is not None


def _require_cueq():
    if not cueq_available():
        raise ConfigError(
            "the cuequivariance path needs cuequivariance-torch: pip install 'molnet[cueq]' "
            "(and cuequivariance-ops-torch-cu12 for the CUDA kernels)"
        )
    import cuequivariance as cue
    import cuequivariance_torch as cuet

    return cue, cuet


def _cue_irreps(irreps: o3.Irreps):
    cue, _ = _require_cueq()
    return cue.Irreps("O3", str(irreps))


def _default_method(device: torch.device, method: str | None) -> str:
    """cuequivariance's CUDA kernel on a GPU, its PyTorch implementation elsewhere."""
    if method is not None:
        return method
    return "uniform_1d" if device.type == "cuda" else "naive"


class CueqConvolution(nn.Module):
    """Σ_j TP_uvu(h_j, Y_ij; w_ij) of an e3nn ``TensorProduct`` as one cuequivariance call.

    Args:
        tp: the defining e3nn tensor product ("uvu", per-edge weights; as
            :class:`molnet.nn.convolution.NeighbourConvolution` takes it).
        method: cuequivariance method; default ``uniform_1d`` on CUDA, ``naive`` otherwise.

    Shapes:
        - node_feats ``[n_nodes, irreps_in1.dim]``; edge_sh ``[n_edges, irreps_in2.dim]``;
          weights ``[n_edges, tp.weight_numel]`` in e3nn's layout; sender, receiver ``[n_edges]``
        - returns ``[n_nodes, tp.irreps_out.dim]`` in e3nn layout
    """

    def __init__(self, tp: o3.TensorProduct, method: str | None = None, device: torch.device | None = None) -> None:
        super().__init__()
        cue, cuet = _require_cueq()
        device = torch.device("cpu") if device is None else device
        self.channels = tp.irreps_in1[0].mul
        filter_out = sorted({ir for _, ir in tp.irreps_out}, key=lambda ir: (ir.l, ir.p))
        tp_kernel = cuet.ChannelWiseTensorProduct(
            _cue_irreps(tp.irreps_in1), _cue_irreps(tp.irreps_in2), [cue.O3(ir.l, ir.p) for ir in filter_out],
            layout=cue.mul_ir, shared_weights=False, internal_weights=False,
            method=_default_method(device, method), device=device,
        )
        self._kernel = (tp_kernel,)  # a tuple: not a submodule, so its constants stay out of state_dict
        path_of_output, scale = _pair_convolution_paths(str(tp.irreps_in1), str(tp.irreps_in2), str(tp.irreps_out), _instructions_key(tp))
        c = self.channels
        # cue path q takes molnet's weights of path path_of_output[q] times scale[q]
        self.register_buffer("weight_index", torch.tensor(path_of_output), persistent=False)
        self.register_buffer("weight_scale", torch.tensor(scale, dtype=torch.float64).reshape(1, -1, 1), persistent=False)
        # molnet's output block i_out (sorted irreps) is cue's output block of the path writing it
        dims = [mul_ir.ir.dim * c for mul_ir in tp_kernel.irreps_out]
        starts = [sum(dims[:q]) for q in range(len(dims))]
        out_index = [None] * len(dims)
        for q, p in enumerate(path_of_output):
            out_index[tp.instructions[p].i_out] = torch.arange(starts[q], starts[q] + dims[q])
        self.register_buffer("output_index", torch.cat(out_index), persistent=False)

    def forward(self, node_feats, edge_sh, weights, sender, receiver) -> torch.Tensor:
        e = len(weights)
        w = weights.reshape(e, -1, self.channels)[:, self.weight_index] * self.weight_scale.to(weights.dtype)
        out = self._kernel[0](node_feats, edge_sh, w.reshape(e, -1), indices_1=sender, indices_out=receiver, size_out=len(node_feats))
        return out[:, self.output_index]


def _instructions_key(tp: o3.TensorProduct) -> tuple:
    return tuple((ins.i_in1, ins.i_in2, ins.i_out) for ins in tp.instructions)


@functools.lru_cache(maxsize=None)
def _pair_convolution_paths(irreps_in: str, irreps_sh: str, irreps_out: str, instructions: tuple):
    """For each cuequivariance path q: molnet's path p and the factor s with molnet_p = s·cue_q.

    Both are evaluated with one channel in float64 on random inputs, path by path.
    """
    cue, cuet = _require_cueq()
    one = lambda irreps: o3.Irreps([(1, ir) for _, ir in o3.Irreps(irreps)])  # noqa: E731
    with default_dtype(torch.float64):
        ref = o3.TensorProduct(one(irreps_in), o3.Irreps(irreps_sh), one(irreps_out),
                               [(i, j, k, "uvu", True) for i, j, k in instructions],
                               shared_weights=False, internal_weights=False)
    filter_out = sorted({ir for _, ir in o3.Irreps(irreps_out)}, key=lambda ir: (ir.l, ir.p))
    other = cuet.ChannelWiseTensorProduct(
        _cue_irreps(one(irreps_in)), _cue_irreps(o3.Irreps(irreps_sh)), [cue.O3(ir.l, ir.p) for ir in filter_out],
        layout=cue.mul_ir, shared_weights=False, internal_weights=False, method="naive", dtype=torch.float64,
    )
    n = 64
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(n, ref.irreps_in1.dim, generator=gen, dtype=torch.float64)
    x2 = torch.randn(n, ref.irreps_in2.dim, generator=gen, dtype=torch.float64)
    num_paths = len(instructions)
    if other.weight_numel != num_paths:
        raise RuntimeError(f"cuequivariance has {other.weight_numel} convolution paths, molnet {num_paths}")
    ref_slices = ref.irreps_out.slices()
    cue_out = [(s.start, s.stop) for s in other.irreps_out.slices()]
    unused = set(range(num_paths))
    pairing, scales = [0] * num_paths, [0.0] * num_paths
    for p, (_, _, k) in enumerate(instructions):
        w = torch.zeros(n, num_paths, dtype=torch.float64)
        w[:, p] = 1.0
        mine = ref(x1, x2, w)[:, ref_slices[k]]
        for q in sorted(unused):
            wq = torch.zeros(n, num_paths, dtype=torch.float64)
            wq[:, q] = 1.0
            start, stop = cue_out[q]
            theirs = other(x1, x2, wq)[:, start:stop]
            if theirs.shape != mine.shape or theirs.norm() == 0:
                continue
            s = float((mine * theirs).sum() / (theirs * theirs).sum())
            if (mine - s * theirs).norm() <= FIT_TOLERANCE * mine.norm():
                pairing[q], scales[q] = p, s
                unused.discard(q)
                break
        else:
            raise RuntimeError(f"no cuequivariance path reproduces molnet's convolution path {instructions[p]}")
    return pairing, scales


class CueqSymmetricContraction(nn.Module):
    """A :class:`SymmetricContraction`'s operation as one cuequivariance segmented polynomial.

    The weights are not this module's: ``forward`` takes the defining module's weights and maps
    them to cuequivariance's basis with the fitted T.

    Shapes:
        - a ``[n_nodes, C, D]``; species ``[n_nodes]`` int64
        - returns ``[n_nodes, irreps_out.dim]`` in e3nn layout, as ``SymmetricContraction``
    """

    def __init__(self, contraction: SymmetricContraction, method: str | None = None, device: torch.device | None = None) -> None:
        super().__init__()
        _, cuet = _require_cueq()
        from cuequivariance.group_theory.experimental.mace.symmetric_contractions import symmetric_contraction

        device = torch.device("cpu") if device is None else device
        c = contraction.num_channels
        self.channels = c
        per_channel = contraction.irreps_in
        irreps_in = o3.Irreps([(c, ir) for _, ir in per_channel])
        etp, _ = symmetric_contraction(_cue_irreps(irreps_in), _cue_irreps(contraction.irreps_out), range(1, contraction.correlation + 1))
        # a tuple: not submodules, so their constants stay out of state_dict
        self._kernel = (
            cuet.SegmentedPolynomial(etp.polynomial, method=_default_method(device, method)).to(device),
            cuet.TransposeIrrepsLayout(etp.outputs[0].irreps, source=etp.outputs[0].layout, target=_cue_layout("mul_ir"), device=device),
        )
        if str(etp.inputs[1].layout) != str(_cue_layout("ir_mul")):
            raise RuntimeError(f"unexpected cuequivariance input layout {etp.inputs[1].layout}")
        basis = _fit_contraction_basis(str(per_channel), str(o3.Irreps([(1, ir) for _, ir in contraction.irreps_out])),
                                       contraction.correlation, contraction.basis)
        self.register_buffer("basis", basis, persistent=False)  # [n_cue_weights, Σ paths]

    def forward(self, a: torch.Tensor, species: torch.Tensor, weights: nn.ParameterList) -> torch.Tensor:
        n, c, d = a.shape
        mine = torch.cat(list(weights), dim=1)  # [n_elements, Σ paths, C]
        w = torch.einsum("qp,zpc->zqc", self.basis.to(mine.dtype), mine).flatten(1)  # [n_elements, n_cue·C]
        x = a.transpose(1, 2).reshape(n, d * c)  # cuequivariance's (irrep, mul) layout
        polynomial, transpose_out = self._kernel
        out = polynomial([w, x], input_indices={0: species.to(torch.int32)})[0]
        return transpose_out(out)


def _cue_layout(name: str):
    cue, _ = _require_cueq()
    return getattr(cue, name)


@functools.lru_cache(maxsize=None)
def _fit_contraction_basis(irreps_in: str, irreps_out: str, correlation: int, basis: str) -> torch.Tensor:
    """T with cue(a; T·w) = molnet(a; w) for one channel, by least squares in float64.

    ``irreps_in``/``irreps_out`` have multiplicity 1. Returns ``[n_cue_weights, Σ paths]``.
    """
    _, cuet = _require_cueq()
    from cuequivariance.group_theory.experimental.mace.symmetric_contractions import symmetric_contraction

    with default_dtype(torch.float64):
        mine = SymmetricContraction(o3.Irreps(irreps_in), o3.Irreps(irreps_out), correlation, num_elements=1, basis=basis)
    etp, _ = symmetric_contraction(_cue_irreps(o3.Irreps(irreps_in)), _cue_irreps(o3.Irreps(irreps_out)), range(1, correlation + 1))
    theirs = cuet.SegmentedPolynomial(etp.polynomial, method="naive")
    d = o3.Irreps(irreps_in).dim
    gen = torch.Generator().manual_seed(0)
    samples = 256  # rows = samples × output dim ≫ the few weight columns: a spurious exact fit is impossible
    a = torch.randn(samples, 1, d, generator=gen, dtype=torch.float64)
    species = torch.zeros(samples, dtype=torch.long)
    sizes = [w.shape[1] for w in mine.weights]
    columns = []
    with torch.no_grad():
        for w in mine.weights:
            w.zero_()
        for k, w in enumerate(mine.weights):
            for p in range(sizes[k]):
                w[0, p, 0] = 1.0
                columns.append(mine(a, species).reshape(-1))
                w[0, p, 0] = 0.0
        reference = torch.stack(columns, dim=1)  # [samples·out, Σ paths]
        n_cue = etp.inputs[0].dim
        basis_out = []
        for q in range(n_cue):
            w = torch.zeros(1, n_cue, dtype=torch.float64)
            w[0, q] = 1.0
            basis_out.append(theirs([w, a.reshape(samples, d)], input_indices={0: species.to(torch.int32)})[0].reshape(-1))
        cue_columns = torch.stack(basis_out, dim=1)  # [samples·out, n_cue]; one channel: same layouts
        t = torch.linalg.lstsq(cue_columns, reference, rcond=1e-10, driver="gelsd").solution  # [n_cue, Σ paths]
        residual = (cue_columns @ t - reference).norm() / reference.norm()
    if not residual <= FIT_TOLERANCE:
        raise RuntimeError(f"cuequivariance's symmetric contraction does not span molnet's (relative residual {residual:.1e})")
    return t
