"""Runs inside the tflite-support 0.4.4 environment (``.venv-tasklib``), not Glimpse's.

tests/test_host_tasklib.py starts it with that environment's Python, since
tflite-support needs protobuf < 4. It reads one JSON request on stdin and
prints one JSON answer; it imports nothing from Glimpse.

Requests:
    {"do": "search", "model": PATH, "queries": [...], "max_results": K}
        -> {"results": [[{"metadata": str, "distance": float}, ...], ...], "user_info": str}
    {"do": "metadata", "model": PATH}
        -> {"packed_files": [...], "metadata": the metadata as tflite-support's JSON}
    {"do": "reference_index", "embeddings": NPY, "metadata": [...], "scann_config": HEX,
     "assignment": [...], "userinfo": str, "out": PATH}
        -> {"bytes": N}; tflite-support's own index builder writes the index to PATH
        (NPY: float32 vectors, or uint8 codes of a quantized index)
"""

import json
import sys


def search(request):
    from tflite_support.task import core, processor, text

    options = text.TextSearcherOptions(
        base_options=core.BaseOptions(file_name=request["model"]),
        search_options=processor.SearchOptions(max_results=request["max_results"]))
    searcher = text.TextSearcher.create_from_options(options)
    results = []
    for query in request["queries"]:
        found = searcher.search(query)
        results.append([{"metadata": bytes(n.metadata).decode("utf-8"), "distance": n.distance}
                        for n in found.nearest_neighbors])
    return {"results": results, "user_info": searcher.get_user_info()}


def metadata(request):
    from tflite_support import metadata as tflite_metadata

    displayer = tflite_metadata.MetadataDisplayer.with_model_file(request["model"])
    return {"packed_files": sorted(displayer.get_packed_associated_file_list()),
            "metadata": json.loads(displayer.get_metadata_json())}


def reference_index(request):
    import numpy as np
    from tensorflow_lite_support.scann_ondevice.cc.python import index_builder

    # Arrays, not lists: the builder keeps a view of them (a list's temporary copy is gone by then).
    vectors = np.load(request["embeddings"])
    database = ({"hashed_database": vectors.astype(np.uint8).reshape(-1)} if vectors.dtype == np.uint8
                else {"float_database": vectors.astype(np.float32).reshape(-1)})
    data = index_builder.create_serialized_index_file(
        embedding_dim=vectors.shape[1], serialized_config=bytes.fromhex(request["scann_config"]),
        userinfo=request["userinfo"], partition_assignment=request["assignment"],
        metadata=request["metadata"], compression=False, **database)
    with open(request["out"], "wb") as handle:
        handle.write(data)
    return {"bytes": len(data)}


def main():
    request = json.load(sys.stdin)
    answer = {"search": search, "metadata": metadata, "reference_index": reference_index}[request["do"]](request)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
