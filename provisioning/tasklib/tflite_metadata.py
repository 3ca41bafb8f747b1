"""TFLite model metadata: the flatbuffer the Task Library reads, and its associated files.

A ``.tflite`` file with metadata carries, in the model's ``metadata`` list, an
entry named ``TFLITE_METADATA`` pointing at a buffer that holds a
``ModelMetadata`` flatbuffer (tflite-support's ``metadata/metadata_schema.fbs``,
file identifier ``M001``). Files the metadata names (a vocabulary, a ScaNN
index) follow the model as an uncompressed zip archive: the ``.tflite`` is the
zip's preamble, so both the interpreter and a zip reader open the same file.
That is how tflite-support's ``MetadataPopulator`` packs them.

Why this module rather than tflite-support's writers: ``tflite_support``'s
metadata writers need protobuf < 4, which cannot live beside PyTorch's
toolchain in the host environment. The metadata tables are written here with
the ``flatbuffers`` package's ``Builder`` from the schema's field slots (the
schema is small and stable; its fields are only ever appended), and the model
itself is read and rewritten with LiteRT's own generated schema code
(``ai_edge_litert.schema_py_generated``). The conformance test reads the
result back with tflite-support's ``MetadataDisplayer`` and Task Library.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile

import numpy as np

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"

# metadata_schema.fbs enums.
VOCABULARY = 5  # AssociatedFileType
SCANN_INDEX_FILE = 6  # AssociatedFileType
FEATURE_PROPERTIES = 1  # ContentProperties
BERT_TOKENIZER_OPTIONS = 4  # ProcessUnitOptions
#: The oldest metadata parser that knows every field used here: SCANN_INDEX_FILE
#: came in 1.4.0 (tflite-support metadata/cc/metadata_version.cc).
MIN_PARSER_VERSION = "1.4.0"


@dataclasses.dataclass(frozen=True)
class AssociatedFile:
    """A file packed with the model. ``type`` is an ``AssociatedFileType`` value."""

    name: str
    description: str
    type: int


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Metadata of one input or output tensor."""

    name: str
    description: str
    associated_files: tuple[AssociatedFile, ...] = ()


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What ``ModelMetadata`` says: about the model, its tensors and its tokenizer."""

    name: str
    description: str
    version: str
    author: str
    license: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    #: the vocabulary of a BertTokenizer input process unit (None: no tokenizer).
    bert_vocab: AssociatedFile | None = None


class _Table:
    """A flatbuffer table to write, as {slot: value}.

    Slots are the fields' positions in the schema, a union counting as two (its
    type, then its value). Values: str, :class:`_Byte`, :class:`_Table`, or a list
    of tables or of strings; None and empty lists are left out (absent fields).
    """

    def __init__(self, slots: dict | None = None):
        self.slots = {k: v for k, v in (slots or {}).items() if v is not None and v != []}


class _Byte(int):
    """A one-byte scalar field (an enum or a union's type)."""


def _write(builder, table: _Table) -> int:
    offsets = {}
    for slot, value in table.slots.items():  # children first: flatbuffers builds bottom-up
        if isinstance(value, str):
            offsets[slot] = builder.CreateString(value)
        elif isinstance(value, _Table):
            offsets[slot] = _write(builder, value)
        elif isinstance(value, list):
            elements = [_write(builder, v) if isinstance(v, _Table) else builder.CreateString(v)
                        for v in value]
            builder.StartVector(4, len(elements), 4)
            for element in reversed(elements):
                builder.PrependUOffsetTRelative(element)
            offsets[slot] = builder.EndVector()
    builder.StartObject(max(table.slots, default=-1) + 1)
    for slot, value in table.slots.items():
        if slot in offsets:
            builder.PrependUOffsetTRelativeSlot(slot, offsets[slot], 0)
        elif isinstance(value, _Byte):
            builder.PrependUint8Slot(slot, int(value), 0)
        else:
            raise TypeError(f"slot {slot}: cannot write {value!r}")
    return builder.EndObject()


def _file(f: AssociatedFile) -> _Table:
    # AssociatedFile: name, description, type, locale, version
    return _Table({0: f.name, 1: f.description, 2: _Byte(f.type)})


def _tensor(t: TensorInfo) -> _Table:
    # TensorMetadata: name, description, dimension_names, content, process_units, stats,
    # associated_files. Content: content_properties (type, value), range.
    content = _Table({0: _Byte(FEATURE_PROPERTIES), 1: _Table()})
    return _Table({0: t.name, 1: t.description, 3: content,
                   6: [_file(f) for f in t.associated_files]})


def metadata_buffer(info: ModelInfo) -> bytes:
    """The ``ModelMetadata`` flatbuffer for ``info`` (identifier ``M001``)."""
    import flatbuffers

    process_units = []
    if info.bert_vocab is not None:
        # ProcessUnit: options (type, value); BertTokenizerOptions: vocab_file.
        process_units.append(_Table({0: _Byte(BERT_TOKENIZER_OPTIONS),
                                     1: _Table({0: [_file(info.bert_vocab)]})}))
    # SubGraphMetadata: name, description, input_tensor_metadata, output_tensor_metadata,
    # associated_files, input_process_units, ...
    subgraph = _Table({2: [_tensor(t) for t in info.inputs], 3: [_tensor(t) for t in info.outputs],
                       5: process_units})
    # ModelMetadata: name, description, version, subgraph_metadata, author, license,
    # associated_files, min_parser_version.
    root = _Table({0: info.name, 1: info.description, 2: info.version, 3: [subgraph],
                   4: info.author, 5: info.license, 7: MIN_PARSER_VERSION})
    builder = flatbuffers.Builder(1024)
    builder.Finish(_write(builder, root), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def _model_builder():
    import flatbuffers

    class ModelBuilder(flatbuffers.Builder):
        """Writes numpy vectors (tensor data) 16-byte aligned, as the TFLite
        schema asks of ``Buffer.data`` (``force_align: 16``)."""

        def CreateNumpyVector(self, x):  # noqa: N802 (flatbuffers' name)
            self.Prep(16, x.nbytes)
            return super().CreateNumpyVector(x)

    return ModelBuilder(1 << 20)


def populate(model: bytes, info: ModelInfo, files: dict[str, bytes]) -> bytes:
    """``model`` with ``info`` as its metadata and ``files`` packed after it.

    A model that has metadata and packed files already gets them replaced.
    Weights the converter stored after the flatbuffer (buffers with an
    offset) are moved inside it, as older runtimes such as the Task Library's
    read only those.

    Args:
        model: a ``.tflite`` file's bytes.
        info: the metadata; its input and output counts must match the model's.
        files: associated file name to contents; every file ``info`` names.

    Raises:
        ValueError: not a TFLite model, tensor counts that differ, a named file missing.
    """
    from ai_edge_litert import schema_py_generated as schema

    if model[4:8] != MODEL_IDENTIFIER:
        raise ValueError("not a TFLite model (no TFL3 identifier)")
    tree = schema.ModelT.InitFromPackedBuf(model, 0)
    graph = tree.subgraphs[0]
    if len(graph.inputs) != len(info.inputs) or len(graph.outputs) != len(info.outputs):
        raise ValueError(f"the model has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs, "
                         f"the metadata describes {len(info.inputs)} and {len(info.outputs)}")
    named = {f.name for t in info.inputs + info.outputs for f in t.associated_files}
    if info.bert_vocab is not None:
        named.add(info.bert_vocab.name)
    if named - set(files):
        raise ValueError(f"associated files named but not given: {', '.join(sorted(named - set(files)))}")
    for buffer in tree.buffers:
        if buffer.offset > 1:  # 1 marks an empty external buffer
            buffer.data = np.frombuffer(model, dtype=np.uint8, count=buffer.size, offset=buffer.offset)
        buffer.offset = buffer.size = 0
    holder = schema.BufferT()
    holder.data = np.frombuffer(metadata_buffer(info), dtype=np.uint8)
    tree.metadata = tree.metadata or []
    existing = [m for m in tree.metadata if m.name.decode() == METADATA_NAME]
    if existing:  # metadata written before is replaced, in place
        tree.buffers[existing[0].buffer] = holder
    else:
        tree.buffers.append(holder)
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(tree.buffers) - 1
        tree.metadata.append(entry)
    builder = _model_builder()
    builder.Finish(tree.Pack(builder), MODEL_IDENTIFIER)
    out = io.BytesIO()
    out.write(builder.Output())
    # Appending a zip to bytes that are not one keeps them as its preamble; the
    # Task Library reads only stored (uncompressed) members.
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return out.getvalue()
