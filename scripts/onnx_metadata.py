"""Prints one entry of an ONNX model's metadata (ModelProto.metadata_props), e.g. the
character list PP-OCR's recogniser carries under `character`. Reads the protobuf
wire format directly: no package needed, the graph is skipped, not parsed.

Usage: onnx_metadata.py MODEL KEY > OUT
"""

import sys


def varint(data, pos):
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def fields(data):
    """(field number, wire type, value) of one message; length-delimited values as bytes."""
    pos = 0
    while pos < len(data):
        key, pos = varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise SystemExit(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def main():
    path, wanted = sys.argv[1], sys.argv[2]
    with open(path, "rb") as f:
        model = memoryview(f.read())
    for number, wire, value in fields(model):
        if number == 14 and wire == 2:  # metadata_props: StringStringEntryProto
            entry = {n: bytes(v).decode("utf-8") for n, w, v in fields(value) if w == 2}
            if entry.get(1) == wanted:
                sys.stdout.write(entry.get(2, ""))
                return
    raise SystemExit(f"{path}: no metadata entry `{wanted}`")


if __name__ == "__main__":
    main()
