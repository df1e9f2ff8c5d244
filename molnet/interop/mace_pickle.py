"""Read a mace-torch ``.model`` file (a pickled ``ScaleShiftMACE``) without mace-torch, executing nothing.

A mace-torch model file is ``torch.save(model, path)``: a zip archive ``<prefix>/data.pkl`` (the
pickled module tree) plus ``<prefix>/data/<key>`` (raw tensor storages, referenced from the pickle
by persistent ids ``('storage', storage_type, key, location, numel)``).

:class:`AllowlistUnpickler` resolves every global the pickle names through an allowlist:

* classes of ``mace.modules.*``, ``e3nn.*``, ``torch.nn.modules.*`` and ``torch.fx`` become
  inert :class:`Record` objects that only store their constructor arguments and state; no code of
  those packages is imported or run (e3nn's irreps become plain tuples);
* tensors and parameters are rebuilt by this module from the zip's raw bytes;
* ``collections.OrderedDict``, ``set``, ``_codecs.encode`` (bytes in protocol 2), numpy scalars and
  a few activation functions (as names) are mapped to safe equivalents;
* any other global raises :class:`UnsafeModelFileError` naming it.

``torch.fx.graph_module.reduce_graph_module`` (which would ``exec`` stored Python source) and
e3nn's TorchScript blobs (``__codegen__``) are kept as inert data and never executed.

Reading is a one-off step on a file the user trusts enough to run its numbers; still, nothing in
the file is executed, and everything after the import is pickle-free (safetensors).

Reference: the pickle protocol (Python's ``pickle`` module documentation, "Restricting globals")
and PyTorch's zip serialisation format (``torch.serialization``).

Examples
--------
>>> mf = read_mace_model("model.model")  # doctest: +SKIP
>>> mf.state_dict["interactions.0.linear_up.weight"].shape  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from molnet.errors import ModelFileError, UnsafeModelFileError, UnsupportedModelError

# ----------------------------------------------------------------------------------------------
# inert stand-ins
# ----------------------------------------------------------------------------------------------


class Record:
    """Inert stand-in for a pickled object of an allowlisted class.

    ``qualname`` names the original class; ``args`` are the constructor arguments (NEWOBJ/REDUCE);
    ``state`` the BUILD state (for ``nn.Module``: its ``__dict__``). Never runs the class's code.
    """

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        obj.items = []  # APPENDS on list-like objects
        return obj

    def __init__(self, *args, **kwargs):  # REDUCE calls cls(*args): nothing to do
        pass

    def __setstate__(self, state):
        self.state = state

    # list/dict-like protocol for APPEND(S)/SETITEM(S) on container subclasses
    def append(self, x):
        self.items.append(x)

    def extend(self, xs):
        self.items.extend(xs)

    def __setitem__(self, k, v):
        self.items.append((k, v))

    # convenient access to nn.Module state
    @property
    def dict(self) -> dict:
        s = self.state
        if isinstance(s, tuple):  # (dict, slotstate)
            s = s[0]
        return s if isinstance(s, dict) else {}

    def get(self, name, default=None):
        return self.dict.get(name, default)

    @property
    def cls_name(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]

    @property
    def modules(self) -> dict:
        return self.dict.get("_modules", {}) or {}

    def __getitem__(self, key):
        """Submodule by name or dotted path (``rec["interactions.0.conv_tp"]``)."""
        node = self
        for part in str(key).split("."):
            mods = node.modules
            if part not in mods:
                raise KeyError(f"{node.qualname} has no submodule {part!r}")
            node = mods[part]
        return node

    def __repr__(self):
        return f"<Record {self.qualname}>"


class _IrrepsTuple(tuple):
    """e3nn ``Irrep``/``_MulIr``/``Irreps`` as plain tuples (pickled as NEWOBJ(cls, (tuple,)))."""

    qualname = "?"

    def __new__(cls, *args):
        if len(args) == 1 and isinstance(args[0], tuple):
            return tuple.__new__(cls, args[0])
        return tuple.__new__(cls, args)

    def __setstate__(self, state):  # tuples carry no state; ignore a stray dict
        pass


_RECORD_TYPES: dict[str, type] = {}


def _record_type(module: str, name: str) -> type:
    qual = f"{module}.{name}"
    if qual not in _RECORD_TYPES:
        base = _IrrepsTuple if module.startswith("e3nn.o3._irreps") else Record
        _RECORD_TYPES[qual] = type(f"Record[{qual}]", (base,), {"qualname": qual, "__module__": __name__})
    return _RECORD_TYPES[qual]


@dataclass(frozen=True)
class FunctionRef:
    """A function named in the pickle (e.g. an activation), kept as its name."""

    qualname: str


@dataclass
class _Storage:
    dtype: torch.dtype
    key: str


# ----------------------------------------------------------------------------------------------
# safe rebuild functions
# ----------------------------------------------------------------------------------------------

_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError(f"tensor rebuilt from a non-storage {type(storage)}")
    if len(size) == 0 or min(size, default=1) == 0:
        numel_needed = storage_offset + (1 if len(size) == 0 else 0)
    else:
        numel_needed = storage_offset + 1 + sum((s - 1) * st for s, st in zip(size, stride))
    if numel_needed > storage.numel():
        raise pickle.UnpicklingError("tensor view exceeds its storage")
    return torch.as_strided(storage, tuple(size), tuple(stride), storage_offset).clone()


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    t = data.detach().clone()
    t.is_parameter = True  # plain tensor, flagged
    return t


def _codecs_encode(obj, encoding="latin1"):
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode only for latin1 strings")
    return obj.encode("latin1")


def _reduce_graph_module(*args):
    """torch.fx's unpickler would exec the stored source; keep its arguments instead."""
    return _record_type("torch.fx.graph_module", "GraphModule")(*args)


