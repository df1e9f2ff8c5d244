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
#: Relative agreement with molnet's own evaluation demanded when a wrapper is built.
CHECK_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}


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


def _channelwise_kernel(
    irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_out: o3.Irreps, method: str, device: torch.device
):
    """cuequivariance's channel-wise tensor product onto the irreps of ``irreps_out``, e3nn layout."""
    cue, cuet = _require_cueq()
    filter_out = sorted({ir for _, ir in irreps_out}, key=lambda ir: (ir.l, ir.p))
    return cuet.ChannelWiseTensorProduct(
        _cue_irreps(irreps_in),
        _cue_irreps(irreps_sh),
        [cue.O3(ir.l, ir.p) for ir in filter_out],
        layout=cue.mul_ir,
        shared_weights=False,
        internal_weights=False,
        method=method,
        device=device,
    )


def _contraction_kernel(
    irreps_in: o3.Irreps, irreps_out: o3.Irreps, correlation: int, method: str, device: torch.device
):
    """cuequivariance's symmetric contraction: (polynomial, its output transposition, number of weights per channel).

    The polynomial takes ``[weights [n_elements, n_weights·C], A [n, D·C] in (irrep, mul) layout]``.
    """
    cue, cuet = _require_cueq()
    from cuequivariance.group_theory.experimental.mace.symmetric_contractions import symmetric_contraction

    etp, _ = symmetric_contraction(_cue_irreps(irreps_in), _cue_irreps(irreps_out), range(1, correlation + 1))
    if etp.inputs[1].layout != cue.ir_mul:
        raise RuntimeError(f"unexpected cuequivariance input layout {etp.inputs[1].layout}")
    polynomial = cuet.SegmentedPolynomial(etp.polynomial, method=method).to(device)
    transpose = cuet.TransposeIrrepsLayout(
        etp.outputs[0].irreps, source=etp.outputs[0].layout, target=cue.mul_ir, device=device
    )
    return polynomial, transpose, etp.inputs[0].dim // irreps_in[0].mul


class _OutsideTheModel(nn.Module):
    """Base of the wrappers: their tensors and cuequivariance modules stay out of ``state_dict``,
    ``parameters()`` and ``buffers()`` (model files, checkpoints and weight averaging never see
    them), while ``.to()``, ``.double()`` … still move and convert them."""

    def __init__(self) -> None:
        super().__init__()
        self._tensors: dict[str, torch.Tensor] = {}
        self._kernels: tuple[nn.Module, ...] = ()

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._tensors = {name: fn(t) for name, t in self._tensors.items()}
        for kernel in self._kernels:
            kernel._apply(fn)
        return self


