"""What a heatmap store records to refuse a resume it cannot continue: hashes of the model, the settings,
the data and each finished batch (`keras_cam.store` writes them; `explain_dataset` compares them).

A resumed run must make the maps an uninterrupted one makes, so the store keeps the model's fingerprint
(configuration and weights), the explainer's options and `preprocess` described by value (callables by a hash
of their code and what it reads), and a running hash of the data of its finished batches
(docs/architecture.md, "Whole datasets").
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import types
from typing import Any, Dict, List, Optional

import numpy as np

__all__ = ["UNCHECKED", "batch_digest", "chain", "data_content", "describe", "files_digest",
           "model_fingerprint", "settings"]

def model_fingerprint(model: Any) -> str:
    """A hash of what defines the model's function: its class, its configuration (normalized: without build
    or compile settings, tuples as lists, as `get_config` gives it in memory and after saving and loading)
    and its weights' shapes, dtypes and values in layer order (not their paths, which differ between a model
    built in a script and the same model loaded from a .keras file)."""
    import keras

    digest = hashlib.blake2b(digest_size=16)
    try:
        config = model.get_config()
    except Exception:  # a subclassed model without get_config
        config = None
    digest.update(json.dumps([type(model).__qualname__, _normalized(config)], sort_keys=True,
                             default=str).encode())
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{value.shape}:{value.dtype}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


#: Configuration entries that do not change what a model computes (how it was built or compiled).
_COSMETIC = ("build_config", "compile_config")


def _normalized(config: Any) -> Any:
    """A configuration as JSON values (tuples as lists), without the entries of `_COSMETIC`."""
    if isinstance(config, dict):
        return {k: _normalized(v) for k, v in config.items() if k not in _COSMETIC}
    if isinstance(config, (list, tuple)):
        return [_normalized(v) for v in config]
    return config


def batch_digest(*values: Any) -> str:
    """A hash of a batch's arrays (shapes, dtypes and bytes; None and nested lists / dicts allowed): what a
    resumed run compares with the batches the store was made from."""
    import keras

    digest = hashlib.sha1(usedforsecurity=False)  # the fastest of hashlib's on most CPUs (SHA extensions)
    for value in values:
        for leaf in keras.tree.flatten(value) if value is not None else ():
            _hash_array(np.asarray(leaf), digest)
    return digest.hexdigest()[:16]


def files_digest(paths: List[str]) -> str:
    """A hash of image files' paths, sizes and modification times (a stat each, nothing is read): files
    replaced by others of the same names are told apart when resuming."""
    digest = hashlib.blake2b(digest_size=8)
    for path in paths:
        try:
            st = os.stat(path)
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


def chain(running: str, digest: str) -> str:
    """The running hash of a store's finished batches, after one more batch."""
    return hashlib.blake2b(f"{running}:{digest}".encode(), digest_size=8).hexdigest()


def data_content(files: Optional[List[str]] = None, data: Any = None) -> str:
    """A hash that tells data apart when resuming a store: the ordered file list, or an array's shape, dtype
    and 16 evenly spaced rows (the finished batches themselves are compared by their running hash)."""
    from keras_cam._validation import to_numpy

    digest = hashlib.blake2b(digest_size=8)
    if files is not None:
        digest.update("\n".join(os.fspath(f) for f in files).encode())
    else:
        n = int(data.shape[0])
        digest.update(f"{tuple(data.shape)}:{getattr(data, 'dtype', '')}".encode())
        for i in sorted({int(v) for v in np.linspace(0, n - 1, num=min(n, 16))}) if n else ():
            digest.update(np.ascontiguousarray(to_numpy(data[i:i + 1])).tobytes())
    return digest.hexdigest()


#: Ends the description of a callable whose code or state could not be hashed: a resumed run warns.
UNCHECKED = "(not checkable)"


