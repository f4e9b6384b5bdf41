"""Plugin discovery: entry points in temporary dist-info folders on sys.path.

Each test writes a tiny distribution (``<name>.dist-info/METADATA`` +
``entry_points.txt`` and the plugin module) into ``tmp_path``, puts it on
``sys.path`` and resets discovery; the ``plugins`` fixture undoes all of it.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import needle
import needle.backend_ndarray as nd
from needle import discovery
from needle.errors import BackendUnavailableError
from needle.protocol import PROTOCOL_VERSION, kernel_names, required_kernel_names
from needle.testing.plugin import kernel_status

# a backend that implements only the required kernels, by delegating to the
# numpy reference backend: every optional kernel comes from the protocol
MINIMAL_SOURCE = '''
from needle.protocol import Backend, hookimpl, required_kernel_names
from needle_numpy import NumpyBackend

_ref = NumpyBackend()

def _delegate(name):
    def kernel(self, *args):
        return getattr(_ref, name)(*args)
    kernel.__name__ = name
    return kernel

attrs = {{k: _delegate(k) for k in required_kernel_names()}}
attrs.update(name="{name}", version="0.0.1", protocol_version={version},
             device_names=lambda self: ["{name}"])
Minimal = type("Minimal", (Backend,), attrs)

@hookimpl
def needle_backends():
    return [Minimal()]
'''


class Plugins:
    """Writes fake distributions with ``needle.backends`` entry points."""

    def __init__(self, root):
        self.root = root
        self.modules = []

    def add(self, entry_name, module_name, source):
        dist = self.root / f"{module_name}-0.0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module_name}\nVersion: 0.0.1\n")
        (dist / "entry_points.txt").write_text(f"[needle.backends]\n{entry_name} = {module_name}\n")
        (self.root / f"{module_name}.py").write_text(textwrap.dedent(source))
        self.modules.append(module_name)
        importlib.invalidate_caches()
        discovery.reset()


@pytest.fixture
def plugins(tmp_path):
    sys.path.insert(0, str(tmp_path))
    reg = Plugins(tmp_path)
    try:
        yield reg
    finally:
        sys.path.remove(str(tmp_path))
        for mod in reg.modules:
            sys.modules.pop(mod, None)
        importlib.invalidate_caches()
        discovery.reset()


def _info(name):
    info = discovery.get_backend_info(name)
    assert info is not None, f"backend {name!r} not discovered; found {[i.name for i in discovery.backend_infos()]}"
    return info


def _numpy_still_works():
    a = nd.array([1.0, 2.0], device=nd.cpu_numpy())
    np.testing.assert_array_equal((a * 2).numpy(), [2.0, 4.0])


def test_broken_plugin_is_listed_unavailable_and_breaks_nothing(plugins, tmp_path):
    plugins.add("broken", "needle_test_broken", "raise RuntimeError('kaboom: missing libfoo.so')\n")
    info = _info("broken")
    assert not info.available
    assert "failed to import needle_test_broken" in info.reason and "kaboom: missing libfoo.so" in info.reason
    assert _info("numpy").available
    _numpy_still_works()
    rows = {r["name"]: r for r in needle.backends()}
    assert rows["broken"]["available"] is False and "kaboom" in rows["broken"]["reason"]
    assert rows["numpy"]["available"] is True
    with pytest.raises(BackendUnavailableError, match="kaboom"):
        nd.device("broken")
    # and in a fresh interpreter: import needle and the numpy backend work, the table says why
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    code = ("import needle, needle.backend_ndarray as nd; "
            "print((nd.array([1.0, 2.0], device=nd.cpu_numpy()) + 1).numpy().tolist()); "
            "print([(r['name'], r['available'], r['reason']) for r in needle.backends()])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "[2.0, 3.0]" in out.stdout
    assert "('broken', False, 'failed to import needle_test_broken: RuntimeError: kaboom" in out.stdout


def test_old_protocol_version_is_unavailable_with_reason(plugins):
    plugins.add("ancient", "needle_test_ancient", MINIMAL_SOURCE.format(name="ancient", version=0))
    info = _info("ancient")
    assert not info.available
    assert "written for array protocol 0" in info.reason and "upgrade the plugin" in info.reason
    with pytest.raises(BackendUnavailableError, match="array protocol 0"):
        nd.device("ancient")
    _numpy_still_works()


def test_newer_protocol_version_asks_to_upgrade_needle(plugins):
    plugins.add("future", "needle_test_future",
                MINIMAL_SOURCE.format(name="future", version=PROTOCOL_VERSION + 1))
    info = _info("future")
    assert not info.available and "upgrade needle" in info.reason


def test_disable_plugins_env_skips_them(plugins, monkeypatch):
    monkeypatch.setenv("NEEDLE_DISABLE_PLUGINS", " sideeffect , cuda")
    plugins.add("sideeffect", "needle_test_sideeffect", "import sys\nsys.needle_test_imported = True\n")
    info = _info("sideeffect")
    assert not info.available and info.reason == "disabled by NEEDLE_DISABLE_PLUGINS"
    assert "needle_test_sideeffect" not in sys.modules and not hasattr(sys, "needle_test_imported")
    assert _info("cuda").reason == "disabled by NEEDLE_DISABLE_PLUGINS"
    _numpy_still_works()


def test_hookimpl_that_raises(plugins):
    plugins.add("raiser", "needle_test_raiser", """
        from needle.protocol import hookimpl

        @hookimpl
        def needle_backends():
            raise ValueError("cannot enumerate devices")
    """)
    info = _info("raiser")
    assert not info.available
    assert info.reason == "needle_backends() raised ValueError: cannot enumerate devices"
    _numpy_still_works()


def test_hookimpl_returning_a_non_backend(plugins):
    plugins.add("notabackend", "needle_test_notabackend", """
        from needle.protocol import hookimpl

        @hookimpl
        def needle_backends():
            return [object()]
    """)
    assert "not a needle.protocol.Backend" in _info("notabackend").reason


def test_is_available_false_or_raising(plugins):
    plugins.add("nohw", "needle_test_nohw", MINIMAL_SOURCE.format(name="nohw", version=PROTOCOL_VERSION) + """
