"""Table-driven bad input over every public entry point (DESIGN "Errors and bad input").

Each row: (id, call, expected needle error, text naming the call, text naming
the value).  The call must raise the error -- a needle error subclassing the
matching builtin -- and its message must name both the call and the value.
"""

from __future__ import annotations

import gzip
import io
import struct

import numpy as np
import pytest

import needle as ndl
import needle.backend_ndarray as nd
from needle import errors as E
from needle.data.datasets.mnist_dataset import read_idx_images, read_idx_labels
from needle.data.datasets.ptb_dataset import Corpus, batchify, get_batch
from needle.data.download import download

nn, optim, init, ops = ndl.nn, ndl.optim, ndl.init, ndl.ops
NAN = float("nan")


def A():
    return nd.array(np.arange(6, dtype=np.float32).reshape(2, 3))


def T(*shape):
    return ndl.Tensor(np.ones(shape or (2, 3), np.float32))


def params():
    return [nn.Parameter(T(3))]


def ds(n=5):
    return ndl.data.NDArrayDataset(np.zeros((n, 2), np.float32), np.zeros(n, np.float32))


def _file(tmp, name, data: bytes):
    path = tmp / name
    path.write_bytes(data)
    return path


def _idx_images(n, rows, cols, payload):
    return struct.pack(">IIII", 2051, n, rows, cols) + payload


def _npz_with(tmp, name, members):
    import zipfile
    path = tmp / name
    with zipfile.ZipFile(path, "w") as z:
        for k, v in members.items():
            z.writestr(k, v)
    return path


def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _object_npy():
    """A .npy header declaring an object array (loading it would unpickle)."""
    text = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }".ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode() + b"\x80\x04N."


