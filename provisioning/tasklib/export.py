"""Export a bundle as a TFLite Task Library ``TextSearcher`` model.

This writes the seed's artifact: one ``.tflite`` file that the Task Library's
``TextSearcher`` (tflite-support) loads as it is and searches with, with no
Glimpse code on the other side:

* the bundle's text tower, re-exported with the three inputs the Task
  Library's BERT path feeds: ``ids``, ``mask`` and ``segment_ids`` (int32,
  1 x max_tokens; the segment ids go to BERT's token type embedding), and one
  output, the unit-length embedding;
* TFLite metadata (:mod:`provisioning.tasklib.tflite_metadata`): model info, tensor
  metadata naming the inputs as ``bert_utils`` looks them up, a BertTokenizer
  input process unit with the WordPiece vocabulary, and on the output tensor
  the index as a ``SCANN_INDEX_FILE``;
* the ScaNN on-device index (:mod:`provisioning.tasklib.scann_ondevice`) over the
  bundle's photo embeddings, one metadata string per photo: its relative path.

Only a BERT WordPiece text tower can be fed by the Task Library's
BertTokenizer, and only a tower whose PyTorch form provisioning can rebuild
(``glimpse-default`` and the models ``glimpse-provision train`` writes) can be
re-exported with the third input; anything else is refused with
:class:`~device.errors.ModelUnsupported`.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from device import ownership
from device.bundle import Bundle
from device.errors import GlimpseError, ModelUnsupported
from device.wording import plural
from provisioning import hostextra
from provisioning.tasklib import tflite_metadata
from provisioning.tasklib.scann_ondevice import IndexLayout, build_index

VOCAB_FILE = "vocab.txt"
INDEX_FILE = "index.ldb"
#: Input names the Task Library looks for in the metadata (``cc/task/text/utils/bert_utils.cc``),
#: in the order the exported graph takes them.
INPUT_NAMES = ("ids", "mask", "segment_ids")
#: The searcher's tower is float32 whatever the bundle's is: the Task Library's
#: TFLite runtime (tflite-support 0.4.4) computes wrong embeddings from
#: litert-torch's int8 (per-channel dynamic-range) towers: every query ranks the
#: photos alike. float32 runs there as on LiteRT. (int8 weight-only runs right but
#: swaps near-ties against the bundle's tower; see docs/models.md.)
TOWER_VARIANT = "float32"
#: Below this cosine between the re-exported tower and the bundle's (the float32
#: and int8 towers of glimpse-default agree to 0.998), the tower is not the
#: bundle's model, would not search as the bundle does, and is refused.
MIN_PARITY = 0.99


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What :func:`export` writes.

    Attributes:
        bundle: the bundle directory.
        out: the ``.tflite`` file to write.
        layout: the index layout (exact or partitioned, see :class:`IndexLayout`).
        force: replace ``out`` if it exists.
    """

    bundle: Path
    out: Path
    layout: IndexLayout = IndexLayout()
    force: bool = False


#: What the export imports from the host extra (see :mod:`provisioning.hostextra`).
HOST_MODULES = ("torch", "litert_torch", "transformers", "ai_edge_litert", "flatbuffers", "google_crc32c",
                "google.protobuf")


def require_host_packages() -> None:
    """Check that the host extra is installed, before any work is done.

    Raises:
        HostToolsMissing: naming the missing packages and how to install them.
    """
    hostextra.require("export-tasklib", HOST_MODULES)


def torch_text_tower(spec, model_dir: Path):
    """The bundle model's text tower rebuilt in PyTorch: ``(mean-pooled MiniLM, head or None)``.

    provisioning can rebuild ``glimpse-default`` and the models ``glimpse-provision
    train`` writes (MiniLM, any trained layers, the text head).

    Raises:
        ModelUnsupported: any other model.
    """
    from provisioning.models import default as default_model

    if spec.id == default_model.MODEL_ID:
        return default_model.load_text_tower(), None
    if "text_weights" in spec.extra:
        from provisioning.models import train

        tower = train.load_text_export(model_dir, spec)
        return tower.tower, tower.head
    raise ModelUnsupported(
        f"cannot re-export the text tower of {spec.id!r} with the Task Library's three BERT inputs "
        f"(ids, mask, segment_ids): provisioning rebuilds only {default_model.MODEL_ID} and models "
        f"made by glimpse-provision train in PyTorch")


