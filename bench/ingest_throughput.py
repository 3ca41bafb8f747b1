"""On-device ingest throughput: photos/s of the background worker (one thread, int8).

Stores N distinct camera-sized JPEGs with IngestStore.add_upload (as uploads
do), then times the Ingestor embedding all of them: decode at reduced scale,
image tower through LiteRT, thumbnail and preview, durable writes, commit.

    python -m bench.ingest_throughput --bundle var/demo-bundle [--photos 200] [--side 2048]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time
from pathlib import Path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--side", type=int, default=2048, help="longest side of the test photos, pixels")
    args = parser.parse_args(argv)

    from PIL import Image

    from device.bundle import Bundle
    from device.encoders import ImageEncoder
    from device.ingest import IngestStore, Ingestor
    from provisioning import demo

    sources = [Image.open(demo.demo_photo(n)).convert("RGB") for n in demo.DEMO_PHOTOS]
    with tempfile.TemporaryDirectory(prefix="glimpse-ingest-bench-") as tmp:
        store = IngestStore(Path(tmp))
        for i in range(args.photos):
            img = sources[i % len(sources)]
            img = img.resize((args.side, int(args.side * img.height / img.width))).rotate(i % 4 * 90, expand=True)
            buffer = io.BytesIO()
            img.crop((i % 13, i % 7, img.width - i % 5, img.height)).save(buffer, "JPEG", quality=88)
            store.add_upload(f"IMG_{i:05d}.jpg", buffer.getvalue())
        encoder = ImageEncoder.create_from_model_dir(Bundle.open(args.bundle).model_dir, num_threads=1)
        worker = Ingestor(store, lambda: encoder, lambda: None)
        started = time.perf_counter()
        while batch := store.next_queued(64):
            for ident, source in batch:
                worker.process(ident, source)
        seconds = time.perf_counter() - started
        store.close()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; photos {args.photos} JPEG, longest side {args.side}")
    print("| worker | photos | seconds | photos/s |")
    print("|---|---:|---:|---:|")
    print(f"| ingest, 1 thread, int8 | {args.photos} | {seconds:.1f} | {args.photos / seconds:.1f} |")


if __name__ == "__main__":
    main()
