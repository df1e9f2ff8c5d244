"""mace-torch models in molnet: ``import_mace`` turns a ``.model`` file into a molnet ``Potential``.

The file is read by :mod:`molnet.interop.mace_pickle` (an allowlist unpickler; mace-torch is not
imported and nothing in the file runs); molnet's MACE is built with the matching configuration and
every parameter is mapped, so that energies, forces and stress equal mace-torch's to rounding.

The mapping (mace-torch state_dict key → molnet ``Potential`` key) is in :func:`convert`; the
non-trivial transforms are
  * the radial MLP's last layer: per-path column blocks permuted (mace-torch sorts the
    convolution's instructions by output slot, molnet keeps creation order) and negated for odd
    spherical-harmonic degree l2 (mace-torch's edge vector is r_receiver − r_sender, molnet's
    r_sender − r_receiver; Y_l(−r) = (−1)^l Y_l(r));
  * the symmetric contraction: weights re-expressed in molnet's coupling basis by least squares
    on the U tensors stored in the file, symmetrised over the ν slots;
  * E0s / scale / shift written in float64 after build_model (which rounds them through float32).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from ase.data import chemical_symbols
from e3nn import o3

from molnet.errors import UnsupportedModelError
from molnet.interop.mace_pickle import MaceFile, read_mace_model
from molnet.models.potential import Potential
from molnet.models.registry import build_model
from molnet.nn.symmetric_contraction import coupling_tensors

log = logging.getLogger(__name__)

#: relative residual above which a symmetric-contraction basis change is refused, by the dtype of
#: the file's U tensors (a float32 file stores them rounded to float32)
LSQ_TOL = {torch.float64: 1e-9, torch.float32: 1e-5}
#: tensors of the file that carry no weights (masks, empty biases, constants checked elsewhere)
_IGNORED_SUFFIXES = ("output_mask", ".bias", "_zeroed")


def _natural_hidden(irreps: str) -> tuple[int, int]:
    """``"Cx0e+Cx1o+…"`` up to L with natural parity → (C, L); refuses anything else."""
    ir = o3.Irreps(irreps)
    muls = {mul for mul, _ in ir}
    if len(muls) != 1 or [(i.l, i.p) for _, i in ir] != [(l, (-1) ** l) for l in range(len(ir))]:
        raise UnsupportedModelError(f"hidden irreps {irreps} are not 'C x 0e + C x 1o + …' with natural parity")
    return muls.pop(), len(ir) - 1


#: mace-torch interaction blocks molnet's MACE represents: class → (residual, density-normalised)
INTERACTIONS = {
    "RealAgnosticResidualInteractionBlock": (True, False),
    "RealAgnosticInteractionBlock": (False, False),
    "RealAgnosticDensityResidualInteractionBlock": (True, True),
    "RealAgnosticDensityInteractionBlock": (False, True),
}


#: mace-torch's readout gates (``gate=``, as the file names them) and molnet's ``gate`` for each
READOUT_GATES = {"torch.nn.functional.silu": "silu", "torch.tanh": "tanh"}


def check_supported(h: dict) -> None:
    """Raise UnsupportedModelError for any feature molnet's MACE does not have."""

    def need(cond, what):
        if not cond:
            raise UnsupportedModelError(what)

    need(h["model_class"] in ("ScaleShiftMACE", "MACE"), f"model class {h['model_class']}")
    extra = [m for m in h["extra_modules"] if m != "pair_repulsion_fn"]
    need(not extra, f"extra modules {extra} (embeddings, LES, …)")
    need(h["radial_basis"] == "BesselBasis", f"radial basis {h['radial_basis']}")
    need(h["radial_cutoff_fn"] == "PolynomialCutoff", f"cutoff {h['radial_cutoff_fn']}")
    need(h["distance_transform"] in (None, "AgnesiTransform"), f"distance transform {h['distance_transform']}")
    need(h.get("apply_cutoff", True) and h["radial_apply_cutoff"], "apply_cutoff=False")
    need(not h.get("use_so3", False), "use_so3=True")
    need(not h.get("use_agnostic_product", False), "use_agnostic_product=True")
    need(not h.get("use_last_readout_only", False), "use_last_readout_only=True")
    need(h.get("edge_irreps") is None, f"edge_irreps {h.get('edge_irreps')}")
    need(
        h["sh_normalize"] is True and h["sh_normalization"] == "component",
        "spherical harmonics not normalize=True/component",
    )
    n = h["num_interactions"]
    layers = h["layers"]
    for t, lay in enumerate(layers):
        cls = lay["interaction_cls"]
        need(cls in INTERACTIONS, f"interaction block {cls} (layer {t})")
        need(t == 0 or INTERACTIONS[cls][0], f"non-residual interaction block {cls} after the first layer")
    densities = {INTERACTIONS[lay["interaction_cls"]][1] for lay in layers}
    need(len(densities) == 1, "density-normalised and plain interaction blocks mixed in one model")
    for lay in layers:
        need(not lay["cueq"], "cuequivariance-converted model (convert back to e3nn with mace's tools first)")
        need(lay["product_cls"] == "SymmetricContraction", f"product {lay['product_cls']}")
        need(
            len(set(lay["correlation"])) == 1 and lay["correlation"][0] == layers[0]["correlation"][0],
            "per-layer/per-irrep correlation",
        )
        need(lay["avg_num_neighbors"] == layers[0]["avg_num_neighbors"], "per-layer avg_num_neighbors")
        need(lay["radial_MLP"] == layers[0]["radial_MLP"], "per-layer radial_MLP")
        need(lay["edge_irreps"] == lay["node_feats_irreps"], "edge_irreps differ from node irreps")
    readouts = h["readouts"]
    kinds = ["LinearReadoutBlock"] * (n - 1) + ["NonLinearReadoutBlock" if n > 1 else "LinearReadoutBlock"]
    need([r["cls"] for r in readouts] == kinds, f"readouts {[r['cls'] for r in readouts]}")
    if n > 1:
        need(
            len(readouts[-1]["gate"]) == 1 and readouts[-1]["gate"][0] in READOUT_GATES,
            f"readout gate {readouts[-1]['gate']} (molnet's readout gates with {sorted(READOUT_GATES.values())})",
        )


