"""What ``test_pi.py`` runs inside an emulated Pi: Glimpse as installed from the wheelhouse.

    python3 pi_probe.py BUNDLE_DIR PHOTO QUERY...

Opens the bundle (full verification), answers each query (top 5), runs the
model's self-test against its PyTorch reference, and embeds PHOTO with the image
tower; prints one JSON object on stdout. Only the standard library and the
installed ``device`` package are used, as on a Pi.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path


def main(argv: list[str]) -> int:
    bundle_dir, photo, *queries = argv
    # Imported here, not at the top: a failing import is itself a result to report.
    import device
    from device.encoders import ImageEncoder
    from device.search import Searcher
    from device.selftest import run_selftest

    with Searcher.from_bundle(Path(bundle_dir), verify="full") as searcher:
        answers = {q: [(r.item.id, r.score) for r in searcher.search(q, k=5)] for q in queries}
        bundle_id, model_dir = searcher.bundle.id, searcher.bundle.model_dir
    with ImageEncoder.create_from_model_dir(model_dir) as image:
        embedding = image.embed_file(Path(photo))
    print(json.dumps({
        "machine": platform.machine(),
        "python": platform.python_version(),
        "glimpse": device.__version__,
        "glimpse_from": str(Path(device.__file__).parent.parent),
        "versions": {name: metadata.version(name) for name in ("ai-edge-litert", "numpy", "tokenizers", "pillow")},
        "bundle_id": bundle_id,
        "answers": answers,
        "selftest": run_selftest(model_dir),
        "photo_embedding": [float(x) for x in embedding],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