def describe(value: Any) -> Any:
    """A value as JSON-able settings: arrays by a hash of their values; callables by name and a hash of what
    defines them (code, constants, defaults, closure, the plain global values they read; a Keras layer's
    configuration and weights), so two lambdas are told apart, or `UNCHECKED` where that cannot be known."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.integer):
        return int(value)
    if callable(value):
        name = getattr(value, "__qualname__", type(value).__qualname__)
        digest = hashlib.blake2b(digest_size=8)
        known = _hash_value(value, digest, depth=0)
        return f"callable {getattr(value, '__module__', '')}.{name} " + (digest.hexdigest() if known
                                                                          else UNCHECKED)
    if isinstance(value, (np.ndarray, list, tuple)):
        a = np.ascontiguousarray(np.asarray(value))
        return f"array {a.shape} {hashlib.blake2b(a.tobytes(), digest_size=8).hexdigest()}"
    return repr(value)


def _hash_array(a: np.ndarray, digest: Any) -> None:
    a = np.ascontiguousarray(a)
    digest.update(f"{a.shape}:{a.dtype}:".encode())
    digest.update(repr(a.tolist()).encode() if a.dtype == object else memoryview(a.reshape(-1)).cast("B"))


def _hash_code(code: types.CodeType, digest: Any) -> None:
    """Bytecode, names and constants (nested functions too); not the file name or line numbers."""
    digest.update(code.co_code)
    digest.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code(const, digest)
        else:  # a frozenset's repr follows string hashing, which differs between processes
            digest.update(repr(sorted(map(repr, const)) if isinstance(const, frozenset) else const).encode())


def _hash_value(value: Any, digest: Any, depth: int) -> bool:
    """Feeds what defines `value` (a setting, a function and what it reads) into `digest`; False when some of
    it cannot be known (an object without attributes, or nesting deeper than 4)."""
    import keras

    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic)):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
        return True
    if isinstance(value, np.ndarray):
        _hash_array(value, digest)
        return True
    if keras.ops.is_tensor(value) or isinstance(value, keras.Variable):
        _hash_array(keras.ops.convert_to_numpy(value), digest)
        return True
    if isinstance(value, (types.ModuleType, types.BuiltinFunctionType, type, np.ufunc)):
        digest.update(f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value.__name__)};"
                      .encode())
        return True
    if isinstance(value, keras.layers.Layer):
        digest.update(model_fingerprint(value).encode())
        return True
    if depth > 4:
        return False
    deeper = functools.partial(_hash_value, digest=digest, depth=depth + 1)
    if isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}[".encode())
        return all([deeper(v) for v in value])
    if isinstance(value, dict):
        digest.update(b"dict{")
        return all([deeper(k) and deeper(v) for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))])
    if isinstance(value, functools.partial):
        return all([deeper(value.func), deeper(value.args), deeper(value.keywords)])
    if isinstance(value, types.MethodType):
        return deeper(value.__func__) and deeper(value.__self__)
    if isinstance(value, types.FunctionType):
        digest.update(f"{value.__module__}.{value.__qualname__}".encode())
        _hash_code(value.__code__, digest)
        known = [deeper([value.__defaults__, value.__kwdefaults__])]
        for cell in value.__closure__ or ():
            try:
                known.append(deeper(cell.cell_contents))
            except ValueError:  # an empty cell
                digest.update(b"empty cell")
        for name in value.__code__.co_names:  # module-level values it reads (e.g. a MEAN constant)
            if name in value.__globals__ and value.__globals__[name] is not value:
                known.append(deeper(value.__globals__[name]))
        return all(known)
    fields = getattr(value, "__dict__", None)
    if isinstance(fields, dict):  # an object, e.g. a callable class's instance: its class and attributes
        digest.update(f"{type(value).__module__}.{type(value).__qualname__}".encode())
        return deeper(dict(fields))
    return False


def settings(explainer: Any, kind: str, images: Optional[int], targets: Any, batch_size: Optional[int],
             dtype: str) -> Dict[str, Any]:
    """What makes a store's maps: a resumed run must match them all."""
    refs = getattr(explainer, "layer_refs", None)  # resolved: `layer=None` and its layer named are one
    specs = getattr(explainer, "_layer_spec", None) or [None]  # a subclassed model's auto layer: on a call
    layers = [r.path for r in refs] if refs else [
        "auto" if s is None else s if isinstance(s, str) else getattr(s, "path", repr(s)) for s in specs]
    options = {k: describe(v) for k, v in sorted(vars(explainer).items())
               if not k.startswith("_") and k not in ("model", "layer_refs") and not callable(v)}
    return {"method": explainer.name, "layers": layers, "options": options,
            "model": model_fingerprint(explainer.model), "batch_size": batch_size,
            "targets": describe(targets),
            "dtype": str(np.dtype(dtype)), "data": {"kind": kind, "images": images}}