def molnet_config(mf: MaceFile, basis: str = "reduced") -> dict:
    """molnet's MACE configuration of the file's model (one head: the readout MLP's width per head)."""
    h = mf.hyper
    check_supported(h)
    layers = h["layers"]
    # a one-layer model keeps only scalars (its hidden irreps are C x 0e): max_L 0 builds the same
    c, max_l = _natural_hidden(layers[0]["hidden_irreps"])
    max_ell = o3.Irreps(h["sh_irreps"]).lmax
    if o3.Irreps(h["sh_irreps"]) != o3.Irreps.spherical_harmonics(max_ell):
        raise UnsupportedModelError(f"spherical harmonics {h['sh_irreps']}")
    readout_hidden = 16  # unused by a one-layer model (linear readout)
    if h["num_interactions"] > 1:
        mlp = o3.Irreps(h["readouts"][-1]["MLP_irreps"])
        if len(mlp) != 1 or mlp[0].ir != o3.Irrep("0e") or mlp[0].mul % len(h["heads"]):
            raise UnsupportedModelError(f"MLP_irreps {mlp} for {len(h['heads'])} head(s)")
        readout_hidden = mlp[0].mul // len(h["heads"])
    return {
        "name": "mace",
        "elements": [chemical_symbols[z] for z in h["atomic_numbers"]],
        "r_max": h["r_max"],
        "num_bessel": h["num_bessel"],
        "num_polynomial_cutoff": h["num_polynomial_cutoff"],
        "avg_num_neighbors": layers[0]["avg_num_neighbors"],
        "num_channels": c,
        "max_L": max_l,
        "max_ell": max_ell,
        "correlation": layers[0]["correlation"][0],
        "num_interactions": h["num_interactions"],
        "radial_MLP": list(layers[0]["radial_MLP"]),
        "gate": READOUT_GATES[h["readouts"][-1]["gate"][0]] if h["num_interactions"] > 1 else "silu",
        "readout_hidden": readout_hidden,
        "first_layer_residual": INTERACTIONS[layers[0]["interaction_cls"]][0],
        "density_normalization": INTERACTIONS[layers[0]["interaction_cls"]][1],
        "pair_repulsion": "pair_repulsion_fn" in h["extra_modules"],
        "distance_transform": "agnesi" if h["distance_transform"] == "AgnesiTransform" else None,
        "contraction_basis": basis,
    }