# (id, call(tmp), error class, call name in message, value in message)
CASES = [
    # -- NDArray construction ------------------------------------------------
    ("nd.array ragged", lambda t: nd.array([[1, 2], [3]]), E.ArgumentTypeError, "NDArray", "list"),
    ("nd.array str", lambda t: nd.array("abc"), E.ArgumentTypeError, "NDArray", "str"),
    ("nd.array dict", lambda t: nd.array({"a": 1}), E.ArgumentTypeError, "NDArray", "dict"),
    ("nd.array None", lambda t: nd.array(None), E.ArgumentTypeError, "NDArray", "NoneType"),
    ("nd.array object", lambda t: nd.array(object()), E.ArgumentTypeError, "NDArray", "object"),
    ("nd.array dtype", lambda t: nd.array([1.0], dtype="foo"), E.UnsupportedDTypeError, "NDArray", "'foo'"),
    ("nd.array complex", lambda t: nd.array([1.0], dtype="complex64"), E.UnsupportedDTypeError, "Array", "complex64"),
    ("nd.array device", lambda t: nd.array([1.0], device="nope"), E.BackendUnavailableError, "device", "'nope'"),
    ("nd.empty negative", lambda t: nd.empty((-1, 2)), E.ShapeError, "empty", "(-1, 2)"),
    ("nd.empty float", lambda t: nd.empty((2.5,)), E.ArgumentTypeError, "empty", "2.5"),
    ("nd.empty str", lambda t: nd.empty("ab"), E.ArgumentTypeError, "empty", "'ab'"),
    ("nd.empty None", lambda t: nd.empty(None), E.ArgumentTypeError, "empty", "None"),
    ("nd.empty overflow", lambda t: nd.empty((2**40, 2**40)), E.SizeOverflowError, "empty", "1099511627776"),
    ("nd.empty overflow 3d", lambda t: nd.empty((2**30,) * 3), E.SizeOverflowError, "empty", "1073741824"),
    ("nd.full str", lambda t: nd.full((2,), "x"), E.ArgumentTypeError, "fill", "'x'"),
    ("nd.full None", lambda t: nd.full((2,), None), E.ArgumentTypeError, "fill", "None"),
    ("NDArray.make overflow", lambda t: nd.NDArray.make((2**62, 8)), E.SizeOverflowError, "NDArray.make", "4611686018427387904"),
    # -- NDArray views -------------------------------------------------------
    ("reshape size", lambda t: A().reshape((4,)), E.ShapeError, "reshape", "(4,)"),
    ("reshape two -1", lambda t: A().reshape((-1, -1)), E.ShapeError, "reshape", "(-1, -1)"),
    ("reshape overflow", lambda t: A().reshape((2**40, 2**40)), E.ShapeError, "reshape", "1099511627776"),
    ("permute repeat", lambda t: A().permute((0, 0)), E.ShapeError, "permute", "(0, 0)"),
    ("permute short", lambda t: A().permute((0,)), E.ShapeError, "permute", "(0,)"),
    ("permute range", lambda t: A().permute((0, 5)), E.ShapeError, "permute", "(0, 5)"),
    ("broadcast_to mismatch", lambda t: A().broadcast_to((3, 4)), E.ShapeError, "broadcast_to", "(3, 4)"),
    ("broadcast_to fewer", lambda t: A().broadcast_to((3,)), E.ShapeError, "broadcast_to", "(3,)"),
    ("broadcast_to negative", lambda t: A().broadcast_to((-2, 3)), E.ShapeError, "broadcast_to", "-2"),
    ("broadcast_to overflow", lambda t: A().broadcast_to((2**62, 2, 3)), E.SizeOverflowError, "broadcast_to", "4611686018427387904"),
    ("getitem oob", lambda t: A()[5], E.OutOfBoundsError, "__getitem__", "index 5"),
    ("getitem oob negative", lambda t: A()[-3], E.OutOfBoundsError, "__getitem__", "index -3"),
    ("getitem oob axis1", lambda t: A()[0, 3], E.OutOfBoundsError, "__getitem__", "index 3"),
    ("getitem too many", lambda t: A()[0, 0, 0], E.OutOfBoundsError, "__getitem__", "3 indices"),
    ("getitem str", lambda t: A()["x"], E.ArgumentTypeError, "__getitem__", "'x'"),
    ("getitem float", lambda t: A()[1.5], E.ArgumentTypeError, "__getitem__", "1.5"),
    ("getitem None", lambda t: A()[None], E.ArgumentTypeError, "__getitem__", "None"),
    ("getitem step 0", lambda t: A()[::0], E.OutOfBoundsError, "__getitem__", "got 0"),
    ("getitem step -1", lambda t: A()[::-1], E.OutOfBoundsError, "__getitem__", "got -1"),
    ("getitem slice str", lambda t: A()[slice("a", None)], E.ArgumentTypeError, "__getitem__", "'a'"),
    ("getitem slice float", lambda t: A()[0.5:2], E.ArgumentTypeError, "__getitem__", "0.5"),
    ("setitem oob", lambda t: A().__setitem__(7, 1.0), E.OutOfBoundsError, "__setitem__", "index 7"),
    ("setitem str value", lambda t: A().__setitem__(0, "x"), E.ArgumentTypeError, "__setitem__", "str"),
    ("setitem size", lambda t: A().__setitem__(0, nd.array([1.0, 2.0])), E.ShapeError, "__setitem__", "(2,)"),
    ("setitem device", lambda t: A().__setitem__(0, nd.array([1.0, 2.0, 3.0], device=nd.cpu_numpy())
                                                  if nd.default_device() != nd.cpu_numpy()
                                                  else nd.array([1.0, 2.0, 3.0], device=nd.cpu())),
     E.DeviceMismatchError, "__setitem__", "cpu"),
    ("process_slice axis", lambda t: A().process_slice(slice(None), 9), E.ShapeError, "process_slice", "9"),
    ("process_slice not slice", lambda t: A().process_slice(3, 0), E.ArgumentTypeError, "process_slice", "int"),
    ("process_slice axis str", lambda t: A().process_slice(slice(None), "0"), E.ShapeError, "process_slice", "'0'"),
    ("as_strided past end", lambda t: A().as_strided((3, 3), (5, 5)), E.OutOfBoundsError, "as_strided", "(5, 5)"),
    ("as_strided lengths", lambda t: A().as_strided((2,), (1, 1)), E.ShapeError, "as_strided", "(1, 1)"),
    ("as_strided negative", lambda t: A().as_strided((2,), (-1,)), E.ShapeError, "as_strided", "(-1,)"),
    ("flip axis", lambda t: A().flip((7,)), E.ShapeError, "flip", "7"),
    ("pad pairs", lambda t: A().pad(((1, 1),)), E.ShapeError, "pad", "((1, 1),)"),
    ("pad negative", lambda t: A().pad(((-1, 0), (0, 0))), E.ShapeError, "pad", "-1"),
    ("len 0-d", lambda t: len(nd.array(1.0)), E.ArgumentTypeError, "len()", "shape ()"),
    ("fill str", lambda t: A().fill("x"), E.ArgumentTypeError, "fill", "'x'"),
    ("to unknown", lambda t: A().to("nope"), E.BackendUnavailableError, "device", "'nope'"),
    ("cast str", lambda t: A().cast("U3"), E.UnsupportedDTypeError, "cast", "str96"),
    # -- NDArray arithmetic --------------------------------------------------
    ("ewise shapes", lambda t: A() + nd.array(np.ones((3, 2))), E.ShapeError, "add", "(3, 2)"),
    ("ewise mul shapes", lambda t: A() * nd.array(np.ones(4)), E.ShapeError, "mul", "(4,)"),
    ("matmul shapes", lambda t: A() @ A(), E.ShapeError, "matmul", "(2, 3)"),
    ("matmul 0-d", lambda t: nd.array(1.0) @ A(), E.ShapeError, "matmul", "()"),
    ("sum axis", lambda t: A().sum(axis=5), E.ShapeError, "sum", "axis 5"),
    ("sum repeated", lambda t: A().sum(axis=(0, 0)), E.ShapeError, "sum", "axis 0"),
    ("max axis", lambda t: A().max(axis=-3), E.ShapeError, "max", "axis -3"),
    ("max empty", lambda t: nd.array(np.zeros((0, 3))).max(axis=0), E.ShapeError, "max", "(0, 3)"),
    ("max empty result", lambda t: nd.array(np.zeros((2, 0, 0))).max(axis=2), E.ShapeError, "max", "(2, 0, 0)"),
    # -- Tensor / autograd ---------------------------------------------------
    ("Tensor dict", lambda t: ndl.Tensor({"a": 1}), E.ArgumentTypeError, "Tensor", "dict"),
    ("Tensor str", lambda t: ndl.Tensor("abc"), E.ArgumentTypeError, "Tensor", "str"),
    ("Tensor bytes", lambda t: ndl.Tensor(b"xy"), E.ArgumentTypeError, "Tensor", "bytes"),
    ("Tensor None", lambda t: ndl.Tensor(None), E.ArgumentTypeError, "Tensor", "NoneType"),
    ("Tensor set", lambda t: ndl.Tensor({1, 2}), E.ArgumentTypeError, "Tensor", "set"),
    ("Tensor object", lambda t: ndl.Tensor(object()), E.ArgumentTypeError, "Tensor", "object"),
    ("Tensor ragged", lambda t: ndl.Tensor([[1, 2], [3]]), E.ArgumentTypeError, "Tensor", "list"),
    ("Tensor str array", lambda t: ndl.Tensor(np.array(["a", "b"])), E.ArgumentTypeError, "Tensor", "<U1"),
    ("Tensor object array", lambda t: ndl.Tensor(np.array([object()])), E.ArgumentTypeError, "Tensor", "object"),
    ("Tensor dtype", lambda t: ndl.Tensor([1.0], dtype="foo"), E.UnsupportedDTypeError, "Tensor", "'foo'"),
    ("Tensor device", lambda t: ndl.Tensor([1.0], device="nope"), E.BackendUnavailableError, "device", "'nope'"),
    ("backward shape", lambda t: (T() * 2).backward(T(3, 2)), E.ShapeError, "backward", "(3, 2)"),
    ("backward dtype", lambda t: (T() * 2).backward(ndl.Tensor(np.ones((2, 3)), dtype="float64")),
     E.UnsupportedDTypeError, "backward", "float64"),
    ("backward device", lambda t: (T() * 2).backward(ndl.Tensor(np.ones((2, 3), np.float32), device=nd.cpu_numpy()
                                                                if nd.default_device() != nd.cpu_numpy()
                                                                else nd.cpu())),
     E.DeviceMismatchError, "backward", "cpu"),
    ("backward ragged", lambda t: (T() * 2).backward([[1, 2], [3]]), E.ArgumentTypeError, "Tensor", "list"),
    ("Tensor reshape", lambda t: T().reshape((5,)), E.ShapeError, "reshape", "(5,)"),
    ("Tensor broadcast", lambda t: T().broadcast_to((7,)), E.ShapeError, "broadcast_to", "(7,)"),
    ("Tensor add shapes", lambda t: T() + T(3, 2), E.ShapeError, "add", "(3, 2)"),
    ("Tensor matmul", lambda t: T() @ T(), E.ShapeError, "matmul", "(2, 3)"),
    ("summation axis", lambda t: ops.summation(T(), axes=(9,)), E.ShapeError, "summation", "axis 9"),
    ("logsumexp axis", lambda t: ops.logsumexp(T(), axes=(9,)), E.ShapeError, "logsumexp", "axis 9"),
    ("transpose axes", lambda t: ops.transpose(T(), (0, 5)), E.ShapeError, "transpose", "(0, 5)"),
    ("split axis", lambda t: ops.split(T(), axis=9), E.ShapeError, "split", "axis 9"),
    ("stack none", lambda t: ops.stack([], 0), E.ShapeError, "stack", "at least one"),
    ("stack shapes", lambda t: ops.stack([T(2), T(3)], 0), E.ShapeError, "stack", "(3,)"),
    ("dilate negative", lambda t: ops.dilate(T(), (0,), -1), E.ShapeError, "dilate", "-1"),
    ("conv stride", lambda t: ops.conv(T(1, 4, 4, 2), T(3, 3, 2, 2), stride=0), E.ShapeError, "conv", "stride=0"),
    ("conv padding", lambda t: ops.conv(T(1, 4, 4, 2), T(3, 3, 2, 2), padding=-1), E.ShapeError, "conv", "padding=-1"),
    ("conv channels", lambda t: ops.conv(T(1, 4, 4, 3), T(3, 3, 2, 2)), E.ShapeError, "conv", "(1, 4, 4, 3)"),
    ("reshape shape str", lambda t: ops.reshape(T(), "ab"), E.ArgumentTypeError, "reshape", "'ab'"),
    ("broadcast_to shape str", lambda t: ops.broadcast_to(T(), "ab"), E.ArgumentTypeError, "broadcast_to", "'ab'"),
    ("summation axes str", lambda t: ops.summation(T(), axes="a"), E.ArgumentTypeError, "summation", "'a'"),
    ("Tensor.sum axes float", lambda t: T().sum(axes=1.5), E.ArgumentTypeError, "summation", "1.5"),
    ("NDArray.sum axis str", lambda t: A().sum(axis="a"), E.ArgumentTypeError, "sum", "'a'"),
    ("NDArray.max axis float", lambda t: A().max(axis=0.5), E.ArgumentTypeError, "max", "0.5"),
    ("tuple_get_item range", lambda t: ops.split(T(), 0)[5], E.OutOfBoundsError, "tuple_get_item", "index 5"),
    ("permute axes str", lambda t: A().permute(("a", 0)), E.ArgumentTypeError, "permute", "'a'"),
    ("LSTM state", lambda t: nn.LSTM(3, 4)(T(5, 2, 3), T(1, 2, 4)), E.ArgumentTypeError, "LSTM", "Tensor"),
    ("LSTMCell state", lambda t: nn.LSTMCell(3, 4)(T(2, 3), (T(2, 4),)), E.ArgumentTypeError, "LSTMCell", "tuple"),
    ("RNN input", lambda t: nn.RNN(3, 4)(T(5, 2, 7)), E.ShapeError, "RNN", "(5, 2, 7)"),
    ("Transformer input", lambda t: nn.Transformer(4, 8, 1, num_head=2, dim_head=2)(T(5, 2, 3)), E.ShapeError,
     "Transformer", "(5, 2, 3)"),
    ("Conv input channels", lambda t: nn.Conv(3, 4, 3)(T(2, 5, 6, 6)), E.ShapeError, "Conv", "(2, 5, 6, 6)"),
    ("MaxPool2d window", lambda t: nn.MaxPool2d(5)(T(1, 1, 3, 3)), E.ShapeError, "MaxPool2d", "(1, 1, 3, 3)"),
    ("BatchNorm1d 3-d", lambda t: nn.BatchNorm1d(3)(T(2, 3, 4)), E.ShapeError, "BatchNorm1d", "(2, 3, 4)"),
    # -- init ----------------------------------------------------------------
    ("rand negative", lambda t: init.rand(-1, 2), E.ShapeError, "init", "(-1, 2)"),
    ("randn float", lambda t: init.randn(2.5), E.ArgumentTypeError, "init", "2.5"),
    ("zeros overflow", lambda t: init.zeros(2**40, 2**40), E.SizeOverflowError, "init", "1099511627776"),
    ("ones negative", lambda t: init.ones(3, -3), E.ShapeError, "init", "(3, -3)"),
    ("rand dtype", lambda t: init.rand(2, dtype="foo"), E.UnsupportedDTypeError, "init", "'foo'"),
    ("constant str", lambda t: init.constant(2, c="x"), E.ArgumentTypeError, "fill", "'x'"),
    ("randb p", lambda t: init.randb(2, p=2), E.HyperParameterError, "randb", "2"),
    ("randb p nan", lambda t: init.randb(2, p=NAN), E.HyperParameterError, "randb", "nan"),
    ("one_hot range", lambda t: init.one_hot(3, [0, 5]), E.OutOfBoundsError, "one_hot", "max 5"),
    ("one_hot negative", lambda t: init.one_hot(3, [-1]), E.OutOfBoundsError, "one_hot", "min -1"),
    ("one_hot fraction", lambda t: init.one_hot(3, [0.5]), E.OutOfBoundsError, "one_hot", "0.5"),
    ("one_hot nan", lambda t: init.one_hot(3, [NAN]), E.OutOfBoundsError, "one_hot", "nan"),
    ("one_hot n", lambda t: init.one_hot(-1, [0]), E.HyperParameterError, "one_hot", "-1"),
    ("one_hot str", lambda t: init.one_hot(3, ["a"]), E.ArgumentTypeError, "one_hot", "<U1"),
    ("kaiming fan", lambda t: init.kaiming_uniform(-1, 3), E.HyperParameterError, "kaiming_uniform", "-1"),
    ("kaiming fan float", lambda t: init.kaiming_normal(2.5, 3), E.ArgumentTypeError, "kaiming_normal", "2.5"),
    ("kaiming nonlinearity", lambda t: init.kaiming_uniform(3, 3, nonlinearity="tanh"), E.HyperParameterError,
     "kaiming", "'tanh'"),
    ("kaiming zero fan", lambda t: init.kaiming_uniform(0, 3, shape=(3, 3)), E.HyperParameterError, "init", "(3, 3)"),
    ("xavier fan", lambda t: init.xavier_uniform(3, -4), E.HyperParameterError, "xavier_uniform", "-4"),
    ("xavier_normal fan", lambda t: init.xavier_normal("3", 4), E.ArgumentTypeError, "xavier_normal", "'3'"),
    # -- nn modules ----------------------------------------------------------
    ("Linear in", lambda t: nn.Linear(-1, 3), E.HyperParameterError, "Linear", "-1"),
    ("Linear out", lambda t: nn.Linear(3, -2), E.HyperParameterError, "Linear", "-2"),
    ("Linear float", lambda t: nn.Linear(2.5, 3), E.ArgumentTypeError, "Linear", "2.5"),
    ("Linear str", lambda t: nn.Linear("3", 3), E.ArgumentTypeError, "Linear", "'3'"),
    ("Linear bias", lambda t: nn.Linear(3, 3, bias="yes"), E.ArgumentTypeError, "Linear", "'yes'"),
    ("Linear input", lambda t: nn.Linear(3, 4)(T(2, 5)), E.ShapeError, "matmul", "(2, 5)"),
    ("Dropout above", lambda t: nn.Dropout(1.5), E.HyperParameterError, "Dropout", "1.5"),
    ("Dropout below", lambda t: nn.Dropout(-0.1), E.HyperParameterError, "Dropout", "-0.1"),
    ("Dropout nan", lambda t: nn.Dropout(NAN), E.HyperParameterError, "Dropout", "nan"),
    ("Dropout str", lambda t: nn.Dropout("a"), E.ArgumentTypeError, "Dropout", "'a'"),
    ("BatchNorm1d dim", lambda t: nn.BatchNorm1d(-1), E.HyperParameterError, "BatchNorm1d", "-1"),
    ("BatchNorm1d eps", lambda t: nn.BatchNorm1d(3, eps=-1.0), E.HyperParameterError, "BatchNorm1d", "-1.0"),
    ("BatchNorm1d momentum", lambda t: nn.BatchNorm1d(3, momentum=2.0), E.HyperParameterError, "BatchNorm1d", "2.0"),
    ("BatchNorm1d input", lambda t: nn.BatchNorm1d(3)(T(2, 4)), E.ShapeError, "BatchNorm1d", "(2, 4)"),
    ("BatchNorm2d dim", lambda t: nn.BatchNorm2d(-3), E.HyperParameterError, "BatchNorm2d", "-3"),
    ("LayerNorm1d dim", lambda t: nn.LayerNorm1d(-2), E.HyperParameterError, "LayerNorm1d", "-2"),
    ("LayerNorm1d eps", lambda t: nn.LayerNorm1d(3, eps=-1e-5), E.HyperParameterError, "LayerNorm1d", "-1e-05"),
    ("LayerNorm1d input", lambda t: nn.LayerNorm1d(3)(T(2, 4)), E.ShapeError, "LayerNorm1d", "(2, 4)"),
    ("Conv in", lambda t: nn.Conv(-1, 3, 3), E.HyperParameterError, "Conv", "in_channels"),
    ("Conv kernel", lambda t: nn.Conv(3, 3, 0), E.HyperParameterError, "Conv", "kernel_size"),
    ("Conv stride", lambda t: nn.Conv(3, 3, 3, stride=0), E.HyperParameterError, "Conv", "stride"),
    ("Conv float", lambda t: nn.Conv(3.5, 3, 3), E.ArgumentTypeError, "Conv", "3.5"),
    ("MaxPool2d kernel", lambda t: nn.MaxPool2d(0), E.HyperParameterError, "MaxPool2d", "0"),
    ("AvgPool2d stride", lambda t: nn.AvgPool2d(2, stride=0), E.HyperParameterError, "AvgPool2d", "stride"),
    ("MaxPool2d input", lambda t: nn.MaxPool2d(2)(T(2, 3)), E.ShapeError, "MaxPool2d", "(2, 3)"),
    ("RNNCell input", lambda t: nn.RNNCell(0, 3), E.HyperParameterError, "RNNCell", "input_size"),
    ("RNNCell hidden", lambda t: nn.RNNCell(3, 0), E.HyperParameterError, "RNNCell", "hidden_size"),
    ("RNNCell nonlinearity", lambda t: nn.RNNCell(3, 3, nonlinearity="sigmoid"), E.HyperParameterError,
     "RNNCell", "'sigmoid'"),
    ("RNN layers", lambda t: nn.RNN(3, 3, num_layers=0), E.HyperParameterError, "RNN", "num_layers"),
    ("LSTM hidden", lambda t: nn.LSTM(3, -1), E.HyperParameterError, "LSTM", "-1"),
    ("LSTMCell float", lambda t: nn.LSTMCell(3, 2.5), E.ArgumentTypeError, "LSTMCell", "2.5"),
    ("Embedding num", lambda t: nn.Embedding(-1, 3), E.HyperParameterError, "Embedding", "-1"),
    ("Embedding dim", lambda t: nn.Embedding(3, -1), E.HyperParameterError, "Embedding", "embedding_dim"),
    ("Embedding ids", lambda t: nn.Embedding(3, 2)(ndl.Tensor(np.array([[5.0]]))), E.ArgumentError,
     "Embedding", "5.0"),
    ("MultiHeadAttention dropout", lambda t: nn.MultiHeadAttention(dropout=2.0), E.HyperParameterError,
     "MultiHeadAttention", "2.0"),
    ("AttentionLayer features", lambda t: nn.AttentionLayer(0, 2, 2), E.HyperParameterError, "AttentionLayer", "q_features"),
    ("AttentionLayer heads", lambda t: nn.AttentionLayer(4, 0, 2), E.HyperParameterError, "AttentionLayer", "num_head"),
    ("TransformerLayer hidden", lambda t: nn.TransformerLayer(4, 2, 2, 0), E.HyperParameterError,
     "TransformerLayer", "hidden_size"),
    ("Transformer layers", lambda t: nn.Transformer(4, 4, 0), E.HyperParameterError, "Transformer", "num_layers"),
    ("Transformer dropout", lambda t: nn.Transformer(4, 4, 1, dropout=-1.0), E.HyperParameterError,
     "Transformer", "-1.0"),
    ("Sequential item", lambda t: nn.Sequential(nn.ReLU(), 3), E.ArgumentTypeError, "Sequential", "int"),
    ("Residual fn", lambda t: nn.Residual("x"), E.ArgumentTypeError, "Residual", "str"),
    ("SoftmaxLoss 1-d", lambda t: nn.SoftmaxLoss()(T(3), T(3)), E.ShapeError, "SoftmaxLoss", "(3,)"),
    ("SoftmaxLoss y len", lambda t: nn.SoftmaxLoss()(T(2, 3), T(3)), E.ShapeError, "SoftmaxLoss", "(3,)"),
    ("SoftmaxLoss list", lambda t: nn.SoftmaxLoss()([[1.0, 2.0]], T(1)), E.ArgumentTypeError,
     "SoftmaxLoss", "list"),
    ("SoftmaxLoss label", lambda t: nn.SoftmaxLoss()(T(2, 3), ndl.Tensor([0.0, 7.0])), E.OutOfBoundsError,
     "softmax_cross_entropy", "7.0"),
    ("SoftmaxLoss y scalar", lambda t: nn.SoftmaxLoss()(T(2, 3), 3), E.ArgumentTypeError, "SoftmaxLoss", "3"),
    ("load_state_dict list", lambda t: nn.Linear(2, 2).load_state_dict([1]), E.StateDictError,
     "Linear.load_state_dict", "list"),
    ("load_state_dict str value", lambda t: nn.Linear(2, 2).load_state_dict(
        {"weight": np.full((2, 2), "a"), "bias": np.zeros((1, 2))}), E.StateDictError, "Linear.load_state_dict", "weight"),
    ("load_state_dict shape", lambda t: nn.Linear(2, 2).load_state_dict(
        {"weight": np.zeros((3, 2)), "bias": np.zeros((1, 2))}), E.StateDictError, "Linear.load_state_dict", "(3, 2)"),
    ("load_state_dict missing", lambda t: nn.Linear(2, 2).load_state_dict({"weight": np.zeros((2, 2))}),
     E.StateDictError, "Linear.load_state_dict", '"bias"'),
    ("load_state_dict extra", lambda t: nn.Linear(2, 2, bias=False).load_state_dict(
        {"weight": np.zeros((2, 2)), "gamma": np.zeros(1)}), E.StateDictError, "Linear.load_state_dict", '"gamma"'),
    ("load_state_dict key type", lambda t: nn.Linear(2, 2, bias=False).load_state_dict(
        {"weight": np.zeros((2, 2)), 3: np.zeros(1)}), E.StateDictError, "Linear.load_state_dict", "[3]"),
    ("load_state_dict None", lambda t: nn.Linear(2, 2, bias=False).load_state_dict({"weight": None}),
     E.StateDictError, "Linear.load_state_dict", "weight"),
    # -- optim ---------------------------------------------------------------
    ("SGD lr", lambda t: optim.SGD(params(), lr=-1.0), E.HyperParameterError, "SGD", "-1.0"),
    ("SGD lr nan", lambda t: optim.SGD(params(), lr=NAN), E.HyperParameterError, "SGD", "nan"),
    ("SGD lr str", lambda t: optim.SGD(params(), lr="a"), E.ArgumentTypeError, "SGD", "'a'"),
    ("SGD momentum", lambda t: optim.SGD(params(), momentum=-0.1), E.HyperParameterError, "SGD", "-0.1"),
    ("SGD momentum one", lambda t: optim.SGD(params(), momentum=1.5), E.HyperParameterError, "SGD", "1.5"),
    ("SGD weight_decay", lambda t: optim.SGD(params(), weight_decay=-1e-3), E.HyperParameterError, "SGD", "-0.001"),
    ("Adam lr", lambda t: optim.Adam(params(), lr=-0.1), E.HyperParameterError, "Adam", "-0.1"),
    ("Adam beta1 one", lambda t: optim.Adam(params(), beta1=1.0), E.HyperParameterError, "Adam", "beta1"),
    ("Adam beta1 negative", lambda t: optim.Adam(params(), beta1=-0.1), E.HyperParameterError, "Adam", "-0.1"),
    ("Adam beta2", lambda t: optim.Adam(params(), beta2=1.5), E.HyperParameterError, "Adam", "1.5"),
    ("Adam eps zero", lambda t: optim.Adam(params(), eps=0.0), E.HyperParameterError, "Adam", "eps"),
    ("Adam eps negative", lambda t: optim.Adam(params(), eps=-1e-8), E.HyperParameterError, "Adam", "-1e-08"),
    ("Adam weight_decay", lambda t: optim.Adam(params(), weight_decay=-1.0), E.HyperParameterError, "Adam", "-1.0"),
    ("Adam lr inf ok?", lambda t: optim.Adam(params(), lr=None), E.ArgumentTypeError, "Adam", "None"),
    ("clip_grad_norm", lambda t: optim.clip_grad_norm(params(), -1.0), E.HyperParameterError, "clip_grad_norm", "-1.0"),
    ("Adam load_state_dict", lambda t: optim.Adam(params()).load_state_dict({"lr": np.array(["x"])}),
     E.StateDictError, "Adam.load_state_dict", "lr"),
    ("SGD load_state_dict shape", lambda t: optim.SGD(params(), momentum=0.9).load_state_dict({"u.0": np.zeros(5)}),
     E.StateDictError, "SGD.load_state_dict", "(5,)"),
    ("StepLR step", lambda t: optim.lr_scheduler.StepLR(optim.SGD(params()), 0), E.HyperParameterError, "StepLR", "0"),
    ("StepLR float", lambda t: optim.lr_scheduler.StepLR(optim.SGD(params()), 2.5), E.ArgumentTypeError, "StepLR", "2.5"),
    ("StepLR gamma", lambda t: optim.lr_scheduler.StepLR(optim.SGD(params()), 1, gamma=-1.0), E.HyperParameterError,
     "StepLR", "-1.0"),
    ("Cosine T_max", lambda t: optim.lr_scheduler.CosineAnnealingLR(optim.SGD(params()), 0), E.HyperParameterError,
     "CosineAnnealingLR", "0"),
    ("Cosine eta_min", lambda t: optim.lr_scheduler.CosineAnnealingLR(optim.SGD(params()), 5, eta_min=-1.0),
     E.HyperParameterError, "CosineAnnealingLR", "-1.0"),
    ("scheduler optimizer", lambda t: optim.lr_scheduler.StepLR(object(), 1), E.ArgumentTypeError, "StepLR", "object"),
    # -- data ----------------------------------------------------------------
    ("DataLoader zero", lambda t: ndl.data.DataLoader(ds(), 0), E.HyperParameterError, "DataLoader", "0"),
    ("DataLoader negative", lambda t: ndl.data.DataLoader(ds(), -1), E.HyperParameterError, "DataLoader", "-1"),
    ("DataLoader float", lambda t: ndl.data.DataLoader(ds(), 2.5), E.ArgumentTypeError, "DataLoader", "2.5"),
    ("DataLoader None", lambda t: ndl.data.DataLoader(ds(), None), E.ArgumentTypeError, "DataLoader", "None"),
    ("DataLoader empty", lambda t: ndl.data.DataLoader(ds(0), 2), E.EmptyDatasetError, "DataLoader", "len 0"),
    ("NDArrayDataset none", lambda t: ndl.data.NDArrayDataset(), E.ArgumentError, "NDArrayDataset", "none"),
    ("NDArrayDataset list", lambda t: ndl.data.NDArrayDataset([1, 2]), E.ArgumentTypeError, "NDArrayDataset", "list"),
    ("NDArrayDataset 0-d", lambda t: ndl.data.NDArrayDataset(np.float32(1.0)), E.ArgumentTypeError,
     "NDArrayDataset", "float32"),
    ("NDArrayDataset rows", lambda t: ndl.data.NDArrayDataset(np.zeros(3), np.zeros(4)), E.ShapeError,
     "NDArrayDataset", "4 rows"),
    ("dataset index", lambda t: ds()[10], E.OutOfBoundsError, "NDArrayDataset", "index 10"),
    ("dataset index negative", lambda t: ds()[-6], E.OutOfBoundsError, "NDArrayDataset", "index -6"),
    ("dataset index array", lambda t: ds()[np.array([0, 99])], E.OutOfBoundsError, "NDArrayDataset", "index 99"),
    ("dataset index str", lambda t: ds()["x"], E.ArgumentTypeError, "NDArrayDataset", "'x'"),
    ("dataset index float", lambda t: ds()[1.5], E.ArgumentTypeError, "NDArrayDataset", "1.5"),
    ("RandomFlipHorizontal p", lambda t: ndl.data.RandomFlipHorizontal(2.0), E.HyperParameterError,
     "RandomFlipHorizontal", "2.0"),
    ("RandomCrop padding", lambda t: ndl.data.RandomCrop(-1), E.HyperParameterError, "RandomCrop", "-1"),
    ("RandomCrop float", lambda t: ndl.data.RandomCrop(1.5), E.ArgumentTypeError, "RandomCrop", "1.5"),
    ("CIFAR10Dataset p", lambda t: ndl.data.CIFAR10Dataset(t, True, p=2.0), E.HyperParameterError,
     "CIFAR10Dataset", "2.0"),
    ("CIFAR10Dataset folder", lambda t: ndl.data.CIFAR10Dataset(t / "nope", True), E.DataFormatError,
     "CIFAR10Dataset", "nope"),
    ("IDX truncated", lambda t: read_idx_images(_file(t, "i.idx", _idx_images(2, 28, 28, b"\0" * 100))),
     E.DataFormatError, "i.idx", "truncated"),
    ("IDX magic", lambda t: read_idx_labels(_file(t, "l.idx", struct.pack(">II", 1234, 1) + b"\0")),
     E.DataFormatError, "l.idx", "1234"),
    ("IDX header short", lambda t: read_idx_images(_file(t, "s.idx", b"\0\0\x08")), E.DataFormatError,
     "s.idx", "3 bytes"),
    ("IDX overflow dims", lambda t: read_idx_images(_file(t, "o.idx", _idx_images(2**21, 2**21, 2**22, b""))),
     E.DataFormatError, "o.idx", "2097152"),
    ("IDX bad gzip", lambda t: read_idx_images(_file(t, "g.gz", b"\x1f\x8b" + b"junk" * 10)),
     E.DataFormatError, "g.gz", "gzip"),
    ("IDX trailing", lambda t: read_idx_labels(_file(t, "t.idx", struct.pack(">II", 2049, 1) + b"\0\0")),
     E.DataFormatError, "t.idx", "trailing"),
    ("MNIST counts", lambda t: ndl.data.MNISTDataset(
        str(_file(t, "im.gz", gzip.compress(_idx_images(2, 1, 1, b"\0\0")))),
        str(_file(t, "lb.gz", gzip.compress(struct.pack(">II", 2049, 3) + b"\0\0\0")))),
     E.DataFormatError, "im.gz", "3 labels"),
    ("batchify size", lambda t: batchify(np.arange(10), 0, None, None), E.HyperParameterError, "batchify", "0"),
    ("batchify short", lambda t: batchify(np.arange(3), 5, None, None), E.EmptyDatasetError, "batchify", "3 tokens"),
    ("get_batch row", lambda t: get_batch(np.zeros((10, 2)), 9, 5), E.ArgumentError, "get_batch", "i=9"),
    ("get_batch bptt", lambda t: get_batch(np.zeros((10, 2)), 0, 0), E.HyperParameterError, "get_batch", "bptt"),
    ("Corpus missing", lambda t: Corpus(t / "none"), E.DataFormatError, "Corpus", "train.txt"),
    ("Corpus max_lines", lambda t: Corpus(t, max_lines=-1), E.HyperParameterError, "Corpus.tokenize", "-1"),
    ("download sha", lambda t: download("http://127.0.0.1:9/f.bin", "xyz", cache_dir=str(t)), E.ArgumentError,
     "download", "'xyz'"),
    ("download md5", lambda t: download("http://127.0.0.1:9/f.bin", None, cache_dir=str(t), md5="0"),
     E.ArgumentError, "download", "'0'"),
    ("download filename", lambda t: download("http://127.0.0.1:9/f.bin", None, filename="../x", cache_dir=str(t)),
     E.ArgumentError, "download", "'../x'"),
    ("download url", lambda t: download("http://127.0.0.1:9/", None, cache_dir=str(t)), E.ArgumentError,
     "download", "http://127.0.0.1:9/"),
    ("download unreachable", lambda t: download("http://127.0.0.1:9/f.bin", None, cache_dir=str(t), timeout=5),
     E.DownloadError, "download", "http://127.0.0.1:9/f.bin"),
    # -- serialization -------------------------------------------------------
    ("save key", lambda t: ndl.save({1: np.zeros(1)}, t / "a.npz"), E.ArgumentTypeError, "needle.save", "1"),
    ("save type", lambda t: ndl.save(5, t / "a.npz"), E.ArgumentTypeError, "needle.save", "int"),
    ("save value", lambda t: ndl.save({"w": object()}, t / "a.npz"), E.ArgumentTypeError, "needle.save", "'w'"),
    ("save object array", lambda t: ndl.save({"w": np.array([None])}, t / "a.npz"), E.ArgumentTypeError,
     "needle.save", "object"),
    ("save ragged", lambda t: ndl.save({"w": [[1], [1, 2]]}, t / "a.npz"), E.ArgumentTypeError, "needle.save", "'w'"),
    ("load npy", lambda t: ndl.load(_file(t, "x.npy", _npy(np.ones(2)))), E.DataFormatError, "needle.load", "x.npy"),
    ("load text", lambda t: ndl.load(_file(t, "x.npz", b"hello")), E.DataFormatError, "needle.load", "x.npz"),
    ("load member", lambda t: ndl.load(_npz_with(t, "m.npz", {"a.txt": b"x"})), E.DataFormatError,
     "needle.load", "'a.txt'"),
    ("load header", lambda t: ndl.load(_npz_with(t, "h.npz", {"w.npy": b"\x93NUMPY\x01\x00\x05\x00{bad\n"})),
     E.DataFormatError, "needle.load", "'w'"),
    ("load shape", lambda t: ndl.load(_npz_with(t, "s.npz", {"w.npy": _npy(np.ones(4))[:-8]})),
     E.DataFormatError, "needle.load", "'w'"),
    ("load object", lambda t: ndl.load(_npz_with(t, "o.npz", {"w.npy": _object_npy()})), E.DataFormatError,
     "needle.load", "object"),
    # -- devices -------------------------------------------------------------
    ("device unknown", lambda t: ndl.device("nope"), E.BackendUnavailableError, "device", "'nope'"),
    ("default device unknown", lambda t: nd.set_default_device("nope"), E.BackendUnavailableError, "device", "'nope'"),
]


def test_the_table_is_large_and_ids_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) >= 150 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tmp_path):
    _, call, error, call_name, value = case
    with pytest.raises(error) as info:
        call(tmp_path)
    exc = info.value
    assert isinstance(exc, E.NeedleError), f"{type(exc).__name__} is not a needle error"
    builtin = [b for b in type(exc).__mro__ if b.__module__ == "builtins" and b is not Exception
               and issubclass(b, Exception) and b is not BaseException]
    assert builtin, f"{type(exc).__name__} subclasses no builtin error"
    msg = str(exc)
    assert call_name in msg, f"message does not name the call {call_name!r}: {msg}"
    assert value in msg, f"message does not name the value {value!r}: {msg}"
