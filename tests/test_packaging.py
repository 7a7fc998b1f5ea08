"""The package as users get it: the wheel and the sdist that `python -m build` makes, and the wheel installed
in a fresh virtual environment with only Keras and JAX (no TensorFlow, no torch) beside it.

Slow: one build and one virtual environment for the module (about a minute with a warm pip cache; the
first run downloads keras, jax and opencv-python-headless from PyPI). Needs `build` (in the test extra).
"""
import email
import os
import subprocess
import sys
import tarfile
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    """Runs a command; fails the test with the ends of its output when it exits non-zero."""
    args = [str(a) for a in args]
    proc = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, (f"{' '.join(args)} exited {proc.returncode}\n"
                                  f"--- stdout:\n{proc.stdout[-3000:]}\n--- stderr:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(wheel, sdist) of this checkout; the wheel is built from the sdist, as pip does from PyPI."""
    pytest.importorskip("build", reason="needs `build` (pip install build; it is in the test extra)")
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out, ROOT], timeout=600)
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert [w.name for w in wheels] == [f"keras_cam-{VERSION}-py3-none-any.whl"]
    assert [s.name for s in sdists] == [f"keras_cam-{VERSION}.tar.gz"]
    return wheels[0], sdists[0]


@pytest.fixture(scope="module")
def installed(dists, tmp_path_factory):
    """A fresh virtual environment with the wheel, keras and jax: (its bin folder, environment variables for
    commands run in it, a working folder outside this checkout)."""
    wheel, _ = dists
    root = tmp_path_factory.mktemp("installed")
    _run([sys.executable, "-m", "venv", root / "venv"], timeout=300)
    bin_dir = root / "venv" / ("Scripts" if os.name == "nt" else "bin")
    # Nothing from the calling environment leaks in: no PYTHONPATH to this checkout, no backend choice.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "KERAS_")) and k != "VIRTUAL_ENV"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               KERAS_HOME=str(root / "keras_home"))
    _run([bin_dir / "python", "-m", "pip", "install", "--disable-pip-version-check", "--only-binary=:all:",
          wheel, "keras", "jax"], env=env, cwd=root, timeout=900)
    return bin_dir, env, root


def test_wheel_works_with_only_keras_and_jax(installed):
    bin_dir, env, root = installed
    python = bin_dir / "python"
    missing = _run([python, "-c", "import importlib.util as u; "
                                  "print([n for n in ('tensorflow', 'torch') if u.find_spec(n)])"],
                   env=env, cwd=root, timeout=120)
    assert missing.stdout.strip() == "[]", "the environment must have neither TensorFlow nor torch"

    script = root / "smoke.py"
    script.write_text(textwrap.dedent("""
        import os
        import sys

        import keras
        import numpy as np

        import keras_cam as kc

        assert keras.backend.backend() == "jax", keras.backend.backend()
        # The installed wheel, not a source tree.
        assert os.path.realpath(kc.__file__).startswith(os.path.realpath(sys.prefix)), kc.__file__

        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2"),
            kc.CAMHead(3, name="head"),
        ])
        images = np.random.default_rng(0).random((4, 16, 16, 3)).astype("float32")

        probs = keras.ops.convert_to_numpy(model(images))
        assert probs.shape == (4, 3) and probs.dtype == np.float32, (probs.shape, probs.dtype)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)  # the head's softmax

        maps = kc.GradCAM(model)(images)
        assert isinstance(maps, np.ndarray) and maps.shape == (4, 16, 16) and maps.dtype == np.float32
        assert np.isfinite(maps).all() and maps.min() >= 0.0 and np.isclose(maps.max(), 1.0)
        # On a GlobalAveragePooling + Dense head Grad-CAM is CAM, which needs no gradient.
        np.testing.assert_allclose(maps, kc.class_activation_maps(model, images), atol=1e-4)
        print("version", kc.__version__)
    """))
    proc = _run([python, script], env=env, cwd=root, timeout=300)
    assert f"version {VERSION}" in proc.stdout.splitlines()

    cli = _run([bin_dir / "keras-cam", "--version"], env=env, cwd=root, timeout=120)
    assert cli.stdout == f"keras-cam {VERSION}\n"


def test_wheel_contents(dists):
    wheel, _ = dists
    dist_info = f"keras_cam-{VERSION}.dist-info/"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = email.message_from_string(zf.read(dist_info + "METADATA").decode())
        license_text = zf.read(dist_info + "licenses/LICENSE").decode()
    assert not [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "examples", "docs")]
    assert not [n for n in names if not n.startswith(("keras_cam/", dist_info))]
    assert "keras_cam/py.typed" in names
    assert "Apache License" in license_text and "END OF TERMS AND CONDITIONS" in license_text
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Requires-Python"] == ">=3.11"
    # Ranges, never exact pins: installing keras-cam or an extra must not replace what a project has.
    pinned = [r for r in metadata.get_all("Requires-Dist")
              if any(s.operator in ("==", "===") for s in Requirement(r).specifier)]
    assert not pinned
    assert set(metadata.get_all("Provides-Extra")) >= {"tensorflow", "jax", "torch", "hub", "ray", "zarr"}


def test_sdist_contents(dists):
    _, sdist = dists
    with tarfile.open(sdist) as tf:
        names = set(tf.getnames())
    top = f"keras_cam-{VERSION}/"
    for name in ("README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml", "keras_cam/py.typed"):
        assert top + name in names, name


# -- size of the product code ---------------------------------------------------------------------------------

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 90  # "about 80": a long docstring may take a function a little past 80


def _too_long(files) -> list:
    """'path: N lines' for each module over MAX_MODULE_LINES and 'path:function: N lines' for each function
    (methods and nested functions included, docstring included) over MAX_FUNCTION_LINES."""
    import ast

    found = []
    for path, source in files:
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{path}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path}:{node.name}: {length} lines")
    return found


def test_size_check_finds_long_modules_and_functions():
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))  # def line + 90 = 91 lines
    sources = [
        ("short.py", "def f():\n    return 1\n"),
        ("long_function.py", "class A:\n    def method(self):\n" + body),
        ("long_module.py", "\n".join(f"y{i} = {i}" for i in range(MAX_MODULE_LINES + 1)) + "\n"),
    ]
    assert _too_long(sources) == [f"long_function.py:method: {MAX_FUNCTION_LINES + 1} lines",
                                  f"long_module.py: {MAX_MODULE_LINES + 1} lines"]
    at_limit = "def g():\n" + "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1)) + "\n"
    assert _too_long([("at_limit.py", at_limit)]) == []


def test_no_long_modules_or_functions():
    files = [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8"))
             for p in sorted((ROOT / "keras_cam").rglob("*.py"))]
    assert len(files) > 50  # the package was found
    too_long = _too_long(files)
    assert not too_long, "split these into named steps:\n" + "\n".join(too_long)