class NoHardware(Minimal):
    name = "nohw2"
    def is_available(self):
        return False, "no FooAccelerator found"

class Crashing(Minimal):
    name = "nohw3"
    def is_available(self):
        raise OSError("driver crashed")

@hookimpl
def needle_backends():
    return [Minimal(), NoHardware(), Crashing()]
""")
    assert _info("nohw").available
    assert _info("nohw2").reason == "no FooAccelerator found"
    assert _info("nohw3").reason == "is_available() raised OSError: driver crashed"
    with pytest.raises(BackendUnavailableError, match="no FooAccelerator found.*available"):
        nd.device("nohw2")
    disabled = nd.BackendDevice("nohw2")  # like nd.cuda(): constructing never raises
    assert not disabled.enabled()


def test_backends_rows():
    discovery.reset()
    rows = needle.backends()
    assert {"numpy", "cpu", "cuda"} <= {r["name"] for r in rows}, rows
    row = next(r for r in rows if r["name"] == "numpy")
    assert set(row) == {"name", "version", "available", "reason", "devices", "plugin", "config"}
    assert row["available"] is True and row["reason"] == "" and row["devices"] == ["cpu_numpy"], rows
    assert row["version"] == __import__("needle_numpy").__version__ and row["plugin"] == "numpy"
    for r in rows:
        assert isinstance(r["available"], bool)
        assert r["available"] or r["reason"], f"unavailable backend {r['name']} without a reason"


def test_unknown_device_raises_listing_available():
    with pytest.raises(BackendUnavailableError) as info:
        needle.device("nope")
    msg = str(info.value)
    assert "'nope'" in msg and "cpu_numpy() [numpy]" in msg


def test_minimal_plugin_falls_back_to_compositions(plugins):
    plugins.add("minimal", "needle_test_minimal", MINIMAL_SOURCE.format(name="minimal", version=PROTOCOL_VERSION))
    info = _info("minimal")
    assert info.available, info.reason
    be = info.backend
    optional = set(kernel_names()) - set(required_kernel_names())
    assert optional, "the protocol has optional kernels"
    for k in optional:
        assert kernel_status(be, k) == "falls back to composition", k
    assert kernel_status(be, "ewise_add") == "native"
    dev = nd.device("minimal")
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0.5, 2, (3, 4)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    a, b = nd.array(x, device=dev), nd.array(y, device=dev)
    np.testing.assert_allclose((a - b).numpy(), x - y, rtol=1e-6)              # ewise_sub
    np.testing.assert_allclose((a ** b).numpy(), x ** y, rtol=1e-5)            # ewise_pow
    np.testing.assert_allclose((-b).numpy(), -y)                                # ewise_neg
    np.testing.assert_allclose((2 / a).numpy(), 2 / x, rtol=1e-6)              # scalar_rdiv
    np.testing.assert_allclose((a - 1).numpy(), x - 1, rtol=1e-6)              # scalar_sub
    np.testing.assert_allclose(b.relu_grad(a).numpy(), np.where(y > 0, x, 0))  # ewise_relu_grad
    u, v = rng.standard_normal((2, 3, 5)).astype(np.float32), rng.standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose((nd.array(u, device=dev) @ nd.array(v, device=dev)).numpy(), u @ v,
                               rtol=1e-5, atol=1e-5)                             # matmul_strided
    t = be.__tile_size__
    m = nd.array(rng.standard_normal((t, t, t, t)).astype(np.float32), device=dev)  # (t*t, t*t) in T x T tiles
    out = nd.NDArray.make((t, t, t, t), device=dev)
    dev.matmul_tiled(m._handle, m._handle, out._handle, t * t, t * t, t * t)  # matmul_tiled default
    dense = m.numpy().transpose(0, 2, 1, 3).reshape(t * t, t * t)
    np.testing.assert_allclose(out.numpy().transpose(0, 2, 1, 3).reshape(t * t, t * t), dense @ dense,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00 not utf-8", b"[needle.backends]\nno_equals_sign\n",
                                     b"[console_scripts]\nbroken\n"])
def test_other_distributions_broken_entry_point_metadata_is_isolated(plugins, tmp_path, content):
    """A distribution whose entry_points.txt cannot be parsed is skipped and
    recorded; every backend (and needle's CLI commands) still loads."""
    dist = tmp_path / "someone_elses-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: someone_elses\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_bytes(content)
    importlib.invalidate_caches()
    discovery.reset()
    assert _info("numpy").available
    _numpy_still_works()
    errors = discovery.metadata_errors()
    assert len(errors) == 1 and "someone_elses" in errors[0] and "unreadable entry-point metadata" in errors[0]
    from needle.cli import _plugin_commands
    assert "train" in _plugin_commands()
def test_op_overrides_are_the_methods_named_after_ops():
    """Backend.op_overrides() lists a backend's methods named like a known
    override (conv, logsumexp ...); a backend writes no table of its own."""
    from needle.protocol import OP_OVERRIDE_SIGNATURES
    from needle_numpy import NumpyBackend

    # the reference backend fuses nothing; it offers only what has no composition:
    # device random numbers and index gathers (needle.jit needs them)
    assert set(NumpyBackend().op_overrides()) == {"rand_uniform", "embedding", "embedding_grad"}

    class WithLse(NumpyBackend):
        def logsumexp(self, a, out, outer, inner):
            pass

        def not_an_override(self):
            pass

    be = WithLse()
    assert set(be.op_overrides()) == {"logsumexp", "rand_uniform", "embedding", "embedding_grad"}
    assert "logsumexp" in OP_OVERRIDE_SIGNATURES
    assert be.op_overrides()["logsumexp"] == be.logsumexp


def test_an_entry_point_plugin_registers_its_ops_when_discovery_loads(plugins):
    """discovery calls back into the op registry (on_plugins_loaded) instead
    of importing it: a plugin's needle_register_ops hook adds its op."""
    plugins.add("sq", "needle_fake_sq_ops", '''
        from needle.autograd import TensorOp
        from needle.protocol import hookimpl

        class FakeSquare(TensorOp):
            def compute(self, a):
                return a * a

            def gradient(self, out_grad, node):
                return out_grad * node.inputs[0] * 2.0

        @hookimpl
        def needle_register_ops(register):
            register("fake_square_from_plugin", FakeSquare)
    ''')
    from needle import ops
    try:
        discovery.backend_infos()  # loads the entry points
        assert "fake_square_from_plugin" in ops.REGISTRY
        x = needle.Tensor([3.0], device=nd.cpu_numpy())
        assert ops.fake_square_from_plugin(x).numpy().tolist() == [9.0]
    finally:
        ops.REGISTRY.pop("fake_square_from_plugin", None)
        for mod in (ops, needle):
            for name in ("fake_square_from_plugin", "FakeSquare"):
                if hasattr(mod, name):
                    delattr(mod, name)
            names = getattr(mod, "__all__", None)
            if isinstance(names, list):
                names[:] = [n for n in names if n not in ("fake_square_from_plugin", "FakeSquare")]


def test_devices_forget_their_backend_when_backends_change():
    dev = nd.cpu_numpy()
    assert dev.enabled()
    before = dev._mod
    discovery.reset()  # on_backends_changed -> forget_devices
    assert dev._mod is not before
    assert dev.enabled()
