"""Make the fixed input/output shapes of an ONNX model symbolic, in memory, without the `onnx` package.

CenterFace ships with a nominal input of 10x3x32x32; onnxruntime refuses any other shape while that
is declared. An ONNX file is a protobuf `ModelProto`; we walk just the path
ModelProto.graph(7) -> GraphProto.input(11)/output(12) -> ValueInfoProto.type(2) -> TypeProto.tensor_type(1)
and replace each fixed `dim_value` of the named tensors' shapes by a symbolic `dim_param`, re-encoding the enclosing lengths;
weights that an old exporter also listed as graph inputs are unlisted (so onnxruntime can fold them).
Everything else is copied byte for byte. (The run-time path must not need `onnx`, which comes with the training extra.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield (field_number, wire_type, field_start, payload_start, field_end) for each top-level field."""
    pos, end = 0, len(buf)
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
            payload = start
        elif wire == 1:
            payload, pos = pos, pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            payload, pos = pos, pos + length
        elif wire == 5:
            payload, pos = pos, pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("truncated protobuf message")
        yield field, wire, start, payload, pos


def _message(field: int, payload: bytes) -> bytes:
    return _encode_varint(field << 3 | 2) + _encode_varint(len(payload)) + payload


def _rewrite(buf: memoryview, edits: dict[int, callable]) -> bytes:
    """Copy a message, passing the payload of length-delimited fields in `edits` through their function."""
    parts: list[bytes | memoryview] = []
    for field, wire, start, payload, end in _fields(buf):
        fn = edits.get(field) if wire == 2 else None
        if fn is None:
            parts.append(buf[start:end])
        else:
            new = fn(buf[payload:end])
            parts.append(buf[start:end] if new is None else _message(field, new))
    return b"".join(parts)


def _name(value_info: memoryview) -> str | None:
    for field, wire, _, payload, end in _fields(value_info):
        if field == 1 and wire == 2:
            return bytes(value_info[payload:end]).decode("utf-8", "replace")
    return None


def _tensor_name(tensor: memoryview) -> str | None:
    for field, wire, _, payload, end in _fields(tensor):
        if field == 8 and wire == 2:  # TensorProto.name
            return bytes(tensor[payload:end]).decode("utf-8", "replace")
    return None


def make_io_dynamic(model: bytes, names: Iterable[str] | None = None) -> bytes:
    """Return the model with every dimension of the named graph inputs/outputs (all when None) made symbolic."""
    wanted = None if names is None else set(names)
    found: set[str] = set()

    def shape(buf: memoryview, name: str) -> bytes:
        dims = [f for f, *_ in _fields(buf) if f == 1]
        return b"".join(_message(1, _message(2, f"{name}_{i}".encode())) for i in range(len(dims)))

    def value_info(buf: memoryview) -> bytes | None:
        name = _name(buf)
        if wanted is not None and name not in wanted:
            return None
        found.add(name or "")
        tensor_type = lambda t: _rewrite(t, {2: lambda s: shape(s, name or "d")})  # noqa: E731
        return _rewrite(buf, {2: lambda t: _rewrite(t, {1: tensor_type})})

    def graph(buf: memoryview) -> bytes:
        # Old exporters list every weight as a graph input too; onnxruntime then cannot constant-fold or
        # fuse them (Conv+BatchNorm), which costs several times the speed. Weights stay as initializers.
        initializers = {_tensor_name(buf[p:e]) for f, w, _, p, e in _fields(buf) if f == 5 and w == 2}
        parts = []
        for field, wire, start, payload, end in _fields(buf):
            if field == 11 and wire == 2 and _name(buf[payload:end]) in initializers:
                continue
            fn = {11: value_info, 12: value_info}.get(field) if wire == 2 else None
            new = None if fn is None else fn(buf[payload:end])
            parts.append(buf[start:end] if new is None else _message(field, new))
        return b"".join(parts)

    out = _rewrite(memoryview(model), {7: graph})
    if wanted is not None and found != wanted:
        raise ValueError(f"model has no graph input/output named {sorted(wanted - found)}")
    return out
