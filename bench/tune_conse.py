"""Tune the ConSE mapping of glimpse-default on the demo gallery (host venv).

For each prompt set, top-k and temperature, embeds the demo photos with
EfficientNet-Lite0 + ConSE in PyTorch, ranks them for a set of queries whose
right photo is known, and prints top-1 hits and mean reciprocal rank.

    .venv-host/bin/python -m bench.tune_conse
"""

from __future__ import annotations

import itertools

import numpy as np

CHECKS = {
    "a cat": "cat.png", "a kitten sleeping": "cat.png",
    "a cup of coffee": "coffee.png", "a mug of hot drink": "coffee.png",
    "a space launch": "rocket.jpg", "a rocket": "rocket.jpg",
    "a motorbike": "motorcycle.png", "a red motorcycle": "motorcycle.png",
    "a man with a camera on a tripod": "cameraman.png",
    "coins": "coins.png", "old money": "coins.png",
    "the moon": "moon.png", "craters": "moon.png",
    "a brick wall": "brick-wall.png",
    "a page of a book": "book-page.png",
    "a clock": "clock.png", "a wall clock": "clock.png",
    "an astronaut": "astronaut.png",
    "galaxies in deep space": "hubble-deep-field.jpg",
    "gravel": "gravel.png", "grass": "grass.png",
}

PROMPT_SETS = {
    "name": ["a photo of a {name}."],
    "name+syn": ["a photo of a {name}.", "{names}."],
    "name+syn+desc": ["a photo of a {name}.", "{names}.", "a photo of a {name}: {description}"],
    "desc": ["{description}"],
}


def main() -> None:
    import torch

    from device import images
    from provisioning.models import default as dm
    from provisioning import demo

    tower = dm.load_text_tower()
    tok = dm.load_tokenizer(dm.RECIPE["max_tokens"])
    net = dm.load_image_tower(np.eye(1000, 384, dtype=np.float32), 1, 1.0).classifier
    names = list(demo.DEMO_PHOTOS.values())
    logits = []
    with torch.no_grad():
        for src in demo.DEMO_PHOTOS:
            x = images.tower_input(images.open_photo(demo.demo_photo(src)).image, 224)
            x = (torch.from_numpy(x).permute(0, 3, 1, 2) - 127.0) / 128.0
            logits.append(net(x).numpy()[0])
    logits = np.stack(logits)
    queries = list(CHECKS)
    q = dm.embed_texts(tower, tok, queries)
    target = np.array([names.index(CHECKS[s]) for s in queries])
    print(f"{'prompts':<14} {'k':>3} {'T':>4} {'top1':>5} {'MRR':>6}")
    for pname, templates in PROMPT_SETS.items():
        matrix = dm.class_embeddings(tower, tok, templates)
        for k, temp in itertools.product([1, 5, 10, 20, 50], [0.5, 1.0, 2.0, 3.0]):
            z = logits / temp
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            kth = np.sort(p, axis=1)[:, -k][:, None]
            e = (p * (p >= kth)) @ matrix
            e /= np.linalg.norm(e, axis=1, keepdims=True)
            scores = q @ e.T
            ranks = (scores > scores[np.arange(len(q)), target][:, None]).sum(1) + 1
            print(f"{pname:<14} {k:>3} {temp:>4} {int((ranks == 1).sum()):>3}/{len(q)} {np.mean(1 / ranks):6.3f}")


if __name__ == "__main__":
    main()