def _check(mine: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    tolerance = CHECK_TOLERANCE.get(mine.dtype, 1e-3)
    if not (theirs - mine).norm() <= tolerance * mine.norm():
        raise RuntimeError(
            f"cuequivariance's {what} differs from molnet's (relative {(theirs - mine).norm() / mine.norm():.1e})"
        )


class CueqConvolution(_OutsideTheModel):
    """Σ_j TP_uvu(h_j, Y_ij; w_ij) of an e3nn ``TensorProduct`` as one cuequivariance call.

    Args:
        tp: the defining e3nn tensor product ("uvu", per-edge weights; as
            :class:`molnet.nn.convolution.NeighborConvolution` takes it). The wrapper is checked
            against it on random inputs when built.
        method: cuequivariance method; default ``uniform_1d`` on CUDA, ``naive`` otherwise.
        device: where the model lives.

    Shapes:
        - node_feats ``[n_nodes, irreps_in1.dim]``; edge_sh ``[n_edges, irreps_in2.dim]``;
          weights ``[n_edges, tp.weight_numel]`` in e3nn's layout; sender, receiver ``[n_edges]``
        - returns ``[n_nodes, tp.irreps_out.dim]`` in e3nn layout
    """

    def __init__(self, tp: o3.TensorProduct, method: str | None = None, device: torch.device | None = None) -> None:
        super().__init__()
        device = torch.device("cpu") if device is None else device
        self.channels = tp.irreps_in1[0].mul
        kernel = _channelwise_kernel(
            tp.irreps_in1, tp.irreps_in2, tp.irreps_out, _default_method(device, method), device
        )
        path_of, scale = _pair_convolution_paths(
            str(tp.irreps_in1), str(tp.irreps_in2), str(tp.irreps_out), _instructions_key(tp)
        )
        # cue path q takes molnet's weights of path path_of[q] times scale[q]; molnet's output block
        # i_out (sorted irreps) is cue's output block q of the path that writes it
        blocks = kernel.irreps_out.slices()
        out_index = [None] * len(path_of)
        for q, p in enumerate(path_of):
            out_index[tp.instructions[p].i_out] = torch.arange(blocks[q].start, blocks[q].stop)
        self._kernels = (kernel,)
        self._tensors = {
            "weight_index": torch.tensor(path_of, device=device),
            "weight_scale": torch.tensor(scale, dtype=torch.float64, device=device).reshape(1, -1, 1),
            "output_index": torch.cat(out_index).to(device),
        }
        self._check_against(tp, device)

    def forward(self, node_feats, edge_sh, weights, sender, receiver) -> torch.Tensor:
        e = len(weights)
        t = self._tensors
        w = weights.reshape(e, -1, self.channels)[:, t["weight_index"]] * t["weight_scale"].to(weights.dtype)
        out = self._kernels[0](
            node_feats, edge_sh, w.reshape(e, -1), indices_1=sender, indices_out=receiver, size_out=len(node_feats)
        )
        return out[:, t["output_index"]]

    def _check_against(self, tp: o3.TensorProduct, device: torch.device) -> None:
        dtype = next((b.dtype for b in tp.buffers() if b.is_floating_point()), torch.get_default_dtype())
        gen = torch.Generator().manual_seed(0)
        n, e = 4, 7
        h = torch.randn(n, tp.irreps_in1.dim, generator=gen, dtype=dtype).to(device)
        sh = torch.randn(e, tp.irreps_in2.dim, generator=gen, dtype=dtype).to(device)
        w = torch.randn(e, tp.weight_numel, generator=gen, dtype=dtype).to(device)
        sender, receiver = torch.randint(0, n, (2, e), generator=gen).to(device)
        with torch.no_grad():
            mine = torch.zeros(n, tp.irreps_out.dim, dtype=dtype, device=device).index_add_(
                0, receiver, tp(h[sender], sh, w)
            )
            _check(mine, self(h, sh, w, sender, receiver), "convolution")


def _instructions_key(tp: o3.TensorProduct) -> tuple:
    return tuple((ins.i_in1, ins.i_in2, ins.i_out) for ins in tp.instructions)


@functools.lru_cache(maxsize=None)
def _pair_convolution_paths(irreps_in: str, irreps_sh: str, irreps_out: str, instructions: tuple):
    """For each cuequivariance path q: molnet's path p and the factor s with molnet_p = s·cue_q.

    Both are evaluated with one channel in float64 on random inputs, path by path.
    """
    one = lambda irreps: o3.Irreps([(1, ir) for _, ir in o3.Irreps(irreps)])  # noqa: E731
    with default_dtype(torch.float64):
        ref = o3.TensorProduct(
            one(irreps_in),
            o3.Irreps(irreps_sh),
            one(irreps_out),
            [(i, j, k, "uvu", True) for i, j, k in instructions],
            shared_weights=False,
            internal_weights=False,
        )
    other = _channelwise_kernel(ref.irreps_in1, ref.irreps_in2, ref.irreps_out, "naive", torch.device("cpu"))
    num_paths = len(instructions)
    if other.weight_numel != num_paths:
        raise RuntimeError(f"cuequivariance has {other.weight_numel} convolution paths, molnet {num_paths}")
    n = 64
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(n, ref.irreps_in1.dim, generator=gen, dtype=torch.float64)
    x2 = torch.randn(n, ref.irreps_in2.dim, generator=gen, dtype=torch.float64)
    unit = torch.eye(num_paths, dtype=torch.float64)
    ref_slices, cue_slices = ref.irreps_out.slices(), other.irreps_out.slices()
    cue_paths = [other(x1, x2, unit[q].expand(n, -1))[:, cue_slices[q]] for q in range(num_paths)]
    unused = set(range(num_paths))
    pairing, scales = [0] * num_paths, [0.0] * num_paths
    for p, (_, _, k) in enumerate(instructions):
        mine = ref(x1, x2, unit[p].expand(n, -1))[:, ref_slices[k]]
        for q in sorted(unused):
            theirs = cue_paths[q]
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


class CueqSymmetricContraction(_OutsideTheModel):
    """A :class:`SymmetricContraction`'s operation as one cuequivariance segmented polynomial.

    The weights are not this module's: ``forward`` takes the defining module's weights and maps
    them to cuequivariance's basis with the fitted T. Checked against the defining module on
    random inputs when built.

    Shapes:
        - a ``[n_nodes, C, D]``; species ``[n_nodes]`` int64
        - returns ``[n_nodes, irreps_out.dim]`` in e3nn layout, as ``SymmetricContraction``
    """

    def __init__(
        self, contraction: SymmetricContraction, method: str | None = None, device: torch.device | None = None
    ) -> None:
        super().__init__()
        device = torch.device("cpu") if device is None else device
        c = contraction.num_channels
        per_channel = contraction.irreps_in
        irreps_in = o3.Irreps([(c, ir) for _, ir in per_channel])
        polynomial, transpose, _ = _contraction_kernel(
            irreps_in, contraction.irreps_out, contraction.correlation, _default_method(device, method), device
        )
        self._kernels = (polynomial, transpose)
        single = o3.Irreps([(1, ir) for _, ir in contraction.irreps_out])
        basis = _fit_contraction_basis(str(per_channel), str(single), contraction.correlation, contraction.basis)
        self._tensors = {"basis": basis.clone().to(device)}  # [n_cue_weights, Σ paths]
        self._check_against(contraction, device)

    def forward(self, a: torch.Tensor, species: torch.Tensor, weights: nn.ParameterList) -> torch.Tensor:
        n, c, d = a.shape
        mine = torch.cat(list(weights), dim=1)  # [n_elements, Σ paths, C]
        w = torch.einsum("qp,zpc->zqc", self._tensors["basis"].to(mine.dtype), mine).flatten(1)  # [n_elements, n_cue·C]
        x = a.transpose(1, 2).reshape(n, d * c)  # cuequivariance's (irrep, mul) layout
        polynomial, transpose = self._kernels
        return transpose(polynomial([w, x], input_indices={0: species.to(torch.int32)})[0])

    def _check_against(self, contraction: SymmetricContraction, device: torch.device) -> None:
        weights = contraction.weights
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(
            6, contraction.num_channels, contraction.irreps_in.dim, generator=gen, dtype=weights[0].dtype
        ).to(device)
        species = torch.randint(0, contraction.num_elements, (6,), generator=gen).to(device)
        with torch.no_grad():
            _check(contraction(a, species), self(a, species, weights), "symmetric contraction")


@functools.lru_cache(maxsize=None)
def _fit_contraction_basis(irreps_in: str, irreps_out: str, correlation: int, basis: str) -> torch.Tensor:
    """T with cue(a; T·w) = molnet(a; w) for one channel, by least squares in float64.

    ``irreps_in``/``irreps_out`` have multiplicity 1. Returns ``[n_cue_weights, Σ paths]``.
    """
    with default_dtype(torch.float64):
        mine = SymmetricContraction(
            o3.Irreps(irreps_in), o3.Irreps(irreps_out), correlation, num_elements=1, basis=basis
        )
    theirs, _, n_cue = _contraction_kernel(
        o3.Irreps(irreps_in), o3.Irreps(irreps_out), correlation, "naive", torch.device("cpu")
    )
    d = o3.Irreps(irreps_in).dim
    samples = 256  # rows = samples × output dim ≫ the few weight columns: a spurious exact fit is impossible
    a = torch.randn(samples, 1, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    species = torch.zeros(samples, dtype=torch.int32)
    reference = mine.basis_functions(a)  # [samples·out, Σ paths]
    unit = torch.eye(n_cue, dtype=torch.float64)
    with torch.no_grad():  # one channel: both layouts coincide
        cue_columns = torch.stack(
            [
                theirs([unit[q : q + 1], a.reshape(samples, d)], input_indices={0: species})[0].reshape(-1)
                for q in range(n_cue)
            ],
            dim=1,
        )  # [samples·out, n_cue]
    t = torch.linalg.lstsq(cue_columns, reference, rcond=1e-10, driver="gelsd").solution  # [n_cue, Σ paths]
    residual = (cue_columns @ t - reference).norm() / reference.norm()
    if not residual <= FIT_TOLERANCE:
        raise RuntimeError(
            f"cuequivariance's symmetric contraction does not span molnet's (relative residual {residual:.1e})"
        )
    return t
