"""needle.load / load_state_dict on malformed input: DataFormatError / StateDictError
naming the file or key, nothing unpickled, load_state_dict all or nothing."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest

import needle as ndl
from needle.errors import ArgumentTypeError, DataFormatError, StateDictError


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npz(path, members: dict, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _header(descr: str, shape, fortran=False, pad_to=64) -> bytes:
    text = "{'descr': %r, 'fortran_order': %r, 'shape': %r, }" % (descr, fortran, shape)
    text = text + " " * (pad_to - 10 - len(text) - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def _corrupt_deflate(tmp_path):
    path = _npz(tmp_path / "c.npz", {"w.npy": _npy(np.arange(1000, dtype=np.float32))}, zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"w.npy") + len(b"w.npy")  # first member's data follows its local header name
    for i in range(start + 20, start + 60):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    return path


CASES = {
    "plain .npy": lambda p: (p / "a.npy").write_bytes(_npy(np.ones(3))) and p / "a.npy",
    "text file": lambda p: (p / "t.npz").write_text("not a zip at all") and p / "t.npz",
    "empty file": lambda p: (p / "e.npz").write_bytes(b"") or p / "e.npz",
    "truncated zip": lambda p: _truncate(_npz(p / "tr.npz", {"w.npy": _npy(np.ones(100))})),
    "corrupt deflate stream": _corrupt_deflate,
    "member not .npy": lambda p: _npz(p / "m.npz", {"w.npy": _npy(np.ones(2)), "notes.txt": b"hello"}),
    "malformed .npy header": lambda p: _npz(p / "h.npz", {"w.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4, }\n"}),
    "not .npy magic": lambda p: _npz(p / "g.npz", {"w.npy": b"garbage bytes here"}),
    "absurd declared shape": lambda p: _npz(p / "s.npz", {"w.npy": _header("<f8", (2**40, 2**40)) + b"\0" * 16}),
    "shape larger than data": lambda p: _npz(p / "l.npz", {"w.npy": _header("<f4", (1000,)) + b"\0" * 16}),
    "negative shape": lambda p: _npz(p / "n.npz", {"w.npy": _header("<f4", (-1,))}),
    "object array (pickle)": lambda p: _npz(p / "o.npz", {"w.npy": _header("|O", (1,)) + b"\x80\x04N."}),
    "record dtype": lambda p: _npz(p / "r.npz", {"w.npy": _header("[('a', '<f4')]", (1,)) + b"\0" * 4}),
    "unsupported npy version": lambda p: _npz(p / "v.npz", {"w.npy": b"\x93NUMPY\x09\x00" + b"\0" * 60}),
}


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_rejects_malformed_files_naming_them(tmp_path, case):
    path = CASES[case](tmp_path)
    with pytest.raises(DataFormatError) as info:
        ndl.load(path)
    msg = str(info.value)
    assert msg.startswith("needle.load: ") and str(path) in msg, msg


def test_load_never_unpickles(tmp_path, monkeypatch):
    import pickle
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    path = CASES["object array (pickle)"](tmp_path)
    with pytest.raises(DataFormatError, match="never unpickled"):
        ndl.load(path)


def test_load_reads_what_save_writes_including_fortran_and_big_endian(tmp_path):
    state = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.asfortranarray(np.ones((3, 2))),
             "c": np.arange(3, dtype=">i4"), "cfg": np.asarray('{"k": 1}')}
    ndl.save(state, tmp_path / "ok.npz")
    back = ndl.load(tmp_path / "ok.npz")
    assert list(back) == list(state)
    for k in state:
        np.testing.assert_array_equal(back[k], state[k])


def test_save_refuses_object_arrays(tmp_path):
    with pytest.raises(ArgumentTypeError, match="needle.save: value for 'w' has dtype object"):
        ndl.save({"w": np.array([object()])}, tmp_path / "x.npz")
    assert not list(tmp_path.iterdir())


def _model():
    np.random.seed(0)
    return ndl.nn.Sequential(ndl.nn.Linear(3, 4), ndl.nn.ReLU(), ndl.nn.Linear(4, 2))


@pytest.mark.parametrize("bad", [
    np.array(["a", "b", "c", "d"] * 3).reshape(3, 4),   # string array
    np.array([object()] * 12).reshape(3, 4),             # object array
    "text",
    None,
    {"nested": 1},
])
def test_load_state_dict_refuses_non_numeric_values_and_changes_nothing(bad):
    model = _model()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    state = {k: v + 1 for k, v in before.items()}
    state["0.weight"] = bad  # the first key: everything after it must stay unloaded too
    with pytest.raises(StateDictError, match=r"\b0\.weight"):
        model.load_state_dict(state)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_error_in_a_late_key_changes_nothing():
    model = _model()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    state = {k: v + 1 for k, v in before.items()}
    state["2.bias"] = np.array(["x", "y"]).reshape(1, 2)
    with pytest.raises(StateDictError, match=r"\b2\.bias"):
        model.load_state_dict(state)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_non_mapping():
    with pytest.raises(StateDictError, match="expected a mapping"):
        _model().load_state_dict([1, 2, 3])


def test_optimizer_load_state_dict_malformed_is_typed_and_atomic():
    model = _model()
    opt = ndl.optim.Adam(model.parameters(), lr=0.1)
    with pytest.raises(StateDictError, match="Adam.load_state_dict: lr"):
        opt.load_state_dict({"lr": np.array(["fast"]), "t": np.asarray(3)})
    assert opt.lr == 0.1 and opt.t == 0
    with pytest.raises(StateDictError, match=r"m.0 has shape \(2,\)"):
        opt.load_state_dict({"lr": np.asarray(0.5), "m.0": np.zeros(2)})
    assert opt.lr == 0.1