def wordpiece_vocab(tokenizer_json: Path) -> list[str]:
    """The vocabulary of a BERT WordPiece ``tokenizer.json``, in id order.

    Raises:
        ModelUnsupported: the tokenizer is not one the Task Library's BertTokenizer
            reproduces (not WordPiece, not lower-casing BERT normalisation, not
            BERT pre-tokenisation, ids with gaps, no [CLS]/[SEP]/[UNK]).
    """
    try:
        doc = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
        model, normalizer, pre = doc["model"], doc.get("normalizer") or {}, doc.get("pre_tokenizer") or {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelUnsupported(f"{tokenizer_json}: unreadable tokenizer: {exc}") from None
    reasons = []
    if model.get("type") != "WordPiece":
        reasons.append(f"its tokenizer is {model.get('type')!r}, not BERT WordPiece")
    if normalizer.get("type") != "BertNormalizer" or not normalizer.get("lowercase"):
        reasons.append("its normaliser is not BERT's lower-casing one")
    if pre.get("type") != "BertPreTokenizer":
        reasons.append("its pre-tokeniser is not BERT's")
    vocab = model.get("vocab") or {}
    if sorted(vocab.values()) != list(range(len(vocab))):
        reasons.append("its vocabulary ids are not 0..N-1")
    for token in ("[CLS]", "[SEP]", "[UNK]"):
        if token not in vocab:
            reasons.append(f"its vocabulary has no {token}")
    if reasons:
        raise ModelUnsupported("the Task Library's BertTokenizer cannot feed this model: " + "; ".join(reasons))
    return sorted(vocab, key=vocab.get)


def _searcher_tower(tower, head=None):
    """``tower`` (BERT under ``.encoder``, mean-pooled: :func:`default_model.load_text_tower`),
    then ``head`` if any, as the torch module exported: ids, mask, segment ids in; the
    embedding out.

    The attention mask reaches BERT as a ready additive (1, 1, 1, tokens) bias:
    left to transformers, the 2-D mask becomes a boolean gather (GATHER_ND
    version 5), newer than the Task Library's TFLite runtime knows.
    """
    import torch

    class SearcherTower(torch.nn.Module):
        def __init__(self, inner, head):
            super().__init__()
            self.inner, self.head = inner, head

        def forward(self, ids, mask, segment_ids):
            weights = mask.to(torch.float32)
            bias = (1.0 - weights)[:, None, None, :] * torch.finfo(torch.float32).min
            hidden = self.inner.encoder(input_ids=ids, attention_mask=bias,
                                        token_type_ids=segment_ids).last_hidden_state
            pooled = (hidden * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp(min=1e-9)
            embedding = torch.nn.functional.normalize(pooled, dim=-1)
            return embedding if self.head is None else self.head(embedding)

    return SearcherTower(tower, head).eval()


def export_tower(spec, model_dir: Path, variant: str, path: Path) -> Path:
    """Export the text tower of the model ``spec`` (in ``model_dir``) with the Task Library's
    three BERT inputs.

    Raises:
        ModelUnsupported: provisioning cannot rebuild this model's tower in PyTorch.
    """
    tower, head = torch_text_tower(spec, model_dir)
    import torch

    from provisioning.models.convert import export_tflite

    # Three distinct tensors: the exporter treats one tensor passed thrice as one
    # input, and the graph would feed the segment ids to all three.
    samples = tuple(torch.zeros((1, spec.text.max_tokens), dtype=torch.int32) for _ in INPUT_NAMES)
    return export_tflite(_searcher_tower(tower, head), samples, path, variant)


def tower_parity(searcher_tower: Path, bundle: Bundle, texts: list[str]) -> float:
    """Least cosine, over ``texts``, between the exported tower and the bundle's own."""
    from device.encoders import TextEncoder
    from device.runtime import load_interpreter
    from provisioning.models.convert import cosine_rows

    interpreter = load_interpreter(searcher_tower)
    # ids, mask, segment ids: the order they were exported in (args_0, args_1, args_2).
    inputs = sorted(interpreter.get_input_details(), key=lambda d: d["name"])
    output = interpreter.get_output_details()[0]
    ours, theirs = [], []
    with TextEncoder.create_from_model_dir(bundle.model_dir) as encoder:
        for text in texts:
            ours.append(encoder.embed(text))
            ids, mask = encoder.tokenize(text)
            for detail, array in zip(inputs, (ids, mask, np.zeros_like(ids))):
                interpreter.set_tensor(detail["index"], array)
            interpreter.invoke()
            theirs.append(interpreter.get_tensor(output["index"])[0].copy())
    return float(cosine_rows(np.stack(ours), np.stack(theirs)).min())


def model_info(bundle: Bundle, index_description: str) -> tflite_metadata.ModelInfo:
    """The metadata written for ``bundle``'s searcher."""
    spec = bundle.spec
    tokens = spec.text.max_tokens
    index = tflite_metadata.AssociatedFile(
        INDEX_FILE, f"ScaNN on-device index of {plural(len(bundle), 'photo')} ({index_description}); "
                    f"metadata: each photo's path relative to the library root",
        tflite_metadata.SCANN_INDEX_FILE)
    input_descriptions = (f"WordPiece token ids: [CLS], the query, [SEP], zeros; {tokens} long.",
                          "1 for each token, 0 for padding.",
                          "BERT segment (token type) ids; 0 for a single text.")
    return tflite_metadata.ModelInfo(
        name=f"{spec.id} text searcher",
        description=(f"Text-to-image search over the Glimpse bundle {bundle.id}: the {spec.full_id} text "
                     f"tower embeds the query and the ScaNN index returns the nearest photos "
                     f"(distance = -cosine)."),
        version=spec.version,
        author="Glimpse (glimpse-provision export-tasklib)",
        license=str(spec.extra.get("licence", "see the model card")),
        inputs=tuple(map(tflite_metadata.TensorInfo, INPUT_NAMES, input_descriptions)),
        outputs=(tflite_metadata.TensorInfo(
            "embedding", f"L2-normalised query embedding, {spec.dim} float32.", (index,)),),
        bert_vocab=tflite_metadata.AssociatedFile(VOCAB_FILE, "WordPiece vocabulary of the text tower.",
                                                  tflite_metadata.VOCABULARY),
    )


#: Where every TFLite flatbuffer carries its file identifier.
TFLITE_MAGIC = (4, b"TFL3")


def check_output(options: ExportOptions) -> None:
    """Refuse an ``out`` inside the bundle (or the bundle itself), a directory, an existing
    file without ``force``, or with ``force`` a file that is not a TFLite model.

    Raises:
        OutputRefused: naming what is there and what to do.
    """
    ownership.check_apart(options.out, [("the bundle", Path(options.bundle))])
    ownership.check_replaceable_file(options.out, options.force, "a TFLite model", TFLITE_MAGIC)


def export(options: ExportOptions, log=print) -> dict:
    """Write ``options.out``: the bundle as a Task Library ``TextSearcher`` model.

    Returns:
        A report: ``out``, ``items``, ``bytes``, ``index`` (layout description),
        ``partitions`` (items per partition), ``parity`` (least cosine to the
        bundle's tower), ``model``.

    Raises:
        BundleInvalid: the bundle does not open.
        ModelUnsupported: the Task Library cannot run the bundle's model.
        GlimpseError: the host extra is missing.
        OutputRefused: see :func:`check_output`.
    """
    from provisioning.models.modeldir import REFERENCE_TEXTS

    check_output(options)
    require_host_packages()
    out = Path(options.out)
    bundle = Bundle.open(options.bundle)
    spec = bundle.spec
    vocab = wordpiece_vocab(bundle.model_dir / spec.text.tokenizer)
    if not len(bundle):
        raise GlimpseError(f"{options.bundle}: the bundle has no photos to search")
    with tempfile.TemporaryDirectory(prefix="glimpse-tasklib-") as tmp:
        log(f"exporting the {spec.full_id} text tower (float32) with inputs ids, mask, segment_ids")
        tower = export_tower(spec, bundle.model_dir, TOWER_VARIANT, Path(tmp) / "tower.tflite")
        parity = tower_parity(tower, bundle, REFERENCE_TEXTS)
        if parity < MIN_PARITY:
            raise ModelUnsupported(
                f"the re-exported text tower does not match the bundle's (least cosine {parity:.4f} < "
                f"{MIN_PARITY}); is the bundle's model {spec.full_id} a retrained or altered one?")
        index = build_index(np.asarray(bundle.embeddings), [item.path for item in bundle.items],
                            options.layout, userinfo=f"glimpse bundle {bundle.id}, model {spec.full_id}")
        model = tflite_metadata.populate(
            tower.read_bytes(), model_info(bundle, index.describe()),
            {VOCAB_FILE: ("\n".join(vocab) + "\n").encode("utf-8"), INDEX_FILE: index.data})
    ownership.write_file(out, model)
    return {"out": str(out), "items": index.items, "bytes": len(model), "index": index.describe(),
            "partitions": list(index.partition_sizes), "parity": round(parity, 6), "model": spec.full_id}
