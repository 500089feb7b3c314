"""A pickle module for torch.load that stubs foreign classes instead of importing them.

Real Point-JEPA Lightning checkpoints pickle arbitrary objects beside their weights (for example the
`svm_validation` data modules in `hyper_parameters`), so `torch.load(weights_only=True)` refuses the
whole file. `stubbing_module()` gives torch.load a `pickle_module` whose Unpickler:

- resolves a global only from torch's weights-only allow list (tensors and storages are rebuilt by
  torch's own `_rebuild_*` functions), or from `checkpoint.PLAIN_CONTAINERS`;
- answers every other global with an inert `Stub` subclass named after it, never importing its
  module: calling it (REDUCE), creating it (NEWOBJ) or filling it (BUILD, APPENDS, SETITEMS) only
  records the arguments, so `os.system`, `eval` or a foreign `__setstate__` never run;
- calls or builds only what it resolved itself, and builds only tensors, parameters, plain
  containers and stubs (like torch's weights-only unpickler), so a pickle cannot set attributes on
  torch's classes or functions.

It is torch's own zip reader that drives it; only `foundry_edge.checkpoints.format` uses it, as a fallback,
and keeps nothing but plain tensors and plain values from what it loads.
"""

from __future__ import annotations

import _compat_pickle
import copyreg
import pickle
import pickletools
import types
import zipfile
from collections import OrderedDict


class Stub:
    """An inert stand-in for a foreign global: records how the pickle used it and runs nothing."""

    foreign_name = "?"  # "module.name" of the global it stands in for

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.args, self.kwargs, self.state, self.items = args, kwargs, None, []
        return self

    def __init__(self, *args, **kwargs):
        """Arguments are already recorded by __new__."""

    def __call__(self, *args, **kwargs):
        """Calling a stub (a getattr chain's next step) gives another inert stub."""
        return type(self)(*args, **kwargs)

    def __setstate__(self, state):
        self.state = state

    def append(self, item):
        self.items.append(item)

    def extend(self, items):
        self.items.extend(items)

    def __setitem__(self, key, value):
        self.items.append((key, value))

    def __repr__(self):
        return f"<stub of {self.foreign_name}>"


class StubbingUnpickler(pickle._Unpickler):
    """pickle's Python Unpickler with find_class, calls and BUILD restricted as the module says.

    The Python implementation (not the C one) is used because its opcodes can be overridden: BUILD
    must not reach setattr on a resolved class or function.
    """

    dispatch = dict(pickle._Unpickler.dispatch)
    allowed: dict = {}  # "module.name" -> object, set by stubbing_module()
    stubs: dict = {}  # "module.name" -> Stub subclass, shared by every unpickler of one load

    def find_class(self, module, name):
        full = python3_name(module, name)
        if full in self.allowed:
            return self.allowed[full]
        if full not in self.stubs:
            self.stubs[full] = type(name, (Stub,), {"__module__": module, "__qualname__": name, "foreign_name": full})
        return self.stubs[full]

    def get_extension(self, code):
        """EXT opcodes through find_class too (pickle's extension cache would skip it)."""
        key = copyreg._inverted_registry.get(code)
        if not key:
            raise pickle.UnpicklingError(f"unregistered extension code {code}")
        self.append(self.find_class(*key))

    def _resolved(self, obj, stub_instances: bool = False):
        """`obj` if find_class gave it (an allowed global or a stub class), else refuse to call it."""
        allowed = any(obj is value for value in self.allowed.values())
        stub = isinstance(obj, type) and issubclass(obj, Stub) and self.stubs.get(obj.foreign_name) is obj
        if not (allowed or stub or (stub_instances and isinstance(obj, Stub))):
            raise pickle.UnpicklingError(f"refusing to call {type(obj).__name__} {obj!r}: find_class did not give it")
        return obj

    def load_reduce(self):
        self._resolved(self.stack[-2], stub_instances=True)
        super().load_reduce()

    def load_newobj(self):
        self._resolved(self.stack[-2])
        super().load_newobj()

    def load_newobj_ex(self):
        self._resolved(self.stack[-3])
        super().load_newobj_ex()

    def _instantiate(self, klass, args):
        super()._instantiate(self._resolved(klass), args)

    def load_build(self):
        """Mirror torch's weights-only BUILD: tensors, parameters, plain containers and stubs only."""
        import torch

        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, Stub):
            inst.__setstate__(state)
        elif type(inst) is torch.Tensor:
            inst.set_(*state)
        elif type(inst) is torch.nn.Parameter:
            inst.__setstate__(state)
        elif type(inst) in (OrderedDict, types.SimpleNamespace) and isinstance(state, dict):
            inst.__dict__.update(state)
        else:
            raise pickle.UnpicklingError(f"refusing to BUILD a {type(inst).__name__}: only tensors, parameters, "
                                         "plain containers and stubs are built")

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


def stubbing_module(plain_containers: dict) -> types.ModuleType:
    """A fresh `pickle_module` for one torch.load; its `.stubs` fills with the stubbed names."""
    allowed = {**weights_only_globals(), **plain_containers}
    module = types.ModuleType("foundry_edge_stubbing_pickle")
    module.Unpickler = type("Unpickler", (StubbingUnpickler,), {"allowed": allowed, "stubs": {}})
    module.load = lambda file, **kwargs: module.Unpickler(file, **kwargs).load()
    module.stubs = module.Unpickler.stubs
    return module


def python3_name(module: str, name: str) -> str:
    """The global's full name, Python 2 names mapped as torch's weights-only unpickler maps them.

    torch.save writes protocol 2, which names `builtins.set` `__builtin__.set`.
    """
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def weights_only_globals() -> dict:
    """torch's weights-only allow list ("module.name" -> object), with globals the user allowlisted."""
    from torch import _weights_only_unpickler as wo

    allowed = dict(wo._get_allowed_globals())
    if hasattr(wo, "_get_user_allowed_globals"):  # PyTorch 2.4+
        allowed.update(wo._get_user_allowed_globals())
    return allowed


def checkpoint_globals(path) -> list[str]:
    """"module.name" of every GLOBAL in a torch zip checkpoint's pickle, read with pickletools (nothing runs).

    [] for a file that is not a zip checkpoint or whose pickle cannot be parsed. A STACK_GLOBAL
    (protocol 4, never written by torch.save) counts as "(STACK_GLOBAL)": its name is computed.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = next((n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
            data = archive.read(pkl) if pkl else b""
        ops = list(pickletools.genops(data)) if data else []
    except (zipfile.BadZipFile, ValueError, OSError):
        return []
    names = [python3_name(*arg.split(" ", 1)) if op.name == "GLOBAL" else "(STACK_GLOBAL)"
             for op, arg, _ in ops if op.name in ("GLOBAL", "STACK_GLOBAL")]
    return list(dict.fromkeys(names))