_NUMPY_DTYPES = {"f8", "f4", "f2", "i8", "i4", "i2", "i1", "u1", "b1", "?"}


def _numpy_dtype(name, align=False, copy=False):
    if str(name) not in _NUMPY_DTYPES:
        raise pickle.UnpicklingError(f"numpy dtype {name!r} not allowed")
    return np.dtype(name)


def _numpy_scalar(dtype, data):
    if not isinstance(dtype, np.dtype) or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("bad numpy scalar")
    return np.frombuffer(bytes(data), dtype=dtype)[0].item()


_SAFE = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("torch.fx.graph_module", "reduce_graph_module"): _reduce_graph_module,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}
#: functions that appear as values (activations); kept as names
_FUNCTIONS = {
    ("torch.nn.functional", "silu"),
    ("torch.nn.functional", "gelu"),
    ("torch.nn.functional", "relu"),
    ("torch", "tanh"),
    ("torch", "sigmoid"),
    ("torch.nn.functional", "tanh"),
    ("torch", "abs"),
}
#: torch's C functions (``torch.tanh``) pickle as ``getattr(torch._C._VariableFunctionsClass, name)``
_TORCH_C_FUNCTIONS = ("torch._C", "_VariableFunctionsClass")
_GETATTR = {("__builtin__", "getattr"), ("builtins", "getattr")}


class _TorchCFunctions:
    """Stands for ``torch._C._VariableFunctionsClass`` in a pickle: only :func:`_function_attribute` uses it."""


def _function_attribute(owner, name: str) -> FunctionRef:
    """The pickle's ``getattr(owner, name)``: only a torch C function of ``_FUNCTIONS`` (as
    ``FunctionRef("torch.<name>")``); anything else is refused."""
    if owner is _TorchCFunctions and isinstance(name, str) and ("torch", name) in _FUNCTIONS:
        return FunctionRef(f"torch.{name}")
    raise UnsafeModelFileError(
        f"the file calls getattr on {getattr(owner, '__name__', type(owner).__name__)} for {name!r}, which is not "
        "one of the torch activation functions a model file holds; refusing to load it (nothing from the file was run)"
    )


#: module prefixes whose classes become inert records
_RECORD_PREFIXES = ("mace.modules.", "e3nn.", "torch.nn.modules.", "torch.fx.")