def _symmetrise(u: torch.Tensor, order: int) -> torch.Tensor:
    """Mean over permutations of the ν feature slots of ``[M, D…(ν), P]``."""
    if order == 1:
        return u
    slots = list(range(1, order + 1))
    total = torch.zeros_like(u)
    for perm in itertools.permutations(slots):
        total += u.permute(0, *perm, order + 1)
    return total / math.factorial(order)


def contraction_transform(u_mace: torch.Tensor, u_molnet: torch.Tensor, order: int) -> tuple[torch.Tensor, float]:
    """T ``[P_molnet, P_mace]`` with sym(U_molnet)·T = sym(U_mace), and its relative residual."""
    a = _symmetrise(u_molnet.double(), order).reshape(-1, u_molnet.shape[-1]).numpy()
    b = _symmetrise(u_mace.double(), order).reshape(-1, u_mace.shape[-1]).numpy()
    t, _, _, _ = scipy.linalg.lstsq(a, b, cond=1e-10, lapack_driver="gelsd")
    resid = float(np.linalg.norm(a @ t - b) / max(np.linalg.norm(b), 1e-300))
    return torch.from_numpy(t), resid


def convert(mf: MaceFile, basis: str = "reduced", dtype: torch.dtype = torch.float64, head: int = 0) -> Potential:
    """Build the molnet Potential of head number ``head`` and fill it from ``mf``.

    Each mapping is logged at DEBUG level. A multi-head file's readouts, E0s, scale and shift
    hold every head side by side (the readout MLP's hidden units head-major, as mace-torch's
    ``mask_head`` selects them); the head's slices become a single-head molnet model.
    """
    cfg = molnet_config(mf, basis)
    h, sd = mf.hyper, mf.state_dict
    model = build_model(cfg, dtype=dtype)
    target = model.state_dict()
    new: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    used: set[str] = set()

    def put(src: str, dst: str, value: torch.Tensor | None = None, how: str = "copy"):
        value = sd[src] if value is None else value
        if dst not in target or tuple(value.shape) != tuple(target[dst].shape):
            shape = tuple(target[dst].shape) if dst in target else "absent"
            raise UnsupportedModelError(
                f"{src} {tuple(value.shape)} has no counterpart in molnet's model ({dst}: {shape})"
            )
        new[dst] = value.to(dtype)
        for s in src.split(" + "):
            used.add(s)
        log.debug("%s -> %s: %s", src, dst, how)

    # radial basis frequencies (a buffer in molnet; a buffer or trainable parameter in mace-torch)
    put("radial_embedding.bessel_fn.bessel_weights", "body.radial.basis.frequencies")
    put("node_embedding.linear.weight", "body.embedding.weight")
    n_layers = h["num_interactions"]
    sh = o3.Irreps(h["sh_irreps"])
    for t in range(n_layers):
        lay = h["layers"][t]
        mi, bi = f"interactions.{t}", f"body.interactions.{t}"
        put(f"{mi}.linear_up.weight", f"{bi}.linear_up.weight")
        # radial MLP: hidden layers verbatim, last layer per-path permuted and sign-flipped
        n_mlp = len(lay["radial_MLP"]) + 1
        for k in range(n_mlp - 1):
            put(f"{mi}.conv_tp_weights.layer{k}.weight", f"{bi}.conv_weights.layer{k}.weight")
        body_inter = model.body.interactions[t]
        ins_molnet = [(i.i_in1, i.i_in2, i.i_out) for i in body_inter.conv_tp.instructions]
        ins_mace = [tuple(x[:3]) for x in lay["conv_instructions"]]
        if str(body_inter.conv_tp.irreps_out) != lay["conv_irreps_out"] or sorted(ins_molnet) != sorted(ins_mace):
            raise UnsupportedModelError(f"layer {t}: convolution paths differ: {ins_mace} vs {ins_molnet}")
        c = body_inter.conv_tp.irreps_in1[0].mul
        last = sd[f"{mi}.conv_tp_weights.layer{n_mlp - 1}.weight"]  # [hidden, n_paths * C]
        blocks = []
        perm_desc = []
        for p, key in enumerate(ins_molnet):
            q = ins_mace.index(key)
            sign = (-1) ** sh[key[1]].ir.l
            blocks.append(sign * last[:, q * c : (q + 1) * c])
            perm_desc.append(f"{q}{'-' if sign < 0 else ''}")
        put(
            f"{mi}.conv_tp_weights.layer{n_mlp - 1}.weight",
            f"{bi}.conv_weights.layer{n_mlp - 1}.weight",
            torch.cat(blocks, dim=1),
            f"column blocks of {c}: molnet path p ← mace path [{', '.join(perm_desc)}] (− = negated, odd l_sh)",
        )
        put(f"{mi}.linear.weight", f"{bi}.linear.weight")
        if body_inter.density_fn is not None:
            put(f"{mi}.density_fn.layer0.weight", f"{bi}.density_fn.layer0.weight")
        if body_inter.skip is not None:
            put(f"{mi}.skip_tp.weight", f"{bi}.skip.weight")
        else:
            put(f"{mi}.skip_tp.weight", f"{bi}.element_mix.weight")
        # activation constants of the radial MLP (normalize2mom): must match
        for k, cst in enumerate(lay["radial_act_cst"]):
            if cst is not None:
                act = getattr(body_inter.conv_weights, f"layer{k}").act
                if abs(act.cst - cst) > 1e-12:
                    raise UnsupportedModelError(f"radial MLP activation constant {act.cst} vs {cst}")

        # symmetric contraction
        prod = model.body.products[t]
        if str(prod.irreps_in) != str(o3.Irreps([(1, ir) for _, ir in o3.Irreps(lay["product_irreps_in"])])):
            raise UnsupportedModelError(
                f"layer {t}: product input irreps {lay['product_irreps_in']} vs {prod.irreps_in}"
            )
        if str(prod.irreps_out) != lay["product_irreps_out"]:
            raise UnsupportedModelError(
                f"layer {t}: product output irreps {lay['product_irreps_out']} vs {prod.irreps_out}"
            )
        corr = prod.correlation
        for k, (_, ir) in enumerate(prod.irreps_out):
            mp = f"products.{t}.symmetric_contractions.contractions.{k}"
            for order, w_index in prod._layout[k]:
                u_mace = sd[f"{mp}.U_matrix_{order}"]
                used.add(f"{mp}.U_matrix_{order}")
                if ir.l == 0:
                    u_mace = u_mace.unsqueeze(0)
                w_key = f"{mp}.weights_max" if order == corr else f"{mp}.weights.{corr - 1 - order}"
                w_mace = sd[w_key].double()  # [E, P_mace, C]
                used.add(w_key)
                mace_zero = bool(u_mace.abs().max() == 0) if u_mace.numel() else True
                if w_index < 0:
                    if not mace_zero:
                        raise UnsupportedModelError(f"{mp} order {order}: mace-torch has paths, molnet none")
                    continue
                u_mol = coupling_tensors(str(prod.irreps_in), str(ir), order, prod.basis)  # [M, D…, P]
                if mace_zero:
                    w_new = torch.zeros_like(target[f"body.products.{t}.weights.{w_index}"], dtype=torch.float64)
                    how = "zero (U all zero in the file)"
                else:
                    tmat, resid = contraction_transform(u_mace, u_mol, order)
                    if resid > LSQ_TOL.get(u_mace.dtype, 1e-9):
                        raise UnsupportedModelError(f"{mp} order {order}: basis change residual {resid:.2e}")
                    w_new = torch.einsum("qp,epc->eqc", tmat, w_mace)
                    how = f"W' = T·W, sym(U_molnet)·T = sym(U_file) (lstsq gelsd, residual {resid:.1e})"
                put(w_key, f"body.products.{t}.weights.{w_index}", w_new, how)
        put(f"products.{t}.linear.weight", f"body.product_linears.{t}.weight")

    n_heads = len(h["heads"])

    def head_columns(key: str, rows: int) -> torch.Tensor:
        """The head's output column of a ``[rows, n_heads]`` e3nn scalar Linear (fan-in unchanged)."""
        return sd[key].reshape(rows, n_heads)[:, head].reshape(-1)

    c_hidden = model.body.hidden[0].mul
    for t in range(n_layers - 1 if n_layers > 1 else 1):
        put(
            f"readouts.{t}.linear.weight",
            f"body.readouts.{t}.weight",
            head_columns(f"readouts.{t}.linear.weight", c_hidden),
        )
    if n_layers > 1:
        t = n_layers - 1
        width = cfg["readout_hidden"]
        units = slice(head * width, (head + 1) * width)  # the head's hidden units
        w1 = sd[f"readouts.{t}.linear_1.weight"].reshape(c_hidden, n_heads * width)[:, units]
        put(f"readouts.{t}.linear_1.weight", f"body.readouts.{t}.0.weight", w1.reshape(-1), f"hidden units {units}")
        # e3nn scales a Linear by 1/sqrt(fan-in): the file's fan-in is n_heads * width, molnet's width
        w2 = sd[f"readouts.{t}.linear_2.weight"].reshape(n_heads * width, n_heads)[units, head] / math.sqrt(n_heads)
        put(f"readouts.{t}.linear_2.weight", f"body.readouts.{t}.2.weight", w2, "head's rows and column, /sqrt(heads)")
        gate_cst = h["readouts"][-1]["gate_cst"]
        for act, cst in zip(model.body.readouts[-1][1].acts, gate_cst):
            if cst is not None and abs(act.cst - cst) > 1e-12:
                raise UnsupportedModelError(f"readout activation constant {act.cst} vs {cst}")

    # E0s, scale, shift: float64 straight from the file (build_model rounds them through float32)
    e0 = h["atomic_energies"].reshape(-1, len(cfg["elements"]))[head if n_heads > 1 else 0]
    put("atomic_energies_fn.atomic_energies", "e0s", e0, "copy (float64; the head's row)")
    if "scale_shift.scale" in sd:
        put("scale_shift.scale", "scale", h["scale"].reshape(-1)[head if h["scale"].numel() > 1 else 0])
        put("scale_shift.shift", "shift", h["shift"].reshape(-1)[head if h["shift"].numel() > 1 else 0])
    else:  # mace-torch's plain MACE: interaction energies unscaled
        put("(plain MACE)", "scale", h["scale"].reshape(-1)[0], "1: no scale_shift in the file")
        put("(plain MACE)", "shift", h["shift"].reshape(-1)[0], "0: no scale_shift in the file")

    # ZBL and Agnesi constants: molnet's must equal the file's (mace-torch can make them trainable)
    for prefix, module in (
        ("pair_repulsion_fn", model.body.pair_repulsion),
        ("radial_embedding.distance_transform", model.body.distance_transform),
    ):
        if module is None:
            continue
        for name, value in sd.items():
            if not name.startswith(prefix + "."):
                continue
            attr = name[len(prefix) + 1 :]
            ours = getattr(module, attr, None) if attr != "p" or prefix != "pair_repulsion_fn" else module.p
            ours = torch.as_tensor(ours, dtype=torch.float64)
            if ours.shape != value.shape or not torch.allclose(
                ours, value.to(torch.float64), rtol=0, atol=1e-6 * float(ours.abs().max())
            ):
                raise UnsupportedModelError(f"{name} differs from molnet's constant (trainable or customised {prefix})")
            used.add(name)
    # coverage: every molnet parameter/persistent buffer with weights set; every file tensor used
    keep_own = {
        k
        for k in target
        if k.endswith(("output_mask", ".bias", "u_fingerprint"))
        or "._compiled" in k
        or (k.endswith(".weight") and target[k].numel() == 0)
    }
    missing = [k for k in target if k not in new and k not in keep_own]
    if missing:
        raise UnsupportedModelError(f"molnet tensors the file does not set: {missing}")
    consts = {
        "atomic_numbers",
        "r_max",
        "num_interactions",
        "radial_embedding.bessel_fn.r_max",
        "radial_embedding.bessel_fn.prefactor",
        "radial_embedding.cutoff_fn.p",
        "radial_embedding.cutoff_fn.r_max",
    }
    unused = [
        k
        for k in sd
        if k not in used
        and k not in consts
        and not k.endswith(_IGNORED_SUFFIXES)
        and not (k.endswith(".weight") and sd[k].numel() == 0)
    ]
    if unused:
        raise UnsupportedModelError(f"file tensors without a molnet counterpart: {unused}")
    for k in sd:
        if k.endswith(".bias") and sd[k].numel():
            raise UnsupportedModelError(f"non-empty bias {k}")
    # constants that molnet computes itself: check them
    if (
        abs(float(sd["radial_embedding.bessel_fn.prefactor"]) - model.body.radial.basis.prefactor)
        > 1e-6 * model.body.radial.basis.prefactor
    ):
        raise UnsupportedModelError("Bessel prefactor differs from sqrt(2/r_max)")
    if float(sd["radial_embedding.cutoff_fn.r_max"]) != float(sd["r_max"]):
        raise UnsupportedModelError("cutoff r_max differs from r_max")

    full = dict(target)
    full.update(new)
    model.load_state_dict(full)
    return model.eval()


#: Names of mace-torch foundation-model files whose weights carry a licence of their own.
_LICENSED = {
    (
        "mace-mp",
        "mace_mp",
        "mace-mpa",
        "mace-omat",
        "mace_agnesi",
        "mace-matpes",
    ): "MACE-MP/MPA/OMAT foundation models: see the licence of the ACEsuit/mace-foundations release you downloaded",
    (
        "mace-off",
        "mace_off",
    ): "MACE-OFF models are released under the Academic Software License (ASL): non-commercial use",
}


def select_head(heads: list[str], head: str | None, source: str) -> int:
    """Index of ``head`` among the file's heads; None: the only head, or the one named "default".

    mace-torch's calculator falls back to the last head when asked for an unknown one; molnet
    refuses instead, naming the heads there are.
    """
    if head is not None:
        if head not in heads:
            raise UnsupportedModelError(f"{source}: has no head {head!r}; its heads are {heads}")
        return heads.index(head)
    if len(heads) == 1:
        return 0
    defaults = [k for k, name in enumerate(heads) if name.lower() == "default"]
    if not defaults:
        raise UnsupportedModelError(
            f"{source}: a multi-head model with heads {heads}; choose one with --head NAME (head= in Python)"
        )
    return defaults[0]


def import_mace(
    path: str | Path, head: str | None = None, basis: str = "reduced", dtype: torch.dtype = torch.float64
) -> Potential:
    """A molnet :class:`Potential` with the weights of the mace-torch model file ``path``.

    ``head`` names the readout head to keep (:func:`select_head`: the only head, or the one named
    "default", when None); the result is a single-head model with that head's readout, E0s,
    scale and shift. ``basis`` is molnet's symmetric-contraction basis (``reduced`` or
    ``coupled``); both give the same numbers. The model carries ``provenance`` (source file and
    sha256, the mace-torch classes found, the head, a licence note where the file name tells),
    which :func:`molnet.save_model` stores in the model file.
    """
    path = Path(path)
    mf = read_mace_model(path)
    heads = list(mf.hyper["heads"])
    index = select_head(heads, head, str(path))
    model = convert(mf, basis, head=index)
    licence = next((note for names, note in _LICENSED.items() if any(n in path.name.lower() for n in names)), None)
    model.provenance = {
        "imported_from": path.name,
        "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "importer": "molnet.interop.mace",
        "mace_classes": sorted(g for g in mf.globals_seen if g.startswith("mace.")),
        "mace_torch_version": "not recorded in mace-torch model files",
        "head": heads[index],
        "heads_in_file": heads,
        **({"licence": licence} if licence else {}),
    }
    return model.to(dtype)