class AllowlistUnpickler(pickle.Unpickler):
    """Unpickler of torch.save'd mace-torch models that executes nothing from the file."""

    def __init__(self, file, zf: zipfile.ZipFile, prefix: str, byteorder: str = "little"):
        super().__init__(file)
        self._zf, self._prefix, self._byteorder = zf, prefix, byteorder
        self._storages: dict[str, torch.Tensor] = {}
        self.globals_seen: set[str] = set()

    def find_class(self, module: str, name: str):
        self.globals_seen.add(f"{module}.{name}")
        if (module, name) in _SAFE:
            return _SAFE[(module, name)]
        if (module, name) in _FUNCTIONS:
            return FunctionRef(f"{module}.{name}")
        if (module, name) == _TORCH_C_FUNCTIONS:
            return _TorchCFunctions
        if (module, name) in _GETATTR:
            return _function_attribute
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module.startswith(_RECORD_PREFIXES) and name.isidentifier():
            return _record_type(module, name)
        if module.startswith("__torch__."):
            raise UnsupportedModelError(
                f"the file is a TorchScript-compiled model (it names {module}.{name}, e.g. mace-torch's "
                "*_compiled.model); convert the .model file that mace-torch's training wrote instead"
            )
        raise UnsafeModelFileError(
            f"the file names {module}.{name}, which is not among the mace-torch, e3nn and torch classes a model "
            "file holds; refusing to load it (nothing from the file was run)"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        key = str(key)
        if key not in self._storages:
            raw = self._zf.read(f"{self._prefix}/data/{key}")
            t = (
                torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(storage_type.dtype)
                if raw
                else torch.empty(0, dtype=storage_type.dtype)
            )
            if self._byteorder != "little" and t.element_size() > 1:
                t = torch.from_numpy(t.numpy().byteswap().copy())
            if t.numel() != numel:
                raise pickle.UnpicklingError(f"storage {key}: {t.numel()} elements, expected {numel}")
            self._storages[key] = t
        return self._storages[key]


def unpickle_torch_zip(path) -> tuple[Any, set[str]]:
    """Load a ``torch.save`` zip archive with :class:`AllowlistUnpickler`: (root object, globals)."""
    with zipfile.ZipFile(path) as zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ModelFileError(f"{path}: not a torch.save zip archive (data.pkl entries: {pkls})")
        prefix = pkls[0].split("/")[0]
        names = set(zf.namelist())
        byteorder = zf.read(f"{prefix}/byteorder").decode().strip() if f"{prefix}/byteorder" in names else "little"
        up = AllowlistUnpickler(io.BytesIO(zf.read(pkls[0])), zf, prefix, byteorder)
        return up.load(), up.globals_seen


# ----------------------------------------------------------------------------------------------
# the model tree → state dict and hyperparameters
# ----------------------------------------------------------------------------------------------


def module_state_dict(rec: Record, prefix: str = "") -> "collections.OrderedDict[str, torch.Tensor]":
    """``nn.Module.state_dict()`` of a Record tree: parameters and persistent buffers."""
    out = collections.OrderedDict()
    d = rec.dict
    non_persistent = set(d.get("_non_persistent_buffers_set", set()) or set())
    for name, p in (d.get("_parameters") or {}).items():
        if p is not None:
            out[prefix + name] = p
    for name, b in (d.get("_buffers") or {}).items():
        if b is not None and name not in non_persistent:
            out[prefix + name] = b
    for name, sub in (d.get("_modules") or {}).items():
        if isinstance(sub, Record):
            out.update(module_state_dict(sub, prefix + name + "."))
    return out


def irreps_str(irreps) -> str:
    """A pickled e3nn Irreps (nested tuples), or a string, → ``"8x0e+8x1o"``."""
    if isinstance(irreps, str):
        return irreps
    parts = []
    for mul_ir in irreps:
        mul, ir = mul_ir
        l, p = ir
        parts.append(f"{int(mul)}x{int(l)}{'e' if p == 1 else 'o'}")
    return "+".join(parts)


@dataclass
class MaceFile:
    root: Record
    state_dict: "collections.OrderedDict[str, torch.Tensor]"
    hyper: dict[str, Any]
    globals_seen: set[str] = field(default_factory=set)


def _scalar(t) -> float:
    return float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else float(t)


def read_mace_model(path) -> MaceFile:
    """Read a mace-torch model file and extract its weights and hyperparameters.

    Raises :class:`UnsafeModelFileError` for a global outside the allowlist,
    :class:`ModelFileError` for a truncated or foreign file and :class:`UnsupportedModelError`
    for anything but a ``MACE``/``ScaleShiftMACE`` model.
    """
    try:
        root, seen = unpickle_torch_zip(path)
    except ModelFileError:
        raise
    except (
        zipfile.BadZipFile,
        pickle.UnpicklingError,
        EOFError,
        KeyError,
        ValueError,
        TypeError,
        AttributeError,
    ) as exc:
        raise ModelFileError(
            f"{path}: not a readable mace-torch model file (truncated or another format?): {exc}"
        ) from exc
    if not isinstance(root, Record) or root.qualname not in (
        "mace.modules.models.ScaleShiftMACE",
        "mace.modules.models.MACE",
    ):
        raise UnsupportedModelError(
            f"expected a pickled ScaleShiftMACE or MACE, got {getattr(root, 'qualname', type(root))}"
        )
    try:
        return _extract(root, seen)
    except KeyError as exc:
        raise UnsupportedModelError(
            f"{path}: a {root.cls_name} whose layout this importer does not know ({exc})"
        ) from exc


def _extract(root: Record, seen: set[str]) -> MaceFile:
    sd = module_state_dict(root)
    d = root.dict
    mods = root.modules
    h: dict[str, Any] = {"model_class": root.cls_name}
    h["atomic_numbers"] = [int(z) for z in sd["atomic_numbers"].tolist()]
    h["r_max"] = _scalar(sd["r_max"])
    h["num_interactions"] = int(sd["num_interactions"])
    h["heads"] = list(d.get("heads", ["Default"]))
    for flag in (
        "use_reduced_cg",
        "use_so3",
        "use_agnostic_product",
        "use_last_readout_only",
        "apply_cutoff",
        "lammps_mliap",
        "use_edge_irreps_first",
    ):
        if flag in d:
            h[flag] = d[flag]
    h["edge_irreps"] = irreps_str(d["edge_irreps"]) if d.get("edge_irreps") is not None else None
    h["extra_modules"] = sorted(
        set(mods)
        - {
            "node_embedding",
            "radial_embedding",
            "spherical_harmonics",
            "atomic_energies_fn",
            "interactions",
            "products",
            "readouts",
            "scale_shift",
        }
    )

    rad = root["radial_embedding"]
    h["radial_basis"] = rad["bessel_fn"].cls_name
    if h["radial_basis"] != "BesselBasis":  # the layout read below is the Bessel basis's
        raise UnsupportedModelError(
            f"radial basis {h['radial_basis']} (mace-torch's radial_type); molnet's MACE has the Bessel basis only"
        )
    h["radial_cutoff_fn"] = rad["cutoff_fn"].cls_name
    h["distance_transform"] = rad["distance_transform"].cls_name if "distance_transform" in rad.modules else None
    h["radial_apply_cutoff"] = rad.get("apply_cutoff", True)
    h["num_bessel"] = int(sd["radial_embedding.bessel_fn.bessel_weights"].numel())
    h["num_polynomial_cutoff"] = int(sd["radial_embedding.cutoff_fn.p"])
    h["bessel_trainable"] = "bessel_weights" in (rad["bessel_fn"].get("_parameters") or {})

    sh = root["spherical_harmonics"]
    h["sh_irreps"] = irreps_str(sh.get("irreps_out"))
    h["sh_normalize"] = sh.get("normalize")
    h["sh_normalization"] = sh.get("normalization")

    h["atomic_energies"] = sd["atomic_energies_fn.atomic_energies"].to(torch.float64)
    if "scale_shift" in mods:
        h["scale"] = sd["scale_shift.scale"].to(torch.float64)
        h["shift"] = sd["scale_shift.shift"].to(torch.float64)
    else:
        h["scale"], h["shift"] = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)

    layers = []
    for i in range(h["num_interactions"]):
        inter = root[f"interactions.{i}"]
        prod = root[f"products.{i}"]
        sc = prod["symmetric_contractions"]
        layer = {
            "interaction_cls": inter.cls_name,
            "avg_num_neighbors": float(inter.get("avg_num_neighbors")),
            "radial_MLP": list(inter.get("radial_MLP")),
            "node_feats_irreps": irreps_str(inter.get("node_feats_irreps")),
            # older mace-torch files have no edge_irreps attribute: the node irreps then
            "edge_irreps": irreps_str(
                inter.get("edge_irreps") if inter.get("edge_irreps") is not None else inter.get("node_feats_irreps")
            ),
            "target_irreps": irreps_str(inter.get("target_irreps")),
            "hidden_irreps": irreps_str(inter.get("hidden_irreps")),
            "conv_instructions": [
                tuple(ins.args[:4]) if isinstance(ins, Record) else tuple(ins)[:4]
                for ins in inter["conv_tp"].get("instructions")
            ],
            "conv_irreps_out": irreps_str(inter["conv_tp"].get("irreps_out")),
            "cueq": inter.get("cueq_config") is not None,
            "product_cls": sc.cls_name,
            "product_use_sc": bool(prod.get("use_sc")),
            "product_irreps_in": irreps_str(sc.get("irreps_in")),
            "product_irreps_out": irreps_str(sc.get("irreps_out")),
            "correlation": [int(c.get("correlation")) for c in sc["contractions"].modules.values()],
            "radial_act_cst": [
                m["act"].get("cst") if "act" in m.modules else None for m in inter["conv_tp_weights"].modules.values()
            ],
        }
        layers.append(layer)
    h["layers"] = layers

    readouts = []
    for name, r in root["readouts"].modules.items():
        entry = {"cls": r.cls_name}
        if r.cls_name == "NonLinearReadoutBlock":
            act = r["non_linearity"]
            entry["MLP_irreps"] = irreps_str(r.get("hidden_irreps"))
            # an activation of None (mace-torch's gate="None") is an empty entry
            acts = [m for m in act["acts"].modules.values()] if "acts" in act.modules else []
            gates = [m.get("f") if m is not None else None for m in acts]
            entry["gate"] = [g.qualname if isinstance(g, (FunctionRef, Record)) else str(g) for g in gates]
            entry["gate_cst"] = [m.get("cst") if m is not None else None for m in acts]
        readouts.append(entry)
    h["readouts"] = readouts
    return MaceFile(root=root, state_dict=sd, hyper=h, globals_seen=seen)
